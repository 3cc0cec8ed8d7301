//! Single-pass f32 kernels for the flex backend, by family.
//!
//! Each kernel reads flex tensors in place and returns `None` for inputs it does not take
//! (another dtype, shapes that do not fit); the trait implementation below then falls back to
//! the composed formula of [`crate::composed`], or to flex's own operation. Rows are split over
//! rayon's pool in chunks whose size does not depend on the thread count, and each chunk runs
//! its loops compiled for the vector width of its family ([`crate::simd`]).

mod activations;
mod attention;
mod causal_attention;
mod lanes;
mod loss;
mod norms;
mod optimizer;
mod products;
mod rotary;

use std::mem::MaybeUninit;

use burn::backend::Flex;
use burn::backend::ops::ActivationOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{DType, TensorMetadata};
use burn::tensor::Bytes;
use burn_flex::{FlexTensor, Layout};
use rayon::prelude::*;

use crate::backend::FusedOps;
use crate::composed;
use crate::simd::{Width, vectorised};
use attention::MaskSeed;
use optimizer::AdamWScalars;

/// Elements per parallel task for element-wise kernels.
const CHUNK: usize = 1 << 14;

impl FusedOps for Flex {
    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        activations::softmax_last(&x).unwrap_or_else(|| {
            let last = x.shape().num_dims() - 1;
            <Flex as ActivationOps<Flex>>::softmax(x, last)
        })
    }

    fn softmax_last_backward(
        probs: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        activations::softmax_last_backward(&probs, &grad)
            .unwrap_or_else(|| composed::softmax_backward::<Flex>(probs, grad))
    }

    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        activations::swiglu(&gate, &up).unwrap_or_else(|| composed::swiglu::<Flex>(gate, up))
    }

    fn swiglu_backward_gate(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        activations::swiglu_backward_gate(&gate, &up, &grad)
            .unwrap_or_else(|| composed::swiglu_backward_gate::<Flex>(gate, up, grad))
    }

    fn swiglu_backward_up(gate: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        activations::swiglu_backward_up(&gate, &grad)
            .unwrap_or_else(|| composed::swiglu_backward_up::<Flex>(gate, grad))
    }

    fn geglu_tanh(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        activations::geglu_tanh(&gate, &up)
            .unwrap_or_else(|| composed::geglu_tanh::<Flex>(gate, up))
    }

    fn geglu_tanh_backward_gate(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        activations::geglu_tanh_backward_gate(&gate, &up, &grad)
            .unwrap_or_else(|| composed::geglu_tanh_backward_gate::<Flex>(gate, up, grad))
    }

    fn geglu_tanh_backward_up(
        gate: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        activations::geglu_tanh_backward_up(&gate, &grad)
            .unwrap_or_else(|| composed::geglu_tanh_backward_up::<Flex>(gate, grad))
    }

    fn gelu_erf(x: FloatTensor<Self>) -> FloatTensor<Self> {
        activations::gelu_erf(&x).unwrap_or_else(|| <Flex as ActivationOps<Flex>>::gelu(x))
    }

    fn gelu_erf_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        activations::gelu_erf_backward(&x, &grad)
            .unwrap_or_else(|| <Flex as ActivationOps<Flex>>::gelu_backward(x, grad))
    }

    fn bias_gelu(x: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        activations::bias_gelu(&x, &bias)
            .unwrap_or_else(|| Self::gelu_erf(composed::add_row_bias::<Flex>(x, bias)))
    }

    fn bias_gelu_backward(
        x: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        activations::bias_gelu_backward(&x, &bias, &grad).unwrap_or_else(|| {
            Self::gelu_erf_backward(composed::add_row_bias::<Flex>(x, bias), grad)
        })
    }

    fn rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        norms::rms_norm(&x, &weight, eps)
            .unwrap_or_else(|| composed::rms_norm::<Flex>(x, weight, eps))
    }

    fn rms_norm_backward_x(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        norms::rms_norm_backward_x(&x, &weight, &grad, eps)
            .unwrap_or_else(|| composed::rms_norm_backward_x::<Flex>(x, weight, grad, eps))
    }

    fn rms_norm_backward_weight(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        norms::rms_norm_backward_weight(&x, &grad, eps)
            .unwrap_or_else(|| composed::rms_norm_backward_weight::<Flex>(x, grad, eps))
    }

    // The forward pass of LayerNorm is flex's own kernel (the trait's default).

    fn layer_norm_backward_x(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        norms::layer_norm_backward_x(&x, &gamma, &grad, eps)
            .unwrap_or_else(|| composed::layer_norm_backward_x::<Flex>(x, gamma, grad, eps))
    }

    fn layer_norm_backward_gamma(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        norms::layer_norm_backward_gamma(&x, &grad, eps)
            .unwrap_or_else(|| composed::layer_norm_backward_gamma::<Flex>(x, grad, eps))
    }

    fn bias_residual_layer_norm(
        x: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        norms::bias_residual_layer_norm([&x, &bias, &residual, &gamma, &beta], eps).unwrap_or_else(
            || {
                Self::layer_norm_affine(
                    composed::bias_residual::<Flex>(x, bias, residual),
                    gamma,
                    beta,
                    eps,
                )
            },
        )
    }

    fn attention_key_bias(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        attention::attention_kernel(&q, &k, &v, &bias, scale as f32, None)
            .unwrap_or_else(|| composed::attention_key_bias::<Flex>(q, k, v, bias, scale))
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
        attention::attention_kernel(&q, &k, &v, &bias, scale as f32, mask).unwrap_or_else(|| {
            composed::attention_dropout::<Flex>(q, k, v, bias, scale, keep, seed)
        })
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
        match attention::attention_backward_kernel([&q, &k, &v, &bias, &grad], scale as f32, mask) {
            Some([dq, dk, dv]) => (dq, dk, dv),
            None => {
                composed::attention_dropout_backward::<Flex>(q, k, v, bias, grad, scale, keep, seed)
            }
        }
    }

    fn causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
        window: usize,
    ) -> FloatTensor<Self> {
        causal_attention::causal_attention_kernel(&q, &k, &v, &bias, scale as f32, window)
            .unwrap_or_else(|| composed::causal_attention::<Flex>(q, k, v, bias, scale, window))
    }

    fn causal_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        scale: f64,
        window: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        match causal_attention::causal_attention_backward_kernel(
            [&q, &k, &v, &bias, &grad],
            scale as f32,
            window,
        ) {
            Some([dq, dk, dv]) => (dq, dk, dv),
            None => composed::causal_attention_backward::<Flex>(q, k, v, bias, grad, scale, window),
        }
    }

    fn rotary(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        rotary::rotary(&x, &cos, &sin, false)
            .unwrap_or_else(|| composed::rotary::<Flex>(x, cos, sin))
    }

    fn rotary_backward(
        grad: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        rotary::rotary(&grad, &cos, &sin, true)
            .unwrap_or_else(|| composed::rotary_backward::<Flex>(grad, cos, sin))
    }

    fn linear_layer(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        products::linear_layer(&x, &weight).unwrap_or_else(|| composed::matmul::<Flex>(x, weight))
    }

    fn linear_layer_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        products::linear_layer_bias(&x, &weight, &bias)
            .unwrap_or_else(|| composed::linear_bias::<Flex>(x, weight, bias))
    }

    fn batched_matmul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        products::batched_matmul(&a, &b).unwrap_or_else(|| composed::matmul::<Flex>(a, b))
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
        let scalars = AdamWScalars {
            lr: lr as f32,
            beta_1: beta_1 as f32,
            beta_2: beta_2 as f32,
            epsilon: epsilon as f32,
            decay: (1.0 - lr * weight_decay) as f32,
            inv_c1: (1.0 / correction_1) as f32,
            inv_c2: (1.0 / correction_2) as f32,
        };
        optimizer::adamw_packed([&param, &grad, &moment_1, &moment_2], scalars).unwrap_or_else(
            || {
                composed::adamw_packed::<Flex>(
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
            },
        )
    }

    fn token_nll(logits: FloatTensor<Self>, targets: FloatTensor<Self>) -> FloatTensor<Self> {
        loss::token_nll(&logits, &targets)
            .unwrap_or_else(|| composed::token_nll::<Flex>(logits, targets))
    }

    fn token_nll_backward(
        logits: FloatTensor<Self>,
        targets: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        loss::token_nll_backward(&logits, &targets, &grad)
            .unwrap_or_else(|| composed::token_nll_backward::<Flex>(logits, targets, grad))
    }
}

/// `t` as a contiguous f32 tensor (a view when it already is one); `None` for other dtypes.
fn contiguous_f32(t: &FlexTensor) -> Option<FlexTensor> {
    (t.dtype() == DType::F32).then(|| t.to_contiguous())
}

/// A contiguous f32 tensor of `like`'s shape holding `values`.
fn output(values: Vec<f32>, like: &FlexTensor) -> FlexTensor {
    FlexTensor::new(Bytes::from_elems(values), Layout::contiguous(like.shape()), DType::F32)
}

/// `len` values written in parallel chunks of `chunk` by `fill(start, values)`, where
/// `start` is the index of the chunk's first value; `fill` must write every value of its
/// chunk. Nothing is zeroed first: each value is written once.
fn written_in_chunks(
    len: usize,
    chunk: usize,
    width: Width,
    fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    let chunk = chunk.max(1);
    let mut out = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len].par_chunks_mut(chunk).enumerate().for_each(|(i, values)| {
        vectorised(
            width,
            #[inline(always)]
            || fill(i * chunk, values),
        )
    });
    // SAFETY: the chunks cover 0..len and `fill` wrote every value of each.
    unsafe { out.set_len(len) };
    out
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
