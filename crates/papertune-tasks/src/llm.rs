//! Both paper tasks through a causal LM tuned with LoRA: records `instruction / input / output`
//! built from paper rows (or read from Alpaca-style files), the prompt rendered with the model's
//! chat template and masked out of the loss, adapters trained with the shared trainer and saved
//! in PEFT's layout.
//!
//! - Task 1 (`classify`): the answer is "1" or "0"; at inference the probability of "1" is read
//!   from the logits of the two tokens after the prompt (no free generation).
//! - Task 2 (`keywords`): the answer is the keywords joined by commas; at inference the model
//!   generates greedily and the text is split, normalised and de-duplicated.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use papertune_data::instruct::{
    CausalLmBatch, CausalLmBatcher, CausalLmDataset, CausalLmExample, DEFAULT_INPUT_TEMPLATE, InstructionRecord,
    InstructionTask, parse_generated_keywords, parse_gold_keywords, read_alpaca, records_from_papers,
};
use papertune_data::{ColumnMap, EmptyTextPolicy, LoadOptions, PaperRecord, TextTemplate, load_papers, stratified_split};
use papertune_models::generate::{GenerationConfig, Generator};
use papertune_models::lora::{LoraConfig, LoraModel, load_peft_adapter, save_peft_adapter};
use papertune_models::{ChatMessage, LlamaModel, LlmTokenizer, PretrainedCausalLm, source};
use papertune_train::{
    CausalLmLoss, CheckpointContext, Metrics, SaveKind, TrainConfig, TrainError, TrainHooks, TrainModel, TrainProgress,
    Trainer,
};
use serde::{Deserialize, Serialize};

use crate::classify::{RunFacts, TrainReport, best_metrics_from_history, refresh_report};
use crate::session::{TrainOptions, open_run};
use crate::error::{TaskError, io_error};
use crate::metrics::{BinaryMetrics, KeywordMetrics};
use crate::run_dir::{CheckpointState, RunDir, STATE_FILE, Which, read_json};
use crate::submission::{SubmissionRow, write_submission};

/// Where the data comes from and how records are built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmDataConfig {
    /// `classify` (answer "1"/"0") or `keywords`.
    pub task: InstructionTask,
    /// `papers` (competition layout, records built from rows) or `alpaca` (instruction, input,
    /// output columns; training only).
    pub format: LlmDataFormat,
    pub train: Option<PathBuf>,
    /// Validation file; without it `valid_fraction` of the training rows are held out (0: no
    /// validation during training; the last checkpoint is used).
    pub valid: Option<PathBuf>,
    /// Read at most this many training rows.
    pub max_rows: Option<usize>,
    /// Evaluate on at most this many validation rows (generation is slow on CPU).
    pub max_valid_rows: Option<usize>,
    pub valid_fraction: f64,
    pub split_seed: Option<u64>,
    pub columns: ColumnMap,
    /// The instruction; the task's default when unset.
    pub instruction: Option<String>,
    /// How a paper row becomes the record's input (fields `{title}`, `{author}`, `{abstract}`, ...).
    pub input_template: String,
    pub empty_text: EmptyTextPolicy,
}

impl Default for LlmDataConfig {
    fn default() -> Self {
        Self {
            task: InstructionTask::Keywords,
            format: LlmDataFormat::Papers,
            train: None,
            valid: None,
            max_rows: None,
            max_valid_rows: None,
            valid_fraction: 0.1,
            split_seed: None,
            columns: ColumnMap::default(),
            instruction: None,
            input_template: DEFAULT_INPUT_TEMPLATE.into(),
            empty_text: EmptyTextPolicy::Skip,
        }
    }
}

/// Layout of the data files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LlmDataFormat {
    Papers,
    Alpaca,
}

/// The base model and sequence lengths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmModelConfig {
    /// A preset (`smollm2-135m`), a `.gguf` file, a model folder or a hub id.
    pub source: String,
    /// Longest prompt + answer in tokens; prompts are cut (never answers) to fit.
    pub max_len: usize,
    /// Longest answer in tokens (training targets are cut to it, keeping the EOS).
    pub max_answer_len: usize,
    /// Wrap the prompt in the model's chat template (else: the user text, then "\nanswer: ").
    pub chat_template: bool,
    /// Prompts per batch at evaluation and prediction.
    pub eval_batch_size: usize,
}

impl Default for LlmModelConfig {
    fn default() -> Self {
        Self { source: "smollm2-135m".into(), max_len: 512, max_answer_len: 96, chat_template: true, eval_batch_size: 8 }
    }
}

/// A LoRA instruction-tuning run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmConfig {
    pub data: LlmDataConfig,
    pub model: LlmModelConfig,
    pub lora: LoraConfig,
    /// Decoding for the keywords task.
    pub generation: GenerationConfig,
    pub train: TrainConfig,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            data: LlmDataConfig::default(),
            model: LlmModelConfig::default(),
            lora: LoraConfig::default(),
            generation: GenerationConfig { max_new_tokens: 96, ..Default::default() },
            train: TrainConfig {
                lr: 2e-4,
                batch_size: 4,
                gradient_accumulation_steps: 4,
                weight_decay: 0.0,
                warmup_ratio: 0.03,
                schedule: papertune_train::ScheduleKind::Cosine,
                metric_for_best: "kw_f1".into(),
                ..TrainConfig::default()
            },
        }
    }
}

const KEYWORD_METRICS: &[&str] = &["kw_f1", "kw_f1_at_5", "kw_f1_at_m", "kw_precision", "kw_recall"];
const CLASSIFY_METRICS: &[&str] = &["f1", "precision", "recall", "accuracy"];

impl LlmConfig {
    /// Rejects settings that cannot work, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        self.train.validate()?;
        self.lora.validate()?;
        TextTemplate::parse(&self.data.input_template).map_err(|e| format!("data.input_template: {e}"))?;
        if self.model.max_len < 16 {
            return Err(format!("model.max_len must be at least 16, found {}", self.model.max_len));
        }
        if self.model.max_answer_len == 0 || self.model.max_answer_len >= self.model.max_len {
            return Err(format!(
                "model.max_answer_len must be in [1, model.max_len), found {} (max_len {})",
                self.model.max_answer_len, self.model.max_len
            ));
        }
        if self.model.eval_batch_size == 0 {
            return Err("model.eval_batch_size must be at least 1".into());
        }
        if self.generation.max_new_tokens == 0 || self.generation.max_new_tokens >= self.model.max_len {
            return Err(format!(
                "generation.max_new_tokens must be in [1, model.max_len), found {}",
                self.generation.max_new_tokens
            ));
        }
        let metrics = self.metric_names();
        if !metrics.contains(&self.train.metric_for_best.as_str()) {
            return Err(format!(
                "train.metric_for_best {:?} is not a metric of the {:?} task ({})",
                self.train.metric_for_best,
                self.data.task,
                metrics.join(", ")
            ));
        }
        if !(0.0..1.0).contains(&self.data.valid_fraction) {
            return Err(format!("data.valid_fraction must be in [0, 1), found {}", self.data.valid_fraction));
        }
        if self.data.format == LlmDataFormat::Alpaca && self.data.valid.is_none() {
            return Err("data.format = \"alpaca\" needs data.valid (papers-layout validation rows)".into());
        }
        Ok(())
    }

    fn metric_names(&self) -> &'static [&'static str] {
        match self.data.task {
            InstructionTask::Keywords => KEYWORD_METRICS,
            InstructionTask::Classify => CLASSIFY_METRICS,
        }
    }

    fn instruction(&self) -> &str {
        self.data.instruction.as_deref().unwrap_or_else(|| self.data.task.default_instruction())
    }

    /// Records for paper rows (outputs filled from the labels or keywords when present).
    pub fn records(&self, papers: &[PaperRecord]) -> Result<Vec<InstructionRecord>, TaskError> {
        let template = TextTemplate::parse(&self.data.input_template)?;
        Ok(records_from_papers(papers, self.data.task, self.instruction(), &template))
    }

    fn load_options(&self, require_label: bool, max_rows: Option<usize>) -> LoadOptions<'_> {
        LoadOptions { columns: &self.data.columns, max_rows, require_label, empty_text: self.data.empty_text }
    }
}

/// Turns records into token ids: the prompt (chat template or plain), the answer with EOS.
pub struct PromptEncoder<'a> {
    pub tokenizer: &'a LlmTokenizer,
    pub chat_template: bool,
}

/// Closing text of plain (non-chat) prompts.
const PLAIN_TAIL: &str = "\nanswer: ";

impl PromptEncoder<'_> {
    /// The prompt's ids in two parts: `head` (everything up to the end of the user text, which
    /// may be cut) and `tail` (the template's closing text, always kept).
    pub fn prompt_parts(&self, record: &InstructionRecord) -> Result<(Vec<u32>, Vec<u32>), TaskError> {
        let content = record.user_content();
        let (head, tail) = if self.chat_template {
            let mut messages = Vec::new();
            if let Some(system) = &record.system {
                messages.push(ChatMessage { role: "system".into(), content: system.clone() });
            }
            messages.push(ChatMessage::user(content.clone()));
            let text = self.tokenizer.apply_chat_template(&messages, true)?;
            let end = text.rfind(&content).map(|i| i + content.len()).ok_or_else(|| {
                TaskError::Config("the chat template does not reproduce the user text; set model.chat_template = false".into())
            })?;
            (text[..end].to_owned(), text[end..].to_owned())
        } else {
            let head = match &record.system {
                Some(system) => format!("{system}\n{content}"),
                None => content,
            };
            (head, PLAIN_TAIL.to_owned())
        };
        Ok((self.tokenizer.encode(&head, true)?, self.tokenizer.encode(&tail, false)?))
    }

    /// Answer ids followed by the EOS token.
    pub fn answer_ids(&self, output: &str) -> Result<Vec<u32>, TaskError> {
        let mut ids = self.tokenizer.encode(output, false)?;
        let eos = self.tokenizer.eos_token_ids.first().copied().ok_or_else(|| {
            TaskError::Config(format!("the tokenizer of {} names no end-of-sequence token", self.tokenizer.source.display()))
        })?;
        ids.push(eos);
        Ok(ids)
    }

    /// A training example: prompt + answer, prompt masked out of the loss.
    pub fn training_example(&self, record: &InstructionRecord, max_len: usize, max_answer: usize) -> Result<CausalLmExample, TaskError> {
        let (head, tail) = self.prompt_parts(record)?;
        let answer = self.answer_ids(&record.output)?;
        Ok(CausalLmExample::new(&head, &tail, &answer, max_len, max_answer))
    }

    /// A prompt of at most `budget` tokens (the head is cut, the tail kept).
    pub fn prompt_ids(&self, record: &InstructionRecord, budget: usize) -> Result<Vec<u32>, TaskError> {
        let (mut head, tail) = self.prompt_parts(record)?;
        head.truncate(budget.saturating_sub(tail.len()));
        head.extend(tail);
        Ok(head)
    }
}

/// The decoder as the trainer sees it: a batch in, answer-position logits and targets out.
#[derive(Module, Debug)]
pub struct CausalLmTrainer {
    pub lm: LlamaModel,
}

impl TrainModel<CausalLmBatch> for CausalLmTrainer {
    type Output = Tensor<2>;
    type Target = Tensor<1, Int>;

    /// Only positions followed by an answer token go through the LM head: `[scored, vocab]`.
    fn forward_train(&self, batch: CausalLmBatch) -> (Tensor<2>, Tensor<1, Int>) {
        let input = self.lm.input(&batch.input_ids, &batch.attention_mask);
        let hidden = self.lm.forward_hidden(input, None); // [batch, seq, hidden]
        let [rows, seq, width] = hidden.dims();
        let scored = hidden.reshape([rows * seq, width]).select(0, batch.scored_positions); // [scored, hidden]
        (self.lm.logits(scored), batch.targets)
    }

    fn seed_micro_batch(&self, seed: u64) {
        papertune_models::dropout::seed_thread(seed);
    }
}

/// Progress over `total` prompts: a bar on a terminal, else a log line every tenth.
struct PromptProgress {
    bar: indicatif::ProgressBar,
    what: &'static str,
    total: usize,
    done: usize,
}

impl PromptProgress {
    fn new(total: usize, what: &'static str) -> Self {
        let bar = indicatif::ProgressBar::new(total as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{elapsed_precise} < {eta_precise}] {bar:30} {pos}/{len}")
                .expect("valid template"),
        );
        bar.set_message(what);
        Self { bar, what, total, done: 0 }
    }

    fn advance(&mut self, n: usize) {
        let before = self.done * 10 / self.total.max(1);
        self.done += n;
        self.bar.inc(n as u64);
        if self.bar.is_hidden() && self.done * 10 / self.total.max(1) > before {
            tracing::info!("{}: {}/{} prompts", self.what, self.done, self.total);
        }
    }
}

impl Drop for PromptProgress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

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
    let answer_index = Tensor::<1, Int>::from_data(TensorData::new(answer_ids.map(i64::from).to_vec(), [2]), &device);
    let mut out = vec![0.0f32; prompts.len()];
    let pad = tokenizer.pad_id();
    let mut progress = PromptProgress::new(prompts.len(), "scoring");
    for chunk in by_length(prompts).chunks(batch_size) {
        let longest = chunk.iter().map(|&i| prompts[i].len()).max().unwrap_or(1);
        let mut ids = Vec::with_capacity(chunk.len());
        let mut mask = Vec::with_capacity(chunk.len());
        for &i in chunk {
            let padding = longest - prompts[i].len();
            ids.push(std::iter::repeat_n(pad, padding).chain(prompts[i].iter().copied()).collect::<Vec<u32>>());
            mask.push(std::iter::repeat_n(0u8, padding).chain(std::iter::repeat_n(1u8, prompts[i].len())).collect::<Vec<u8>>());
        }
        let hidden = model.forward_hidden(model.input(&ids, &mask), None);
        let [rows, seq, width] = hidden.dims();
        let last = hidden.narrow(1, seq - 1, 1).reshape([rows, width]);
        let logits = model.logits(last).select(1, answer_index.clone()); // [rows, 2]
        let probs: Vec<f32> = softmax(logits, 1).into_data().convert::<f32>().try_into_vec::<f32>().expect("f32");
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
    let mut progress = PromptProgress::new(prompts.len(), "generating");
    for chunk in by_length(prompts).chunks(batch_size) {
        let batch: Vec<Vec<u32>> = chunk.iter().map(|&i| prompts[i].clone()).collect();
        for (generated, &i) in generator.generate(&batch, generation)?.into_iter().zip(chunk) {
            out[i] = parse_generated_keywords(&generated.text);
        }
        progress.advance(chunk.len());
    }
    Ok(out)
}

/// Validation data in the form evaluation needs.
struct ValidSet {
    prompts: Vec<Vec<u32>>,
    labels: Vec<u8>,
    gold_keywords: Vec<Vec<String>>,
}

fn valid_set(config: &LlmConfig, encoder: &PromptEncoder<'_>, papers: &[PaperRecord]) -> Result<ValidSet, TaskError> {
    let records = config.records(papers)?;
    let budget = match config.data.task {
        InstructionTask::Classify => config.model.max_len,
        InstructionTask::Keywords => config.model.max_len - config.generation.max_new_tokens,
    };
    Ok(ValidSet {
        prompts: records.iter().map(|r| encoder.prompt_ids(r, budget)).collect::<Result<_, _>>()?,
        labels: papers.iter().map(|p| p.label.unwrap_or(0)).collect(),
        gold_keywords: papers.iter().map(|p| p.keywords.as_deref().map(parse_gold_keywords).unwrap_or_default()).collect(),
    })
}

/// Evaluates a model on a validation set: keyword metrics or binary metrics.
fn evaluate_model(
    config: &LlmConfig,
    model: &LlamaModel,
    tokenizer: &LlmTokenizer,
    valid: &ValidSet,
) -> Result<(Metrics, serde_json::Value), TaskError> {
    match config.data.task {
        InstructionTask::Keywords => {
            let predicted =
                generate_keywords(model, tokenizer, &valid.prompts, &config.generation, config.model.eval_batch_size)?;
            let metrics = KeywordMetrics::compute(&predicted, &valid.gold_keywords);
            Ok((metrics.as_map(), serde_json::to_value(metrics).expect("serialisable")))
        }
        InstructionTask::Classify => {
            let probabilities = classify_probabilities(model, tokenizer, &valid.prompts, config.model.eval_batch_size)?;
            let predicted: Vec<u8> = probabilities.iter().map(|&p| u8::from(p >= 0.5)).collect();
            let metrics = BinaryMetrics::compute(&predicted, &valid.labels);
            Ok((metrics.as_map(), serde_json::to_value(metrics).expect("serialisable")))
        }
    }
}

struct LlmHooks<'a> {
    config: &'a LlmConfig,
    run: &'a RunDir,
    tokenizer: &'a LlmTokenizer,
    valid: &'a ValidSet,
    base_model: String,
    last_metrics: Option<Metrics>,
    best_metrics: Option<Metrics>,
}

impl TrainHooks<CausalLmTrainer> for LlmHooks<'_> {
    fn evaluate(&mut self, model: &CausalLmTrainer, _progress: &TrainProgress) -> Result<Metrics, TrainError> {
        if self.valid.prompts.is_empty() {
            return Ok(Metrics::new());
        }
        let (metrics, _) = evaluate_model(self.config, &model.lm, self.tokenizer, self.valid)
            .map_err(|e| TrainError::Hook(e.to_string()))?;
        self.last_metrics = Some(metrics.clone());
        Ok(metrics)
    }

    fn save(&mut self, model: &CausalLmTrainer, kind: SaveKind, context: &CheckpointContext<'_>) -> Result<(), TrainError> {
        let (which, keep) = match kind {
            SaveKind::Best => {
                self.best_metrics = self.last_metrics.clone();
                (Which::Best, 1)
            }
            SaveKind::Last => (Which::Last, context.state().config.save_total_limit),
        };
        self.run
            .write_checkpoint_keeping(which, keep, |dir| {
                save_peft_adapter(&model.lm, &self.config.lora, &self.base_model, dir)?;
                context.write_resume_files(model, dir)?;
                CheckpointState::at(context.progress, &self.config.train.metric_for_best).seal(dir)
            })
            .map_err(|e| TrainError::Hook(e.to_string()))
    }
}

/// The name written as the adapter's base model: the hub id for a preset, else the spec.
fn base_model_name(spec: &str) -> String {
    source::LLM_PRESETS.iter().find(|p| p.name == spec).map_or_else(|| spec.to_owned(), |p| p.hub_id.to_owned())
}

/// Trains LoRA adapters as `config` says, writing the run to `out`.
pub fn train(config: &LlmConfig, out: &Path, device: &Device, show_progress: bool) -> Result<TrainReport, TaskError> {
    train_with(config, out, device, &TrainOptions::with_progress(show_progress))
}

/// [`train`] with the session options: resuming, stop requests, the backend's name.
pub fn train_with(config: &LlmConfig, out: &Path, device: &Device, options: &TrainOptions) -> Result<TrainReport, TaskError> {
    config.validate().map_err(TaskError::Config)?;
    let train_path = config.data.train.as_deref().ok_or_else(|| TaskError::Config("data.train is not set".into()))?;
    let require_label = config.data.task == InstructionTask::Classify;

    let (train_records, valid_papers) = match config.data.format {
        LlmDataFormat::Alpaca => {
            let records = read_alpaca(train_path, config.data.max_rows)?;
            let valid_path = config.data.valid.as_deref().expect("validated");
            let (valid, _) = load_papers(valid_path, &config.load_options(require_label, config.data.max_valid_rows))?;
            (records, valid)
        }
        LlmDataFormat::Papers => {
            let (papers, _) = load_papers(train_path, &config.load_options(require_label, config.data.max_rows))?;
            let papers = if config.data.task == InstructionTask::Keywords {
                let before = papers.len();
                let kept: Vec<PaperRecord> =
                    papers.into_iter().filter(|p| p.keywords.as_deref().is_some_and(|k| !k.trim().is_empty())).collect();
                if kept.len() < before {
                    tracing::warn!("{} training rows have no keywords and are left out", before - kept.len());
                }
                kept
            } else {
                papers
            };
            let (train_papers, valid_papers) = match &config.data.valid {
                Some(valid_path) => {
                    let (valid, _) = load_papers(valid_path, &config.load_options(require_label, config.data.max_valid_rows))?;
                    (papers, valid)
                }
                None if config.data.valid_fraction == 0.0 => (papers, Vec::new()),
                None => {
                    let labels: Vec<u8> = papers.iter().map(|p| p.label.unwrap_or(0)).collect();
                    let seed = config.data.split_seed.unwrap_or(config.train.seed);
                    let (train_idx, mut valid_idx) = stratified_split(&labels, config.data.valid_fraction, seed)?;
                    if let Some(max) = config.data.max_valid_rows {
                        valid_idx.truncate(max);
                    }
                    let pick = |idx: &[usize]| idx.iter().map(|&i| papers[i].clone()).collect::<Vec<_>>();
                    (pick(&train_idx), pick(&valid_idx))
                }
            };
            (config.records(&train_papers)?, valid_papers)
        }
    };

    let files = source::resolve_llm(&config.model.source)?;
    let train_device = device.clone().autodiff();
    let lm = PretrainedCausalLm::load(&files, &train_device)?;
    let encoder = PromptEncoder { tokenizer: &lm.tokenizer, chat_template: config.model.chat_template };
    let examples = train_records
        .iter()
        .map(|r| encoder.training_example(r, config.model.max_len, config.model.max_answer_len))
        .collect::<Result<Vec<_>, _>>()?;
    let dataset = CausalLmDataset::new(examples);
    let valid = valid_set(config, &encoder, &valid_papers)?;
    let answer_tokens: usize = dataset.examples().iter().map(CausalLmExample::answer_len).sum();
    tracing::info!(
        "data: {} training records ({} tokens, {} answer tokens), {} validation rows",
        dataset.examples().len(),
        dataset.total_tokens(),
        answer_tokens,
        valid.prompts.len()
    );

    let config_text = toml::to_string_pretty(config).map_err(|e| TaskError::Config(e.to_string()))?;
    // Generation options only matter to evaluation: they may change on resume.
    let (run, resume) = open_run(out, &config_text, options.resume, &["train", "generation"])?;

    let model = match &resume {
        None => lm.model.clone().attach_lora(&config.lora)?,
        Some((last, _)) => load_peft_adapter(lm.model.clone(), last)?.0,
    };
    tracing::info!(
        "LoRA r {} alpha {} on {:?}: {} trainable parameters",
        config.lora.r,
        config.lora.alpha,
        config.lora.target_modules,
        model.lora_parameter_count()
    );
    let mut hooks = LlmHooks {
        config,
        run: &run,
        tokenizer: &lm.tokenizer,
        valid: &valid,
        base_model: base_model_name(&config.model.source),
        last_metrics: None,
        best_metrics: None,
    };
    let mut trainer = options.configure(Trainer::new(config.train.clone(), &train_device)?, &run);
    if let Some((_, point)) = resume {
        hooks.best_metrics = best_metrics_from_history(&point.state);
        trainer = trainer.with_resume(point);
    }
    let batcher = CausalLmBatcher { pad_id: lm.tokenizer.pad_id() };
    let (_, summary) =
        trainer.fit(CausalLmTrainer { lm: model }, &CausalLmLoss::default(), &dataset, &batcher, &mut hooks)?;

    let tokens_per_example = dataset.total_tokens() as f64 / dataset.examples().len().max(1) as f64;
    let report = TrainReport::write(
        &run,
        &config.model.source,
        (dataset.examples().len(), valid.prompts.len()),
        &summary,
        hooks.best_metrics.clone(),
        RunFacts { tokens_per_example, backend: options.backend.clone() },
    )?;
    refresh_report(&run);
    Ok(report)
}

/// A LoRA run loaded for inference: the base model with the run's adapter merged in (or none).
pub struct LoadedLlmRun {
    pub dir: RunDir,
    pub config: LlmConfig,
    pub model: LlamaModel,
    pub tokenizer: LlmTokenizer,
    /// The checkpoint's state, `None` when evaluated without the adapter.
    pub state: Option<CheckpointState>,
}

impl LoadedLlmRun {
    /// Loads the run's config and base model, and (unless `with_adapter` is false) the chosen
    /// checkpoint's adapter, merged into the weights.
    pub fn open(run: &Path, which: Which, with_adapter: bool, device: &Device) -> Result<Self, TaskError> {
        let dir = RunDir::new(run);
        let config = read_llm_config(&dir.config())?;
        let files = source::resolve_llm(&config.model.source)?;
        let lm = PretrainedCausalLm::load(&files, device)?;
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

/// Reads a run's `config.toml` as a LoRA run config.
pub fn read_llm_config(path: &Path) -> Result<LlmConfig, TaskError> {
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    toml::from_str(&text).map_err(|e| TaskError::Run { path: path.to_path_buf(), message: e.to_string() })
}

/// Whether a run folder holds a LoRA run (its config has a `[lora]` section).
pub fn is_llm_run(run: &Path) -> bool {
    std::fs::read_to_string(RunDir::new(run).config())
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .is_some_and(|table| table.contains_key("lora"))
}

/// Evaluates a run on a file in the papers layout; the metrics as JSON (with `n` and whether the
/// adapter was used).
pub fn evaluate(
    run: &Path,
    data: &Path,
    with_adapter: bool,
    max_rows: Option<usize>,
    device: &Device,
) -> Result<serde_json::Value, TaskError> {
    let loaded = LoadedLlmRun::open(run, Which::Best, with_adapter, device)?;
    let config = &loaded.config;
    let require_label = config.data.task == InstructionTask::Classify;
    let (mut papers, _) = load_papers(data, &config.load_options(require_label, max_rows))?;
    if config.data.task == InstructionTask::Keywords {
        papers.retain(|p| p.keywords.as_deref().is_some_and(|k| !k.trim().is_empty()));
        if papers.is_empty() {
            return Err(TaskError::Run { path: data.to_path_buf(), message: "no row has gold keywords".into() });
        }
    }
    let valid = valid_set(config, &loaded.encoder(), &papers)?;
    let (_, mut json) = evaluate_model(config, &loaded.model, &loaded.tokenizer, &valid)?;
    json["adapter"] = serde_json::json!(with_adapter);
    json["task"] = serde_json::json!(config.data.task);
    if config.data.task == InstructionTask::Classify {
        json["n"] = serde_json::json!(papers.len());
    }
    Ok(json)
}

/// Predicts for every row of `data` and writes the submission CSV: the keywords (keywords runs)
/// or the label (classify runs); the other column is left empty / 0.
pub fn predict(run: &Path, data: &Path, output: &Path, device: &Device) -> Result<usize, TaskError> {
    let loaded = LoadedLlmRun::open(run, Which::Best, true, device)?;
    let config = &loaded.config;
    let (papers, _) = load_papers(data, &config.load_options(false, None))?;
    let valid = valid_set(config, &loaded.encoder(), &papers)?;
    let rows: Vec<SubmissionRow> = match config.data.task {
        InstructionTask::Keywords => {
            let keywords = generate_keywords(
                &loaded.model,
                &loaded.tokenizer,
                &valid.prompts,
                &config.generation,
                config.model.eval_batch_size,
            )?;
            papers.iter().zip(keywords).map(|(p, k)| SubmissionRow { uuid: p.uuid.clone(), keywords: k, label: 0 }).collect()
        }
        InstructionTask::Classify => {
            let probabilities =
                classify_probabilities(&loaded.model, &loaded.tokenizer, &valid.prompts, config.model.eval_batch_size)?;
            papers
                .iter()
                .zip(probabilities)
                .map(|(p, prob)| SubmissionRow { uuid: p.uuid.clone(), keywords: Vec::new(), label: u8::from(prob >= 0.5) })
                .collect()
        }
    };
    write_submission(output, &rows)?;
    Ok(rows.len())
}
