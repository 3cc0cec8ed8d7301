//! Dropout (Hinton et al., 2012) with its masks drawn on the host from a per-thread random
//! stream.
//!
//! The layer behaves as `burn::nn::Dropout` and has the same record (`prob` and the `training`
//! flag): it acts only on an autodiff device with its flag set, zeroes each element with
//! probability `prob` and scales the kept ones by `1 / (1 - prob)`. Two things differ:
//!
//! - **Speed.** burn samples a Bernoulli value per element through its generic sampler, which
//!   took about 16% of a LoRA training step on all linear layers on a CPU. Here the mask is
//!   filled from SplitMix64, one 64-bit draw for two elements, in parallel chunks, and applied
//!   with one multiplication.
//! - **Reproducibility.** The stream belongs to the thread. papertune's trainer seeds it
//!   ([`seed_thread`]) in the thread that runs each micro-batch, with a seed made of the run's
//!   seed, the step and the micro-batch, so masks do not depend on how many devices share a
//!   step or on thread timing, and a resumed run draws the masks an uninterrupted one would.
//!
//! The mask is made on the host on every backend; on a GPU that is an upload of 4 bytes per
//! element per call instead of sampling on the device.

use std::cell::Cell;

use burn::module::{Flag, Module, Param};
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

use crate::random::{GOLDEN_GAMMA, mix};
use crate::simd::{self, Width};

thread_local! {
    /// State of this thread's stream: advanced once per mask.
    static STREAM: Cell<u64> = const { Cell::new(0x853C_49E6_748F_EA9B) };
}

/// Elements per parallel chunk of a mask; each chunk has its own seed, so the mask does not
/// depend on the number of threads.
const CHUNK: usize = 1 << 16;

/// Restarts this thread's dropout stream at `seed`.
pub fn seed_thread(seed: u64) {
    STREAM.with(|state| state.set(mix(seed)));
}

/// The next seed of this thread's stream (one per mask).
fn next_mask_seed() -> u64 {
    STREAM.with(|state| {
        let next = state.get().wrapping_add(GOLDEN_GAMMA);
        state.set(next);
        mix(next)
    })
}

/// `len` values, each `1 / keep` with probability `keep` and 0 otherwise, from `seed`.
pub(crate) fn mask_values(len: usize, keep: f64, seed: u64) -> Vec<f32> {
    let mut values = vec![0.0f32; len];
    values.par_chunks_mut(CHUNK).enumerate().for_each(|(chunk, out)| {
        simd::vectorised(
            Width::Widest,
            #[inline(always)]
            || mask_range(out, chunk * CHUNK, keep, seed),
        );
    });
    values
}

/// Elements `start..start + out.len()` of the mask [`mask_values`] draws from `seed`, written
/// into `out`: any part of a mask can be drawn on its own (a chunk on its thread, an attention
/// head's block inside a kernel) and the parts agree with the whole.
#[inline(always)]
pub(crate) fn mask_range(out: &mut [f32], start: usize, keep: f64, seed: u64) {
    // An element is kept when a uniform 32-bit integer is below keep * 2^32. Element i takes
    // half i % 2 of the output of draw i / 2 of one SplitMix64 sequence, whose draw p is
    // mix(seed + (p + 1) * GOLDEN_GAMMA).
    let threshold = (keep * 4_294_967_296.0).round().min(4_294_967_295.0) as u32;
    let kept = (1.0 / keep) as f32;
    let value = |half: u32| if half < threshold { kept } else { 0.0 };
    let draw = |pair: u64| mix(seed.wrapping_add(pair.wrapping_add(1).wrapping_mul(GOLDEN_GAMMA)));
    let (mut out, mut pair) = (out, (start / 2) as u64);
    if start % 2 == 1 {
        let Some((first, rest)) = out.split_first_mut() else { return };
        *first = value((draw(pair) >> 32) as u32);
        (out, pair) = (rest, pair.wrapping_add(1));
    }
    // Sixteen values from eight draws at a time: the draws do not depend on each other, so
    // their loop vectorises, and so does the comparison after it.
    let mut blocks = out.chunks_exact_mut(16);
    for block in &mut blocks {
        let mut bits = [0u64; 8];
        for (offset, bits) in (0u64..).zip(bits.iter_mut()) {
            *bits = draw(pair.wrapping_add(offset));
        }
        let mut halves = [0u32; 16];
        for (two, bits) in halves.chunks_exact_mut(2).zip(bits) {
            two.copy_from_slice(&[bits as u32, (bits >> 32) as u32]);
        }
        for (slot, half) in block.iter_mut().zip(halves) {
            *slot = value(half);
        }
        pair = pair.wrapping_add(8);
    }
    for two in blocks.into_remainder().chunks_mut(2) {
        let bits = draw(pair);
        for (slot, half) in two.iter_mut().zip([bits as u32, (bits >> 32) as u32]) {
            *slot = value(half);
        }
        pair = pair.wrapping_add(1);
    }
}

/// Zeroes elements at random during training; see the module documentation.
#[derive(Module, Debug)]
pub struct Dropout {
    /// Probability of zeroing an element.
    pub prob: f64,
    /// Whether to act as in training (cleared by `Module::freeze`, as for burn's dropout).
    pub training: Param<Flag>,
}

impl Dropout {
    /// # Panics
    /// If `prob` is not in `[0, 1)`.
    pub fn new(prob: f64) -> Self {
        assert!((0.0..1.0).contains(&prob), "dropout probability must be in [0, 1), found {prob}");
        Self { prob, training: Param::from_bool(true) }
    }

    /// Whether the layer acts on tensors of `device`: training flag set, a non-zero
    /// probability and an autodiff device.
    pub fn is_active(&self, device: &burn::tensor::Device) -> bool {
        self.prob > 0.0 && self.training.is_enabled() && device.is_autodiff()
    }

    /// The probability and the seed of the next mask, when the layer acts on `device`, for an
    /// operation that draws its mask itself (the fused training attention); `None` otherwise.
    /// It advances this thread's stream as [`Dropout::forward`] does.
    pub fn next_mask(&self, device: &burn::tensor::Device) -> Option<(f64, u64)> {
        self.is_active(device).then(|| (self.prob, next_mask_seed()))
    }

    /// `input` with elements zeroed and the rest scaled, on an autodiff device in training;
    /// `input` unchanged otherwise. Any shape.
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        if !self.is_active(&input.device()) {
            return input;
        }
        let shape = input.shape();
        let values = mask_values(shape.num_elements(), 1.0 - self.prob, next_mask_seed());
        let mask = TensorData::new(values, shape).convert_dtype(input.dtype());
        let mask = Tensor::<D>::from_data(mask, &input.device());
        input * mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_the_expected_share_scaled() {
        let values = mask_values(1_000_003, 0.9, 11);
        let kept = values.iter().filter(|&&v| v != 0.0).count() as f64 / values.len() as f64;
        assert!((kept - 0.9).abs() < 2e-3, "kept share {kept}");
        assert!(values.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.9).abs() < 1e-6));
        // Mean 1 in expectation, as the scaling intends.
        let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / values.len() as f64;
        assert!((mean - 1.0).abs() < 3e-3, "mean {mean}");
    }

    #[test]
    fn the_thread_stream_repeats_after_seeding_and_moves_on_between_masks() {
        seed_thread(5);
        let first = mask_values(300_000, 0.5, next_mask_seed());
        let second = mask_values(300_000, 0.5, next_mask_seed());
        seed_thread(5);
        assert_eq!(first, mask_values(300_000, 0.5, next_mask_seed()));
        assert_ne!(first, second);
        // Chunks continue one sequence: the same as drawing the mask in one piece.
        assert_ne!(first[..CHUNK], first[CHUNK..2 * CHUNK]);
        let seed: u64 = 77;
        let mut state = seed;
        let serial: Vec<f32> = (0..CHUNK + 4)
            .map(|i| {
                if i % 2 == 0 {
                    state = state.wrapping_add(GOLDEN_GAMMA);
                }
                let bits = mix(state);
                let half = if i % 2 == 0 { bits as u32 } else { (bits >> 32) as u32 };
                if half < 1 << 31 { 2.0 } else { 0.0 }
            })
            .collect();
        assert_eq!(mask_values(CHUNK + 4, 0.5, seed), serial);
    }

    #[test]
    fn any_range_of_a_mask_matches_the_whole() {
        let whole = mask_values(1000, 0.7, 99);
        for (start, len) in [(0, 1000), (1, 10), (7, 0), (333, 400), (998, 2), (999, 1)] {
            let mut part = vec![-1.0f32; len];
            mask_range(&mut part, start, 0.7, 99);
            assert_eq!(part, whole[start..start + len], "range {start}..{}", start + len);
        }
    }

    #[test]
    fn inactive_outside_autodiff_and_when_the_flag_is_cleared() {
        let device = burn::tensor::Device::default();
        let x = Tensor::<2>::ones([4, 8], &device);
        let dropout = Dropout::new(0.5);
        let values = |t: Tensor<2>| -> Vec<f32> { t.into_data().try_to_vec::<f32>().unwrap() };
        assert!(values(dropout.forward(x.clone())).iter().all(|&v| v == 1.0));
        let tracked = Tensor::<2>::ones([4, 8], &device.clone().autodiff());
        let dropped = values(dropout.forward(tracked.clone()));
        assert!(dropped.contains(&0.0) && dropped.contains(&2.0), "{dropped:?}");
        let frozen = Dropout { prob: 0.5, training: Param::from_bool(false) };
        assert!(values(frozen.forward(tracked)).iter().all(|&v| v == 1.0));
    }
}
