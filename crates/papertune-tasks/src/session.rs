//! What a training call needs besides its config: progress display, resuming, stop requests,
//! and the run folder it writes to.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use burn::tensor::Device;
use papertune_models::fsutil::write_atomic;
use papertune_train::{ResumePoint, Trainer};

use crate::error::{TaskError, io_error};
use crate::run_dir::{RunDir, Which};

/// How a training call runs, besides its config.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Show the progress bar.
    pub show_progress: bool,
    /// Continue the run in the output folder from its `last/` checkpoint instead of starting
    /// one.
    pub resume: bool,
    /// Set to true (e.g. by Ctrl-C, see [`papertune_train::stop_on_signals`]) to stop after the
    /// current step with a resumable checkpoint.
    pub stop: Option<Arc<AtomicBool>>,
    /// Stop after this optimizer step, as if interrupted (to train a long run in sessions).
    pub stop_at_step: Option<usize>,
    /// Name of the backend, recorded in the summary and report.
    pub backend: Option<String>,
    /// Data parallelism: devices (of the run's backend) that share each step's micro-batches;
    /// empty or one: the run's device alone. See [`Trainer::with_devices`].
    pub devices: Vec<Device>,
}

impl TrainOptions {
    /// Progress bar shown, nothing else.
    pub fn with_progress(show_progress: bool) -> Self {
        Self { show_progress, ..Self::default() }
    }

    /// The trainer with the options that do not depend on the task.
    pub(crate) fn configure(&self, mut trainer: Trainer, run: &RunDir) -> Trainer {
        trainer = trainer.with_metrics_log(&run.metrics()).with_report(&run.root).with_progress(self.show_progress);
        if let Some(flag) = &self.stop {
            trainer = trainer.with_stop_signal(Arc::clone(flag));
        }
        if let Some(step) = self.stop_at_step {
            trainer = trainer.with_stop_at_step(step);
        }
        if self.devices.len() > 1 {
            trainer = trainer.with_devices(self.devices.clone());
        }
        trainer
    }
}

/// Creates a fresh run folder; refuses one that already holds files.
pub(crate) fn create_run_dir(out: &Path) -> Result<RunDir, TaskError> {
    if out.exists() && std::fs::read_dir(out).map_err(io_error(out))?.next().is_some() {
        return Err(TaskError::Run {
            path: out.to_path_buf(),
            message: "the run folder already exists and is not empty; choose another --out, or continue it with --resume".into(),
        });
    }
    std::fs::create_dir_all(out).map_err(io_error(out))?;
    Ok(RunDir::new(out))
}

/// The run folder to train into, with the resolved config written to it: a new folder, or for
/// a resumed run the existing one, whose config may differ from `config_toml` only in the
/// `free_sections` (training options such as the learning rate and step budget). Returns the
/// folder and, when resuming, the checkpoint to continue from.
pub(crate) fn open_run(
    out: &Path,
    config_toml: &str,
    resume: bool,
    free_sections: &[&str],
) -> Result<(RunDir, Option<(PathBuf, ResumePoint)>), TaskError> {
    if !resume {
        let run = create_run_dir(out)?;
        write_atomic(&run.config(), config_toml.as_bytes())?;
        return Ok((run, None));
    }
    let run = RunDir::new(out);
    let saved_path = run.config();
    let saved_text = std::fs::read_to_string(&saved_path).map_err(io_error(&saved_path))?;
    let parse = |text: &str, path: &Path| -> Result<toml::Table, TaskError> {
        text.parse::<toml::Table>().map_err(|e| TaskError::Run { path: path.to_path_buf(), message: e.to_string() })
    };
    let saved = parse(&saved_text, &saved_path)?;
    let now = parse(config_toml, Path::new("the new config"))?;
    let mut changed = Vec::new();
    for section in saved.keys().chain(now.keys().filter(|k| !saved.contains_key(*k))) {
        if free_sections.contains(&section.as_str()) {
            continue;
        }
        let (a, b) = (saved.get(section), now.get(section));
        if a == b {
            continue;
        }
        let keys = |v: Option<&toml::Value>| v.and_then(toml::Value::as_table).cloned().unwrap_or_default();
        let (ka, kb) = (keys(a), keys(b));
        for key in ka.keys().chain(kb.keys().filter(|k| !ka.contains_key(*k))) {
            if ka.get(key) != kb.get(key) {
                let show = |v: Option<&toml::Value>| v.map_or_else(|| "unset".to_owned(), ToString::to_string);
                changed.push(format!("{section}.{key}: {} -> {}", show(ka.get(key)), show(kb.get(key))));
            }
        }
    }
    if !changed.is_empty() {
        return Err(TaskError::Run {
            path: out.to_path_buf(),
            message: format!(
                "cannot resume with a changed model or data ({}); only [{}] options may change",
                changed.join(", "),
                free_sections.join("], [")
            ),
        });
    }
    let last = run.verified_checkpoint(Which::Last)?;
    let point = ResumePoint::read(&last)?;
    // The config in force from now on (a new learning rate or step budget is recorded by the
    // trainer's resume event too).
    write_atomic(&run.config(), config_toml.as_bytes())?;
    Ok((run, Some((last, point))))
}

/// Run folders named by the user, with a k-fold parent (holding `folds.json`) standing for its
/// fold runs.
pub fn expand_runs(runs: &[PathBuf]) -> Result<Vec<PathBuf>, TaskError> {
    let mut expanded = Vec::new();
    for run in runs {
        let folds = run.join(FOLDS_FILE);
        if folds.exists() {
            let names: Vec<String> = crate::run_dir::read_json(&folds)?;
            expanded.extend(names.iter().map(|n| run.join(n)));
        } else {
            expanded.push(run.clone());
        }
    }
    if expanded.is_empty() {
        return Err(TaskError::Config("no run folder given".into()));
    }
    Ok(expanded)
}

/// In the parent folder of a k-fold training: the names of the fold runs.
pub const FOLDS_FILE: &str = "folds.json";
