//! SplitMix64 (Steele, Lea and Flood, 2014), the one mixer of papertune's seeded streams: the
//! dropout masks draw from it, and the trainer derives the seed of every step and micro-batch
//! with it.

/// The increment of SplitMix64's sequence, `2^64 / phi` rounded to odd.
pub const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function: a bijection of `u64` that scatters nearby inputs, so that
/// seeds made of small counters (steps, micro-batches) give unrelated streams.
#[inline(always)]
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_sequence() {
        // The first outputs of SplitMix64 seeded with 0, from the algorithm's reference code:
        // state += GOLDEN_GAMMA, then the output function.
        let outputs: Vec<u64> = (1..=3u64).map(|i| mix(i.wrapping_mul(GOLDEN_GAMMA))).collect();
        assert_eq!(outputs, [0xE220_A839_7B1D_CDAF, 0x6E78_9E6A_A1B9_65F4, 0x06C4_5D18_8009_454F]);
    }
}
