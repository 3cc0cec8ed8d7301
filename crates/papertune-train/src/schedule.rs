//! Learning-rate schedules: warmup, then constant, linear or cosine decay, as functions of the
//! optimizer step (0-based), with the same values as Hugging Face's schedulers.

use serde::{Deserialize, Serialize};

/// Shape of the learning rate after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// Linear decay to 0 at the last step.
    #[default]
    Linear,
    /// Half a cosine from the peak to 0.
    Cosine,
    /// Stays at the peak.
    Constant,
}

/// A warmup-then-decay schedule over a known number of steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    pub kind: ScheduleKind,
    pub peak_lr: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
}

impl LrSchedule {
    /// Learning rate used by the optimizer step `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        let factor = if step < self.warmup_steps {
            step as f64 / self.warmup_steps.max(1) as f64
        } else {
            let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
            let progress = (step - self.warmup_steps) as f64 / decay_steps;
            match self.kind {
                ScheduleKind::Linear => (1.0 - progress).max(0.0),
                ScheduleKind::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos()),
                ScheduleKind::Constant => 1.0,
            }
        };
        self.peak_lr * factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_warmup_then_linear_decay() {
        let s = LrSchedule { kind: ScheduleKind::Linear, peak_lr: 1.0, warmup_steps: 10, total_steps: 110 };
        assert_eq!(s.lr(0), 0.0);
        assert!((s.lr(5) - 0.5).abs() < 1e-12);
        assert_eq!(s.lr(10), 1.0);
        assert!((s.lr(60) - 0.5).abs() < 1e-12);
        assert_eq!(s.lr(110), 0.0);
        assert_eq!(s.lr(500), 0.0);
    }

    #[test]
    fn cosine_and_constant() {
        let c = LrSchedule { kind: ScheduleKind::Cosine, peak_lr: 2.0, warmup_steps: 0, total_steps: 100 };
        assert_eq!(c.lr(0), 2.0);
        assert!((c.lr(50) - 1.0).abs() < 1e-12);
        assert!(c.lr(100).abs() < 1e-12);
        let k = LrSchedule { kind: ScheduleKind::Constant, peak_lr: 3.0, warmup_steps: 4, total_steps: 100 };
        assert_eq!(k.lr(2), 1.5);
        assert_eq!(k.lr(99), 3.0);
    }
}
