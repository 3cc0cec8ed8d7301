//! The two model families loaded whole from their files: configuration, weights (every tensor
//! name and shape checked, none left over) and, for the decoder, the tokenizer.

use std::path::Path;

use burn::tensor::Device;

use crate::bert::{BertConfig, BertModel};
use crate::checkpoint::Checkpoint;
use crate::error::{ModelError, Result};
use crate::gguf::{self, GgufFile};
use crate::llama::{LlamaConfig, LlamaModel};
use crate::llm_tokenizer::LlmTokenizer;
use crate::source::{LlmFiles, ModelFiles};

/// A BERT-family encoder loaded from checkpoint files, with its configuration.
#[derive(Debug)]
pub struct PretrainedEncoder {
    pub config: BertConfig,
    pub model: BertModel,
}

impl PretrainedEncoder {
    /// Reads `config.json` and the weights, checking every tensor name and shape.
    pub fn load(files: &ModelFiles, device: &Device) -> Result<Self> {
        Self::load_weights(BertConfig::read(&files.config)?, &files.weights, device)
    }

    /// The encoder `config` describes, with the weights of `weights` (`model.safetensors` or a
    /// sharded index), for a caller that has read the configuration already.
    pub fn load_weights(config: BertConfig, weights: &Path, device: &Device) -> Result<Self> {
        let mut checkpoint = Checkpoint::read(weights)?;
        let model = BertModel::from_checkpoint(&config, &mut checkpoint, device)?;
        checkpoint.ensure_consumed(BertModel::ignorable_tensors())?;
        Ok(Self { config, model })
    }

    /// A randomly initialised encoder of the given shape (for tests and from-scratch training).
    pub fn random(config: BertConfig, seed: u64, device: &Device) -> Result<Self> {
        let mut checkpoint = crate::init::random_bert_checkpoint(&config, seed);
        let model = BertModel::from_checkpoint(&config, &mut checkpoint, device)?;
        Ok(Self { config, model })
    }
}

/// A Llama-family causal LM with its tokenizer, loaded from GGUF or a Hugging Face folder.
#[derive(Debug)]
pub struct PretrainedCausalLm {
    pub config: LlamaConfig,
    pub model: LlamaModel,
    pub tokenizer: LlmTokenizer,
}

/// How a GGUF file's quantised weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightPrecision {
    /// Decoded to f32 on load.
    #[default]
    Dequantized,
    /// The linear layers and a tied head stay in their blocks and are computed from them (the
    /// token embedding and the norms are f32). Files without quantised weights load as f32.
    Quantized,
}

impl PretrainedCausalLm {
    /// Reads the architecture, the weights (dequantised to f32) and the tokenizer.
    pub fn load(files: &LlmFiles, device: &Device) -> Result<Self> {
        Self::load_with(files, WeightPrecision::Dequantized, device)
    }

    /// Reads the architecture, the weights as `precision` says, and the tokenizer.
    pub fn load_with(
        files: &LlmFiles,
        precision: WeightPrecision,
        device: &Device,
    ) -> Result<Self> {
        match files {
            LlmFiles::Gguf(path) => {
                let file = GgufFile::read(path)?;
                let config = LlamaConfig::from_gguf(&file)?;
                let beside = path.with_file_name("tokenizer.json");
                let tokenizer = if beside.exists() {
                    LlmTokenizer::from_files(
                        &beside,
                        Some(&path.with_file_name("tokenizer_config.json")),
                    )?
                } else {
                    LlmTokenizer::from_gguf(&file)?
                };
                check_vocabulary(&tokenizer, &config, path)?;
                let (mut checkpoint, mut quantized) = match precision {
                    WeightPrecision::Dequantized => {
                        (gguf::llama_checkpoint(&file, &config)?, Default::default())
                    }
                    WeightPrecision::Quantized => gguf::llama_checkpoint_quantized(&file, &config)?,
                };
                drop(file);
                let model = LlamaModel::load_with_quantized(
                    &config,
                    &mut checkpoint,
                    &mut quantized,
                    device,
                )?;
                checkpoint.ensure_consumed(LlamaModel::ignorable_tensors())?;
                if let Some(name) = quantized.keys().next() {
                    return Err(ModelError::Config {
                        path: path.clone(),
                        message: format!("quantised tensor {name:?} is not used by the model"),
                    });
                }
                Ok(Self { config, model, tokenizer })
            }
            LlmFiles::Folder { files, tokenizer_config } => {
                let config = LlamaConfig::read(&files.config)?;
                let mut tokenizer =
                    LlmTokenizer::from_files(&files.tokenizer, tokenizer_config.as_deref())?;
                if tokenizer.eos_token_ids.is_empty() {
                    tokenizer.eos_token_ids = config.eos_token_ids.clone();
                }
                check_vocabulary(&tokenizer, &config, &files.tokenizer)?;
                let mut checkpoint = Checkpoint::read(&files.weights)?;
                let model = LlamaModel::load(&config, &mut checkpoint, device)?;
                checkpoint.ensure_consumed(LlamaModel::ignorable_tensors())?;
                Ok(Self { config, model, tokenizer })
            }
        }
    }
}

/// Writes a decoder as a Hugging Face folder: `model.safetensors` (adapters merged), the
/// `config.json` transformers reads for its architecture, and the tokenizer files. The folder
/// is assembled beside `dir` and renamed into place, so a failure leaves no partial folder; an
/// existing `dir` is refused.
pub fn write_hf_folder(
    model: LlamaModel,
    config: &LlamaConfig,
    tokenizer: &LlmTokenizer,
    dir: &Path,
) -> Result<()> {
    use crate::lora::LoraModel;
    if dir.exists() {
        return Err(ModelError::Config {
            path: dir.to_path_buf(),
            message: "already exists; choose a new folder".into(),
        });
    }
    config
        .hf_expressible()
        .map_err(|message| ModelError::Config { path: dir.to_path_buf(), message })?;
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export".into());
    let staging = parent.join(format!(".{name}.partial-{}", std::process::id()));
    let write = || -> Result<()> {
        std::fs::create_dir_all(&staging).map_err(|e| ModelError::io(&staging, e))?;
        let mut writer = crate::weights::TensorWriter::new();
        model.merge_lora().export(config, &mut writer);
        writer.into_checkpoint().write(&staging.join("model.safetensors"), None)?;
        let json = serde_json::to_string_pretty(&config.to_hf_json())
            .map_err(|e| ModelError::Config { path: staging.clone(), message: e.to_string() })?;
        crate::checkpoint::write_atomic(&staging.join("config.json"), json.as_bytes())?;
        tokenizer.save_hf(&staging)?;
        std::fs::rename(&staging, dir).map_err(|e| ModelError::io(dir, e))
    };
    let outcome = write();
    if outcome.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    outcome
}

/// Refuses a tokenizer that can produce ids past the embedding table (they would index out of
/// it at the first forward pass).
fn check_vocabulary(
    tokenizer: &LlmTokenizer,
    config: &LlamaConfig,
    tokenizer_path: &Path,
) -> Result<()> {
    if tokenizer.vocab_size() > config.vocab_size {
        return Err(ModelError::Tokenizer {
            path: tokenizer_path.to_path_buf(),
            message: format!(
                "{} tokens, but the model's embedding table has {} rows",
                tokenizer.vocab_size(),
                config.vocab_size
            ),
        });
    }
    Ok(())
}
