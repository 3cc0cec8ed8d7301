//! Reductions of one row in eight independent lanes, so that their loops vectorise (a plain
//! fold keeps one accumulator and stays scalar). The lanes are fixed, so the results do not
//! depend on the CPU.

/// Maximum in eight independent lanes (a fold with `f32::max`, whose NaN rule makes it
/// order-dependent, stays scalar). NaN inputs are skipped; a softmax row holding one is NaN
/// anyway, through `exp`.
#[inline(always)]
pub(super) fn max_lanes(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = x.chunks_exact(8);
    for chunk in &mut chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = if v > *lane { v } else { *lane };
        }
    }
    chunks.remainder().iter().chain(&lanes).copied().fold(f32::NEG_INFINITY, f32::max)
}

/// Sum in eight independent lanes, so that the loop vectorises.
#[inline(always)]
pub(super) fn sum_lanes(x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for chunk in &mut chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += v;
        }
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// Dot product in eight independent lanes.
#[inline(always)]
pub(super) fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    // Subtracting +0.0 is exact, and the compiler drops it.
    dot_shifted(a, 0.0, b, 0.0)
}

/// `sum((a - a_shift) * (x - x_shift))` in eight independent lanes.
#[inline(always)]
pub(super) fn dot_shifted(a: &[f32], a_shift: f32, x: &[f32], x_shift: f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (mut ca, mut cx) = (a.chunks_exact(8), x.chunks_exact(8));
    for (a, x) in (&mut ca).zip(&mut cx) {
        for ((lane, a), x) in lanes.iter_mut().zip(a).zip(x) {
            *lane += (a - a_shift) * (x - x_shift);
        }
    }
    let tail: f32 =
        ca.remainder().iter().zip(cx.remainder()).map(|(a, x)| (a - a_shift) * (x - x_shift)).sum();
    lanes.iter().sum::<f32>() + tail
}
