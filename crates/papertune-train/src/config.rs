//! Training options. Every field has a default; unknown keys are rejected.

use serde::{Deserialize, Serialize};

use crate::schedule::ScheduleKind;

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
    /// Decay after warmup: `linear`, `cosine` or `constant`.
    pub schedule: ScheduleKind,
    /// Warmup as a share of all steps (used when `warmup_steps` is unset).
    pub warmup_ratio: f64,
    /// Warmup steps (overrides `warmup_ratio`).
    pub warmup_steps: Option<usize>,
    /// Clip gradients to this global L2 norm (none when unset).
    pub max_grad_norm: Option<f64>,
    /// Evaluate every N steps (besides the end of each epoch).
    pub eval_every_steps: Option<usize>,
    /// Save the last checkpoint every N steps (besides the end of training).
    pub save_every_steps: Option<usize>,
    /// Log the running loss every N steps.
    pub log_every_steps: usize,
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
            warmup_ratio: 0.1,
            warmup_steps: None,
            max_grad_norm: Some(1.0),
            eval_every_steps: None,
            save_every_steps: None,
            log_every_steps: 10,
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
            return Err(format!("train.warmup_ratio must be in [0, 1), found {}", self.warmup_ratio));
        }
        if self.eval_every_steps == Some(0) || self.save_every_steps == Some(0) || self.log_every_steps == 0 {
            return Err("train.eval_every_steps, train.save_every_steps and train.log_every_steps must be at least 1".into());
        }
        if self.max_grad_norm.is_some_and(|n| n <= 0.0) {
            return Err("train.max_grad_norm must be positive".into());
        }
        Ok(())
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
