//! Fused operations with hand-written backward passes: softmax over the last axis, SwiGLU, GELU,
//! RMSNorm, LayerNorm, the rotary embedding and attention.
//!
//! Under autodiff, burn builds `softmax` from four tracked operations (subtract the detached
//! max, exp, sum, divide), `silu(gate) * up` from three (sigmoid, two products), RMSNorm from
//! seven and LayerNorm (its backend default, which autodiff does not override) from nine; their
//! backward passes recompute `exp` and `sigmoid` and make one pass over memory per
//! operation. Here each is one tracked operation whose backward is written out:
//!
//! - softmax: `p = softmax(x)`, `dx = p * (dy - sum(dy * p))`, from the saved `p`;
//! - SwiGLU: `y = silu(g) * u`, `du = dy * silu(g)`, `dg = dy * u * s * (1 + g * (1 - s))`
//!   with `s = sigmoid(g)`, from the saved `g` and `u`;
//! - GELU (erf form): `y = x * Phi(x)`, `dx = dy * (Phi(x) + x * phi(x))`, from the saved `x`;
//! - rotary embedding: `y = x cos + [-x2, x1] sin`, `dx = dy cos + [dy2 sin2, -dy1 sin1]`;
//! - RMSNorm: `y = x * r * w` with `r = 1 / sqrt(mean(x^2) + eps)`,
//!   `dx = r * (w * dy - x * r^2 * mean(w * dy * x))`, `dw = sum over rows of dy * x * r`;
//! - LayerNorm: `y = xhat * gamma + beta` with `xhat = (x - mean(x)) * r`, `r = 1 / sqrt(var(x) + eps)`,
//!   `dx = r * (gamma dy - mean(gamma dy) - xhat * mean(gamma dy * xhat))`,
//!   `dgamma = sum over rows of dy * xhat`, `dbeta = sum over rows of dy`;
//! - attention with dropout on the probabilities: `y = (P m) v` with `P = softmax(q k^T s + b)`
//!   and the dropout mask `m`, `dv = (P m)^T dy`, `dS = P (dP - rowsum(dP P))` with
//!   `dP = (dy v^T) m`, `dq = s dS k`, `dk = s dS^T q`; `P` and `m` are computed again in the
//!   backward pass rather than kept.
//!
//! On the flex backend, f32 tensors take single-pass kernels (one read of each input, one write
//! of each output, rows in parallel, polynomial `exp` and `erf` in straight-line code); other
//! backends and dtypes compose the same formulas from the backend's own operations. The fused
//! path is used on the CPU backends compiled into this crate (features `flex`, `ndarray`); the
//! public functions fall back to burn's composed operations elsewhere, where burn's own fusion
//! does this work.
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use papertune_models::fused;
//!
//! let x = Tensor::<2>::from_floats([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], &Device::default());
//! let p = fused::softmax_last(x);
//! let sums: Vec<f32> = p.sum_dim(1).into_data().try_to_vec::<f32>().unwrap();
//! assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-6));
//! ```

// burn 0.22 marks its ndarray backend deprecated; papertune still supports and tests it.
#![allow(deprecated)]
// Without a CPU backend feature the extension macro routes nothing, and the scalar arguments of
// its generated Dispatch methods and the backend match go unused.
#![cfg_attr(not(any(feature = "flex", feature = "ndarray")), allow(unused_variables, unused_imports))]

use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, DispatchDevice, TensorMetadata, backend_extension};
use burn::tensor::{DType, Device, FloatDType, Int, Tensor, activation};

/// Softmax over the last axis, SwiGLU, GELU, RMSNorm, LayerNorm and the rotary embedding, with
/// their backward passes, as backend operations.
#[backend_extension(Flex: cfg(feature = "flex"), NdArray: cfg(feature = "ndarray"), Autodiff)]
pub trait FusedOps: Backend {
    /// `softmax(x)` over the last axis.
    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let last = x.shape().num_dims() - 1;
        Self::softmax(x, last)
    }

    /// `dx = p * (dy - sum(dy * p))` over the last axis, from `p = softmax(x)`.
    fn softmax_last_backward(probs: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        softmax_backward_composed::<Self>(probs, grad)
    }

    /// `silu(gate) * up`.
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        swiglu_composed::<Self>(gate, up)
    }

    /// The gradient of `silu(gate) * up` with respect to `gate`.
    fn swiglu_backward_gate(gate: FloatTensor<Self>, up: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        swiglu_backward_gate_composed::<Self>(gate, up, grad)
    }

    /// The gradient of `silu(gate) * up` with respect to `up`.
    fn swiglu_backward_up(gate: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        swiglu_backward_up_composed::<Self>(gate, grad)
    }

    /// GELU in its exact form, `x * Phi(x)`.
    fn gelu_erf(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::gelu(x)
    }

    /// The gradient of [`FusedOps::gelu_erf`]: `dy * (Phi(x) + x * phi(x))`.
    fn gelu_erf_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        // Written out rather than `gelu_backward`, whose default is the tanh form's derivative.
        let cdf = Self::float_mul_scalar(
            Self::float_add_scalar(Self::float_erf(Self::float_mul_scalar(x.clone(), std::f64::consts::FRAC_1_SQRT_2.into())), 1.0.into()),
            0.5.into(),
        );
        let pdf = Self::float_mul_scalar(
            Self::float_exp(Self::float_mul_scalar(Self::float_mul(x.clone(), x.clone()), (-0.5).into())),
            (1.0 / (2.0 * std::f64::consts::PI).sqrt()).into(),
        );
        Self::float_mul(grad, Self::float_add(cdf, Self::float_mul(x, pdf)))
    }

    /// GELU (erf form) of `x + bias` for `x [rows, d]` and `bias [d]` added to every row: a
    /// feed-forward layer's activation applied to its product before the bias.
    fn bias_gelu(x: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::gelu_erf(add_row_bias::<Self>(x, bias))
    }

    /// The gradient of [`FusedOps::bias_gelu`] with respect to `x`,
    /// `dy * (Phi(x + bias) + (x + bias) * phi(x + bias))`; summed over rows, that of `bias`.
    fn bias_gelu_backward(x: FloatTensor<Self>, bias: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::gelu_erf_backward(add_row_bias::<Self>(x, bias), grad)
    }

    /// RMSNorm over the last axis: `x * r * w`, `r = 1 / sqrt(mean(x^2) + eps)`, `w` of shape `[d]`.
    fn rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        rms_norm_composed::<Self>(x, weight, eps)
    }

    /// The gradient of [`FusedOps::rms_norm`] with respect to `x`:
    /// `r * (w * dy - x * r^2 * mean(w * dy * x))`.
    fn rms_norm_backward_x(x: FloatTensor<Self>, weight: FloatTensor<Self>, grad: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        rms_norm_backward_x_composed::<Self>(x, weight, grad, eps)
    }

    /// The gradient of [`FusedOps::rms_norm`] with respect to `w`: `dy * x * r` summed over rows, `[d]`.
    fn rms_norm_backward_weight(x: FloatTensor<Self>, grad: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        rms_norm_backward_weight_composed::<Self>(x, grad, eps)
    }

    /// LayerNorm over the last axis: `xhat * gamma + beta` with `xhat = (x - mean(x)) * r`,
    /// `r = 1 / sqrt(var(x) + eps)`; `gamma`, `beta` of shape `[d]`.
    fn layer_norm_affine(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        <Self as burn::backend::ops::ModuleOps<Self>>::layer_norm(x, gamma, Some(beta), eps)
    }

    /// LayerNorm of `x + bias + residual`, for `x`, `residual [rows, d]` and `bias`, `gamma`,
    /// `beta [d]`: the end of a BERT block (its output product before the bias, the residual
    /// connection, the normalisation).
    #[allow(clippy::too_many_arguments)]
    fn bias_residual_layer_norm(
        x: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        bias_residual_layer_norm_composed::<Self>(x, bias, residual, gamma, beta, eps)
    }

    /// The gradient of [`FusedOps::layer_norm_affine`] with respect to `x`:
    /// `r * (gamma dy - mean(gamma dy) - xhat * mean(gamma dy * xhat))`.
    fn layer_norm_backward_x(x: FloatTensor<Self>, gamma: FloatTensor<Self>, grad: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        layer_norm_backward_x_composed::<Self>(x, gamma, grad, eps)
    }

    /// The gradient of [`FusedOps::layer_norm_affine`] with respect to `gamma`: `dy * xhat`
    /// summed over rows, `[d]`. (The gradient of `beta` is `dy` summed over rows.)
    fn layer_norm_backward_gamma(x: FloatTensor<Self>, grad: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        layer_norm_backward_gamma_composed::<Self>(x, grad, eps)
    }

    /// Attention without a backward pass (inference): `softmax(q k^T * scale + bias) v` per head,
    /// for `q [batch, seq_q, heads, d]`, `k`, `v [batch, seq_k, heads, d]` (the layout the
    /// projections produce, before any transpose) and a per-key `bias [batch, seq_k]` (the
    /// padding mask); the output is `[batch, seq_q, heads, d]`.
    fn attention_key_bias(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, bias: FloatTensor<Self>, scale: f64) -> FloatTensor<Self> {
        attention_key_bias_composed::<Self>(q, k, v, bias, scale)
    }

    /// Attention for training, with dropout on the probabilities:
    /// `(softmax(q k^T * scale + bias) * mask) v` per head, in the layout of
    /// [`FusedOps::attention_key_bias`]. The mask is the one [`crate::dropout`] draws from `seed`
    /// for `keep` (each element `1 / keep` with probability `keep`, else 0), laid out
    /// `[batch, heads, seq_q, seq_k]`; `keep = 1` applies none.
    #[allow(clippy::too_many_arguments)]
    fn attention_dropout(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
        keep: f64,
        seed: u64,
    ) -> FloatTensor<Self> {
        attention_dropout_composed::<Self>(q, k, v, bias, scale, keep, seed)
    }

    /// The gradients of [`FusedOps::attention_dropout`] with respect to `q`, `k` and `v`, from
    /// the output's gradient `grad [batch, seq_q, heads, d]`. The probabilities are computed
    /// again from `q` and `k`, and the mask drawn again from `seed`, rather than stored.
    #[allow(clippy::too_many_arguments)]
    fn attention_dropout_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        scale: f64,
        keep: f64,
        seed: u64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        attention_dropout_backward_composed::<Self>(q, k, v, bias, grad, scale, keep, seed)
    }

    /// Rotary embedding, `x cos + rotate_half(x) sin`, for `x [batch, heads, seq, d]` and
    /// `cos`, `sin` of `[batch, 1, seq, d]`; `rotate_half(x) = [-x2, x1]` for halves `x1`, `x2`.
    fn rotary(x: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>) -> FloatTensor<Self> {
        rotary_composed::<Self>(x, cos, sin)
    }

    /// The gradient of [`FusedOps::rotary`] with respect to `x`: `dy cos + [dy2 s2, -dy1 s1]`
    /// with `s = sin`.
    fn rotary_backward(grad: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>) -> FloatTensor<Self> {
        rotary_backward_composed::<Self>(grad, cos, sin)
    }

    /// A linear layer without bias, `x weight`, for `x [rows, d_in]` and `weight [d_in, d_out]`;
    /// the output is `[rows, d_out]`. Its backward pass is this product on transposed views:
    /// `dx = dy weight^T`, `dweight = x^T dy`.
    fn linear_layer(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        matmul_composed::<Self>(x, weight)
    }

    /// A linear layer, `x weight + bias`, with `bias [d_out]`.
    fn linear_layer_bias(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        linear_bias_composed::<Self>(x, weight, bias)
    }

    /// Batched matrix product of `a [b0, b1, m, k]` and `b [b0, b1, k, n]` (no broadcasting),
    /// `[b0, b1, m, n]`.
    fn batched_matmul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        matmul_composed::<Self>(a, b)
    }

    /// One AdamW update of a parameter of `n` values, returned packed as `[3, n]`: the new
    /// parameter, first moment and second moment. `m' = b1 m + (1 - b1) g`,
    /// `v' = b2 v + (1 - b2) g^2`, `p' = p (1 - lr wd) - lr (m' / c1) / (sqrt(v' / c2) + eps)`,
    /// with the bias corrections `c1 = 1 - b1^t`, `c2 = 1 - b2^t` of step `t`.
    #[allow(clippy::too_many_arguments)]
    fn adamw_packed(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        lr: f64,
        beta_1: f64,
        beta_2: f64,
        epsilon: f64,
        weight_decay: f64,
        correction_1: f64,
        correction_2: f64,
    ) -> FloatTensor<Self> {
        adamw_packed_composed::<Self>(param, grad, moment_1, moment_2, lr, beta_1, beta_2, epsilon, weight_decay, correction_1, correction_2)
    }

    /// Per-row negative log-likelihood of a target class, `logsumexp(x_r) - x_r[t_r]`, for
    /// logits `[rows, classes]` and targets `[rows]` given as float class ids (exact up to
    /// 2^24); the output is `[rows]`.
    fn token_nll(logits: FloatTensor<Self>, targets: FloatTensor<Self>) -> FloatTensor<Self> {
        token_nll_composed::<Self>(logits, targets)
    }

    /// The gradient of [`FusedOps::token_nll`] with respect to the logits:
    /// `dy_r * (softmax(x_r) - onehot(t_r))`, `[rows, classes]`.
    fn token_nll_backward(logits: FloatTensor<Self>, targets: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        token_nll_backward_composed::<Self>(logits, targets, grad)
    }
}

#[cfg(feature = "ndarray")]
impl FusedOps for burn::backend::NdArray {}

impl<B: FusedOps, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        // The backward pass needs the probabilities: keep the output.
        tracked_unary::<B, C>(x, B::softmax_last, B::softmax_last_backward, Saved::Output)
    }

    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        tracked_binary::<B, C>(gate, up, B::swiglu, swiglu_grads::<B>)
    }

    fn gelu_erf(x: FloatTensor<Self>) -> FloatTensor<Self> {
        tracked_unary::<B, C>(x, B::gelu_erf, B::gelu_erf_backward, Saved::Input)
    }

    fn bias_gelu(x: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        tracked_binary::<B, C>(x, bias, B::bias_gelu, bias_gelu_grads::<B>)
    }

    fn rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct RmsNorm;

        impl<B: FusedOps> Backward<B, 2> for RmsNorm {
            type State = (FloatTensor<B>, FloatTensor<B>, f64); // x, weight, eps

            fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
                let [x_node, weight_node] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (x, weight, eps) = ops.state;
                if let Some(node) = weight_node {
                    grads.register::<B>(node.id, B::rms_norm_backward_weight(x.clone(), grad.clone(), eps));
                }
                if let Some(node) = x_node {
                    grads.register::<B>(node.id, B::rms_norm_backward_x(x, weight, grad, eps));
                }
            }
        }

        match RmsNorm.prepare::<C>([x.node(), weight.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (x, weight) = (x.into_primitive(), weight.into_primitive());
                let output = B::rms_norm(x.clone(), weight.clone(), eps);
                prep.finish((x, weight, eps), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::rms_norm(x.into_primitive(), weight.into_primitive(), eps)),
        }
    }

    fn layer_norm_affine(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct LayerNorm;

        impl<B: FusedOps> Backward<B, 3> for LayerNorm {
            type State = (FloatTensor<B>, FloatTensor<B>, f64); // x, gamma, eps

            fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
                let [x_node, gamma_node, beta_node] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (x, gamma, eps) = ops.state;
                if let Some(node) = beta_node {
                    grads.register::<B>(node.id, sum_over_rows::<B>(grad.clone()));
                }
                if let Some(node) = gamma_node {
                    grads.register::<B>(node.id, B::layer_norm_backward_gamma(x.clone(), grad.clone(), eps));
                }
                if let Some(node) = x_node {
                    grads.register::<B>(node.id, B::layer_norm_backward_x(x, gamma, grad, eps));
                }
            }
        }

        match LayerNorm.prepare::<C>([x.node(), gamma.node(), beta.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (x, gamma, beta) = (x.into_primitive(), gamma.into_primitive(), beta.into_primitive());
                let output = B::layer_norm_affine(x.clone(), gamma.clone(), beta, eps);
                prep.finish((x, gamma, eps), output)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::layer_norm_affine(x.into_primitive(), gamma.into_primitive(), beta.into_primitive(), eps))
            }
        }
    }

    fn rotary(x: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct Rotary;

        impl<B: FusedOps> Backward<B, 1> for Rotary {
            type State = (FloatTensor<B>, FloatTensor<B>); // cos, sin

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
                let [parent] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                if let Some(parent) = parent {
                    let (cos, sin) = ops.state;
                    grads.register::<B>(parent.id, B::rotary_backward(grad, cos, sin));
                }
            }
        }

        // cos and sin are constants of the pass (built from positions), not tracked inputs.
        let (cos, sin) = (cos.into_primitive(), sin.into_primitive());
        match Rotary.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let output = B::rotary(x.into_primitive(), cos.clone(), sin.clone());
                prep.finish((cos, sin), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::rotary(x.into_primitive(), cos, sin)),
        }
    }

    fn attention_dropout(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
        keep: f64,
        seed: u64,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct AttentionDropout {
            scale: f64,
            keep: f64,
            seed: u64,
        }

        impl<B: FusedOps> Backward<B, 3> for AttentionDropout {
            type State = [FloatTensor<B>; 4]; // q, k, v, bias

            fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
                let grad = grads.consume::<B>(&ops.node);
                let [q, k, v, bias] = ops.state;
                let (dq, dk, dv) = B::attention_dropout_backward(q, k, v, bias, grad, self.scale, self.keep, self.seed);
                for (parent, grad) in ops.parents.into_iter().zip([dq, dk, dv]) {
                    if let Some(parent) = parent {
                        grads.register::<B>(parent.id, grad);
                    }
                }
            }
        }

        // The bias is the padding mask: data, not a tracked input.
        let bias = bias.into_primitive();
        let op = AttentionDropout { scale, keep, seed };
        match op.prepare::<C>([q.node(), k.node(), v.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (q, k, v) = (q.into_primitive(), k.into_primitive(), v.into_primitive());
                let output = B::attention_dropout(q.clone(), k.clone(), v.clone(), bias.clone(), scale, keep, seed);
                prep.finish([q, k, v, bias], output)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::attention_dropout(q.into_primitive(), k.into_primitive(), v.into_primitive(), bias, scale, keep, seed))
            }
        }
    }

    fn linear_layer(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        tracked_product::<B, C>(x, weight, B::linear_layer)
    }

    fn linear_layer_bias(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct LinearBias;

        impl<B: FusedOps> Backward<B, 3> for LinearBias {
            type State = ProductSaved<B>;

            fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
                let [x_node, weight_node, bias_node] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                if let Some(node) = bias_node {
                    grads.register::<B>(node.id, sum_over_rows::<B>(grad.clone()));
                }
                ops.state.register_grads([x_node, weight_node].map(|n| n.map(|n| n.id)), grad, grads, B::linear_layer);
            }
        }

        let tracked = [x.is_tracked(), weight.is_tracked()];
        match LinearBias.prepare::<C>([x.node(), weight.node(), bias.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (x, weight) = (x.into_primitive(), weight.into_primitive());
                prep.finish(ProductSaved::new(&x, &weight, tracked), B::linear_layer_bias(x, weight, bias.into_primitive()))
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::linear_layer_bias(x.into_primitive(), weight.into_primitive(), bias.into_primitive()))
            }
        }
    }

    fn batched_matmul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        tracked_product::<B, C>(a, b, B::batched_matmul)
    }

    fn token_nll(logits: FloatTensor<Self>, targets: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct TokenNll;

        impl<B: FusedOps> Backward<B, 1> for TokenNll {
            type State = (FloatTensor<B>, FloatTensor<B>); // logits, targets

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
                let [parent] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                if let Some(parent) = parent {
                    let (logits, targets) = ops.state;
                    grads.register::<B>(parent.id, B::token_nll_backward(logits, targets, grad));
                }
            }
        }

        // The targets are data, not a tracked input.
        let targets = targets.into_primitive();
        match TokenNll.prepare::<C>([logits.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let logits = logits.into_primitive();
                let output = B::token_nll(logits.clone(), targets.clone());
                prep.finish((logits, targets), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::token_nll(logits.into_primitive(), targets)),
        }
    }
}

/// What the backward pass of a product `lhs rhs` keeps: `lhs` when `rhs` needs a gradient,
/// `rhs` when `lhs` does.
#[derive(Debug, Clone)]
struct ProductSaved<B: Backend> {
    lhs: Option<FloatTensor<B>>,
    rhs: Option<FloatTensor<B>>,
}

impl<B: FusedOps> ProductSaved<B> {
    /// `tracked`: whether `lhs` and `rhs` need gradients.
    fn new(lhs: &FloatTensor<B>, rhs: &FloatTensor<B>, [lhs_tracked, rhs_tracked]: [bool; 2]) -> Self {
        Self { lhs: rhs_tracked.then(|| lhs.clone()), rhs: lhs_tracked.then(|| rhs.clone()) }
    }

    /// `dlhs = dy rhs^T` and `drhs = lhs^T dy` for the parents that are tracked, by `product`
    /// (the forward operation) on views transposed in their last two axes.
    fn register_grads(
        self,
        [lhs_node, rhs_node]: [Option<NodeId>; 2],
        grad: FloatTensor<B>,
        grads: &mut Gradients,
        product: fn(FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>,
    ) {
        if let (Some(node), Some(lhs)) = (rhs_node, self.lhs) {
            grads.register::<B>(node, product(B::float_transpose(lhs), grad.clone()));
        }
        if let (Some(node), Some(rhs)) = (lhs_node, self.rhs) {
            grads.register::<B>(node, product(grad, B::float_transpose(rhs)));
        }
    }
}

/// The backward step of a product `lhs rhs` that `product` computes (and computes again, on
/// transposed views, for the gradients).
#[derive(Debug)]
struct ProductBackward<B: Backend> {
    product: fn(FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>,
}

impl<B: FusedOps> Backward<B, 2> for ProductBackward<B> {
    type State = ProductSaved<B>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        ops.state.register_grads(ops.parents.map(|n| n.map(|n| n.id)), grad, grads, self.product);
    }
}

/// `product(lhs, rhs)` as one tracked operation.
fn tracked_product<B: FusedOps, C: CheckpointStrategy>(
    lhs: FloatTensor<Autodiff<B, C>>,
    rhs: FloatTensor<Autodiff<B, C>>,
    product: fn(FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>,
) -> FloatTensor<Autodiff<B, C>> {
    let tracked = [lhs.is_tracked(), rhs.is_tracked()];
    match (ProductBackward { product }).prepare::<C>([lhs.node(), rhs.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (lhs, rhs) = (lhs.into_primitive(), rhs.into_primitive());
            prep.finish(ProductSaved::new(&lhs, &rhs, tracked), product(lhs, rhs))
        }
        OpsKind::UnTracked(prep) => prep.finish(product(lhs.into_primitive(), rhs.into_primitive())),
    }
}

/// Which tensor a one-input operation keeps for its backward pass.
#[derive(Debug, Clone, Copy)]
enum Saved {
    Input,
    Output,
}

/// The backward step of a one-input operation: `backward(saved, dy)` gives `dx`.
#[derive(Debug)]
struct UnaryBackward<B: Backend> {
    backward: fn(FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>,
}

impl<B: Backend> Backward<B, 1> for UnaryBackward<B> {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(parent) = parent {
            grads.register::<B>(parent.id, (self.backward)(ops.state, grad));
        }
    }
}

/// `forward(x)` as one tracked operation whose gradient is `backward(saved, dy)`.
fn tracked_unary<B: FusedOps, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    forward: fn(FloatTensor<B>) -> FloatTensor<B>,
    backward: fn(FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>,
    saved: Saved,
) -> FloatTensor<Autodiff<B, C>> {
    match (UnaryBackward { backward }).prepare::<C>([x.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let x = x.into_primitive();
            let (state, output) = match saved {
                Saved::Input => (x.clone(), forward(x)),
                Saved::Output => {
                    let output = forward(x);
                    (output.clone(), output)
                }
            };
            prep.finish(state, output)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(x.into_primitive())),
    }
}

/// The gradients of a two-input operation's tracked inputs (`tracked`) from both inputs and `dy`.
type BinaryGrads<B> = fn(FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, [bool; 2]) -> [Option<FloatTensor<B>>; 2];

/// The backward step of a two-input operation that keeps both inputs.
#[derive(Debug)]
struct BinaryBackward<B: Backend> {
    grads: BinaryGrads<B>,
}

impl<B: Backend> Backward<B, 2> for BinaryBackward<B> {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (a, b) = ops.state;
        let tracked = ops.parents.each_ref().map(|parent| parent.is_some());
        for (parent, grad) in ops.parents.into_iter().zip((self.grads)(a, b, grad, tracked)) {
            if let (Some(parent), Some(grad)) = (parent, grad) {
                grads.register::<B>(parent.id, grad);
            }
        }
    }
}

/// `forward(a, b)` as one tracked operation that keeps both inputs for `grads`.
fn tracked_binary<B: FusedOps, C: CheckpointStrategy>(
    a: FloatTensor<Autodiff<B, C>>,
    b: FloatTensor<Autodiff<B, C>>,
    forward: fn(FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>,
    grads: BinaryGrads<B>,
) -> FloatTensor<Autodiff<B, C>> {
    match (BinaryBackward { grads }).prepare::<C>([a.node(), b.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (a, b) = (a.into_primitive(), b.into_primitive());
            let output = forward(a.clone(), b.clone());
            prep.finish((a, b), output)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(a.into_primitive(), b.into_primitive())),
    }
}

/// SwiGLU's gradients with respect to `gate` and `up`.
fn swiglu_grads<B: FusedOps>(gate: FloatTensor<B>, up: FloatTensor<B>, grad: FloatTensor<B>, [gate_tracked, up_tracked]: [bool; 2]) -> [Option<FloatTensor<B>>; 2] {
    let d_up = up_tracked.then(|| B::swiglu_backward_up(gate.clone(), grad.clone()));
    let d_gate = gate_tracked.then(|| B::swiglu_backward_gate(gate, up, grad));
    [d_gate, d_up]
}

/// `gelu(x + bias)`'s gradients with respect to `x` and `bias` (the first summed over rows).
fn bias_gelu_grads<B: FusedOps>(x: FloatTensor<B>, bias: FloatTensor<B>, grad: FloatTensor<B>, [x_tracked, bias_tracked]: [bool; 2]) -> [Option<FloatTensor<B>>; 2] {
    let d_pre = B::bias_gelu_backward(x, bias, grad); // the gradient of x + bias
    let d_bias = bias_tracked.then(|| sum_over_rows::<B>(d_pre.clone()));
    [x_tracked.then_some(d_pre), d_bias]
}

/// Whether the fused operations run on `device`: the CPU backends compiled into this crate.
pub fn supported(device: &Device) -> bool {
    match device.clone().inner().as_dispatch() {
        #[cfg(feature = "flex")]
        DispatchDevice::Flex(_) => true,
        #[cfg(feature = "ndarray")]
        DispatchDevice::NdArray(_) => true,
        _ => false,
    }
}

/// Softmax over the last axis: one tracked operation on the CPU backends, burn's `softmax`
/// elsewhere.
pub fn softmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if supported(&x.device()) {
        Tensor::from_dispatch(<burn::backend::Dispatch as FusedOps>::softmax_last(x.into_dispatch()))
    } else {
        activation::softmax(x, D - 1)
    }
}

/// `silu(gate) * up`: one tracked operation on the CPU backends, burn's operations elsewhere.
///
/// The fused path needs `gate` and `up` of the same shape (its backward does not reduce
/// broadcast gradients); other shapes take burn's operations.
pub fn swiglu<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    if supported(&gate.device()) && gate.dims() == up.dims() {
        Tensor::from_dispatch(<burn::backend::Dispatch as FusedOps>::swiglu(gate.into_dispatch(), up.into_dispatch()))
    } else {
        activation::silu(gate) * up
    }
}

/// GELU in its exact (erf) form: one tracked operation with a vectorised erf on the CPU
/// backends, burn's `gelu` elsewhere.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if supported(&x.device()) {
        Tensor::from_dispatch(<burn::backend::Dispatch as FusedOps>::gelu_erf(x.into_dispatch()))
    } else {
        activation::gelu(x)
    }
}

/// `gelu(x weight + bias)` (GELU in its erf form) for burn's [`Linear`](burn::nn::Linear) layer
/// on `x [.., d_in]`: the first half of a feed-forward block.
///
/// On the CPU backends the product is computed without its bias, and one tracked operation
/// adds the bias and applies GELU in a single pass (its backward pass, the gradient through
/// both); [`linear_layer`] would write the bias rows first for the product to read back, and
/// GELU would then read and write the result once more. Elsewhere, and for a layer without
/// bias, [`gelu`] of [`linear_layer`].
pub fn linear_gelu<const D: usize>(layer: &burn::nn::Linear, x: Tensor<D>) -> Tensor<D> {
    let [d_in, d_out] = layer.weight.dims();
    match &layer.bias {
        Some(bias) if supported(&x.device()) && x.dims()[D - 1] == d_in && bias.dims() == [d_out] => {
            let (product, dims) = product_rows(layer, x);
            let activated = <burn::backend::Dispatch as FusedOps>::bias_gelu(product.into_dispatch(), bias.val().into_dispatch());
            Tensor::<2>::from_dispatch(activated).reshape(dims)
        }
        _ => gelu(linear_layer(layer, x)),
    }
}

/// A linear layer's product without its bias, `x weight` for `x [.., d_in]`, as `[rows, d_out]`,
/// with the output's dims `[.., d_out]`: the start of the fused operations that add the bias
/// in their own pass.
fn product_rows<const D: usize>(layer: &burn::nn::Linear, x: Tensor<D>) -> (Tensor<2>, [usize; D]) {
    let product = linear(x, layer.weight.val(), None); // [.., d_out]
    let dims = product.dims();
    let rows = dims[..D - 1].iter().product::<usize>();
    (product.reshape([rows, dims[D - 1]]), dims)
}

/// The half-precision type of `x`, if it has one. The normalisations compute in f32 for these
/// and cast back, as Hugging Face's models do: squares of activations in the hundreds
/// overflow f16, and bf16's 8-bit mantissa would round the statistics.
fn half_precision<const D: usize>(x: &Tensor<D>) -> Option<FloatDType> {
    match x.dtype() {
        DType::F16 => Some(FloatDType::F16),
        DType::BF16 => Some(FloatDType::BF16),
        _ => None,
    }
}

/// RMSNorm over the last axis with weight `[d]`: one tracked operation on the CPU backends,
/// burn's operations elsewhere; in f32 for half-precision inputs.
pub fn rms_norm<const D: usize>(x: Tensor<D>, weight: Tensor<1>, eps: f64) -> Tensor<D> {
    if let Some(half) = half_precision(&x) {
        return rms_norm(x.cast(FloatDType::F32), weight.cast(FloatDType::F32), eps).cast(half);
    }
    if supported(&x.device()) && x.dims()[D - 1] == weight.dims()[0] {
        Tensor::from_dispatch(<burn::backend::Dispatch as FusedOps>::rms_norm(x.into_dispatch(), weight.into_dispatch(), eps))
    } else {
        let mean_square = x.clone().powi_scalar(2).mean_dim(D - 1); // [.., 1]
        x * mean_square.add_scalar(eps).sqrt().recip() * weight.unsqueeze()
    }
}

/// LayerNorm over the last axis with `gamma`, `beta` of shape `[d]`: one tracked operation
/// (flex's forward kernel, a written-out backward) on the CPU backends, burn's `layer_norm`
/// elsewhere; in f32 for half-precision inputs.
pub fn layer_norm<const D: usize>(x: Tensor<D>, gamma: Tensor<1>, beta: Tensor<1>, eps: f64) -> Tensor<D> {
    if let Some(half) = half_precision(&x) {
        let (gamma, beta) = (gamma.cast(FloatDType::F32), beta.cast(FloatDType::F32));
        return layer_norm(x.cast(FloatDType::F32), gamma, beta, eps).cast(half);
    }
    let d = x.dims()[D - 1];
    if supported(&x.device()) && gamma.dims() == [d] && beta.dims() == [d] {
        let (x, gamma, beta) = (x.into_dispatch(), gamma.into_dispatch(), beta.into_dispatch());
        Tensor::from_dispatch(<burn::backend::Dispatch as FusedOps>::layer_norm_affine(x, gamma, beta, eps))
    } else {
        burn::tensor::module::layer_norm(x, gamma, Some(beta), eps)
    }
}

/// `layer_norm(x weight + bias + residual)` for burn's [`Linear`](burn::nn::Linear) layer on
/// `x [.., d_in]` and `residual [.., d_out]`, with LayerNorm's `gamma`, `beta` `[d_out]`: the
/// end of a BERT block when no dropout acts between the product and the residual.
///
/// On the CPU backends the product is computed without its bias, then one pass per row adds
/// the bias and the residual and normalises: the bias rows are not written for the product to
/// read back, and the sum is not written out for LayerNorm to read again. Under autodiff the
/// same formula is composed from tracked operations. Elsewhere, and for a layer without bias,
/// [`linear_layer`], an addition and [`layer_norm`].
pub fn linear_residual_layer_norm<const D: usize>(
    layer: &burn::nn::Linear,
    x: Tensor<D>,
    residual: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> Tensor<D> {
    let [d_in, d_out] = layer.weight.dims();
    let out_dims = residual.dims();
    let fits = x.dims()[D - 1] == d_in && out_dims[D - 1] == d_out && gamma.dims() == [d_out] && beta.dims() == [d_out];
    match &layer.bias {
        Some(bias) if supported(&x.device()) && fits && bias.dims() == [d_out] && half_precision(&x).is_none() => {
            let (product, _) = product_rows(layer, x);
            let residual = residual.reshape(product.dims());
            let normalised = <burn::backend::Dispatch as FusedOps>::bias_residual_layer_norm(
                product.into_dispatch(),
                bias.val().into_dispatch(),
                residual.into_dispatch(),
                gamma.into_dispatch(),
                beta.into_dispatch(),
                eps,
            );
            Tensor::<2>::from_dispatch(normalised).reshape(out_dims)
        }
        _ => layer_norm(linear_layer(layer, x) + residual, gamma, beta, eps),
    }
}

/// Attention for inference, `softmax(q k^T * scale + bias) v` per head, with the tensors in the
/// layout the projections produce: `q [batch, seq_q, heads, d]`, `k`, `v [batch, seq_k, heads, d]`,
/// `bias [batch, seq_k]` added to every query's scores (0 for real tokens, a large negative
/// number for padding); returns `[batch, seq_q, heads, d]`.
///
/// On the CPU backends without autodiff this is papertune's kernel: per batch element and head,
/// the two products through gemm on strided views (no transposes) and the softmax in vectorised
/// passes. Elsewhere, burn's `attention` on transposed views.
pub fn attention_key_bias(query: Tensor<4>, key: Tensor<4>, value: Tensor<4>, bias: Tensor<2>, scale: f64) -> Tensor<4> {
    let [batch, seq_q, heads, d] = query.dims();
    let seq_k = key.dims()[1];
    let fits = key.dims() == [batch, seq_k, heads, d] && value.dims() == key.dims() && bias.dims() == [batch, seq_k];
    let device = query.device();
    if supported(&device) && !device.is_autodiff() && fits {
        let (q, k, v, bias) = (query.into_dispatch(), key.into_dispatch(), value.into_dispatch(), bias.into_dispatch());
        Tensor::from_dispatch(<burn::backend::Dispatch as FusedOps>::attention_key_bias(q, k, v, bias, scale))
    } else {
        let mask_bias = bias.reshape([batch, 1, 1, seq_k]).expand([batch, 1, seq_q, seq_k]); // shared by the heads
        let options = burn::tensor::ops::AttentionModuleOptions { scale: Some(scale), softcap: None, is_causal: false };
        let heads_first = |t: Tensor<4>| t.swap_dims(1, 2); // [batch, heads, seq, d]
        burn::tensor::module::attention(heads_first(query), heads_first(key), heads_first(value), None, Some(mask_bias), options)
            .swap_dims(1, 2)
    }
}

/// Attention for training, `(softmax(q k^T * scale + bias) * mask) v` per head, in the layout of
/// [`attention_key_bias`], with dropout of probability `dropout` on the attention
/// probabilities, its mask drawn from `seed` (as [`crate::dropout::Dropout::next_mask`] gives
/// it); `dropout = 0` applies none. Every tensor may be tracked but `bias`.
///
/// On the CPU backends this is one tracked operation: the forward pass is the inference kernel
/// with the mask drawn and applied per head in cache, and the backward pass computes the
/// probabilities and the mask again per head instead of keeping `[batch, heads, seq_q, seq_k]`
/// tensors from the forward pass, reading and writing `q`, `k`, `v` and their gradients in the
/// projections' layout (no transposes). Elsewhere, burn's operations on transposed views with
/// the same mask.
pub fn attention_dropout(query: Tensor<4>, key: Tensor<4>, value: Tensor<4>, bias: Tensor<2>, scale: f64, dropout: f64, seed: u64) -> Tensor<4> {
    assert!((0.0..1.0).contains(&dropout), "attention dropout probability must be in [0, 1), found {dropout}");
    let [batch, _, heads, d] = query.dims();
    let seq_k = key.dims()[1];
    let fits = key.dims() == [batch, seq_k, heads, d] && value.dims() == key.dims() && bias.dims() == [batch, seq_k];
    let keep = 1.0 - dropout;
    if supported(&query.device()) && fits && !bias.is_require_grad() {
        let (q, k, v, bias) = (query.into_dispatch(), key.into_dispatch(), value.into_dispatch(), bias.into_dispatch());
        return Tensor::from_dispatch(<burn::backend::Dispatch as FusedOps>::attention_dropout(q, k, v, bias, scale, keep, seed));
    }
    attention_dropout_unfused(query, key, value, bias, scale, keep, seed)
}

/// [`attention_dropout`] in burn's tensor operations (the path of the backends without
/// papertune's kernels, and the tests' reference): the same mask, drawn for the whole
/// `[batch, heads, seq_q, seq_k]` probabilities on the host.
fn attention_dropout_unfused(query: Tensor<4>, key: Tensor<4>, value: Tensor<4>, bias: Tensor<2>, scale: f64, keep: f64, seed: u64) -> Tensor<4> {
    let [batch, seq_q, heads, _] = query.dims();
    let seq_k = key.dims()[1];
    let device = query.device();
    let heads_first = |t: Tensor<4>| t.swap_dims(1, 2); // [batch, heads, seq, d]
    let scores = heads_first(query).matmul(heads_first(key).swap_dims(2, 3)).mul_scalar(scale) + bias.reshape([batch, 1, 1, seq_k]);
    let mut probs = activation::softmax(scores, 3); // [batch, heads, seq_q, seq_k]
    if keep < 1.0 {
        let shape = [batch, heads, seq_q, seq_k];
        let mask = crate::dropout::mask_values(shape.iter().product(), keep, seed);
        let mask = burn::tensor::TensorData::new(mask, shape).convert_dtype(probs.dtype());
        probs = probs * Tensor::<4>::from_data(mask, &device);
    }
    probs.matmul(heads_first(value)).swap_dims(1, 2)
}

/// Rotary embedding of `x [batch, heads, seq, d]` with `cos`, `sin` of `[batch, 1, seq, d]`
/// (constants: no gradient flows to them): one tracked operation on the CPU backends, burn's
/// operations elsewhere.
pub fn rotary(x: Tensor<4>, cos: Tensor<4>, sin: Tensor<4>) -> Tensor<4> {
    let [batch, _, seq, d] = x.dims();
    let tables_fit = cos.dims() == [batch, 1, seq, d] && sin.dims() == [batch, 1, seq, d] && d % 2 == 0;
    if supported(&x.device()) && tables_fit && !cos.is_require_grad() && !sin.is_require_grad() {
        Tensor::from_dispatch(<burn::backend::Dispatch as FusedOps>::rotary(x.into_dispatch(), cos.into_dispatch(), sin.into_dispatch()))
    } else {
        let half = d / 2;
        let first = x.clone().narrow(3, 0, half);
        let second = x.clone().narrow(3, half, half);
        let rotated = Tensor::cat(vec![second.neg(), first], 3);
        x * cos + rotated * sin
    }
}

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
        let moment_1 = moment_1.mul_scalar(step.beta_1) + grad.clone().mul_scalar(1.0 - step.beta_1);
        let moment_2 = moment_2.mul_scalar(step.beta_2) + grad.square().mul_scalar(1.0 - step.beta_2);
        let denominator = moment_2.clone().div_scalar(correction_2).sqrt().add_scalar(step.epsilon);
        let delta = moment_1.clone().div_scalar(correction_1) / denominator;
        let param = param.mul_scalar(1.0 - step.lr * step.weight_decay) - delta.mul_scalar(step.lr);
        return (param, moment_1, moment_2);
    }
    let packed = <burn::backend::Dispatch as FusedOps>::adamw_packed(
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
        Tensor::from_dispatch(<burn::backend::Dispatch as FusedOps>::token_nll(logits.into_dispatch(), targets))
    } else {
        activation::log_softmax(logits, 1).gather(1, targets.reshape([rows, 1])).reshape([rows]).neg()
    }
}

/// Batched matrix product `a b` of `a [b0, b1, m, k]` and `b [b0, b1, k, n]` (the same batch
/// axes, no broadcasting), `[b0, b1, m, n]`: the attention products.
///
/// On the CPU backends one tracked operation: each product is a gemm call on the operands'
/// own strides (a transposed key is read as it is, not copied), the products in parallel, the
/// output allocated once; the backward pass is the same operation on transposed views. burn's
/// `matmul` elsewhere.
pub fn batched_matmul(a: Tensor<4>, b: Tensor<4>) -> Tensor<4> {
    let ([b0, b1, _, k], [c0, c1, k2, _]) = (a.dims(), b.dims());
    if supported(&a.device()) && [b0, b1, k] == [c0, c1, k2] {
        Tensor::from_dispatch(<burn::backend::Dispatch as FusedOps>::batched_matmul(a.into_dispatch(), b.into_dispatch()))
    } else {
        a.matmul(b)
    }
}

/// burn's [`Linear`](burn::nn::Linear) layer on `x [.., d_in]`: [`linear`] with the layer's
/// weight and bias.
pub fn linear_layer<const D: usize>(layer: &burn::nn::Linear, x: Tensor<D>) -> Tensor<D> {
    linear(x, layer.weight.val(), layer.bias.as_ref().map(|b| b.val()))
}

/// `x weight + bias` for `x [.., d_in]`, `weight [d_in, d_out]` and `bias [d_out]`; the output
/// is `[.., d_out]`.
///
/// On the CPU backends this is one tracked operation that calls gemm directly: the bias rows
/// are the product's starting values, the output is allocated once, and the backward pass
/// computes `dx = dy weight^T` and `dweight = x^T dy` over all rows at once from strided views,
/// with no transposed copies. Elsewhere, burn's `linear`.
pub fn linear<const D: usize>(x: Tensor<D>, weight: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<D> {
    let dims = x.dims();
    let [d_in, d_out] = weight.dims();
    let bias_fits = bias.as_ref().is_none_or(|b| b.dims() == [d_out]);
    if !supported(&x.device()) || dims[D - 1] != d_in || !bias_fits {
        return burn::tensor::module::linear(x, weight, bias);
    }
    let rows = dims[..D - 1].iter().product::<usize>();
    let (x, weight) = (x.reshape([rows, d_in]).into_dispatch(), weight.into_dispatch());
    let output = match bias {
        Some(bias) => <burn::backend::Dispatch as FusedOps>::linear_layer_bias(x, weight, bias.into_dispatch()),
        None => <burn::backend::Dispatch as FusedOps>::linear_layer(x, weight),
    };
    let mut out_dims = dims;
    out_dims[D - 1] = d_out;
    Tensor::<2>::from_dispatch(output).reshape(out_dims) // [rows, d_out] -> [.., d_out]
}

#[cfg(feature = "flex")]
mod flex {
    //! Single-pass f32 kernels for the flex backend.

    use super::FusedOps;
    use crate::simd::{Width, vectorised};
    use burn::backend::Flex;
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{DType, TensorMetadata};
    use burn::tensor::Bytes;
    use burn_flex::{FlexTensor, Layout};
    use rayon::prelude::*;
    use std::mem::MaybeUninit;

    /// Elements per parallel task for element-wise kernels.
    const CHUNK: usize = 1 << 14;

    fn contiguous_f32(t: &FlexTensor) -> Option<FlexTensor> {
        (t.dtype() == DType::F32).then(|| t.to_contiguous())
    }

    fn output(values: Vec<f32>, like: &FlexTensor) -> FlexTensor {
        FlexTensor::new(Bytes::from_elems(values), Layout::contiguous(like.shape()), DType::F32)
    }

    impl FusedOps for Flex {
        fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
            let Some(x) = contiguous_f32(&x) else {
                let last = x.shape().num_dims() - 1;
                return <Flex as burn::backend::ops::ActivationOps<Flex>>::softmax(x, last);
            };
            let row = x.shape().as_slice().last().copied().unwrap_or(1).max(1);
            let xs: &[f32] = x.storage();
            let mut out = vec![0.0f32; xs.len()];
            let rows_per_task = (CHUNK / row).max(1);
            out.par_chunks_mut(rows_per_task * row).zip(xs.par_chunks(rows_per_task * row)).for_each(|(o, x)| widest(#[inline(always)] || {
                for (o, x) in o.chunks_mut(row).zip(x.chunks(row)) {
                    let max = max_lanes(x);
                    for (o, &x) in o.iter_mut().zip(x) {
                        *o = super::exp_approx(x - max);
                    }
                    let inv = 1.0 / sum_lanes(o);
                    o.iter_mut().for_each(|o| *o *= inv);
                }
            }));
            output(out, &x)
        }

        fn softmax_last_backward(probs: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
            let (Some(p), Some(g)) = (contiguous_f32(&probs), contiguous_f32(&grad)) else {
                return super::softmax_backward_composed::<Flex>(probs, grad);
            };
            if p.shape() != g.shape() {
                return super::softmax_backward_composed::<Flex>(probs, grad);
            }
            let row = p.shape().as_slice().last().copied().unwrap_or(1).max(1);
            let (ps, gs): (&[f32], &[f32]) = (p.storage(), g.storage());
            let mut out = vec![0.0f32; ps.len()];
            let rows_per_task = (CHUNK / row).max(1);
            out.par_chunks_mut(rows_per_task * row)
                .zip(ps.par_chunks(rows_per_task * row).zip(gs.par_chunks(rows_per_task * row)))
                .for_each(|(o, (p, g))| wide(#[inline(always)] || {
                    for ((o, p), g) in o.chunks_mut(row).zip(p.chunks(row)).zip(g.chunks(row)) {
                        let dot = dot_lanes(p, g);
                        for ((o, p), g) in o.iter_mut().zip(p).zip(g) {
                            *o = p * (g - dot);
                        }
                    }
                }));
            output(out, &p)
        }

        fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
            zip_f32(&gate, &up, #[inline(always)] |g, u| g * sigmoid(g) * u).unwrap_or_else(|| super::swiglu_composed::<Flex>(gate, up))
        }

        fn swiglu_backward_gate(gate: FloatTensor<Self>, up: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
            let (Some(g), Some(u), Some(d)) = (contiguous_f32(&gate), contiguous_f32(&up), contiguous_f32(&grad)) else {
                return super::swiglu_backward_gate_composed::<Flex>(gate, up, grad);
            };
            if g.shape() != u.shape() || g.shape() != d.shape() {
                return super::swiglu_backward_gate_composed::<Flex>(gate, up, grad);
            }
            let (gs, us, ds): (&[f32], &[f32], &[f32]) = (g.storage(), u.storage(), d.storage());
            let mut out = vec![0.0f32; gs.len()];
            out.par_chunks_mut(CHUNK)
                .zip(gs.par_chunks(CHUNK).zip(us.par_chunks(CHUNK).zip(ds.par_chunks(CHUNK))))
                .for_each(|(o, (g, (u, d)))| widest(#[inline(always)] || {
                    for (((o, &g), &u), &d) in o.iter_mut().zip(g).zip(u).zip(d) {
                        let s = sigmoid(g);
                        *o = d * u * s * (1.0 + g - g * s);
                    }
                }));
            output(out, &g)
        }

        fn rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
            let (Some(xc), Some(w)) = (contiguous_f32(&x), contiguous_f32(&weight)) else {
                return super::rms_norm_composed::<Flex>(x, weight, eps);
            };
            let d = w.shape().num_elements();
            if xc.shape().as_slice().last() != Some(&d) || d == 0 {
                return super::rms_norm_composed::<Flex>(x, weight, eps);
            }
            let (xs, ws): (&[f32], &[f32]) = (xc.storage(), w.storage());
            let mut out = vec![0.0f32; xs.len()];
            let rows_per_task = (CHUNK / d).max(1);
            out.par_chunks_mut(rows_per_task * d).zip(xs.par_chunks(rows_per_task * d)).for_each(|(o, x)| wide(#[inline(always)] || {
                for (o, x) in o.chunks_mut(d).zip(x.chunks(d)) {
                    let r = inv_rms(x, eps);
                    for ((o, &x), &w) in o.iter_mut().zip(x).zip(ws) {
                        *o = x * r * w;
                    }
                }
            }));
            output(out, &xc)
        }

        fn rms_norm_backward_x(x: FloatTensor<Self>, weight: FloatTensor<Self>, grad: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
            let dx = map_rows_weighted_f32(&x, &weight, &grad, #[inline(always)] |x, g, w, o| {
                let r = inv_rms(x, eps);
                // mean(w * dy * x): the weight folded into dy first.
                for ((o, &g), &w) in o.iter_mut().zip(g).zip(w) {
                    *o = g * w;
                }
                let coef = r * r * dot_lanes(o, x) / x.len() as f32;
                for (o, &x) in o.iter_mut().zip(x) {
                    *o = r * (*o - x * coef);
                }
            });
            dx.unwrap_or_else(|| super::rms_norm_backward_x_composed::<Flex>(x, weight, grad, eps))
        }

        fn rms_norm_backward_weight(x: FloatTensor<Self>, grad: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
            let summed = sum_rows_f32(&x, &grad, #[inline(always)] |x, g, sums| {
                let r = inv_rms(x, eps);
                for ((s, &x), &g) in sums.iter_mut().zip(x).zip(g) {
                    *s += g * x * r;
                }
            });
            summed.unwrap_or_else(|| super::rms_norm_backward_weight_composed::<Flex>(x, grad, eps))
        }

        // The forward pass is flex's own LayerNorm kernel (the trait's default).

        fn layer_norm_backward_x(x: FloatTensor<Self>, gamma: FloatTensor<Self>, grad: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
            let dx = map_rows_weighted_f32(&x, &gamma, &grad, #[inline(always)] |x, g, w, o| {
                let n = x.len() as f32;
                let (mean, r) = mean_inv_std(x, eps);
                // gamma dy into the output row first, then the two row means.
                for ((o, &g), &w) in o.iter_mut().zip(g).zip(w) {
                    *o = g * w;
                }
                let mean_scaled = sum_lanes(o) / n;
                let mean_with_xhat = r * dot_shifted(o, 0.0, x, mean) / n;
                for (o, &x) in o.iter_mut().zip(x) {
                    let xhat = (x - mean) * r;
                    *o = r * (*o - mean_scaled - xhat * mean_with_xhat);
                }
            });
            dx.unwrap_or_else(|| super::layer_norm_backward_x_composed::<Flex>(x, gamma, grad, eps))
        }

        fn layer_norm_backward_gamma(x: FloatTensor<Self>, grad: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
            let summed = sum_rows_f32(&x, &grad, #[inline(always)] |x, g, sums| {
                let (mean, r) = mean_inv_std(x, eps);
                for ((s, &x), &g) in sums.iter_mut().zip(x).zip(g) {
                    *s += g * (x - mean) * r;
                }
            });
            summed.unwrap_or_else(|| super::layer_norm_backward_gamma_composed::<Flex>(x, grad, eps))
        }

        fn adamw_packed(
            param: FloatTensor<Self>,
            grad: FloatTensor<Self>,
            moment_1: FloatTensor<Self>,
            moment_2: FloatTensor<Self>,
            lr: f64,
            beta_1: f64,
            beta_2: f64,
            epsilon: f64,
            weight_decay: f64,
            correction_1: f64,
            correction_2: f64,
        ) -> FloatTensor<Self> {
            let n = param.shape().num_elements();
            let (b1, b2, eps, wd, c1, c2) = (beta_1, beta_2, epsilon, weight_decay, correction_1, correction_2);
            let scalars = AdamWScalars {
                lr: lr as f32,
                beta_1: b1 as f32,
                beta_2: b2 as f32,
                epsilon: eps as f32,
                decay: (1.0 - lr * wd) as f32,
                inv_c1: (1.0 / c1) as f32,
                inv_c2: (1.0 / c2) as f32,
            };
            let packed = match (dense_f32(&param), dense_f32(&grad), dense_f32(&moment_1), dense_f32(&moment_2)) {
                (Some(p), Some(g), Some(m), Some(v)) if [p.len(), g.len(), m.len(), v.len()] == [n; 4] => {
                    Some(adamw_kernel([p, g, m, v], scalars))
                }
                _ => None,
            };
            packed.unwrap_or_else(|| super::adamw_packed_composed::<Flex>(param, grad, moment_1, moment_2, lr, b1, b2, eps, wd, c1, c2))
        }

        fn token_nll(logits: FloatTensor<Self>, targets: FloatTensor<Self>) -> FloatTensor<Self> {
            let Some((x, t, classes)) = logits_and_targets(&logits, &targets) else {
                return super::token_nll_composed::<Flex>(logits, targets);
            };
            let (xs, ts): (&[f32], &[f32]) = (x.storage(), t.storage());
            let nll: Vec<f32> = xs
                .par_chunks(classes)
                .zip(ts.par_iter())
                .map_init(
                    || vec![0.0f32; classes],
                    |scratch, (row, &target)| widest(#[inline(always)] || {
                        // logsumexp(row) - row[t] = log(sum(exp(row - max))) - (row[t] - max)
                        let (max, sum) = row_exp_sum(row, scratch);
                        sum.ln() - (row[class_index(target, classes)] - max)
                    }),
                )
                .collect();
            output(nll, &t)
        }

        fn token_nll_backward(logits: FloatTensor<Self>, targets: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
            let (Some((x, t, classes)), Some(g)) = (logits_and_targets(&logits, &targets), contiguous_f32(&grad)) else {
                return super::token_nll_backward_composed::<Flex>(logits, targets, grad);
            };
            let (xs, ts, gs): (&[f32], &[f32], &[f32]) = (x.storage(), t.storage(), g.storage());
            let mut out = vec![0.0f32; xs.len()];
            out.par_chunks_mut(classes).zip(xs.par_chunks(classes)).enumerate().for_each(|(r, (o, row))| widest(#[inline(always)] || {
                let dy = gs[r];
                let scale = dy / row_exp_sum(row, o).1; // o = dy * softmax(row) after the scaling
                o.iter_mut().for_each(|o| *o *= scale);
                o[class_index(ts[r], classes)] -= dy;
            }));
            output(out, &x)
        }

        fn batched_matmul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
            match (Matrices::of(&a), Matrices::of(&b)) {
                (Some(x), Some(y)) if x.batch == y.batch && x.matrix.cols == y.matrix.rows => x.times(&y),
                _ => super::matmul_composed::<Flex>(a, b),
            }
        }

        fn linear_layer(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
            match (Matrix::of(&x), Matrix::of(&weight)) {
                (Some(x), Some(w)) if x.cols == w.rows => x.times(w, None),
                _ => super::matmul_composed::<Flex>(x, weight),
            }
        }

        fn linear_layer_bias(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
            let bias_rows = contiguous_f32(&bias);
            let product = match (Matrix::of(&x), Matrix::of(&weight), &bias_rows) {
                (Some(x), Some(w), Some(b)) if x.cols == w.rows && b.shape().num_elements() == w.cols => {
                    Some(x.times(w, Some(b.storage())))
                }
                _ => None,
            };
            product.unwrap_or_else(|| super::linear_bias_composed::<Flex>(x, weight, bias))
        }

        fn attention_key_bias(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, bias: FloatTensor<Self>, scale: f64) -> FloatTensor<Self> {
            match attention_kernel(&q, &k, &v, &bias, scale as f32, None) {
                Some(out) => out,
                None => super::attention_key_bias_composed::<Flex>(q, k, v, bias, scale),
            }
        }

        fn attention_dropout(
            q: FloatTensor<Self>,
            k: FloatTensor<Self>,
            v: FloatTensor<Self>,
            bias: FloatTensor<Self>,
            scale: f64,
            keep: f64,
            seed: u64,
        ) -> FloatTensor<Self> {
            let mask = (keep < 1.0).then_some(MaskSeed { keep, seed });
            match attention_kernel(&q, &k, &v, &bias, scale as f32, mask) {
                Some(out) => out,
                None => super::attention_dropout_composed::<Flex>(q, k, v, bias, scale, keep, seed),
            }
        }

        fn attention_dropout_backward(
            q: FloatTensor<Self>,
            k: FloatTensor<Self>,
            v: FloatTensor<Self>,
            bias: FloatTensor<Self>,
            grad: FloatTensor<Self>,
            scale: f64,
            keep: f64,
            seed: u64,
        ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
            let mask = (keep < 1.0).then_some(MaskSeed { keep, seed });
            match attention_backward_kernel([&q, &k, &v, &bias, &grad], scale as f32, mask) {
                Some([dq, dk, dv]) => (dq, dk, dv),
                None => super::attention_dropout_backward_composed::<Flex>(q, k, v, bias, grad, scale, keep, seed),
            }
        }

        fn rotary(x: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>) -> FloatTensor<Self> {
            match rotary_kernel(&x, &cos, &sin, false) {
                Some(out) => out,
                None => super::rotary_composed::<Flex>(x, cos, sin),
            }
        }

        fn rotary_backward(grad: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>) -> FloatTensor<Self> {
            match rotary_kernel(&grad, &cos, &sin, true) {
                Some(out) => out,
                None => super::rotary_backward_composed::<Flex>(grad, cos, sin),
            }
        }

        fn gelu_erf(x: FloatTensor<Self>) -> FloatTensor<Self> {
            match contiguous_f32(&x) {
                Some(x) => map_f32(&x, gelu_value),
                None => <Flex as burn::backend::ops::ActivationOps<Flex>>::gelu(x),
            }
        }

        fn bias_gelu(x: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
            let out = rows_plus_bias_f32(&x, &bias, None, #[inline(always)] |pre, _| gelu_value(pre));
            out.unwrap_or_else(|| Self::gelu_erf(super::add_row_bias::<Flex>(x, bias)))
        }

        fn bias_gelu_backward(x: FloatTensor<Self>, bias: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
            let out = rows_plus_bias_f32(&x, &bias, Some(&grad), #[inline(always)] |pre, g| g * gelu_slope(pre));
            out.unwrap_or_else(|| Self::gelu_erf_backward(super::add_row_bias::<Flex>(x, bias), grad))
        }

        fn bias_residual_layer_norm(
            x: FloatTensor<Self>,
            bias: FloatTensor<Self>,
            residual: FloatTensor<Self>,
            gamma: FloatTensor<Self>,
            beta: FloatTensor<Self>,
            eps: f64,
        ) -> FloatTensor<Self> {
            match residual_layer_norm_kernel([&x, &bias, &residual, &gamma, &beta], eps) {
                Some(out) => out,
                None => super::bias_residual_layer_norm_composed::<Flex>(x, bias, residual, gamma, beta, eps),
            }
        }

        fn gelu_erf_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
            let dx = zip_f32(&x, &grad, #[inline(always)] |x, d| d * gelu_slope(x));
            dx.unwrap_or_else(|| <Flex as burn::backend::ops::ActivationOps<Flex>>::gelu_backward(x, grad))
        }

        fn swiglu_backward_up(gate: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
            zip_f32(&gate, &grad, #[inline(always)] |g, d| d * g * sigmoid(g)).unwrap_or_else(|| super::swiglu_backward_up_composed::<Flex>(gate, grad))
        }
    }

    /// GELU in its erf form, `x Phi(x)`.
    #[inline(always)]
    fn gelu_value(x: f32) -> f32 {
        0.5 * x * (1.0 + super::erf_approx(x * std::f32::consts::FRAC_1_SQRT_2))
    }

    /// The derivative of [`gelu_value`], `Phi(x) + x phi(x)`.
    #[inline(always)]
    fn gelu_slope(x: f32) -> f32 {
        // 1 / sqrt(2 pi)
        const INV_SQRT_2PI: f32 = 0.398_942_3;
        let cdf = 0.5 * (1.0 + super::erf_approx(x * std::f32::consts::FRAC_1_SQRT_2));
        let pdf = INV_SQRT_2PI * super::exp_approx(-0.5 * x * x);
        cdf + x * pdf
    }

    /// `f(x + bias, g)` element by element for `x [rows, d]` with `bias [d]` added to every row,
    /// and `g` the matching element of `other` (of `x`'s shape) or 0 without it; `None` when the
    /// shapes or dtypes do not fit. For kernels bound by arithmetic.
    fn rows_plus_bias_f32(
        x: &FlexTensor,
        bias: &FlexTensor,
        other: Option<&FlexTensor>,
        f: impl Fn(f32, f32) -> f32 + Sync,
    ) -> Option<FlexTensor> {
        let (x, bias) = (contiguous_f32(x)?, contiguous_f32(bias)?);
        let other = match other {
            Some(t) => Some(contiguous_f32(t)?),
            None => None,
        };
        if other.as_ref().is_some_and(|t| t.shape() != x.shape()) {
            return None;
        }
        let &[_, d] = x.shape().as_slice() else { return None };
        if bias.shape().as_slice() != [d] || d == 0 {
            return None;
        }
        let (xs, bs): (&[f32], &[f32]) = (x.storage(), bias.storage());
        let gs: Option<&[f32]> = other.as_ref().map(|t| t.storage());
        let chunk = (CHUNK / d).max(1) * d; // whole rows per task
        let out = written_in_chunks(xs.len(), chunk, Width::Widest, #[inline(always)] |start, o| {
            let end = start + o.len();
            let rows = o.chunks_exact_mut(d).zip(xs[start..end].chunks_exact(d));
            match gs {
                Some(gs) => {
                    for ((o, x), g) in rows.zip(gs[start..end].chunks_exact(d)) {
                        for (((o, &x), &b), &g) in o.iter_mut().zip(x).zip(bs).zip(g) {
                            o.write(f(x + b, g));
                        }
                    }
                }
                None => {
                    for (o, x) in rows {
                        for ((o, &x), &b) in o.iter_mut().zip(x).zip(bs) {
                            o.write(f(x + b, 0.0));
                        }
                    }
                }
            }
        });
        Some(output(out, &x))
    }

    /// [`FusedOps::bias_residual_layer_norm`] on `[x, bias, residual, gamma, beta]`: per row, the
    /// sum into a row buffer, its mean and spread, then the normalised row written once. `None`
    /// when the shapes or dtypes do not fit.
    fn residual_layer_norm_kernel(tensors: [&FlexTensor; 5], eps: f64) -> Option<FlexTensor> {
        let [x, bias, residual, gamma, beta] = tensors.map(contiguous_f32);
        let (x, bias, residual, gamma, beta) = (x?, bias?, residual?, gamma?, beta?);
        let &[_, d] = x.shape().as_slice() else { return None };
        let vector_fits = [&bias, &gamma, &beta].iter().all(|t| t.shape().as_slice() == [d]);
        if residual.shape() != x.shape() || !vector_fits || d == 0 {
            return None;
        }
        let [xs, bs, rs, gs, betas]: [&[f32]; 5] = [x.storage(), bias.storage(), residual.storage(), gamma.storage(), beta.storage()];
        let chunk = (CHUNK / d).max(1) * d; // whole rows per task
        let out = written_in_chunks(xs.len(), chunk, Width::Avx2, #[inline(always)] |start, o| {
            let end = start + o.len();
            let mut sum = vec![0.0f32; d];
            let rows = o.chunks_exact_mut(d).zip(xs[start..end].chunks_exact(d)).zip(rs[start..end].chunks_exact(d));
            for ((o, x), r) in rows {
                for (((s, &x), &b), &r) in sum.iter_mut().zip(x).zip(bs).zip(r) {
                    *s = x + b + r;
                }
                let (mean, inv_std) = mean_inv_std(&sum, eps);
                for (((o, &s), &g), &b) in o.iter_mut().zip(&sum).zip(gs).zip(betas) {
                    o.write((s - mean) * inv_std * g + b);
                }
            }
        });
        Some(output(out, &x))
    }

    /// One output element per input element, in parallel chunks.
    fn map_f32(x: &FlexTensor, f: impl Fn(f32) -> f32 + Sync) -> FlexTensor {
        let xs: &[f32] = x.storage();
        let out = written_in_chunks(xs.len(), CHUNK, Width::Widest, #[inline(always)] |start, o| {
            let end = start + o.len();
            for (o, &x) in o.iter_mut().zip(&xs[start..end]) {
                o.write(f(x));
            }
        });
        output(out, x)
    }

    /// Forward: `x c + [-x2, x1] s`; backward (`transposed`): `g c + [g2 s2, -g1 s1]`. Rows of
    /// `x [b, h, seq, d]` read their tables at `[b, 0, seq, :]`. `None` when the shapes or dtypes
    /// do not fit.
    fn rotary_kernel(x: &FlexTensor, cos: &FlexTensor, sin: &FlexTensor, transposed: bool) -> Option<FlexTensor> {
        let (x, cos, sin) = (contiguous_f32(x)?, contiguous_f32(cos)?, contiguous_f32(sin)?);
        let &[batch, heads, seq, d] = x.shape().as_slice() else { return None };
        if cos.shape().as_slice() != [batch, 1, seq, d] || sin.shape() != cos.shape() || d % 2 != 0 || d == 0 {
            return None;
        }
        let half = d / 2;
        let (xs, cs, ss): (&[f32], &[f32], &[f32]) = (x.storage(), cos.storage(), sin.storage());
        let mut out = vec![0.0f32; xs.len()];
        // One task per (batch, head): seq rows of d.
        out.par_chunks_mut(seq * d).zip(xs.par_chunks(seq * d)).enumerate().for_each(|(bh, (o, x))| wide(#[inline(always)] || {
            let b = bh / heads;
            let tables = b * seq * d..(b + 1) * seq * d;
            let (c, s) = (&cs[tables.clone()], &ss[tables]);
            for (((o, x), c), s) in o.chunks_mut(d).zip(x.chunks(d)).zip(c.chunks(d)).zip(s.chunks(d)) {
                let (x1, x2) = x.split_at(half);
                let (o1, o2) = o.split_at_mut(half);
                let (c1, c2) = c.split_at(half);
                let (s1, s2) = s.split_at(half);
                if transposed {
                    for i in 0..half {
                        o1[i] = x1[i] * c1[i] + x2[i] * s2[i];
                        o2[i] = x2[i] * c2[i] - x1[i] * s1[i];
                    }
                } else {
                    for i in 0..half {
                        o1[i] = x1[i] * c1[i] - x2[i] * s1[i];
                        o2[i] = x2[i] * c2[i] + x1[i] * s2[i];
                    }
                }
            }
        }));
        Some(output(out, &x))
    }

    /// For f32 `x` and `g` of the same shape `[.., d]` and `w` of `[d]`: a tensor of that shape
    /// whose rows `per_row(x_row, g_row, w, out_row)` writes, rows in parallel chunks; `None` for
    /// other dtypes or shapes.
    fn map_rows_weighted_f32(
        x: &FlexTensor,
        w: &FlexTensor,
        g: &FlexTensor,
        per_row: impl Fn(&[f32], &[f32], &[f32], &mut [f32]) + Sync,
    ) -> Option<FlexTensor> {
        let (x, w, g) = (contiguous_f32(x)?, contiguous_f32(w)?, contiguous_f32(g)?);
        let d = w.shape().num_elements();
        if x.shape().as_slice().last() != Some(&d) || x.shape() != g.shape() || d == 0 {
            return None;
        }
        let (xs, ws, gs): (&[f32], &[f32], &[f32]) = (x.storage(), w.storage(), g.storage());
        let mut out = vec![0.0f32; xs.len()];
        let chunk = (CHUNK / d).max(1) * d;
        out.par_chunks_mut(chunk).zip(xs.par_chunks(chunk).zip(gs.par_chunks(chunk))).for_each(|(o, (x, g))| wide(#[inline(always)] || {
            for ((o, x), g) in o.chunks_mut(d).zip(x.chunks(d)).zip(g.chunks(d)) {
                per_row(x, g, ws, o);
            }
        }));
        Some(output(out, &x))
    }

    /// `[d]`: for f32 `x` and `g` of the same shape `[.., d]`, the sum over rows of what
    /// `add_row(x_row, g_row, sums)` adds into `sums`; `None` for other dtypes or shapes. Chunks
    /// of rows are summed in parallel and their partial sums added in chunk order, so the result
    /// does not depend on the scheduling (a rayon `reduce` would add them in whatever tree the
    /// work stealing made).
    fn sum_rows_f32(x: &FlexTensor, g: &FlexTensor, add_row: impl Fn(&[f32], &[f32], &mut [f32]) + Sync) -> Option<FlexTensor> {
        let (x, g) = (contiguous_f32(x)?, contiguous_f32(g)?);
        let d = x.shape().as_slice().last().copied().unwrap_or(0);
        if x.shape() != g.shape() || d == 0 {
            return None;
        }
        let (xs, gs): (&[f32], &[f32]) = (x.storage(), g.storage());
        let chunk = (CHUNK / d).max(1) * d;
        let partials: Vec<Vec<f32>> = xs
            .par_chunks(chunk)
            .zip(gs.par_chunks(chunk))
            .map(|(x, g)| wide(#[inline(always)] || {
                let mut sums = vec![0.0f32; d];
                for (x, g) in x.chunks(d).zip(g.chunks(d)) {
                    add_row(x, g, &mut sums);
                }
                sums
            }))
            .collect();
        let mut total = vec![0.0f32; d];
        for partial in &partials {
            total.iter_mut().zip(partial).for_each(|(t, p)| *t += p);
        }
        Some(FlexTensor::new(Bytes::from_elems(total), Layout::contiguous(burn::tensor::Shape::new([d])), DType::F32))
    }

    /// `mean(x)` and `1 / sqrt(var(x) + eps)` of one row (two passes, so no cancellation).
    #[inline(always)]
    fn mean_inv_std(x: &[f32], eps: f64) -> (f32, f32) {
        let n = x.len() as f32;
        let mean = sum_lanes(x) / n;
        let var = dot_shifted(x, mean, x, mean) / n;
        (mean, 1.0 / (var + eps as f32).sqrt())
    }

    /// `sum((a - a_shift) * (x - x_shift))` in eight independent lanes.
    #[inline(always)]
    fn dot_shifted(a: &[f32], a_shift: f32, x: &[f32], x_shift: f32) -> f32 {
        let mut lanes = [0.0f32; 8];
        let (mut ca, mut cx) = (a.chunks_exact(8), x.chunks_exact(8));
        for (a, x) in (&mut ca).zip(&mut cx) {
            for ((lane, a), x) in lanes.iter_mut().zip(a).zip(x) {
                *lane += (a - a_shift) * (x - x_shift);
            }
        }
        let tail: f32 = ca.remainder().iter().zip(cx.remainder()).map(|(a, x)| (a - a_shift) * (x - x_shift)).sum();
        lanes.iter().sum::<f32>() + tail
    }

    /// The dropout mask of a training attention: the one [`crate::dropout`] draws from `seed`
    /// for `keep`, laid out `[batch, heads, seq_q, seq_k]`.
    #[derive(Clone, Copy)]
    struct MaskSeed {
        keep: f64,
        seed: u64,
    }

    /// The sizes of an attention's inputs but the batch: `q [batch, seq_q, heads, d]`,
    /// `k`, `v [batch, seq_k, heads, d]` and `bias [batch, seq_k]`.
    #[derive(Clone, Copy)]
    struct AttentionShape {
        seq_q: usize,
        seq_k: usize,
        heads: usize,
        d: usize,
    }

    impl AttentionShape {
        /// The sizes of contiguous f32 inputs that fit together and are not empty.
        fn of(q: &FlexTensor, k: &FlexTensor, v: &FlexTensor, bias: &FlexTensor) -> Option<Self> {
            let &[batch, seq_q, heads, d] = q.shape().as_slice() else { return None };
            let &[_, seq_k, _, _] = k.shape().as_slice() else { return None };
            if k.shape().as_slice() != [batch, seq_k, heads, d] || v.shape() != k.shape() || bias.shape().as_slice() != [batch, seq_k] {
                return None;
            }
            (batch * seq_q * seq_k * heads * d != 0).then_some(AttentionShape { seq_q, seq_k, heads, d })
        }

        /// Elements between consecutive positions of one head.
        fn row(self) -> usize {
            self.heads * self.d
        }

        /// Head `h` of one batch element's `rows` positions (`data` starts at its first), as a
        /// `[rows, d]` matrix.
        fn head(self, data: &[f32], rows: usize, h: usize) -> Matrix<'_> {
            Matrix::strided(&data[h * self.d..], rows, self.d, self.row(), 1)
        }

        /// Index of the first mask element of batch element `b`, head `h`.
        fn mask_start(self, b: usize, h: usize) -> usize {
            (b * self.heads + h) * self.seq_q * self.seq_k
        }
    }

    /// One head's probabilities `softmax(q_h k_h^T * scale + key_bias)` into `probs`
    /// (`[seq_q, seq_k]`): the scores from gemm on strided views, then the bias and the softmax
    /// in vectorised passes per row.
    #[inline(always)]
    fn head_probs(probs: &mut [f32], q_head: Matrix<'_>, k_head: Matrix<'_>, key_bias: &[f32], scale: f32) {
        let seq_k = k_head.rows;
        assert_eq!(probs.len(), q_head.rows * seq_k);
        // SAFETY: `probs` holds the seq_q * seq_k values written, rows seq_k apart.
        unsafe { q_head.product_into(k_head.transposed(), probs.as_mut_ptr(), seq_k, false, scale, gemm::Parallelism::None) };
        for s in probs.chunks_mut(seq_k) {
            s.iter_mut().zip(key_bias).for_each(|(s, b)| *s += b);
            let max = max_lanes(s);
            s.iter_mut().for_each(|s| *s = super::exp_approx(*s - max));
            let inv = 1.0 / sum_lanes(s);
            s.iter_mut().for_each(|s| *s *= inv);
        }
    }

    /// `(softmax(q k^T * scale + bias) * mask) v` per batch element and head, without
    /// transposes: per head the probabilities `[seq_q, seq_k]` ([`head_probs`]), the mask drawn
    /// for that block and applied in cache, then `P v` written by gemm straight into the output
    /// rows. `None` when the shapes or dtypes do not fit.
    fn attention_kernel(q: &FlexTensor, k: &FlexTensor, v: &FlexTensor, bias: &FlexTensor, scale: f32, mask: Option<MaskSeed>) -> Option<FlexTensor> {
        let (q, k, v, bias) = (contiguous_f32(q)?, contiguous_f32(k)?, contiguous_f32(v)?, contiguous_f32(bias)?);
        let shape = AttentionShape::of(&q, &k, &v, &bias)?;
        let AttentionShape { seq_q, seq_k, heads, d } = shape;
        let (qs, ks, vs, bs): (&[f32], &[f32], &[f32], &[f32]) = (q.storage(), k.storage(), v.storage(), bias.storage());
        let (row, block) = (shape.row(), seq_q * seq_k);
        let mut out = Vec::with_capacity(qs.len());
        out.spare_capacity_mut()[..qs.len()].par_chunks_mut(seq_q * row).enumerate().for_each_init(
            // The mask's block only when there is a mask.
            || (vec![0.0f32; block], vec![0.0f32; if mask.is_some() { block } else { 0 }]),
            |(probs, mask_block), (b, o)| widest(#[inline(always)] || {
                let (q_rows, kv_rows) = (&qs[b * seq_q * row..], b * seq_k * row);
                let (k_rows, v_rows) = (&ks[kv_rows..], &vs[kv_rows..]);
                let key_bias = &bs[b * seq_k..(b + 1) * seq_k];
                for h in 0..heads {
                    head_probs(probs, shape.head(q_rows, seq_q, h), shape.head(k_rows, seq_k, h), key_bias, scale);
                    if let Some(MaskSeed { keep, seed }) = mask {
                        crate::dropout::mask_range(mask_block, shape.mask_start(b, h), keep, seed);
                        probs.iter_mut().zip(mask_block.iter()).for_each(|(p, m)| *p *= m);
                    }
                    let probs = Matrix::strided(probs, seq_q, seq_k, seq_k, 1);
                    // SAFETY: `o` holds this batch element's seq_q * row outputs; head h's
                    // values (i, j) sit at i * row + h * d + j < seq_q * row. Every head writes
                    // its own columns, so once all have run each value is written.
                    unsafe {
                        let dst = o.as_mut_ptr().cast::<f32>().add(h * d);
                        probs.product_into(shape.head(v_rows, seq_k, h), dst, row, false, 1.0, gemm::Parallelism::None);
                    }
                }
            }),
        );
        // SAFETY: every value was written above.
        unsafe { out.set_len(qs.len()) };
        Some(output(out, &q))
    }

    /// The gradients of [`attention_kernel`] with respect to `q`, `k` and `v`, from the output's
    /// gradient `grad`, per batch element and head: the probabilities and the mask computed
    /// again, then `dv = (P m)^T dy`, `dP = (dy v^T) m`, `dS = P (dP - rowsum(dP P))` and
    /// `dq = scale dS k`, `dk = scale dS^T q`, each product written by gemm into the gradients'
    /// rows in the inputs' layout. `None` when the shapes or dtypes do not fit.
    fn attention_backward_kernel(tensors: [&FlexTensor; 5], scale: f32, mask: Option<MaskSeed>) -> Option<[FlexTensor; 3]> {
        let [q, k, v, bias, grad] = tensors.map(contiguous_f32);
        let (q, k, v, bias, grad) = (q?, k?, v?, bias?, grad?);
        let shape = AttentionShape::of(&q, &k, &v, &bias)?;
        if grad.shape() != q.shape() {
            return None;
        }
        let AttentionShape { seq_q, seq_k, heads, d } = shape;
        let [qs, ks, vs, bs, gs]: [&[f32]; 5] = [q.storage(), k.storage(), v.storage(), bias.storage(), grad.storage()];
        let (row, block) = (shape.row(), seq_q * seq_k);
        let (mut dq, mut dk, mut dv) = (Vec::with_capacity(qs.len()), Vec::with_capacity(ks.len()), Vec::with_capacity(ks.len()));
        let per_batch = dq.spare_capacity_mut()[..qs.len()]
            .par_chunks_mut(seq_q * row)
            .zip(dk.spare_capacity_mut()[..ks.len()].par_chunks_mut(seq_k * row))
            .zip(dv.spare_capacity_mut()[..ks.len()].par_chunks_mut(seq_k * row));
        per_batch.enumerate().for_each_init(
            || [(); 4].map(|_| vec![0.0f32; block]),
            |[probs, mask_block, dropped, d_scores], (b, ((dq, dk), dv))| widest(#[inline(always)] || {
                let (q_rows, g_rows, kv_rows) = (&qs[b * seq_q * row..], &gs[b * seq_q * row..], b * seq_k * row);
                let (k_rows, v_rows) = (&ks[kv_rows..], &vs[kv_rows..]);
                let key_bias = &bs[b * seq_k..(b + 1) * seq_k];
                let (dq, dk, dv) = [dq, dk, dv].map(|t| t.as_mut_ptr().cast::<f32>()).into();
                for h in 0..heads {
                    let (q_head, k_head, v_head) = (shape.head(q_rows, seq_q, h), shape.head(k_rows, seq_k, h), shape.head(v_rows, seq_k, h));
                    let g_head = shape.head(g_rows, seq_q, h);
                    head_probs(probs, q_head, k_head, key_bias, scale);
                    let dropped: &[f32] = match mask {
                        Some(MaskSeed { keep, seed }) => {
                            crate::dropout::mask_range(mask_block, shape.mask_start(b, h), keep, seed);
                            dropped.iter_mut().zip(probs.iter().zip(mask_block.iter())).for_each(|(o, (p, m))| *o = p * m);
                            dropped
                        }
                        None => probs,
                    };
                    let dropped = Matrix::strided(dropped, seq_q, seq_k, seq_k, 1);
                    // SAFETY (the four products): `d_scores` holds seq_q * seq_k values, rows
                    // seq_k apart; `dq` holds this batch element's seq_q * row values and `dk`,
                    // `dv` its seq_k * row, and head h writes (i, j) at i * row + h * d + j, inside
                    // them. Every head writes its own columns, so once all have run each value is
                    // written.
                    unsafe {
                        dropped.transposed().product_into(g_head, dv.add(h * d), row, false, 1.0, gemm::Parallelism::None);
                        g_head.product_into(v_head.transposed(), d_scores.as_mut_ptr(), seq_k, false, 1.0, gemm::Parallelism::None);
                    }
                    let rows = d_scores.chunks_mut(seq_k).zip(probs.chunks(seq_k)).zip(mask_block.chunks(seq_k));
                    for ((g, p), m) in rows {
                        if mask.is_some() {
                            g.iter_mut().zip(m).for_each(|(g, m)| *g *= m);
                        }
                        let dot = dot_lanes(g, p);
                        g.iter_mut().zip(p).for_each(|(g, &p)| *g = p * (*g - dot));
                    }
                    let d_scores = Matrix::strided(d_scores, seq_q, seq_k, seq_k, 1);
                    unsafe {
                        d_scores.product_into(k_head, dq.add(h * d), row, false, scale, gemm::Parallelism::None);
                        d_scores.transposed().product_into(q_head, dk.add(h * d), row, false, scale, gemm::Parallelism::None);
                    }
                }
            }),
        );
        // SAFETY: every value was written above.
        unsafe {
            dq.set_len(qs.len());
            dk.set_len(ks.len());
            dv.set_len(ks.len());
        }
        Some([output(dq, &q), output(dk, &k), output(dv, &k)])
    }

    /// AdamW's scalars in the form the kernel uses them.
    #[derive(Clone, Copy)]
    struct AdamWScalars {
        lr: f32,
        beta_1: f32,
        beta_2: f32,
        epsilon: f32,
        /// `1 - lr * weight_decay`
        decay: f32,
        /// `1 / (1 - b1^t)`, `1 / (1 - b2^t)`
        inv_c1: f32,
        inv_c2: f32,
    }

    /// [`FusedOps::adamw_packed`] on the values of parameter, gradient and moments (`n` each):
    /// one pass writing `[3, n]`, rows new parameter, first and second moment.
    fn adamw_kernel([p, g, m, v]: [&[f32]; 4], scalars: AdamWScalars) -> FlexTensor {
        let n = p.len();
        let AdamWScalars { lr, beta_1: b1, beta_2: b2, epsilon: eps, decay, inv_c1, inv_c2 } = scalars;
        let mut out = vec![0.0f32; 3 * n];
        let (new_p, rest) = out.split_at_mut(n);
        let (new_m, new_v) = rest.split_at_mut(n);
        let outputs = new_p.par_chunks_mut(CHUNK).zip(new_m.par_chunks_mut(CHUNK)).zip(new_v.par_chunks_mut(CHUNK));
        let inputs = p.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)).zip(m.par_chunks(CHUNK).zip(v.par_chunks(CHUNK)));
        outputs.zip(inputs).for_each(|(((po, mo), vo), ((p, g), (m, v)))| wide(#[inline(always)] || {
            // Zipped iterators rather than indices: no bounds checks, so the loop vectorises.
            let outputs = po.iter_mut().zip(mo.iter_mut()).zip(vo.iter_mut());
            let inputs = p.iter().zip(g).zip(m.iter().zip(v));
            for (((po, mo), vo), ((&p, &g), (&m, &v))) in outputs.zip(inputs) {
                let m = b1 * m + (1.0 - b1) * g;
                let v = b2 * v + (1.0 - b2) * (g * g);
                let delta = (m * inv_c1) / ((v * inv_c2).sqrt() + eps);
                (*po, *mo, *vo) = (p * decay - lr * delta, m, v);
            }
        }));
        FlexTensor::new(Bytes::from_elems(out), Layout::contiguous(burn::tensor::Shape::new([3, n])), DType::F32)
    }

    /// The values of an f32 tensor whose elements lie contiguous in row-major order in its
    /// buffer, read in place (also a slice of a larger buffer, as a row of a packed tensor is);
    /// `None` otherwise.
    fn dense_f32(t: &FlexTensor) -> Option<&[f32]> {
        if t.dtype() != DType::F32 {
            return None;
        }
        let (start, end) = t.layout().contiguous_offsets()?;
        let data: &[f32] = t.storage();
        data.get(start..end)
    }

    /// Contiguous f32 logits `[rows, classes]` and targets `[rows]`, and `classes`; `None` for
    /// other dtypes or shapes.
    fn logits_and_targets(logits: &FlexTensor, targets: &FlexTensor) -> Option<(FlexTensor, FlexTensor, usize)> {
        let (x, t) = (contiguous_f32(logits)?, contiguous_f32(targets)?);
        let &[rows, classes] = x.shape().as_slice() else { return None };
        (t.shape().as_slice() == [rows] && classes > 0).then_some((x, t, classes))
    }

    /// The class id a float target holds.
    fn class_index(target: f32, classes: usize) -> usize {
        let index = target as usize;
        assert!(
            target >= 0.0 && target.fract() == 0.0 && index < classes,
            "token_nll: target {target} is not a class id below {classes}"
        );
        index
    }

    /// `exp(x - max(x))` of one row into `out`; returns `max(x)` and the sum. The exponentials
    /// are stored so that their loop vectorises; a reduction straight into lanes stays scalar.
    #[inline(always)]
    fn row_exp_sum(x: &[f32], out: &mut [f32]) -> (f32, f32) {
        let max = max_lanes(x);
        for (e, &v) in out.iter_mut().zip(x) {
            *e = super::exp_approx(v - max);
        }
        (max, sum_lanes(out))
    }

    /// Products at least this large (`m * n * k`) run on every core; smaller ones on one.
    const PARALLEL_PRODUCT: usize = 192 * 192 * 192;
    /// Products of at most this many rows (decoding steps) split their columns across the
    /// threads when they have at least `PARALLEL_FEW_ROWS` multiply-adds.
    const FEW_ROWS: usize = 8;
    const PARALLEL_FEW_ROWS: usize = 1 << 17;

    /// A 2-d f32 tensor read in place: element `(i, j)` is `data[i * row_stride + j * col_stride]`.
    #[derive(Clone, Copy)]
    struct Matrix<'a> {
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    }

    impl<'a> Matrix<'a> {
        /// The f32 matrix `t` is, through its own strides (a transposed or sliced view is read
        /// without a copy); `None` for other dtypes, ranks, empty or negative-stride layouts.
        fn of(t: &'a FlexTensor) -> Option<Self> {
            let layout = t.layout();
            let &[rows, cols] = layout.shape().as_slice() else { return None };
            let &[row_stride, col_stride] = layout.strides() else { return None };
            if t.dtype() != DType::F32 || rows == 0 || cols == 0 || row_stride < 0 || col_stride < 0 {
                return None;
            }
            let (row_stride, col_stride) = (row_stride as usize, col_stride as usize);
            let data: &[f32] = t.storage();
            let data = data.get(layout.start_offset()..)?;
            let last = (rows - 1) * row_stride + (cols - 1) * col_stride;
            (last < data.len()).then_some(Matrix { data, rows, cols, row_stride, col_stride })
        }

        /// The `rows x cols` matrix whose element `(i, j)` is `data[i * row_stride + j * col_stride]`.
        ///
        /// # Panics
        /// If the last element lies outside `data`.
        fn strided(data: &'a [f32], rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> Self {
            assert!(rows > 0 && cols > 0 && (rows - 1) * row_stride + (cols - 1) * col_stride < data.len());
            Matrix { data, rows, cols, row_stride, col_stride }
        }

        /// The transpose, as a view.
        fn transposed(self) -> Self {
            Matrix { rows: self.cols, cols: self.rows, row_stride: self.col_stride, col_stride: self.row_stride, ..self }
        }

        /// Columns `start..start + cols` of this matrix.
        fn columns(self, start: usize, cols: usize) -> Self {
            Matrix { data: &self.data[start * self.col_stride..], cols, ..self }
        }

        /// `dst (+)= factor * self rhs` into a row-major buffer with rows `dst_row_stride` apart.
        ///
        /// # Safety
        /// `dst` must be valid for writes (and, with `read_dst`, initialised reads) of elements
        /// `i * dst_row_stride + j` for `i < self.rows`, `j < rhs.cols`, and no other thread may
        /// touch them during the call. gemm reads the operands only through their strides,
        /// within what `Matrix::of` checked; with `read_dst` false it stores without reading.
        unsafe fn product_into(
            self,
            rhs: Matrix<'_>,
            dst: *mut f32,
            dst_row_stride: usize,
            read_dst: bool,
            factor: f32,
            parallelism: gemm::Parallelism,
        ) {
            debug_assert_eq!(self.cols, rhs.rows);
            // SAFETY: see the function's contract.
            unsafe {
                gemm::gemm(
                    self.rows, rhs.cols, self.cols,
                    dst, 1, dst_row_stride as isize, read_dst,
                    self.data.as_ptr(), self.col_stride as isize, self.row_stride as isize,
                    rhs.data.as_ptr(), rhs.col_stride as isize, rhs.row_stride as isize,
                    1.0, factor, false, false, false, parallelism,
                );
            }
        }

        /// `self rhs`, `[self.rows, rhs.cols]` and contiguous, with `row_init` (of `rhs.cols`
        /// values) added to every row: gemm accumulates onto the copied rows, so a bias costs
        /// no separate pass. Without it gemm writes every element of a fresh buffer.
        fn times(self, rhs: Matrix<'_>, row_init: Option<&[f32]>) -> FlexTensor {
            let (m, n, k) = (self.rows, rhs.cols, self.cols);
            debug_assert_eq!(k, rhs.rows);
            let mut out: Vec<f32> = match row_init {
                // Whole rows per task, each a copy of `row`.
                Some(row) => written_in_chunks(m * n, (CHUNK / n).max(1) * n, Width::Avx2, #[inline(always)] |_, o| {
                    for o in o.chunks_exact_mut(n) {
                        o.iter_mut().zip(row).for_each(|(o, &b)| {
                            o.write(b);
                        });
                    }
                }),
                None => Vec::with_capacity(m * n),
            };
            let dst = SendPtr(out.as_mut_ptr());
            // Columns j0..j0 + cols of the output. SAFETY (for every call below): it writes
            // elements i * n + j0 + j < m * n of `out`'s capacity (j < cols <= n - j0); calls on
            // disjoint column ranges write disjoint elements, and with a bias the rows were
            // initialised above. Without one gemm stores without reading, so once every column
            // range has run, all m * n elements are initialised.
            let columns = |j0: usize, cols: usize, parallelism: gemm::Parallelism| unsafe {
                self.product_into(rhs.columns(j0, cols), dst.get().add(j0), n, row_init.is_some(), 1.0, parallelism);
            };
            let threads = rayon::current_num_threads();
            let work = m * n * k;
            if m <= FEW_ROWS && work >= PARALLEL_FEW_ROWS && threads > 1 && n >= 2 * 16 {
                // A matrix-vector product (one decoding step): gemm runs it on one thread,
                // bound by reading the weight, so the columns are split across the threads,
                // two blocks per thread (narrower blocks also keep gemv's accumulators in
                // registers: 30-40 ms instead of 39-45 ms for the decoder's weights, timed alone).
                let width = n.div_ceil(2 * threads).next_multiple_of(16);
                (0..n.div_ceil(width)).into_par_iter().for_each(|t| {
                    let j0 = t * width;
                    columns(j0, width.min(n - j0), gemm::Parallelism::None);
                });
            } else {
                let parallelism =
                    if work >= PARALLEL_PRODUCT { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
                columns(0, n, parallelism);
            }
            // SAFETY: see above; every element is written.
            unsafe { out.set_len(m * n) };
            FlexTensor::new(Bytes::from_elems(out), Layout::contiguous(burn::tensor::Shape::new([m, n])), DType::F32)
        }
    }

    /// A rank-4 f32 tensor `[b0, b1, rows, cols]` read in place as `b0 * b1` matrices, through
    /// its own strides (transposed and sliced views without a copy).
    struct Matrices<'a> {
        batch: [usize; 2],
        batch_strides: [usize; 2],
        /// The first matrix; the others start `i0 * batch_strides[0] + i1 * batch_strides[1]`
        /// further into `matrix.data`.
        matrix: Matrix<'a>,
    }

    impl<'a> Matrices<'a> {
        fn of(t: &'a FlexTensor) -> Option<Self> {
            let layout = t.layout();
            let &[b0, b1, rows, cols] = layout.shape().as_slice() else { return None };
            let strides = layout.strides();
            if t.dtype() != DType::F32 || strides.iter().any(|&s| s < 0) || [b0, b1, rows, cols].contains(&0) {
                return None;
            }
            let [s0, s1, row_stride, col_stride] = [strides[0], strides[1], strides[2], strides[3]].map(|s| s as usize);
            let data: &[f32] = t.storage();
            let data = data.get(layout.start_offset()..)?;
            let last = (b0 - 1) * s0 + (b1 - 1) * s1 + (rows - 1) * row_stride + (cols - 1) * col_stride;
            (last < data.len()).then_some(Matrices {
                batch: [b0, b1],
                batch_strides: [s0, s1],
                matrix: Matrix { data, rows, cols, row_stride, col_stride },
            })
        }

        /// Matrix `i` of the `b0 * b1`, in row-major order of the batch axes.
        fn get(&self, i: usize) -> Matrix<'a> {
            let offset = i / self.batch[1] * self.batch_strides[0] + i % self.batch[1] * self.batch_strides[1];
            Matrix { data: &self.matrix.data[offset..], ..self.matrix }
        }

        /// `self[i] rhs[i]` for every `i`, `[b0, b1, rows, rhs.cols]` and contiguous; the
        /// products in parallel, one thread each.
        fn times(&self, rhs: &Matrices<'_>) -> FlexTensor {
            let count = self.batch[0] * self.batch[1];
            let (m, n) = (self.matrix.rows, rhs.matrix.cols);
            let mut out: Vec<f32> = Vec::with_capacity(count * m * n);
            let dst = SendPtr(out.as_mut_ptr());
            (0..count).into_par_iter().for_each(|i| {
                // SAFETY: `Matrices::of` checked the last index of the last matrix; product i
                // writes elements i * m * n .. (i + 1) * m * n of `out`'s capacity, each once,
                // disjoint from the others.
                unsafe { self.get(i).product_into(rhs.get(i), dst.get().add(i * m * n), n, false, 1.0, gemm::Parallelism::None) };
            });
            // SAFETY: every element was written above.
            unsafe { out.set_len(count * m * n) };
            let [b0, b1] = self.batch;
            FlexTensor::new(Bytes::from_elems(out), Layout::contiguous(burn::tensor::Shape::new([b0, b1, m, n])), DType::F32)
        }
    }

    /// A pointer that tasks writing disjoint parts of one buffer share.
    #[derive(Clone, Copy)]
    struct SendPtr(*mut f32);
    // SAFETY: used only for writes to disjoint elements, joined before the buffer is read.
    unsafe impl Send for SendPtr {}
    unsafe impl Sync for SendPtr {}

    impl SendPtr {
        /// Through a method, so closures capture the wrapper (which is Send) and not the field.
        fn get(self) -> *mut f32 {
            self.0
        }
    }

    /// `1 / sqrt(mean(x^2) + eps)` of one row.
    #[inline(always)]
    fn inv_rms(x: &[f32], eps: f64) -> f32 {
        let mean_square = dot_lanes(x, x) / x.len() as f32;
        1.0 / (mean_square + eps as f32).sqrt()
    }

    /// `f(a, b)` element by element for two f32 tensors of the same shape; `None` otherwise.
    fn zip_f32(a: &FlexTensor, b: &FlexTensor, f: impl Fn(f32, f32) -> f32 + Sync) -> Option<FlexTensor> {
        let (a, b) = (contiguous_f32(a)?, contiguous_f32(b)?);
        if a.shape() != b.shape() {
            return None;
        }
        let (avs, bvs): (&[f32], &[f32]) = (a.storage(), b.storage());
        let out = written_in_chunks(avs.len(), CHUNK, Width::Widest, #[inline(always)] |start, o| {
            let end = start + o.len();
            for ((o, &a), &b) in o.iter_mut().zip(&avs[start..end]).zip(&bvs[start..end]) {
                o.write(f(a, b));
            }
        });
        Some(output(out, &a))
    }

    /// `len` values written in parallel chunks of `chunk` by `fill(start, values)`, where
    /// `start` is the index of the chunk's first value; `fill` must write every value of its
    /// chunk. Nothing is zeroed first: each value is written once.
    fn written_in_chunks(len: usize, chunk: usize, width: Width, fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync) -> Vec<f32> {
        let chunk = chunk.max(1);
        let mut out = Vec::with_capacity(len);
        out.spare_capacity_mut()[..len]
            .par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, values)| vectorised(width, #[inline(always)] || fill(i * chunk, values)));
        // SAFETY: the chunks cover 0..len and `fill` wrote every value of each.
        unsafe { out.set_len(len) };
        out
    }

    /// Maximum in eight independent lanes (a fold with `f32::max`, whose NaN rule makes it
    /// order-dependent, stays scalar). NaN inputs are skipped; a softmax row holding one is NaN
    /// anyway, through `exp`.
    #[inline(always)]
    fn max_lanes(x: &[f32]) -> f32 {
        let mut lanes = [f32::NEG_INFINITY; 8];
        let mut chunks = x.chunks_exact(8);
        for chunk in &mut chunks {
            for (lane, &v) in lanes.iter_mut().zip(chunk) {
                *lane = if v > *lane { v } else { *lane };
            }
        }
        chunks.remainder().iter().chain(&lanes).copied().fold(f32::NEG_INFINITY, f32::max)
    }

    /// Sum in eight independent lanes, so that the loop vectorises.
    #[inline(always)]
    fn sum_lanes(x: &[f32]) -> f32 {
        let mut lanes = [0.0f32; 8];
        let mut chunks = x.chunks_exact(8);
        for chunk in &mut chunks {
            for (lane, v) in lanes.iter_mut().zip(chunk) {
                *lane += v;
            }
        }
        lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
    }

    /// Dot product in eight independent lanes.
    #[inline(always)]
    fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
        // Subtracting +0.0 is exact, and the compiler drops it.
        dot_shifted(a, 0.0, b, 0.0)
    }

    /// `1 / (1 + e^-x)` with [`super::exp_approx`], branch-free so that loops over it vectorise.
    #[inline(always)]
    fn sigmoid(x: f32) -> f32 {
        1.0 / (1.0 + super::exp_approx(-x))
    }

    /// [`vectorised`] for a memory-bound kernel.
    #[inline(always)]
    fn wide<R>(body: impl FnOnce() -> R) -> R {
        vectorised(Width::Avx2, body)
    }

    /// [`vectorised`] for a kernel bound by arithmetic.
    #[inline(always)]
    fn widest<R>(body: impl FnOnce() -> R) -> R {
        vectorised(Width::Widest, body)
    }
}

/// `e^x` for f32 in straight-line code: `2^n * e^r` with `n = round(x / ln 2)`, `r` reduced in
/// two parts (Cody-Waite) and `e^r` from a degree-7 polynomial on `|r| <= ln 2 / 2`; relative
/// error below 3e-7 for `x` in [-87.3, 88]. Below -87.3 it returns 0 (as a masked attention
/// score needs, and no subnormal numbers downstream); above 88 about 1.7e38 (not infinity);
/// NaN propagates. Rounding is done by adding and subtracting 1.5 * 2^23, not `f32::round`,
/// which compiles to a library call on baseline x86-64 and would keep loops scalar.
#[inline(always)]
pub fn exp_approx(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23
    let underflow = x < -87.3;
    let x = x.clamp(-87.3, 88.0);
    // n lands in the low mantissa bits of t (one unit per ulp at this magnitude).
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    // Taylor coefficients 1/k!, k = 0..7.
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // 2^n from the exponent bits n + 127, in [1, 254] after the clamp. Integer n is read from
    // t's bits with wrapping arithmetic, not `n as i32`: a saturating float-to-int conversion or
    // an overflow-checked add (papertune-models keeps overflow checks in the dev profile) keeps
    // the loops around this function from vectorising.
    let exponent = t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127);
    let scale = f32::from_bits(exponent << 23);
    if underflow { 0.0 } else { p * scale }
}

/// `erf(x)` in straight-line code (Abramowitz and Stegun 7.1.26 with [`exp_approx`]):
/// absolute error below 1e-6 (at most 5.7e-7 over [-6, 6] in the unit test).
#[inline(always)]
pub fn erf_approx(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_8, -1.453_152_1, 1.061_405_4];
    let ax = x.abs();
    let t = 1.0 / (1.0 + P * ax);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let y = 1.0 - poly * exp_approx(-ax * ax);
    y.copysign(x)
}

/// `w` of shape `[d]` as `[1, .., 1, d]`, to broadcast against a rank-`rank` tensor.
fn broadcastable_weight<B: Backend>(weight: FloatTensor<B>, rank: usize) -> FloatTensor<B> {
    let d = weight.shape().num_elements();
    let mut dims = vec![1usize; rank];
    dims[rank - 1] = d;
    B::float_reshape(weight, burn::tensor::Shape::from(dims))
}

/// `1 / sqrt(mean(x^2) + eps)` over the last axis, `[.., 1]`.
fn inv_rms_composed<B: Backend>(x: FloatTensor<B>, eps: f64) -> FloatTensor<B> {
    let last = x.shape().num_dims() - 1;
    let mean_square = B::float_mean_dim(B::float_mul(x.clone(), x), last);
    B::float_recip(B::float_sqrt(B::float_add_scalar(mean_square, eps.into())))
}

fn rms_norm_composed<B: Backend>(x: FloatTensor<B>, weight: FloatTensor<B>, eps: f64) -> FloatTensor<B> {
    let rank = x.shape().num_dims();
    let r = inv_rms_composed::<B>(x.clone(), eps);
    B::float_mul(B::float_mul(x, r), broadcastable_weight::<B>(weight, rank))
}

fn rms_norm_backward_x_composed<B: Backend>(x: FloatTensor<B>, weight: FloatTensor<B>, grad: FloatTensor<B>, eps: f64) -> FloatTensor<B> {
    let rank = x.shape().num_dims();
    let r = inv_rms_composed::<B>(x.clone(), eps);
    let wg = B::float_mul(grad, broadcastable_weight::<B>(weight, rank));
    let mean = B::float_mean_dim(B::float_mul(wg.clone(), x.clone()), rank - 1);
    let coef = B::float_mul(B::float_mul(r.clone(), r.clone()), mean);
    B::float_mul(r, B::float_sub(wg, B::float_mul(x, coef)))
}

fn rms_norm_backward_weight_composed<B: Backend>(x: FloatTensor<B>, grad: FloatTensor<B>, eps: f64) -> FloatTensor<B> {
    let r = inv_rms_composed::<B>(x.clone(), eps);
    sum_over_rows::<B>(B::float_mul(B::float_mul(grad, x), r))
}

/// `[.., d]` summed over every axis but the last, `[d]`.
/// `x [rows, d]` with `bias [d]` added to every row.
fn add_row_bias<B: Backend>(x: FloatTensor<B>, bias: FloatTensor<B>) -> FloatTensor<B> {
    let d = bias.shape().num_elements();
    B::float_add(x, B::float_reshape(bias, burn::tensor::Shape::new([1, d])))
}

fn bias_residual_layer_norm_composed<B: FusedOps>(
    x: FloatTensor<B>,
    bias: FloatTensor<B>,
    residual: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    eps: f64,
) -> FloatTensor<B> {
    B::layer_norm_affine(B::float_add(add_row_bias::<B>(x, bias), residual), gamma, beta, eps)
}

fn sum_over_rows<B: Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
    let d = t.shape().as_slice().last().copied().unwrap_or(0);
    let rows = t.shape().num_elements() / d.max(1);
    let flat = B::float_reshape(t, burn::tensor::Shape::new([rows, d]));
    B::float_reshape(B::float_sum_dim(flat, 0), burn::tensor::Shape::new([d]))
}

/// `xhat = (x - mean(x)) * r` and `r = 1 / sqrt(var(x) + eps)` over the last axis.
fn normalized_composed<B: Backend>(x: FloatTensor<B>, eps: f64) -> (FloatTensor<B>, FloatTensor<B>) {
    let last = x.shape().num_dims() - 1;
    let centered = B::float_sub(x.clone(), B::float_mean_dim(x, last));
    let var = B::float_mean_dim(B::float_mul(centered.clone(), centered.clone()), last);
    let r = B::float_recip(B::float_sqrt(B::float_add_scalar(var, eps.into())));
    (B::float_mul(centered, r.clone()), r)
}

fn layer_norm_backward_x_composed<B: Backend>(x: FloatTensor<B>, gamma: FloatTensor<B>, grad: FloatTensor<B>, eps: f64) -> FloatTensor<B> {
    let rank = x.shape().num_dims();
    let (xhat, r) = normalized_composed::<B>(x, eps);
    let scaled = B::float_mul(grad, broadcastable_weight::<B>(gamma, rank)); // gamma dy
    let mean = B::float_mean_dim(scaled.clone(), rank - 1);
    let mean_with_xhat = B::float_mean_dim(B::float_mul(scaled.clone(), xhat.clone()), rank - 1);
    let inner = B::float_sub(B::float_sub(scaled, mean), B::float_mul(xhat, mean_with_xhat));
    B::float_mul(r, inner)
}

fn layer_norm_backward_gamma_composed<B: Backend>(x: FloatTensor<B>, grad: FloatTensor<B>, eps: f64) -> FloatTensor<B> {
    let (xhat, _) = normalized_composed::<B>(x, eps);
    sum_over_rows::<B>(B::float_mul(grad, xhat))
}

/// The two halves of the last axis of a rank-4 tensor.
fn halves<B: Backend>(x: FloatTensor<B>) -> (FloatTensor<B>, FloatTensor<B>) {
    let dims = x.shape().as_slice().to_vec();
    let half = dims[3] / 2;
    let range = |start: usize, end: usize| {
        let mut slices: Vec<burn::tensor::Slice> = dims.iter().map(|&n| burn::tensor::Slice::from(0..n)).collect();
        slices[3] = burn::tensor::Slice::from(start..end);
        slices
    };
    (B::float_slice(x.clone(), &range(0, half)), B::float_slice(x, &range(half, 2 * half)))
}

fn rotary_composed<B: Backend>(x: FloatTensor<B>, cos: FloatTensor<B>, sin: FloatTensor<B>) -> FloatTensor<B> {
    let (first, second) = halves::<B>(x.clone());
    let rotated = B::float_cat(vec![B::float_neg(second), first], 3);
    B::float_add(B::float_mul(x, cos), B::float_mul(rotated, sin))
}

fn rotary_backward_composed<B: Backend>(grad: FloatTensor<B>, cos: FloatTensor<B>, sin: FloatTensor<B>) -> FloatTensor<B> {
    let (first, second) = halves::<B>(B::float_mul(grad.clone(), sin));
    let swapped = B::float_cat(vec![second, B::float_neg(first)], 3);
    B::float_add(B::float_mul(grad, cos), swapped)
}

/// `softmax(q k^T * scale + bias)` per head, `[batch, heads, seq_q, seq_k]`, for the layout of
/// [`FusedOps::attention_key_bias`].
fn attention_probs_composed<B: Backend>(q: FloatTensor<B>, k: FloatTensor<B>, bias: FloatTensor<B>, scale: f64) -> FloatTensor<B> {
    let batch = q.shape().as_slice()[0];
    let seq_k = k.shape().as_slice()[1];
    let keys_t = B::float_swap_dims(heads_first::<B>(k), 2, 3); // [batch, heads, d, seq_k]
    let scores = B::float_matmul(B::float_mul_scalar(heads_first::<B>(q), scale.into()), keys_t); // [batch, heads, seq_q, seq_k]
    let bias = B::float_reshape(bias, burn::tensor::Shape::new([batch, 1, 1, seq_k]));
    B::softmax(B::float_add(scores, bias), 3)
}

/// `[batch, seq, heads, d]` -> `[batch, heads, seq, d]` and back (a view).
fn heads_first<B: Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
    B::float_swap_dims(t, 1, 2)
}

/// The dropout mask of [`FusedOps::attention_dropout`] for probabilities shaped as `like`, or
/// `None` when `keep` is 1.
fn attention_mask_composed<B: Backend>(like: &FloatTensor<B>, keep: f64, seed: u64) -> Option<FloatTensor<B>> {
    (keep < 1.0).then(|| {
        let shape = like.shape();
        let mask = crate::dropout::mask_values(shape.num_elements(), keep, seed);
        let mask = burn::tensor::TensorData::new(mask, shape).convert_dtype(like.dtype());
        B::float_from_data(mask, &like.device())
    })
}

fn attention_key_bias_composed<B: Backend>(q: FloatTensor<B>, k: FloatTensor<B>, v: FloatTensor<B>, bias: FloatTensor<B>, scale: f64) -> FloatTensor<B> {
    attention_dropout_composed::<B>(q, k, v, bias, scale, 1.0, 0)
}

fn attention_dropout_composed<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    bias: FloatTensor<B>,
    scale: f64,
    keep: f64,
    seed: u64,
) -> FloatTensor<B> {
    let mut probs = attention_probs_composed::<B>(q, k, bias, scale);
    if let Some(mask) = attention_mask_composed::<B>(&probs, keep, seed) {
        probs = B::float_mul(probs, mask);
    }
    heads_first::<B>(B::float_matmul(probs, heads_first::<B>(v))) // [batch, seq_q, heads, d]
}

#[allow(clippy::too_many_arguments)]
fn attention_dropout_backward_composed<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    bias: FloatTensor<B>,
    grad: FloatTensor<B>,
    scale: f64,
    keep: f64,
    seed: u64,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let probs = attention_probs_composed::<B>(q.clone(), k.clone(), bias, scale); // [batch, heads, seq_q, seq_k]
    let mask = attention_mask_composed::<B>(&probs, keep, seed);
    let dropped = match &mask {
        Some(mask) => B::float_mul(probs.clone(), mask.clone()),
        None => probs.clone(),
    };
    let grad = heads_first::<B>(grad); // [batch, heads, seq_q, d]
    let transposed = |t: FloatTensor<B>| B::float_swap_dims(t, 2, 3);
    let dv = B::float_matmul(transposed(dropped), grad.clone()); // [batch, heads, seq_k, d]
    let mut d_dropped = B::float_matmul(grad, transposed(heads_first::<B>(v))); // [batch, heads, seq_q, seq_k]
    if let Some(mask) = mask {
        d_dropped = B::float_mul(d_dropped, mask);
    }
    let d_scores = B::float_mul_scalar(softmax_backward_composed::<B>(probs, d_dropped), scale.into());
    let dq = B::float_matmul(d_scores.clone(), heads_first::<B>(k));
    let dk = B::float_matmul(transposed(d_scores), heads_first::<B>(q));
    (heads_first::<B>(dq), heads_first::<B>(dk), heads_first::<B>(dv))
}

#[allow(clippy::too_many_arguments)]
fn adamw_packed_composed<B: Backend>(
    param: FloatTensor<B>,
    grad: FloatTensor<B>,
    moment_1: FloatTensor<B>,
    moment_2: FloatTensor<B>,
    lr: f64,
    beta_1: f64,
    beta_2: f64,
    epsilon: f64,
    weight_decay: f64,
    correction_1: f64,
    correction_2: f64,
) -> FloatTensor<B> {
    let n = param.shape().num_elements();
    let flat = |t: FloatTensor<B>| B::float_reshape(t, burn::tensor::Shape::new([1, n]));
    let (p, g, m, v) = (flat(param), flat(grad), flat(moment_1), flat(moment_2));
    let m = B::float_add(B::float_mul_scalar(m, beta_1.into()), B::float_mul_scalar(g.clone(), (1.0 - beta_1).into()));
    let g2 = B::float_mul(g.clone(), g);
    let v = B::float_add(B::float_mul_scalar(v, beta_2.into()), B::float_mul_scalar(g2, (1.0 - beta_2).into()));
    let denominator = B::float_add_scalar(B::float_sqrt(B::float_div_scalar(v.clone(), correction_2.into())), epsilon.into());
    let delta = B::float_div(B::float_div_scalar(m.clone(), correction_1.into()), denominator);
    let p = B::float_sub(B::float_mul_scalar(p, (1.0 - lr * weight_decay).into()), B::float_mul_scalar(delta, lr.into()));
    B::float_cat(vec![p, m, v], 0) // [3, n]
}

/// `[rows, 1]`: `logsumexp` of each row of `[rows, classes]` logits.
fn row_logsumexp_composed<B: Backend>(logits: FloatTensor<B>) -> FloatTensor<B> {
    let max = B::float_max_dim(logits.clone(), 1); // [rows, 1]
    let sum = B::float_sum_dim(B::float_exp(B::float_sub(logits, max.clone())), 1);
    B::float_add(B::float_log(sum), max)
}

/// `[rows, 1]` integer class ids from float ids `[rows]`.
fn class_ids<B: Backend>(targets: FloatTensor<B>) -> burn::backend::tensor::IntTensor<B> {
    let rows = targets.shape().num_elements();
    B::float_into_int(B::float_reshape(targets, burn::tensor::Shape::new([rows, 1])), burn::tensor::IntDType::I64)
}

fn token_nll_composed<B: Backend>(logits: FloatTensor<B>, targets: FloatTensor<B>) -> FloatTensor<B> {
    let rows = logits.shape()[0];
    let picked = B::float_gather(1, logits.clone(), class_ids::<B>(targets)); // [rows, 1]
    let nll = B::float_sub(row_logsumexp_composed::<B>(logits), picked);
    B::float_reshape(nll, burn::tensor::Shape::new([rows]))
}

fn token_nll_backward_composed<B: Backend>(logits: FloatTensor<B>, targets: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
    let rows = logits.shape()[0];
    let grad = B::float_reshape(grad, burn::tensor::Shape::new([rows, 1]));
    let probs = B::float_exp(B::float_sub(logits.clone(), row_logsumexp_composed::<B>(logits)));
    let scaled = B::float_mul(probs, grad.clone()); // [rows, classes]
    B::float_scatter(1, scaled, class_ids::<B>(targets), B::float_neg(grad), burn::tensor::IndexingUpdateOp::Add)
}

fn matmul_composed<B: Backend>(lhs: FloatTensor<B>, rhs: FloatTensor<B>) -> FloatTensor<B> {
    B::float_matmul(lhs, rhs)
}

fn linear_bias_composed<B: Backend>(x: FloatTensor<B>, weight: FloatTensor<B>, bias: FloatTensor<B>) -> FloatTensor<B> {
    let d_out = bias.shape().num_elements();
    let product = B::float_matmul(x, weight); // [rows, d_out]
    B::float_add(product, B::float_reshape(bias, burn::tensor::Shape::new([1, d_out])))
}

fn softmax_backward_composed<B: Backend>(probs: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
    let last = probs.shape().num_dims() - 1;
    let dot = B::float_sum_dim(B::float_mul(grad.clone(), probs.clone()), last);
    B::float_mul(probs, B::float_sub(grad, dot))
}

fn swiglu_composed<B: Backend>(gate: FloatTensor<B>, up: FloatTensor<B>) -> FloatTensor<B> {
    B::float_mul(B::float_mul(gate.clone(), B::sigmoid(gate)), up)
}

fn swiglu_backward_gate_composed<B: Backend>(gate: FloatTensor<B>, up: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
    let s = B::sigmoid(gate.clone());
    let g_s = B::float_mul(gate.clone(), s.clone());
    let inner = B::float_add_scalar(B::float_sub(gate, g_s), 1.0.into());
    B::float_mul(B::float_mul(grad, up), B::float_mul(s, inner))
}

fn swiglu_backward_up_composed<B: Backend>(gate: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
    B::float_mul(grad, B::float_mul(gate.clone(), B::sigmoid(gate)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, activation};

    fn close(a: Tensor<3>, b: Tensor<3>, tol: f32, what: &str) {
        let (a, b): (Vec<f32>, Vec<f32>) = (a.into_data().try_to_vec::<f32>().unwrap(), b.into_data().try_to_vec::<f32>().unwrap());
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}[{i}]: fused {x}, reference {y}");
        }
    }

    /// Fused forward and gradients against burn's composed operations, on `device` (autodiff).
    fn check_against_burn(device: &Device) {
        assert!(device.is_autodiff());
        let shape = [2, 5, 37]; // a row length that is not a multiple of the vector width
        let x = Tensor::<3>::random(shape, Distribution::Normal(0.0, 3.0), device);
        // Masked positions as the decoder builds them.
        let keep = Tensor::<3>::random(shape, Distribution::Uniform(0.0, 1.0), device).greater_elem(0.3).float();
        let x = x + (keep.ones_like() - keep) * crate::llama::MASKED;
        let weights = Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), device);

        let fused_in = x.clone().require_grad();
        let burn_in = x.require_grad();
        let fused_out = softmax_last(fused_in.clone());
        let burn_out = activation::softmax(burn_in.clone(), 2);
        close(fused_out.clone(), burn_out.clone(), 1e-6, "softmax");
        let fused_grads = (fused_out * weights.clone()).sum().backward();
        let burn_grads = (burn_out * weights.clone()).sum().backward();
        close(fused_in.grad(&fused_grads).unwrap(), burn_in.grad(&burn_grads).unwrap(), 1e-5, "softmax grad");

        let gate = Tensor::<3>::random(shape, Distribution::Normal(0.0, 4.0), device);
        let up = Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), device);
        let (fg, fu) = (gate.clone().require_grad(), up.clone().require_grad());
        let (bg, bu) = (gate.require_grad(), up.require_grad());
        let fused_out = swiglu(fg.clone(), fu.clone());
        let burn_out = activation::silu(bg.clone()) * bu.clone();
        close(fused_out.clone(), burn_out.clone(), 1e-6, "swiglu");
        let fused_grads = (fused_out * weights.clone()).sum().backward();
        let burn_grads = (burn_out * weights.clone()).sum().backward();
        close(fg.grad(&fused_grads).unwrap(), bg.grad(&burn_grads).unwrap(), 1e-5, "swiglu gate grad");
        close(fu.grad(&fused_grads).unwrap(), bu.grad(&burn_grads).unwrap(), 1e-5, "swiglu up grad");

        let x = Tensor::<3>::random(shape, Distribution::Normal(0.0, 3.0), device);
        let fx = x.clone().require_grad();
        let fused_out = gelu(fx.clone());
        close(fused_out.clone(), activation::gelu(x.clone()), 1e-6, "gelu");
        let fused_grads = (fused_out * weights.clone()).sum().backward();
        // The exact derivative (burn's own gelu_backward is the tanh form's on some backends).
        let x = x.inner();
        let cdf = (x.clone() * std::f64::consts::FRAC_1_SQRT_2).erf().add_scalar(1.0) * 0.5;
        let pdf = (x.clone().powi_scalar(2) * -0.5).exp() * (1.0 / (2.0 * std::f64::consts::PI).sqrt());
        let expected = weights.clone().inner() * (cdf + x * pdf);
        close(fx.grad(&fused_grads).unwrap(), expected, 1e-6, "gelu grad");

        // GELU of a linear layer's product plus its bias, against burn's linear and the GELU
        // checked just above (burn's own GELU backward is the tanh form's on some backends).
        let layer = burn::nn::LinearConfig::new(shape[2], 19).init(device);
        let x = Tensor::<3>::random(shape, Distribution::Normal(0.0, 2.0), device).require_grad();
        let fused_out = linear_gelu(&layer, x.clone());
        let burn_out = gelu(layer.forward(x.clone()));
        close(fused_out.clone(), burn_out.clone(), 1e-5, "linear_gelu");
        let out_weights = Tensor::<3>::random([shape[0], shape[1], 19], Distribution::Normal(0.0, 1.0), device);
        let fused_grads = (fused_out * out_weights.clone()).sum().backward();
        let burn_grads = (burn_out * out_weights).sum().backward();
        close(x.grad(&fused_grads).unwrap(), x.grad(&burn_grads).unwrap(), 1e-5, "linear_gelu x grad");
        let bias = layer.bias.as_ref().unwrap().val();
        let as_3d = |t: Tensor<1>| t.reshape([1, 1, 19]);
        close(as_3d(bias.grad(&fused_grads).unwrap()), as_3d(bias.grad(&burn_grads).unwrap()), 1e-5, "linear_gelu bias grad");
        let weight = layer.weight.val();
        let as_3d = |t: Tensor<2>| t.reshape([1, shape[2], 19]);
        close(as_3d(weight.grad(&fused_grads).unwrap()), as_3d(weight.grad(&burn_grads).unwrap()), 1e-5, "linear_gelu weight grad");

        let x = Tensor::<3>::random(shape, Distribution::Normal(0.5, 2.0), device);
        let w = Tensor::<1>::random([shape[2]], Distribution::Normal(1.0, 0.3), device);
        let (fx, fw) = (x.clone().require_grad(), w.clone().require_grad());
        let (bx, bw) = (x.require_grad(), w.require_grad());
        let fused_out = rms_norm(fx.clone(), fw.clone(), 1e-5);
        let mean_square = bx.clone().powi_scalar(2).mean_dim(2);
        let burn_out = bx.clone() * mean_square.add_scalar(1e-5).sqrt().recip() * bw.clone().unsqueeze();
        close(fused_out.clone(), burn_out.clone(), 1e-6, "rms_norm");
        let fused_grads = (fused_out * weights.clone()).sum().backward();
        let burn_grads = (burn_out * weights.clone()).sum().backward();
        close(fx.grad(&fused_grads).unwrap(), bx.grad(&burn_grads).unwrap(), 1e-5, "rms_norm x grad");
        let (fwg, bwg) = (fw.grad(&fused_grads).unwrap(), bw.grad(&burn_grads).unwrap());
        close(fwg.unsqueeze(), bwg.unsqueeze(), 1e-5, "rms_norm weight grad");

        // LayerNorm against burn's (composed under autodiff); an offset mean, as hidden states have.
        let x = Tensor::<3>::random(shape, Distribution::Normal(2.0, 3.0), device);
        let gamma = Tensor::<1>::random([shape[2]], Distribution::Normal(1.0, 0.3), device);
        let beta = Tensor::<1>::random([shape[2]], Distribution::Normal(0.0, 0.3), device);
        let (fx, fgamma, fbeta) = (x.clone().require_grad(), gamma.clone().require_grad(), beta.clone().require_grad());
        let (bx, bgamma, bbeta) = (x.require_grad(), gamma.require_grad(), beta.require_grad());
        let fused_out = layer_norm(fx.clone(), fgamma.clone(), fbeta.clone(), 1e-12);
        let burn_out = burn::tensor::module::layer_norm(bx.clone(), bgamma.clone(), Some(bbeta.clone()), 1e-12);
        close(fused_out.clone(), burn_out.clone(), 1e-5, "layer_norm");
        let fused_grads = (fused_out * weights.clone()).sum().backward();
        let burn_grads = (burn_out * weights.clone()).sum().backward();
        close(fx.grad(&fused_grads).unwrap(), bx.grad(&burn_grads).unwrap(), 1e-5, "layer_norm x grad");
        let as_3d = |t: Tensor<1>| t.unsqueeze::<3>();
        close(as_3d(fgamma.grad(&fused_grads).unwrap()), as_3d(bgamma.grad(&burn_grads).unwrap()), 1e-5, "layer_norm gamma grad");
        close(as_3d(fbeta.grad(&fused_grads).unwrap()), as_3d(bbeta.grad(&burn_grads).unwrap()), 1e-5, "layer_norm beta grad");

        // Batched products as attention uses them (a transposed key view), against matmul.
        let q = Tensor::<4>::random([2, 3, 5, 8], Distribution::Normal(0.0, 1.0), device);
        let k = Tensor::<4>::random([2, 3, 7, 8], Distribution::Normal(0.0, 1.0), device);
        let w_scores = Tensor::<4>::random([2, 3, 5, 7], Distribution::Normal(0.0, 1.0), device);
        let (fq, fk, bq, bk) = (q.clone().require_grad(), k.clone().require_grad(), q.require_grad(), k.require_grad());
        let fused_out = batched_matmul(fq.clone(), fk.clone().swap_dims(2, 3));
        let burn_out = bq.clone().matmul(bk.clone().swap_dims(2, 3));
        let flat = |t: Tensor<4>| {
            let [a, b, c, d] = t.dims();
            t.reshape([a, b, c * d])
        };
        close(flat(fused_out.clone()), flat(burn_out.clone()), 1e-5, "batched_matmul");
        let fused_grads = (fused_out * w_scores.clone()).sum().backward();
        let burn_grads = (burn_out * w_scores).sum().backward();
        close(flat(fq.grad(&fused_grads).unwrap()), flat(bq.grad(&burn_grads).unwrap()), 1e-5, "batched_matmul a grad");
        close(flat(fk.grad(&fused_grads).unwrap()), flat(bk.grad(&burn_grads).unwrap()), 1e-5, "batched_matmul b grad");

        // Per-row cross-entropy against log_softmax + gather, value and logits gradient.
        let (rows, classes) = (7, 53);
        let logits = Tensor::<2>::random([rows, classes], Distribution::Normal(0.0, 3.0), device);
        let targets = Tensor::<1, Int>::from_ints([0, 52, 17, 3, 3, 40, 1], device);
        let row_weights = Tensor::<1>::random([rows], Distribution::Normal(0.0, 1.0), device);
        let (fl, bl) = (logits.clone().require_grad(), logits.require_grad());
        let fused_out = token_nll(fl.clone(), targets.clone());
        let burn_out = activation::log_softmax(bl.clone(), 1).gather(1, targets.reshape([rows, 1])).reshape([rows]).neg();
        close(as_3d(fused_out.clone()), as_3d(burn_out.clone()), 1e-5, "token_nll");
        let fused_grads = (fused_out * row_weights.clone()).sum().backward();
        let burn_grads = (burn_out * row_weights).sum().backward();
        let (flg, blg) = (fl.grad(&fused_grads).unwrap(), bl.grad(&burn_grads).unwrap());
        close(flg.unsqueeze(), blg.unsqueeze(), 1e-5, "token_nll grad");

        // Linear layers: with a bias, without one, with a frozen weight read through a
        // transposed view (as a tied or merged weight may be), against burn's `linear`.
        let (d_in, d_out) = (shape[2], 11);
        let x = Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), device);
        let weight = Tensor::<2>::random([d_in, d_out], Distribution::Normal(0.0, 0.2), device);
        let bias = Tensor::<1>::random([d_out], Distribution::Normal(0.0, 1.0), device);
        let w_out = Tensor::<3>::random([shape[0], shape[1], d_out], Distribution::Normal(0.0, 1.0), device);
        let frozen_t = Tensor::<2>::random([d_out, d_in], Distribution::Normal(0.0, 0.2), device);
        let cases: [(&str, Tensor<2>, Option<Tensor<1>>, bool); 3] = [
            ("linear with bias", weight.clone(), Some(bias), true),
            ("linear without bias", weight, None, true),
            ("linear, frozen transposed weight", frozen_t.transpose(), None, false),
        ];
        for (what, weight, bias, trained) in cases {
            let track = |t: Tensor<2>| if trained { t.require_grad() } else { t };
            let (fx, fw, fb) = (x.clone().require_grad(), track(weight.clone()), bias.clone().map(|b| b.require_grad()));
            let (bx, bw, bb) = (x.clone().require_grad(), track(weight), bias.map(|b| b.require_grad()));
            let fused_out = linear(fx.clone(), fw.clone(), fb.clone());
            let burn_out = burn::tensor::module::linear(bx.clone(), bw.clone(), bb.clone());
            close(fused_out.clone(), burn_out.clone(), 1e-5, what);
            let fused_grads = (fused_out * w_out.clone()).sum().backward();
            let burn_grads = (burn_out * w_out.clone()).sum().backward();
            close(fx.grad(&fused_grads).unwrap(), bx.grad(&burn_grads).unwrap(), 1e-5, &format!("{what}: x grad"));
            if trained {
                let (fwg, bwg) = (fw.grad(&fused_grads).unwrap(), bw.grad(&burn_grads).unwrap());
                close(fwg.unsqueeze(), bwg.unsqueeze(), 1e-5, &format!("{what}: weight grad"));
            } else {
                assert!(fw.grad(&fused_grads).is_none(), "{what}: a frozen weight got a gradient");
            }
            if let (Some(fb), Some(bb)) = (fb, bb) {
                let (fbg, bbg) = (fb.grad(&fused_grads).unwrap(), bb.grad(&burn_grads).unwrap());
                close(fbg.unsqueeze(), bbg.unsqueeze(), 1e-5, &format!("{what}: bias grad"));
            }
        }

        // Rotary: x [2, 3, 5, 8] with tables [2, 1, 5, 8]; x as the decoder makes it (swapped axes).
        let x = Tensor::<4>::random([2, 5, 3, 8], Distribution::Normal(0.0, 1.0), device).swap_dims(1, 2);
        let cos = Tensor::<4>::random([2, 1, 5, 8], Distribution::Uniform(-1.0, 1.0), device);
        let sin = Tensor::<4>::random([2, 1, 5, 8], Distribution::Uniform(-1.0, 1.0), device);
        let w4 = Tensor::<4>::random([2, 3, 5, 8], Distribution::Normal(0.0, 1.0), device);
        let (fx, bx) = (x.clone().require_grad(), x.require_grad());
        let fused_out = rotary(fx.clone(), cos.clone(), sin.clone());
        let first = bx.clone().narrow(3, 0, 4);
        let second = bx.clone().narrow(3, 4, 4);
        let burn_out = bx.clone() * cos + Tensor::cat(vec![second.neg(), first], 3) * sin;
        let flat = |t: Tensor<4>| t.reshape([2, 3, 40]);
        close(flat(fused_out.clone()), flat(burn_out.clone()), 1e-6, "rotary");
        let fused_grads = (fused_out * w4.clone()).sum().backward();
        let burn_grads = (burn_out * w4).sum().backward();
        close(flat(fx.grad(&fused_grads).unwrap()), flat(bx.grad(&burn_grads).unwrap()), 1e-6, "rotary grad");
    }

    #[cfg(feature = "flex")]
    #[test]
    fn flex_matches_burn_forward_and_backward() {
        let device = Device::flex().autodiff();
        assert!(supported(&device));
        check_against_burn(&device);
    }

    #[cfg(feature = "flex")]
    #[test]
    fn flex_f64_takes_the_composed_layer_norm_backward() {
        // f64 skips the f32 kernels: the backward formulas composed from backend operations
        // (what ndarray and other dtypes run) against burn's own LayerNorm under autodiff.
        let device = Device::flex().autodiff();
        let f64_tensor = |shape: [usize; 3], mean: f64, std: f64| {
            Tensor::<3>::random(shape, Distribution::Normal(mean, std), &device).cast(burn::tensor::FloatDType::F64)
        };
        let x = f64_tensor([2, 3, 19], 1.0, 2.0);
        let gamma = f64_tensor([1, 1, 19], 1.0, 0.3).reshape([19]);
        let beta = f64_tensor([1, 1, 19], 0.0, 0.3).reshape([19]);
        let weights = f64_tensor([2, 3, 19], 0.0, 1.0);
        let (fx, fgamma, fbeta) = (x.clone().require_grad(), gamma.clone().require_grad(), beta.clone().require_grad());
        let (bx, bgamma, bbeta) = (x.require_grad(), gamma.require_grad(), beta.require_grad());
        let fused_grads = (layer_norm(fx.clone(), fgamma.clone(), fbeta.clone(), 1e-5) * weights.clone()).sum().backward();
        let burn_out = burn::tensor::module::layer_norm(bx.clone(), bgamma.clone(), Some(bbeta.clone()), 1e-5);
        let burn_grads = (burn_out * weights).sum().backward();
        let as_f32 = |t: Tensor<3>| t.cast(burn::tensor::FloatDType::F32);
        close(as_f32(fx.grad(&fused_grads).unwrap()), as_f32(bx.grad(&burn_grads).unwrap()), 1e-6, "x grad");
        let as_3d = |t: Tensor<1>| as_f32(t.unsqueeze::<3>());
        close(as_3d(fgamma.grad(&fused_grads).unwrap()), as_3d(bgamma.grad(&burn_grads).unwrap()), 1e-6, "gamma grad");
        close(as_3d(fbeta.grad(&fused_grads).unwrap()), as_3d(bbeta.grad(&burn_grads).unwrap()), 1e-6, "beta grad");
    }

    #[cfg(feature = "ndarray")]
    #[test]
    fn ndarray_matches_burn_forward_and_backward() {
        check_against_burn(&Device::ndarray().autodiff());
    }

    #[cfg(feature = "flex")]
    #[test]
    fn untracked_forward_matches_burn() {
        // Inference: no autodiff, the plain backend operation.
        let device = Device::flex();
        let x = Tensor::<3>::random([3, 4, 70], Distribution::Normal(0.0, 5.0), &device);
        close(softmax_last(x.clone()), activation::softmax(x, 2), 1e-6, "softmax");
        let gate = Tensor::<3>::random([3, 4, 70], Distribution::Normal(0.0, 5.0), &device);
        let up = Tensor::<3>::random([3, 4, 70], Distribution::Normal(0.0, 1.0), &device);
        close(swiglu(gate.clone(), up.clone()), activation::silu(gate) * up, 1e-6, "swiglu");
    }

    /// A linear layer's product, its bias and a residual, normalised, against burn's linear,
    /// addition and LayerNorm on `device`; with autodiff, the input's gradient too.
    fn check_residual_layer_norm(device: &Device) {
        let (shape, d_out, eps) = ([2, 5, 37], 19, 1e-12);
        let layer = burn::nn::LinearConfig::new(shape[2], d_out).init(device);
        let gamma = Tensor::<1>::random([d_out], Distribution::Normal(1.0, 0.3), device);
        let beta = Tensor::<1>::random([d_out], Distribution::Normal(0.0, 0.3), device);
        let residual = Tensor::<3>::random([shape[0], shape[1], d_out], Distribution::Normal(0.5, 2.0), device);
        let mut x = Tensor::<3>::random(shape, Distribution::Normal(0.0, 2.0), device);
        if device.is_autodiff() {
            x = x.require_grad();
        }
        let fused_out = linear_residual_layer_norm(&layer, x.clone(), residual.clone(), gamma.clone(), beta.clone(), eps);
        let burn_out = burn::tensor::module::layer_norm(layer.forward(x.clone()) + residual, gamma, Some(beta), eps);
        close(fused_out.clone(), burn_out.clone(), 1e-5, "linear_residual_layer_norm");
        if device.is_autodiff() {
            let out_weights = Tensor::<3>::random(burn_out.dims(), Distribution::Normal(0.0, 1.0), device);
            let fused_grads = (fused_out * out_weights.clone()).sum().backward();
            let burn_grads = (burn_out * out_weights).sum().backward();
            close(x.grad(&fused_grads).unwrap(), x.grad(&burn_grads).unwrap(), 1e-4, "linear_residual_layer_norm x grad");
        }
    }

    #[cfg(feature = "flex")]
    #[test]
    fn flex_residual_layer_norm_matches_burn() {
        check_residual_layer_norm(&Device::flex());
        check_residual_layer_norm(&Device::flex().autodiff());
    }

    #[cfg(feature = "ndarray")]
    #[test]
    fn ndarray_residual_layer_norm_matches_burn() {
        check_residual_layer_norm(&Device::ndarray());
        check_residual_layer_norm(&Device::ndarray().autodiff());
    }

    /// The attention operation against matmul + softmax + matmul, with padded keys, on `device`
    /// (no autodiff), for self-attention and for fewer queries than keys.
    fn check_attention(device: &Device) {
        for (seq_q, seq_k) in [(5, 5), (3, 7)] {
            let (batch, heads, d) = (2, 3, 8);
            let q = Tensor::<4>::random([batch, seq_q, heads, d], Distribution::Normal(0.0, 1.0), device);
            let k = Tensor::<4>::random([batch, seq_k, heads, d], Distribution::Normal(0.0, 1.0), device);
            let v = Tensor::<4>::random([batch, seq_k, heads, d], Distribution::Normal(0.0, 1.0), device);
            // The second sequence has its last two keys padded.
            let mut mask = vec![0.0f32; batch * seq_k];
            mask[2 * seq_k - 2..].iter_mut().for_each(|m| *m = -1.0e9);
            let bias = Tensor::<2>::from_data(burn::tensor::TensorData::new(mask, [batch, seq_k]), device);
            let scale = 1.0 / (d as f64).sqrt();

            let got = attention_key_bias(q.clone(), k.clone(), v.clone(), bias.clone(), scale);
            let heads_first = |t: Tensor<4>| t.swap_dims(1, 2);
            let scores = heads_first(q).matmul(heads_first(k).swap_dims(2, 3)).mul_scalar(scale) + bias.reshape([batch, 1, 1, seq_k]);
            let expected = activation::softmax(scores, 3).matmul(heads_first(v)).swap_dims(1, 2);
            let flat = |t: Tensor<4>| t.reshape([batch, seq_q, heads * d]);
            close(flat(got), flat(expected), 1e-5, "attention");
        }
    }

    /// The training attention against matmul + softmax + mask + matmul in burn's operations
    /// under autodiff (the path of the other backends), forward and the gradients of `q`, `k`
    /// and `v`, with padded keys, with and without dropout, on `device`.
    fn check_attention_dropout(device: &Device) {
        let device = device.clone().autodiff();
        for ((seq_q, seq_k), dropout) in [((5, 5), 0.0), ((6, 6), 0.3), ((3, 7), 0.5)] {
            let (batch, heads, d) = (2, 3, 8);
            let random = |seq: usize| Tensor::<4>::random([batch, seq, heads, d], Distribution::Normal(0.0, 1.0), &device);
            let (q, k, v) = (random(seq_q).require_grad(), random(seq_k).require_grad(), random(seq_k).require_grad());
            let weights = random(seq_q); // the loss is sum(output * weights)
            let mut mask = vec![0.0f32; batch * seq_k];
            mask[2 * seq_k - 2..].iter_mut().for_each(|m| *m = -1.0e9);
            let bias = Tensor::<2>::from_data(burn::tensor::TensorData::new(mask, [batch, seq_k]), &device);
            let (scale, seed) = (1.0 / (d as f64).sqrt(), 1234);

            let got = attention_dropout(q.clone(), k.clone(), v.clone(), bias.clone(), scale, dropout, seed);
            let expected = attention_dropout_unfused(q.clone(), k.clone(), v.clone(), bias, scale, 1.0 - dropout, seed);
            let flat = |t: Tensor<4>| {
                let seq = t.dims()[1];
                t.reshape([batch, seq, heads * d])
            };
            let what = format!("attention with dropout {dropout}, {seq_q} queries, {seq_k} keys");
            close(flat(got.clone()), flat(expected.clone()), 1e-5, &what);

            let grads_got = (got * weights.clone()).sum().backward();
            let grads_expected = (expected * weights).sum().backward();
            for (name, t) in [("dq", &q), ("dk", &k), ("dv", &v)] {
                let (got, expected) = (t.grad(&grads_got).unwrap(), t.grad(&grads_expected).unwrap());
                close(flat(got), flat(expected), 1e-5, &format!("{what}: {name}"));
            }
        }
    }

    #[cfg(feature = "flex")]
    #[test]
    fn flex_attention_dropout_matches_composed_operations() {
        check_attention_dropout(&Device::flex());
    }

    #[cfg(feature = "ndarray")]
    #[test]
    fn ndarray_attention_dropout_matches_composed_operations() {
        check_attention_dropout(&Device::ndarray());
    }

    #[cfg(feature = "flex")]
    #[test]
    fn flex_attention_matches_matmul_softmax_matmul() {
        check_attention(&Device::flex());
    }

    #[cfg(feature = "ndarray")]
    #[test]
    fn ndarray_attention_matches_matmul_softmax_matmul() {
        check_attention(&Device::ndarray());
    }

    #[test]
    fn erf_approx_is_within_1e6_absolute() {
        let mut worst = 0.0f64;
        let mut x = -6.0f32;
        while x < 6.0 {
            worst = worst.max((erf_approx(x) as f64 - libm_erf(x as f64)).abs());
            x += 0.000_37;
        }
        assert!(worst < 1e-6, "worst absolute error {worst}");
        assert!(erf_approx(0.0).abs() < 1e-7);
        assert_eq!(erf_approx(-10.0), -1.0);
    }

    /// erf in f64 from its Taylor series (|x| < 3) and continued fraction (beyond), a
    /// reference independent of the approximation under test.
    fn libm_erf(x: f64) -> f64 {
        let ax = x.abs();
        let value = if ax < 3.0 {
            let (mut term, mut sum, mut n) = (ax, ax, 0.0);
            while term.abs() > 1e-17 * sum.abs() {
                n += 1.0;
                term *= -ax * ax / n;
                sum += term / (2.0 * n + 1.0);
            }
            2.0 / std::f64::consts::PI.sqrt() * sum
        } else {
            // erfc(x) = exp(-x^2) / sqrt(pi) * 1 / (x + 1/2 / (x + 1 / (x + 3/2 / (x + ...))))
            let mut fraction = ax;
            for k in (1..60).rev() {
                fraction = ax + (k as f64 / 2.0) / fraction;
            }
            1.0 - (-ax * ax).exp() / std::f64::consts::PI.sqrt() / fraction
        };
        value.copysign(x)
    }

    #[test]
    fn exp_approx_is_within_3e7_relative() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let exact = (x as f64).exp();
            worst = worst.max(((exp_approx(x) as f64) - exact).abs() / exact);
            x += 0.001_37;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp_approx(0.0), 1.0);
        assert_eq!(exp_approx(-1e9), 0.0);
        assert!(exp_approx(-87.2) > 0.0);
        assert!(exp_approx(f32::NAN).is_nan());
    }
}

