//! The per-row cross-entropy of a causal LM's loss, `logsumexp(x_r) - x_r[t_r]`, and its
//! gradient `dy_r * (softmax(x_r) - onehot(t_r))`, one pass over each row.

use burn::backend::TensorMetadata;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::lanes::{max_lanes, sum_lanes};
use super::{contiguous_f32, output, widest};
use crate::math::exp_approx;

/// Per-row negative log-likelihood of the target class, `[rows]`.
pub(super) fn token_nll(logits: &FlexTensor, targets: &FlexTensor) -> Option<FlexTensor> {
    let (x, t, classes) = logits_and_targets(logits, targets)?;
    let (xs, ts): (&[f32], &[f32]) = (x.storage(), t.storage());
    let nll: Vec<f32> = xs
        .par_chunks(classes)
        .zip(ts.par_iter())
        .map_init(
            || vec![0.0f32; classes],
            |scratch, (row, &target)| {
                widest(
                    #[inline(always)]
                    || {
                        // logsumexp(row) - row[t] = log(sum(exp(row - max))) - (row[t] - max)
                        let (max, sum) = row_exp_sum(row, scratch);
                        sum.ln() - (row[class_index(target, classes)] - max)
                    },
                )
            },
        )
        .collect();
    Some(output(nll, &t))
}

/// The gradient of [`token_nll`] with respect to the logits, `[rows, classes]`.
pub(super) fn token_nll_backward(
    logits: &FlexTensor,
    targets: &FlexTensor,
    grad: &FlexTensor,
) -> Option<FlexTensor> {
    let ((x, t, classes), g) = (logits_and_targets(logits, targets)?, contiguous_f32(grad)?);
    let (xs, ts, gs): (&[f32], &[f32], &[f32]) = (x.storage(), t.storage(), g.storage());
    let mut out = vec![0.0f32; xs.len()];
    out.par_chunks_mut(classes).zip(xs.par_chunks(classes)).enumerate().for_each(
        |(r, (o, row))| {
            widest(
                #[inline(always)]
                || {
                    let dy = gs[r];
                    let scale = dy / row_exp_sum(row, o).1; // o = dy * softmax(row) after the scaling
                    o.iter_mut().for_each(|o| *o *= scale);
                    o[class_index(ts[r], classes)] -= dy;
                },
            )
        },
    );
    Some(output(out, &x))
}

/// Contiguous f32 logits `[rows, classes]` and targets `[rows]`, and `classes`; `None` for
/// other dtypes or shapes.
fn logits_and_targets(
    logits: &FlexTensor,
    targets: &FlexTensor,
) -> Option<(FlexTensor, FlexTensor, usize)> {
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
        *e = exp_approx(v - max);
    }
    (max, sum_lanes(out))
}
