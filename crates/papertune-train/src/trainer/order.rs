//! Everything random in a run is a function of the run's seed and a counter: the order of each
//! epoch, the seed of each step (the device's stream) and of each micro-batch (papertune's
//! dropout stream, restarted in the thread that runs it). No hidden state, so a run is
//! reproducible and a resumed one continues exactly.

use papertune_kernels::random::{GOLDEN_GAMMA, mix};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// The order in which epoch `epoch` visits `n` examples.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(GOLDEN_GAMMA).wrapping_add(epoch as u64));
    order.shuffle(&mut rng);
    order
}

/// The seed of the random stream for step `step` (0-based) of a run seeded with `seed`.
pub(super) fn step_seed(seed: u64, step: usize) -> u64 {
    mix(seed ^ (step as u64).wrapping_mul(GOLDEN_GAMMA))
}

/// The seed of micro-batch `batch_index` (its index in the epoch) of a step whose seed is
/// `step_seed`.
pub(super) fn micro_batch_seed(step_seed: u64, batch_index: usize) -> u64 {
    mix(step_seed ^ (batch_index as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_permutations_fixed_by_seed_and_epoch() {
        let order = epoch_order(50, 7, 0);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_eq!(order, epoch_order(50, 7, 0));
        assert_ne!(order, epoch_order(50, 7, 1));
        assert_ne!(order, epoch_order(50, 8, 0));
    }

    #[test]
    fn step_and_micro_batch_seeds_differ() {
        let seeds: std::collections::BTreeSet<u64> = (0..20)
            .flat_map(|step| (0..4).map(move |b| micro_batch_seed(step_seed(42, step), b)))
            .collect();
        assert_eq!(seeds.len(), 80);
    }
}
