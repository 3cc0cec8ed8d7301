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
    /// A path given as a run folder that holds no run.
    #[error("no run folder at {path} (expected config.toml inside){hint}")]
    NoRunFolder { path: PathBuf, hint: String },
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

/// [`TaskError::NoRunFolder`] for `root`, pointing to the run when `root` is one of its
/// checkpoint folders (`runs/x/best` given for `runs/x`).
pub(crate) fn no_run_folder(root: &Path) -> TaskError {
    let parent = root.parent().filter(|p| p.join("config.toml").is_file());
    let hint = match parent {
        Some(run) if root.join("trainer_state.json").is_file() => format!(
            "; {} is a checkpoint of the run folder {}: pass that folder",
            root.display(),
            run.display()
        ),
        _ if !root.exists() => "; the folder does not exist".into(),
        _ => String::new(),
    };
    TaskError::NoRunFolder { path: root.to_path_buf(), hint }
}
