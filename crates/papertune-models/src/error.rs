//! The error type of the models crate: every variant names the file or tensor at fault.

use std::path::PathBuf;

/// Everything that can go wrong while resolving, reading or mapping a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file the checkpoint needs is absent.
    #[error("{path}: file not found")]
    NotFound { path: PathBuf },

    /// A file exists but could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// `config.json` is malformed or describes something papertune does not support.
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },

    /// The safetensors file itself is malformed.
    #[error("{path}: not a readable safetensors file: {message}")]
    Safetensors { path: PathBuf, message: String },

    /// A tensor the model needs is not in the checkpoint.
    #[error("{path}: missing tensor {name:?} (expected shape {expected:?}){hint}")]
    MissingTensor { path: PathBuf, name: String, expected: Vec<usize>, hint: String },

    /// A tensor has another shape than the configuration implies.
    #[error("{path}: tensor {name:?} has shape {found:?}, expected {expected:?}")]
    ShapeMismatch { path: PathBuf, name: String, expected: Vec<usize>, found: Vec<usize> },

    /// A tensor has an element type papertune cannot read.
    #[error("{path}: tensor {name:?} has dtype {dtype}; supported: F32, F16, BF16")]
    UnsupportedDtype { path: PathBuf, name: String, dtype: String },

    /// The checkpoint holds tensors the model does not use.
    #[error("{path}: {count} unexpected tensor(s) the model does not use, e.g. {examples:?}")]
    UnexpectedTensors { path: PathBuf, count: usize, examples: Vec<String> },

    /// A model source (preset, hub id, package) could not be resolved.
    #[error("model source {source_spec:?}: {message}")]
    Source { source_spec: String, message: String },

    /// A LoRA setting or adapter that does not fit the model.
    #[error("LoRA: {message}")]
    Lora { message: String },

    /// A tokenizer that cannot be built or used.
    #[error("{path}: tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },

    /// Generation options that cannot be honoured.
    #[error("generation: {message}")]
    Generation { message: String },

    /// A downloaded file does not have the published checksum.
    #[error(
        "{path}: sha256 {found} does not match the expected {expected}; delete the file and retry"
    )]
    Checksum { path: PathBuf, expected: String, found: String },
}

/// Result alias of the models crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}
