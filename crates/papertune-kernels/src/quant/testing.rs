//! Random but well-formed quantised matrices for the tests.

use super::{QuantMatrix, QuantType};

/// A small xorshift generator (no external crates).
pub struct Rng(pub u64);

impl Rng {
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in `[-1, 1)`.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Byte offsets of the `f16` scale fields (`d`, and `dmin`/`m` if any)
/// inside one block of `ty`.
fn f16_fields(ty: QuantType) -> &'static [usize] {
    match ty {
        QuantType::Q4_0 | QuantType::Q5_0 | QuantType::Q8_0 => &[0],
        QuantType::Q4_1 | QuantType::Q5_1 | QuantType::Q4K | QuantType::Q5K => &[0, 2],
        QuantType::Q2K => &[80, 82],
        QuantType::Q3K => &[108],
        QuantType::Q6K => &[208],
    }
}

/// A `[rows, cols]` matrix of random quant bytes whose `f16` scales are
/// finite, normal and of either sign (magnitude about `2⁻⁸`..`2⁻⁶`).
pub fn random_matrix(ty: QuantType, rows: usize, cols: usize, seed: u64) -> QuantMatrix {
    let mut rng = Rng(seed | 1);
    let n = ty.row_bytes(cols).expect("cols must be whole blocks") * rows;
    let mut bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
    for blk in bytes.chunks_exact_mut(ty.block_bytes()) {
        for &off in f16_fields(ty) {
            let mag = 1.0 + 3.0 * (rng.uniform() + 1.0) / 2.0;
            let sign = if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 };
            let v = half::f16::from_f32(sign * mag / 256.0);
            blk[off..off + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
    QuantMatrix::new(ty, rows, cols, bytes).expect("sizes are consistent")
}

/// `n` values uniform in `[-1, 1)`.
pub fn random_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng(seed | 1);
    (0..n).map(|_| rng.uniform()).collect()
}
