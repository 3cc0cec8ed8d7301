//! 8-bit quantization of activation rows for the integer dot products.
//!
//! Two granularities, matching the weight's block size:
//! * 32-element blocks (for Q4_0..Q8_0): one `f32` scale and the sum of the
//!   32 quants (what llama.cpp's Q8_0 / Q8_1 carry);
//! * 256-element blocks (for the k-quants): one `f32` scale and the sums of
//!   each 16 quants (llama.cpp's Q8_K).
//!
//! The data is kept as structure-of-arrays so the SIMD kernels can load four
//! consecutive scales or sums at once.

/// Quantized copy of `m` activation rows of `cols` values each.
pub(crate) struct QuantizedActs {
    /// Quants, `[m, cols]`.
    qs: Vec<i8>,
    /// Scale per block, `[m, cols / block]`.
    d: Vec<f32>,
    /// Sum of quants per group, `[m, cols / group]`.
    sums: Vec<i16>,
    cols: usize,
    block: usize,
    group: usize,
}

/// One quantized activation row.
#[derive(Clone, Copy)]
pub(crate) struct ActRow<'a> {
    /// `cols` quants in `-127..=127`.
    pub qs: &'a [i8],
    /// Scale of each block (`x ≈ d · q`).
    pub d: &'a [f32],
    /// Sum of the quants of each 32-block (32-element layout) or of each
    /// 16-element group (256-element layout).
    pub sums: &'a [i16],
}

impl QuantizedActs {
    /// Quantizes `x[m, cols]`; `k_layout` selects 256-element blocks with
    /// 16-element sums instead of 32-element blocks with whole-block sums.
    /// `cols` must be a multiple of the block size (checked by the caller).
    pub(crate) fn new(x: &[f32], m: usize, cols: usize, k_layout: bool) -> Self {
        let (block, group) = if k_layout { (256, 16) } else { (32, 32) };
        assert_eq!(cols % block, 0);
        assert_eq!(x.len(), m * cols);
        let mut qs = vec![0i8; m * cols];
        let mut d = vec![0.0f32; m * cols / block];
        for ((xb, qb), db) in x.chunks_exact(block).zip(qs.chunks_exact_mut(block)).zip(&mut d) {
            *db = quantize_block(xb, qb);
        }
        let sums = qs
            .chunks_exact(group)
            // |sum| ≤ 32·127 fits in i16.
            .map(|g| g.iter().map(|&q| i16::from(q)).sum())
            .collect();
        QuantizedActs { qs, d, sums, cols, block, group }
    }

    /// Row `i` (`i < m`).
    pub(crate) fn row(&self, i: usize) -> ActRow<'_> {
        let (nb, ng) = (self.cols / self.block, self.cols / self.group);
        ActRow {
            qs: &self.qs[i * self.cols..(i + 1) * self.cols],
            d: &self.d[i * nb..(i + 1) * nb],
            sums: &self.sums[i * ng..(i + 1) * ng],
        }
    }
}

/// Symmetric 8-bit quantization of one block: returns `d = max|x| / 127` and
/// writes `q = round(x / d)` (ties to even) (all zero when the block is zero), so that
/// `|x − d·q| ≤ d/2`.
fn quantize_block(x: &[f32], q: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0.0f32, |a, &v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    // Adding and removing 1.5·2²³ rounds |t| ≤ 2²² to the nearest integer
    // (ties to even) without a libm call; Rust never reassociates this.
    const MAGIC: f32 = 12_582_912.0;
    for (qv, &v) in q.iter_mut().zip(x) {
        let t = (v * id).clamp(-127.0, 127.0);
        *qv = ((t + MAGIC) - MAGIC) as i8;
    }
    d
}
