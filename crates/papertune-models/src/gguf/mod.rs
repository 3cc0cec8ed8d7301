//! GGUF (versions 2 and 3): the header, metadata key/values, tensor infos and aligned tensor
//! data of llama.cpp's checkpoint format, with F32, F16, BF16 and the quantised block formats
//! of [`QuantType`] (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K to Q6_K) read to f32 or kept as blocks.
//!
//! The rooms: this file reads the container; the block formats are papertune-kernels' `quant`
//! module (the quantised matrix products use them too), `names.rs` maps llama.cpp's tensor names to Hugging Face's, `writer.rs` writes GGUF files,
//! and `export.rs` writes a model's adapters (llama.cpp's LoRA files) or the whole model.
//!
//! Layout: `"GGUF"`, version (u32), tensor count (u64), key/value count (u64), the key/values,
//! the tensor infos (name, dims with the fastest-varying first, type, offset), then the tensor
//! data starting at the next multiple of `general.alignment` (32 by default). Dimensions are
//! reversed here so that shapes read row-major, like safetensors' (`[out, in]` for a linear).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};

use papertune_kernels::quant::{self, QuantType};

use crate::checkpoint::HostTensor;
use crate::error::{ModelError, Result};

mod export;
mod names;
mod writer;

pub use export::{ExportType, write_lora_adapter, write_merged_model};
pub use names::{QuantizedWeights, llama_checkpoint, llama_checkpoint_quantized};
pub use writer::GgufWriter;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// The largest data alignment accepted (llama.cpp writes 32).
const MAX_ALIGNMENT: u64 = 1 << 20;
/// Arrays in metadata nest at most this deep (GGUF files use one level).
const MAX_ARRAY_DEPTH: usize = 4;
/// The most items one metadata array may hold: a 262,144-token vocabulary is the largest in use.
const MAX_ARRAY_ITEMS: u64 = 1 << 22;

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

/// The element format of a GGML tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    /// A quantised block format.
    Quant(QuantType),
    /// Any other type (the IQ formats, integers, ...), kept by number so that errors can name it.
    Other(u32),
}

impl GgmlType {
    /// The type of a GGML type id.
    pub fn from_id(id: u32) -> Self {
        match id {
            0 => Self::F32,
            1 => Self::F16,
            30 => Self::BF16,
            other => QuantType::from_ggml_id(other).map_or(Self::Other(other), Self::Quant),
        }
    }

    /// GGML's type id.
    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::BF16 => 30,
            Self::Quant(ty) => ty.ggml_id(),
            Self::Other(id) => id,
        }
    }

    /// llama.cpp's name of the type (for messages).
    pub fn name(self) -> String {
        let others = [
            (9, "Q8_1"),
            (15, "Q8_K"),
            (16, "IQ2_XXS"),
            (17, "IQ2_XS"),
            (18, "IQ3_XXS"),
            (19, "IQ1_S"),
            (20, "IQ4_NL"),
            (21, "IQ3_S"),
            (22, "IQ2_S"),
            (23, "IQ4_XS"),
            (24, "I8"),
            (25, "I16"),
            (26, "I32"),
            (27, "I64"),
            (28, "F64"),
            (29, "IQ1_M"),
            (34, "TQ1_0"),
            (35, "TQ2_0"),
            (39, "MXFP4"),
        ];
        match self {
            Self::F32 => "F32".into(),
            Self::F16 => "F16".into(),
            Self::BF16 => "BF16".into(),
            Self::Quant(ty) => ty.name().into(),
            Self::Other(id) => others
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
            Self::Quant(ty) => Some((ty.block_elements(), ty.block_bytes())),
            Self::Other(_) => None,
        }
    }
}

/// The types papertune reads, for messages.
const SUPPORTED_TYPES: &str =
    "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K";

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
            return Err(
                cursor.error(format!("not a GGUF file (magic {magic:02x?}, expected \"GGUF\")"))
            );
        }
        let version = cursor.u32()?;
        if !(2..=3).contains(&version) {
            return Err(
                cursor.error(format!("GGUF version {version} is not supported (2 and 3 are)"))
            );
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
            let mut dims = (0..n_dims).map(|_| cursor.u64()).collect::<Result<Vec<_>>>()?;
            dims.reverse();
            // Sizes read from the file are checked before they are used: the element count
            // must fit in memory arithmetic, and (below) the data must lie inside the file.
            let dims: Vec<usize> = dims
                .iter()
                .map(|&d| usize::try_from(d).ok())
                .try_fold(Vec::new(), |mut all, d| {
                    all.push(d?);
                    all.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).map(|_| all)
                })
                .ok_or_else(|| {
                    cursor.error(format!(
                        "tensor {name:?} has dimensions {dims:?}, whose element count overflows"
                    ))
                })?;
            let ggml_type = GgmlType::from_id(cursor.u32()?);
            let offset = cursor.u64()?;
            tensors.push(GgufTensorInfo { name, shape: dims, ggml_type, offset });
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => v.as_u64().filter(|a| (1..=MAX_ALIGNMENT).contains(a)).ok_or_else(|| {
                cursor.error(format!(
                    "general.alignment must be an integer in [1, {MAX_ALIGNMENT}], found {v:?}"
                ))
            })?,
        };
        let data_start = (cursor.at as u64).div_ceil(alignment) * alignment;
        let file = Self {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            data_start: data_start as usize,
            bytes,
        };
        for info in &file.tensors {
            if let Some(range) = file.byte_range(info)?
                && range.end > file.bytes.len()
            {
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
        let values = self
            .require(key)?
            .as_array()
            .ok_or_else(|| self.wrong_type(key, "an array of strings"))?;
        values
            .iter()
            .map(|v| v.as_str().ok_or_else(|| self.wrong_type(key, "an array of strings")))
            .collect()
    }

    fn require(&self, key: &str) -> Result<&GgufValue> {
        self.metadata.get(key).ok_or_else(|| ModelError::Config {
            path: self.path.clone(),
            message: format!("GGUF metadata has no key {key:?}"),
        })
    }

    fn wrong_type(&self, key: &str, expected: &str) -> ModelError {
        let found = self.metadata.get(key).map_or("nothing", GgufValue::type_name);
        ModelError::Config {
            path: self.path.clone(),
            message: format!("GGUF metadata {key:?} is a {found}, expected {expected}"),
        }
    }

    /// The info of a tensor by name.
    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    fn byte_range(&self, info: &GgufTensorInfo) -> Result<Option<std::ops::Range<usize>>> {
        let Some((block_elems, block_bytes)) = info.ggml_type.block() else { return Ok(None) };
        let n = info.element_count();
        if !n.is_multiple_of(block_elems) {
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
        let end = usize::try_from(info.offset)
            .ok()
            .and_then(|offset| self.data_start.checked_add(offset))
            .and_then(|start| {
                Some(start..start.checked_add((n / block_elems).checked_mul(block_bytes)?)?)
            });
        end.map(Some).ok_or_else(|| ModelError::Config {
            path: self.path.clone(),
            message: format!(
                "tensor {:?} at offset {} does not lie inside the file",
                info.name, info.offset
            ),
        })
    }

    /// The raw bytes of one tensor (its blocks, for a quantised type).
    pub fn raw(&self, info: &GgufTensorInfo) -> Result<&[u8]> {
        let range = self.byte_range(info)?.ok_or_else(|| self.unsupported(info))?;
        Ok(&self.bytes[range])
    }

    fn unsupported(&self, info: &GgufTensorInfo) -> ModelError {
        ModelError::UnsupportedDtype {
            path: self.path.clone(),
            name: info.name.clone(),
            dtype: format!("{} (GGUF); supported: {SUPPORTED_TYPES}", info.ggml_type.name()),
        }
    }

    /// Dequantises one tensor to f32 in row-major order.
    pub fn dequantize(&self, info: &GgufTensorInfo) -> Result<HostTensor> {
        let raw = self.raw(info)?;
        let data = match info.ggml_type {
            GgmlType::F32 => {
                raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
            }
            GgmlType::F16 => {
                raw.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
            }
            GgmlType::BF16 => {
                raw.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
            }
            GgmlType::Quant(ty) => {
                quant::dequantize(ty, raw).map_err(|message| ModelError::Config {
                    path: self.path.clone(),
                    message: format!("tensor {:?}: {message}", info.name),
                })?
            }
            GgmlType::Other(_) => return Err(self.unsupported(info)),
        };
        Ok(HostTensor::new(info.shape.clone(), data))
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl Cursor<'_> {
    fn error(&self, message: String) -> ModelError {
        ModelError::Config {
            path: self.path.to_path_buf(),
            message: format!("GGUF at byte {}: {message}", self.at),
        }
    }

    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end =
            self.at.checked_add(n).filter(|&end| end <= self.bytes.len()).ok_or_else(|| {
                self.error(format!(
                    "needs {n} more bytes but the file has {} (truncated?)",
                    self.bytes.len()
                ))
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
        String::from_utf8(raw.to_vec())
            .map_err(|_| self.error("a string is not valid UTF-8".into()))
    }

    fn value(&mut self, value_type: u32, key: &str) -> Result<GgufValue> {
        self.value_at_depth(value_type, key, 0)
    }

    /// A metadata value inside `depth` enclosing arrays. Arrays nest at most
    /// [`MAX_ARRAY_DEPTH`] deep, and each claims no more items than the bytes left can hold
    /// nor more than [`MAX_ARRAY_ITEMS`], so that neither the stack nor memory follow a
    /// crafted count.
    fn value_at_depth(&mut self, value_type: u32, key: &str, depth: usize) -> Result<GgufValue> {
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
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.error(format!(
                        "metadata {key:?} nests arrays more than {MAX_ARRAY_DEPTH} deep"
                    )));
                }
                let item_type = self.u32()?;
                let len = self.u64()?;
                // The smallest encoding of one item: 1 byte, 8 for a string's length, 12 for
                // an array's type and length.
                let least = match item_type {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    other => {
                        return Err(self.error(format!(
                            "metadata {key:?} is an array of unknown value type {other}"
                        )));
                    }
                };
                let left = (self.bytes.len() - self.at) as u64;
                if len > left / least || len > MAX_ARRAY_ITEMS {
                    return Err(self.error(format!(
                        "array {key:?} claims {len} items; the {left} bytes left hold at most {}, and papertune reads at most {MAX_ARRAY_ITEMS}",
                        left / least
                    )));
                }
                let mut items = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    items.push(self.value_at_depth(item_type, key, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64()?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array()?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array()?)),
            other => {
                return Err(self.error(format!("metadata {key:?} has unknown value type {other}")));
            }
        })
    }
}
