//! Transformer models for papertune, in burn, with their checkpoint readers.
//!
//! - [`bert`]: the BERT-family encoder (BERT, RoBERTa, MiniLM) and its `config.json`;
//!   [`llama`]: the Llama-family decoder (SmolLM2, Qwen2, Qwen3, Llama, Mistral, Gemma 3) and its configuration,
//!   with [`lora`] adapters (PEFT's file layout), [`generate`] for decoding and
//!   [`llm_tokenizer`] for its tokenizer and chat template.
//! - [`checkpoint`] (safetensors, single or sharded) and [`gguf`] (llama.cpp's format) read
//!   weights; [`weights`] maps them onto modules by an explicit name map, with errors naming
//!   any missing, unexpected or mis-shaped tensor; [`init`] makes random checkpoints of any
//!   shape for tests.
//! - [`source`]: where a checkpoint comes from (local folder, preset, Hugging Face id, registry
//!   package), resolved to local files once and cached; the downloads are behind the default
//!   feature `fetch`, so a program that brings its own files builds without network code.
//! - [`precision`]: the float type of a device, for half-precision inference.
//!
//! The tensor operations the models are made of (fused attention, norms, activations, dropout)
//! come from `papertune-kernels`.
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
pub mod checkpoint;
mod config_checks;
mod error;
#[cfg(test)]
mod fuzz;
#[cfg(any(test, feature = "test-util"))]
pub mod fuzz_targets;
pub mod generate;
pub mod gguf;
pub mod init;
pub mod layer_norm;
pub mod llama;
pub mod llm_tokenizer;
pub mod lora;
mod mask;
pub mod precision;
mod pretrained;
pub mod source;
pub mod weights;

pub use error::{ModelError, Result};
pub use pretrained::{PretrainedCausalLm, PretrainedEncoder, WeightPrecision, write_hf_folder};
