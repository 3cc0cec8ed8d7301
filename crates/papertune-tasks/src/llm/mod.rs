//! Both paper tasks through a causal LM tuned with LoRA: records `instruction / input / output`
//! built from paper rows (or read from Alpaca-style files), the prompt rendered with the model's
//! chat template and masked out of the loss, adapters trained with the shared pipeline and saved
//! in PEFT's layout.
//!
//! - Task 1 (`classify`): the answer is "1" or "0"; at inference the probability of "1" is read
//!   from the logits of the two tokens after the prompt (no free generation).
//! - Task 2 (`keywords`): the answer is the keywords joined by commas; at inference the model
//!   generates greedily and the text is split, normalised and de-duplicated.
//!
//! The rooms: `config.rs` (the `[data] [model] [lora] [generation] [train]` sections),
//! `prompt.rs` (records as token ids), `train.rs` (the task's side of the shared training
//! pipeline), `infer.rs` (loaded runs and what they do), `export.rs` (a run written for
//! llama.cpp and transformers).

mod config;
mod export;
mod infer;
mod prompt;
mod train;

pub use config::{LlmConfig, LlmDataConfig, LlmDataFormat, LlmModelConfig};
pub use export::{ExportFormat, export};
pub use infer::{
    EvalOptions, LoadedRun, classify_probabilities, evaluate, generate_keywords, is_llm_run,
    llm_run_task, predict, submission_rows,
};
pub use prompt::PromptEncoder;
pub use train::{CausalLmTrainer, train};

use burn::tensor::Device;
use papertune_models::source::LlmFiles;
use papertune_models::{PretrainedCausalLm, WeightPrecision};

use crate::error::TaskError;

/// The base model of a config, its weights as `weights` says, with the config's named chat
/// template in place of the model's own (training, evaluation and export all load it so).
fn load_base(
    model: &LlmModelConfig,
    files: &LlmFiles,
    weights: WeightPrecision,
    device: &Device,
) -> Result<PretrainedCausalLm, TaskError> {
    let mut lm = PretrainedCausalLm::load_with(files, weights, device)?;
    if let Some(name) = &model.template {
        lm.tokenizer.use_named_template(name)?;
    }
    Ok(lm)
}
