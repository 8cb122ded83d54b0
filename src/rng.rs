//! Seeded random streams. Every random choice of a run (fold split, epoch order, augmentation
//! of each sample) draws from its own stream derived from the run seed and a few integers, so
//! results do not depend on thread scheduling and are identical between runs and versions.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// SplitMix64 step: a bijective mix of 64 bits.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The random stream named by `seed` and `stream` (e.g. `[FOLD, k]`).
pub fn stream(seed: u64, stream: &[u64]) -> ChaCha8Rng {
    let mixed = stream.iter().fold(splitmix64(seed), |acc, &s| splitmix64(acc ^ splitmix64(s)));
    ChaCha8Rng::seed_from_u64(mixed)
}

/// A seed derived from `seed` and `stream` (for libtorch's generator or a sub-component).
pub fn derive(seed: u64, tags: &[u64]) -> u64 {
    stream(seed, tags).next_u64() >> 1
}

/// Stream tags, so that different uses of one seed never share a stream.
pub mod tag {
    pub const FOLD: u64 = 1;
    pub const EPOCH_ORDER: u64 = 2;
    pub const AUGMENT: u64 = 3;
    pub const SYNTH: u64 = 4;
    /// Initial weights of a fold's model.
    pub const INIT: u64 = 5;
    /// Dropout masks of a training step.
    pub const DROPOUT: u64 = 6;
    /// Epoch order and augmentation of a fold's loader.
    pub const DATA: u64 = 7;
    /// The large scenes of `synth-scenes`.
    pub const SYNTH_SCENES: u64 = 8;
}

/// A uniform integer in `0..n` (`n > 0`), by Lemire's multiply-shift.
pub fn below(rng: &mut impl Rng, n: usize) -> usize {
    ((rng.next_u64() as u128 * n as u128) >> 64) as usize
}

/// A uniform float in `[lo, hi)`.
pub fn uniform(rng: &mut impl Rng, lo: f64, hi: f64) -> f64 {
    let unit = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    lo + (hi - lo) * unit
}

/// Fisher-Yates shuffle with [`below`].
pub fn shuffle<T>(rng: &mut impl Rng, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        items.swap(i, below(rng, i + 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let draw = |s: &[u64]| (0..4).map(|_| stream(7, s).next_u64()).collect::<Vec<_>>();
        assert_eq!(draw(&[tag::FOLD, 0]), draw(&[tag::FOLD, 0]));
        assert_ne!(stream(7, &[tag::FOLD, 0]).next_u64(), stream(7, &[tag::FOLD, 1]).next_u64());
        assert_ne!(stream(7, &[tag::FOLD, 0]).next_u64(), stream(8, &[tag::FOLD, 0]).next_u64());
    }

    #[test]
    fn below_and_uniform_stay_in_range_and_cover_it() {
        let mut rng = stream(1, &[]);
        let mut seen = [0usize; 5];
        for _ in 0..5000 {
            seen[below(&mut rng, 5)] += 1;
            let u = uniform(&mut rng, -2.0, 3.0);
            assert!((-2.0..3.0).contains(&u));
        }
        assert!(seen.iter().all(|&c| (850..1150).contains(&c)), "{seen:?}");
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut v: Vec<usize> = (0..100).collect();
        shuffle(&mut stream(3, &[]), &mut v);
        assert_ne!(v, (0..100).collect::<Vec<_>>());
        v.sort_unstable();
        assert_eq!(v, (0..100).collect::<Vec<_>>());
    }
}
