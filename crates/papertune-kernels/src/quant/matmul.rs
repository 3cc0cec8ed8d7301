//! Products with a matrix kept in its quantised blocks: `y = x Wᵀ` (a linear layer's forward)
//! and `dx = dy W` (its backward to the input), without `W` ever existing in f32.
//!
//! For few rows of `x` (decoding), each row of `x` is quantised to 8-bit blocks and dotted with
//! the weight's blocks in integer arithmetic (AVX2 where the CPU has it, a scalar fallback with
//! bit-identical results), as llama.cpp does. For more rows (prefill, training), bands of a few
//! dozen rows of `W` are decoded into a per-task f32 buffer and multiplied with `gemm`.

use rayon::prelude::*;

use super::isa::{self, Isa};
use super::{QuantType, act, bands, dequantize_into};

/// Largest batch size `m` for which [`matmul_xwt`] takes the integer path
/// for weights of type `ty`; larger batches dequantize bands and call `gemm`.
///
/// Measured (2-core AVX2 EPYC, `examples/ab.rs`): the integer path costs
/// about `m` times its `m = 1` time (each activation row re-decodes the
/// weight), while the band path is dominated by dequantization until `m`
/// reaches a few dozen. They cross at `m ≈ 12` for the cheap-to-decode
/// Q4_0 / Q4_1 / Q8_0 and at `m ≈ 16..32` for the others.
pub fn q8_path_max_m(ty: QuantType) -> usize {
    match ty {
        QuantType::Q4_0 | QuantType::Q4_1 | QuantType::Q8_0 => 8,
        _ => 16,
    }
}

/// A quantized weight matrix `W[rows, cols]` in GGUF layout: row-major, each
/// row `cols / block_elems` consecutive blocks of type `ty`.
///
/// Build it with [`QuantMatrix::new`], which checks that `bytes` has exactly
/// the right length. The fields are public for cheap access; the matmul entry
/// points re-check consistency and panic with a clear message if a
/// hand-assembled value is inconsistent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuantMatrix {
    /// Block format of every row.
    pub ty: QuantType,
    /// Number of rows (`out_features` of a linear layer).
    pub rows: usize,
    /// Number of columns (`in_features`); a multiple of `ty.block_elements()`.
    pub cols: usize,
    /// `rows * row_bytes` raw block bytes, exactly as stored in GGUF.
    pub bytes: Vec<u8>,
}

impl QuantMatrix {
    /// Wraps raw GGUF bytes of a `[rows, cols]` weight of type `ty`.
    ///
    /// Fails when `cols` is not a multiple of the block size or when `bytes`
    /// does not hold exactly `rows` rows.
    pub fn new(ty: QuantType, rows: usize, cols: usize, bytes: Vec<u8>) -> Result<Self, String> {
        let expected = Self::expected_len(ty, rows, cols)?;
        if bytes.len() != expected {
            return Err(format!(
                "{ty:?} weight [{rows}, {cols}] needs {expected} bytes, got {}",
                bytes.len()
            ));
        }
        Ok(QuantMatrix { ty, rows, cols, bytes })
    }

    fn expected_len(ty: QuantType, rows: usize, cols: usize) -> Result<usize, String> {
        let row = ty.row_bytes(cols).ok_or_else(|| {
            format!("{ty:?} needs cols to be a multiple of {}, got {cols}", ty.block_elements())
        })?;
        row.checked_mul(rows)
            .ok_or_else(|| format!("{ty:?} weight [{rows}, {cols}] size overflows usize"))
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.cols / self.ty.block_elements() * self.ty.block_bytes()
    }

    /// The raw blocks of row `r` (panics if `r >= rows`).
    pub fn row(&self, r: usize) -> &[u8] {
        let rb = self.row_bytes();
        &self.bytes[r * rb..(r + 1) * rb]
    }

    /// The whole matrix in `f32`, `[rows, cols]` row-major: for tests, baselines and the GPU
    /// backends' many-row products (decoded for one product, then dropped); the host matmuls
    /// never call it.
    pub fn dequantize(&self) -> Vec<f32> {
        self.assert_consistent("QuantMatrix::dequantize");
        let mut out = vec![0.0; self.rows * self.cols];
        dequantize_into(self.ty, &self.bytes, &mut out);
        out
    }

    /// Panics with a clear message if the public fields disagree.
    fn assert_consistent(&self, who: &str) {
        match Self::expected_len(self.ty, self.rows, self.cols) {
            Ok(n) if n == self.bytes.len() => {}
            Ok(n) => panic!(
                "{who}: {:?} weight [{}, {}] needs {n} bytes, has {}",
                self.ty,
                self.rows,
                self.cols,
                self.bytes.len()
            ),
            Err(e) => panic!("{who}: {e}"),
        }
    }
}

/// `y[m, rows] = x[m, cols] · Wᵀ`, the forward of a linear layer
/// (all row-major; `y` is overwritten).
///
/// Picks the integer path ([`matmul_xwt_q8`]) for `m <= q8_path_max_m(w.ty)`
/// and the dequantize-bands-and-gemm path ([`matmul_xwt_dequant`]) above.
///
/// # Panics
/// If `x.len() != m * w.cols`, `y.len() != m * w.rows`, or `w` is inconsistent.
pub fn matmul_xwt(x: &[f32], m: usize, w: &QuantMatrix, y: &mut [f32]) {
    if m <= q8_path_max_m(w.ty) {
        matmul_xwt_q8(x, m, w, y)
    } else {
        matmul_xwt_dequant(x, m, w, y)
    }
}

/// [`matmul_xwt`] through the integer path: each row of `x` is quantized to
/// 8-bit blocks (per 32 values, or per 256 with 16-value sums for k-quant
/// weights) and dotted with the weight blocks in integer arithmetic. The only
/// error beyond `f32` rounding is the 8-bit rounding of `x`; see
/// [`q8_error_bound`].
///
/// # Panics
/// Same conditions as [`matmul_xwt`].
pub fn matmul_xwt_q8(x: &[f32], m: usize, w: &QuantMatrix, y: &mut [f32]) {
    check_xwt("matmul_xwt_q8", x, m, w, y);
    xwt_q8(x, m, w, y, Isa::detect());
}

/// [`matmul_xwt`] through the `f32` path: bands of `W` rows are dequantized
/// into a per-task buffer and multiplied with `gemm`; agrees with an exact
/// product of the dequantized weight up to `f32` rounding.
///
/// # Panics
/// Same conditions as [`matmul_xwt`].
pub fn matmul_xwt_dequant(x: &[f32], m: usize, w: &QuantMatrix, y: &mut [f32]) {
    check_xwt("matmul_xwt_dequant", x, m, w, y);
    if m == 0 || w.rows == 0 {
        return;
    }
    bands::xwt(x, m, w, y);
}

/// `dx[m, cols] = dy[m, rows] · W`, the backward of a linear layer to its
/// input (e.g. LoRA over a frozen quantized base); `dx` is overwritten.
///
/// Splits the columns of `W` into block-aligned ranges, one rayon task each;
/// a task dequantizes bands of rows of its column range and accumulates
/// `dy[:, band] · band` into its own columns of `dx` with `gemm`, so no
/// reduction between threads is needed.
///
/// # Panics
/// If `dy.len() != m * w.rows`, `dx.len() != m * w.cols`, or `w` is inconsistent.
pub fn matmul_dyw(dy: &[f32], m: usize, w: &QuantMatrix, dx: &mut [f32]) {
    w.assert_consistent("matmul_dyw");
    assert_eq!(
        dy.len(),
        m * w.rows,
        "matmul_dyw: dy has {} elements, expected m * rows = {m} * {}",
        dy.len(),
        w.rows
    );
    assert_eq!(
        dx.len(),
        m * w.cols,
        "matmul_dyw: dx has {} elements, expected m * cols = {m} * {}",
        dx.len(),
        w.cols
    );
    if m == 0 || w.cols == 0 {
        return;
    }
    if w.rows == 0 {
        dx.fill(0.0);
        return;
    }
    bands::dyw(dy, m, w, dx);
}

/// Upper bound on `|y_q8 − y_exact|` for one output of [`matmul_xwt_q8`],
/// given the dequantized weight row `w_row` and activation row `x_row`
/// (both `cols` long), where `y_exact = Σ w·x` in exact arithmetic.
///
/// Each activation block `b` (32 values, or 256 for k-quant weights) is
/// stored as `d_b·q` with `d_b = max_b|x| / 127` and `q = round(x / d_b)`, so
/// each value moves by at most `d_b / 2`. Hence
///
/// `|err| ≤ Σ_b (max_b|x| / 254) · Σ_{i∈b} |w_i|  +  c · ε · Σ_i |w_i·x_i|`,
///
/// where the second term (`c = 4·(blocks + 8)`, `ε = 2⁻²³`) covers the `f32`
/// rounding of scale products and the block-wise accumulation, in both the
/// kernel and the dequantizer; the first term carries a `10⁻⁴` relative
/// margin for the rounding of `1/d_b` when quantizing.
pub fn q8_error_bound(ty: QuantType, w_row: &[f32], x_row: &[f32]) -> f64 {
    assert_eq!(w_row.len(), x_row.len(), "q8_error_bound: length mismatch");
    let be = ty.block_elements();
    let mut quant = 0.0f64;
    let mut abs_dot = 0.0f64;
    for (wb, xb) in w_row.chunks(be).zip(x_row.chunks(be)) {
        let amax = xb.iter().fold(0.0f64, |a, &v| a.max(f64::from(v).abs()));
        let wsum: f64 = wb.iter().map(|&v| f64::from(v).abs()).sum();
        quant += amax / 254.0 * wsum;
        abs_dot += wb.iter().zip(xb).map(|(&a, &b)| f64::from(a * b).abs()).sum::<f64>();
    }
    let blocks = w_row.len().div_ceil(be) as f64;
    quant * (1.0 + 1e-4) + 4.0 * (blocks + 8.0) * f64::from(f32::EPSILON) * abs_dot
}

fn check_xwt(who: &str, x: &[f32], m: usize, w: &QuantMatrix, y: &[f32]) {
    w.assert_consistent(who);
    assert_eq!(
        x.len(),
        m * w.cols,
        "{who}: x has {} elements, expected m * cols = {m} * {}",
        x.len(),
        w.cols
    );
    assert_eq!(
        y.len(),
        m * w.rows,
        "{who}: y has {} elements, expected m * rows = {m} * {}",
        y.len(),
        w.rows
    );
}

/// Rows of `W` per rayon task on the integer path: enough tasks to balance
/// (about 8 per thread) but at least 16 rows to amortise the task overhead.
fn rows_per_task(rows: usize) -> usize {
    let tasks = rayon::current_num_threads() * 8;
    rows.div_ceil(tasks).max(16)
}

/// The integer path with an explicit instruction set (tests force `Scalar`).
pub(super) fn xwt_q8(x: &[f32], m: usize, w: &QuantMatrix, y: &mut [f32], isa: Isa) {
    if m == 0 || w.rows == 0 {
        return;
    }
    let acts = act::QuantizedActs::new(x, m, w.cols, w.ty.is_k_quant());
    let dot = isa::row_dot_fn(w.ty, isa);
    let rb = w.row_bytes();
    let chunk = rows_per_task(w.rows);
    if m == 1 {
        let a = acts.row(0);
        y.par_chunks_mut(chunk).enumerate().for_each(|(ci, ys)| {
            let wb = &w.bytes[ci * chunk * rb..];
            for (yv, wr) in ys.iter_mut().zip(wb.chunks_exact(rb)) {
                *yv = dot(wr, a);
            }
        });
        return;
    }
    // yt[rows, m]: each task owns a contiguous run of W rows, so write the
    // transpose and flip it afterwards.
    let mut yt = vec![0.0f32; w.rows * m];
    yt.par_chunks_mut(chunk * m).enumerate().for_each(|(ci, ys)| {
        let wb = &w.bytes[ci * chunk * rb..];
        for (out, wr) in ys.chunks_exact_mut(m).zip(wb.chunks_exact(rb)) {
            for (i, o) in out.iter_mut().enumerate() {
                *o = dot(wr, acts.row(i));
            }
        }
    });
    let rows = w.rows;
    y.par_chunks_mut(rows).enumerate().for_each(|(i, yrow)| {
        for (r, v) in yrow.iter_mut().enumerate() {
            *v = yt[r * m + i];
        }
    });
}
