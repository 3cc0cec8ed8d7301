//! Quantized row · quantized-activation dot products: the scalar kernels and
//! the glue (scale unpacking, float combination) that the SIMD kernels share.
//!
//! Every kernel splits the work the same way so that the scalar and SIMD
//! versions give bit-identical results:
//!
//! * the integer part of each block (Σ q_w·q_x, including any per-group
//!   scales of the k-quants) is exact in `i32`, whatever the summation order;
//! * the float part is done in one fixed order by code shared between the two
//!   (k-quants), or by the same IEEE operations lane by lane (32-value
//!   blocks: block `b` goes to lane `b % 4`, lanes summed `(0+1)+(2+3)`).

use super::QuantType;
use super::act::ActRow;

/// A whole-row kernel: `Σ_i W[r, i] · x̂[i]` for one weight row (raw blocks)
/// and one quantized activation row of the same length.
pub(crate) type RowDot = fn(&[u8], ActRow<'_>) -> f32;

/// The portable row kernel for weights of type `ty`.
pub(crate) fn scalar_row_dot(ty: QuantType) -> RowDot {
    match ty {
        QuantType::Q4_0 => |w, a| row_b32(w, a, &Q4_0, raw_q4_0),
        QuantType::Q4_1 => |w, a| row_b32(w, a, &Q4_1, raw_q4_1),
        QuantType::Q5_0 => |w, a| row_b32(w, a, &Q5_0, raw_q5_0),
        QuantType::Q5_1 => |w, a| row_b32(w, a, &Q5_1, raw_q5_1),
        QuantType::Q8_0 => |w, a| row_b32(w, a, &Q8_0, raw_q8_0),
        QuantType::Q2K => row_q2k,
        QuantType::Q3K => row_q3k,
        QuantType::Q4K => row_q4k,
        QuantType::Q5K => row_q5k,
        QuantType::Q6K => row_q6k,
    }
}

pub(crate) use super::blocks::f16_at;

// ---------------------------------------------------------------------------
// 32-value block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0)
// ---------------------------------------------------------------------------

/// Layout facts of a 32-value block format needed by the float glue.
pub(crate) struct B32 {
    /// Bytes per block.
    pub bytes: usize,
    /// Whether an `f16` min `m` follows `d` (`x = d·q + m`).
    pub has_min: bool,
    /// Constant subtracted from the unsigned quants (`x = d·(q − offset)`).
    pub offset: i32,
}

pub(crate) const Q4_0: B32 = B32 { bytes: 18, has_min: false, offset: 8 };
pub(crate) const Q4_1: B32 = B32 { bytes: 20, has_min: true, offset: 0 };
pub(crate) const Q5_0: B32 = B32 { bytes: 22, has_min: false, offset: 16 };
pub(crate) const Q5_1: B32 = B32 { bytes: 24, has_min: true, offset: 0 };
pub(crate) const Q8_0: B32 = B32 { bytes: 34, has_min: false, offset: 0 };

/// Adds block `blk`'s contribution to a lane accumulator, given its raw
/// integer sum `raw = Σ q·q_x` (quants as stored, before the offset), the
/// activation block scale `dx` and quant sum `xsum`.
///
/// `lane += (d·dx)·(raw − offset·xsum)`, then for the `_1` formats
/// `lane += m·(dx·xsum)`; the AVX2 kernel performs the same operations.
#[inline(always)]
pub(crate) fn b32_step(f: &B32, blk: &[u8], raw: i32, dx: f32, xsum: i16, lane: &mut f32) {
    let xsum = i32::from(xsum);
    let isum = raw - f.offset * xsum;
    *lane += (f16_at(blk, 0) * dx) * isum as f32;
    if f.has_min {
        *lane += f16_at(blk, 2) * (dx * xsum as f32);
    }
}

/// Fixed final reduction of the four lane accumulators.
#[inline(always)]
pub(crate) fn reduce4(l: [f32; 4]) -> f32 {
    (l[0] + l[1]) + (l[2] + l[3])
}

/// Scalar row kernel for a 32-value format with raw block sum `raw`.
#[inline(always)]
fn row_b32(w: &[u8], a: ActRow<'_>, f: &B32, raw: fn(&[u8], &[i8]) -> i32) -> f32 {
    let mut lanes = [0.0f32; 4];
    for (b, blk) in w.chunks_exact(f.bytes).enumerate() {
        let xq = &a.qs[32 * b..32 * b + 32];
        b32_step(f, blk, raw(blk, xq), a.d[b], a.sums[b], &mut lanes[b & 3]);
    }
    reduce4(lanes)
}

/// Σ of 16 packed nibbles (`j` low, `j + 16` high) times the activations.
#[inline(always)]
fn nibble_dot(qs: &[u8], xq: &[i8]) -> i32 {
    (0..16)
        .map(|j| {
            i32::from(qs[j] & 0x0F) * i32::from(xq[j])
                + i32::from(qs[j] >> 4) * i32::from(xq[j + 16])
        })
        .sum()
}

/// As [`nibble_dot`] with a fifth bit per element from the `qh` word.
#[inline(always)]
fn five_bit_dot(qh: u32, qs: &[u8], xq: &[i8]) -> i32 {
    (0..16)
        .map(|j| {
            let lo = i32::from(qs[j] & 0x0F) | (((qh >> j) & 1) << 4) as i32;
            let hi = i32::from(qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4) as i32;
            lo * i32::from(xq[j]) + hi * i32::from(xq[j + 16])
        })
        .sum()
}

fn le_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Raw integer sum of one Q4_0 block (quants 0..16, offset applied later).
pub(crate) fn raw_q4_0(blk: &[u8], xq: &[i8]) -> i32 {
    nibble_dot(&blk[2..18], xq)
}
/// Raw integer sum of one Q4_1 block.
pub(crate) fn raw_q4_1(blk: &[u8], xq: &[i8]) -> i32 {
    nibble_dot(&blk[4..20], xq)
}
/// Raw integer sum of one Q5_0 block (quants 0..32, offset applied later).
pub(crate) fn raw_q5_0(blk: &[u8], xq: &[i8]) -> i32 {
    five_bit_dot(le_u32(blk, 2), &blk[6..22], xq)
}
/// Raw integer sum of one Q5_1 block.
pub(crate) fn raw_q5_1(blk: &[u8], xq: &[i8]) -> i32 {
    five_bit_dot(le_u32(blk, 4), &blk[8..24], xq)
}
/// Integer sum of one Q8_0 block (signed quants).
pub(crate) fn raw_q8_0(blk: &[u8], xq: &[i8]) -> i32 {
    blk[2..34].iter().zip(xq).map(|(&q, &x)| i32::from(q as i8) * i32::from(x)).sum()
}

// ---------------------------------------------------------------------------
// k-quant super-block formats (256 values)
// ---------------------------------------------------------------------------

/// The eight 6-bit scales and eight 6-bit mins of Q4_K / Q5_K, unpacked from
/// their 12 packed bytes as two little-endian `u64`s of eight bytes each
/// (pairs 4..8 keep their top two bits in the spare bits of bytes 0..8).
#[inline(always)]
pub(crate) fn scale_min_k4(s: &[u8; 12]) -> (u64, u64) {
    let (scales, mins) = super::blocks::k_scale_min(s);
    (u64::from_le_bytes(scales), u64::from_le_bytes(mins))
}

/// The sixteen 6-bit group scales of Q3_K, unpacked from their 12 packed
/// bytes, still biased by +32 (true scale = byte − 32).
#[inline(always)]
pub(crate) fn scales_q3k_biased(s: &[u8; 12]) -> [u8; 16] {
    let word = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (a, b, c) = (word(0), word(1), word(2));
    let (m4, m2) = (0x0F0F_0F0F, 0x0303_0303);
    let groups = [
        (a & m4) | ((c & m2) << 4),
        (b & m4) | (((c >> 2) & m2) << 4),
        ((a >> 4) & m4) | (((c >> 4) & m2) << 4),
        ((b >> 4) & m4) | (((c >> 6) & m2) << 4),
    ];
    let mut out = [0u8; 16];
    for (o, g) in out.chunks_exact_mut(4).zip(groups) {
        o.copy_from_slice(&g.to_le_bytes());
    }
    out
}

/// Shared row loop of the k-quants. `int(block, quants, sums)` returns the
/// exact integer parts of one super-block · activation-block product:
/// `isum` multiplies `d·dx` and `msum` multiplies `−dmin·dx` (0 for the
/// formats without mins). Then
/// `acc += (d·dx)·isum; acc −= (dmin·dx)·msum` per super-block, in order.
/// `D` is the byte offset of `d`, `M` that of `dmin` (or `usize::MAX`).
#[inline(always)]
pub(crate) fn row_k<const B: usize, const D: usize, const M: usize>(
    w: &[u8],
    a: ActRow<'_>,
    int: impl Fn(&[u8; B], &[i8; 256], &[i16; 16]) -> (i32, i32),
) -> f32 {
    let nb = w.len() / B;
    assert!(
        w.len() == nb * B && a.qs.len() == 256 * nb && a.d.len() == nb && a.sums.len() == 16 * nb
    );
    let mut acc = 0.0f32;
    for (((blk, xq), sums), &dx) in
        w.chunks_exact(B).zip(a.qs.chunks_exact(256)).zip(a.sums.chunks_exact(16)).zip(a.d)
    {
        let (Ok(blk), Ok(xq), Ok(sums)) = (blk.try_into(), xq.try_into(), sums.try_into()) else {
            unreachable!("chunks_exact yields exact lengths")
        };
        let (isum, msum) = int(blk, xq, sums);
        acc += (f16_at(blk, D) * dx) * isum as f32;
        if M != usize::MAX {
            acc -= (f16_at(blk, M) * dx) * msum as f32;
        }
    }
    acc
}

/// Scalar row kernels of the k-quants.
fn row_q2k(w: &[u8], a: ActRow<'_>) -> f32 {
    row_k::<84, 80, 82>(w, a, int_q2k)
}
fn row_q3k(w: &[u8], a: ActRow<'_>) -> f32 {
    row_k::<110, 108, { usize::MAX }>(w, a, int_q3k)
}
fn row_q4k(w: &[u8], a: ActRow<'_>) -> f32 {
    row_k::<144, 0, 2>(w, a, int_q4k)
}
fn row_q5k(w: &[u8], a: ActRow<'_>) -> f32 {
    row_k::<176, 0, 2>(w, a, int_q5k)
}
fn row_q6k(w: &[u8], a: ActRow<'_>) -> f32 {
    row_k::<210, 208, { usize::MAX }>(w, a, int_q6k)
}

/// Q2_K: `isum = Σ_g (sc_g & 15)·Σ u·x` over 16 groups of 16 with unsigned
/// 2-bit quants (element `128n + 32j + l` is bits `2j..` of `qs[32n + l]`),
/// `msum = Σ_g (sc_g >> 4)·sum_g`.
pub(crate) fn int_q2k(blk: &[u8; 84], xq: &[i8; 256], sums: &[i16; 16]) -> (i32, i32) {
    let qs = &blk[16..80];
    let (mut isum, mut msum) = (0i32, 0i32);
    for g in 0..16 {
        let (n, j, h) = (g / 8, (g % 8) / 2, g % 2);
        let mut s = 0i32;
        for l in 16 * h..16 * h + 16 {
            s += i32::from((qs[32 * n + l] >> (2 * j)) & 3) * i32::from(xq[128 * n + 32 * j + l]);
        }
        isum += i32::from(blk[g] & 0x0F) * s;
        msum += i32::from(blk[g] >> 4) * i32::from(sums[g]);
    }
    (isum, msum)
}

/// Q3_K: `isum = Σ_g sc_g·Σ (u − 4)·x` with `u` the low two bits (as in
/// Q2_K) plus `4·` bit `4n + j` of `hmask[l]`, `sc_g` the signed scales.
pub(crate) fn int_q3k(blk: &[u8; 110], xq: &[i8; 256], sums: &[i16; 16]) -> (i32, i32) {
    let (hmask, qs) = (&blk[0..32], &blk[32..96]);
    let Ok(packed) = blk[96..108].try_into() else { unreachable!() };
    let sc = scales_q3k_biased(packed);
    let mut isum = 0i32;
    for g in 0..16 {
        let (n, j, h) = (g / 8, (g % 8) / 2, g % 2);
        let mut s = 0i32;
        for l in 16 * h..16 * h + 16 {
            let low = (qs[32 * n + l] >> (2 * j)) & 3;
            let high = ((hmask[l] >> (4 * n + j)) & 1) << 2;
            s += i32::from(low | high) * i32::from(xq[128 * n + 32 * j + l]);
        }
        isum += (i32::from(sc[g]) - 32) * (s - 4 * i32::from(sums[g]));
    }
    (isum, 0)
}

/// Q4_K: `isum = Σ_g sc_g·Σ q·x` over 8 groups of 32 (groups `2c`, `2c+1` =
/// low, high nibbles of `qs[32c..32c+32]`), `msum = Σ_g m_g·(sum of group)`.
pub(crate) fn int_q4k(blk: &[u8; 144], xq: &[i8; 256], sums: &[i16; 16]) -> (i32, i32) {
    let Ok(packed) = blk[4..16].try_into() else { unreachable!() };
    let (sc, mn) = scale_min_k4(packed);
    let (sc, mn) = (sc.to_le_bytes(), mn.to_le_bytes());
    let qs = &blk[16..144];
    let (mut isum, mut msum) = (0i32, 0i32);
    for c in 0..4 {
        let (mut lo, mut hi) = (0i32, 0i32);
        for l in 0..32 {
            let q = qs[32 * c + l];
            lo += i32::from(q & 0x0F) * i32::from(xq[64 * c + l]);
            hi += i32::from(q >> 4) * i32::from(xq[64 * c + 32 + l]);
        }
        isum += i32::from(sc[2 * c]) * lo + i32::from(sc[2 * c + 1]) * hi;
    }
    for g in 0..8 {
        msum += i32::from(mn[g]) * (i32::from(sums[2 * g]) + i32::from(sums[2 * g + 1]));
    }
    (isum, msum)
}

/// Q5_K: as Q4_K with a fifth bit, bit `2c` (low) / `2c+1` (high) of `qh[l]`.
pub(crate) fn int_q5k(blk: &[u8; 176], xq: &[i8; 256], sums: &[i16; 16]) -> (i32, i32) {
    let Ok(packed) = blk[4..16].try_into() else { unreachable!() };
    let (sc, mn) = scale_min_k4(packed);
    let (sc, mn) = (sc.to_le_bytes(), mn.to_le_bytes());
    let (qh, qs) = (&blk[16..48], &blk[48..176]);
    let (mut isum, mut msum) = (0i32, 0i32);
    for c in 0..4 {
        let (mut lo, mut hi) = (0i32, 0i32);
        for l in 0..32 {
            let q = qs[32 * c + l];
            let ulo = (q & 0x0F) | (((qh[l] >> (2 * c)) & 1) << 4);
            let uhi = (q >> 4) | (((qh[l] >> (2 * c + 1)) & 1) << 4);
            lo += i32::from(ulo) * i32::from(xq[64 * c + l]);
            hi += i32::from(uhi) * i32::from(xq[64 * c + 32 + l]);
        }
        isum += i32::from(sc[2 * c]) * lo + i32::from(sc[2 * c + 1]) * hi;
    }
    for g in 0..8 {
        msum += i32::from(mn[g]) * (i32::from(sums[2 * g]) + i32::from(sums[2 * g + 1]));
    }
    (isum, msum)
}

/// Q6_K: `isum = Σ_g sc_g·Σ (u − 32)·x` with the 6-bit `u` from four low
/// nibbles and two high bits, and signed 8-bit group scales.
pub(crate) fn int_q6k(blk: &[u8; 210], xq: &[i8; 256], sums: &[i16; 16]) -> (i32, i32) {
    let (ql, qh, sc) = (&blk[0..128], &blk[128..192], &blk[192..208]);
    let mut part = [0i32; 16];
    for n in 0..2 {
        for l in 0..32 {
            let (a, b, h) = (ql[64 * n + l], ql[64 * n + 32 + l], qh[32 * n + l]);
            let u = [
                (a & 0x0F) | ((h & 3) << 4),
                (b & 0x0F) | (((h >> 2) & 3) << 4),
                (a >> 4) | (((h >> 4) & 3) << 4),
                (b >> 4) | (((h >> 6) & 3) << 4),
            ];
            for (k, &uk) in u.iter().enumerate() {
                part[8 * n + 2 * k + l / 16] += i32::from(uk) * i32::from(xq[128 * n + 32 * k + l]);
            }
        }
    }
    let mut isum = 0i32;
    for g in 0..16 {
        isum += i32::from(sc[g] as i8) * (part[g] - 32 * i32::from(sums[g]));
    }
    (isum, 0)
}
