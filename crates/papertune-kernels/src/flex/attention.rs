//! Attention per batch element and head on the projections' own layout (no transposes): the
//! inference kernel, the training kernel with the dropout mask of the probabilities drawn in
//! cache, and its backward pass, which computes the probabilities and the mask again instead
//! of keeping `[batch, heads, seq_q, seq_k]` tensors.

use burn::backend::TensorMetadata;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::lanes::{dot_lanes, max_lanes, sum_lanes};
use super::{contiguous_f32, output, widest};
use crate::math::exp_approx;
use crate::matrix::Matrix;

/// The dropout mask of a training attention: the one [`crate::dropout`] draws from `seed`
/// for `keep`, laid out `[batch, heads, seq_q, seq_k]`.
#[derive(Clone, Copy)]
pub(super) struct MaskSeed {
    pub keep: f64,
    pub seed: u64,
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
        if k.shape().as_slice() != [batch, seq_k, heads, d]
            || v.shape() != k.shape()
            || bias.shape().as_slice() != [batch, seq_k]
        {
            return None;
        }
        (batch * seq_q * seq_k * heads * d != 0).then_some(AttentionShape {
            seq_q,
            seq_k,
            heads,
            d,
        })
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
fn head_probs(
    probs: &mut [f32],
    q_head: Matrix<'_>,
    k_head: Matrix<'_>,
    key_bias: &[f32],
    scale: f32,
) {
    let seq_k = k_head.rows;
    assert_eq!(probs.len(), q_head.rows * seq_k);
    // SAFETY: `probs` holds the seq_q * seq_k values written, rows seq_k apart.
    unsafe {
        q_head.product_into(
            k_head.transposed(),
            probs.as_mut_ptr(),
            seq_k,
            false,
            scale,
            gemm::Parallelism::None,
        )
    };
    for s in probs.chunks_mut(seq_k) {
        s.iter_mut().zip(key_bias).for_each(|(s, b)| *s += b);
        let max = max_lanes(s);
        s.iter_mut().for_each(|s| *s = exp_approx(*s - max));
        let inv = 1.0 / sum_lanes(s);
        s.iter_mut().for_each(|s| *s *= inv);
    }
}

/// `(softmax(q k^T * scale + bias) * mask) v` per batch element and head, without
/// transposes: per head the probabilities `[seq_q, seq_k]` ([`head_probs`]), the mask drawn
/// for that block and applied in cache, then `P v` written by gemm straight into the output
/// rows. `None` when the shapes or dtypes do not fit.
pub(super) fn attention_kernel(
    q: &FlexTensor,
    k: &FlexTensor,
    v: &FlexTensor,
    bias: &FlexTensor,
    scale: f32,
    mask: Option<MaskSeed>,
) -> Option<FlexTensor> {
    let (q, k, v, bias) =
        (contiguous_f32(q)?, contiguous_f32(k)?, contiguous_f32(v)?, contiguous_f32(bias)?);
    let shape = AttentionShape::of(&q, &k, &v, &bias)?;
    let AttentionShape { seq_q, seq_k, heads, d } = shape;
    let (qs, ks, vs, bs): (&[f32], &[f32], &[f32], &[f32]) =
        (q.storage(), k.storage(), v.storage(), bias.storage());
    let (row, block) = (shape.row(), seq_q * seq_k);
    let mut out = Vec::with_capacity(qs.len());
    out.spare_capacity_mut()[..qs.len()].par_chunks_mut(seq_q * row).enumerate().for_each_init(
        // The mask's block only when there is a mask.
        || (vec![0.0f32; block], vec![0.0f32; if mask.is_some() { block } else { 0 }]),
        |(probs, mask_block), (b, o)| {
            widest(
                #[inline(always)]
                || {
                    let (q_rows, kv_rows) = (&qs[b * seq_q * row..], b * seq_k * row);
                    let (k_rows, v_rows) = (&ks[kv_rows..], &vs[kv_rows..]);
                    let key_bias = &bs[b * seq_k..(b + 1) * seq_k];
                    for h in 0..heads {
                        head_probs(
                            probs,
                            shape.head(q_rows, seq_q, h),
                            shape.head(k_rows, seq_k, h),
                            key_bias,
                            scale,
                        );
                        if let Some(MaskSeed { keep, seed }) = mask {
                            crate::dropout::mask_range(
                                mask_block,
                                shape.mask_start(b, h),
                                keep,
                                seed,
                            );
                            probs.iter_mut().zip(mask_block.iter()).for_each(|(p, m)| *p *= m);
                        }
                        let probs = Matrix::strided(probs, seq_q, seq_k, seq_k, 1);
                        // SAFETY: `o` holds this batch element's seq_q * row outputs; head h's
                        // values (i, j) sit at i * row + h * d + j < seq_q * row. Every head writes
                        // its own columns, so once all have run each value is written.
                        unsafe {
                            let dst = o.as_mut_ptr().cast::<f32>().add(h * d);
                            probs.product_into(
                                shape.head(v_rows, seq_k, h),
                                dst,
                                row,
                                false,
                                1.0,
                                gemm::Parallelism::None,
                            );
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

/// The gradients of [`attention_kernel`] with respect to `q`, `k` and `v`, from the output's
/// gradient `grad`, per batch element and head: the probabilities and the mask computed
/// again, then `dv = (P m)^T dy`, `dP = (dy v^T) m`, `dS = P (dP - rowsum(dP P))` and
/// `dq = scale dS k`, `dk = scale dS^T q`, each product written by gemm into the gradients'
/// rows in the inputs' layout. `None` when the shapes or dtypes do not fit.
pub(super) fn attention_backward_kernel(
    tensors: [&FlexTensor; 5],
    scale: f32,
    mask: Option<MaskSeed>,
) -> Option<[FlexTensor; 3]> {
    let [q, k, v, bias, grad] = tensors.map(contiguous_f32);
    let (q, k, v, bias, grad) = (q?, k?, v?, bias?, grad?);
    let shape = AttentionShape::of(&q, &k, &v, &bias)?;
    if grad.shape() != q.shape() {
        return None;
    }
    let AttentionShape { seq_q, seq_k, heads, d } = shape;
    let [qs, ks, vs, bs, gs]: [&[f32]; 5] =
        [q.storage(), k.storage(), v.storage(), bias.storage(), grad.storage()];
    let (row, block) = (shape.row(), seq_q * seq_k);
    let (mut dq, mut dk, mut dv) =
        (Vec::with_capacity(qs.len()), Vec::with_capacity(ks.len()), Vec::with_capacity(ks.len()));
    let per_batch = dq.spare_capacity_mut()[..qs.len()]
        .par_chunks_mut(seq_q * row)
        .zip(dk.spare_capacity_mut()[..ks.len()].par_chunks_mut(seq_k * row))
        .zip(dv.spare_capacity_mut()[..ks.len()].par_chunks_mut(seq_k * row));
    per_batch.enumerate().for_each_init(
        || [(); 4].map(|_| vec![0.0f32; block]),
        |[probs, mask_block, dropped, d_scores], (b, ((dq, dk), dv))| {
            widest(
                #[inline(always)]
                || {
                    let (q_rows, g_rows, kv_rows) =
                        (&qs[b * seq_q * row..], &gs[b * seq_q * row..], b * seq_k * row);
                    let (k_rows, v_rows) = (&ks[kv_rows..], &vs[kv_rows..]);
                    let key_bias = &bs[b * seq_k..(b + 1) * seq_k];
                    let (dq, dk, dv) = [dq, dk, dv].map(|t| t.as_mut_ptr().cast::<f32>()).into();
                    for h in 0..heads {
                        let (q_head, k_head, v_head) = (
                            shape.head(q_rows, seq_q, h),
                            shape.head(k_rows, seq_k, h),
                            shape.head(v_rows, seq_k, h),
                        );
                        let g_head = shape.head(g_rows, seq_q, h);
                        head_probs(probs, q_head, k_head, key_bias, scale);
                        let dropped: &[f32] = match mask {
                            Some(MaskSeed { keep, seed }) => {
                                crate::dropout::mask_range(
                                    mask_block,
                                    shape.mask_start(b, h),
                                    keep,
                                    seed,
                                );
                                dropped
                                    .iter_mut()
                                    .zip(probs.iter().zip(mask_block.iter()))
                                    .for_each(|(o, (p, m))| *o = p * m);
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
                            dropped.transposed().product_into(
                                g_head,
                                dv.add(h * d),
                                row,
                                false,
                                1.0,
                                gemm::Parallelism::None,
                            );
                            g_head.product_into(
                                v_head.transposed(),
                                d_scores.as_mut_ptr(),
                                seq_k,
                                false,
                                1.0,
                                gemm::Parallelism::None,
                            );
                        }
                        let rows = d_scores
                            .chunks_mut(seq_k)
                            .zip(probs.chunks(seq_k))
                            .zip(mask_block.chunks(seq_k));
                        for ((g, p), m) in rows {
                            if mask.is_some() {
                                g.iter_mut().zip(m).for_each(|(g, m)| *g *= m);
                            }
                            let dot = dot_lanes(g, p);
                            g.iter_mut().zip(p).for_each(|(g, &p)| *g = p * (*g - dot));
                        }
                        let d_scores = Matrix::strided(d_scores, seq_q, seq_k, seq_k, 1);
                        unsafe {
                            d_scores.product_into(
                                k_head,
                                dq.add(h * d),
                                row,
                                false,
                                scale,
                                gemm::Parallelism::None,
                            );
                            d_scores.transposed().product_into(
                                q_head,
                                dk.add(h * d),
                                row,
                                false,
                                scale,
                                gemm::Parallelism::None,
                            );
                        }
                    }
                },
            )
        },
    );
    // SAFETY: every value was written above.
    unsafe {
        dq.set_len(qs.len());
        dk.set_len(ks.len());
        dv.set_len(ks.len());
    }
    Some([output(dq, &q), output(dk, &k), output(dv, &k)])
}
