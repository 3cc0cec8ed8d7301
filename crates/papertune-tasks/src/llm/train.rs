//! Training LoRA adapters: records built from paper rows (or read from an Alpaca file), encoded
//! with the prompt masked out of the loss, the base model with fresh adapters (or the last
//! checkpoint's), and the hooks that evaluate by scoring or generating and save PEFT adapter
//! folders, through the shared pipeline.

use std::path::Path;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};
use papertune_data::{
    CausalLmBatch, CausalLmBatcher, CausalLmDataset, CausalLmExample, InstructionTask, PaperRecord,
    load_papers, read_alpaca,
};
use papertune_models::llama::LlamaModel;
use papertune_models::llm_tokenizer::LlmTokenizer;
use papertune_models::lora::{LoraModel, load_peft_adapter, save_peft_adapter};
use papertune_models::source;
use papertune_train::{
    CausalLmLoss, CheckpointContext, Metrics, SaveKind, TrainError, TrainHooks, TrainModel,
    TrainProgress,
};

use super::config::{LlmConfig, LlmDataFormat};
use super::infer::{ValidSet, evaluate_model};
use super::prompt::PromptEncoder;
use crate::error::TaskError;
use crate::pipeline::{RunFacts, TrainOptions, TrainReport, TrainSession};
use crate::run_dir::{CheckpointState, RunDir, Which};

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
}

/// Evaluation and adapter saving during training.
struct LlmHooks<'a> {
    config: &'a LlmConfig,
    run: RunDir,
    tokenizer: &'a LlmTokenizer,
    valid: &'a ValidSet,
    base_model: String,
}

impl TrainHooks<CausalLmTrainer> for LlmHooks<'_> {
    fn evaluate(
        &mut self,
        model: &CausalLmTrainer,
        _progress: &TrainProgress,
    ) -> Result<Metrics, TrainError> {
        if self.valid.prompts.is_empty() {
            return Ok(Metrics::new());
        }
        let (metrics, _) =
            evaluate_model(self.config, &model.lm, self.tokenizer, self.valid, false)
                .map_err(|e| TrainError::Hook(e.to_string()))?;
        Ok(metrics)
    }

    fn save(
        &mut self,
        model: &CausalLmTrainer,
        kind: SaveKind,
        context: &CheckpointContext<'_>,
    ) -> Result<(), TrainError> {
        let (which, keep) = match kind {
            SaveKind::Best => (Which::Best, 1),
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
    source::LLM_PRESETS
        .iter()
        .find(|p| p.name == spec)
        .map_or_else(|| spec.to_owned(), |p| p.hub_id.to_owned())
}

/// The records to train on and the validation rows.
fn training_data(
    config: &LlmConfig,
) -> Result<(Vec<papertune_data::InstructionRecord>, Vec<PaperRecord>), TaskError> {
    let (source, rules) = (config.data.source(), config.row_rules());
    let train_path = source.train_path()?;
    if config.data.format == LlmDataFormat::Alpaca {
        let records = read_alpaca(train_path, config.data.max_rows)?;
        let valid_path = source.valid.expect("validated: alpaca data needs data.valid");
        let (valid, _) =
            load_papers(valid_path, &source.load_options(config.data.max_valid_rows, rules))?;
        return Ok((records, valid));
    }
    let mut papers = source.train_rows(rules)?;
    if config.data.task == InstructionTask::Keywords {
        let before = papers.len();
        papers.retain(|p| p.keywords.as_deref().is_some_and(|k| !k.trim().is_empty()));
        if papers.len() < before {
            tracing::warn!(
                "{} training rows have no keywords and are left out",
                before - papers.len()
            );
        }
    }
    let (train_papers, valid_papers) =
        source.split(papers, rules, config.data.max_valid_rows, config.train.seed)?;
    Ok((config.records(&train_papers), valid_papers))
}

/// Trains LoRA adapters as `config` says, writing the run to `out`.
pub fn train(
    config: &LlmConfig,
    out: &Path,
    device: &Device,
    options: &TrainOptions,
) -> Result<TrainReport, TaskError> {
    config.validate().map_err(TaskError::Config)?;
    let (train_records, valid_papers) = training_data(config)?;
    let files = source::resolve_llm(&config.model.source)?;
    let lm =
        super::load_base(&config.model, &files, config.model.weights, &device.clone().autodiff())?;
    let encoder =
        PromptEncoder { tokenizer: &lm.tokenizer, chat_template: config.model.chat_template };
    let examples = train_records
        .iter()
        .map(|r| encoder.training_example(r, config.model.max_len, config.model.max_answer_len))
        .collect::<Result<Vec<_>, _>>()?;
    let dataset = CausalLmDataset::new(examples);
    let valid = ValidSet::new(config, &encoder, &valid_papers)?;
    let answer_tokens: usize = dataset.examples().iter().map(CausalLmExample::answer_len).sum();
    tracing::info!(
        "data: {} training records ({} tokens, {answer_tokens} answer tokens), {} validation rows",
        dataset.examples().len(),
        dataset.total_tokens(),
        valid.prompts.len()
    );

    // Generation options only matter to evaluation: they may change on resume.
    let session = TrainSession::open(out, config, options, &["train", "generation"])?;
    let model = match session.resume_dir() {
        None => lm.model.clone().attach_lora(&config.lora)?,
        Some(last) => load_peft_adapter(lm.model.clone(), last)?.0,
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
        run: session.run.clone(),
        tokenizer: &lm.tokenizer,
        valid: &valid,
        base_model: base_model_name(&config.model.source),
    };
    let facts = RunFacts {
        model: config.model.source.clone(),
        train_examples: dataset.examples().len(),
        valid_examples: valid.prompts.len(),
        tokens_per_example: dataset.total_tokens() as f64 / dataset.examples().len().max(1) as f64,
        // The tied head is the embedding again (transposed), not parameters of its own.
        copied_parameters: model
            .tied_head
            .as_ref()
            .map_or(0, |head| head.val().shape().num_elements()),
        ..RunFacts::default()
    };
    let batcher = CausalLmBatcher { pad_id: lm.tokenizer.pad_id() };
    let model = CausalLmTrainer { lm: model };
    session.fit(
        model,
        &config.train,
        device,
        &CausalLmLoss::default(),
        &dataset,
        &batcher,
        &mut hooks,
        facts,
    )
}
