//! The AdamW update of one parameter in one pass: parameter, gradient and moments read once,
//! the new parameter and moments written into one `[3, n]` buffer.

use burn::backend::DType;
use burn::tensor::Bytes;
use burn_flex::{FlexTensor, Layout};
use rayon::prelude::*;

use super::{CHUNK, wide};

/// The update of `[param, grad, moment_1, moment_2]` (`n` values each) as `[3, n]`; `None`
/// unless all four are dense f32 of `n` values.
pub(super) fn adamw_packed(tensors: [&FlexTensor; 4], scalars: AdamWScalars) -> Option<FlexTensor> {
    let n = burn::backend::TensorMetadata::shape(tensors[0]).num_elements();
    let [p, g, m, v] = tensors.map(dense_f32);
    let values = [p?, g?, m?, v?];
    values.iter().all(|t| t.len() == n).then(|| adamw_kernel(values, scalars))
}

/// AdamW's scalars in the form the kernel uses them.
#[derive(Clone, Copy)]
pub(super) struct AdamWScalars {
    pub lr: f32,
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    /// `1 - lr * weight_decay`
    pub decay: f32,
    /// `1 / (1 - b1^t)`, `1 / (1 - b2^t)`
    pub inv_c1: f32,
    pub inv_c2: f32,
}

/// [`FusedOps::adamw_packed`] on the values of parameter, gradient and moments (`n` each):
/// one pass writing `[3, n]`, rows new parameter, first and second moment.
fn adamw_kernel([p, g, m, v]: [&[f32]; 4], scalars: AdamWScalars) -> FlexTensor {
    let n = p.len();
    let AdamWScalars { lr, beta_1: b1, beta_2: b2, epsilon: eps, decay, inv_c1, inv_c2 } = scalars;
    let mut out = vec![0.0f32; 3 * n];
    let (new_p, rest) = out.split_at_mut(n);
    let (new_m, new_v) = rest.split_at_mut(n);
    let outputs = new_p
        .par_chunks_mut(CHUNK)
        .zip(new_m.par_chunks_mut(CHUNK))
        .zip(new_v.par_chunks_mut(CHUNK));
    let inputs = p
        .par_chunks(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(m.par_chunks(CHUNK).zip(v.par_chunks(CHUNK)));
    outputs.zip(inputs).for_each(|(((po, mo), vo), ((p, g), (m, v)))| {
        wide(
            #[inline(always)]
            || {
                // Zipped iterators rather than indices: no bounds checks, so the loop vectorises.
                let outputs = po.iter_mut().zip(mo.iter_mut()).zip(vo.iter_mut());
                let inputs = p.iter().zip(g).zip(m.iter().zip(v));
                for (((po, mo), vo), ((&p, &g), (&m, &v))) in outputs.zip(inputs) {
                    let m = b1 * m + (1.0 - b1) * g;
                    let v = b2 * v + (1.0 - b2) * (g * g);
                    let delta = (m * inv_c1) / ((v * inv_c2).sqrt() + eps);
                    (*po, *mo, *vo) = (p * decay - lr * delta, m, v);
                }
            },
        )
    });
    FlexTensor::new(
        Bytes::from_elems(out),
        Layout::contiguous(burn::tensor::Shape::new([3, n])),
        DType::F32,
    )
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
