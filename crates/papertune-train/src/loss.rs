//! Losses behind one trait, so that a model never hard-wires its objective.
//!
//! Each loss follows PyTorch's definition of the same name (reduction `mean`), so that a recipe
//! moves between the two stacks unchanged. [`LossConfig`] picks one by name from a config file.

use burn::tensor::activation::{log_softmax, softplus};
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// A training objective: scores a model output against its target, returning a scalar `[1]`.
pub trait Loss<Output, Target> {
    /// Mean loss over the batch.
    fn forward(&self, output: Output, target: Target) -> Tensor<1>;
}

/// Softmax cross-entropy over `[batch, classes]` logits and `[batch]` class ids, with optional
/// per-class weights and label smoothing (`torch.nn.CrossEntropyLoss(weight, label_smoothing)`).
///
/// With weights `w` and smoothing `ε` over `C` classes, example `i` costs
/// `(1-ε)·w[y]·(-log p[y]) + ε/C·Σ_c w[c]·(-log p[c])`, and the batch loss is the sum over
/// examples divided by `Σ_i w[y_i]` (the mean when unweighted).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CrossEntropyLoss {
    pub class_weights: Option<Vec<f32>>,
    pub label_smoothing: f32,
}

impl CrossEntropyLoss {
    /// Plain cross-entropy: no weights, no smoothing.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Loss<Tensor<2>, Tensor<1, Int>> for CrossEntropyLoss {
    fn forward(&self, logits: Tensor<2>, target: Tensor<1, Int>) -> Tensor<1> {
        let [batch, classes] = logits.dims();
        let device = logits.device();
        let log_probs = log_softmax(logits, 1); // [batch, classes]
        let target = target.reshape([batch, 1]);
        let picked = log_probs.clone().gather(1, target.clone()).neg(); // [batch, 1]
        let smoothing = f64::from(self.label_smoothing);
        match &self.class_weights {
            None => {
                let mut per_example = picked.mul_scalar(1.0 - smoothing);
                if smoothing > 0.0 {
                    let uniform = log_probs.neg().mean_dim(1); // [batch, 1]
                    per_example = per_example + uniform.mul_scalar(smoothing);
                }
                per_example.mean()
            }
            Some(weights) => {
                assert_eq!(
                    weights.len(),
                    classes,
                    "{} class weights for {classes} classes",
                    weights.len()
                );
                let weights =
                    Tensor::<1>::from_data(TensorData::new(weights.clone(), [classes]), &device);
                let weight_of_target =
                    weights.clone().reshape([1, classes]).repeat_dim(0, batch).gather(1, target); // [batch, 1]
                let mut per_example =
                    (picked * weight_of_target.clone()).mul_scalar(1.0 - smoothing);
                if smoothing > 0.0 {
                    let weighted = (log_probs.neg() * weights.reshape([1, classes])).sum_dim(1); // [batch, 1]
                    per_example = per_example + weighted.mul_scalar(smoothing / classes as f64);
                }
                per_example.sum() / weight_of_target.sum()
            }
        }
    }
}

/// Binary cross-entropy on raw logits `[batch, 1]` against 0/1 targets `[batch]`
/// (`torch.nn.BCEWithLogitsLoss(pos_weight)`): `pos_weight·y·softplus(-x) + (1-y)·softplus(x)`,
/// which is `-[pos_weight·y·log σ(x) + (1-y)·log(1-σ(x))]` computed without overflow.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BceWithLogitsLoss {
    pub pos_weight: Option<f32>,
}

impl BceWithLogitsLoss {
    /// Unweighted BCE with logits.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Loss<Tensor<2>, Tensor<1, Int>> for BceWithLogitsLoss {
    fn forward(&self, logits: Tensor<2>, target: Tensor<1, Int>) -> Tensor<1> {
        let [batch, width] = logits.dims();
        assert_eq!(width, 1, "BCE with logits expects one logit per example, found {width}");
        let x = logits.reshape([batch]);
        let y = target.float();
        let positive = softplus(x.clone().neg(), 1.0) * y.clone();
        let positive = match self.pos_weight {
            Some(w) => positive.mul_scalar(w),
            None => positive,
        };
        let negative = softplus(x, 1.0) * y.neg().add_scalar(1.0);
        (positive + negative).mean()
    }
}

/// Focal loss (Lin et al., 2017) over `[batch, classes]` logits: `-α_t·(1-p_t)^γ·log p_t`,
/// where `p_t` is the softmax probability of the true class. `γ = 0` and no `α` give plain
/// cross-entropy; a larger `γ` turns the loss away from examples already classified well.
/// `alpha` weighs class 1 against class 0 (`α` for label 1, `1-α` for label 0) and needs two
/// classes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FocalLoss {
    pub gamma: f32,
    pub alpha: Option<f32>,
}

impl Default for FocalLoss {
    fn default() -> Self {
        Self { gamma: 2.0, alpha: None }
    }
}

impl Loss<Tensor<2>, Tensor<1, Int>> for FocalLoss {
    fn forward(&self, logits: Tensor<2>, target: Tensor<1, Int>) -> Tensor<1> {
        let [batch, classes] = logits.dims();
        let log_pt =
            log_softmax(logits, 1).gather(1, target.clone().reshape([batch, 1])).reshape([batch]); // [batch]
        let modulating = log_pt
            .clone()
            .exp()
            .neg()
            .add_scalar(1.0)
            .clamp_min(0.0)
            .powf_scalar(f64::from(self.gamma));
        let mut per_example = modulating * log_pt.neg();
        if let Some(alpha) = self.alpha {
            assert_eq!(classes, 2, "focal loss alpha weighs two classes, found {classes}");
            // α for label 1, 1-α for label 0: (1-α) + y·(2α-1).
            let alpha_t = target
                .float()
                .mul_scalar(2.0 * f64::from(alpha) - 1.0)
                .add_scalar(1.0 - f64::from(alpha));
            per_example = per_example * alpha_t;
        }
        per_example.mean()
    }
}

/// The causal-LM loss: cross-entropy of `[positions, vocab]` logits against next-token ids
/// `[positions]`, where positions whose target is `ignore_index` (-100, as in transformers)
/// count for nothing; the mean runs over the scored positions only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CausalLmLoss {
    pub ignore_index: i64,
}

impl Default for CausalLmLoss {
    fn default() -> Self {
        Self { ignore_index: -100 }
    }
}

impl Loss<Tensor<2>, Tensor<1, Int>> for CausalLmLoss {
    fn forward(&self, logits: Tensor<2>, target: Tensor<1, Int>) -> Tensor<1> {
        let scored = target.clone().not_equal_elem(self.ignore_index); // [positions]
        let safe_target = target.mask_fill(scored.clone().bool_not(), 0);
        let nll = papertune_kernels::token_nll(logits, safe_target); // [positions]
        let weight = scored.float();
        // At least one scored position keeps an all-ignored batch at loss 0 rather than NaN.
        (nll * weight.clone()).sum() / weight.sum().clamp_min(1.0)
    }
}

/// A classification loss chosen by name in a config file (`[loss]` section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    /// `cross-entropy` (2 logits), `bce` (1 logit) or `focal` (2 logits).
    pub name: LossName,
    /// Cross-entropy: weight of each class, `[w0, w1]`.
    pub class_weights: Option<Vec<f32>>,
    /// Cross-entropy: share of the target mass spread evenly over the classes, in `[0, 1)`.
    pub label_smoothing: f32,
    /// BCE: weight of the positive examples (e.g. negatives / positives).
    pub pos_weight: Option<f32>,
    /// Focal: focusing exponent γ.
    pub focal_gamma: f32,
    /// Focal: weight α of class 1 (1-α for class 0).
    pub focal_alpha: Option<f32>,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            name: LossName::CrossEntropy,
            class_weights: None,
            label_smoothing: 0.0,
            pos_weight: None,
            focal_gamma: 2.0,
            focal_alpha: None,
        }
    }
}

/// The losses [`LossConfig`] can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum LossName {
    #[default]
    #[serde(rename = "cross-entropy")]
    CrossEntropy,
    #[serde(rename = "bce")]
    Bce,
    #[serde(rename = "focal")]
    Focal,
}

impl LossConfig {
    /// Logits the model must output for this loss.
    pub fn num_outputs(&self) -> usize {
        match self.name {
            LossName::Bce => 1,
            LossName::CrossEntropy | LossName::Focal => 2,
        }
    }

    /// Rejects options that do not fit the named loss, naming the key (`section` is the
    /// config section, e.g. `loss`).
    pub fn validate(&self, section: &str) -> Result<(), String> {
        let misplaced = |key: &str, name: &str| {
            Err(format!(
                "{section}.{key} applies to {name} only; {section}.name is {:?}",
                self.name
            ))
        };
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(format!(
                "{section}.label_smoothing must be in [0, 1), found {}",
                self.label_smoothing
            ));
        }
        if self.name != LossName::CrossEntropy {
            if self.class_weights.is_some() {
                return misplaced("class_weights", "cross-entropy");
            }
            if self.label_smoothing != 0.0 {
                return misplaced("label_smoothing", "cross-entropy");
            }
        }
        if self.name != LossName::Bce && self.pos_weight.is_some() {
            return misplaced("pos_weight", "bce");
        }
        if self.name != LossName::Focal && self.focal_alpha.is_some() {
            return misplaced("focal_alpha", "focal");
        }
        if let Some(weights) = &self.class_weights
            && (weights.len() != 2
                || weights.iter().any(|w| !(*w >= 0.0 && w.is_finite()))
                || weights.iter().all(|w| *w == 0.0))
        {
            return Err(format!(
                "{section}.class_weights must be two non-negative numbers, not both 0; found {weights:?}"
            ));
        }
        if self.pos_weight.is_some_and(|w| !(w > 0.0 && w.is_finite())) {
            return Err(format!(
                "{section}.pos_weight must be positive, found {:?}",
                self.pos_weight
            ));
        }
        if !(self.focal_gamma >= 0.0 && self.focal_gamma.is_finite()) {
            return Err(format!("{section}.focal_gamma must be >= 0, found {}", self.focal_gamma));
        }
        if self.focal_alpha.is_some_and(|a| !(0.0..=1.0).contains(&a)) {
            return Err(format!(
                "{section}.focal_alpha must be in [0, 1], found {:?}",
                self.focal_alpha
            ));
        }
        Ok(())
    }

    /// The configured loss.
    pub fn build(&self) -> ClassificationLoss {
        match self.name {
            LossName::CrossEntropy => ClassificationLoss::CrossEntropy(CrossEntropyLoss {
                class_weights: self.class_weights.clone(),
                label_smoothing: self.label_smoothing,
            }),
            LossName::Bce => {
                ClassificationLoss::Bce(BceWithLogitsLoss { pos_weight: self.pos_weight })
            }
            LossName::Focal => ClassificationLoss::Focal(FocalLoss {
                gamma: self.focal_gamma,
                alpha: self.focal_alpha,
            }),
        }
    }
}

/// One of the classification losses, as built from a [`LossConfig`].
#[derive(Debug, Clone, PartialEq)]
pub enum ClassificationLoss {
    CrossEntropy(CrossEntropyLoss),
    Bce(BceWithLogitsLoss),
    Focal(FocalLoss),
}

impl Loss<Tensor<2>, Tensor<1, Int>> for ClassificationLoss {
    fn forward(&self, logits: Tensor<2>, target: Tensor<1, Int>) -> Tensor<1> {
        match self {
            Self::CrossEntropy(loss) => loss.forward(logits, target),
            Self::Bce(loss) => loss.forward(logits, target),
            Self::Focal(loss) => loss.forward(logits, target),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn device() -> Device {
        Device::flex()
    }

    fn logits(values: &[f32], classes: usize) -> Tensor<2> {
        Tensor::from_data(
            TensorData::new(values.to_vec(), [values.len() / classes, classes]),
            &device(),
        )
    }

    fn labels(values: &[i64]) -> Tensor<1, Int> {
        Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), &device())
    }

    fn value<L: Loss<Tensor<2>, Tensor<1, Int>>>(loss: &L, x: Tensor<2>, y: Tensor<1, Int>) -> f64 {
        f64::from(loss.forward(x, y).into_scalar::<f32>())
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }

    /// log softmax of a 2-logit row, by hand.
    fn log_p(row: [f64; 2], class: usize) -> f64 {
        let m = row[0].max(row[1]);
        let lse = m + ((row[0] - m).exp() + (row[1] - m).exp()).ln();
        row[class] - lse
    }

    const ROWS: [[f64; 2]; 3] = [[2.0, 0.0], [0.0, 1.0], [-1.0, 3.0]];
    const Y: [usize; 3] = [0, 0, 1];

    fn inputs() -> (Tensor<2>, Tensor<1, Int>) {
        let flat: Vec<f32> = ROWS.iter().flatten().map(|&v| v as f32).collect();
        (logits(&flat, 2), labels(&Y.map(|y| y as i64)))
    }

    #[test]
    fn cross_entropy_plain() {
        let (x, y) = inputs();
        let expected = -(0..3).map(|i| log_p(ROWS[i], Y[i])).sum::<f64>() / 3.0;
        close(value(&CrossEntropyLoss::new(), x, y), expected);
    }

    #[test]
    fn cross_entropy_with_class_weights_and_smoothing() {
        let (w, eps) = ([0.3f64, 2.0], 0.1f64);
        let mut total = 0.0;
        for i in 0..3 {
            let nll = |c: usize| -log_p(ROWS[i], c);
            total +=
                (1.0 - eps) * w[Y[i]] * nll(Y[i]) + eps / 2.0 * (w[0] * nll(0) + w[1] * nll(1));
        }
        let expected = total / Y.iter().map(|&y| w[y]).sum::<f64>();
        let loss = CrossEntropyLoss { class_weights: Some(vec![0.3, 2.0]), label_smoothing: 0.1 };
        let (x, y) = inputs();
        close(value(&loss, x, y), expected);
        // Smoothing alone.
        let mut total = 0.0;
        for i in 0..3 {
            let nll = |c: usize| -log_p(ROWS[i], c);
            total += (1.0 - eps) * nll(Y[i]) + eps / 2.0 * (nll(0) + nll(1));
        }
        let (x, y) = inputs();
        close(
            value(&CrossEntropyLoss { class_weights: None, label_smoothing: 0.1 }, x, y),
            total / 3.0,
        );
    }

    #[test]
    fn bce_with_logits_and_pos_weight_are_stable() {
        let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
        let xs = [0.5f64, -1.0, 3.0];
        let ys = [1.0f64, 0.0, 1.0];
        for pos_weight in [None, Some(3.0f32)] {
            let pw = f64::from(pos_weight.unwrap_or(1.0));
            let expected = (0..3)
                .map(|i| {
                    -(pw * ys[i] * sigmoid(xs[i]).ln()
                        + (1.0 - ys[i]) * (1.0 - sigmoid(xs[i])).ln())
                })
                .sum::<f64>()
                / 3.0;
            let x = logits(&xs.map(|v| v as f32), 1);
            close(value(&BceWithLogitsLoss { pos_weight }, x, labels(&[1, 0, 1])), expected);
        }
        // A huge logit of the right sign costs nothing, not NaN.
        let extreme =
            value(&BceWithLogitsLoss::new(), logits(&[200.0, -200.0], 1), labels(&[1, 0]));
        assert!(extreme.abs() < 1e-6, "{extreme}");
    }

    #[test]
    fn focal_loss_by_hand() {
        let (gamma, alpha) = (2.0f64, 0.25f64);
        let per = |i: usize, with_alpha: bool| {
            let log_pt = log_p(ROWS[i], Y[i]);
            let a = if !with_alpha {
                1.0
            } else if Y[i] == 1 {
                alpha
            } else {
                1.0 - alpha
            };
            -a * (1.0 - log_pt.exp()).powf(gamma) * log_pt
        };
        let (x, y) = inputs();
        close(
            value(&FocalLoss { gamma: 2.0, alpha: Some(0.25) }, x, y),
            (0..3).map(|i| per(i, true)).sum::<f64>() / 3.0,
        );
        let (x, y) = inputs();
        close(
            value(&FocalLoss { gamma: 2.0, alpha: None }, x, y),
            (0..3).map(|i| per(i, false)).sum::<f64>() / 3.0,
        );
        // γ = 0 without α is cross-entropy.
        let (x, y) = inputs();
        let (x2, y2) = inputs();
        close(
            value(&FocalLoss { gamma: 0.0, alpha: None }, x, y),
            value(&CrossEntropyLoss::new(), x2, y2),
        );
    }

    #[test]
    fn causal_lm_loss_ignores_masked_positions() {
        let (x, _) = inputs();
        let expected = -(log_p(ROWS[0], 0) + log_p(ROWS[2], 1)) / 2.0;
        close(value(&CausalLmLoss::default(), x, labels(&[0, -100, 1])), expected);
        let (x, _) = inputs();
        assert_eq!(value(&CausalLmLoss::default(), x, labels(&[-100, -100, -100])), 0.0);
    }

    #[test]
    fn loss_config_checks_keys_against_the_name() {
        let config: LossConfig = toml_like(r#"{"name": "bce", "label_smoothing": 0.1}"#);
        let error = config.validate("loss").unwrap_err();
        assert!(
            error.contains("loss.label_smoothing") && error.contains("cross-entropy"),
            "{error}"
        );
        let config: LossConfig =
            toml_like(r#"{"name": "focal", "focal_gamma": 1.5, "focal_alpha": 0.75}"#);
        config.validate("loss").unwrap();
        assert_eq!(config.num_outputs(), 2);
        assert_eq!(
            config.build(),
            ClassificationLoss::Focal(FocalLoss { gamma: 1.5, alpha: Some(0.75) })
        );
        let config: LossConfig = toml_like(r#"{"class_weights": [1.0]}"#);
        assert!(config.validate("loss").unwrap_err().contains("loss.class_weights"));
    }

    fn toml_like(json: &str) -> LossConfig {
        serde_json::from_str(json).unwrap()
    }
}
