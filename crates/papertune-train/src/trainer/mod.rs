//! The training loop. [`Trainer::fit`] is its outline; the rooms hold the parts: `step.rs` (one
//! optimizer step), `parallel.rs` (micro-batches, on several devices at once), `policy.rs`
//! (counters, best checkpoint, early stopping), `log.rs` (events, `metrics.jsonl`, progress),
//! `tensorboard.rs` (TensorBoard event files) and `order.rs` (data order and seeds).

mod log;
mod order;
mod parallel;
mod policy;
mod step;
mod tensorboard;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::module::{Module, ParamGroup};
use burn::optim::ModuleOptimizer;
use burn::tensor::Device;
use serde::Serialize;
use serde_json::Value;

pub use log::TrainEvent;
pub use order::epoch_order;

use crate::adamw::FusedAdamW;
use crate::config::{LogTarget, TrainConfig};
use crate::distributed::{self, Collective};
use crate::error::TrainError;
use crate::loss::Loss;
use crate::metrics::Metrics;
use crate::state::{CheckpointContext, ResumePoint, TrainProgress};
use log::{EventSink, LossWindow, MetricsLog, Progress};
use policy::RunState;
use step::Stepper;
use tensorboard::TensorBoardLog;

/// A model the trainer can train on batches of type `Batch`.
///
/// papertune's dropout ([`papertune_kernels::dropout`]) draws from a per-thread stream that
/// the trainer restarts before every micro-batch, in the thread that runs it; a model has
/// nothing to do for that.
pub trait TrainModel<Batch>: Module {
    /// What the forward pass returns (e.g. logits).
    type Output;
    /// What the loss compares the output with (e.g. labels).
    type Target;
    /// Runs the model on a batch and hands back the output with its target.
    fn forward_train(&self, batch: Batch) -> (Self::Output, Self::Target);
}

/// Which checkpoint the trainer asks to save.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveKind {
    /// The best by `metric_for_best` so far.
    Best,
    /// The latest weights.
    Last,
}

/// What the trainer calls out to: evaluation, saving and rendering belong to the task, not
/// the trainer.
pub trait TrainHooks<M> {
    /// Evaluates `model` (a copy in evaluation mode, without autodiff).
    fn evaluate(&mut self, model: &M, progress: &TrainProgress) -> Result<Metrics, TrainError>;
    /// Saves `model` as the best or the last checkpoint. A resumable checkpoint also needs
    /// [`CheckpointContext::write_resume_files`] called on its folder.
    fn save(
        &mut self,
        model: &M,
        kind: SaveKind,
        checkpoint: &CheckpointContext<'_>,
    ) -> Result<(), TrainError>;
    /// Hears each event after it is written to the metrics log (a report to refresh, a line
    /// to print). Does nothing by default; a failure here is the hook's to report, it does not
    /// stop training.
    fn on_event(&mut self, _event: &TrainEvent<'_>) {}
}

/// Why the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// All steps done.
    Completed,
    /// `metric_for_best` stopped improving (`early_stopping_patience`).
    EarlyStopping,
    /// The stop signal was raised (Ctrl-C); the last checkpoint holds the current step.
    Interrupted,
}

/// Wall-clock seconds spent in each phase of training.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PhaseTimings {
    /// Reading items and building batches.
    pub data: f64,
    /// Forward and backward passes.
    pub forward_backward: f64,
    /// Summing the gradients over the ranks of a job over several processes (waiting for
    /// the slowest rank included).
    pub all_reduce: f64,
    /// Clipping and the optimizer update.
    pub optimizer: f64,
    pub evaluation: f64,
    pub checkpoint: f64,
}

/// What a finished run reports.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSummary {
    pub steps: usize,
    /// Best `metric_for_best` and its step.
    pub best: Option<(f64, usize)>,
    /// Metrics of the best evaluation (over all sessions of a resumed run).
    pub best_metrics: Option<Metrics>,
    /// Metrics of the last evaluation.
    pub last_metrics: Option<Metrics>,
    /// Mean loss over the last `log_every_steps` steps.
    pub final_loss: f64,
    /// Seconds of training (evaluation excluded), over all sessions of a resumed run.
    pub train_seconds: f64,
    pub examples_per_second: f64,
    pub stop_reason: StopReason,
    /// This session's time per phase.
    pub timings: PhaseTimings,
    /// Step the run was resumed from, if it was.
    pub resumed_from: Option<usize>,
}

/// Trains a model; see [`Trainer::fit`].
pub struct Trainer {
    config: TrainConfig,
    device: Device,
    metrics_log: Option<PathBuf>,
    show_progress: bool,
    resume: Option<ResumePoint>,
    stop: Option<Arc<AtomicBool>>,
    stop_at_step: Option<usize>,
    /// Devices that share each step's micro-batches (data parallelism); empty: `device` alone.
    workers: Vec<Device>,
    /// The ranks of a job over several processes that share each step's micro-batches.
    collective: Option<Arc<dyn Collective>>,
}

impl Trainer {
    /// A trainer with these options, running on `device` (the autodiff form is used).
    pub fn new(config: TrainConfig, device: &Device) -> Result<Self, TrainError> {
        config.validate().map_err(TrainError::Config)?;
        Ok(Self {
            config,
            device: device.clone(),
            metrics_log: None,
            show_progress: true,
            resume: None,
            stop: None,
            stop_at_step: None,
            workers: Vec::new(),
            collective: None,
        })
    }

    /// Appends one JSON object per event ([`TrainEvent`]) to `path`. With `train.log_to =
    /// ["tensorboard"]`, the figures also go to a new TensorBoard event file in `tensorboard/`
    /// beside it.
    pub fn with_metrics_log(mut self, path: &Path) -> Self {
        self.metrics_log = Some(path.to_path_buf());
        self
    }

    /// Shows (default) or hides the progress bar.
    pub fn with_progress(mut self, show: bool) -> Self {
        self.show_progress = show;
        self
    }

    /// Continues from a checkpoint written by an earlier run of the same model and data. The
    /// options may differ in the learning rate, step budget, evaluation and saving (recorded in
    /// the log); the batch size, accumulation and seed may not (they fix the data order).
    pub fn with_resume(mut self, resume: ResumePoint) -> Self {
        self.resume = Some(resume);
        self
    }

    /// Stops cleanly when `flag` becomes true: the current step finishes, the `last/`
    /// checkpoint is written, and [`Trainer::fit`] returns with [`StopReason::Interrupted`].
    /// See [`crate::stop_on_signals`] for Ctrl-C and SIGTERM.
    pub fn with_stop_signal(mut self, flag: Arc<AtomicBool>) -> Self {
        self.stop = Some(flag);
        self
    }

    /// Stops after optimizer step `step` as if interrupted, leaving a resumable `last/`
    /// checkpoint: a long run can be trained in sessions without changing its schedule.
    pub fn with_stop_at_step(mut self, step: usize) -> Self {
        self.stop_at_step = Some(step);
        self
    }

    /// Data parallelism: the micro-batches of each optimizer step are spread over `devices`
    /// (of one backend), computed at the same time on copies of the model, and their gradients
    /// summed on the trainer's device, which holds the weights and the optimizer state. The
    /// update is the one gradient accumulation computes one micro-batch after another (the
    /// dropout masks included), so `train.gradient_accumulation_steps` must be at least the
    /// number of devices (a multiple keeps them all busy).
    pub fn with_devices(mut self, devices: Vec<Device>) -> Self {
        self.workers =
            devices.into_iter().map(|d| if d.is_autodiff() { d } else { d.autodiff() }).collect();
        self
    }

    /// Data parallelism across processes (MPI ranks, see [`crate::MpiWorld`]): rank `r` of `N`
    /// computes micro-batches `r, r + N, ...` of each step, their gradients are summed over the
    /// ranks (one all-reduce of the trainable parameters' gradients per step), and every rank
    /// applies the same update. As with [`Trainer::with_devices`], the update is that of
    /// gradient accumulation on one process, so `train.gradient_accumulation_steps` must be at
    /// least `N`. Rank 0 alone evaluates, saves, logs and shows progress; the others take its
    /// decisions, and every checkpoint compares a digest of the weights across the ranks.
    pub fn with_collective(mut self, collective: Arc<dyn Collective>) -> Self {
        self.collective = Some(collective);
        self
    }

    /// The options in use.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Trains `model` on `data` and returns the final weights (the best ones with
    /// `load_best_model_at_end`, when an evaluation ran) with a summary.
    ///
    /// The model must live on an autodiff device. Each epoch visits the data in an order drawn
    /// from `train.seed` and the epoch number; the device's random stream is re-seeded from
    /// `train.seed` and the step before every step, and papertune's dropout stream from (seed,
    /// step, micro-batch) before every micro-batch, so that a run is reproducible and a resumed
    /// run continues exactly.
    pub fn fit<M, I, Batch, L, Bt, H>(
        mut self,
        model: M,
        loss_fn: &L,
        data: &dyn Dataset<I>,
        batcher: &Bt,
        hooks: &mut H,
    ) -> Result<(M, TrainSummary), TrainError>
    where
        M: TrainModel<Batch>,
        L: Loss<M::Output, M::Target> + Sync,
        Bt: Batcher<I, Batch>,
        H: TrainHooks<M>,
        I: Send,
    {
        let n = data.len();
        self.check(&model, n)?;
        let c = self.config.clone();
        let (steps_per_epoch, total_steps) = (c.steps_per_epoch(n), c.total_steps(n));
        let schedule = c.lr_schedule(total_steps);
        let resume = self.resume.take();
        // A resume is refused before the metrics log is touched.
        let changes = resume.as_ref().map(|r| self.check_resume(r, n, total_steps)).transpose()?;
        let (leader, mut log) = self.event_sink(resume.as_ref().map(|r| r.state.step))?;
        let resumed_from = resume.as_ref().map(|r| r.state.step);
        let (mut model, mut run, mut optimizer) = match resume {
            Some(resume) => self.resume_from(
                resume,
                changes.unwrap_or_default(),
                model,
                total_steps,
                &mut log,
                hooks,
            )?,
            None => (model, RunState::fresh(n, total_steps), self.optimizer()),
        };
        let progress = Progress::new(self.show_progress && leader, total_steps, run.progress.step);
        tracing::info!(
            examples = n,
            steps_per_epoch,
            total_steps,
            warmup_steps = schedule.warmup_steps,
            "training"
        );
        let collective = self.collective.as_deref();
        let stepper = Stepper {
            config: &c,
            device: &self.device,
            workers: &self.workers,
            collective,
            data,
            batcher,
            loss_fn,
        };
        let (mut window, mut final_loss, mut best_model) = (LossWindow::new(), f64::NAN, None);
        // The learning rate and gradient norm of the last step, for a log at the stop.
        let mut last_figures = (0.0, None);
        let (mut stop_reason, mut saved_at, first_step) =
            (StopReason::Completed, None, run.progress.step);
        run.start_session();

        for step in first_step..total_steps {
            if self.stop_requested(step)? {
                stop_reason = StopReason::Interrupted;
                break;
            }
            let position = run.enter_step(step, steps_per_epoch, c.seed);
            let gradients =
                stepper.gradients(&model, step, position, &run.order, &mut run.timings)?;
            let (loss, examples) = (gradients.loss, gradients.examples);
            if !loss.is_finite() {
                progress.abandon();
                log.emit(
                    hooks,
                    TrainEvent::Error { step: step + 1, message: format!("loss is {loss}") },
                )?;
                return Err(TrainError::NonFiniteLoss { step: step + 1, value: loss });
            }
            let lr = schedule.lr(step);
            let grad_norm;
            (model, grad_norm) =
                stepper.apply(model, &mut optimizer, gradients, lr, &mut run.timings);
            run.progress.step = step + 1;
            run.examples_seen += examples;
            window.add(f64::from(loss), examples);
            last_figures = (lr, grad_norm);
            let (end_of_epoch, last_step) =
                ((step + 1) % steps_per_epoch == 0, step + 1 == total_steps);
            // At multiples of the interval, so that a resumed run logs at the same steps as one run.
            if run.progress.step % c.log_every_steps == 0 || last_step {
                final_loss = log_train(
                    &run.progress,
                    &mut window,
                    (lr, grad_norm),
                    &progress,
                    &mut log,
                    hooks,
                )?;
            }
            progress.step_done();
            if c.eval_due(run.progress.step, end_of_epoch, last_step) {
                let outcome = self.evaluate(&model, &mut run, &progress, &mut log, hooks)?;
                if outcome.improved && c.load_best_model_at_end {
                    best_model = Some(model.clone());
                }
                if outcome.stop {
                    stop_reason = StopReason::EarlyStopping;
                }
                window.restart_clock();
            }
            if last_step
                || stop_reason != StopReason::Completed
                || c.save_due(run.progress.step, end_of_epoch)
            {
                self.save_last(&model, &mut run, &optimizer, hooks)?;
                log.commit()?;
                saved_at = Some(run.progress.step);
            }
            if stop_reason != StopReason::Completed {
                break;
            }
        }
        // A run stopped (or stopped early) between log points logs its last steps, so that its
        // final loss is the loss of its last steps, not that of an earlier window (or none).
        if window.is_pending() {
            final_loss =
                log_train(&run.progress, &mut window, last_figures, &progress, &mut log, hooks)?;
        }
        if stop_reason == StopReason::Interrupted
            && saved_at != Some(run.progress.step)
            && run.progress.step > first_step
        {
            self.save_last(&model, &mut run, &optimizer, hooks)?;
        }
        // A resumed session that saved nothing yet commits its log before its end event.
        log.commit()?;
        progress.finish(stop_reason, run.progress.step);
        let summary = self.summary(&run, final_loss, stop_reason, resumed_from);
        log.emit(hooks, self.end_event(&summary))?;
        let model = match best_model {
            Some(best) if c.load_best_model_at_end => best,
            _ => model,
        };
        Ok((model, summary))
    }

    /// Whether this process tells (rank 0, or the only process), and where its events go.
    fn event_sink(&self, resumed_at: Option<usize>) -> Result<(bool, EventSink), TrainError> {
        let leader = distributed::is_leader(self.collective.as_deref());
        let file = match &self.metrics_log {
            Some(path) if leader => Some(MetricsLog::open(path, resumed_at)?),
            _ => None,
        };
        let tensorboard = match &self.metrics_log {
            _ if !leader || !self.config.log_to.contains(&LogTarget::Tensorboard) => None,
            Some(path) => {
                let dir = path.parent().unwrap_or(Path::new("")).join("tensorboard");
                Some(TensorBoardLog::create(&dir, resumed_at)?)
            }
            None => {
                tracing::warn!(
                    "train.log_to asks for TensorBoard, but the trainer has no metrics log to write beside: no event file is written"
                );
                None
            }
        };
        Ok((leader, EventSink { file, tensorboard, to_hooks: leader }))
    }

    /// Whether the stop signal was raised or `step` is the one to stop at; over several
    /// processes, whether that is so on any rank, so that all stop after the same step.
    fn stop_requested(&self, step: usize) -> Result<bool, TrainError> {
        let here = self.stop.as_ref().is_some_and(|f| f.load(Ordering::SeqCst))
            || self.stop_at_step.is_some_and(|s| step >= s);
        match self.collective.as_deref() {
            Some(collective) => distributed::any_rank_stops(collective, here),
            None => Ok(here),
        }
    }

    /// Refuses what cannot train before any work: no data, more devices than micro-batches per
    /// step, a model off autodiff, options that contradict the data size.
    fn check<M: Module>(&self, model: &M, n: usize) -> Result<(), TrainError> {
        if n == 0 {
            return Err(TrainError::EmptyData);
        }
        if self.workers.len() > self.config.gradient_accumulation_steps {
            return Err(TrainError::Config(format!(
                "{} data-parallel devices but train.gradient_accumulation_steps is {}: the devices share each step's micro-batches, so raise the accumulation to at least the device count",
                self.workers.len(),
                self.config.gradient_accumulation_steps
            )));
        }
        if let Some(collective) = self.collective.as_deref() {
            let ranks = collective.size();
            if !self.workers.is_empty() {
                return Err(TrainError::Config(format!(
                    "{} devices per process and {ranks} processes: a job over several processes takes one device per rank (choose it from the local rank)",
                    self.workers.len()
                )));
            }
            if ranks > self.config.gradient_accumulation_steps {
                return Err(TrainError::Config(format!(
                    "{ranks} data-parallel ranks but train.gradient_accumulation_steps is {}: the ranks share each step's micro-batches, so raise the accumulation to at least the rank count (and lower train.batch_size to keep the examples per step)",
                    self.config.gradient_accumulation_steps
                )));
            }
        }
        if !model.devices().first().is_some_and(|d| d.is_autodiff()) {
            return Err(TrainError::NotAutodiff);
        }
        self.config.validate_for_data(n).map_err(TrainError::Config)
    }

    /// The AdamW optimizer of the run: decoupled weight decay on weights, none on biases and
    /// LayerNorm parameters.
    fn optimizer(&self) -> ModuleOptimizer {
        let c = &self.config;
        let adamw = |weight_decay: f64| FusedAdamW {
            beta_1: c.adam_beta1 as f32,
            beta_2: c.adam_beta2 as f32,
            epsilon: c.adam_epsilon as f32,
            weight_decay: weight_decay as f32,
        };
        let no_decay =
            ParamGroup::from_any_regexes(vec![r"(^|\.)bias$", r"(^|\.)gamma$", r"(^|\.)beta$"])
                .expect("the no-decay patterns are valid regexes");
        ModuleOptimizer::from(adamw(c.weight_decay)).with_group(no_decay, adamw(0.0), None)
    }

    /// The model with the checkpoint's parameter ids, the run's counters and the optimizer
    /// with its state, after checking that the checkpoint belongs to this run.
    fn resume_from<M: Module, H: TrainHooks<M>>(
        &self,
        resume: ResumePoint,
        changes: Vec<String>,
        model: M,
        total_steps: usize,
        log: &mut EventSink,
        hooks: &mut H,
    ) -> Result<(M, RunState, ModuleOptimizer), TrainError> {
        let model = resume.restore_param_ids(model)?;
        let run = RunState::resumed(&resume.state, total_steps);
        tracing::info!(
            "resuming from {} at step {}/{total_steps}",
            resume.dir.display(),
            run.progress.step
        );
        for change in &changes {
            tracing::warn!("changed on resume: {change}");
        }
        log.emit(
            hooks,
            TrainEvent::Resume { step: run.progress.step, from: &resume.dir, changes: &changes },
        )?;
        let optimizer = self.optimizer().load_record(resume.into_optimizer_record());
        Ok((model, run, optimizer))
    }

    /// Checks a resume point against this run; returns the option keys that changed.
    fn check_resume(
        &self,
        resume: &ResumePoint,
        n: usize,
        total_steps: usize,
    ) -> Result<Vec<String>, TrainError> {
        let before = &resume.state.config;
        let c = &self.config;
        let refuse = |message: String| {
            Err(TrainError::Resume(format!("{}: {message}", resume.dir.display())))
        };
        if resume.state.step >= total_steps {
            return refuse(format!(
                "the checkpoint is at step {} and the run has {total_steps} steps; raise train.max_steps or train.epochs to train further",
                resume.state.step
            ));
        }
        if resume.state.examples != n {
            return refuse(format!(
                "the training data had {} examples, now {n}; resuming needs the same data",
                resume.state.examples
            ));
        }
        for (key, was, now) in [
            ("train.batch_size", before.batch_size, c.batch_size),
            (
                "train.gradient_accumulation_steps",
                before.gradient_accumulation_steps,
                c.gradient_accumulation_steps,
            ),
        ] {
            if was != now {
                return refuse(format!(
                    "{key} was {was}, now {now}; it fixes the data order, so it cannot change on resume"
                ));
            }
        }
        if before.seed != c.seed {
            return refuse(format!(
                "train.seed was {}, now {}; it fixes the data order and dropout",
                before.seed, c.seed
            ));
        }
        let (Value::Object(was), Value::Object(now)) = (
            serde_json::to_value(before).expect("config"),
            serde_json::to_value(c).expect("config"),
        ) else {
            unreachable!("a config serialises as an object")
        };
        Ok(now
            .iter()
            .filter(|(k, v)| was.get(*k) != Some(*v))
            .map(|(k, v)| format!("train.{k}: {} -> {v}", was.get(k).unwrap_or(&Value::Null)))
            .collect())
    }

    /// Evaluates the model, records the result, saves `best/` when it improved, and tells.
    fn evaluate<M: Module, H: TrainHooks<M>>(
        &self,
        model: &M,
        run: &mut RunState,
        progress: &Progress,
        log: &mut EventSink,
        hooks: &mut H,
    ) -> Result<policy::EvalOutcome, TrainError> {
        let c = &self.config;
        let started = Instant::now();
        let metrics = {
            let _span = tracing::info_span!("evaluation", step = run.progress.step).entered();
            let mut evaluate = || hooks.evaluate(&model.valid(), &run.progress);
            match self.collective.as_deref() {
                Some(collective) => distributed::shared_evaluation(collective, evaluate)?,
                None => evaluate()?,
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        run.timings.evaluation += seconds;
        // A task without validation data returns no metrics: nothing to compare, and the last
        // checkpoint is the one to use.
        if metrics.is_empty() {
            return Ok(policy::EvalOutcome { improved: false, stop: false });
        }
        let outcome = run.record_eval(c, metrics.clone())?;
        if outcome.improved {
            let started = Instant::now();
            let _span = tracing::info_span!("checkpoint", kind = "best").entered();
            let context = CheckpointContext {
                progress: &run.progress,
                state: run.snapshot(c),
                optimizer: None,
            };
            self.save(model, SaveKind::Best, &context, hooks)?;
            log.commit()?;
            run.timings.checkpoint += started.elapsed().as_secs_f64();
        }
        let figures: Vec<String> = metrics.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
        let (step, epoch) = (run.progress.step, run.progress.epoch);
        let best = if outcome.improved { "  [best]" } else { "" };
        progress.line(format!(
            "eval at step {step}/{} (epoch {epoch}): {}{best}",
            run.progress.total_steps,
            figures.join(", ")
        ));
        log.emit(
            hooks,
            TrainEvent::Eval { step, epoch, metrics: &metrics, best: outcome.improved, seconds },
        )?;
        if outcome.stop {
            tracing::info!(
                "early stopping at step {step}: {} evaluations without an improvement of {} above {}",
                run.evals_without_improvement,
                c.metric_for_best,
                c.early_stopping_threshold
            );
        }
        Ok(outcome)
    }

    /// Writes the resumable `last/` checkpoint of `run`.
    fn save_last<M: Module, H: TrainHooks<M>>(
        &self,
        model: &M,
        run: &mut RunState,
        optimizer: &ModuleOptimizer,
        hooks: &mut H,
    ) -> Result<(), TrainError> {
        let started = Instant::now();
        let _span = tracing::info_span!("checkpoint", kind = "last").entered();
        let context = CheckpointContext {
            progress: &run.progress,
            state: run.snapshot(&self.config),
            optimizer: Some(optimizer),
        };
        self.save(model, SaveKind::Last, &context, hooks)?;
        run.timings.checkpoint += started.elapsed().as_secs_f64();
        Ok(())
    }

    /// Saves through the hooks; over several processes, rank 0 saves, every rank learns whether
    /// it could, and the ranks' weights are compared.
    fn save<M: Module, H: TrainHooks<M>>(
        &self,
        model: &M,
        kind: SaveKind,
        context: &CheckpointContext<'_>,
        hooks: &mut H,
    ) -> Result<(), TrainError> {
        let Some(collective) = self.collective.as_deref() else {
            return hooks.save(model, kind, context);
        };
        let saved = if collective.rank() == 0 { hooks.save(model, kind, context) } else { Ok(()) };
        distributed::agree_on_checkpoint(collective, saved, context.progress.step)?;
        distributed::check_replicas(collective, model, context.progress.step)
    }

    fn summary(
        &self,
        run: &RunState,
        final_loss: f64,
        stop_reason: StopReason,
        resumed_from: Option<usize>,
    ) -> TrainSummary {
        let state = run.snapshot(&self.config);
        let (best_metrics, last_metrics) = run.best_and_last_metrics();
        TrainSummary {
            steps: run.progress.step,
            best: run.progress.best,
            best_metrics,
            last_metrics,
            final_loss,
            train_seconds: state.train_seconds,
            examples_per_second: state.examples_seen as f64 / state.train_seconds.max(1e-9),
            stop_reason,
            timings: run.timings,
            resumed_from,
        }
    }

    fn end_event(&self, summary: &TrainSummary) -> TrainEvent<'static> {
        TrainEvent::End {
            step: summary.steps,
            train_seconds: summary.train_seconds,
            examples_per_second: summary.examples_per_second,
            best_metric: summary.best.map(|b| b.0),
            best_step: summary.best.map(|b| b.1),
            stop_reason: summary.stop_reason,
            timings: summary.timings,
            device: format!("{:?}", self.device),
        }
    }
}

/// The mean loss and throughput since the last log point, beside the progress bar and as a
/// `train` event; returns the mean loss.
fn log_train<M: Module, H: TrainHooks<M>>(
    progress: &TrainProgress,
    window: &mut LossWindow,
    (lr, grad_norm): (f64, Option<f64>),
    bar: &Progress,
    log: &mut EventSink,
    hooks: &mut H,
) -> Result<f64, TrainError> {
    let (loss, examples_per_second) = window.take();
    bar.train_figures(progress.step, progress.total_steps, loss, lr, examples_per_second);
    let (step, epoch) = (progress.step, progress.epoch);
    log.emit(hooks, TrainEvent::Train { step, epoch, loss, lr, grad_norm, examples_per_second })?;
    Ok(loss)
}
