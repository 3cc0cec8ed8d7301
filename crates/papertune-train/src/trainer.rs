//! The training loop: data order, forward, loss, backward, clipping, AdamW step, schedule,
//! evaluation, best/last checkpoints and a `metrics.jsonl` log.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::module::{Module, ParamGroup};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde_json::json;

use crate::clip::clip_grad_norm;
use crate::config::TrainConfig;
use crate::loss::Loss;
use crate::schedule::LrSchedule;

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
    /// Saves `model` as the best or the last checkpoint.
    fn save(&mut self, model: &M, kind: SaveKind, progress: &TrainProgress) -> Result<(), TrainError>;
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
    #[error("step {step}: the loss is {value}; stopped (the last saved checkpoint is kept)")]
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
    #[error("{0}")]
    Hook(String),
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
    pub train_seconds: f64,
    pub examples_per_second: f64,
}

/// Trains a model; see [`Trainer::fit`].
pub struct Trainer {
    config: TrainConfig,
    device: Device,
    metrics_log: Option<PathBuf>,
    show_progress: bool,
}

impl Trainer {
    /// A trainer with these options, running on `device` (the autodiff form is used).
    pub fn new(config: TrainConfig, device: &Device) -> Result<Self, TrainError> {
        config.validate().map_err(TrainError::Config)?;
        Ok(Self { config, device: device.clone(), metrics_log: None, show_progress: true })
    }

    /// Appends one JSON object per log, evaluation and save event to `path`.
    pub fn with_metrics_log(mut self, path: &Path) -> Self {
        self.metrics_log = Some(path.to_path_buf());
        self
    }

    /// Shows (default) or hides the progress bar.
    pub fn with_progress(mut self, show: bool) -> Self {
        self.show_progress = show;
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
        let adamw = |weight_decay: f64| {
            AdamWConfig::new()
                .with_beta_1(c.adam_beta1 as f32)
                .with_beta_2(c.adam_beta2 as f32)
                .with_epsilon(c.adam_epsilon as f32)
                .with_weight_decay(weight_decay as f32)
        };
        let no_decay = ParamGroup::from_any_regexes(vec![r"(^|\.)bias$", r"(^|\.)gamma$", r"(^|\.)beta$"])
            .expect("the no-decay patterns are valid regexes");
        adamw(c.weight_decay).init().with_group(no_decay, adamw(0.0).build(), None)
    }

    /// Trains `model` on `data` and returns the last weights with a summary.
    ///
    /// The model must live on an autodiff device. Each epoch visits the data in an order drawn
    /// from `train.seed` and the epoch number, so that a run is reproducible.
    pub fn fit<M, I, Batch, L, Bt, H>(
        &self,
        mut model: M,
        loss_fn: &L,
        data: &dyn Dataset<I>,
        batcher: &Bt,
        hooks: &mut H,
    ) -> Result<(M, TrainSummary), TrainError>
    where
        M: TrainModel<Batch>,
        L: Loss<M::Output, M::Target>,
        Bt: Batcher<I, Batch>,
        H: TrainHooks<M>,
    {
        let c = &self.config;
        let n = data.len();
        if n == 0 {
            return Err(TrainError::EmptyData);
        }
        if !model.devices().first().is_some_and(|d| d.is_autodiff()) {
            return Err(TrainError::NotAutodiff);
        }
        let steps_per_epoch = c.steps_per_epoch(n);
        let total_steps = c.total_steps(n);
        let schedule = LrSchedule {
            kind: c.schedule,
            peak_lr: c.lr,
            warmup_steps: c.warmup(total_steps),
            total_steps,
        };
        self.device.seed(c.seed);
        let mut optimizer = self.optimizer();
        let mut log = self.metrics_log.as_deref().map(MetricsLog::open).transpose()?;
        let bar = self.progress_bar(total_steps);
        tracing::info!(
            examples = n,
            steps_per_epoch,
            total_steps,
            warmup_steps = schedule.warmup_steps,
            "training"
        );

        let started = Instant::now();
        let mut progress = TrainProgress { step: 0, epoch: 0, total_steps, best: None };
        let mut order: Vec<usize> = Vec::new();
        let mut window_loss = 0.0;
        let mut window_steps = 0usize;
        let mut window_start = Instant::now();
        let mut window_examples = 0usize;
        let mut final_loss = f64::NAN;
        let mut last_metrics = None;
        let mut examples_seen = 0usize;

        for step in 0..total_steps {
            let epoch = step / steps_per_epoch;
            let position = step % steps_per_epoch;
            if position == 0 || order.is_empty() {
                order = epoch_order(n, c.seed, epoch);
                progress.epoch = epoch + 1;
            }
            // The micro-batches of this step: `accumulation` batches of `batch_size`, the last
            // step of an epoch taking what is left.
            let accumulation = c.gradient_accumulation_steps;
            let batches_per_epoch = c.batches_per_epoch(n);
            let first_batch = position * accumulation;
            let last_batch = (first_batch + accumulation).min(batches_per_epoch);
            let mut accumulator = GradientsAccumulator::<M>::new();
            let mut loss_value = 0.0f32;
            let mut step_examples = 0usize;
            for batch_index in first_batch..last_batch {
                let start = batch_index * c.batch_size;
                let indices = &order[start..(start + c.batch_size).min(n)];
                let items = indices
                    .iter()
                    .map(|&i| data.get(i).map_err(|e| TrainError::Data { index: i, message: e.to_string() }))
                    .collect::<Result<Vec<I>, _>>()?;
                let batch = batcher.batch(items, &self.device);
                let (output, target) = model.forward_train(batch);
                let mut loss = loss_fn.forward(output, target);
                if accumulation > 1 {
                    loss = loss.div_scalar(accumulation as f64);
                }
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                accumulator.accumulate(&model, grads);
                loss_value += loss.into_scalar::<f32>();
                step_examples += indices.len();
            }
            if accumulation > 1 {
                // Report the mean micro-batch loss, comparable across accumulation settings.
                loss_value *= accumulation as f32 / (last_batch - first_batch) as f32;
            }
            let mut grads = accumulator.grads();
            let grad_norm = c.max_grad_norm.map(|max| clip_grad_norm(&model, &mut grads, max));
            let lr = schedule.lr(step);
            model = optimizer.step(lr, model, grads);

            if !loss_value.is_finite() {
                bar.abandon();
                return Err(TrainError::NonFiniteLoss { step: step + 1, value: loss_value });
            }
            progress.step = step + 1;
            examples_seen += step_examples;
            window_loss += f64::from(loss_value);
            window_steps += 1;
            window_examples += step_examples;

            let end_of_epoch = position + 1 == steps_per_epoch;
            let last_step = step + 1 == total_steps;
            if window_steps == c.log_every_steps || last_step {
                let elapsed = window_start.elapsed().as_secs_f64().max(1e-9);
                final_loss = window_loss / window_steps as f64;
                let throughput = window_examples as f64 / elapsed;
                let message = format!("loss {final_loss:.4} lr {lr:.2e} {throughput:.1} ex/s");
                if bar.is_hidden() {
                    // No terminal (a log file, CI): the same figures as log lines.
                    tracing::info!("step {}/{total_steps}: {message}", progress.step);
                }
                bar.set_message(message);
                if let Some(log) = log.as_mut() {
                    log.write(json!({
                        "event": "train", "step": progress.step, "epoch": progress.epoch,
                        "loss": final_loss, "lr": lr, "grad_norm": grad_norm,
                        "examples_per_second": throughput,
                    }))?;
                }
                window_loss = 0.0;
                window_steps = 0;
                window_examples = 0;
                window_start = Instant::now();
            }
            bar.inc(1);

            let eval_due = end_of_epoch || last_step || c.eval_every_steps.is_some_and(|k| progress.step % k == 0);
            // A task without validation data returns no metrics: nothing to compare, and the
            // last checkpoint is the one to use.
            let metrics = if eval_due { Some(hooks.evaluate(&model.valid(), &progress)?) } else { None };
            if let Some(metrics) = metrics.filter(|m| !m.is_empty()) {
                let eval_start = Instant::now();
                let value = *metrics.get(&c.metric_for_best).ok_or_else(|| TrainError::MissingMetric {
                    metric: c.metric_for_best.clone(),
                    found: metrics.keys().cloned().collect(),
                })?;
                let improved = match progress.best {
                    None => true,
                    Some((best, _)) => {
                        if c.greater_is_better { value > best } else { value < best }
                    }
                };
                if improved {
                    progress.best = Some((value, progress.step));
                    hooks.save(&model, SaveKind::Best, &progress)?;
                }
                let summary: Vec<String> = metrics.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
                let line = format!(
                    "eval at step {}/{} (epoch {}): {}{}",
                    progress.step,
                    total_steps,
                    progress.epoch,
                    summary.join(", "),
                    if improved { "  [best]" } else { "" }
                );
                if bar.is_hidden() {
                    tracing::info!("{line}");
                } else {
                    bar.println(line);
                }
                if let Some(log) = log.as_mut() {
                    log.write(json!({
                        "event": "eval", "step": progress.step, "epoch": progress.epoch,
                        "metrics": metrics, "best": improved,
                        "seconds": eval_start.elapsed().as_secs_f64(),
                    }))?;
                }
                last_metrics = Some(metrics);
                // Evaluation time does not count towards training throughput.
                window_start = Instant::now();
            }
            let save_due = last_step || c.save_every_steps.is_some_and(|k| progress.step % k == 0);
            if save_due {
                hooks.save(&model, SaveKind::Last, &progress)?;
            }
        }
        bar.finish_and_clear();
        let train_seconds = started.elapsed().as_secs_f64();
        let summary = TrainSummary {
            steps: progress.step,
            best: progress.best,
            last_metrics,
            final_loss,
            train_seconds,
            examples_per_second: examples_seen as f64 / train_seconds.max(1e-9),
        };
        if let Some(log) = log.as_mut() {
            log.write(json!({
                "event": "end", "step": summary.steps, "train_seconds": summary.train_seconds,
                "examples_per_second": summary.examples_per_second,
                "best_metric": summary.best.map(|b| b.0), "best_step": summary.best.map(|b| b.1),
            }))?;
        }
        Ok((model, summary))
    }

    fn progress_bar(&self, total_steps: usize) -> ProgressBar {
        if !self.show_progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(total_steps as u64);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise} < {eta_precise}] {bar:30} {pos}/{len} {msg}")
                .expect("the progress template is valid"),
        );
        bar
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

    fn write(&mut self, value: serde_json::Value) -> Result<(), TrainError> {
        let mut line = value.to_string();
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.flush())
            .map_err(|source| TrainError::Io { path: self.path.clone(), source })
    }
}
