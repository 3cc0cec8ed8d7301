//! The rotary embedding of a query or key tensor and its backward pass, one task per batch
//! element and head.

use burn::backend::TensorMetadata;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::{contiguous_f32, output, wide};

/// Forward: `x c + [-x2, x1] s`; backward (`transposed`): `g c + [g2 s2, -g1 s1]`. Rows of
/// `x [b, h, seq, d]` read their tables at `[b, 0, seq, :]`. `None` when the shapes or dtypes
/// do not fit.
pub(super) fn rotary(
    x: &FlexTensor,
    cos: &FlexTensor,
    sin: &FlexTensor,
    transposed: bool,
) -> Option<FlexTensor> {
    let (x, cos, sin) = (contiguous_f32(x)?, contiguous_f32(cos)?, contiguous_f32(sin)?);
    let &[batch, heads, seq, d] = x.shape().as_slice() else { return None };
    if cos.shape().as_slice() != [batch, 1, seq, d]
        || sin.shape() != cos.shape()
        || d % 2 != 0
        || d == 0
    {
        return None;
    }
    let half = d / 2;
    let (xs, cs, ss): (&[f32], &[f32], &[f32]) = (x.storage(), cos.storage(), sin.storage());
    let mut out = vec![0.0f32; xs.len()];
    // One task per (batch, head): seq rows of d.
    out.par_chunks_mut(seq * d).zip(xs.par_chunks(seq * d)).enumerate().for_each(|(bh, (o, x))| {
        wide(
            #[inline(always)]
            || {
                let b = bh / heads;
                let tables = b * seq * d..(b + 1) * seq * d;
                let (c, s) = (&cs[tables.clone()], &ss[tables]);
                for (((o, x), c), s) in
                    o.chunks_mut(d).zip(x.chunks(d)).zip(c.chunks(d)).zip(s.chunks(d))
                {
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
            },
        )
    });
    Some(output(out, &x))
}
