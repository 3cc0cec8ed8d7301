//! The training loop: data order, forward, loss, backward, clipping, AdamW step, schedule,
//! evaluation, best/last checkpoints and a `metrics.jsonl` log.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::module::{Module, ParamGroup};
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;
use serde_json::{Value, json};

use crate::adamw::FusedAdamW;
use crate::clip::{clip_grad_norm, clip_grad_value};
use crate::config::TrainConfig;
use crate::loss::Loss;
use crate::state::{CheckpointContext, EvalRecord, ResumePoint, TrainerState, write_file_atomic};

/// Named evaluation results, e.g. `f1`, `accuracy`.
pub type Metrics = BTreeMap<String, f64>;

/// A model the trainer can train on batches of type `Batch`.
pub trait TrainModel<Batch>: Module {
    /// What the forward pass returns (e.g. logits).
    type Output;
    /// What the loss compares the output with (e.g. labels).
    type Target;
    /// Runs the model on a batch and hands back the output with its target.
    fn forward_train(&self, batch: Batch) -> (Self::Output, Self::Target);

    /// Called in the thread that runs a micro-batch, just before [`forward_train`](Self::forward_train),
    /// with a seed made of the run's seed, the optimizer step and the micro-batch's index in
    /// the epoch. Models that draw random numbers from a stream of their own (papertune's
    /// dropout) restart it here, so that results do not depend on how many devices share a
    /// step or on thread timing. Does nothing by default; a model that uses papertune's
    /// `Dropout` must forward the seed to `papertune_models::dropout::seed_thread`, or its
    /// data-parallel workers (fresh threads every step) would start from the same state.
    fn seed_micro_batch(&self, _seed: u64) {}
}

/// Which checkpoint the trainer asks to save.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveKind {
    /// The best by `metric_for_best` so far.
    Best,
    /// The latest weights.
    Last,
}

/// Where training stands, passed to the hooks.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainProgress {
    /// Optimizer steps done.
    pub step: usize,
    /// Epochs begun (1-based).
    pub epoch: usize,
    pub total_steps: usize,
    /// Best value of `metric_for_best`, and the step it was reached at.
    pub best: Option<(f64, usize)>,
}

/// What the trainer calls out to: evaluation and saving belong to the task, not the trainer.
pub trait TrainHooks<M> {
    /// Evaluates `model` (a copy in evaluation mode, without autodiff).
    fn evaluate(&mut self, model: &M, progress: &TrainProgress) -> Result<Metrics, TrainError>;
    /// Saves `model` as the best or the last checkpoint. A resumable checkpoint also needs
    /// [`CheckpointContext::write_resume_files`] called on its folder.
    fn save(&mut self, model: &M, kind: SaveKind, checkpoint: &CheckpointContext<'_>) -> Result<(), TrainError>;
}

/// Why training stopped early.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("invalid training configuration: {0}")]
    Config(String),
    #[error("the training set is empty")]
    EmptyData,
    #[error("the model is not on an autodiff device; load it on `device.autodiff()` to train it")]
    NotAutodiff,
    #[error("step {step}: the loss is {value}; stopped before applying it (the last saved checkpoint is kept)")]
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
    report_dir: Option<PathBuf>,
    /// Devices that share each step's micro-batches (data parallelism); empty: `device` alone.
    workers: Vec<Device>,
}

impl Trainer {
    /// A trainer with these options, running on `device` (the autodiff form is used).
    pub fn new(config: TrainConfig, device: &Device) -> Result<Self, TrainError> {
        config.validate().map_err(TrainError::Config)?;
        Ok(Self { config, device: device.clone(), metrics_log: None, show_progress: true, resume: None, stop: None, stop_at_step: None, report_dir: None, workers: Vec::new() })
    }

    /// Appends one JSON object per log, evaluation and save event to `path`.
    pub fn with_metrics_log(mut self, path: &Path) -> Self {
        self.metrics_log = Some(path.to_path_buf());
        self
    }

    /// Rewrites `dir/report.html` (see [`crate::report`]) after every evaluation and at the end;
    /// `dir` is the run folder holding the metrics log.
    pub fn with_report(mut self, dir: &Path) -> Self {
        self.report_dir = Some(dir.to_path_buf());
        self
    }

    /// Refreshes the report, if one is kept; a failure is a warning, never the end of a run.
    fn refresh_report(&self) {
        if let Some(dir) = &self.report_dir
            && let Err(e) = crate::report::write_report(dir)
        {
            tracing::warn!("report not updated: {e}");
        }
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
    /// update is the one gradient accumulation computes one micro-batch after another, so
    /// `train.gradient_accumulation_steps` must be at least the number of devices (a multiple
    /// keeps them all busy). Models whose dropout draws from a per-thread stream restarted in
    /// [`TrainModel::seed_micro_batch`] (papertune's models) make the same updates on any
    /// number of devices.
    pub fn with_devices(mut self, devices: Vec<Device>) -> Self {
        self.workers = devices.into_iter().map(|d| if d.is_autodiff() { d } else { d.autodiff() }).collect();
        self
    }

    /// The options in use.
    pub fn config(&self) -> &TrainConfig {
        &self.config
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
        let no_decay = ParamGroup::from_any_regexes(vec![r"(^|\.)bias$", r"(^|\.)gamma$", r"(^|\.)beta$"])
            .expect("the no-decay patterns are valid regexes");
        ModuleOptimizer::from(adamw(c.weight_decay)).with_group(no_decay, adamw(0.0), None)
    }

    /// Checks a resume point against this run; returns the option keys that changed.
    fn check_resume(&self, resume: &ResumePoint, n: usize) -> Result<Vec<String>, TrainError> {
        let before = &resume.state.config;
        let c = &self.config;
        let refuse = |message: String| Err(TrainError::Resume(format!("{}: {message}", resume.dir.display())));
        if resume.state.examples != n {
            return refuse(format!(
                "the training data had {} examples, now {n}; resuming needs the same data",
                resume.state.examples
            ));
        }
        for (key, was, now) in [
            ("train.batch_size", before.batch_size, c.batch_size),
            ("train.gradient_accumulation_steps", before.gradient_accumulation_steps, c.gradient_accumulation_steps),
        ] {
            if was != now {
                return refuse(format!("{key} was {was}, now {now}; it fixes the data order, so it cannot change on resume"));
            }
        }
        if before.seed != c.seed {
            return refuse(format!("train.seed was {}, now {}; it fixes the data order and dropout", before.seed, c.seed));
        }
        let (Value::Object(was), Value::Object(now)) =
            (serde_json::to_value(before).expect("config"), serde_json::to_value(c).expect("config"))
        else {
            unreachable!("a config serialises as an object")
        };
        Ok(now.iter().filter(|(k, v)| was.get(*k) != Some(*v)).map(|(k, v)| format!("train.{k}: {} -> {v}", was.get(k).unwrap_or(&Value::Null))).collect())
    }

    /// Trains `model` on `data` and returns the final weights (the best ones with
    /// `load_best_model_at_end`, when an evaluation ran) with a summary.
    ///
    /// The model must live on an autodiff device. Each epoch visits the data in an order drawn
    /// from `train.seed` and the epoch number; the device's random stream is re-seeded from
    /// `train.seed` and the step before every step, and [`TrainModel::seed_micro_batch`] gets
    /// a seed of (seed, step, micro-batch) before every micro-batch, so that a run is
    /// reproducible and a resumed run continues exactly.
    pub fn fit<M, I, Batch, L, Bt, H>(
        mut self,
        mut model: M,
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
        if !model.devices().first().is_some_and(|d| d.is_autodiff()) {
            return Err(TrainError::NotAutodiff);
        }
        self.config.validate_for_data(n).map_err(TrainError::Config)?;
        let c = self.config.clone();
        let steps_per_epoch = c.steps_per_epoch(n);
        let total_steps = c.total_steps(n);
        let schedule = c.lr_schedule(total_steps);
        let mut optimizer = self.optimizer();

        let mut run = RunState::fresh(n, total_steps);
        let resume = self.resume.take();
        let mut log = match (&self.metrics_log, &resume) {
            (Some(path), Some(r)) => Some(MetricsLog::open_resumed(path, r.state.step)?),
            (Some(path), None) => Some(MetricsLog::open(path)?),
            (None, _) => None,
        };
        let resumed_from = resume.as_ref().map(|r| r.state.step);
        if let Some(resume) = resume {
            let changes = self.check_resume(&resume, n)?;
            model = resume.restore_param_ids(model)?;
            if resume.state.step >= total_steps {
                return Err(TrainError::Resume(format!(
                    "{}: the checkpoint is at step {} and the run has {total_steps} steps; raise train.max_steps or train.epochs to train further",
                    resume.dir.display(),
                    resume.state.step
                )));
            }
            run = RunState::resumed(&resume.state, total_steps);
            tracing::info!("resuming from {} at step {}/{total_steps}", resume.dir.display(), run.progress.step);
            for change in &changes {
                tracing::warn!("changed on resume: {change}");
            }
            if let Some(log) = log.as_mut() {
                log.write(json!({"event": "resume", "step": run.progress.step, "from": resume.dir, "changes": changes}))?;
            }
            optimizer = optimizer.load_record(resume.into_optimizer_record());
        }
        let bar = self.progress_bar(total_steps, run.progress.step);
        tracing::info!(
            examples = n,
            steps_per_epoch,
            total_steps,
            warmup_steps = schedule.warmup_steps,
            "training"
        );

        run.session_start = Instant::now();
        let mut order: Vec<usize> = Vec::new();
        let mut window = LossWindow::new();
        let mut final_loss = f64::NAN;
        let mut last_metrics = run.eval_history.last().map(|e| e.metrics.clone());
        let mut best_model: Option<M> = None;
        let mut stop_reason = StopReason::Completed;
        let mut saved_at = None;
        let first_step = run.progress.step;

        for step in first_step..total_steps {
            if self.stop.as_ref().is_some_and(|f| f.load(Ordering::SeqCst)) || self.stop_at_step.is_some_and(|s| step >= s) {
                stop_reason = StopReason::Interrupted;
                break;
            }
            let epoch = step / steps_per_epoch;
            let position = step % steps_per_epoch;
            if position == 0 || order.is_empty() {
                order = epoch_order(n, c.seed, epoch);
                run.progress.epoch = epoch + 1;
            }
            self.device.seed(step_seed(c.seed, step));
            // The micro-batches of this step: `accumulation` batches of `batch_size`, the last
            // step of an epoch taking what is left.
            let accumulation = c.gradient_accumulation_steps;
            let first_batch = position * accumulation;
            let last_batch = (first_batch + accumulation).min(c.batches_per_epoch(n));
            let mut accumulator = GradientsAccumulator::<M>::new();
            let mut loss_value = 0.0f32;
            let mut step_examples = 0usize;
            let devices = self.workers.len().max(1);
            for group_start in (first_batch..last_batch).step_by(devices) {
                let started = Instant::now();
                let group = group_start..(group_start + devices).min(last_batch);
                let mut group_items = Vec::with_capacity(group.len());
                {
                    let _span = tracing::debug_span!("data", step = step + 1).entered();
                    for batch_index in group {
                        let start = batch_index * c.batch_size;
                        let indices = &order[start..(start + c.batch_size).min(n)];
                        step_examples += indices.len();
                        let items = indices
                            .iter()
                            .map(|&i| data.get(i).map_err(|e| TrainError::Data { index: i, message: e.to_string() }))
                            .collect::<Result<Vec<I>, _>>()?;
                        group_items.push((batch_index, items));
                    }
                }
                run.timings.data += started.elapsed().as_secs_f64();
                let started = Instant::now();
                let _span = tracing::debug_span!("forward_backward", step = step + 1).entered();
                let scale = accumulation as f64;
                let seed_of_step = step_seed(c.seed, step);
                let results = if group_items.len() == 1 {
                    let (batch_index, items) = group_items.pop().expect("one micro-batch");
                    model.seed_micro_batch(micro_batch_seed(seed_of_step, batch_index));
                    vec![micro_batch_gradients(&model, loss_fn, batcher.batch(items, &self.device), scale)]
                } else {
                    // One thread per device, each on its own copy of the model; the gradients
                    // come back to the trainer's device in micro-batch order.
                    let main_device = &self.device;
                    std::thread::scope(|scope| {
                        let handles: Vec<_> = group_items
                            .into_iter()
                            .zip(&self.workers)
                            .map(|((batch_index, items), device)| {
                                let worker = model.clone().fork(device);
                                scope.spawn(move || {
                                    worker.seed_micro_batch(micro_batch_seed(seed_of_step, batch_index));
                                    let (grads, loss) = micro_batch_gradients(&worker, loss_fn, batcher.batch(items, device), scale);
                                    (grads.to_device(main_device, &worker), loss)
                                })
                            })
                            .collect();
                        handles
                            .into_iter()
                            .map(|handle| handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                            .collect::<Vec<_>>()
                    })
                };
                for (grads, loss) in results {
                    accumulator.accumulate(&model, grads);
                    loss_value += loss;
                }
                run.timings.forward_backward += started.elapsed().as_secs_f64();
            }
            if accumulation > 1 {
                // Report the mean micro-batch loss, comparable across accumulation settings.
                loss_value *= accumulation as f32 / (last_batch - first_batch) as f32;
            }
            if !loss_value.is_finite() {
                bar.abandon();
                if let Some(log) = log.as_mut() {
                    log.write(json!({"event": "error", "step": step + 1, "message": format!("loss is {loss_value}")}))?;
                }
                return Err(TrainError::NonFiniteLoss { step: step + 1, value: loss_value });
            }
            let started = Instant::now();
            let lr = schedule.lr(step);
            let grad_norm = {
                let _span = tracing::debug_span!("optimizer_step", step = step + 1).entered();
                let mut grads = accumulator.grads();
                if let Some(max) = c.max_grad_value {
                    clip_grad_value(&model, &mut grads, max);
                }
                let norm = c.max_grad_norm.map(|max| clip_grad_norm(&model, &mut grads, max));
                model = optimizer.step(lr, model, grads);
                norm
            };
            run.timings.optimizer += started.elapsed().as_secs_f64();
            run.progress.step = step + 1;
            run.examples_seen += step_examples;
            window.add(f64::from(loss_value), step_examples);

            let end_of_epoch = position + 1 == steps_per_epoch;
            let last_step = step + 1 == total_steps;
            // At multiples of the interval, so that a resumed run logs at the same steps as one run.
            if run.progress.step % c.log_every_steps == 0 || last_step {
                let (loss, throughput) = window.take();
                final_loss = loss;
                let message = format!("loss {loss:.4} lr {lr:.2e} {throughput:.1} ex/s");
                if bar.is_hidden() {
                    // No terminal (a log file, CI): the same figures as log lines.
                    tracing::info!("step {}/{total_steps}: {message}", run.progress.step);
                }
                bar.set_message(message);
                if let Some(log) = log.as_mut() {
                    log.write(json!({
                        "event": "train", "step": run.progress.step, "epoch": run.progress.epoch,
                        "loss": loss, "lr": lr, "grad_norm": grad_norm,
                        "examples_per_second": throughput,
                    }))?;
                }
            }
            bar.inc(1);

            if c.eval_due(run.progress.step, end_of_epoch, last_step) {
                let started = Instant::now();
                // A task without validation data returns no metrics: nothing to compare, and the
                // last checkpoint is the one to use.
                let metrics = {
                    let _span = tracing::info_span!("evaluation", step = run.progress.step).entered();
                    hooks.evaluate(&model.valid(), &run.progress)?
                };
                let seconds = started.elapsed().as_secs_f64();
                run.timings.evaluation += seconds;
                if !metrics.is_empty() {
                    let outcome = run.record_eval(&c, metrics.clone())?;
                    if outcome.improved {
                        let started = Instant::now();
                        let _span = tracing::info_span!("checkpoint", kind = "best").entered();
                        let context = CheckpointContext { progress: &run.progress, state: run.snapshot(&c), optimizer: None };
                        hooks.save(&model, SaveKind::Best, &context)?;
                        if c.load_best_model_at_end {
                            best_model = Some(model.clone());
                        }
                        run.timings.checkpoint += started.elapsed().as_secs_f64();
                    }
                    let summary: Vec<String> = metrics.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
                    let line = format!(
                        "eval at step {}/{} (epoch {}): {}{}",
                        run.progress.step,
                        total_steps,
                        run.progress.epoch,
                        summary.join(", "),
                        if outcome.improved { "  [best]" } else { "" }
                    );
                    if bar.is_hidden() {
                        tracing::info!("{line}");
                    } else {
                        bar.println(line);
                    }
                    if let Some(log) = log.as_mut() {
                        log.write(json!({
                            "event": "eval", "step": run.progress.step, "epoch": run.progress.epoch,
                            "metrics": metrics, "best": outcome.improved, "seconds": seconds,
                        }))?;
                    }
                    last_metrics = Some(metrics);
                    self.refresh_report();
                    if outcome.stop {
                        stop_reason = StopReason::EarlyStopping;
                        tracing::info!(
                            "early stopping at step {}: {} evaluations without an improvement of {} above {}",
                            run.progress.step,
                            run.evals_without_improvement,
                            c.metric_for_best,
                            c.early_stopping_threshold
                        );
                    }
                }
                // Evaluation time does not count towards training throughput.
                window.restart_clock();
            }
            if last_step || stop_reason != StopReason::Completed || c.save_due(run.progress.step, end_of_epoch) {
                let started = Instant::now();
                let _span = tracing::info_span!("checkpoint", kind = "last").entered();
                save_last(hooks, &model, &run, &c, &optimizer)?;
                saved_at = Some(run.progress.step);
                run.timings.checkpoint += started.elapsed().as_secs_f64();
            }
            if stop_reason != StopReason::Completed {
                break;
            }
        }
        if stop_reason == StopReason::Interrupted && saved_at != Some(run.progress.step) && run.progress.step > first_step {
            save_last(hooks, &model, &run, &c, &optimizer)?;
        }
        if stop_reason == StopReason::Interrupted {
            bar.abandon_with_message(format!("interrupted at step {}; the last checkpoint holds it", run.progress.step));
        } else {
            bar.finish_and_clear();
        }
        let state = run.snapshot(&c);
        let summary = TrainSummary {
            steps: run.progress.step,
            best: run.progress.best,
            last_metrics,
            final_loss,
            train_seconds: state.train_seconds,
            examples_per_second: state.examples_seen as f64 / state.train_seconds.max(1e-9),
            stop_reason,
            timings: run.timings,
            resumed_from,
        };
        if let Some(log) = log.as_mut() {
            log.write(json!({
                "event": "end", "step": summary.steps, "train_seconds": summary.train_seconds,
                "examples_per_second": summary.examples_per_second,
                "best_metric": summary.best.map(|b| b.0), "best_step": summary.best.map(|b| b.1),
                "stop_reason": summary.stop_reason, "timings": summary.timings,
                "device": format!("{:?}", self.device),
            }))?;
        }
        self.refresh_report();
        let model = match best_model {
            Some(best) if c.load_best_model_at_end => best,
            _ => model,
        };
        Ok((model, summary))
    }

    fn progress_bar(&self, total_steps: usize, done: usize) -> ProgressBar {
        if !self.show_progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(total_steps as u64);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise} < {eta_precise}] {bar:30} {pos}/{len} {msg}")
                .expect("the progress template is valid"),
        );
        bar.set_position(done as u64);
        bar.reset_eta();
        bar
    }
}

/// Forward and backward over one micro-batch: its gradients and its loss, both divided by
/// `accumulation` (the number of micro-batches whose gradients make one step).
fn micro_batch_gradients<M, Batch, L>(model: &M, loss_fn: &L, batch: Batch, accumulation: f64) -> (GradientsParams, f32)
where
    M: TrainModel<Batch>,
    L: Loss<M::Output, M::Target>,
{
    let (output, target) = model.forward_train(batch);
    let mut loss = loss_fn.forward(output, target);
    if accumulation > 1.0 {
        loss = loss.div_scalar(accumulation);
    }
    let grads = GradientsParams::from_grads(loss.backward(), model);
    (grads, loss.into_scalar::<f32>())
}

/// The seed of the random stream for step `step` (0-based) of a run seeded with `seed`.
fn step_seed(seed: u64, step: usize) -> u64 {
    mix64(seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// SplitMix64's finaliser: nearby inputs get unrelated outputs.
fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The seed of micro-batch `batch_index` (its index in the epoch) of a step whose seed is
/// `step_seed`.
fn micro_batch_seed(step_seed: u64, batch_index: usize) -> u64 {
    mix64(step_seed ^ (batch_index as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03))
}

/// Writes the resumable `last/` checkpoint of `run`.
fn save_last<M, H: TrainHooks<M>>(
    hooks: &mut H,
    model: &M,
    run: &RunState,
    c: &TrainConfig,
    optimizer: &ModuleOptimizer,
) -> Result<(), TrainError> {
    let context = CheckpointContext { progress: &run.progress, state: run.snapshot(c), optimizer: Some(optimizer) };
    hooks.save(model, SaveKind::Last, &context)
}

/// Counters that a checkpoint carries, and this session's clock.
struct RunState {
    progress: TrainProgress,
    examples: usize,
    examples_seen: usize,
    /// Seconds of training before this session (a resumed run's earlier sessions).
    train_seconds_before: f64,
    /// When this session's training loop started.
    session_start: Instant,
    /// This session's time per phase.
    timings: PhaseTimings,
    evals_without_improvement: usize,
    early_stopping_best: Option<f64>,
    eval_history: Vec<EvalRecord>,
}

struct EvalOutcome {
    improved: bool,
    stop: bool,
}

impl RunState {
    fn fresh(examples: usize, total_steps: usize) -> Self {
        Self {
            progress: TrainProgress { step: 0, epoch: 0, total_steps, best: None },
            examples,
            examples_seen: 0,
            train_seconds_before: 0.0,
            session_start: Instant::now(),
            timings: PhaseTimings::default(),
            evals_without_improvement: 0,
            early_stopping_best: None,
            eval_history: Vec::new(),
        }
    }

    fn resumed(state: &TrainerState, total_steps: usize) -> Self {
        Self {
            progress: TrainProgress { step: state.step, epoch: state.epoch, total_steps, best: state.best },
            examples: state.examples,
            examples_seen: state.examples_seen,
            train_seconds_before: state.train_seconds,
            session_start: Instant::now(),
            timings: PhaseTimings::default(),
            evals_without_improvement: state.evals_without_improvement,
            early_stopping_best: state.early_stopping_best,
            eval_history: state.eval_history.clone(),
        }
    }

    /// Records an evaluation: best checkpoint and early-stopping bookkeeping.
    fn record_eval(&mut self, c: &TrainConfig, metrics: Metrics) -> Result<EvalOutcome, TrainError> {
        let value = *metrics.get(&c.metric_for_best).ok_or_else(|| TrainError::MissingMetric {
            metric: c.metric_for_best.clone(),
            found: metrics.keys().cloned().collect(),
        })?;
        let better = |a: f64, b: f64| if c.greater_is_better { a > b } else { a < b };
        let improved = self.progress.best.is_none_or(|(best, _)| better(value, best));
        if improved {
            self.progress.best = Some((value, self.progress.step));
        }
        // Early stopping counts evaluations that do not beat the best by more than the threshold.
        let significant = self
            .early_stopping_best
            .is_none_or(|best| better(value, best) && (value - best).abs() > c.early_stopping_threshold);
        if significant {
            self.evals_without_improvement = 0;
            self.early_stopping_best = Some(value);
        } else {
            self.evals_without_improvement += 1;
        }
        self.eval_history.push(EvalRecord { step: self.progress.step, epoch: self.progress.epoch, metrics });
        let stop = c.early_stopping_patience.is_some_and(|p| self.evals_without_improvement >= p);
        Ok(EvalOutcome { improved, stop })
    }

    /// The state a checkpoint written now records; training time excludes evaluation.
    fn snapshot(&self, c: &TrainConfig) -> TrainerState {
        let session = self.session_start.elapsed().as_secs_f64() - self.timings.evaluation;
        TrainerState {
            format: TrainerState::FORMAT,
            step: self.progress.step,
            epoch: self.progress.epoch,
            total_steps: self.progress.total_steps,
            examples: self.examples,
            examples_seen: self.examples_seen,
            train_seconds: self.train_seconds_before + session.max(0.0),
            best: self.progress.best,
            evals_without_improvement: self.evals_without_improvement,
            early_stopping_best: self.early_stopping_best,
            eval_history: self.eval_history.clone(),
            config: c.clone(),
        }
    }
}

/// Running loss and throughput between two log lines.
struct LossWindow {
    loss: f64,
    steps: usize,
    examples: usize,
    start: Instant,
}

impl LossWindow {
    fn new() -> Self {
        Self { loss: 0.0, steps: 0, examples: 0, start: Instant::now() }
    }
    fn add(&mut self, loss: f64, examples: usize) {
        self.loss += loss;
        self.steps += 1;
        self.examples += examples;
    }
    /// Mean loss and examples per second since the last call; starts a new window.
    fn take(&mut self) -> (f64, f64) {
        let elapsed = self.start.elapsed().as_secs_f64().max(1e-9);
        let result = (self.loss / self.steps.max(1) as f64, self.examples as f64 / elapsed);
        *self = Self::new();
        result
    }
    fn restart_clock(&mut self) {
        self.start = Instant::now();
    }
}

/// The order in which epoch `epoch` visits `n` examples.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(epoch as u64));
    order.shuffle(&mut rng);
    order
}

/// `metrics.jsonl`: one JSON object per line, flushed as it goes, so that a crash loses nothing
/// already written.
struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    fn open(path: &Path) -> Result<Self, TrainError> {
        let io = |source| TrainError::Io { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(io)?;
        Ok(Self { path: path.to_path_buf(), file })
    }

    /// Reopens the log of a run resumed at `step`: events after that step (written by the
    /// interrupted session after its checkpoint) are dropped, so that the log reads as one run.
    fn open_resumed(path: &Path, step: usize) -> Result<Self, TrainError> {
        if path.exists() {
            let text = std::fs::read_to_string(path).map_err(|source| TrainError::Io { path: path.to_path_buf(), source })?;
            let mut kept = String::new();
            for line in text.lines() {
                // A torn last line (a crash mid-write) is dropped too.
                let Ok(event) = serde_json::from_str::<Value>(line) else { continue };
                let at = event.get("step").and_then(Value::as_u64).unwrap_or(0) as usize;
                if at <= step && event.get("event").and_then(Value::as_str) != Some("end") {
                    kept.push_str(line);
                    kept.push('\n');
                }
            }
            write_file_atomic(path, kept.as_bytes())?;
        }
        Self::open(path)
    }

    fn write(&mut self, value: serde_json::Value) -> Result<(), TrainError> {
        let mut line = value.to_string();
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.flush())
            .map_err(|source| TrainError::Io { path: self.path.clone(), source })
    }
}
