//! Learning-rate schedules: warmup, then a decay shape, as functions of the optimizer step
//! (0-based), with the values of Hugging Face's schedulers of the same names. A schedule is a
//! pure function of the step, so a resumed run continues exactly where it stopped.

use serde::{Deserialize, Serialize};

/// Shape of the learning rate after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// Linear decay to 0 at the last step.
    #[default]
    Linear,
    /// Half a cosine from the peak to 0.
    Cosine,
    /// `schedule_cycles` cosine decays to 0, each restarting at the peak (hard restarts).
    CosineWithRestarts,
    /// `(peak - lr_end)·(1 - progress)^power + lr_end`.
    Polynomial,
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
    /// Cosine with restarts: number of cycles.
    pub cycles: usize,
    /// Polynomial: exponent.
    pub power: f64,
    /// Polynomial: learning rate at the end.
    pub lr_end: f64,
}

impl LrSchedule {
    /// A schedule with one cycle, power 1 and end 0 (the options only some kinds use).
    pub fn new(kind: ScheduleKind, peak_lr: f64, warmup_steps: usize, total_steps: usize) -> Self {
        Self { kind, peak_lr, warmup_steps, total_steps, cycles: 1, power: 1.0, lr_end: 0.0 }
    }

    /// Learning rate used by the optimizer step `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.peak_lr * step as f64 / self.warmup_steps.max(1) as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = (step - self.warmup_steps) as f64 / decay_steps;
        let factor = match self.kind {
            ScheduleKind::Linear => (1.0 - progress).max(0.0),
            ScheduleKind::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos()),
            ScheduleKind::CosineWithRestarts => {
                if progress >= 1.0 {
                    0.0
                } else {
                    let within_cycle = (self.cycles.max(1) as f64 * progress) % 1.0;
                    0.5 * (1.0 + (std::f64::consts::PI * within_cycle).cos())
                }
            }
            ScheduleKind::Polynomial => {
                if progress >= 1.0 {
                    return self.lr_end;
                }
                let range = self.peak_lr - self.lr_end;
                return range * (1.0 - progress).powf(self.power) + self.lr_end;
            }
            ScheduleKind::Constant => 1.0,
        };
        self.peak_lr * factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    #[test]
    fn linear_warmup_then_linear_decay() {
        let s = LrSchedule::new(ScheduleKind::Linear, 1.0, 10, 110);
        assert_eq!(s.lr(0), 0.0);
        close(s.lr(5), 0.5);
        assert_eq!(s.lr(10), 1.0);
        close(s.lr(60), 0.5);
        assert_eq!(s.lr(110), 0.0);
        assert_eq!(s.lr(500), 0.0);
    }

    #[test]
    fn cosine_and_constant() {
        let c = LrSchedule::new(ScheduleKind::Cosine, 2.0, 0, 100);
        assert_eq!(c.lr(0), 2.0);
        close(c.lr(50), 1.0);
        close(c.lr(25), 1.0 + std::f64::consts::FRAC_1_SQRT_2);
        assert!(c.lr(100).abs() < 1e-12);
        let k = LrSchedule::new(ScheduleKind::Constant, 3.0, 4, 100);
        assert_eq!(k.lr(2), 1.5);
        assert_eq!(k.lr(99), 3.0);
    }

    #[test]
    fn cosine_with_hard_restarts_matches_closed_form() {
        // 2 cycles over 100 decay steps after 10 warmup steps: peaks at 10 and 60.
        let s = LrSchedule {
            cycles: 2,
            ..LrSchedule::new(ScheduleKind::CosineWithRestarts, 1.0, 10, 110)
        };
        close(s.lr(5), 0.5);
        close(s.lr(10), 1.0);
        close(s.lr(35), 0.5); // a quarter of the way: half a cycle
        close(s.lr(60), 1.0); // restart
        close(s.lr(85), 0.5);
        // transformers' get_cosine_with_hard_restarts_schedule_with_warmup(optimizer, 10, 110,
        // num_cycles=2), its multiplier at these steps (printed to 9 decimals).
        let reference = [
            (0, 0.0),
            (20, 0.904508497),
            (33, 0.562666617),
            (59, 0.000986636),
            (61, 0.999013364),
            (77, 0.740876837),
            (99, 0.114743379),
            (109, 0.000986636),
        ];
        for (step, expected) in reference {
            assert!(
                (s.lr(step) - expected).abs() < 1e-8,
                "step {step}: {} vs transformers' {expected}",
                s.lr(step)
            );
        }
        assert_eq!(s.lr(110), 0.0);
    }

    #[test]
    fn polynomial_matches_closed_form() {
        let s = LrSchedule {
            power: 2.0,
            lr_end: 0.1,
            ..LrSchedule::new(ScheduleKind::Polynomial, 1.0, 0, 100)
        };
        assert_eq!(s.lr(0), 1.0);
        close(s.lr(50), 0.9 * 0.25 + 0.1);
        close(s.lr(90), 0.9 * 0.01 + 0.1);
        assert_eq!(s.lr(100), 0.1);
        assert_eq!(s.lr(1000), 0.1);
        // Power 1 and end 0 is the linear schedule.
        let p = LrSchedule::new(ScheduleKind::Polynomial, 1.0, 10, 110);
        let l = LrSchedule::new(ScheduleKind::Linear, 1.0, 10, 110);
        for step in 0..120 {
            close(p.lr(step), l.lr(step));
        }
    }
}
