//! The quantised block formats of llama.cpp that papertune reads, dequantised to f32.

use half::f16;

/// Q8_0 blocks: an f16 scale, then 32 signed bytes; value = q * d.
pub(super) fn dequantize_q8_0(raw: &[u8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(raw.len() / 34 * 32);
    for block in raw.chunks_exact(34) {
        let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
        out.extend(block[2..].iter().map(|&q| f32::from(q as i8) * d));
    }
    out
}

/// Q4_0 blocks (an f16 scale, 16 bytes of nibbles; value = (q - 8) * d) and Q4_1 blocks (an f16
/// scale and an f16 minimum, 16 bytes of nibbles; value = q * d + m). Byte j holds element j in
/// its low nibble and element j + 16 in its high nibble.
pub(super) fn dequantize_q4(raw: &[u8], with_min: bool) -> Vec<f32> {
    let block_bytes = if with_min { 20 } else { 18 };
    let mut out = Vec::with_capacity(raw.len() / block_bytes * 32);
    let mut values = [0.0f32; 32];
    for block in raw.chunks_exact(block_bytes) {
        let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
        let (offset, quants) = if with_min {
            (f16::from_le_bytes([block[2], block[3]]).to_f32(), &block[4..])
        } else {
            (-8.0 * d, &block[2..])
        };
        for (j, &byte) in quants.iter().enumerate() {
            values[j] = f32::from(byte & 0x0f) * d + offset;
            values[j + 16] = f32::from(byte >> 4) * d + offset;
        }
        out.extend_from_slice(&values);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_0_uses_an_offset_of_eight() {
        // One block: d = 0.5, byte j = (j % 16) | (15 - j % 16) << 4.
        let mut raw = f16::from_f32(0.5).to_le_bytes().to_vec();
        raw.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let values = dequantize_q4(&raw, false);
        assert_eq!(values[0], -4.0);
        assert_eq!(values[15], 3.5);
        assert_eq!(values[16], 3.5);
        assert_eq!(values[31], -4.0);
    }
}
