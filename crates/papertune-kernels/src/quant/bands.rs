//! The `f32` paths: dequantize a band of `W` into a per-task buffer and let
//! `gemm` multiply it. At no time does more than one band per task exist in
//! `f32`.

use rayon::prelude::*;

use super::{QuantMatrix, dequantize_into};
use crate::matrix::Matrix;
use crate::send_ptr::SendPtr;

/// Bytes of `f32` band one task of the forward dequantizes at once: small
/// enough that the band and gemm's packed copy of it stay in a 512 KiB L2
/// (64-row bands of 2048 columns measured 1.4x slower at m = 16).
const XWT_BAND_BYTES: usize = 128 << 10;

/// Rows per forward band for `cols` columns: 8 to 64.
fn xwt_band_rows(cols: usize) -> usize {
    (XWT_BAND_BYTES / (4 * cols.max(1))).clamp(8, 64)
}

/// Rows of `W` per band in the backward.
pub(crate) const DYW_BAND_ROWS: usize = 64;

/// `y[m, rows] = x[m, cols] · Wᵀ`, one band of rows per rayon task.
/// Shapes were checked by the caller; `m`, `rows` > 0.
pub(crate) fn xwt(x: &[f32], m: usize, w: &QuantMatrix, y: &mut [f32]) {
    let (rows, cols) = (w.rows, w.cols);
    if cols == 0 {
        y.fill(0.0);
        return;
    }
    let rb = w.row_bytes();
    let band = xwt_band_rows(cols);
    let yp = SendPtr(y.as_mut_ptr());
    w.bytes.par_chunks(band * rb).enumerate().for_each_init(
        Vec::new,
        |buf: &mut Vec<f32>, (bi, raw)| {
            let r0 = bi * band;
            let nb = raw.len() / rb;
            buf.resize(nb * cols, 0.0);
            dequantize_into(w.ty, raw, buf);
            let lhs = Matrix::strided(x, m, cols, cols, 1); // x [m, cols]
            let decoded = Matrix::strided(buf, nb, cols, cols, 1).transposed(); // [cols, nb]
            // SAFETY: dst is y[:, r0..r0 + nb] (row stride `rows`), inside y and disjoint from
            // every other band's columns.
            unsafe {
                lhs.product_into(
                    decoded,
                    yp.get().add(r0),
                    rows,
                    false,
                    1.0,
                    gemm::Parallelism::None,
                )
            };
        },
    );
}

/// `dx[m, cols] = dy[m, rows] · W`, parallel over block-aligned column
/// ranges of `W` (so over disjoint columns of `dx`); each task walks all rows
/// in bands, dequantizing only its columns. Shapes were checked by the
/// caller; `m`, `rows`, `cols` > 0.
pub(crate) fn dyw(dy: &[f32], m: usize, w: &QuantMatrix, dx: &mut [f32]) {
    let (rows, cols) = (w.rows, w.cols);
    let (be, bb) = (w.ty.block_elements(), w.ty.block_bytes());
    let nblocks = cols / be;
    let rb = w.row_bytes();
    // Enough column ranges to keep every thread busy, but not thinner than
    // 256 columns so each gemm call has some width.
    let threads = rayon::current_num_threads();
    let min_blocks = (256 / be).max(1);
    let ranges = (nblocks / min_blocks).clamp(1, 4 * threads);
    let per = nblocks.div_ceil(ranges);
    let dxp = SendPtr(dx.as_mut_ptr());
    (0..nblocks.div_ceil(per)).into_par_iter().for_each(|ri| {
        let (b0, b1) = (ri * per, ((ri + 1) * per).min(nblocks));
        let (c0, cw) = (b0 * be, (b1 - b0) * be);
        let mut buf = vec![0.0f32; DYW_BAND_ROWS.min(rows) * cw];
        for r0 in (0..rows).step_by(DYW_BAND_ROWS) {
            let nb = DYW_BAND_ROWS.min(rows - r0);
            for j in 0..nb {
                let row = &w.bytes[(r0 + j) * rb..(r0 + j + 1) * rb];
                dequantize_into(w.ty, &row[b0 * bb..b1 * bb], &mut buf[j * cw..(j + 1) * cw]);
            }
            let lhs = Matrix::strided(&dy[r0..], m, nb, rows, 1); // dy[:, r0..r0 + nb]
            let rhs = Matrix::strided(&buf, nb, cw, cw, 1); // buf [nb, cw]
            // SAFETY: dst is dx[:, c0..c0 + cw] (row stride `cols`), inside dx and disjoint
            // from every other task's columns; the first band stores, later ones accumulate.
            unsafe {
                lhs.product_into(rhs, dxp.get().add(c0), cols, r0 > 0, 1.0, gemm::Parallelism::None)
            };
        }
    });
}
