//! A decoder's causal attention per batch element and head, on the projections' layout, with
//! grouped key/value heads and an optional sliding window: the forward kernel, and the backward
//! kernel that computes the probabilities again instead of keeping them.
//!
//! Queries go in blocks of [`BLOCK`] rows, and each block's products only span the keys some
//! query of the block can see: about half the work of the full `seq_q x seq_k` scores in
//! self-attention, less with a window.

use burn::backend::TensorMetadata;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::lanes::{dot_lanes, max_lanes, sum_lanes};
use super::{contiguous_f32, output, widest};
use crate::math::exp_approx;
use crate::matrix::Matrix;

/// Query rows per block.
const BLOCK: usize = 64;

/// The sizes of a causal attention's inputs but the batch: `q [batch, seq_q, heads, d]`,
/// `k`, `v [batch, seq_k, kv_heads, d]`, `bias [batch, seq_k]`; query `i` sits at position
/// `seq_k - seq_q + i` and sees the keys at or before it, within `window` of it when set.
#[derive(Clone, Copy)]
struct CausalShape {
    seq_q: usize,
    seq_k: usize,
    heads: usize,
    kv_heads: usize,
    d: usize,
    window: Option<usize>,
}

impl CausalShape {
    /// The sizes of contiguous f32 inputs that fit together and are not empty.
    fn of(
        q: &FlexTensor,
        k: &FlexTensor,
        v: &FlexTensor,
        bias: &FlexTensor,
        window: usize,
    ) -> Option<Self> {
        let &[batch, seq_q, heads, d] = q.shape().as_slice() else { return None };
        let &[_, seq_k, kv_heads, _] = k.shape().as_slice() else { return None };
        let fits = k.shape().as_slice() == [batch, seq_k, kv_heads, d]
            && v.shape() == k.shape()
            && bias.shape().as_slice() == [batch, seq_k]
            && kv_heads > 0
            && heads % kv_heads == 0
            && seq_q <= seq_k;
        let window = (window > 0).then_some(window);
        (fits && batch * seq_q * heads * d != 0).then_some(CausalShape {
            seq_q,
            seq_k,
            heads,
            kv_heads,
            d,
            window,
        })
    }

    /// The key/value head that query head `h` reads.
    fn kv_head(self, h: usize) -> usize {
        h / (self.heads / self.kv_heads)
    }

    /// The keys `lo..hi` that some query of rows `i0..i1` sees.
    fn keys(self, i0: usize, i1: usize) -> (usize, usize) {
        let past = self.seq_k - self.seq_q;
        let lo = self.window.map_or(0, |w| (past + i0 + 1).saturating_sub(w));
        (lo, past + i1)
    }

    /// The keys `lo..=last` that query `i` sees, as columns of its block's keys starting at
    /// `block_lo`.
    fn visible(self, i: usize, block_lo: usize) -> (usize, usize) {
        let position = self.seq_k - self.seq_q + i;
        let lo = self.window.map_or(0, |w| (position + 1).saturating_sub(w));
        (lo - block_lo, position - block_lo)
    }
}

/// Rows `rows` (`i0..i1`) of `[rows, cols]` at `rows * stride` for head `h` of width `d`.
fn head_rows(data: &[f32], i0: usize, i1: usize, stride: usize, h: usize, d: usize) -> Matrix<'_> {
    Matrix::strided(&data[i0 * stride + h * d..], i1 - i0, d, stride, 1)
}

/// The probabilities of query rows `i0..i1` of one head over keys `lo..hi`, into `probs`
/// (`[i1 - i0, hi - lo]`, rows `hi - lo` apart): the scores by gemm, then per row the bias, the
/// softmax over the keys the query sees, and 0 for the others.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn block_probs(
    shape: CausalShape,
    probs: &mut [f32],
    q: Matrix<'_>,
    k: Matrix<'_>,
    key_bias: &[f32],
    scale: f32,
    i0: usize,
    lo: usize,
) {
    let width = k.rows;
    let probs = &mut probs[..q.rows * width];
    // SAFETY: `probs` holds the rows * width values written, rows width apart.
    unsafe {
        q.product_into(
            k.transposed(),
            probs.as_mut_ptr(),
            width,
            false,
            scale,
            gemm::Parallelism::None,
        )
    };
    for (r, row) in probs.chunks_mut(width).enumerate() {
        let (first, last) = shape.visible(i0 + r, lo);
        let seen = &mut row[first..=last];
        seen.iter_mut().zip(&key_bias[lo + first..]).for_each(|(s, b)| *s += b);
        let max = max_lanes(seen);
        seen.iter_mut().for_each(|s| *s = exp_approx(*s - max));
        let inv = 1.0 / sum_lanes(seen);
        seen.iter_mut().for_each(|s| *s *= inv);
        row[..first].fill(0.0);
        row[last + 1..].fill(0.0);
    }
}

/// `softmax(q k^T * scale + bias, causal) v` per batch element and head; `None` when the
/// shapes or dtypes do not fit.
pub(super) fn causal_attention_kernel(
    q: &FlexTensor,
    k: &FlexTensor,
    v: &FlexTensor,
    bias: &FlexTensor,
    scale: f32,
    window: usize,
) -> Option<FlexTensor> {
    let (q, k, v, bias) =
        (contiguous_f32(q)?, contiguous_f32(k)?, contiguous_f32(v)?, contiguous_f32(bias)?);
    let shape = CausalShape::of(&q, &k, &v, &bias, window)?;
    let CausalShape { seq_q, seq_k, heads, kv_heads, d, .. } = shape;
    let (qs, ks, vs, bs): (&[f32], &[f32], &[f32], &[f32]) =
        (q.storage(), k.storage(), v.storage(), bias.storage());
    let (q_row, kv_row) = (heads * d, kv_heads * d);
    let mut out = Vec::with_capacity(qs.len());
    out.spare_capacity_mut()[..qs.len()].par_chunks_mut(seq_q * q_row).enumerate().for_each_init(
        || vec![0.0f32; BLOCK * seq_k],
        |probs, (b, o)| {
            widest(
                #[inline(always)]
                || {
                    let q_rows = &qs[b * seq_q * q_row..(b + 1) * seq_q * q_row];
                    let (k_rows, v_rows) = (
                        &ks[b * seq_k * kv_row..(b + 1) * seq_k * kv_row],
                        &vs[b * seq_k * kv_row..(b + 1) * seq_k * kv_row],
                    );
                    let key_bias = &bs[b * seq_k..(b + 1) * seq_k];
                    for h in 0..heads {
                        let kv = shape.kv_head(h);
                        for i0 in (0..seq_q).step_by(BLOCK) {
                            let i1 = (i0 + BLOCK).min(seq_q);
                            let (lo, hi) = shape.keys(i0, i1);
                            let q_block = head_rows(q_rows, i0, i1, q_row, h, d);
                            block_probs(
                                shape,
                                probs,
                                q_block,
                                head_rows(k_rows, lo, hi, kv_row, kv, d),
                                key_bias,
                                scale,
                                i0,
                                lo,
                            );
                            let p = Matrix::strided(probs, i1 - i0, hi - lo, hi - lo, 1);
                            // SAFETY: `o` holds this batch element's seq_q * q_row outputs; rows i0..i1
                            // of head h sit at i * q_row + h * d + j inside it. Every (block, head)
                            // writes its own values, so once all have run each value is written.
                            unsafe {
                                let dst = o.as_mut_ptr().cast::<f32>().add(i0 * q_row + h * d);
                                p.product_into(
                                    head_rows(v_rows, lo, hi, kv_row, kv, d),
                                    dst,
                                    q_row,
                                    false,
                                    1.0,
                                    gemm::Parallelism::None,
                                );
                            }
                        }
                    }
                },
            )
        },
    );
    // SAFETY: every value was written above.
    unsafe { out.set_len(qs.len()) };
    Some(output(out, &q))
}

/// The gradients of [`causal_attention_kernel`] with respect to `q`, `k` and `v` from the
/// output's gradient `grad`, per batch element, head and block of queries: the probabilities
/// computed again, then `dv += P^T dy`, `dP = dy v^T`, `dS = P (dP - rowsum(dP P))`,
/// `dq = scale dS k` and `dk += scale dS^T q` (a key/value head sums over the query heads that
/// share it). `None` when the shapes or dtypes do not fit.
pub(super) fn causal_attention_backward_kernel(
    tensors: [&FlexTensor; 5],
    scale: f32,
    window: usize,
) -> Option<[FlexTensor; 3]> {
    let [q, k, v, bias, grad] = tensors.map(contiguous_f32);
    let (q, k, v, bias, grad) = (q?, k?, v?, bias?, grad?);
    let shape = CausalShape::of(&q, &k, &v, &bias, window)?;
    if grad.shape() != q.shape() {
        return None;
    }
    let CausalShape { seq_q, seq_k, heads, kv_heads, d, .. } = shape;
    let [qs, ks, vs, bs, gs]: [&[f32]; 5] =
        [q.storage(), k.storage(), v.storage(), bias.storage(), grad.storage()];
    let (q_row, kv_row) = (heads * d, kv_heads * d);
    // dk and dv sum over blocks and heads: they start at 0.
    let (mut dq, mut dk, mut dv) =
        (Vec::with_capacity(qs.len()), vec![0.0f32; ks.len()], vec![0.0f32; ks.len()]);
    let per_batch = dq.spare_capacity_mut()[..qs.len()]
        .par_chunks_mut(seq_q * q_row)
        .zip(dk.par_chunks_mut(seq_k * kv_row))
        .zip(dv.par_chunks_mut(seq_k * kv_row));
    per_batch.enumerate().for_each_init(
        || [(); 2].map(|_| vec![0.0f32; BLOCK * seq_k]),
        |[probs, d_scores], (b, ((dq, dk), dv))| {
            widest(
                #[inline(always)]
                || {
                    let q_rows = &qs[b * seq_q * q_row..(b + 1) * seq_q * q_row];
                    let g_rows = &gs[b * seq_q * q_row..(b + 1) * seq_q * q_row];
                    let (k_rows, v_rows) = (
                        &ks[b * seq_k * kv_row..(b + 1) * seq_k * kv_row],
                        &vs[b * seq_k * kv_row..(b + 1) * seq_k * kv_row],
                    );
                    let key_bias = &bs[b * seq_k..(b + 1) * seq_k];
                    let dq = dq.as_mut_ptr().cast::<f32>();
                    let (dk, dv) = (dk.as_mut_ptr(), dv.as_mut_ptr());
                    for h in 0..heads {
                        let kv = shape.kv_head(h);
                        for i0 in (0..seq_q).step_by(BLOCK) {
                            let i1 = (i0 + BLOCK).min(seq_q);
                            let (lo, hi) = shape.keys(i0, i1);
                            let width = hi - lo;
                            let (q_block, g_block) = (
                                head_rows(q_rows, i0, i1, q_row, h, d),
                                head_rows(g_rows, i0, i1, q_row, h, d),
                            );
                            let (k_block, v_block) = (
                                head_rows(k_rows, lo, hi, kv_row, kv, d),
                                head_rows(v_rows, lo, hi, kv_row, kv, d),
                            );
                            block_probs(shape, probs, q_block, k_block, key_bias, scale, i0, lo);
                            let p = Matrix::strided(probs, i1 - i0, width, width, 1);
                            let d_scores = &mut d_scores[..(i1 - i0) * width];
                            // SAFETY (the four products): `d_scores` holds (i1 - i0) * width values,
                            // rows width apart; `dq` holds this batch element's seq_q * q_row values and
                            // `dk`, `dv` its seq_k * kv_row, and the rows written (i0..i1 of head h,
                            // lo..hi of head kv) lie inside them. This task alone touches them.
                            unsafe {
                                p.transposed().product_into(
                                    g_block,
                                    dv.add(lo * kv_row + kv * d),
                                    kv_row,
                                    true,
                                    1.0,
                                    gemm::Parallelism::None,
                                );
                                g_block.product_into(
                                    v_block.transposed(),
                                    d_scores.as_mut_ptr(),
                                    width,
                                    false,
                                    1.0,
                                    gemm::Parallelism::None,
                                );
                            }
                            for (g, p) in d_scores.chunks_mut(width).zip(probs.chunks(width)) {
                                let dot = dot_lanes(g, p);
                                g.iter_mut().zip(p).for_each(|(g, &p)| *g = p * (*g - dot));
                            }
                            let ds = Matrix::strided(d_scores, i1 - i0, width, width, 1);
                            unsafe {
                                ds.product_into(
                                    k_block,
                                    dq.add(i0 * q_row + h * d),
                                    q_row,
                                    false,
                                    scale,
                                    gemm::Parallelism::None,
                                );
                                ds.transposed().product_into(
                                    q_block,
                                    dk.add(lo * kv_row + kv * d),
                                    kv_row,
                                    true,
                                    scale,
                                    gemm::Parallelism::None,
                                );
                            }
                        }
                    }
                },
            )
        },
    );
    // SAFETY: every value of dq was written above (each block of rows of each head once).
    unsafe { dq.set_len(qs.len()) };
    Some([output(dq, &q), output(dk, &k), output(dv, &k)])
}
