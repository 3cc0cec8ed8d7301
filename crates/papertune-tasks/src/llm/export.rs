//! `export`: a LoRA run written for other tools: its adapter as llama.cpp's LoRA GGUF, the
//! merged model as a GGUF (F16 or Q8_0), or the merged model as a Hugging Face folder.

use std::path::Path;

use burn::tensor::Device;
use papertune_models::gguf::{ExportType, GgufFile, write_lora_adapter, write_merged_model};
use papertune_models::lora::load_peft_adapter;
use papertune_models::source::{self, LlmFiles};
use papertune_models::{WeightPrecision, write_hf_folder};

use super::config::LlmConfig;
use crate::error::TaskError;
use crate::run_dir::{RunDir, Which, read_toml};

/// What `export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// The adapter alone, as llama.cpp's LoRA GGUF (`llama-cli -m BASE.gguf --lora FILE`).
    GgufLora,
    /// The merged model as a GGUF with the base file's metadata.
    Gguf(ExportType),
    /// The merged model as a Hugging Face folder.
    Hf,
}

/// Writes the run's chosen checkpoint as `format` to `out` (a file, or a folder for `Hf`).
/// `out` must not exist yet; nothing is written when a step fails.
pub fn export(
    run: &Path,
    which: Which,
    format: ExportFormat,
    out: &Path,
    device: &Device,
) -> Result<(), TaskError> {
    if out.exists() {
        return Err(TaskError::Config(format!(
            "{} already exists; export writes a new file or folder",
            out.display()
        )));
    }
    let dir = RunDir::new(run);
    if dir.config().exists() && !super::is_llm_run(run) {
        return Err(TaskError::Run {
            path: run.to_path_buf(),
            message: "is not a LoRA run (its config has no [lora] section); export writes a LoRA run's adapter or merged model".into(),
        });
    }
    let config: LlmConfig = read_toml(&dir.config())?;
    let checkpoint = dir.verified_checkpoint(which)?;
    let files = source::resolve_llm(&config.model.source)?;
    let base_gguf = match &files {
        LlmFiles::Gguf(path) => Some(path.clone()),
        LlmFiles::Folder { .. } => None,
    };
    // The merged exports start from f32 weights; the adapter alone needs only the shapes.
    let precision = match format {
        ExportFormat::GgufLora => config.model.weights,
        _ => WeightPrecision::Dequantized,
    };
    let lm = super::load_base(&config.model, &files, precision, device)?;
    let (model, lora) = load_peft_adapter(lm.model, &checkpoint)?;
    let gguf_base = || -> Result<GgufFile, TaskError> {
        let path = base_gguf.clone().ok_or_else(|| {
            TaskError::Config(format!("the base model {} is not a GGUF file; a GGUF export needs one for its names and metadata", config.model.source))
        })?;
        Ok(GgufFile::read(&path)?)
    };
    match format {
        ExportFormat::GgufLora => {
            write_lora_adapter(&model, &lm.config, &lora, &gguf_base()?, out)?
        }
        ExportFormat::Gguf(ty) => write_merged_model(model, &lm.config, &gguf_base()?, ty, out)?,
        ExportFormat::Hf => write_hf_folder(model, &lm.config, &lm.tokenizer, out)?,
    }
    Ok(())
}
