//! Transformer models for papertune, in burn, with their checkpoint readers.
//!
//! - [`bert`]: the BERT-family encoder (BERT, RoBERTa, MiniLM), configured by [`BertConfig`]
//!   from a checkpoint's `config.json`, weights read from safetensors by an explicit name map.
//! - [`source`]: where a checkpoint comes from (local folder, preset, Hugging Face id, registry
//!   package), resolved to local files once and cached.
//! - [`safetensors_io`] and [`weights`]: reading and writing checkpoints, with errors naming
//!   any missing, unexpected or mis-shaped tensor.
//!
//! ```no_run
//! use burn::tensor::Device;
//! use papertune_models::{PretrainedEncoder, source};
//!
//! # fn main() -> Result<(), papertune_models::ModelError> {
//! let files = source::resolve("minilm")?;
//! let encoder = PretrainedEncoder::load(&files, &Device::default())?;
//! println!("{} layers, hidden {}", encoder.config.num_hidden_layers, encoder.config.hidden_size);
//! # Ok(()) }
//! ```

pub mod bert;
pub mod bert_config;
pub mod dropout;
pub mod error;
pub mod fused;
pub mod fsutil;
pub mod generate;
pub mod gguf;
pub mod init;
pub mod layer_norm;
pub mod llama;
pub mod llama_config;
pub mod llm_tokenizer;
pub mod lora;
pub mod memory;
pub mod precision;
pub mod safetensors_io;
pub mod simd;
pub mod source;
pub mod weights;

pub use bert::{BertInput, BertModel, BertOutput, l2_normalize, masked_mean};
pub use bert_config::{BertConfig, BertFlavor};
pub use error::{ModelError, Result};
pub use generate::{GenerationConfig, Generator};
pub use gguf::GgufFile;
pub use llama::{DecoderInput, KvCache, LlamaModel};
pub use llama_config::LlamaConfig;
pub use llm_tokenizer::{ChatMessage, LlmTokenizer};
pub use lora::{LoraConfig, LoraLinear, LoraModel};
pub use safetensors_io::{Checkpoint, HostTensor};
pub use source::{LLM_PRESETS, LlmFiles, ModelFiles, PRESETS, Preset};
pub use weights::{TensorReader, TensorWriter};

use burn::tensor::Device;

/// A BERT-family encoder loaded from checkpoint files, with its configuration.
#[derive(Debug)]
pub struct PretrainedEncoder {
    pub config: BertConfig,
    pub model: BertModel,
}

impl PretrainedEncoder {
    /// Reads `config.json` and the weights, checking every tensor name and shape.
    pub fn load(files: &ModelFiles, device: &Device) -> Result<Self> {
        let config = BertConfig::read(&files.config)?;
        let mut checkpoint = Checkpoint::read(&files.weights)?;
        let model = load_encoder(&config, &mut checkpoint, device)?;
        checkpoint.ensure_consumed(BertModel::ignorable_tensors())?;
        Ok(Self { config, model })
    }

    /// A randomly initialised encoder of the given shape (for tests and from-scratch training).
    pub fn random(config: BertConfig, seed: u64, device: &Device) -> Result<Self> {
        let mut checkpoint = init::random_bert_checkpoint(&config, seed);
        let model = load_encoder(&config, &mut checkpoint, device)?;
        Ok(Self { config, model })
    }
}

/// Builds the encoder from a checkpoint, taking out the tensors it uses; what is left (a task
/// head, say) stays in `checkpoint` for the caller.
pub fn load_encoder(config: &BertConfig, checkpoint: &mut Checkpoint, device: &Device) -> Result<BertModel> {
    let mut reader = TensorReader::new(checkpoint, device);
    let prefix = BertModel::detect_prefix(&reader).ok_or_else(|| ModelError::MissingTensor {
        path: reader.path().to_path_buf(),
        name: "embeddings.word_embeddings.weight".into(),
        expected: vec![config.vocab_size, config.hidden_size],
        hint: " (also looked for the prefixes bert., roberta., model., encoder.)".into(),
    })?;
    BertModel::load(config, &mut reader, &prefix)
}


/// A Llama-family causal LM with its tokenizer, loaded from GGUF or a Hugging Face folder.
#[derive(Debug)]
pub struct PretrainedCausalLm {
    pub config: LlamaConfig,
    pub model: LlamaModel,
    pub tokenizer: LlmTokenizer,
}

impl PretrainedCausalLm {
    /// Reads the architecture, the weights (dequantised to f32) and the tokenizer.
    pub fn load(files: &LlmFiles, device: &Device) -> Result<Self> {
        match files {
            LlmFiles::Gguf(path) => {
                let file = GgufFile::read(path)?;
                let config = LlamaConfig::from_gguf(&file)?;
                let beside = path.with_file_name("tokenizer.json");
                let tokenizer = if beside.exists() {
                    LlmTokenizer::from_files(&beside, Some(&path.with_file_name("tokenizer_config.json")))?
                } else {
                    LlmTokenizer::from_gguf(&file)?
                };
                let mut checkpoint = llama::checkpoint_from_gguf(&file, &config)?;
                drop(file);
                let model = LlamaModel::load(&config, &mut checkpoint, device)?;
                checkpoint.ensure_consumed(LlamaModel::ignorable_tensors())?;
                Ok(Self { config, model, tokenizer })
            }
            LlmFiles::Folder { files, tokenizer_config } => {
                let config = LlamaConfig::read(&files.config)?;
                let mut tokenizer = LlmTokenizer::from_files(&files.tokenizer, tokenizer_config.as_deref())?;
                if tokenizer.eos_token_ids.is_empty() {
                    tokenizer.eos_token_ids = config.eos_token_ids.clone();
                }
                let mut checkpoint = Checkpoint::read(&files.weights)?;
                let model = LlamaModel::load(&config, &mut checkpoint, device)?;
                checkpoint.ensure_consumed(LlamaModel::ignorable_tensors())?;
                Ok(Self { config, model, tokenizer })
            }
        }
    }
}

/// A randomly initialised decoder of the given shape (for tests and from-scratch training).
pub fn random_llama(config: &LlamaConfig, seed: u64, device: &Device) -> Result<LlamaModel> {
    let mut checkpoint = init::random_llama_checkpoint(config, seed);
    LlamaModel::load(config, &mut checkpoint, device)
}
