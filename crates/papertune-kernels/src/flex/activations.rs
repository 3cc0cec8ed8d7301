//! Softmax over the last axis, SwiGLU, GeGLU (GELU's tanh form) and GELU (erf form), with their
//! backward passes, and
//! GELU of a product plus its bias: element-wise or row-wise kernels bound by arithmetic
//! (`exp`, `erf`), compiled for the widest vectors the CPU has.

use burn::backend::TensorMetadata;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::lanes::{dot_lanes, max_lanes, sum_lanes};
use super::{CHUNK, contiguous_f32, output, wide, widest, written_in_chunks};
use crate::composed;
use crate::math::{erf_approx, exp_approx};
use crate::simd::Width;

/// `softmax(x)` over the last axis, row by row: the maximum, the exponentials written once,
/// then scaled by the inverse of their sum.
pub(super) fn softmax_last(x: &FlexTensor) -> Option<FlexTensor> {
    let x = contiguous_f32(x)?;
    let row = x.shape().as_slice().last().copied().unwrap_or(1).max(1);
    let xs: &[f32] = x.storage();
    let mut out = vec![0.0f32; xs.len()];
    let rows_per_task = (CHUNK / row).max(1);
    out.par_chunks_mut(rows_per_task * row).zip(xs.par_chunks(rows_per_task * row)).for_each(
        |(o, x)| {
            widest(
                #[inline(always)]
                || {
                    for (o, x) in o.chunks_mut(row).zip(x.chunks(row)) {
                        let max = max_lanes(x);
                        for (o, &x) in o.iter_mut().zip(x) {
                            *o = exp_approx(x - max);
                        }
                        let inv = 1.0 / sum_lanes(o);
                        o.iter_mut().for_each(|o| *o *= inv);
                    }
                },
            )
        },
    );
    Some(output(out, &x))
}

/// `p * (dy - sum(dy * p))` over the last axis.
pub(super) fn softmax_last_backward(probs: &FlexTensor, grad: &FlexTensor) -> Option<FlexTensor> {
    let (p, g) = (contiguous_f32(probs)?, contiguous_f32(grad)?);
    if p.shape() != g.shape() {
        return None;
    }
    let row = p.shape().as_slice().last().copied().unwrap_or(1).max(1);
    let (ps, gs): (&[f32], &[f32]) = (p.storage(), g.storage());
    let mut out = vec![0.0f32; ps.len()];
    let rows_per_task = (CHUNK / row).max(1);
    out.par_chunks_mut(rows_per_task * row)
        .zip(ps.par_chunks(rows_per_task * row).zip(gs.par_chunks(rows_per_task * row)))
        .for_each(|(o, (p, g))| {
            wide(
                #[inline(always)]
                || {
                    for ((o, p), g) in o.chunks_mut(row).zip(p.chunks(row)).zip(g.chunks(row)) {
                        let dot = dot_lanes(p, g);
                        for ((o, p), g) in o.iter_mut().zip(p).zip(g) {
                            *o = p * (g - dot);
                        }
                    }
                },
            )
        });
    Some(output(out, &p))
}

/// `silu(gate) * up`.
pub(super) fn swiglu(gate: &FlexTensor, up: &FlexTensor) -> Option<FlexTensor> {
    zip_f32(
        gate,
        up,
        #[inline(always)]
        |g, u| g * sigmoid(g) * u,
    )
}

/// `dy * up * s * (1 + gate (1 - s))` with `s = sigmoid(gate)`.
pub(super) fn swiglu_backward_gate(
    gate: &FlexTensor,
    up: &FlexTensor,
    grad: &FlexTensor,
) -> Option<FlexTensor> {
    zip3_f32(
        gate,
        up,
        grad,
        #[inline(always)]
        |g, u, d| {
            let s = sigmoid(g);
            d * u * s * (1.0 + g - g * s)
        },
    )
}

/// `dy * silu(gate)`.
pub(super) fn swiglu_backward_up(gate: &FlexTensor, grad: &FlexTensor) -> Option<FlexTensor> {
    zip_f32(
        gate,
        grad,
        #[inline(always)]
        |g, d| d * g * sigmoid(g),
    )
}

/// `gelu_tanh(gate) * up`.
pub(super) fn geglu_tanh(gate: &FlexTensor, up: &FlexTensor) -> Option<FlexTensor> {
    zip_f32(
        gate,
        up,
        #[inline(always)]
        |g, u| g * gelu_tanh_sigmoid(g) * u,
    )
}

/// `dy * up * gelu_tanh'(gate)`.
pub(super) fn geglu_tanh_backward_gate(
    gate: &FlexTensor,
    up: &FlexTensor,
    grad: &FlexTensor,
) -> Option<FlexTensor> {
    zip3_f32(
        gate,
        up,
        grad,
        #[inline(always)]
        |g, u, d| d * u * gelu_tanh_slope(g),
    )
}

/// `dy * gelu_tanh(gate)`.
pub(super) fn geglu_tanh_backward_up(gate: &FlexTensor, grad: &FlexTensor) -> Option<FlexTensor> {
    zip_f32(
        gate,
        grad,
        #[inline(always)]
        |g, d| d * g * gelu_tanh_sigmoid(g),
    )
}

/// `sigmoid(2 u)` with `u = sqrt(2 / pi) (x + 0.044715 x^3)`: GELU's tanh form
/// `0.5 x (1 + tanh(u))` is `x` times it, without a `tanh` call.
#[inline(always)]
fn gelu_tanh_sigmoid(x: f32) -> f32 {
    const TWO_C: f32 = (2.0 * composed::GELU_TANH_C) as f32;
    const A: f32 = composed::GELU_TANH_A as f32;
    sigmoid(TWO_C * (x + A * x * x * x))
}

/// The derivative of `x s`, `s + x s (1 - s) 2 c (1 + 3 a x^2)`.
#[inline(always)]
fn gelu_tanh_slope(x: f32) -> f32 {
    const TWO_C: f32 = (2.0 * composed::GELU_TANH_C) as f32;
    const A3: f32 = (3.0 * composed::GELU_TANH_A) as f32;
    let s = gelu_tanh_sigmoid(x);
    s + x * s * (1.0 - s) * TWO_C * (1.0 + A3 * x * x)
}

/// GELU in its erf form.
pub(super) fn gelu_erf(x: &FlexTensor) -> Option<FlexTensor> {
    contiguous_f32(x).map(|x| map_f32(&x, gelu_value))
}

/// `dy * (Phi(x) + x phi(x))`.
pub(super) fn gelu_erf_backward(x: &FlexTensor, grad: &FlexTensor) -> Option<FlexTensor> {
    zip_f32(
        x,
        grad,
        #[inline(always)]
        |x, d| d * gelu_slope(x),
    )
}

/// GELU of `x [rows, d]` plus `bias [d]` on every row.
pub(super) fn bias_gelu(x: &FlexTensor, bias: &FlexTensor) -> Option<FlexTensor> {
    rows_plus_bias_f32(
        x,
        bias,
        None,
        #[inline(always)]
        |pre, _| gelu_value(pre),
    )
}

/// The gradient of [`bias_gelu`] with respect to `x` (summed over rows, that of `bias`).
pub(super) fn bias_gelu_backward(
    x: &FlexTensor,
    bias: &FlexTensor,
    grad: &FlexTensor,
) -> Option<FlexTensor> {
    rows_plus_bias_f32(
        x,
        bias,
        Some(grad),
        #[inline(always)]
        |pre, g| g * gelu_slope(pre),
    )
}

/// GELU in its erf form, `x Phi(x)`.
#[inline(always)]
fn gelu_value(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_approx(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// The derivative of [`gelu_value`], `Phi(x) + x phi(x)`.
#[inline(always)]
fn gelu_slope(x: f32) -> f32 {
    // 1 / sqrt(2 pi)
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    let cdf = 0.5 * (1.0 + erf_approx(x * std::f32::consts::FRAC_1_SQRT_2));
    let pdf = INV_SQRT_2PI * exp_approx(-0.5 * x * x);
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
    let out = written_in_chunks(
        xs.len(),
        chunk,
        Width::Widest,
        #[inline(always)]
        |start, o| {
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
        },
    );
    Some(output(out, &x))
}

/// One output element per input element, in parallel chunks.
fn map_f32(x: &FlexTensor, f: impl Fn(f32) -> f32 + Sync) -> FlexTensor {
    let xs: &[f32] = x.storage();
    let out = written_in_chunks(
        xs.len(),
        CHUNK,
        Width::Widest,
        #[inline(always)]
        |start, o| {
            let end = start + o.len();
            for (o, &x) in o.iter_mut().zip(&xs[start..end]) {
                o.write(f(x));
            }
        },
    );
    output(out, x)
}

/// `f(a, b)` element by element for two f32 tensors of the same shape; `None` otherwise.
fn zip_f32(
    a: &FlexTensor,
    b: &FlexTensor,
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> Option<FlexTensor> {
    let (a, b) = (contiguous_f32(a)?, contiguous_f32(b)?);
    if a.shape() != b.shape() {
        return None;
    }
    let (avs, bvs): (&[f32], &[f32]) = (a.storage(), b.storage());
    let out = written_in_chunks(
        avs.len(),
        CHUNK,
        Width::Widest,
        #[inline(always)]
        |start, o| {
            let end = start + o.len();
            for ((o, &a), &b) in o.iter_mut().zip(&avs[start..end]).zip(&bvs[start..end]) {
                o.write(f(a, b));
            }
        },
    );
    Some(output(out, &a))
}

/// `f(a, b, c)` element by element for three f32 tensors of the same shape; `None` otherwise.
fn zip3_f32(
    a: &FlexTensor,
    b: &FlexTensor,
    c: &FlexTensor,
    f: impl Fn(f32, f32, f32) -> f32 + Sync,
) -> Option<FlexTensor> {
    let (a, b, c) = (contiguous_f32(a)?, contiguous_f32(b)?, contiguous_f32(c)?);
    if a.shape() != b.shape() || a.shape() != c.shape() {
        return None;
    }
    let (avs, bvs, cvs): (&[f32], &[f32], &[f32]) = (a.storage(), b.storage(), c.storage());
    let out = written_in_chunks(
        avs.len(),
        CHUNK,
        Width::Widest,
        #[inline(always)]
        |start, o| {
            let end = start + o.len();
            for (((o, &a), &b), &c) in
                o.iter_mut().zip(&avs[start..end]).zip(&bvs[start..end]).zip(&cvs[start..end])
            {
                o.write(f(a, b, c));
            }
        },
    );
    Some(output(out, &a))
}

/// `1 / (1 + e^-x)` with [`exp_approx`], branch-free so that loops over it vectorise.
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp_approx(-x))
}
