//! GGUF (versions 2 and 3): the header, metadata key/values, tensor infos and aligned tensor
//! data of llama.cpp's checkpoint format, with the block formats F32, F16, BF16, Q8_0, Q4_0 and
//! Q4_1 dequantised to f32.
//!
//! Layout: `"GGUF"`, version (u32), tensor count (u64), key/value count (u64), the key/values,
//! the tensor infos (name, dims with the fastest-varying first, type, offset), then the tensor
//! data starting at the next multiple of `general.alignment` (32 by default). Dimensions are
//! reversed here so that shapes read row-major, like safetensors' (`[out, in]` for a linear).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};

use crate::error::{ModelError, Result};
use crate::safetensors_io::HostTensor;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v.into()),
            Self::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            Self::Array(values) => Some(values),
            _ => None,
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Self::U8(_) => "u8",
            Self::I8(_) => "i8",
            Self::U16(_) => "u16",
            Self::I16(_) => "i16",
            Self::U32(_) => "u32",
            Self::I32(_) => "i32",
            Self::U64(_) => "u64",
            Self::I64(_) => "i64",
            Self::F32(_) => "f32",
            Self::F64(_) => "f64",
            Self::Bool(_) => "bool",
            Self::String(_) => "string",
            Self::Array(_) => "array",
        }
    }
}

/// The element formats of GGML tensors that papertune knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q8_0,
    /// Any other type, kept by number so that the error can name it.
    Other(u32),
}

impl GgmlType {
    fn from_id(id: u32) -> Self {
        match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            8 => Self::Q8_0,
            30 => Self::BF16,
            other => Self::Other(other),
        }
    }

    /// llama.cpp's name of the type (for messages).
    pub fn name(self) -> String {
        let known = [
            (6, "Q5_0"), (7, "Q5_1"), (9, "Q8_1"), (10, "Q2_K"), (11, "Q3_K"), (12, "Q4_K"), (13, "Q5_K"),
            (14, "Q6_K"), (15, "Q8_K"), (16, "IQ2_XXS"), (17, "IQ2_XS"), (18, "IQ3_XXS"), (19, "IQ1_S"),
            (20, "IQ4_NL"), (21, "IQ3_S"), (22, "IQ2_S"), (23, "IQ4_XS"), (24, "I8"), (25, "I16"),
            (26, "I32"), (27, "I64"), (28, "F64"), (29, "IQ1_M"),
        ];
        match self {
            Self::F32 => "F32".into(),
            Self::F16 => "F16".into(),
            Self::BF16 => "BF16".into(),
            Self::Q4_0 => "Q4_0".into(),
            Self::Q4_1 => "Q4_1".into(),
            Self::Q8_0 => "Q8_0".into(),
            Self::Other(id) => known
                .iter()
                .find(|(k, _)| *k == id)
                .map_or_else(|| format!("type {id}"), |(_, n)| format!("{n} (type {id})")),
        }
    }

    /// Elements per block and bytes per block.
    fn block(self) -> Option<(usize, usize)> {
        match self {
            Self::F32 => Some((1, 4)),
            Self::F16 | Self::BF16 => Some((1, 2)),
            Self::Q4_0 => Some((32, 18)),
            Self::Q4_1 => Some((32, 20)),
            Self::Q8_0 => Some((32, 34)),
            Self::Other(_) => None,
        }
    }
}

/// Where one tensor lies in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// Row-major shape (GGUF's dimension list reversed).
    pub shape: Vec<usize>,
    pub ggml_type: GgmlType,
    /// Offset from the start of the data section.
    pub offset: u64,
}

impl GgufTensorInfo {
    pub fn element_count(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A GGUF file read into memory.
#[derive(Debug)]
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, GgufValue>,
    pub tensors: Vec<GgufTensorInfo>,
    bytes: Vec<u8>,
    data_start: usize,
}

impl GgufFile {
    /// Reads and parses the file, checking that every tensor's data lies inside it.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ModelError::NotFound { path: path.to_path_buf() }
            } else {
                ModelError::io(path, e)
            }
        })?;
        Self::parse(path, bytes)
    }

    /// Parses GGUF bytes; `path` names the source in errors.
    pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let mut cursor = Cursor { bytes: &bytes, at: 0, path };
        let magic: [u8; 4] = cursor.array()?;
        if &magic != MAGIC {
            return Err(cursor.error(format!("not a GGUF file (magic {magic:02x?}, expected \"GGUF\")")));
        }
        let version = cursor.u32()?;
        if !(2..=3).contains(&version) {
            return Err(cursor.error(format!("GGUF version {version} is not supported (2 and 3 are)")));
        }
        let tensor_count = cursor.u64()?;
        let kv_count = cursor.u64()?;
        let mut metadata = BTreeMap::new();
        for _ in 0..kv_count {
            let key = cursor.string()?;
            let value_type = cursor.u32()?;
            let value = cursor.value(value_type, &key)?;
            metadata.insert(key, value);
        }
        let mut tensors = Vec::with_capacity(tensor_count.min(1 << 20) as usize);
        for _ in 0..tensor_count {
            let name = cursor.string()?;
            let n_dims = cursor.u32()?;
            if n_dims > 8 {
                return Err(cursor.error(format!("tensor {name:?} claims {n_dims} dimensions")));
            }
            let mut dims = (0..n_dims).map(|_| cursor.u64().map(|d| d as usize)).collect::<Result<Vec<_>>>()?;
            dims.reverse();
            let ggml_type = GgmlType::from_id(cursor.u32()?);
            let offset = cursor.u64()?;
            tensors.push(GgufTensorInfo { name, shape: dims, ggml_type, offset });
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => v.as_u64().filter(|a| *a > 0).ok_or_else(|| {
                cursor.error(format!("general.alignment must be a positive integer, found {v:?}"))
            })?,
        };
        let data_start = (cursor.at as u64).div_ceil(alignment) * alignment;
        let file = Self { path: path.to_path_buf(), version, metadata, tensors, data_start: data_start as usize, bytes };
        for info in &file.tensors {
            if let Some(range) = file.byte_range(info)? {
                if range.end > file.bytes.len() {
                    return Err(ModelError::Config {
                        path: path.to_path_buf(),
                        message: format!(
                            "tensor {:?} ends at byte {} but the file has {} bytes (truncated download?)",
                            info.name,
                            range.end,
                            file.bytes.len()
                        ),
                    });
                }
            }
        }
        Ok(file)
    }

    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// A required metadata string.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.require(key)?.as_str().ok_or_else(|| self.wrong_type(key, "a string"))
    }

    /// A required metadata integer.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.require(key)?.as_u64().ok_or_else(|| self.wrong_type(key, "an unsigned integer"))
    }

    /// A required metadata number.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        self.require(key)?.as_f64().ok_or_else(|| self.wrong_type(key, "a number"))
    }

    /// A required array of strings.
    pub fn get_strings(&self, key: &str) -> Result<Vec<&str>> {
        let values = self.require(key)?.as_array().ok_or_else(|| self.wrong_type(key, "an array of strings"))?;
        values.iter().map(|v| v.as_str().ok_or_else(|| self.wrong_type(key, "an array of strings"))).collect()
    }

    fn require(&self, key: &str) -> Result<&GgufValue> {
        self.metadata.get(key).ok_or_else(|| ModelError::Config {
            path: self.path.clone(),
            message: format!("GGUF metadata has no key {key:?}"),
        })
    }

    fn wrong_type(&self, key: &str, expected: &str) -> ModelError {
        let found = self.metadata.get(key).map_or("nothing", GgufValue::type_name);
        ModelError::Config { path: self.path.clone(), message: format!("GGUF metadata {key:?} is a {found}, expected {expected}") }
    }

    /// The info of a tensor by name.
    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    fn byte_range(&self, info: &GgufTensorInfo) -> Result<Option<std::ops::Range<usize>>> {
        let Some((block_elems, block_bytes)) = info.ggml_type.block() else { return Ok(None) };
        let n = info.element_count();
        if n % block_elems != 0 {
            return Err(ModelError::Config {
                path: self.path.clone(),
                message: format!(
                    "tensor {:?} has {n} elements, not a multiple of the {}-element blocks of {}",
                    info.name,
                    block_elems,
                    info.ggml_type.name()
                ),
            });
        }
        let start = self.data_start + info.offset as usize;
        Ok(Some(start..start + n / block_elems * block_bytes))
    }

    /// Dequantises one tensor to f32 in row-major order.
    pub fn dequantize(&self, info: &GgufTensorInfo) -> Result<HostTensor> {
        let range = self.byte_range(info)?.ok_or_else(|| ModelError::UnsupportedDtype {
            path: self.path.clone(),
            name: info.name.clone(),
            dtype: format!("{} (GGUF); supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1", info.ggml_type.name()),
        })?;
        let raw = &self.bytes[range];
        let data = match info.ggml_type {
            GgmlType::F32 => raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            GgmlType::F16 => raw.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            GgmlType::BF16 => raw.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            GgmlType::Q8_0 => dequantize_q8_0(raw),
            GgmlType::Q4_0 => dequantize_q4(raw, false),
            GgmlType::Q4_1 => dequantize_q4(raw, true),
            GgmlType::Other(_) => unreachable!("byte_range is None for unknown types"),
        };
        Ok(HostTensor::new(info.shape.clone(), data))
    }
}

/// Q8_0 blocks: an f16 scale, then 32 signed bytes; value = q * d.
fn dequantize_q8_0(raw: &[u8]) -> Vec<f32> {
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
fn dequantize_q4(raw: &[u8], with_min: bool) -> Vec<f32> {
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

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl Cursor<'_> {
    fn error(&self, message: String) -> ModelError {
        ModelError::Config { path: self.path.to_path_buf(), message: format!("GGUF at byte {}: {message}", self.at) }
    }

    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self.at.checked_add(n).filter(|&end| end <= self.bytes.len()).ok_or_else(|| {
            self.error(format!("needs {n} more bytes but the file has {} (truncated?)", self.bytes.len()))
        })?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String> {
        let len = self.u64()? as usize;
        let raw = self.take(len)?;
        String::from_utf8(raw.to_vec()).map_err(|_| self.error("a string is not valid UTF-8".into()))
    }

    fn value(&mut self, value_type: u32, key: &str) -> Result<GgufValue> {
        Ok(match value_type {
            0 => GgufValue::U8(self.array::<1>()?[0]),
            1 => GgufValue::I8(self.array::<1>()?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.array()?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array()?)),
            4 => GgufValue::U32(self.u32()?),
            5 => GgufValue::I32(i32::from_le_bytes(self.array()?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array()?)),
            7 => GgufValue::Bool(self.array::<1>()?[0] != 0),
            8 => GgufValue::String(self.string()?),
            9 => {
                let item_type = self.u32()?;
                let len = self.u64()? as usize;
                if len > self.bytes.len() {
                    return Err(self.error(format!("array {key:?} claims {len} items")));
                }
                let mut items = Vec::with_capacity(len);
                for _ in 0..len {
                    items.push(self.value(item_type, key)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64()?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array()?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array()?)),
            other => return Err(self.error(format!("metadata {key:?} has unknown value type {other}"))),
        })
    }
}

/// Writes a GGUF v3 file (for tests and tools): metadata, then f32 / f16 tensors.
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

    /// Adds a tensor with a row-major shape, quantised to Q8_0 (length a multiple of 32).
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
        self.tensors.push((name.to_owned(), shape.to_vec(), GgmlType::Q8_0, bytes));
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
        self.tensors.push((name.to_owned(), shape.to_vec(), GgmlType::Q4_1, bytes));
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
            let id = match ggml_type {
                GgmlType::F32 => 0u32,
                GgmlType::Q4_1 => 3,
                GgmlType::Q8_0 => 8,
                _ => unreachable!("the writer only stores F32, Q4_1 and Q8_0"),
            };
            out.extend_from_slice(&id.to_le_bytes());
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

    fn ramp(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect()
    }

    #[test]
    fn round_trips_metadata_and_tensors() {
        let mut writer = GgufWriter::new();
        writer
            .metadata("general.architecture", GgufValue::String("llama".into()))
            .metadata("llama.block_count", GgufValue::U32(2))
            .metadata("tokenizer.ggml.tokens", GgufValue::Array(vec![GgufValue::String("a".into()), GgufValue::String("b".into())]))
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

    #[test]
    fn unknown_types_and_truncation_are_named() {
        let mut writer = GgufWriter::new();
        writer.tensor_f32("w", &[4], &[0.0; 4]);
        let mut bytes = writer.to_bytes();
        // Patch the type id (after name, n_dims, one dim) to Q6_K (14).
        let type_at = 4 + 4 + 8 + 8 + 8 + 1 + 4 + 8;
        bytes[type_at..type_at + 4].copy_from_slice(&14u32.to_le_bytes());
        let file = GgufFile::parse(Path::new("m.gguf"), bytes.clone()).unwrap();
        let err = file.dequantize(&file.tensors[0]).unwrap_err().to_string();
        assert!(err.contains("Q6_K") && err.contains("\"w\""), "{err}");

        let mut writer = GgufWriter::new();
        writer.tensor_f32("w", &[64], &[0.0; 64]);
        let mut bytes = writer.to_bytes();
        bytes.truncate(bytes.len() - 10);
        let err = GgufFile::parse(Path::new("m.gguf"), bytes).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        let err = GgufFile::parse(Path::new("m.gguf"), b"GGML....".to_vec()).unwrap_err().to_string();
        assert!(err.contains("not a GGUF file"), "{err}");
    }
}
