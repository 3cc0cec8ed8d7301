//! Why training stops before its last step, as one error type.

use std::path::{Path, PathBuf};

/// Why training stopped early.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("invalid training configuration: {0}")]
    Config(String),
    #[error("the training set is empty")]
    EmptyData,
    #[error("the model is not on an autodiff device; load it on `device.autodiff()` to train it")]
    NotAutodiff,
    #[error(
        "step {step}: the loss is {value}; stopped before applying it (the last saved checkpoint is kept)"
    )]
    NonFiniteLoss { step: usize, value: f32 },
    #[error("evaluation metrics have no {metric:?} (train.metric_for_best); found {found:?}")]
    MissingMetric { metric: String, found: Vec<String> },
    #[error("training data item {index}: {message}")]
    Data { index: usize, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("cannot resume: {0}")]
    Resume(String),
    #[error("{0}")]
    Hook(String),
    #[error("data-parallel ranks: {0}")]
    Distributed(String),
}

/// Maps an I/O error to [`TrainError::Io`] naming `path`.
pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io { path: path.to_path_buf(), source }
}

/// Writes `bytes` to `path` so that readers see the old file or the whole new one, never a
/// part (atomic-write-file: a temporary file beside it, fsync, rename, fsync of the folder).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let mut file = atomic_write_file::AtomicWriteFile::open(path).map_err(io_error(path))?;
    std::io::Write::write_all(&mut file, bytes).map_err(io_error(path))?;
    file.commit().map_err(io_error(path))
}
