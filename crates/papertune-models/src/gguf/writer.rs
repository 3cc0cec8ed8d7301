//! A GGUF v3 writer: metadata, then tensors as F32, F16, Q8_0, Q4_1 or blocks already encoded.

use half::f16;

use papertune_kernels::quant::QuantType;

use super::{DEFAULT_ALIGNMENT, GgmlType, GgufValue, MAGIC};

/// Writes a GGUF v3 file: metadata, then tensors (row-major shapes, as [`super::GgufFile`] reads
/// them back).
#[derive(Debug, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<(String, Vec<usize>, GgmlType, Vec<u8>)>,
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn metadata(&mut self, key: &str, value: GgufValue) -> &mut Self {
        self.metadata.push((key.to_owned(), value));
        self
    }

    /// Adds a tensor with a row-major shape, stored as F32.
    pub fn tensor_f32(&mut self, name: &str, shape: &[usize], data: &[f32]) -> &mut Self {
        let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensors.push((name.to_owned(), shape.to_vec(), GgmlType::F32, bytes));
        self
    }

    /// Adds a tensor with a row-major shape, stored as F16.
    pub fn tensor_f16(&mut self, name: &str, shape: &[usize], data: &[f32]) -> &mut Self {
        let bytes = data.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect();
        self.tensors.push((name.to_owned(), shape.to_vec(), GgmlType::F16, bytes));
        self
    }

    /// Adds a tensor whose bytes are already encoded as `ggml_type`.
    pub fn tensor_encoded(
        &mut self,
        name: &str,
        shape: &[usize],
        ggml_type: GgmlType,
        bytes: Vec<u8>,
    ) -> &mut Self {
        self.tensors.push((name.to_owned(), shape.to_vec(), ggml_type, bytes));
        self
    }

    /// Writes the file atomically: the old file, if any, stays whole until the new one is.
    pub fn write(&self, path: &std::path::Path) -> crate::error::Result<()> {
        crate::checkpoint::write_atomic(path, &self.to_bytes())
    }

    /// Adds a tensor with a row-major shape, quantised to Q8_0 (length a multiple of 32), as
    /// llama.cpp's reference quantiser does (`d = max|x| / 127`, `q = round(x / d)`).
    pub fn tensor_q8_0(&mut self, name: &str, shape: &[usize], data: &[f32]) -> &mut Self {
        assert_eq!(data.len() % 32, 0, "Q8_0 needs whole blocks of 32");
        let mut bytes = Vec::with_capacity(data.len() / 32 * 34);
        for block in data.chunks_exact(32) {
            let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            bytes.extend_from_slice(&f16::from_f32(d).to_le_bytes());
            bytes.extend(block.iter().map(|v| (v * inv).round().clamp(-127.0, 127.0) as i8 as u8));
        }
        self.tensors.push((
            name.to_owned(),
            shape.to_vec(),
            GgmlType::Quant(QuantType::Q8_0),
            bytes,
        ));
        self
    }

    /// Adds a tensor with a row-major shape, quantised to Q4_1 (length a multiple of 32).
    pub fn tensor_q4_1(&mut self, name: &str, shape: &[usize], data: &[f32]) -> &mut Self {
        assert_eq!(data.len() % 32, 0, "Q4_1 needs whole blocks of 32");
        let mut bytes = Vec::with_capacity(data.len() / 32 * 20);
        for block in data.chunks_exact(32) {
            let min = block.iter().copied().fold(f32::INFINITY, f32::min);
            let max = block.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let d = (max - min) / 15.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            bytes.extend_from_slice(&f16::from_f32(d).to_le_bytes());
            bytes.extend_from_slice(&f16::from_f32(min).to_le_bytes());
            let q = |v: f32| ((v - min) * inv).round().clamp(0.0, 15.0) as u8;
            bytes.extend((0..16).map(|j| q(block[j]) | (q(block[j + 16]) << 4)));
        }
        self.tensors.push((
            name.to_owned(),
            shape.to_vec(),
            GgmlType::Quant(QuantType::Q4_1),
            bytes,
        ));
        self
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            write_string(&mut out, key);
            write_value(&mut out, value, true);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for (name, shape, ggml_type, bytes) in &self.tensors {
            write_string(&mut out, name);
            out.extend_from_slice(&(shape.len() as u32).to_le_bytes());
            for &d in shape.iter().rev() {
                out.extend_from_slice(&(d as u64).to_le_bytes());
            }
            out.extend_from_slice(&ggml_type.id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + bytes.len() as u64).div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
        }
        let data_start = (out.len() as u64).div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
        out.resize(data_start as usize, 0);
        for ((_, _, _, bytes), offset) in self.tensors.iter().zip(offsets) {
            out.resize((data_start + offset) as usize, 0);
            out.extend_from_slice(bytes);
        }
        out
    }
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn value_type_id(value: &GgufValue) -> u32 {
    match value {
        GgufValue::U8(_) => 0,
        GgufValue::I8(_) => 1,
        GgufValue::U16(_) => 2,
        GgufValue::I16(_) => 3,
        GgufValue::U32(_) => 4,
        GgufValue::I32(_) => 5,
        GgufValue::F32(_) => 6,
        GgufValue::Bool(_) => 7,
        GgufValue::String(_) => 8,
        GgufValue::Array(_) => 9,
        GgufValue::U64(_) => 10,
        GgufValue::I64(_) => 11,
        GgufValue::F64(_) => 12,
    }
}

fn write_value(out: &mut Vec<u8>, value: &GgufValue, with_type: bool) {
    if with_type {
        out.extend_from_slice(&value_type_id(value).to_le_bytes());
    }
    match value {
        GgufValue::U8(v) => out.push(*v),
        GgufValue::I8(v) => out.push(*v as u8),
        GgufValue::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::Bool(v) => out.push(u8::from(*v)),
        GgufValue::String(s) => write_string(out, s),
        GgufValue::Array(items) => {
            let item_type = items.first().map_or(4, value_type_id);
            out.extend_from_slice(&item_type.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                write_value(out, item, false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufFile;
    use std::path::Path;

    fn ramp(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect()
    }

    #[test]
    fn round_trips_metadata_and_tensors() {
        let mut writer = GgufWriter::new();
        writer
            .metadata("general.architecture", GgufValue::String("llama".into()))
            .metadata("llama.block_count", GgufValue::U32(2))
            .metadata(
                "tokenizer.ggml.tokens",
                GgufValue::Array(vec![
                    GgufValue::String("a".into()),
                    GgufValue::String("b".into()),
                ]),
            )
            .tensor_f32("norm", &[3], &[1.0, 2.0, 3.0])
            .tensor_q8_0("q8", &[2, 32], &ramp(64))
            .tensor_q4_1("q4", &[2, 64], &ramp(128));
        let file = GgufFile::parse(Path::new("mem.gguf"), writer.to_bytes()).unwrap();
        assert_eq!(file.version, 3);
        assert_eq!(file.get_str("general.architecture").unwrap(), "llama");
        assert_eq!(file.get_u64("llama.block_count").unwrap(), 2);
        assert_eq!(file.get_strings("tokenizer.ggml.tokens").unwrap(), vec!["a", "b"]);
        let norm = file.dequantize(file.tensor_info("norm").unwrap()).unwrap();
        assert_eq!(norm.data, vec![1.0, 2.0, 3.0]);
        let q8 = file.dequantize(file.tensor_info("q8").unwrap()).unwrap();
        assert_eq!(q8.shape, vec![2, 32]);
        for (a, b) in q8.data.iter().zip(ramp(64)) {
            assert!((a - b).abs() <= 2.0 / 127.0 * 0.51 + 1e-3, "{a} vs {b}");
        }
        let q4 = file.dequantize(file.tensor_info("q4").unwrap()).unwrap();
        assert_eq!(q4.shape, vec![2, 64]);
        for (a, b) in q4.data.iter().zip(ramp(128)) {
            assert!((a - b).abs() <= 4.0 / 15.0 * 0.51 + 1e-2, "{a} vs {b}");
        }
    }

    /// A GGUF v3 header: `kv` metadata entries already encoded, then `tensors` tensor infos.
    fn header(kv: &[Vec<u8>], tensors: &[Vec<u8>]) -> Vec<u8> {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend(3u32.to_le_bytes());
        bytes.extend((tensors.len() as u64).to_le_bytes());
        bytes.extend((kv.len() as u64).to_le_bytes());
        kv.iter().chain(tensors).for_each(|part| bytes.extend(part));
        bytes
    }

    fn string(text: &str) -> Vec<u8> {
        let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
        bytes.extend(text.as_bytes());
        bytes
    }

    fn tensor(name: &str, dims: &[u64], offset: u64) -> Vec<u8> {
        let mut bytes = string(name);
        bytes.extend((dims.len() as u32).to_le_bytes());
        dims.iter().for_each(|d| bytes.extend(d.to_le_bytes()));
        bytes.extend(0u32.to_le_bytes()); // F32
        bytes.extend(offset.to_le_bytes());
        bytes
    }

    #[test]
    fn crafted_sizes_are_refused_by_name_before_they_are_used() {
        let refused = |bytes: Vec<u8>| {
            GgufFile::parse(Path::new("crafted.gguf"), bytes).unwrap_err().to_string()
        };
        // Arrays of arrays a million deep.
        let mut deep = string("deep");
        deep.extend(9u32.to_le_bytes());
        for _ in 0..1_000_000 {
            deep.extend(9u32.to_le_bytes()); // an array of arrays
            deep.extend(1u64.to_le_bytes()); // of one item
        }
        let err = refused(header(&[deep], &[]));
        assert!(err.contains("crafted.gguf") && err.contains("\"deep\" nests arrays"), "{err}");
        // An array claiming more items than the file holds.
        let mut long = string("long");
        long.extend(9u32.to_le_bytes());
        long.extend(0u32.to_le_bytes());
        long.extend((1u64 << 40).to_le_bytes());
        assert!(refused(header(&[long], &[])).contains("\"long\" claims 1099511627776 items"));
        // Dimensions whose product overflows, and an offset far outside the file.
        let err = refused(header(&[], &[tensor("w", &[1 << 32, 1 << 32], 0)]));
        assert!(err.contains("\"w\"") && err.contains("overflows"), "{err}");
        let err = refused(header(&[], &[tensor("w", &[4], u64::MAX)]));
        assert!(err.contains("\"w\"") && err.contains("does not lie inside the file"), "{err}");
        // An alignment of u64::MAX.
        let mut alignment = string("general.alignment");
        alignment.extend(10u32.to_le_bytes());
        alignment.extend(u64::MAX.to_le_bytes());
        assert!(
            refused(header(&[alignment], &[])).contains("general.alignment must be an integer")
        );
    }

    #[test]
    fn unknown_types_and_truncation_are_named() {
        let mut writer = GgufWriter::new();
        writer.tensor_f32("w", &[4], &[0.0; 4]);
        let mut bytes = writer.to_bytes();
        // Patch the type id (after name, n_dims, one dim) to IQ2_XXS (16), which papertune does not read.
        let type_at = 4 + 4 + 8 + 8 + 8 + 1 + 4 + 8;
        bytes[type_at..type_at + 4].copy_from_slice(&16u32.to_le_bytes());
        let file = GgufFile::parse(Path::new("m.gguf"), bytes.clone()).unwrap();
        let err = file.dequantize(&file.tensors[0]).unwrap_err().to_string();
        assert!(err.contains("IQ2_XXS") && err.contains("\"w\"") && err.contains("Q6_K"), "{err}");

        let mut writer = GgufWriter::new();
        writer.tensor_f32("w", &[64], &[0.0; 64]);
        let mut bytes = writer.to_bytes();
        bytes.truncate(bytes.len() - 10);
        let err = GgufFile::parse(Path::new("m.gguf"), bytes).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        let err =
            GgufFile::parse(Path::new("m.gguf"), b"GGML....".to_vec()).unwrap_err().to_string();
        assert!(err.contains("not a GGUF file"), "{err}");
    }
}
