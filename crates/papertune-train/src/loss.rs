//! Losses behind one trait, so that a model never hard-wires its objective.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};

/// A training objective: scores a model output against its target, returning a scalar `[1]`.
pub trait Loss<Output, Target> {
    /// Mean loss over the batch.
    fn forward(&self, output: Output, target: Target) -> Tensor<1>;
}

/// Softmax cross-entropy over `[batch, classes]` logits and `[batch]` class ids.
#[derive(Debug, Clone, Copy, Default)]
pub struct CrossEntropyLoss;

impl Loss<Tensor<2>, Tensor<1, Int>> for CrossEntropyLoss {
    fn forward(&self, logits: Tensor<2>, target: Tensor<1, Int>) -> Tensor<1> {
        let [batch, _] = logits.dims();
        let log_probs = log_softmax(logits, 1); // [batch, classes]
        let picked = log_probs.gather(1, target.reshape([batch, 1])); // [batch, 1]
        picked.mean().neg()
    }
}

/// Binary cross-entropy on raw logits `[batch, 1]` against 0/1 targets `[batch]`, computed in the
/// numerically stable form `max(x, 0) - x·y + log(1 + exp(-|x|))`.
#[derive(Debug, Clone, Copy, Default)]
pub struct BceWithLogitsLoss;

impl Loss<Tensor<2>, Tensor<1, Int>> for BceWithLogitsLoss {
    fn forward(&self, logits: Tensor<2>, target: Tensor<1, Int>) -> Tensor<1> {
        let [batch, width] = logits.dims();
        assert_eq!(width, 1, "BCE with logits expects one logit per example, found {width}");
        let x = logits.reshape([batch]);
        let y = target.float();
        let loss = x.clone().clamp_min(0.0) - x.clone() * y + x.abs().neg().exp().log1p();
        loss.mean()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn device() -> Device {
        Device::flex()
    }

    #[test]
    fn cross_entropy_matches_hand_computation() {
        let logits = Tensor::<2>::from_data(TensorData::new(vec![2.0f32, 0.0, 0.0, 1.0], [2, 2]), &device());
        let target = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 0], [2]), &device());
        let value: f32 = CrossEntropyLoss.forward(logits, target).into_scalar();
        // -(log softmax([2,0])[0] + log softmax([0,1])[0]) / 2
        let expected = ((1.0f32 + (-2.0f32).exp()).ln() + (1.0f32 + 1.0f32.exp()).ln()) / 2.0;
        assert!((value - expected).abs() < 1e-6, "{value} vs {expected}");
    }

    #[test]
    fn bce_with_logits_matches_hand_computation_and_is_stable() {
        let logits = Tensor::<2>::from_data(TensorData::new(vec![0.5f32, -1.0, 200.0], [3, 1]), &device());
        let target = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64, 0, 1], [3]), &device());
        let value: f32 = BceWithLogitsLoss.forward(logits, target).into_scalar();
        let sigmoid = |x: f32| 1.0 / (1.0 + (-x).exp());
        let expected = (-(sigmoid(0.5).ln()) - (1.0 - sigmoid(-1.0)).ln() + 0.0) / 3.0;
        assert!((value - expected).abs() < 1e-6, "{value} vs {expected}");
    }
}
