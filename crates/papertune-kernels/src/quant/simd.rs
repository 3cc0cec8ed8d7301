//! AVX2 versions of the integer row kernels in [`super::dot`].
//!
//! The workhorse is `_mm256_maddubs_epi16` (unsigned bytes × signed bytes,
//! adjacent pairs summed to `i16`), followed by `_mm256_madd_epi16` against
//! ones (or against the group scales of the k-quants) to widen to `i32`.
//! No pair sum can saturate: unsigned weight quants are at most 63 (or 128
//! for |Q8_0|) and activation quants at most 127 in magnitude.
//!
//! Each kernel reproduces the scalar one bit for bit (see the module docs of
//! `dot`): integer sums are exact, and the float steps are the same IEEE
//! operations in the same order.

// Every function here is `unsafe` for its target feature and raw reads alone; their bodies are
// intrinsics and pointer steps throughout, checked by the callers' length asserts.
#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;

use super::QuantType;
use super::act::ActRow;
use super::dot::{self, B32, RowDot};

/// Whether the CPU supports the kernels of this module.
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("f16c")
}

/// The AVX2 row kernel for `ty`, or `None` when the CPU lacks AVX2 / F16C.
pub(crate) fn row_dot_fn(ty: QuantType) -> Option<RowDot> {
    if !available() {
        return None;
    }
    // SAFETY (for every wrapper below): these closures are only handed out
    // after the feature check above succeeded, and each kernel checks its
    // slice lengths before any unchecked access.
    Some(match ty {
        QuantType::Q4_0 => |w, a| unsafe { row_q4_0(w, a) },
        QuantType::Q4_1 => |w, a| unsafe { row_q4_1(w, a) },
        QuantType::Q5_0 => |w, a| unsafe { row_q5_0(w, a) },
        QuantType::Q5_1 => |w, a| unsafe { row_q5_1(w, a) },
        QuantType::Q8_0 => |w, a| unsafe { row_q8_0(w, a) },
        QuantType::Q2K => |w, a| unsafe { row_q2k(w, a) },
        QuantType::Q3K => |w, a| unsafe { row_q3k(w, a) },
        QuantType::Q4K => |w, a| unsafe { row_q4k(w, a) },
        QuantType::Q5K => |w, a| unsafe { row_q5k(w, a) },
        QuantType::Q6K => |w, a| unsafe { row_q6k(w, a) },
    })
}

/// `Σ u·x` of 32 unsigned weight bytes and 32 signed activations, as eight
/// `i32` partial sums.
#[inline]
#[target_feature(enable = "avx2")]
fn dot_u8_i8(u: __m256i, x: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1))
}

/// 16 packed bytes to 32 nibbles in element order: low nibbles (elements
/// 0..16) in the low lane, high nibbles (16..32) in the high lane.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn nibbles_32(p: *const u8) -> __m256i {
    let b = _mm_loadu_si128(p as *const __m128i);
    let v = _mm256_set_m128i(_mm_srli_epi16::<4>(b), b);
    _mm256_and_si256(v, _mm256_set1_epi8(0x0F))
}

/// Bit `i` of `qh` to byte `i` as `0x10` (set) or `0` (clear).
#[inline]
#[target_feature(enable = "avx2")]
fn fifth_bits(qh: u32) -> __m256i {
    let v = _mm256_set1_epi32(qh as i32);
    #[rustfmt::skip]
    let spread = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
        2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
    );
    let v = _mm256_shuffle_epi8(v, spread);
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// Raw integer partial sums of one 32-value block at `blk` against the 32
/// activation quants at `xq` (eight `i32`s whose total is `dot::raw_*`).
type B32Prod = unsafe fn(*const u8, *const i8) -> __m256i;

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn prod_q4_0(blk: *const u8, xq: *const i8) -> __m256i {
    dot_u8_i8(nibbles_32(blk.add(2)), _mm256_loadu_si256(xq as *const __m256i))
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn prod_q4_1(blk: *const u8, xq: *const i8) -> __m256i {
    dot_u8_i8(nibbles_32(blk.add(4)), _mm256_loadu_si256(xq as *const __m256i))
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn prod_q5_0(blk: *const u8, xq: *const i8) -> __m256i {
    let qh = (blk.add(2) as *const u32).read_unaligned().to_le();
    let u = _mm256_or_si256(nibbles_32(blk.add(6)), fifth_bits(qh));
    dot_u8_i8(u, _mm256_loadu_si256(xq as *const __m256i))
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn prod_q5_1(blk: *const u8, xq: *const i8) -> __m256i {
    let qh = (blk.add(4) as *const u32).read_unaligned().to_le();
    let u = _mm256_or_si256(nibbles_32(blk.add(8)), fifth_bits(qh));
    dot_u8_i8(u, _mm256_loadu_si256(xq as *const __m256i))
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn prod_q8_0(blk: *const u8, xq: *const i8) -> __m256i {
    let w = _mm256_loadu_si256(blk.add(2) as *const __m256i);
    let x = _mm256_loadu_si256(xq as *const __m256i);
    // |w| as unsigned (|-128| = 128 fits), sign moved onto x.
    dot_u8_i8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w))
}

/// Four packed `f16` at `p`, `p + stride`, … widened to `f32`.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn f16x4(p: *const u8, stride: usize) -> __m128 {
    let h = |i: usize| (p.add(i * stride) as *const i16).read_unaligned();
    _mm_cvtph_ps(_mm_setr_epi16(h(0), h(1), h(2), h(3), 0, 0, 0, 0))
}

/// Shared row loop of the 32-value formats: four blocks at a time, their
/// integer sums reduced to one lane each; float work as in [`dot::b32_step`].
#[inline(always)]
unsafe fn row_b32(w: &[u8], a: ActRow<'_>, f: &B32, prod: B32Prod) -> f32 {
    let nb = w.len() / f.bytes;
    assert!(
        w.len() == nb * f.bytes && a.qs.len() == 32 * nb && a.d.len() == nb && a.sums.len() == nb
    );
    let (wp, xp) = (w.as_ptr(), a.qs.as_ptr());
    let mut acc = _mm_setzero_ps();
    let groups = nb / 4;
    for g in 0..groups {
        let b = 4 * g;
        let blk = wp.add(b * f.bytes);
        let p0 = prod(blk, xp.add(32 * b));
        let p1 = prod(blk.add(f.bytes), xp.add(32 * b + 32));
        let p2 = prod(blk.add(2 * f.bytes), xp.add(32 * b + 64));
        let p3 = prod(blk.add(3 * f.bytes), xp.add(32 * b + 96));
        // [Σp0, Σp1, Σp2, Σp3] in both halves' partial form, then folded.
        let h = _mm256_hadd_epi32(_mm256_hadd_epi32(p0, p1), _mm256_hadd_epi32(p2, p3));
        let raw4 = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h));
        let xsum = _mm_cvtepi16_epi32(_mm_loadl_epi64(a.sums.as_ptr().add(b) as *const __m128i));
        let isum = _mm_sub_epi32(raw4, _mm_mullo_epi32(xsum, _mm_set1_epi32(f.offset)));
        let dx = _mm_loadu_ps(a.d.as_ptr().add(b));
        let dd = _mm_mul_ps(f16x4(blk, f.bytes), dx);
        acc = _mm_add_ps(acc, _mm_mul_ps(dd, _mm_cvtepi32_ps(isum)));
        if f.has_min {
            let m = f16x4(blk.add(2), f.bytes);
            acc = _mm_add_ps(acc, _mm_mul_ps(m, _mm_mul_ps(dx, _mm_cvtepi32_ps(xsum))));
        }
    }
    let mut lanes = [0.0f32; 4];
    _mm_storeu_ps(lanes.as_mut_ptr(), acc);
    // The last nb % 4 blocks one at a time (a 576-wide row has two), their integer sums still
    // in AVX2: the same exact integers as `raw` gives.
    for b in 4 * groups..nb {
        let blk = &w[b * f.bytes..(b + 1) * f.bytes];
        let raw = hsum_i32(prod(wp.add(b * f.bytes), xp.add(32 * b)));
        dot::b32_step(f, blk, raw, a.d[b], a.sums[b], &mut lanes[b & 3]);
    }
    dot::reduce4(lanes)
}

/// The sum of eight `i32` lanes (exact: the block sums are far from overflowing).
#[inline(always)]
unsafe fn hsum_i32(v: __m256i) -> i32 {
    let x = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let x = _mm_add_epi32(x, _mm_shuffle_epi32::<0b01_00_11_10>(x));
    let x = _mm_add_epi32(x, _mm_shuffle_epi32::<0b10_11_00_01>(x));
    _mm_cvtsi128_si32(x)
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn row_q4_0(w: &[u8], a: ActRow<'_>) -> f32 {
    row_b32(w, a, &dot::Q4_0, prod_q4_0)
}
#[target_feature(enable = "avx2,f16c")]
unsafe fn row_q4_1(w: &[u8], a: ActRow<'_>) -> f32 {
    row_b32(w, a, &dot::Q4_1, prod_q4_1)
}
#[target_feature(enable = "avx2,f16c")]
unsafe fn row_q5_0(w: &[u8], a: ActRow<'_>) -> f32 {
    row_b32(w, a, &dot::Q5_0, prod_q5_0)
}
#[target_feature(enable = "avx2,f16c")]
unsafe fn row_q5_1(w: &[u8], a: ActRow<'_>) -> f32 {
    row_b32(w, a, &dot::Q5_1, prod_q5_1)
}
#[target_feature(enable = "avx2,f16c")]
unsafe fn row_q8_0(w: &[u8], a: ActRow<'_>) -> f32 {
    row_b32(w, a, &dot::Q8_0, prod_q8_0)
}

/// `[s[2k] ×8 | s[2k+1] ×8]` (`i16`) from eight `i16` scales held in both
/// lanes of `s8`: the scales of the two 16-element groups covered by one
/// 32-byte vector of quants.
#[inline]
#[target_feature(enable = "avx2")]
fn scale_pair(s8: __m256i, k: usize) -> __m256i {
    let (a, b) = (4 * k as i8, 4 * k as i8 + 2);
    #[rustfmt::skip]
    let idx = _mm256_setr_epi8(
        a, a + 1, a, a + 1, a, a + 1, a, a + 1, a, a + 1, a, a + 1, a, a + 1, a, a + 1,
        b, b + 1, b, b + 1, b, b + 1, b, b + 1, b, b + 1, b, b + 1, b, b + 1, b, b + 1,
    );
    _mm256_shuffle_epi8(s8, idx)
}

/// `s[k]` (`i16`) in all sixteen positions, from eight scales in both lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn scale_one(s8: __m256i, k: usize) -> __m256i {
    let a = 2 * k as i8;
    let idx = _mm256_set1_epi16(i16::from_le_bytes([a as u8, a as u8 + 1]));
    _mm256_shuffle_epi8(s8, idx)
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load_i8(p: *const i8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

/// Lane `n` (0 or 1) of `v` copied into both lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn both_lanes(v: __m256i, n: usize) -> __m256i {
    if n == 0 {
        _mm256_permute2x128_si256::<0x00>(v, v)
    } else {
        _mm256_permute2x128_si256::<0x11>(v, v)
    }
}

/// The totals of `a` (eight `i32`) and `b` (four `i32`).
#[inline]
#[target_feature(enable = "avx2")]
fn hsum_pair(a: __m256i, b: __m128i) -> (i32, i32) {
    let s = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256::<1>(a));
    let h = _mm_hadd_epi32(s, b);
    let h = _mm_hadd_epi32(h, h);
    (_mm_cvtsi128_si32(h), _mm_extract_epi32::<1>(h))
}

/// The eight 32-element group sums of the activations from their sixteen
/// 16-element sums.
#[inline]
#[target_feature(enable = "avx2")]
fn pair_sums(bs: __m256i) -> __m128i {
    _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256::<1>(bs))
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn row_q2k(w: &[u8], a: ActRow<'_>) -> f32 {
    dot::row_k::<84, 80, 82>(w, a, |blk, xq, sums| {
        let (bp, xp) = (blk.as_ptr(), xq.as_ptr());
        let raw = _mm_loadu_si128(bp as *const __m128i);
        let m4 = _mm_set1_epi8(0x0F);
        let sc16 = _mm256_cvtepu8_epi16(_mm_and_si128(raw, m4));
        let mn16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(raw), m4));
        let bs = _mm256_loadu_si256(sums.as_ptr() as *const __m256i);
        let m = _mm256_madd_epi16(mn16, bs);
        let m = _mm_add_epi32(_mm256_castsi256_si128(m), _mm256_extracti128_si256::<1>(m));
        let m3 = _mm256_set1_epi8(3);
        let mut acc = _mm256_setzero_si256();
        for n in 0..2 {
            let s8 = both_lanes(sc16, n);
            let mut q = load(bp.add(16 + 32 * n));
            for j in 0..4 {
                let u = _mm256_and_si256(q, m3);
                let p = _mm256_maddubs_epi16(u, load_i8(xp.add(128 * n + 32 * j)));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, scale_pair(s8, j)));
                q = _mm256_srli_epi16::<2>(q);
            }
        }
        hsum_pair(acc, m)
    })
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn row_q3k(w: &[u8], a: ActRow<'_>) -> f32 {
    dot::row_k::<110, 108, { usize::MAX }>(w, a, |blk, xq, sums| {
        let (bp, xp) = (blk.as_ptr(), xq.as_ptr());
        let Ok(packed) = blk[96..108].try_into() else { unreachable!() };
        let biased = dot::scales_q3k_biased(packed);
        let sc =
            _mm_sub_epi8(_mm_loadu_si128(biased.as_ptr() as *const __m128i), _mm_set1_epi8(32));
        let sc16 = _mm256_cvtepi8_epi16(sc);
        // The −4 offset of every quant, as −4·Σ_g sc_g·sum_g.
        let bs = _mm256_loadu_si256(sums.as_ptr() as *const __m256i);
        let mut acc = _mm256_sub_epi32(
            _mm256_setzero_si256(),
            _mm256_slli_epi32::<2>(_mm256_madd_epi16(sc16, bs)),
        );
        let (m3, m4) = (_mm256_set1_epi8(3), _mm256_set1_epi8(4));
        let mut hm = load(bp);
        for n in 0..2 {
            let s8 = both_lanes(sc16, n);
            let mut q = load(bp.add(32 + 32 * n));
            for j in 0..4 {
                let high = _mm256_and_si256(_mm256_slli_epi16::<2>(hm), m4);
                let u = _mm256_or_si256(_mm256_and_si256(q, m3), high);
                let p = _mm256_maddubs_epi16(u, load_i8(xp.add(128 * n + 32 * j)));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, scale_pair(s8, j)));
                q = _mm256_srli_epi16::<2>(q);
                hm = _mm256_srli_epi16::<1>(hm);
            }
        }
        hsum_pair(acc, _mm_setzero_si128())
    })
}

/// Scales (both lanes) and the min sum of a Q4_K / Q5_K super-block.
#[inline]
#[target_feature(enable = "avx2")]
fn k4_scales(blk: &[u8], sums: &[i16; 16]) -> (__m256i, __m128i) {
    let Ok(packed) = blk[4..16].try_into() else { unreachable!() };
    let (sc, mn) = dot::scale_min_k4(packed);
    let sc = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(sc as i64));
    let mn = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(mn as i64));
    // SAFETY: reads exactly the sixteen i16 of `sums`.
    let bs = unsafe { _mm256_loadu_si256(sums.as_ptr() as *const __m256i) };
    (_mm256_broadcastsi128_si256(sc), _mm_madd_epi16(mn, pair_sums(bs)))
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn row_q4k(w: &[u8], a: ActRow<'_>) -> f32 {
    dot::row_k::<144, 0, 2>(w, a, |blk, xq, sums| {
        let (bp, xp) = (blk.as_ptr(), xq.as_ptr());
        let (s8, m) = k4_scales(blk, sums);
        let m4 = _mm256_set1_epi8(0x0F);
        let mut acc = _mm256_setzero_si256();
        for c in 0..4 {
            let q = load(bp.add(16 + 32 * c));
            let lo = _mm256_and_si256(q, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
            let plo = _mm256_maddubs_epi16(lo, load_i8(xp.add(64 * c)));
            let phi = _mm256_maddubs_epi16(hi, load_i8(xp.add(64 * c + 32)));
            let plo = _mm256_madd_epi16(plo, scale_one(s8, 2 * c));
            let phi = _mm256_madd_epi16(phi, scale_one(s8, 2 * c + 1));
            acc = _mm256_add_epi32(acc, _mm256_add_epi32(plo, phi));
        }
        hsum_pair(acc, m)
    })
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn row_q5k(w: &[u8], a: ActRow<'_>) -> f32 {
    dot::row_k::<176, 0, 2>(w, a, |blk, xq, sums| {
        let (bp, xp) = (blk.as_ptr(), xq.as_ptr());
        let (s8, m) = k4_scales(blk, sums);
        let (m4, m16) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x10));
        let mut qh = load(bp.add(16));
        let mut acc = _mm256_setzero_si256();
        for c in 0..4 {
            let q = load(bp.add(48 + 32 * c));
            let hlo = _mm256_and_si256(_mm256_slli_epi16::<4>(qh), m16);
            let hhi = _mm256_and_si256(_mm256_slli_epi16::<3>(qh), m16);
            let lo = _mm256_or_si256(_mm256_and_si256(q, m4), hlo);
            let hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(q), m4), hhi);
            let plo = _mm256_maddubs_epi16(lo, load_i8(xp.add(64 * c)));
            let phi = _mm256_maddubs_epi16(hi, load_i8(xp.add(64 * c + 32)));
            let plo = _mm256_madd_epi16(plo, scale_one(s8, 2 * c));
            let phi = _mm256_madd_epi16(phi, scale_one(s8, 2 * c + 1));
            acc = _mm256_add_epi32(acc, _mm256_add_epi32(plo, phi));
            qh = _mm256_srli_epi16::<2>(qh);
        }
        hsum_pair(acc, m)
    })
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn row_q6k(w: &[u8], a: ActRow<'_>) -> f32 {
    dot::row_k::<210, 208, { usize::MAX }>(w, a, |blk, xq, sums| {
        let (bp, xp) = (blk.as_ptr(), xq.as_ptr());
        let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(bp.add(192) as *const __m128i));
        // The −32 offset of every quant, as −32·Σ_g sc_g·sum_g.
        let bs = _mm256_loadu_si256(sums.as_ptr() as *const __m256i);
        let mut acc = _mm256_sub_epi32(
            _mm256_setzero_si256(),
            _mm256_slli_epi32::<5>(_mm256_madd_epi16(sc16, bs)),
        );
        let (m4, m30) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x30));
        for n in 0..2 {
            let s8 = both_lanes(sc16, n);
            let qa = load(bp.add(64 * n));
            let qb = load(bp.add(64 * n + 32));
            let qh = load(bp.add(128 + 32 * n));
            let u = [
                _mm256_or_si256(
                    _mm256_and_si256(qa, m4),
                    _mm256_and_si256(_mm256_slli_epi16::<4>(qh), m30),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(qb, m4),
                    _mm256_and_si256(_mm256_slli_epi16::<2>(qh), m30),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(qa), m4),
                    _mm256_and_si256(qh, m30),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(qb), m4),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(qh), m30),
                ),
            ];
            for (k, &uk) in u.iter().enumerate() {
                let p = _mm256_maddubs_epi16(uk, load_i8(xp.add(128 * n + 32 * k)));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, scale_pair(s8, k)));
            }
        }
        hsum_pair(acc, _mm_setzero_si128())
    })
}
