//! Tests against a dequantize-then-naive-f64 reference built on the shared
//! `blocks` dequantizers.

use super::isa::Isa;
use super::matmul::xwt_q8;
use super::testing::{Rng, random_matrix, random_vec};
use super::*;

/// Column counts exercising whole groups of four blocks plus a tail.
fn test_cols(ty: QuantType) -> usize {
    if ty.is_k_quant() { 3 * 256 } else { 13 * 32 }
}

/// `W` dequantized by the shared reference decoder.
fn reference_w(w: &QuantMatrix) -> Vec<f32> {
    super::dequantize(w.ty, &w.bytes).expect("whole blocks")
}

/// `y = x·Wᵀ` in f64 from the dequantized weight, plus `Σ|x||w|` per output.
fn naive_xwt(x: &[f32], m: usize, wf: &[f32], rows: usize, cols: usize) -> (Vec<f64>, Vec<f64>) {
    let mut y = vec![0.0; m * rows];
    let mut mag = vec![0.0; m * rows];
    for i in 0..m {
        for r in 0..rows {
            for k in 0..cols {
                let p = f64::from(x[i * cols + k]) * f64::from(wf[r * cols + k]);
                y[i * rows + r] += p;
                mag[i * rows + r] += p.abs();
            }
        }
    }
    (y, mag)
}

/// Asserts `|got − want| ≤ rel · mag` elementwise; returns ‖got − want‖/‖want‖.
fn assert_close(what: &str, got: &[f32], want: &[f64], mag: &[f64], rel: f64) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    for (i, ((&g, &t), &s)) in got.iter().zip(want).zip(mag).enumerate() {
        let err = (f64::from(g) - t).abs();
        assert!(err <= rel * s, "{what}[{i}]: got {g}, want {t}, err {err:e} > {rel:e}·{s:e}");
        num += err * err;
        den += t * t;
    }
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

#[test]
fn f32_band_path_matches_reference() {
    for ty in QuantType::ALL {
        let (rows, cols) = (70, test_cols(ty));
        let w = random_matrix(ty, rows, cols, 11 + ty as u64);
        let wf = reference_w(&w);
        for m in [1, 9, 17, 33] {
            let x = random_vec(m * cols, 5 + m as u64);
            let (want, mag) = naive_xwt(&x, m, &wf, rows, cols);
            let mut y = vec![f32::NAN; m * rows];
            matmul_xwt_dequant(&x, m, &w, &mut y);
            assert_close(&format!("{ty:?} m={m} dequant"), &y, &want, &mag, 1e-5);
            let mut y2 = vec![f32::NAN; m * rows];
            matmul_xwt(&x, m, &w, &mut y2);
            if m > q8_path_max_m(ty) {
                assert_eq!(y, y2, "{ty:?}: matmul_xwt picks the band path for m={m}");
            }
        }
    }
}

#[test]
fn q8_path_within_error_bound() {
    for ty in QuantType::ALL {
        let (rows, cols) = (70, test_cols(ty));
        let w = random_matrix(ty, rows, cols, 21 + ty as u64);
        let wf = reference_w(&w);
        for m in [1, 3, 8] {
            let x = random_vec(m * cols, 7 + m as u64);
            let (want, _) = naive_xwt(&x, m, &wf, rows, cols);
            let mut y = vec![f32::NAN; m * rows];
            matmul_xwt_q8(&x, m, &w, &mut y);
            let (mut worst, mut num, mut den) = (0.0f64, 0.0, 0.0);
            for i in 0..m {
                for r in 0..rows {
                    let bound = q8_error_bound(ty, &wf[r * cols..][..cols], &x[i * cols..][..cols]);
                    let (g, t) = (f64::from(y[i * rows + r]), want[i * rows + r]);
                    let err = (g - t).abs();
                    assert!(
                        err <= bound,
                        "{ty:?} m={m} y[{i},{r}]: got {g}, want {t}, err {err:e} > bound {bound:e}"
                    );
                    worst = worst.max(err / bound);
                    num += err * err;
                    den += t * t;
                }
            }
            if m == 1 {
                println!(
                    "{ty:?}: q8 path relative error ‖Δy‖/‖y‖ = {:.2e}, max err/bound = {worst:.3}",
                    (num / den).sqrt()
                );
            }
        }
    }
}

/// Activations that 8-bit quantization represents exactly (integers with a
/// ±127 in every block): the integer path must then equal the reference up to
/// `f32` rounding, which pins down every detail of the format decoding.
#[test]
fn q8_path_exact_on_representable_activations() {
    for ty in QuantType::ALL {
        let (rows, cols) = (40, test_cols(ty));
        let w = random_matrix(ty, rows, cols, 31 + ty as u64);
        let wf = reference_w(&w);
        let mut rng = Rng(99);
        let m = 2;
        let mut x: Vec<f32> =
            (0..m * cols).map(|_| (rng.next_u64() % 255) as f32 - 127.0).collect();
        for (b, blk) in x.chunks_mut(32).enumerate() {
            blk[b % 32] = if b % 2 == 0 { 127.0 } else { -127.0 };
        }
        let (want, mag) = naive_xwt(&x, m, &wf, rows, cols);
        for isa in [Isa::Scalar, Isa::detect()] {
            let mut y = vec![f32::NAN; m * rows];
            xwt_q8(&x, m, &w, &mut y, isa);
            assert_close(&format!("{ty:?} {isa:?} representable"), &y, &want, &mag, 2e-6);
        }
    }
}

/// Scalar and AVX2 kernels give bit-identical outputs, on random data and on
/// extreme quants (every weight byte 0x00, 0x80 or 0xFF, activations ±127).
#[test]
fn scalar_and_simd_agree_exactly() {
    if Isa::detect() == Isa::Scalar {
        println!("no AVX2 on this CPU: nothing to compare");
        return;
    }
    for ty in QuantType::ALL {
        let (rows, cols) = (50, test_cols(ty));
        let mut cases = vec![random_matrix(ty, rows, cols, 41 + ty as u64)];
        for fill in [0x00u8, 0x80, 0xFF] {
            // Extreme quant bytes, but keep the (finite) f16 scales.
            let scales = random_matrix(ty, rows, cols, 43);
            let mut w = scales.clone();
            w.bytes.fill(fill);
            let bb = ty.block_bytes();
            for (blk, sblk) in w.bytes.chunks_exact_mut(bb).zip(scales.bytes.chunks_exact(bb)) {
                for off in f16_offsets(ty) {
                    blk[off..off + 2].copy_from_slice(&sblk[off..off + 2]);
                }
            }
            cases.push(w);
        }
        for (ci, w) in cases.iter().enumerate() {
            for m in [1, 4] {
                let mut x = random_vec(m * cols, 3 + ci as u64);
                if ci > 0 {
                    for (i, v) in x.iter_mut().enumerate() {
                        *v = if i % 3 == 0 { -1.0 } else { 1.0 };
                    }
                }
                let mut ys = vec![0.0; m * rows];
                let mut yv = vec![0.0; m * rows];
                xwt_q8(&x, m, w, &mut ys, Isa::Scalar);
                xwt_q8(&x, m, w, &mut yv, Isa::Avx2);
                for (i, (a, b)) in ys.iter().zip(&yv).enumerate() {
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "{ty:?} case {ci} m={m} y[{i}]: scalar {a} vs avx2 {b}"
                    );
                }
            }
        }
    }
}

fn f16_offsets(ty: QuantType) -> Vec<usize> {
    match ty {
        QuantType::Q4_0 | QuantType::Q5_0 | QuantType::Q8_0 => vec![0],
        QuantType::Q4_1 | QuantType::Q5_1 | QuantType::Q4K | QuantType::Q5K => vec![0, 2],
        QuantType::Q2K => vec![80, 82],
        QuantType::Q3K => vec![108],
        QuantType::Q6K => vec![208],
    }
}

#[test]
fn dyw_matches_reference() {
    for ty in QuantType::ALL {
        for (rows, cols) in [(70, test_cols(ty)), (3, ty.block_elements())] {
            let w = random_matrix(ty, rows, cols, 51 + ty as u64);
            let wf = reference_w(&w);
            for m in [1, 5, 40] {
                let dy = random_vec(m * rows, 9 + m as u64);
                let mut want = vec![0.0f64; m * cols];
                let mut mag = vec![0.0f64; m * cols];
                for i in 0..m {
                    for r in 0..rows {
                        let g = f64::from(dy[i * rows + r]);
                        for k in 0..cols {
                            let p = g * f64::from(wf[r * cols + k]);
                            want[i * cols + k] += p;
                            mag[i * cols + k] += p.abs();
                        }
                    }
                }
                let mut dx = vec![f32::NAN; m * cols];
                matmul_dyw(&dy, m, &w, &mut dx);
                assert_close(&format!("{ty:?} [{rows},{cols}] m={m} dyw"), &dx, &want, &mag, 1e-5);
            }
        }
    }
}

#[test]
fn dequantize_into_matches_blocks() {
    for ty in QuantType::ALL {
        let w = random_matrix(ty, 4, ty.block_elements() * 2, 61);
        assert_eq!(w.dequantize(), reference_w(&w));
        let mut one = vec![0.0; w.cols];
        dequantize_into(ty, w.row(2), &mut one);
        assert_eq!(one, reference_w(&w)[2 * w.cols..3 * w.cols]);
    }
}

#[test]
fn constructor_checks_sizes() {
    assert!(QuantMatrix::new(QuantType::Q4K, 2, 128, vec![0; 144]).is_err());
    assert!(QuantMatrix::new(QuantType::Q4K, 2, 256, vec![0; 287]).is_err());
    assert!(QuantMatrix::new(QuantType::Q8_0, usize::MAX, 64, vec![]).is_err());
    let w = QuantMatrix::new(QuantType::Q4K, 2, 256, vec![0; 288]).unwrap();
    assert_eq!(w.row_bytes(), 144);
    assert_eq!(QuantType::from_ggml_id(12), Some(QuantType::Q4K));
    assert_eq!(QuantType::from_ggml_id(1), None);
    assert_eq!(QuantType::Q5_1.row_bytes(64), Some(48));
    assert_eq!(QuantType::Q6K.row_bytes(100), None);
}

#[test]
fn empty_shapes_are_fine() {
    let w = random_matrix(QuantType::Q8_0, 0, 64, 1);
    let mut y = vec![];
    matmul_xwt(&[0.5; 64], 1, &w, &mut y);
    let mut dx = vec![1.0; 64];
    matmul_dyw(&[], 1, &w, &mut dx);
    assert!(dx.iter().all(|&v| v == 0.0));
    let w = random_matrix(QuantType::Q8_0, 3, 64, 1);
    matmul_xwt(&[], 0, &w, &mut y);
    matmul_dyw(&[], 0, &w, &mut dx[..0]);
}

#[test]
#[should_panic(expected = "x has 63 elements")]
fn xwt_rejects_wrong_x_length() {
    let w = random_matrix(QuantType::Q4_0, 2, 64, 1);
    matmul_xwt(&[0.0; 63], 1, &w, &mut [0.0; 2]);
}

#[test]
#[should_panic(expected = "dx has 3 elements")]
fn dyw_rejects_wrong_dx_length() {
    let w = random_matrix(QuantType::Q4_0, 2, 64, 1);
    matmul_dyw(&[0.0; 2], 1, &w, &mut [0.0; 3]);
}

#[test]
#[should_panic(expected = "needs 36 bytes")]
fn xwt_rejects_inconsistent_matrix() {
    let mut w = random_matrix(QuantType::Q4_0, 2, 32, 1);
    w.bytes.pop();
    matmul_xwt(&[0.0; 32], 1, &w, &mut [0.0; 2]);
}
