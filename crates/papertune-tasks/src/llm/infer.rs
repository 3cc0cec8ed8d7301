//! A LoRA run at work: the base model with the run's adapter merged in, task 1 read from the
//! logits of "0" and "1", task 2 generated and parsed into keywords, evaluation on a file in the
//! papers layout, and the submission file.

use std::path::Path;

use burn::tensor::activation::softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use papertune_data::{
    EmptyTextPolicy, InstructionTask, PaperRecord, load_papers, parse_generated_keywords,
    parse_gold_keywords,
};
use papertune_models::generate::{GenerationConfig, Generator};
use papertune_models::llama::LlamaModel;
use papertune_models::llm_tokenizer::LlmTokenizer;
use papertune_models::lora::{LoraModel, load_peft_adapter};
use papertune_models::source;
use papertune_train::Metrics;

use super::config::LlmConfig;
use super::prompt::PromptEncoder;
use crate::data::RowRules;
use crate::error::TaskError;
use crate::keywords::LiteratureMetrics;
use crate::metrics::{BinaryMetrics, KeywordMetrics};
use crate::progress::Progress;
use crate::run_dir::{CheckpointState, RunDir, STATE_FILE, Which, read_json, read_toml};
use crate::submission::{PredictReport, SubmissionRow, keep_scores, write_submission};

/// Sorts indices by prompt length (longest first) so that batches pad little.
fn by_length(prompts: &[Vec<u32>]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(prompts[i].len()));
    order
}

/// Probability of the answer "1" for each prompt, from the logits of "0" and "1" at the
/// position after the prompt. `model` should be in inference form.
pub fn classify_probabilities(
    model: &LlamaModel,
    tokenizer: &LlmTokenizer,
    prompts: &[Vec<u32>],
    batch_size: usize,
) -> Result<Vec<f32>, TaskError> {
    let answer_ids = [tokenizer.single_token("0")?, tokenizer.single_token("1")?];
    let device = model.device();
    let answer_index = Tensor::<1, Int>::from_data(
        TensorData::new(answer_ids.map(i64::from).to_vec(), [2]),
        &device,
    );
    let mut out = vec![0.0f32; prompts.len()];
    let pad = tokenizer.pad_id();
    let mut progress = Progress::new(prompts.len(), "scoring");
    for chunk in by_length(prompts).chunks(batch_size) {
        let longest = chunk.iter().map(|&i| prompts[i].len()).max().unwrap_or(1);
        let mut ids = Vec::with_capacity(chunk.len());
        let mut mask = Vec::with_capacity(chunk.len());
        for &i in chunk {
            let padding = longest - prompts[i].len();
            ids.push(
                std::iter::repeat_n(pad, padding)
                    .chain(prompts[i].iter().copied())
                    .collect::<Vec<u32>>(),
            );
            mask.push(
                std::iter::repeat_n(0u8, padding)
                    .chain(std::iter::repeat_n(1u8, prompts[i].len()))
                    .collect::<Vec<u8>>(),
            );
        }
        let hidden = model.forward_hidden(model.input(&ids, &mask), None);
        let [rows, seq, width] = hidden.dims();
        let last = hidden.narrow(1, seq - 1, 1).reshape([rows, width]);
        let logits = model.logits(last).select(1, answer_index.clone()); // [rows, 2]
        let probs: Vec<f32> =
            softmax(logits, 1).into_data().convert::<f32>().try_into_vec::<f32>().expect("f32");
        for (row, &i) in chunk.iter().enumerate() {
            out[i] = probs[row * 2 + 1];
        }
        progress.advance(chunk.len());
    }
    Ok(out)
}

/// Generated keywords for each prompt (greedy unless the config samples).
pub fn generate_keywords(
    model: &LlamaModel,
    tokenizer: &LlmTokenizer,
    prompts: &[Vec<u32>],
    generation: &GenerationConfig,
    batch_size: usize,
) -> Result<Vec<Vec<String>>, TaskError> {
    let generator = Generator::new(model, tokenizer);
    let mut out = vec![Vec::new(); prompts.len()];
    let mut progress = Progress::new(prompts.len(), "generating");
    for chunk in by_length(prompts).chunks(batch_size) {
        let batch: Vec<Vec<u32>> = chunk.iter().map(|&i| prompts[i].clone()).collect();
        for (generated, &i) in generator.generate(&batch, generation)?.into_iter().zip(chunk) {
            out[i] = parse_generated_keywords(&generated.text);
        }
        progress.advance(chunk.len());
    }
    Ok(out)
}

/// Papers in the form evaluation needs: their prompts, labels and gold keywords.
pub(super) struct ValidSet {
    pub prompts: Vec<Vec<u32>>,
    labels: Vec<u8>,
    gold_keywords: Vec<Vec<String>>,
    /// Each paper's title and abstract, the source text of the literature's metric.
    texts: Vec<String>,
}

impl ValidSet {
    /// Prompts cut to leave room for the answer (the generated keywords, or one token).
    pub fn new(
        config: &LlmConfig,
        encoder: &PromptEncoder<'_>,
        papers: &[PaperRecord],
    ) -> Result<Self, TaskError> {
        let budget = match config.data.task {
            InstructionTask::Classify => config.model.max_len,
            InstructionTask::Keywords => config.model.max_len - config.generation.max_new_tokens,
        };
        Ok(Self {
            prompts: config
                .records(papers)
                .iter()
                .map(|r| encoder.prompt_ids(r, budget))
                .collect::<Result<_, _>>()?,
            labels: papers.iter().map(|p| p.label.unwrap_or(0)).collect(),
            gold_keywords: papers
                .iter()
                .map(|p| p.keywords.as_deref().map(parse_gold_keywords).unwrap_or_default())
                .collect(),
            texts: papers
                .iter()
                .map(|p| crate::keywords::document_text(&p.title, &p.abstract_text))
                .collect(),
        })
    }
}

/// Evaluates a model on a validation set: keyword metrics (with the literature's under
/// `literature` when asked for) or binary metrics.
pub(super) fn evaluate_model(
    config: &LlmConfig,
    model: &LlamaModel,
    tokenizer: &LlmTokenizer,
    valid: &ValidSet,
    literature: bool,
) -> Result<(Metrics, serde_json::Value), TaskError> {
    match config.data.task {
        InstructionTask::Keywords => {
            let predicted = generate_keywords(
                model,
                tokenizer,
                &valid.prompts,
                &config.generation,
                config.model.eval_batch_size,
            )?;
            let metrics = KeywordMetrics::compute(&predicted, &valid.gold_keywords);
            let mut json = serde_json::to_value(metrics).expect("serialisable");
            if literature {
                let scores =
                    LiteratureMetrics::compute(&predicted, &valid.gold_keywords, &valid.texts);
                json["literature"] = serde_json::to_value(scores).expect("serialisable");
            }
            Ok((metrics.as_map(), json))
        }
        InstructionTask::Classify => {
            let probabilities = classify_probabilities(
                model,
                tokenizer,
                &valid.prompts,
                config.model.eval_batch_size,
            )?;
            let predicted: Vec<u8> = probabilities.iter().map(|&p| u8::from(p >= 0.5)).collect();
            let metrics = BinaryMetrics::compute(&predicted, &valid.labels);
            Ok((metrics.as_map(), serde_json::to_value(metrics).expect("serialisable")))
        }
    }
}

/// A LoRA run loaded for inference: the base model with the run's adapter merged in (or none).
pub struct LoadedRun {
    pub dir: RunDir,
    pub config: LlmConfig,
    pub model: LlamaModel,
    pub tokenizer: LlmTokenizer,
    /// The checkpoint's state, `None` when evaluated without the adapter.
    pub state: Option<CheckpointState>,
}

impl LoadedRun {
    /// Loads the run's config and base model, and (unless `with_adapter` is false) the chosen
    /// checkpoint's adapter, merged into the weights.
    pub fn open(
        run: &Path,
        which: Which,
        with_adapter: bool,
        device: &Device,
    ) -> Result<Self, TaskError> {
        let dir = RunDir::new(run);
        let config: LlmConfig = read_toml(&dir.config())?;
        let files = source::resolve_llm(&config.model.source)?;
        let lm = super::load_base(&config.model, &files, config.model.weights, device)?;
        let (model, state) = if with_adapter {
            let checkpoint = dir.verified_checkpoint(which)?;
            let (model, _) = load_peft_adapter(lm.model, &checkpoint)?;
            (model.merge_lora(), Some(read_json(&checkpoint.join(STATE_FILE))?))
        } else {
            (lm.model, None)
        };
        Ok(Self { dir, config, model, tokenizer: lm.tokenizer, state })
    }

    fn encoder(&self) -> PromptEncoder<'_> {
        PromptEncoder { tokenizer: &self.tokenizer, chat_template: self.config.model.chat_template }
    }
}

/// Whether a run folder holds a LoRA run (its config has a `[lora]` section).
pub fn is_llm_run(run: &Path) -> bool {
    std::fs::read_to_string(RunDir::new(run).config())
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .is_some_and(|table| table.contains_key("lora"))
}

/// The task of a LoRA run folder (from its `config.toml`), if it is one.
pub fn llm_run_task(run: &Path) -> Option<InstructionTask> {
    let config: LlmConfig = read_toml(&RunDir::new(run).config()).ok()?;
    Some(config.data.task)
}

/// How a LoRA run is evaluated.
#[derive(Debug, Clone, Copy)]
pub struct EvalOptions {
    /// Merge the run's adapter; without it, the base model zero-shot on the same prompts.
    pub with_adapter: bool,
    /// Score only the first N rows.
    pub max_rows: Option<usize>,
    /// Keyword runs: add the keyphrase literature's figures (`literature`: stemmed matches,
    /// present and absent keyphrases apart).
    pub literature: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self { with_adapter: true, max_rows: None, literature: false }
    }
}

/// Evaluates a run's best checkpoint on a file in the papers layout; the metrics as JSON (with
/// `n` and whether the adapter was used).
pub fn evaluate(
    run: &Path,
    data: &Path,
    options: &EvalOptions,
    device: &Device,
) -> Result<serde_json::Value, TaskError> {
    let loaded = LoadedRun::open(run, Which::Best, options.with_adapter, device)?;
    let config = &loaded.config;
    let (mut papers, _) = load_papers(
        data,
        &config.data.source().load_options(options.max_rows, config.row_rules()),
    )?;
    if config.data.task == InstructionTask::Keywords {
        papers.retain(|p| p.keywords.as_deref().is_some_and(|k| !k.trim().is_empty()));
        if papers.is_empty() {
            return Err(TaskError::Run {
                path: data.to_path_buf(),
                message: "no row has gold keywords".into(),
            });
        }
    }
    let valid = ValidSet::new(config, &loaded.encoder(), &papers)?;
    let (_, mut json) =
        evaluate_model(config, &loaded.model, &loaded.tokenizer, &valid, options.literature)?;
    json["adapter"] = serde_json::json!(options.with_adapter);
    json["task"] = serde_json::json!(config.data.task);
    if config.data.task == InstructionTask::Classify {
        json["n"] = serde_json::json!(papers.len());
    }
    Ok(json)
}

/// Predicts for every row of `data` with a run's best checkpoint and writes the submission CSV:
/// the keywords (keywords runs) or the label (classify runs); the other column is left empty.
pub fn predict(
    run: &Path,
    data: &Path,
    output: &Path,
    device: &Device,
) -> Result<PredictReport, TaskError> {
    let mut rows = submission_rows(run, data, device)?;
    keep_scores(&mut rows, false, false);
    write_submission(output, &rows)
}

/// The submission's rows for every row of `data`: keywords or labels (with the probabilities),
/// as the run's task is.
pub fn submission_rows(
    run: &Path,
    data: &Path,
    device: &Device,
) -> Result<Vec<SubmissionRow>, TaskError> {
    let loaded = LoadedRun::open(run, Which::Best, true, device)?;
    let config = &loaded.config;
    // Every row gets a prediction, as the classifier's predict does: a submission has all ids.
    let rules = RowRules { require_label: false, empty_text: EmptyTextPolicy::Keep };
    let (papers, _) = load_papers(data, &config.data.source().load_options(None, rules))?;
    let valid = ValidSet::new(config, &loaded.encoder(), &papers)?;
    let batch_size = config.model.eval_batch_size;
    Ok(match config.data.task {
        InstructionTask::Keywords => {
            let keywords = generate_keywords(
                &loaded.model,
                &loaded.tokenizer,
                &valid.prompts,
                &config.generation,
                batch_size,
            )?;
            papers
                .iter()
                .zip(keywords)
                .map(|(p, k)| SubmissionRow::labelled(p.uuid.clone(), k, None))
                .collect()
        }
        InstructionTask::Classify => {
            let probabilities = classify_probabilities(
                &loaded.model,
                &loaded.tokenizer,
                &valid.prompts,
                batch_size,
            )?;
            let label = |prob: f32| u8::from(prob >= 0.5);
            papers
                .iter()
                .zip(probabilities)
                .map(|(p, prob)| SubmissionRow {
                    probabilities: Some([1.0 - prob, prob]),
                    ..SubmissionRow::labelled(p.uuid.clone(), Vec::new(), Some(label(prob)))
                })
                .collect()
        }
    })
}
