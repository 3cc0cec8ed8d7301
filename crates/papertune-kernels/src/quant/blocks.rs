//! The block formats of llama.cpp's quantised tensors, decoded to f32.
//!
//! Every function takes the bytes of a run of whole blocks and writes their values, in element
//! order, to a slice of the matching length. The arithmetic is f32 in the order of llama.cpp's reference decoders (and of the
//! `gguf` Python package's numpy port), so the values are bit-identical to theirs. Multi-byte
//! fields are little-endian.

use half::f16;

/// Elements per super-block of the K formats.
const QK_K: usize = 256;

#[inline(always)]
pub(crate) fn f16_at(b: &[u8], off: usize) -> f32 {
    f16::from_le_bytes([b[off], b[off + 1]]).to_f32()
}

/// Runs `f` over every complete `B`-byte block of `raw`, giving it the matching `N`-element
/// slot of `out` (the caller sizes `out` to the blocks).
#[inline(always)]
fn map_blocks<const B: usize, const N: usize>(
    raw: &[u8],
    out: &mut [f32],
    f: impl Fn(&[u8; B], &mut [f32; N]),
) {
    for (src, dst) in raw.chunks_exact(B).zip(out.chunks_exact_mut(N)) {
        // Both conversions always succeed: chunks_exact yields exact lengths.
        if let (Ok(src), Ok(dst)) = (<&[u8; B]>::try_from(src), <&mut [f32; N]>::try_from(dst)) {
            f(src, dst);
        }
    }
}

/// Q8_0: 34-byte blocks of 32 values.
/// `d: f16` then `qs: [i8; 32]`; `x[i] = qs[i] * d`.
pub(super) fn dequantize_q8_0(raw: &[u8], out: &mut [f32]) {
    map_blocks::<34, 32>(raw, out, |b, out| {
        let d = f16_at(b, 0);
        for (o, &q) in out.iter_mut().zip(&b[2..]) {
            *o = f32::from(q as i8) * d;
        }
    })
}

/// Q4_0: 18-byte blocks of 32 values.
/// `d: f16` then `qs: [u8; 16]`; element `i < 16` is the low nibble of
/// `qs[i]`, element `i + 16` its high nibble; `x = d * (q - 8)`.
pub(super) fn dequantize_q4_0(raw: &[u8], out: &mut [f32]) {
    map_blocks::<18, 32>(raw, out, |b, out| {
        let d = f16_at(b, 0);
        let (lo, hi) = out.split_at_mut(16);
        for ((l, h), &q) in lo.iter_mut().zip(hi).zip(&b[2..]) {
            *l = d * f32::from((q & 0x0F) as i8 - 8);
            *h = d * f32::from((q >> 4) as i8 - 8);
        }
    })
}

/// Q4_1: 20-byte blocks of 32 values.
/// `d: f16`, `m: f16`, then `qs: [u8; 16]` packed as in Q4_0;
/// `x = d * q + m` with `q` in `0..16`.
pub(super) fn dequantize_q4_1(raw: &[u8], out: &mut [f32]) {
    map_blocks::<20, 32>(raw, out, |b, out| {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        let (lo, hi) = out.split_at_mut(16);
        for ((l, h), &q) in lo.iter_mut().zip(hi).zip(&b[4..]) {
            *l = d * f32::from(q & 0x0F) + m;
            *h = d * f32::from(q >> 4) + m;
        }
    })
}

/// Low four bits for elements `j` and `j + 16` from `qs[j]`, fifth bit of
/// element `i` from bit `i` of the little-endian `qh` word.
#[inline(always)]
fn q5_pair(qs: u8, qh: u32, j: usize) -> (u8, u8) {
    let h_lo = ((qh >> j) & 1) as u8;
    let h_hi = ((qh >> (j + 16)) & 1) as u8;
    ((qs & 0x0F) | (h_lo << 4), (qs >> 4) | (h_hi << 4))
}

/// Q5_0: 22-byte blocks of 32 values.
/// `d: f16`, `qh: u32` (bit `i` = fifth bit of element `i`), then
/// `qs: [u8; 16]` with the low nibbles packed as in Q4_0; `x = d * (q - 16)`.
pub(super) fn dequantize_q5_0(raw: &[u8], out: &mut [f32]) {
    map_blocks::<22, 32>(raw, out, |b, out| {
        let d = f16_at(b, 0);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let (lo, hi) = out.split_at_mut(16);
        for (j, ((l, h), &q)) in lo.iter_mut().zip(hi).zip(&b[6..]).enumerate() {
            let (a, c) = q5_pair(q, qh, j);
            *l = d * f32::from(a as i8 - 16);
            *h = d * f32::from(c as i8 - 16);
        }
    })
}

/// Q5_1: 24-byte blocks of 32 values.
/// `d: f16`, `m: f16`, `qh: u32`, `qs: [u8; 16]`, bits arranged as in Q5_0;
/// `x = d * q + m` with `q` in `0..32`.
pub(super) fn dequantize_q5_1(raw: &[u8], out: &mut [f32]) {
    map_blocks::<24, 32>(raw, out, |b, out| {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let (lo, hi) = out.split_at_mut(16);
        for (j, ((l, h), &q)) in lo.iter_mut().zip(hi).zip(&b[8..]).enumerate() {
            let (a, c) = q5_pair(q, qh, j);
            *l = d * f32::from(a) + m;
            *h = d * f32::from(c) + m;
        }
    })
}

/// Q2_K: 84-byte super-blocks of 256 values in 16 groups of 16.
/// `scales: [u8; 16]` (low nibble = group scale, high nibble = group min),
/// `qs: [u8; 64]`, `d: f16`, `dmin: f16`. The 2-bit quants come in two
/// halves of 128 elements, each backed by 32 bytes of `qs`: element
/// `half*128 + s*32 + l` is bits `2s..2s+2` of `qs[half*32 + l]`.
/// `x = (d * sc) * q - (dmin * m)`.
pub(super) fn dequantize_q2_k(raw: &[u8], out: &mut [f32]) {
    map_blocks::<84, QK_K>(raw, out, |b, out| {
        let (scales, rest) = b.split_at(16);
        let qs = &rest[..64];
        let d = f16_at(b, 80);
        let dmin = f16_at(b, 82);
        for (g, (grp, &sc)) in out.chunks_exact_mut(16).zip(scales).enumerate() {
            let dl = d * f32::from(sc & 0x0F);
            let ml = dmin * f32::from(sc >> 4);
            let src = &qs[(g / 8) * 32 + (g % 2) * 16..][..16];
            let shift = 2 * ((g % 8) / 2);
            for (o, &q) in grp.iter_mut().zip(src) {
                *o = dl * f32::from((q >> shift) & 3) - ml;
            }
        }
    })
}

/// Q3_K: 110-byte super-blocks of 256 values in 16 groups of 16.
/// `hmask: [u8; 32]`, `qs: [u8; 64]`, `scales: [u8; 12]`, `d: f16`.
/// Low two quant bits are laid out as in Q2_K; the third bit of element `e`
/// is bit `e / 32` of `hmask[e % 32]`, and a *clear* bit subtracts 4, giving
/// `q` in `-4..4`. The sixteen 6-bit signed scales (offset by 32) take their
/// low nibbles from `scales[0..8]` (low nibbles first, then high nibbles)
/// and their top two bits from `scales[8..12]` (scale `j` uses bits
/// `2*(j/4)..` of byte `8 + j%4`). `x = (d * scale) * q`.
pub(super) fn dequantize_q3_k(raw: &[u8], out: &mut [f32]) {
    map_blocks::<110, QK_K>(raw, out, |b, out| {
        let hmask = &b[..32];
        let qs = &b[32..96];
        let sc = &b[96..108];
        let d = f16_at(b, 108);
        for (g, grp) in out.chunks_exact_mut(16).enumerate() {
            let low = if g < 8 { sc[g] & 0x0F } else { sc[g - 8] >> 4 };
            let high = (sc[8 + g % 4] >> (2 * (g / 4))) & 3;
            let dl = d * f32::from(i16::from(low | (high << 4)) - 32);
            let off = (g % 2) * 16;
            let src = &qs[(g / 8) * 32 + off..][..16];
            let hm = &hmask[off..off + 16];
            let shift = 2 * ((g % 8) / 2);
            let hbit = g / 2;
            for ((o, &q), &h) in grp.iter_mut().zip(src).zip(hm) {
                let low2 = ((q >> shift) & 3) as i8;
                let minus = if (h >> hbit) & 1 == 0 { 4 } else { 0 };
                *o = dl * f32::from(low2 - minus);
            }
        }
    })
}

/// Unpacks the eight 6-bit (scale, min) pairs shared by Q4_K and Q5_K from
/// their 12 packed bytes: pairs 0..4 are the low six bits of bytes 0..4
/// (scales) and 4..8 (mins); pairs 4..8 take their low nibbles from bytes
/// 8..12 (scale low, min high) and their top two bits from the spare top
/// bits of bytes 0..4 (scales) and 4..8 (mins).
#[inline(always)]
pub(crate) fn k_scale_min(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..4 {
        sc[j] = s[j] & 0x3F;
        mn[j] = s[j + 4] & 0x3F;
        sc[j + 4] = (s[j + 8] & 0x0F) | ((s[j] >> 2) & 0x30);
        mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 2) & 0x30);
    }
    (sc, mn)
}

/// Q4_K: 144-byte super-blocks of 256 values in 8 groups of 32.
/// `d: f16`, `dmin: f16`, `scales: [u8; 12]` (see [`k_scale_min`]),
/// `qs: [u8; 128]`. Groups `2c` and `2c+1` are the low and high nibbles of
/// `qs[32c..32c+32]`. `x = (d * sc) * q - (dmin * m)`.
pub(super) fn dequantize_q4_k(raw: &[u8], out: &mut [f32]) {
    map_blocks::<144, QK_K>(raw, out, |b, out| {
        let d = f16_at(b, 0);
        let dmin = f16_at(b, 2);
        let (sc, mn) = k_scale_min(&b[4..16]);
        let qs = &b[16..144];
        for (g, grp) in out.chunks_exact_mut(32).enumerate() {
            let dl = d * f32::from(sc[g]);
            let ml = dmin * f32::from(mn[g]);
            let src = &qs[(g / 2) * 32..][..32];
            let shift = 4 * (g % 2);
            for (o, &q) in grp.iter_mut().zip(src) {
                *o = dl * f32::from((q >> shift) & 0x0F) - ml;
            }
        }
    })
}

/// Q5_K: 176-byte super-blocks of 256 values in 8 groups of 32.
/// `d: f16`, `dmin: f16`, `scales: [u8; 12]`, `qh: [u8; 32]`,
/// `qs: [u8; 128]`. Low nibbles as in Q4_K; the fifth bit of element
/// `32g + l` is bit `g` of `qh[l]`. `x = (d * sc) * q - (dmin * m)`.
pub(super) fn dequantize_q5_k(raw: &[u8], out: &mut [f32]) {
    map_blocks::<176, QK_K>(raw, out, |b, out| {
        let d = f16_at(b, 0);
        let dmin = f16_at(b, 2);
        let (sc, mn) = k_scale_min(&b[4..16]);
        let qh = &b[16..48];
        let qs = &b[48..176];
        for (g, grp) in out.chunks_exact_mut(32).enumerate() {
            let dl = d * f32::from(sc[g]);
            let ml = dmin * f32::from(mn[g]);
            let src = &qs[(g / 2) * 32..][..32];
            let shift = 4 * (g % 2);
            for ((o, &q), &h) in grp.iter_mut().zip(src).zip(qh) {
                let v = ((q >> shift) & 0x0F) | (((h >> g) & 1) << 4);
                *o = dl * f32::from(v) - ml;
            }
        }
    })
}

/// Q6_K: 210-byte super-blocks of 256 values in 16 groups of 16.
/// `ql: [u8; 128]`, `qh: [u8; 64]`, `scales: [i8; 16]`, `d: f16`.
/// Each 128-element half uses 64 bytes of `ql` and 32 of `qh`: within the
/// half, element `k` has low nibble `(ql[k % 64] >> 4*(k / 64)) & 15` and
/// top two bits `(qh[k % 32] >> 2*(k / 32)) & 3`; `q` is offset by 32.
/// `x = (d * scale) * q`.
pub(super) fn dequantize_q6_k(raw: &[u8], out: &mut [f32]) {
    map_blocks::<210, QK_K>(raw, out, |b, out| {
        let ql = &b[..128];
        let qh = &b[128..192];
        let scales = &b[192..208];
        let d = f16_at(b, 208);
        for (g, (grp, &sc)) in out.chunks_exact_mut(16).zip(scales).enumerate() {
            let dl = d * f32::from(sc as i8);
            let half = g / 8;
            let k = (g % 8) * 16;
            let lo = &ql[half * 64 + k % 64..][..16];
            let hi = &qh[half * 32 + k % 32..][..16];
            let lshift = 4 * (k / 64);
            let hshift = 2 * (k / 32);
            for ((o, &l), &h) in grp.iter_mut().zip(lo).zip(hi) {
                let v = ((l >> lshift) & 0x0F) | (((h >> hshift) & 3) << 4);
                *o = dl * f32::from(v as i8 - 32);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::{QuantType, dequantize};

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// Bit equality with the values of the `gguf` Python package on seeded random blocks
    /// (`scripts/make_gguf_block_reference.py`).
    #[test]
    fn every_format_decodes_as_gguf_py_does() {
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../../fixtures/gguf_blocks.json")).unwrap();
        for ty in QuantType::ALL {
            let case = &fixture["types"][ty.name()];
            assert_eq!(case["type_id"].as_u64(), Some(u64::from(ty.ggml_id())), "{}", ty.name());
            let raw = hex(case["raw_hex"].as_str().unwrap());
            let found = dequantize(ty, &raw).unwrap();
            let expected: Vec<u32> = case["bits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(found.len(), expected.len(), "{}", ty.name());
            let differing = found.iter().zip(&expected).filter(|(f, e)| f.to_bits() != **e).count();
            assert_eq!(
                differing,
                0,
                "{}: {differing} of {} values differ from gguf-py's",
                ty.name(),
                found.len()
            );
        }
    }

    /// Any bytes decode without a panic (NaN scales included); partial blocks are refused.
    #[test]
    fn arbitrary_bytes_decode_and_partial_blocks_are_refused() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        };
        for ty in QuantType::ALL {
            for blocks in 0..3 {
                let raw: Vec<u8> = (0..blocks * ty.block_bytes()).map(|_| next()).collect();
                assert_eq!(
                    dequantize(ty, &raw).unwrap().len(),
                    blocks * ty.block_elements(),
                    "{}",
                    ty.name()
                );
            }
            assert_eq!(
                dequantize(ty, &vec![0xff; 2 * ty.block_bytes()]).unwrap().len(),
                2 * ty.block_elements()
            );
            let err = dequantize(ty, &vec![0; ty.block_bytes() + 1]).unwrap_err();
            assert!(err.contains(ty.name()) && err.contains("whole number"), "{err}");
        }
    }

    /// One Q4_0 block by hand: d = 1, every byte 0x80: low nibbles 0 (-8), high nibbles 8 (0).
    #[test]
    fn q4_0_subtracts_eight() {
        let mut block = vec![0x00, 0x3c];
        block.extend([0x80u8; 16]);
        let values = dequantize(QuantType::Q4_0, &block).unwrap();
        assert!(values[..16].iter().all(|&v| v == -8.0) && values[16..].iter().all(|&v| v == 0.0));
    }
}
