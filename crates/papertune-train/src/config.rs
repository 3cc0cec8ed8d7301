//! Training options. Every field has a default; unknown keys are rejected.

use serde::{Deserialize, Serialize};

use crate::schedule::{LrSchedule, ScheduleKind};

/// When evaluation or saving happens besides the end of training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// At the end of every epoch (and every N steps when the `*_every_steps` key is set).
    #[default]
    Epoch,
    /// Only every N steps (the `*_every_steps` key), and at the end.
    Steps,
    /// Only at the end of training.
    No,
}

/// A place the trainer's events are written to besides `metrics.jsonl` (`train.log_to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    /// TensorBoard event files in the run folder's `tensorboard/`.
    Tensorboard,
}

/// Options of [`crate::Trainer`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Passes over the training data.
    pub epochs: usize,
    /// Stop after this many optimizer steps (overrides `epochs` when set).
    pub max_steps: Option<usize>,
    /// Examples per forward/backward pass (micro-batch).
    pub batch_size: usize,
    /// Micro-batches whose gradients are summed before each optimizer step (the effective batch
    /// is `batch_size * gradient_accumulation_steps`); each micro-batch's loss is divided by it.
    pub gradient_accumulation_steps: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// AdamW decoupled weight decay (not applied to biases and LayerNorm).
    pub weight_decay: f64,
    /// AdamW first-moment decay.
    pub adam_beta1: f64,
    /// AdamW second-moment decay.
    pub adam_beta2: f64,
    /// AdamW denominator epsilon.
    pub adam_epsilon: f64,
    /// Decay after warmup: `linear`, `cosine`, `cosine_with_restarts`, `polynomial` or
    /// `constant`.
    pub schedule: ScheduleKind,
    /// `cosine_with_restarts`: number of cosine cycles.
    pub schedule_cycles: usize,
    /// `polynomial`: exponent of the decay.
    pub poly_power: f64,
    /// `polynomial`: learning rate reached at the last step.
    pub lr_end: f64,
    /// Warmup as a share of all steps (used when `warmup_steps` is unset).
    pub warmup_ratio: f64,
    /// Warmup steps (overrides `warmup_ratio`).
    pub warmup_steps: Option<usize>,
    /// Clip gradients to this global L2 norm (none when unset).
    pub max_grad_norm: Option<f64>,
    /// Clamp every gradient element into `[-v, v]` (none when unset; applied before the norm
    /// clipping).
    pub max_grad_value: Option<f64>,
    /// When to evaluate: `epoch` (each epoch end), `steps` (every `eval_every_steps` only) or
    /// `no`; training always ends with an evaluation unless `no`.
    pub eval_strategy: Strategy,
    /// Evaluate every N steps.
    pub eval_every_steps: Option<usize>,
    /// When to save the `last/` checkpoint: `epoch`, `steps` (every `save_every_steps`) or `no`;
    /// it is always saved at the end and when the run is interrupted.
    pub save_strategy: Strategy,
    /// Save the `last/` checkpoint every N steps.
    pub save_every_steps: Option<usize>,
    /// How many periodic checkpoints to keep: the newest is `last/`, older ones stay as
    /// `checkpoint-<step>/` (the best checkpoint is kept apart, always).
    pub save_total_limit: usize,
    /// Hand back the best weights (by `metric_for_best`) at the end instead of the last ones.
    pub load_best_model_at_end: bool,
    /// Stop after this many evaluations without an improvement of `metric_for_best`.
    pub early_stopping_patience: Option<usize>,
    /// Smallest change of `metric_for_best` that counts as an improvement for early stopping.
    pub early_stopping_threshold: f64,
    /// Log the running loss every N steps.
    pub log_every_steps: usize,
    /// Where the events go besides `metrics.jsonl`: `tensorboard` writes TensorBoard event files
    /// to `tensorboard/` beside it (the folder of [`crate::Trainer::with_metrics_log`]).
    pub log_to: Vec<LogTarget>,
    /// Seed of the data order and of dropout.
    pub seed: u64,
    /// Metric that picks the best checkpoint.
    pub metric_for_best: String,
    /// Whether a higher `metric_for_best` is better.
    pub greater_is_better: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 1,
            max_steps: None,
            batch_size: 16,
            gradient_accumulation_steps: 1,
            lr: 5e-5,
            weight_decay: 0.01,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            schedule: ScheduleKind::Linear,
            schedule_cycles: 1,
            poly_power: 1.0,
            lr_end: 0.0,
            warmup_ratio: 0.1,
            warmup_steps: None,
            max_grad_norm: Some(1.0),
            max_grad_value: None,
            eval_strategy: Strategy::Epoch,
            eval_every_steps: None,
            save_strategy: Strategy::Epoch,
            save_every_steps: None,
            save_total_limit: 1,
            load_best_model_at_end: true,
            early_stopping_patience: None,
            early_stopping_threshold: 0.0,
            log_every_steps: 10,
            log_to: Vec::new(),
            seed: 42,
            metric_for_best: "f1".into(),
            greater_is_better: true,
        }
    }
}

impl TrainConfig {
    /// Rejects values that cannot work, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.batch_size == 0 {
            return Err("train.batch_size must be at least 1".into());
        }
        if self.gradient_accumulation_steps == 0 {
            return Err("train.gradient_accumulation_steps must be at least 1".into());
        }
        if self.epochs == 0 && self.max_steps.is_none() {
            return Err("train.epochs must be at least 1 (or set train.max_steps)".into());
        }
        if self.max_steps == Some(0) {
            return Err("train.max_steps must be at least 1".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(format!("train.lr must be positive, found {}", self.lr));
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return Err(format!(
                "train.warmup_ratio must be in [0, 1), found {}",
                self.warmup_ratio
            ));
        }
        if self.eval_every_steps == Some(0)
            || self.save_every_steps == Some(0)
            || self.log_every_steps == 0
        {
            return Err("train.eval_every_steps, train.save_every_steps and train.log_every_steps must be at least 1".into());
        }
        // `!(x > 0)` rather than `x <= 0`, so that NaN is refused too.
        for (key, value) in
            [("max_grad_norm", self.max_grad_norm), ("max_grad_value", self.max_grad_value)]
        {
            if let Some(v) = value.filter(|v| !(*v > 0.0 && v.is_finite())) {
                return Err(format!(
                    "train.{key} must be a positive number (or left out: no clipping), found {v}"
                ));
            }
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(format!("train.weight_decay must be >= 0, found {}", self.weight_decay));
        }
        for (key, value) in [("adam_beta1", self.adam_beta1), ("adam_beta2", self.adam_beta2)] {
            if !(0.0..1.0).contains(&value) {
                return Err(format!("train.{key} must be in [0, 1), found {value}"));
            }
        }
        if !(self.adam_epsilon > 0.0 && self.adam_epsilon.is_finite()) {
            return Err(format!(
                "train.adam_epsilon must be positive, found {}",
                self.adam_epsilon
            ));
        }
        if self.schedule_cycles == 0 {
            return Err("train.schedule_cycles must be at least 1".into());
        }
        if !(self.poly_power > 0.0 && self.poly_power.is_finite()) {
            return Err(format!("train.poly_power must be positive, found {}", self.poly_power));
        }
        if !(self.lr_end >= 0.0 && self.lr_end < self.lr) {
            return Err(format!(
                "train.lr_end must be in [0, train.lr), found {} (train.lr {})",
                self.lr_end, self.lr
            ));
        }
        if self.eval_strategy == Strategy::Steps && self.eval_every_steps.is_none() {
            return Err("train.eval_strategy = \"steps\" needs train.eval_every_steps".into());
        }
        if self.save_strategy == Strategy::Steps && self.save_every_steps.is_none() {
            return Err("train.save_strategy = \"steps\" needs train.save_every_steps".into());
        }
        if self.eval_strategy == Strategy::No && self.eval_every_steps.is_some() {
            return Err("train.eval_every_steps is set but train.eval_strategy is \"no\"".into());
        }
        if self.save_total_limit == 0 {
            return Err("train.save_total_limit must be at least 1 (the last checkpoint)".into());
        }
        if self.early_stopping_patience == Some(0) {
            return Err("train.early_stopping_patience must be at least 1".into());
        }
        if self.early_stopping_patience.is_some() && self.eval_strategy == Strategy::No {
            return Err("train.early_stopping_patience needs evaluations, but train.eval_strategy is \"no\"".into());
        }
        if !(self.early_stopping_threshold >= 0.0 && self.early_stopping_threshold.is_finite()) {
            return Err(format!(
                "train.early_stopping_threshold must be >= 0, found {}",
                self.early_stopping_threshold
            ));
        }
        Ok(())
    }

    /// Rejects options that contradict the size of the training data (`n` examples), naming
    /// the keys; runs before the first step.
    pub fn validate_for_data(&self, n: usize) -> Result<(), String> {
        let batches = self.batches_per_epoch(n);
        if self.gradient_accumulation_steps > batches {
            return Err(format!(
                "train.gradient_accumulation_steps ({}) is larger than the micro-batches in one epoch ({batches}: {n} examples / train.batch_size {})",
                self.gradient_accumulation_steps, self.batch_size
            ));
        }
        let total = self.total_steps(n);
        let warmup = self.warmup(total);
        if self.warmup_steps.is_some() && warmup >= total {
            return Err(format!(
                "train.warmup_steps ({warmup}) is not shorter than training ({total} steps)"
            ));
        }
        Ok(())
    }

    /// The learning-rate schedule of a run of `total_steps` steps.
    pub fn lr_schedule(&self, total_steps: usize) -> LrSchedule {
        LrSchedule {
            kind: self.schedule,
            peak_lr: self.lr,
            warmup_steps: self.warmup(total_steps),
            total_steps,
            cycles: self.schedule_cycles,
            power: self.poly_power,
            lr_end: self.lr_end,
        }
    }

    /// Whether evaluation is due after step `step` (1-based count of steps done).
    pub fn eval_due(&self, step: usize, end_of_epoch: bool, last_step: bool) -> bool {
        match self.eval_strategy {
            Strategy::No => false,
            Strategy::Steps => {
                last_step || self.eval_every_steps.is_some_and(|k| step.is_multiple_of(k))
            }
            Strategy::Epoch => {
                last_step
                    || end_of_epoch
                    || self.eval_every_steps.is_some_and(|k| step.is_multiple_of(k))
            }
        }
    }

    /// Whether the `last/` checkpoint is due after step `step` (besides the end of training).
    pub fn save_due(&self, step: usize, end_of_epoch: bool) -> bool {
        let every = self.save_every_steps.is_some_and(|k| step.is_multiple_of(k));
        match self.save_strategy {
            Strategy::No => false,
            Strategy::Steps => every,
            Strategy::Epoch => end_of_epoch || every,
        }
    }

    /// Micro-batches in one epoch of `n` examples (the last may be smaller).
    pub fn batches_per_epoch(&self, n: usize) -> usize {
        n.div_ceil(self.batch_size)
    }

    /// Optimizer steps in one epoch of `n` examples (the last step may gather fewer
    /// micro-batches).
    pub fn steps_per_epoch(&self, n: usize) -> usize {
        self.batches_per_epoch(n).div_ceil(self.gradient_accumulation_steps)
    }

    /// All optimizer steps of the run.
    pub fn total_steps(&self, n: usize) -> usize {
        self.max_steps.unwrap_or(self.epochs * self.steps_per_epoch(n))
    }

    /// Warmup steps of the run (`ceil(ratio * total)` unless given).
    pub fn warmup(&self, total_steps: usize) -> usize {
        self.warmup_steps.unwrap_or((self.warmup_ratio * total_steps as f64).ceil() as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_and_out_of_range_options_are_refused_by_name() {
        let with = |edit: fn(&mut TrainConfig)| {
            let mut config = TrainConfig::default();
            edit(&mut config);
            config.validate().unwrap_err()
        };
        assert!(
            with(|c| c.max_grad_norm = Some(f64::NAN))
                .contains("train.max_grad_norm must be a positive number")
        );
        assert!(with(|c| c.max_grad_value = Some(-1.0)).contains("train.max_grad_value"));
        assert!(with(|c| c.weight_decay = f64::NAN).contains("train.weight_decay"));
        assert!(with(|c| c.adam_beta2 = 1.0).contains("train.adam_beta2 must be in [0, 1)"));
        assert!(with(|c| c.adam_epsilon = 0.0).contains("train.adam_epsilon"));
        assert!(with(|c| c.lr = f64::INFINITY).contains("train.lr"));
        TrainConfig::default().validate().unwrap();
    }
}
