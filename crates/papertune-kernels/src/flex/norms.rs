//! RMSNorm and LayerNorm over the last axis: RMSNorm's forward pass, the backward passes of
//! both (LayerNorm's forward is flex's own kernel), and a product's bias, the residual and
//! LayerNorm in one pass. Memory-bound: one read of each input, one write of each output.

use burn::backend::DType;
use burn::backend::TensorMetadata;
use burn::tensor::Bytes;
use burn_flex::{FlexTensor, Layout};
use rayon::prelude::*;

use super::lanes::{dot_lanes, dot_shifted, sum_lanes};
use super::{CHUNK, contiguous_f32, output, wide, written_in_chunks};
use crate::simd::Width;

/// `x * r * w` with `r = 1 / sqrt(mean(x^2) + eps)` per row.
pub(super) fn rms_norm(x: &FlexTensor, weight: &FlexTensor, eps: f64) -> Option<FlexTensor> {
    let (xc, w) = (contiguous_f32(x)?, contiguous_f32(weight)?);
    let d = w.shape().num_elements();
    if xc.shape().as_slice().last() != Some(&d) || d == 0 {
        return None;
    }
    let (xs, ws): (&[f32], &[f32]) = (xc.storage(), w.storage());
    let mut out = vec![0.0f32; xs.len()];
    let rows_per_task = (CHUNK / d).max(1);
    out.par_chunks_mut(rows_per_task * d).zip(xs.par_chunks(rows_per_task * d)).for_each(
        |(o, x)| {
            wide(
                #[inline(always)]
                || {
                    for (o, x) in o.chunks_mut(d).zip(x.chunks(d)) {
                        let r = inv_rms(x, eps);
                        for ((o, &x), &w) in o.iter_mut().zip(x).zip(ws) {
                            *o = x * r * w;
                        }
                    }
                },
            )
        },
    );
    Some(output(out, &xc))
}

/// `r * (w * dy - x * r^2 * mean(w * dy * x))` per row.
pub(super) fn rms_norm_backward_x(
    x: &FlexTensor,
    weight: &FlexTensor,
    grad: &FlexTensor,
    eps: f64,
) -> Option<FlexTensor> {
    map_rows_weighted_f32(
        x,
        weight,
        grad,
        #[inline(always)]
        |x, g, w, o| {
            let r = inv_rms(x, eps);
            // mean(w * dy * x): the weight folded into dy first.
            for ((o, &g), &w) in o.iter_mut().zip(g).zip(w) {
                *o = g * w;
            }
            let coef = r * r * dot_lanes(o, x) / x.len() as f32;
            for (o, &x) in o.iter_mut().zip(x) {
                *o = r * (*o - x * coef);
            }
        },
    )
}

/// `dy * x * r` summed over rows.
pub(super) fn rms_norm_backward_weight(
    x: &FlexTensor,
    grad: &FlexTensor,
    eps: f64,
) -> Option<FlexTensor> {
    sum_rows_f32(
        x,
        grad,
        #[inline(always)]
        |x, g, sums| {
            let r = inv_rms(x, eps);
            for ((s, &x), &g) in sums.iter_mut().zip(x).zip(g) {
                *s += g * x * r;
            }
        },
    )
}

/// `r * (gamma dy - mean(gamma dy) - xhat * mean(gamma dy * xhat))` per row.
pub(super) fn layer_norm_backward_x(
    x: &FlexTensor,
    gamma: &FlexTensor,
    grad: &FlexTensor,
    eps: f64,
) -> Option<FlexTensor> {
    map_rows_weighted_f32(
        x,
        gamma,
        grad,
        #[inline(always)]
        |x, g, w, o| {
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
        },
    )
}

/// `dy * xhat` summed over rows.
pub(super) fn layer_norm_backward_gamma(
    x: &FlexTensor,
    grad: &FlexTensor,
    eps: f64,
) -> Option<FlexTensor> {
    sum_rows_f32(
        x,
        grad,
        #[inline(always)]
        |x, g, sums| {
            let (mean, r) = mean_inv_std(x, eps);
            for ((s, &x), &g) in sums.iter_mut().zip(x).zip(g) {
                *s += g * (x - mean) * r;
            }
        },
    )
}

/// [`FusedOps::bias_residual_layer_norm`] on `[x, bias, residual, gamma, beta]`: per row, the
/// sum into a row buffer, its mean and spread, then the normalised row written once. `None`
/// when the shapes or dtypes do not fit.
pub(super) fn bias_residual_layer_norm(tensors: [&FlexTensor; 5], eps: f64) -> Option<FlexTensor> {
    let [x, bias, residual, gamma, beta] = tensors.map(contiguous_f32);
    let (x, bias, residual, gamma, beta) = (x?, bias?, residual?, gamma?, beta?);
    let &[_, d] = x.shape().as_slice() else { return None };
    let vector_fits = [&bias, &gamma, &beta].iter().all(|t| t.shape().as_slice() == [d]);
    if residual.shape() != x.shape() || !vector_fits || d == 0 {
        return None;
    }
    let [xs, bs, rs, gs, betas]: [&[f32]; 5] =
        [x.storage(), bias.storage(), residual.storage(), gamma.storage(), beta.storage()];
    let chunk = (CHUNK / d).max(1) * d; // whole rows per task
    let out = written_in_chunks(
        xs.len(),
        chunk,
        Width::Avx2,
        #[inline(always)]
        |start, o| {
            let end = start + o.len();
            let mut sum = vec![0.0f32; d];
            let rows = o
                .chunks_exact_mut(d)
                .zip(xs[start..end].chunks_exact(d))
                .zip(rs[start..end].chunks_exact(d));
            for ((o, x), r) in rows {
                for (((s, &x), &b), &r) in sum.iter_mut().zip(x).zip(bs).zip(r) {
                    *s = x + b + r;
                }
                let (mean, inv_std) = mean_inv_std(&sum, eps);
                for (((o, &s), &g), &b) in o.iter_mut().zip(&sum).zip(gs).zip(betas) {
                    o.write((s - mean) * inv_std * g + b);
                }
            }
        },
    );
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
    out.par_chunks_mut(chunk).zip(xs.par_chunks(chunk).zip(gs.par_chunks(chunk))).for_each(
        |(o, (x, g))| {
            wide(
                #[inline(always)]
                || {
                    for ((o, x), g) in o.chunks_mut(d).zip(x.chunks(d)).zip(g.chunks(d)) {
                        per_row(x, g, ws, o);
                    }
                },
            )
        },
    );
    Some(output(out, &x))
}

/// `[d]`: for f32 `x` and `g` of the same shape `[.., d]`, the sum over rows of what
/// `add_row(x_row, g_row, sums)` adds into `sums`; `None` for other dtypes or shapes. Chunks
/// of rows are summed in parallel and their partial sums added in chunk order, so the result
/// does not depend on the scheduling (a rayon `reduce` would add them in whatever tree the
/// work stealing made).
fn sum_rows_f32(
    x: &FlexTensor,
    g: &FlexTensor,
    add_row: impl Fn(&[f32], &[f32], &mut [f32]) + Sync,
) -> Option<FlexTensor> {
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
        .map(|(x, g)| {
            wide(
                #[inline(always)]
                || {
                    let mut sums = vec![0.0f32; d];
                    for (x, g) in x.chunks(d).zip(g.chunks(d)) {
                        add_row(x, g, &mut sums);
                    }
                    sums
                },
            )
        })
        .collect();
    let mut total = vec![0.0f32; d];
    for partial in &partials {
        total.iter_mut().zip(partial).for_each(|(t, p)| *t += p);
    }
    Some(FlexTensor::new(
        Bytes::from_elems(total),
        Layout::contiguous(burn::tensor::Shape::new([d])),
        DType::F32,
    ))
}

/// `mean(x)` and `1 / sqrt(var(x) + eps)` of one row (two passes, so no cancellation).
#[inline(always)]
fn mean_inv_std(x: &[f32], eps: f64) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = sum_lanes(x) / n;
    let var = dot_shifted(x, mean, x, mean) / n;
    (mean, 1.0 / (var + eps as f32).sqrt())
}

/// `1 / sqrt(mean(x^2) + eps)` of one row.
#[inline(always)]
fn inv_rms(x: &[f32], eps: f64) -> f32 {
    let mean_square = dot_lanes(x, x) / x.len() as f32;
    1.0 / (mean_square + eps as f32).sqrt()
}
