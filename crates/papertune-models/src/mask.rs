//! The additive bias that masks attention scores out (padding, future positions).

/// The score bias of a masked position: large enough that `exp` gives 0, small enough that a
/// row of masked scores does not turn into NaN.
pub(crate) const MASKED: f32 = -1.0e9;

/// The mask value for scores of type `dtype`: [`MASKED`], or -30000 in f16, whose largest
/// finite value is 65504 (-1e9 would round to -inf, and a fully masked row of padding to NaN).
pub(crate) fn masked_bias(dtype: burn::tensor::DType) -> f32 {
    if dtype == burn::tensor::DType::F16 { -3.0e4 } else { MASKED }
}
