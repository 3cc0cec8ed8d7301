//! The error type of the tasks crate, wrapping the other crates' errors.

use std::path::{Path, PathBuf};

/// Everything that can stop a task.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error(transparent)]
    Data(#[from] papertune_data::DataError),
    #[error(transparent)]
    Model(#[from] papertune_models::ModelError),
    #[error(transparent)]
    Train(#[from] papertune_train::TrainError),
    /// A configuration value that cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A run folder that is not what it should be.
    #[error("{path}: {message}")]
    Run { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Maps an I/O error to [`TaskError::Io`] naming `path`.
pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> TaskError + '_ {
    move |source| TaskError::Io { path: path.to_path_buf(), source }
}
