//! AdamW whose update of each parameter is one fused pass on the CPU backends.
//!
//! [`FusedAdamW`] does burn's `AdamW` arithmetic (decoupled weight decay, bias-corrected
//! moments, no AMSGrad) through [`papertune_kernels::adamw_update`], and keeps its state
//! in burn's [`AdamWState`], so optimizer checkpoints have the same tensors and names.
//!
//! ```
//! use burn::optim::ModuleOptimizer;
//! use papertune_train::FusedAdamW;
//!
//! let optimizer = ModuleOptimizer::from(FusedAdamW { weight_decay: 0.01, ..FusedAdamW::default() });
//! # let _ = optimizer;
//! ```

use burn::optim::{AdamWState, AdaptiveMomentumState, LearningRate, Optimizer};
use burn::tensor::{Device, Tensor};
use papertune_kernels::{AdamWStep, adamw_update};

/// AdamW's hyperparameters; the defaults are PyTorch's betas and epsilon (0.9, 0.999, 1e-8;
/// burn's `AdamWConfig` has epsilon 1e-5) and burn's weight decay of 1e-4.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusedAdamW {
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    /// Decoupled weight decay: each step multiplies the parameter by `1 - lr * weight_decay`.
    pub weight_decay: f32,
}

impl Default for FusedAdamW {
    fn default() -> Self {
        Self { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-8, weight_decay: 1e-4 }
    }
}

impl Optimizer for FusedAdamW {
    type State<const D: usize> = AdamWState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let (time, moments) = match state {
            Some(state) => {
                (state.momentum.time + 1, Some((state.momentum.moment_1, state.momentum.moment_2)))
            }
            None => (1, None),
        };
        // The hyperparameters are f32 like burn's, widened exactly to f64.
        let step = AdamWStep {
            lr,
            beta_1: self.beta_1 as f64,
            beta_2: self.beta_2 as f64,
            epsilon: self.epsilon as f64,
            weight_decay: self.weight_decay as f64,
            time,
        };
        let (tensor, moment_1, moment_2) = adamw_update(tensor, grad, moments, &step);
        (tensor, Some(AdamWState::new(AdaptiveMomentumState::new(time, moment_1, moment_2))))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::optim::AdamWConfig;
    use burn::tensor::{Distribution, FloatDType};

    /// Three steps against burn's AdamW with the same hyperparameters: same parameters and
    /// moments. In f32 (the fused kernel on the CPU backends) and in f64 (tensor operations).
    #[test]
    fn matches_burns_adamw() {
        for dtype in [FloatDType::F32, FloatDType::F64] {
            check_against_burn(dtype);
        }
    }

    fn check_against_burn(dtype: FloatDType) {
        let device = Device::default();
        let fused = FusedAdamW { weight_decay: 0.01, ..FusedAdamW::default() };
        let reference = AdamWConfig::new().with_weight_decay(0.01).with_epsilon(1e-8).build();
        let random = |std: f64| {
            Tensor::<2>::random([37, 5], Distribution::Normal(0.0, std), &device).cast(dtype)
        };
        let mut ours = random(1.0);
        let mut theirs = ours.clone();
        let (mut our_state, mut their_state) = (None, None);
        for step in 0..3 {
            let grad = random(0.1 + step as f64);
            (ours, our_state) = fused.step(1e-2, ours, grad.clone(), our_state);
            (theirs, their_state) = reference.step(1e-2, theirs, grad, their_state);
        }
        let close = |a: Tensor<2>, b: Tensor<2>, what: &str| {
            let as_f32 =
                |t: Tensor<2>| t.cast(FloatDType::F32).into_data().try_to_vec::<f32>().unwrap();
            let (a, b) = (as_f32(a), as_f32(b));
            for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                assert!(
                    (x - y).abs() <= 1e-6 * (1.0 + y.abs()),
                    "{dtype:?} {what}[{i}]: fused {x}, burn {y}"
                );
            }
        };
        let (ours_m, theirs_m) = (our_state.unwrap().momentum, their_state.unwrap().momentum);
        assert_eq!(ours_m.time, 3);
        assert_eq!(theirs_m.time, 3);
        close(ours, theirs, "parameter");
        close(ours_m.moment_1, theirs_m.moment_1, "first moment");
        close(ours_m.moment_2, theirs_m.moment_2, "second moment");
    }
}
