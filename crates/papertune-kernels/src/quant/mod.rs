//! llama.cpp's quantised block formats: what each block holds, decoding to f32 (`blocks.rs`),
//! and matrices kept in their blocks.
//!
//! A quantised tensor is a run of blocks; each block codes a fixed number of consecutive values
//! (32 for the legacy formats, 256 for the K formats) as small integers with one or more scales
//! (and minimums) per block or per sub-block. A matrix `[rows, cols]` is stored row by row, each
//! row a whole number of blocks, as GGUF stores a linear layer's `[out, in]` weight.

mod act;
mod bands;
mod blocks;
mod dot;
mod isa;
mod matmul;
#[cfg(target_arch = "x86_64")]
mod simd;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

/// A quantised matrix shared between the layers and the operations that read it.
pub type QuantWeight = std::sync::Arc<QuantMatrix>;

pub use matmul::{
    QuantMatrix, matmul_dyw, matmul_xwt, matmul_xwt_dequant, matmul_xwt_q8, q8_error_bound,
    q8_path_max_m,
};

/// The quantised block formats papertune decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantType {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
}

impl QuantType {
    /// Every format, in GGML's type-id order.
    pub const ALL: [QuantType; 10] = [
        Self::Q4_0,
        Self::Q4_1,
        Self::Q5_0,
        Self::Q5_1,
        Self::Q8_0,
        Self::Q2K,
        Self::Q3K,
        Self::Q4K,
        Self::Q5K,
        Self::Q6K,
    ];

    /// The format of a GGML type id, if it is one of these.
    pub fn from_ggml_id(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.ggml_id() == id)
    }

    /// GGML's type id (as GGUF files record it).
    pub fn ggml_id(self) -> u32 {
        match self {
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q5_1 => 7,
            Self::Q8_0 => 8,
            Self::Q2K => 10,
            Self::Q3K => 11,
            Self::Q4K => 12,
            Self::Q5K => 13,
            Self::Q6K => 14,
        }
    }

    /// llama.cpp's name of the format.
    pub fn name(self) -> &'static str {
        match self {
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q5_1 => "Q5_1",
            Self::Q8_0 => "Q8_0",
            Self::Q2K => "Q2_K",
            Self::Q3K => "Q3_K",
            Self::Q4K => "Q4_K",
            Self::Q5K => "Q5_K",
            Self::Q6K => "Q6_K",
        }
    }

    /// Values per block.
    pub fn block_elements(self) -> usize {
        match self {
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 | Self::Q8_0 => 32,
            Self::Q2K | Self::Q3K | Self::Q4K | Self::Q5K | Self::Q6K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q2K => 84,
            Self::Q3K => 110,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
        }
    }

    /// Whether this is one of the 256-value K formats.
    pub fn is_k_quant(self) -> bool {
        self.block_elements() == 256
    }

    /// The bytes of a row of `cols` values, or `None` when they are not a whole number of
    /// blocks (or the count overflows).
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        cols.is_multiple_of(self.block_elements())
            .then(|| (cols / self.block_elements()).checked_mul(self.block_bytes()))?
    }
}

/// Decodes `raw`, a run of whole blocks of `ty`, to f32 in element order. A trailing partial
/// block is refused with a message naming the format and the lengths.
pub fn dequantize(ty: QuantType, raw: &[u8]) -> Result<Vec<f32>, String> {
    if !raw.len().is_multiple_of(ty.block_bytes()) {
        return Err(format!(
            "{} bytes are not a whole number of {}-byte {} blocks",
            raw.len(),
            ty.block_bytes(),
            ty.name()
        ));
    }
    let mut out = vec![0.0; raw.len() / ty.block_bytes() * ty.block_elements()];
    dequantize_into(ty, raw, &mut out);
    Ok(out)
}

/// Decodes whole blocks of `ty` (a row, or a band of consecutive rows) into `out`, which holds
/// exactly their values.
///
/// # Panics
/// If `raw` is not a whole number of blocks or `out` has another length.
pub fn dequantize_into(ty: QuantType, raw: &[u8], out: &mut [f32]) {
    let (block_bytes, block_elements) = (ty.block_bytes(), ty.block_elements());
    assert_eq!(
        raw.len() % block_bytes,
        0,
        "{} bytes are not a whole number of {}-byte {} blocks",
        raw.len(),
        block_bytes,
        ty.name()
    );
    let values = raw.len() / block_bytes * block_elements;
    assert_eq!(
        out.len(),
        values,
        "{} bytes of {} hold {values} values, the output has room for {}",
        raw.len(),
        ty.name(),
        out.len()
    );
    let decode = match ty {
        QuantType::Q4_0 => blocks::dequantize_q4_0,
        QuantType::Q4_1 => blocks::dequantize_q4_1,
        QuantType::Q5_0 => blocks::dequantize_q5_0,
        QuantType::Q5_1 => blocks::dequantize_q5_1,
        QuantType::Q8_0 => blocks::dequantize_q8_0,
        QuantType::Q2K => blocks::dequantize_q2_k,
        QuantType::Q3K => blocks::dequantize_q3_k,
        QuantType::Q4K => blocks::dequantize_q4_k,
        QuantType::Q5K => blocks::dequantize_q5_k,
        QuantType::Q6K => blocks::dequantize_q6_k,
    };
    decode(raw, out);
}
