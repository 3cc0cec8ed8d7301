//! One AdamW update of a parameter.

use burn::backend::Dispatch;
use burn::tensor::Tensor;

use super::supported;
use crate::backend::FusedOps;

/// The hyperparameters of one AdamW step (decoupled weight decay, bias-corrected moments).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    pub lr: f64,
    pub beta_1: f64,
    pub beta_2: f64,
    pub epsilon: f64,
    pub weight_decay: f64,
    /// The step number, from 1.
    pub time: usize,
}

/// One AdamW update of `param` with `grad`, from the moments of the previous step (zeros
/// before the first): returns the new parameter, first moment and second moment. The
/// arithmetic is burn's `AdamW`'s: `m' = b1 m + (1 - b1) g`, `v' = b2 v + (1 - b2) g^2`,
/// `p' = p (1 - lr wd) - lr (m' / (1 - b1^t)) / (sqrt(v' / (1 - b2^t)) + eps)`.
///
/// On the CPU backends this is one pass over the four inputs writing the three outputs into
/// one buffer (they come back as views of it); burn's `AdamW` makes about a dozen passes,
/// each with its own output. Elsewhere, the same formula in tensor operations.
pub fn adamw_update<const D: usize>(
    param: Tensor<D>,
    grad: Tensor<D>,
    moments: Option<(Tensor<D>, Tensor<D>)>,
    step: &AdamWStep,
) -> (Tensor<D>, Tensor<D>, Tensor<D>) {
    let dims = param.dims();
    let (moment_1, moment_2) = moments.unwrap_or_else(|| (param.zeros_like(), param.zeros_like()));
    let correction_1 = 1.0 - step.beta_1.powi(step.time as i32);
    let correction_2 = 1.0 - step.beta_2.powi(step.time as i32);
    let fits = grad.dims() == dims && moment_1.dims() == dims && moment_2.dims() == dims;
    if !(supported(&param.device()) && fits) {
        let moment_1 =
            moment_1.mul_scalar(step.beta_1) + grad.clone().mul_scalar(1.0 - step.beta_1);
        let moment_2 =
            moment_2.mul_scalar(step.beta_2) + grad.square().mul_scalar(1.0 - step.beta_2);
        let denominator = moment_2.clone().div_scalar(correction_2).sqrt().add_scalar(step.epsilon);
        let delta = moment_1.clone().div_scalar(correction_1) / denominator;
        let param = param.mul_scalar(1.0 - step.lr * step.weight_decay) - delta.mul_scalar(step.lr);
        return (param, moment_1, moment_2);
    }
    let packed = <Dispatch as FusedOps>::adamw_packed(
        param.into_dispatch(),
        grad.into_dispatch(),
        moment_1.into_dispatch(),
        moment_2.into_dispatch(),
        step.lr,
        step.beta_1,
        step.beta_2,
        step.epsilon,
        step.weight_decay,
        correction_1,
        correction_2,
    );
    let packed = Tensor::<2>::from_dispatch(packed); // [3, n]
    let row = |i: usize| packed.clone().narrow(0, i, 1).reshape(dims);
    (row(0), row(1), row(2))
}
