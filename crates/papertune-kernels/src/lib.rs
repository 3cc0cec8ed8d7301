//! papertune's bottom layer: the tensor operations its models and its trainer are made of, as
//! fused operations with hand-written backward passes and CPU kernels, plus the seeded dropout
//! streams that keep training reproducible. It knows nothing of models, data or training loops.
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
//!   backward pass rather than kept;
//! - linear layers and batched products: `dx = dy w^T`, `dw = x^T dy`, the same product on
//!   transposed views;
//! - the per-row cross-entropy `logsumexp(x) - x[t]`: `dx = dy (softmax(x) - onehot(t))`;
//! - the AdamW update of a parameter in one pass.
//!
//! The rooms: the public functions by family (`ops/`), the [`FusedOps`] backend extension with
//! the formulas' defaults (`backend.rs`, `composed.rs`), the backward passes (`autodiff.rs`),
//! and the flex backend's f32 kernels by family (`flex/`: attention, products, norms,
//! activations, rotary, loss, optimizer), each one read of every input and one write of every
//! output, rows in parallel, polynomial `exp` and `erf` in straight-line code, loops compiled
//! for AVX2 or AVX-512 at run time. Other backends and dtypes compose the same formulas from
//! the backend's own operations; on the GPU backends burn's fusion does the kernels' work.
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//!
//! let x = Tensor::<2>::from_floats([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], &Device::default());
//! let p = papertune_kernels::softmax_last(x);
//! let sums: Vec<f32> = p.sum_dim(1).into_data().try_to_vec::<f32>().unwrap();
//! assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-6));
//! ```

// burn 0.22 marks its ndarray backend deprecated; papertune still supports and tests it.
#![allow(deprecated)]
// Without a CPU backend feature the extension macro routes nothing, and the scalar arguments of
// its generated Dispatch methods and the backend match go unused.
#![cfg_attr(
    not(any(feature = "flex", feature = "ndarray")),
    allow(unused_variables, unused_imports)
)]

mod autodiff;
mod backend;
mod composed;
pub mod dropout;
#[cfg(feature = "flex")]
mod flex;
#[cfg(feature = "flex")]
mod math;
mod matrix;
mod memory;
mod ops;
pub mod quant;
pub mod random;
mod send_ptr;
mod simd;
#[cfg(test)]
mod testing;

pub use backend::FusedOps;
pub use memory::keep_freed_memory;
pub use ops::{
    AdamWStep, adamw_update, attention_dropout, attention_key_bias, batched_matmul,
    causal_attention, geglu_tanh, gelu, layer_norm, linear, linear_gelu, linear_layer,
    linear_residual_layer_norm, quantized_linear, rms_norm, rotary, softmax_last, supported,
    swiglu, token_nll,
};
