//! The fused operations as a burn backend extension: one trait method per operation and per
//! backward pass, whose default bodies compose the formula from the backend's own operations
//! ([`crate::composed`]). The CPU backends override them with single-pass kernels
//! (`crate::flex`), and autodiff wraps each forward in one tracked operation whose backward
//! pass calls the trait's backward methods ([`crate::autodiff`]).

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, TensorMetadata, backend_extension};

use crate::composed;

/// Softmax over the last axis, SwiGLU, GeGLU, GELU, RMSNorm, LayerNorm, the rotary embedding,
/// attention, linear layers and batched products, the per-row cross-entropy and the AdamW
/// update, with their backward passes, as backend operations.
///
/// A backend gets papertune's kernels by overriding the methods; the defaults are correct on
/// any backend.
#[backend_extension(Flex: cfg(feature = "flex"), NdArray: cfg(feature = "ndarray"), Autodiff)]
pub trait FusedOps: Backend {
    /// `softmax(x)` over the last axis.
    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let last = x.shape().num_dims() - 1;
        Self::softmax(x, last)
    }

    /// `dx = p * (dy - sum(dy * p))` over the last axis, from `p = softmax(x)`.
    fn softmax_last_backward(
        probs: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        composed::softmax_backward::<Self>(probs, grad)
    }

    /// `silu(gate) * up`.
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        composed::swiglu::<Self>(gate, up)
    }

    /// The gradient of `silu(gate) * up` with respect to `gate`.
    fn swiglu_backward_gate(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        composed::swiglu_backward_gate::<Self>(gate, up, grad)
    }

    /// The gradient of `silu(gate) * up` with respect to `up`.
    fn swiglu_backward_up(gate: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        composed::swiglu_backward_up::<Self>(gate, grad)
    }

    /// `gelu_tanh(gate) * up`, GELU in its tanh approximation (Gemma's GeGLU).
    fn geglu_tanh(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        composed::geglu_tanh::<Self>(gate, up)
    }

    /// The gradient of `gelu_tanh(gate) * up` with respect to `gate`.
    fn geglu_tanh_backward_gate(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        composed::geglu_tanh_backward_gate::<Self>(gate, up, grad)
    }

    /// The gradient of `gelu_tanh(gate) * up` with respect to `up`.
    fn geglu_tanh_backward_up(
        gate: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        composed::geglu_tanh_backward_up::<Self>(gate, grad)
    }

    /// GELU in its exact form, `x * Phi(x)`.
    fn gelu_erf(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::gelu(x)
    }

    /// The gradient of [`FusedOps::gelu_erf`]: `dy * (Phi(x) + x * phi(x))`.
    fn gelu_erf_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        // Written out rather than `gelu_backward`, whose default is the tanh form's derivative.
        let cdf = Self::float_mul_scalar(
            Self::float_add_scalar(
                Self::float_erf(Self::float_mul_scalar(
                    x.clone(),
                    std::f64::consts::FRAC_1_SQRT_2.into(),
                )),
                1.0.into(),
            ),
            0.5.into(),
        );
        let pdf = Self::float_mul_scalar(
            Self::float_exp(Self::float_mul_scalar(
                Self::float_mul(x.clone(), x.clone()),
                (-0.5).into(),
            )),
            (1.0 / (2.0 * std::f64::consts::PI).sqrt()).into(),
        );
        Self::float_mul(grad, Self::float_add(cdf, Self::float_mul(x, pdf)))
    }

    /// GELU (erf form) of `x + bias` for `x [rows, d]` and `bias [d]` added to every row: a
    /// feed-forward layer's activation applied to its product before the bias.
    fn bias_gelu(x: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::gelu_erf(composed::add_row_bias::<Self>(x, bias))
    }

    /// The gradient of [`FusedOps::bias_gelu`] with respect to `x`,
    /// `dy * (Phi(x + bias) + (x + bias) * phi(x + bias))`; summed over rows, that of `bias`.
    fn bias_gelu_backward(
        x: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::gelu_erf_backward(composed::add_row_bias::<Self>(x, bias), grad)
    }

    /// RMSNorm over the last axis: `x * r * w`, `r = 1 / sqrt(mean(x^2) + eps)`, `w` of shape `[d]`.
    fn rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        composed::rms_norm::<Self>(x, weight, eps)
    }

    /// The gradient of [`FusedOps::rms_norm`] with respect to `x`:
    /// `r * (w * dy - x * r^2 * mean(w * dy * x))`.
    fn rms_norm_backward_x(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        composed::rms_norm_backward_x::<Self>(x, weight, grad, eps)
    }

    /// The gradient of [`FusedOps::rms_norm`] with respect to `w`: `dy * x * r` summed over rows, `[d]`.
    fn rms_norm_backward_weight(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        composed::rms_norm_backward_weight::<Self>(x, grad, eps)
    }

    /// LayerNorm over the last axis: `xhat * gamma + beta` with `xhat = (x - mean(x)) * r`,
    /// `r = 1 / sqrt(var(x) + eps)`; `gamma`, `beta` of shape `[d]`.
    fn layer_norm_affine(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
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
        Self::layer_norm_affine(
            composed::bias_residual::<Self>(x, bias, residual),
            gamma,
            beta,
            eps,
        )
    }

    /// The gradient of [`FusedOps::layer_norm_affine`] with respect to `x`:
    /// `r * (gamma dy - mean(gamma dy) - xhat * mean(gamma dy * xhat))`.
    fn layer_norm_backward_x(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        composed::layer_norm_backward_x::<Self>(x, gamma, grad, eps)
    }

    /// The gradient of [`FusedOps::layer_norm_affine`] with respect to `gamma`: `dy * xhat`
    /// summed over rows, `[d]`. (The gradient of `beta` is `dy` summed over rows.)
    fn layer_norm_backward_gamma(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        composed::layer_norm_backward_gamma::<Self>(x, grad, eps)
    }

    /// Attention without a backward pass (inference): `softmax(q k^T * scale + bias) v` per head,
    /// for `q [batch, seq_q, heads, d]`, `k`, `v [batch, seq_k, heads, d]` (the layout the
    /// projections produce, before any transpose) and a per-key `bias [batch, seq_k]` (the
    /// padding mask); the output is `[batch, seq_q, heads, d]`.
    fn attention_key_bias(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        composed::attention_key_bias::<Self>(q, k, v, bias, scale)
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
        composed::attention_dropout::<Self>(q, k, v, bias, scale, keep, seed)
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
        composed::attention_dropout_backward::<Self>(q, k, v, bias, grad, scale, keep, seed)
    }

    /// A decoder's causal attention, `softmax(q k^T * scale + bias + causal) v` per head, for
    /// `q [batch, seq_q, heads, d]`, `k`, `v [batch, seq_k, kv_heads, d]` (grouped key/value
    /// heads: query head `h` reads head `h / (heads / kv_heads)`) and a per-key
    /// `bias [batch, seq_k]` (the padding mask). Query `i` sits at position `seq_k - seq_q + i`
    /// and sees the keys at or before it, only the last `window` of them when `window > 0`. The
    /// output is `[batch, seq_q, heads, d]`.
    fn causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
        window: usize,
    ) -> FloatTensor<Self> {
        composed::causal_attention::<Self>(q, k, v, bias, scale, window)
    }

    /// The gradients of [`FusedOps::causal_attention`] with respect to `q`, `k` and `v`, from the
    /// output's gradient `grad [batch, seq_q, heads, d]`; the probabilities are computed again.
    #[allow(clippy::too_many_arguments)]
    fn causal_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        scale: f64,
        window: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        composed::causal_attention_backward::<Self>(q, k, v, bias, grad, scale, window)
    }

    /// Rotary embedding, `x cos + rotate_half(x) sin`, for `x [batch, heads, seq, d]` and
    /// `cos`, `sin` of `[batch, 1, seq, d]`; `rotate_half(x) = [-x2, x1]` for halves `x1`, `x2`.
    fn rotary(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        composed::rotary::<Self>(x, cos, sin)
    }

    /// The gradient of [`FusedOps::rotary`] with respect to `x`: `dy cos + [dy2 s2, -dy1 s1]`
    /// with `s = sin`.
    fn rotary_backward(
        grad: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        composed::rotary_backward::<Self>(grad, cos, sin)
    }

    /// A linear layer without bias, `x weight`, for `x [rows, d_in]` and `weight [d_in, d_out]`;
    /// the output is `[rows, d_out]`. Its backward pass is this product on transposed views:
    /// `dx = dy weight^T`, `dweight = x^T dy`.
    fn linear_layer(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        composed::matmul::<Self>(x, weight)
    }

    /// A linear layer, `x weight + bias`, with `bias [d_out]`.
    fn linear_layer_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        composed::linear_bias::<Self>(x, weight, bias)
    }

    /// A linear layer whose weight `W [d_out, d_in]` stays in its quantised blocks: `x Wᵀ` for
    /// `x [rows, d_in]`, `[rows, d_out]`, computed on the host from the blocks
    /// ([`crate::quant::matmul_xwt`]): the activations travel, the weight never exists in f32.
    /// (The GPU backends, which have no papertune kernels, take
    /// [`crate::quantized_linear`]'s own path instead.)
    fn quantized_linear(
        x: FloatTensor<Self>,
        weight: crate::quant::QuantWeight,
    ) -> FloatTensor<Self> {
        composed::quantized_linear_on_host::<Self>(x, weight)
    }

    /// The backward pass of [`FusedOps::quantized_linear`] to its input: `dx = dy W`,
    /// `[rows, d_in]` from `dy [rows, d_out]`.
    fn quantized_linear_backward(
        grad: FloatTensor<Self>,
        weight: crate::quant::QuantWeight,
    ) -> FloatTensor<Self> {
        composed::quantized_linear_backward_on_host::<Self>(grad, weight)
    }

    /// Batched matrix product of `a [b0, b1, m, k]` and `b [b0, b1, k, n]` (no broadcasting),
    /// `[b0, b1, m, n]`.
    fn batched_matmul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        composed::matmul::<Self>(a, b)
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
        composed::adamw_packed::<Self>(
            param,
            grad,
            moment_1,
            moment_2,
            lr,
            beta_1,
            beta_2,
            epsilon,
            weight_decay,
            correction_1,
            correction_2,
        )
    }

    /// Per-row negative log-likelihood of a target class, `logsumexp(x_r) - x_r[t_r]`, for
    /// logits `[rows, classes]` and targets `[rows]` given as float class ids (exact up to
    /// 2^24); the output is `[rows]`.
    fn token_nll(logits: FloatTensor<Self>, targets: FloatTensor<Self>) -> FloatTensor<Self> {
        composed::token_nll::<Self>(logits, targets)
    }

    /// The gradient of [`FusedOps::token_nll`] with respect to the logits:
    /// `dy_r * (softmax(x_r) - onehot(t_r))`, `[rows, classes]`.
    fn token_nll_backward(
        logits: FloatTensor<Self>,
        targets: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        composed::token_nll_backward::<Self>(logits, targets, grad)
    }
}

#[cfg(feature = "ndarray")]
impl FusedOps for burn::backend::NdArray {}
