//! The per-row cross-entropy of a causal LM's loss.

use burn::backend::Dispatch;
use burn::tensor::{Int, Tensor, activation};

use super::supported;
use crate::backend::FusedOps;

/// Per-row cross-entropy, `-log softmax(logits)[target]`, for logits `[rows, classes]` and class
/// ids `[rows]`; the output is `[rows]`.
///
/// On the CPU backends this is one tracked operation: the forward pass reads each row once for
/// its maximum and once for `sum(exp)`, and the backward pass writes
/// `dy * (softmax - onehot)` in one pass, with the vectorised `exp`. burn's `log_softmax`
/// (several passes over `[rows, classes]` forward and backward, libm's `expf`) and `gather`
/// elsewhere.
pub fn token_nll(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [rows, classes] = logits.dims();
    // Class ids travel as floats into the backend operation: exact below 2^24.
    if supported(&logits.device()) && targets.dims() == [rows] && classes < (1 << 24) {
        let targets = targets.float().into_dispatch();
        Tensor::from_dispatch(<Dispatch as FusedOps>::token_nll(logits.into_dispatch(), targets))
    } else {
        activation::log_softmax(logits, 1)
            .gather(1, targets.reshape([rows, 1]))
            .reshape([rows])
            .neg()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{close, cpu_devices};
    use burn::tensor::{Distribution, Int, Tensor, activation};

    #[test]
    fn token_nll_matches_log_softmax_and_gather() {
        for device in cpu_devices() {
            let device = &device.autodiff();
            let as_3d = |t: Tensor<1>| t.unsqueeze::<3>();
            let (rows, classes) = (7, 53);
            let logits =
                Tensor::<2>::random([rows, classes], Distribution::Normal(0.0, 3.0), device);
            let targets = Tensor::<1, Int>::from_ints([0, 52, 17, 3, 3, 40, 1], device);
            let row_weights = Tensor::<1>::random([rows], Distribution::Normal(0.0, 1.0), device);
            let (fl, bl) = (logits.clone().require_grad(), logits.require_grad());
            let fused_out = token_nll(fl.clone(), targets.clone());
            let burn_out = activation::log_softmax(bl.clone(), 1)
                .gather(1, targets.reshape([rows, 1]))
                .reshape([rows])
                .neg();
            close(as_3d(fused_out.clone()), as_3d(burn_out.clone()), 1e-5, "token_nll");
            let fused_grads = (fused_out * row_weights.clone()).sum().backward();
            let burn_grads = (burn_out * row_weights).sum().backward();
            let (flg, blg) = (fl.grad(&fused_grads).unwrap(), bl.grad(&burn_grads).unwrap());
            close(flg.unsqueeze(), blg.unsqueeze(), 1e-5, "token_nll grad");
        }
    }
}
