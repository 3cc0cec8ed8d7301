//! Reading and writing safetensors checkpoints (single file or sharded with an index), as f32.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::error::{ModelError, Result};

/// One tensor of a checkpoint, converted to f32, in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self { shape, data }
    }

    /// Swaps the two axes of a matrix (HF linear weights are `[out, in]`, burn's are `[in, out]`).
    pub fn transposed(&self) -> Self {
        assert_eq!(self.shape.len(), 2, "transpose needs a matrix");
        let (rows, cols) = (self.shape[0], self.shape[1]);
        let mut data = vec![0.0; self.data.len()];
        for r in 0..rows {
            for c in 0..cols {
                data[c * rows + r] = self.data[r * cols + c];
            }
        }
        Self { shape: vec![cols, rows], data }
    }
}

/// All tensors of a checkpoint, keyed by name, with the file each came from for error messages.
#[derive(Debug, Default)]
pub struct Checkpoint {
    /// The file (or index) the checkpoint was read from.
    pub path: PathBuf,
    tensors: BTreeMap<String, HostTensor>,
}

/// Whether `name` is one plain file name (no folder, no `..`, not absolute).
fn is_file_name(name: &str) -> bool {
    let mut parts = Path::new(name).components();
    matches!((parts.next(), parts.next()), (Some(std::path::Component::Normal(_)), None))
}

impl Checkpoint {
    /// An in-memory checkpoint, e.g. a randomly initialised one.
    pub fn from_tensors(path: impl Into<PathBuf>, tensors: BTreeMap<String, HostTensor>) -> Self {
        Self { path: path.into(), tensors }
    }

    /// Reads `model.safetensors`, or the shards named by `model.safetensors.index.json`.
    pub fn read(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(ModelError::NotFound { path: path.to_path_buf() });
        }
        let is_index =
            path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(".index.json"));
        let mut tensors = BTreeMap::new();
        if is_index {
            let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
            let index: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| ModelError::Safetensors {
                    path: path.to_path_buf(),
                    message: format!("index is not JSON: {e}"),
                })?;
            let shards: BTreeSet<String> = index
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| ModelError::Safetensors {
                    path: path.to_path_buf(),
                    message: "index has no \"weight_map\" object".into(),
                })?
                .values()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            let dir = path.parent().unwrap_or(Path::new("."));
            for shard in shards {
                // A shard sits beside its index: a path elsewhere is not followed.
                if !is_file_name(&shard) {
                    return Err(ModelError::Safetensors {
                        path: path.to_path_buf(),
                        message: format!(
                            "weight_map names the shard {shard:?}; expected a file name beside the index"
                        ),
                    });
                }
                read_file_into(&dir.join(shard), &mut tensors)?;
            }
        } else {
            read_file_into(path, &mut tensors)?;
        }
        Ok(Self { path: path.to_path_buf(), tensors })
    }

    /// Names of every tensor, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the checkpoint holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// A tensor by name, if present.
    pub fn get(&self, name: &str) -> Option<&HostTensor> {
        self.tensors.get(name)
    }

    /// Removes and returns a tensor, checking its shape.
    pub fn take(&mut self, name: &str, expected: &[usize]) -> Result<HostTensor> {
        let tensor = self.tensors.remove(name).ok_or_else(|| ModelError::MissingTensor {
            path: self.path.clone(),
            name: name.to_owned(),
            expected: expected.to_vec(),
            hint: self.similar_names_hint(name),
        })?;
        if tensor.shape != expected {
            return Err(ModelError::ShapeMismatch {
                path: self.path.clone(),
                name: name.to_owned(),
                expected: expected.to_vec(),
                found: tensor.shape,
            });
        }
        Ok(tensor)
    }

    /// Removes a tensor if present (for optional tensors).
    pub fn remove(&mut self, name: &str) -> Option<HostTensor> {
        self.tensors.remove(name)
    }

    /// Adds `delta` to every value of the tensors whose names end with `suffix` (Gemma's norm
    /// scales, stored as offsets from 1).
    pub fn offset_tensors(&mut self, suffix: &str, delta: f32) {
        for (_, tensor) in self.tensors.iter_mut().filter(|(name, _)| name.ends_with(suffix)) {
            tensor.data.iter_mut().for_each(|v| *v += delta);
        }
    }

    /// Inserts a tensor (used when exporting).
    pub fn insert(&mut self, name: impl Into<String>, tensor: HostTensor) {
        self.tensors.insert(name.into(), tensor);
    }

    /// Fails if tensors remain that are not covered by `ignorable` prefixes/suffixes.
    pub fn ensure_consumed(&self, ignorable: &[&str]) -> Result<()> {
        let left: Vec<String> = self
            .tensors
            .keys()
            .filter(|name| {
                !ignorable
                    .iter()
                    .any(|pattern| name.starts_with(pattern) || name.ends_with(pattern))
            })
            .cloned()
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(ModelError::UnexpectedTensors {
                path: self.path.clone(),
                count: left.len(),
                examples: left.into_iter().take(5).collect(),
            })
        }
    }

    /// Writes every tensor as F32 to `path` (through a temporary file, then a rename).
    pub fn write(&self, path: &Path, metadata: Option<BTreeMap<String, String>>) -> Result<()> {
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = self
            .tensors
            .iter()
            .map(|(name, t)| {
                let bytes: &[u8] = bytemuck_f32(&t.data);
                let view = safetensors::tensor::TensorView::new(Dtype::F32, t.shape.clone(), bytes)
                    .expect("shape and data length agree");
                (name.clone(), view)
            })
            .collect();
        let metadata = metadata.map(|m| m.into_iter().collect());
        let bytes = safetensors::serialize(views, metadata).map_err(|e| {
            ModelError::Safetensors { path: path.to_path_buf(), message: e.to_string() }
        })?;
        write_atomic(path, &bytes)
    }

    /// Hint listing names that share the last two components of a missing name.
    fn similar_names_hint(&self, name: &str) -> String {
        let tail: Vec<&str> = name.rsplit('.').take(2).collect();
        let similar: Vec<&str> = self
            .tensors
            .keys()
            .filter(|k| {
                let k_tail: Vec<&str> = k.rsplit('.').take(2).collect();
                k_tail == tail
            })
            .take(3)
            .map(String::as_str)
            .collect();
        if similar.is_empty() {
            String::new()
        } else {
            format!("; similar names in the file: {similar:?}")
        }
    }
}

fn bytemuck_f32(data: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and any byte pattern is a valid u8; the slice covers exactly the
    // memory of `data`. Safetensors stores little-endian data, which is the byte order of every
    // platform papertune supports (checked below).
    #[cfg(not(target_endian = "little"))]
    compile_error!("papertune writes safetensors on little-endian machines only");
    unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), std::mem::size_of_val(data)) }
}

fn read_file_into(path: &Path, tensors: &mut BTreeMap<String, HostTensor>) -> Result<()> {
    if !path.exists() {
        return Err(ModelError::NotFound { path: path.to_path_buf() });
    }
    let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| ModelError::Safetensors {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    for (name, view) in file.tensors() {
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => {
                raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
            }
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::I64 if name.ends_with("position_ids") => raw
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32)
                .collect(),
            other => {
                return Err(ModelError::UnsupportedDtype {
                    path: path.to_path_buf(),
                    name,
                    dtype: format!("{other:?}"),
                });
            }
        };
        tensors.insert(name, HostTensor::new(view.shape().to_vec(), data));
    }
    Ok(())
}

/// Writes `bytes` to `path` so that readers see the old file or the whole new one, never a
/// part: through a temporary file beside it, flushed to disk, renamed into place, and the folder
/// flushed (atomic-write-file).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |e| ModelError::io(path, e);
    let mut file = atomic_write_file::AtomicWriteFile::open(path).map_err(io)?;
    std::io::Write::write_all(&mut file, bytes).map_err(io)?;
    file.commit().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        let mut tensors = BTreeMap::new();
        tensors
            .insert("a.weight".into(), HostTensor::new(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]));
        tensors.insert("a.bias".into(), HostTensor::new(vec![2], vec![0.5, -0.5]));
        Checkpoint::from_tensors("mem", tensors)
    }

    #[test]
    fn write_then_read_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        sample().write(&path, None).unwrap();
        let mut back = Checkpoint::read(&path).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back.take("a.weight", &[2, 3]).unwrap().data, vec![1., 2., 3., 4., 5., 6.]);
    }

    #[test]
    fn transpose_swaps_axes() {
        let t = HostTensor::new(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]).transposed();
        assert_eq!(t.shape, vec![3, 2]);
        assert_eq!(t.data, vec![1., 4., 2., 5., 3., 6.]);
    }

    #[test]
    fn missing_and_misshaped_tensors_are_named() {
        let mut ckpt = sample();
        let err = ckpt.take("b.weight", &[2, 3]).unwrap_err().to_string();
        assert!(err.contains("missing tensor \"b.weight\""), "{err}");
        let err = ckpt.take("a.weight", &[3, 2]).unwrap_err().to_string();
        assert!(err.contains("\"a.weight\" has shape [2, 3], expected [3, 2]"), "{err}");
    }

    #[test]
    fn leftover_tensors_are_reported_unless_ignorable() {
        let ckpt = sample();
        let err = ckpt.ensure_consumed(&[]).unwrap_err().to_string();
        assert!(err.contains("2 unexpected tensor(s)"), "{err}");
        assert!(ckpt.ensure_consumed(&["a."]).is_ok());
    }

    #[test]
    fn reads_sharded_checkpoints_through_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut one = BTreeMap::new();
        one.insert("x".to_string(), HostTensor::new(vec![1], vec![1.0]));
        Checkpoint::from_tensors("a", one).write(&dir.path().join("s1.safetensors"), None).unwrap();
        let mut two = BTreeMap::new();
        two.insert("y".to_string(), HostTensor::new(vec![1], vec![2.0]));
        Checkpoint::from_tensors("b", two).write(&dir.path().join("s2.safetensors"), None).unwrap();
        let index = dir.path().join("model.safetensors.index.json");
        std::fs::write(
            &index,
            r#"{"metadata":{},"weight_map":{"x":"s1.safetensors","y":"s2.safetensors"}}"#,
        )
        .unwrap();
        let ckpt = Checkpoint::read(&index).unwrap();
        assert_eq!(ckpt.names().collect::<Vec<_>>(), vec!["x", "y"]);
        // Shards outside the index's folder are refused, naming the index and the shard.
        for shard in ["../s1.safetensors", "/etc/passwd", "sub/s1.safetensors"] {
            std::fs::write(&index, format!(r#"{{"weight_map":{{"x":"{shard}"}}}}"#)).unwrap();
            let err = Checkpoint::read(&index).unwrap_err().to_string();
            assert!(
                err.contains("index.json")
                    && err.contains(shard)
                    && err.contains("expected a file name"),
                "{err}"
            );
        }
    }

    #[test]
    fn garbage_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        std::fs::write(&path, b"not a checkpoint").unwrap();
        let err = Checkpoint::read(&path).unwrap_err().to_string();
        assert!(err.contains("bad.safetensors"), "{err}");
    }
}
