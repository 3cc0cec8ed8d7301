//! The run's counters and its evaluation policy: which evaluation is the best so far (and so
//! asks for a `best/` checkpoint), when early stopping ends the run, and the state a checkpoint
//! written now records.

use std::time::Instant;

use super::PhaseTimings;
use super::order::epoch_order;
use crate::config::TrainConfig;
use crate::error::TrainError;
use crate::metrics::{EvalRecord, Metrics};
use crate::state::{TrainProgress, TrainerState};

/// Counters that a checkpoint carries, and this session's clock.
pub(super) struct RunState {
    pub progress: TrainProgress,
    examples: usize,
    pub examples_seen: usize,
    /// Seconds of training before this session (a resumed run's earlier sessions).
    train_seconds_before: f64,
    /// When this session's training loop started.
    session_start: Instant,
    /// This session's time per phase.
    pub timings: PhaseTimings,
    pub evals_without_improvement: usize,
    early_stopping_best: Option<f64>,
    pub eval_history: Vec<EvalRecord>,
    /// The order of the current epoch (computed again when a session starts mid-epoch).
    pub order: Vec<usize>,
}

/// What an evaluation decides.
pub(super) struct EvalOutcome {
    /// A new best by `metric_for_best`: save `best/`.
    pub improved: bool,
    /// Early stopping's patience ran out: end the run.
    pub stop: bool,
}

impl RunState {
    /// A run starting at step 0.
    pub fn fresh(examples: usize, total_steps: usize) -> Self {
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
            order: Vec::new(),
        }
    }

    /// A run continuing from a checkpoint's state.
    pub fn resumed(state: &TrainerState, total_steps: usize) -> Self {
        Self {
            progress: TrainProgress {
                step: state.step,
                epoch: state.epoch,
                total_steps,
                best: state.best,
            },
            examples: state.examples,
            examples_seen: state.examples_seen,
            train_seconds_before: state.train_seconds,
            evals_without_improvement: state.evals_without_improvement,
            early_stopping_best: state.early_stopping_best,
            eval_history: state.eval_history.clone(),
            ..Self::fresh(state.examples, total_steps)
        }
    }

    /// Starts this session's clock.
    pub fn start_session(&mut self) {
        self.session_start = Instant::now();
    }

    /// Enters step `step` (0-based), at `position` in its epoch: draws the epoch's order when
    /// the epoch begins or the session starts.
    pub fn enter_step(&mut self, step: usize, steps_per_epoch: usize, seed: u64) -> usize {
        let (epoch, position) = (step / steps_per_epoch, step % steps_per_epoch);
        if position == 0 || self.order.is_empty() {
            self.order = epoch_order(self.examples, seed, epoch);
            self.progress.epoch = epoch + 1;
        }
        position
    }

    /// Records an evaluation: best checkpoint and early-stopping bookkeeping.
    pub fn record_eval(
        &mut self,
        c: &TrainConfig,
        metrics: Metrics,
    ) -> Result<EvalOutcome, TrainError> {
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
        let significant = self.early_stopping_best.is_none_or(|best| {
            better(value, best) && (value - best).abs() > c.early_stopping_threshold
        });
        if significant {
            self.evals_without_improvement = 0;
            self.early_stopping_best = Some(value);
        } else {
            self.evals_without_improvement += 1;
        }
        self.eval_history.push(EvalRecord {
            step: self.progress.step,
            epoch: self.progress.epoch,
            metrics,
        });
        let stop = c.early_stopping_patience.is_some_and(|p| self.evals_without_improvement >= p);
        Ok(EvalOutcome { improved, stop })
    }

    /// The metrics of the best evaluation, and of the last one.
    pub fn best_and_last_metrics(&self) -> (Option<Metrics>, Option<Metrics>) {
        let best = self
            .progress
            .best
            .and_then(|(_, step)| self.eval_history.iter().find(|e| e.step == step));
        (best.map(|e| e.metrics.clone()), self.eval_history.last().map(|e| e.metrics.clone()))
    }

    /// The state a checkpoint written now records; training time excludes evaluation.
    pub fn snapshot(&self, c: &TrainConfig) -> TrainerState {
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
