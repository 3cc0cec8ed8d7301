//! The training pipeline every task shares: open the run folder (a new one, or the one to
//! resume, whose config may change only in the training options), configure the trainer from
//! the session's options, fit with the task's model and hooks, keep `report.html` current, and
//! write `summary.json`. A task brings its data, model, loss and hooks; nothing else.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::tensor::Device;
use papertune_train::{
    CheckpointContext, Collective, Loss, Metrics, PhaseTimings, ResumePoint, SaveKind, StopReason,
    TrainConfig, TrainError, TrainEvent, TrainHooks, TrainModel, TrainProgress, TrainSummary,
    Trainer,
};
use serde::Serialize;

use crate::error::{TaskError, io_error};
use crate::report::write_report;
use crate::run_dir::{RunDir, RunLock, Which, write_atomic, write_json};

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
    /// Data parallelism across processes: the ranks of the job (e.g. [`papertune_train::MpiWorld`]
    /// under `mpirun`). Rank 0 alone writes the run folder; the others read it only to resume.
    /// See [`Trainer::with_collective`].
    pub collective: Option<Arc<dyn Collective>>,
}

impl TrainOptions {
    /// Progress bar shown, nothing else.
    pub fn with_progress(show_progress: bool) -> Self {
        Self { show_progress, ..Self::default() }
    }

    /// Whether this process writes the run folder: always, except on the ranks other than 0
    /// of a job over several processes.
    pub fn writes_run_folder(&self) -> bool {
        self.collective.as_ref().is_none_or(|c| c.rank() == 0)
    }
}

/// What a training call reports at the end (also written to the run's `summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub run: PathBuf,
    pub model: String,
    pub train_examples: usize,
    pub valid_examples: usize,
    /// Parameters of the model, and how many of them train (all, or the adapters of a LoRA run).
    pub parameters: usize,
    pub trainable_parameters: usize,
    pub steps: usize,
    pub train_seconds: f64,
    pub examples_per_second: f64,
    pub final_loss: f64,
    pub best_step: Option<usize>,
    /// Validation metrics of the best checkpoint.
    pub best_metrics: Option<Metrics>,
    /// Input tokens (padding excluded) per second of training.
    pub tokens_per_second: f64,
    pub stop_reason: StopReason,
    /// Step the run was resumed from, if it was.
    pub resumed_from: Option<usize>,
    /// This session's seconds per phase.
    pub timings: PhaseTimings,
    pub backend: Option<String>,
}

/// What the task knows about a run that the trainer does not.
#[derive(Default)]
pub(crate) struct RunFacts {
    /// The model spec of the config (`model.source`).
    pub model: String,
    pub train_examples: usize,
    pub valid_examples: usize,
    /// Mean input tokens of a training example (padding excluded).
    pub tokens_per_example: f64,
    /// Filled in by [`TrainSession::fit`] from the model.
    pub parameters: usize,
    pub trainable_parameters: usize,
    /// Elements of the model's parameters that copy another one (a tied head's transposed
    /// embedding), counted once in `parameters`.
    pub copied_parameters: usize,
}

/// A run folder opened for training, with the checkpoint to continue from when resuming.
///
/// A new run folder that is dropped before its first training step (a check refused the run,
/// the model did not load) is removed again, so that the same command can be run again once
/// the cause is fixed.
pub(crate) struct TrainSession<'a> {
    pub run: RunDir,
    /// The checkpoint to continue from, and the config to write once the trainer accepts it.
    resume: Option<(PathBuf, ResumePoint, Option<String>)>,
    options: &'a TrainOptions,
    /// What this session made of the folder: nothing (a resumed run, a rank other than 0), the
    /// files in a folder that was there empty, or the folder.
    created: Created,
    /// The folder's lock, held while this process writes it (see [`RunDir::lock`]).
    _lock: Option<RunLock>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Created {
    Nothing,
    Files,
    Folder,
}

impl<'a> TrainSession<'a> {
    /// The run folder to train into, with `config` (resolved) written to it: a new folder, or
    /// for a resumed run the existing one, whose config may differ only in the `free_sections`
    /// (training options such as the learning rate and step budget).
    pub fn open<C: Serialize>(
        out: &Path,
        config: &C,
        options: &'a TrainOptions,
        free_sections: &[&str],
    ) -> Result<Self, TaskError> {
        let config_toml =
            toml::to_string_pretty(config).map_err(|e| TaskError::Config(e.to_string()))?;
        let writes = options.writes_run_folder();
        if !options.resume && !writes {
            return Ok(Self {
                run: RunDir::new(out),
                resume: None,
                options,
                created: Created::Nothing,
                _lock: None,
            });
        }
        if !options.resume {
            let (run, created) = create_run_dir(out, true)?;
            // Taken before the session exists: a folder another command holds is not removed.
            let lock = Some(run.lock()?);
            let session = Self { run, resume: None, options, created, _lock: lock };
            write_atomic(&session.run.config(), config_toml.as_bytes())?;
            return Ok(session);
        }
        let run = RunDir::new(out);
        let lock = if writes { Some(run.lock()?) } else { None };
        check_unchanged(&run, &config_toml, free_sections)?;
        let last = run.verified_checkpoint(Which::Last)?;
        let point = ResumePoint::read(&last)?;
        // The config in force from now on is written once the trainer has accepted the resume
        // (its resume event), so that a refused one leaves the folder as it was.
        let config_toml = writes.then_some(config_toml);
        Ok(Self {
            run,
            resume: Some((last, point, config_toml)),
            options,
            created: Created::Nothing,
            _lock: lock,
        })
    }

    /// Whether this process writes the run folder (see [`TrainOptions::writes_run_folder`]).
    pub fn writes(&self) -> bool {
        self.options.writes_run_folder()
    }

    /// The `last/` checkpoint folder the run continues from, when resuming.
    pub fn resume_dir(&self) -> Option<&Path> {
        self.resume.as_ref().map(|(dir, _, _)| dir.as_path())
    }

    /// Trains `model` with the shared trainer on `device` (its autodiff form), the session's
    /// options and resume point, `report.html` refreshed after each evaluation and at the end;
    /// writes `summary.json` and returns its contents.
    #[allow(clippy::too_many_arguments)]
    pub fn fit<M, I, Batch, L, Bt, H>(
        mut self,
        model: M,
        train: &TrainConfig,
        device: &Device,
        loss: &L,
        data: &dyn Dataset<I>,
        batcher: &Bt,
        hooks: &mut H,
        facts: RunFacts,
    ) -> Result<TrainReport, TaskError>
    where
        M: TrainModel<Batch>,
        L: Loss<M::Output, M::Target> + Sync,
        Bt: Batcher<I, Batch>,
        H: TrainHooks<M>,
        I: Send,
    {
        let options = self.options;
        let mut trainer = Trainer::new(train.clone(), &device.clone().autodiff())?
            .with_metrics_log(&self.run.metrics())
            .with_progress(options.show_progress);
        if let Some(flag) = &options.stop {
            trainer = trainer.with_stop_signal(Arc::clone(flag));
        }
        if let Some(step) = options.stop_at_step {
            trainer = trainer.with_stop_at_step(step);
        }
        if options.devices.len() > 1 {
            trainer = trainer.with_devices(options.devices.clone());
        }
        let mut resumed_config = None;
        if let Some((_, point, config_toml)) = self.resume.take() {
            trainer = trainer.with_resume(point);
            resumed_config = config_toml;
        }
        if let Some(collective) = &options.collective {
            trainer = trainer.with_collective(Arc::clone(collective));
        }
        let (parameters, trainable_parameters) = (
            model.num_params().saturating_sub(facts.copied_parameters),
            papertune_train::trainable_parameters(&model),
        );
        let mut reporting = Reporting { task: hooks, run: &self.run, resumed_config };
        let (_, summary) = trainer.fit(model, loss, data, batcher, &mut reporting)?;
        let facts = RunFacts { parameters, trainable_parameters, ..facts };
        let report = TrainReport::new(&self.run, &summary, facts, options.backend.clone());
        if options.writes_run_folder() {
            write_json(&self.run.summary(), &report)?;
            refresh_report(&self.run);
        }
        Ok(report)
    }
}

impl TrainReport {
    fn new(run: &RunDir, summary: &TrainSummary, facts: RunFacts, backend: Option<String>) -> Self {
        Self {
            run: run.root.clone(),
            model: facts.model,
            train_examples: facts.train_examples,
            valid_examples: facts.valid_examples,
            parameters: facts.parameters,
            trainable_parameters: facts.trainable_parameters,
            steps: summary.steps,
            train_seconds: summary.train_seconds,
            examples_per_second: summary.examples_per_second,
            final_loss: summary.final_loss,
            best_step: summary.best.map(|b| b.1),
            best_metrics: summary.best_metrics.clone(),
            tokens_per_second: summary.examples_per_second * facts.tokens_per_example,
            stop_reason: summary.stop_reason,
            resumed_from: summary.resumed_from,
            timings: summary.timings,
            backend,
        }
    }
}

/// The task's hooks, with the run's report refreshed after each evaluation and at the end.
struct Reporting<'a, H> {
    task: &'a mut H,
    run: &'a RunDir,
    /// The config of a resumed run, written once the session has saved its first checkpoint
    /// (or ended without one): a resume that fails before leaves the folder as it was.
    resumed_config: Option<String>,
}

impl<H> Reporting<'_, H> {
    /// Writes a resumed run's config, once.
    fn commit_config(&mut self) {
        if let Some(config) = self.resumed_config.take()
            && let Err(e) = write_atomic(&self.run.config(), config.as_bytes())
        {
            tracing::warn!("the resumed run's config.toml keeps the earlier options: {e}");
        }
    }
}

impl<M, H: TrainHooks<M>> TrainHooks<M> for Reporting<'_, H> {
    fn evaluate(&mut self, model: &M, progress: &TrainProgress) -> Result<Metrics, TrainError> {
        self.task.evaluate(model, progress)
    }

    fn save(
        &mut self,
        model: &M,
        kind: SaveKind,
        checkpoint: &CheckpointContext<'_>,
    ) -> Result<(), TrainError> {
        self.task.save(model, kind, checkpoint)?;
        self.commit_config();
        Ok(())
    }

    fn on_event(&mut self, event: &TrainEvent<'_>) {
        if matches!(event, TrainEvent::End { .. }) {
            self.commit_config();
        }
        self.task.on_event(event);
        // Until a resumed session's first checkpoint, its folder stays as it was.
        if matches!(event, TrainEvent::Eval { .. } | TrainEvent::End { .. })
            && self.resumed_config.is_none()
        {
            refresh_report(self.run);
        }
    }
}

/// Rewrites the run's `report.html`; a failure is a warning, never the end of a run.
fn refresh_report(run: &RunDir) {
    if let Err(e) = write_report(&run.root) {
        tracing::warn!("report not updated: {e}");
    }
}

impl Drop for TrainSession<'_> {
    fn drop(&mut self) {
        if self.created == Created::Nothing || has_trained(&self.run) {
            return;
        }
        remove_run_dir(&self.run, self.created);
    }
}

/// Takes back what a run that did not start made of its folder: the folder, or the files in a
/// folder that was there empty.
pub(crate) fn remove_run_dir(run: &RunDir, created: Created) {
    let root = &run.root;
    let removed = match created {
        Created::Nothing => return,
        Created::Folder => std::fs::remove_dir_all(root),
        Created::Files => std::fs::read_dir(root).and_then(|entries| {
            entries.flatten().try_for_each(|entry| match entry.file_type() {
                Ok(kind) if kind.is_dir() => std::fs::remove_dir_all(entry.path()),
                _ => std::fs::remove_file(entry.path()),
            })
        }),
    };
    match removed {
        Ok(()) => tracing::debug!("{}: removed, the run did not start", root.display()),
        Err(e) => tracing::warn!(
            "{}: the run did not start, and its folder could not be removed: {e}",
            root.display()
        ),
    }
}

/// Whether a run folder holds the trace of a training step: a checkpoint, or a `train` event in
/// its metrics log (kept for diagnosis even when the run failed later).
fn has_trained(run: &RunDir) -> bool {
    let logged =
        std::fs::read_to_string(run.metrics()).is_ok_and(|log| log.contains(r#""event":"train""#));
    logged || run.root.join("last").exists() || run.root.join("best").exists()
}

/// Creates a fresh run folder (or takes an empty one); refuses one that already holds files,
/// pointing to `--resume` when the run could be continued.
pub(crate) fn create_run_dir(out: &Path, resumable: bool) -> Result<(RunDir, Created), TaskError> {
    if out.exists() {
        if std::fs::read_dir(out).map_err(io_error(out))?.next().is_some() {
            let hint = if resumable {
                ", or continue it with --resume"
            } else {
                " (this run has nothing to resume)"
            };
            return Err(TaskError::Run {
                path: out.to_path_buf(),
                message: format!(
                    "the run folder already exists and is not empty; choose another --out{hint}"
                ),
            });
        }
        return Ok((RunDir::new(out), Created::Files));
    }
    std::fs::create_dir_all(out).map_err(io_error(out))?;
    Ok((RunDir::new(out), Created::Folder))
}

/// Refuses to resume `run` with a config that differs from its saved one outside
/// `free_sections`, naming every key that changed.
fn check_unchanged(
    run: &RunDir,
    config_toml: &str,
    free_sections: &[&str],
) -> Result<(), TaskError> {
    let saved_path = run.config();
    let saved_text = std::fs::read_to_string(&saved_path).map_err(io_error(&saved_path))?;
    let parse = |text: &str, path: &Path| -> Result<toml::Table, TaskError> {
        text.parse::<toml::Table>()
            .map_err(|e| TaskError::Run { path: path.to_path_buf(), message: e.to_string() })
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
        let keys = |v: Option<&toml::Value>| {
            v.and_then(toml::Value::as_table).cloned().unwrap_or_default()
        };
        let (ka, kb) = (keys(a), keys(b));
        for key in ka.keys().chain(kb.keys().filter(|k| !ka.contains_key(*k))) {
            if ka.get(key) != kb.get(key) {
                let show = |v: Option<&toml::Value>| {
                    v.map_or_else(|| "unset".to_owned(), ToString::to_string)
                };
                changed.push(format!(
                    "{section}.{key}: {} -> {}",
                    show(ka.get(key)),
                    show(kb.get(key))
                ));
            }
        }
    }
    if changed.is_empty() {
        return Ok(());
    }
    Err(TaskError::Run {
        path: run.root.clone(),
        message: format!(
            "cannot resume with a changed model or data ({}); only [{}] options may change",
            changed.join(", "),
            free_sections.join("], [")
        ),
    })
}
