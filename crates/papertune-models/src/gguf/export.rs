//! A decoder written back to the llama.cpp world: its LoRA adapters as llama.cpp's adapter
//! GGUF (`llama-cli --lora FILE`), or the whole model (adapters merged) re-encoded as F16 or
//! Q8_0 with the base file's metadata (architecture, tokenizer, chat template).
//!
//! Both follow the base file's tensor names and llama.cpp's conventions: Llama-architecture
//! query and key rows in llama.cpp's rotary order, Gemma's norm scales as `1 + w`.

use std::collections::BTreeMap;
use std::path::Path;

use super::names::hf_name;
use super::{GgufFile, GgufValue, GgufWriter};
use crate::checkpoint::HostTensor;
use crate::error::{ModelError, Result};
use crate::llama::{LlamaConfig, LlamaModel};
use crate::lora::{LoraConfig, LoraModel};
use crate::weights::{TensorWriter, to_host};

/// The encoding of a merged model's matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportType {
    F16,
    /// 8-bit blocks of 32 (matrices whose rows are not whole blocks are written as F16).
    Q8_0,
}

impl ExportType {
    /// llama.cpp's `general.file_type` for a file mostly of this type.
    fn file_type(self) -> u32 {
        match self {
            Self::F16 => 1,
            Self::Q8_0 => 7,
        }
    }
}

/// Hugging Face name -> the base file's tensor name, for every tensor the base file holds.
fn gguf_names(base: &GgufFile, config: &LlamaConfig) -> Result<BTreeMap<String, String>> {
    base.tensors
        .iter()
        .map(|info| {
            let hf = hf_name(&info.name, config).ok_or_else(|| ModelError::Config {
                path: base.path.clone(),
                message: format!("GGUF tensor {:?} has no Hugging Face counterpart papertune knows", info.name),
            })?;
            Ok((hf, info.name.clone()))
        })
        .collect()
}

/// Whether llama.cpp keeps this architecture's query and key rows in its own rotary order.
fn permuted(config: &LlamaConfig) -> bool {
    config.model_type == "llama" || config.model_type == "mistral"
}

/// The rows of a query or key projection (or of its LoRA `B`) in llama.cpp's order: the
/// inverse of `names::unpermute_rows`.
fn permute_rows(tensor: HostTensor, heads: usize) -> HostTensor {
    let rows = tensor.shape[0];
    let cols: usize = tensor.shape[1..].iter().product();
    let head_dim = rows / heads;
    let half = head_dim / 2;
    let mut data = vec![0.0; tensor.data.len()];
    for h in 0..heads {
        for s in 0..2 {
            for j in 0..half {
                let (to, from) = (h * head_dim + 2 * j + s, h * head_dim + s * half + j);
                data[to * cols..(to + 1) * cols].copy_from_slice(&tensor.data[from * cols..(from + 1) * cols]);
            }
        }
    }
    HostTensor::new(tensor.shape, data)
}

/// The heads whose rows llama.cpp reorders in this tensor (query or key projection), if any.
fn rotary_heads(hf: &str, config: &LlamaConfig) -> Option<usize> {
    if !permuted(config) {
        return None;
    }
    if hf.contains("q_proj.") {
        Some(config.num_attention_heads)
    } else if hf.contains("k_proj.") {
        Some(config.num_key_value_heads)
    } else {
        None
    }
}

/// Writes the adapters of `model` as llama.cpp's LoRA GGUF: `general.type = adapter`,
/// `adapter.lora.alpha` (llama.cpp scales by `alpha / r`; an rsLoRA adapter gets the alpha that
/// gives its `alpha / sqrt(r)`), and `<tensor>.lora_a [r, in]`, `<tensor>.lora_b [out, r]` in
/// F32 under the base file's names.
pub fn write_lora_adapter(model: &LlamaModel, config: &LlamaConfig, lora: &LoraConfig, base: &GgufFile, path: &Path) -> Result<()> {
    let names = gguf_names(base, config)?;
    let mut writer = GgufWriter::new();
    let alpha = if lora.use_rslora { lora.alpha * (lora.r as f64).sqrt() } else { lora.alpha };
    writer
        .metadata("general.architecture", GgufValue::String(base.get_str("general.architecture")?.to_owned()))
        .metadata("general.type", GgufValue::String("adapter".into()))
        .metadata("adapter.type", GgufValue::String("lora".into()))
        .metadata("adapter.lora.alpha", GgufValue::F32(alpha as f32));
    let mut written = 0;
    for (module, _, linear) in model.lora_linears() {
        let Some(adapter) = &linear.lora else { continue };
        let hf = format!("{module}.weight");
        let name = names.get(&hf).ok_or_else(|| ModelError::Lora {
            message: format!("{hf} has an adapter but the base file {} has no such tensor", base.path.display()),
        })?;
        let a = to_host(adapter.a.val()).transposed(); // [r, in]
        let mut b = to_host(adapter.b.val()).transposed(); // [out, r]
        if let Some(heads) = rotary_heads(&hf, config) {
            b = permute_rows(b, heads);
        }
        writer.tensor_f32(&format!("{name}.lora_a"), &a.shape, &a.data);
        writer.tensor_f32(&format!("{name}.lora_b"), &b.shape, &b.data);
        written += 1;
    }
    if written == 0 {
        return Err(ModelError::Lora { message: "the model carries no adapter to export".into() });
    }
    writer.write(path)
}

/// Writes `model` (its adapters merged first, if it has any) as a whole GGUF: the base file's
/// metadata and tensor names, matrices in `ty`, vectors in F32.
pub fn write_merged_model(model: LlamaModel, config: &LlamaConfig, base: &GgufFile, ty: ExportType, path: &Path) -> Result<()> {
    let names = gguf_names(base, config)?;
    let model = model.merge_lora();
    let mut tensors = TensorWriter::new();
    model.export(config, &mut tensors);
    let mut checkpoint = tensors.into_checkpoint();
    let mut writer = GgufWriter::new();
    for (key, value) in &base.metadata {
        match key.as_str() {
            "general.alignment" => {}
            "general.file_type" => {
                writer.metadata(key, GgufValue::U32(ty.file_type()));
            }
            _ => {
                writer.metadata(key, value.clone());
            }
        }
    }
    for info in &base.tensors {
        let hf = names.iter().find(|(_, gguf)| **gguf == info.name).map(|(hf, _)| hf.clone()).unwrap_or_default();
        let Some(mut tensor) = checkpoint.remove(&hf) else {
            // Tensors the model does not hold (rotary frequency tables) are copied as they are.
            writer.tensor_encoded(&info.name, &info.shape, info.ggml_type, base.raw(info)?.to_vec());
            continue;
        };
        if config.norm_unit_offset && hf.ends_with("norm.weight") {
            tensor.data.iter_mut().for_each(|v| *v += 1.0);
        }
        if let Some(heads) = rotary_heads(&hf, config).filter(|_| tensor.shape.len() == 2) {
            tensor = permute_rows(tensor, heads);
        }
        let cols = tensor.shape.last().copied().unwrap_or(0);
        match (tensor.shape.len(), ty) {
            (1, _) => writer.tensor_f32(&info.name, &tensor.shape, &tensor.data),
            (_, ExportType::Q8_0) if cols % 32 == 0 => writer.tensor_q8_0(&info.name, &tensor.shape, &tensor.data),
            _ => writer.tensor_f16(&info.name, &tensor.shape, &tensor.data),
        };
    }
    if let Some(left) = checkpoint.names().next() {
        return Err(ModelError::Config { path: base.path.clone(), message: format!("the model's tensor {left} has no place in the base file") });
    }
    writer.write(path)
}

#[cfg(test)]
mod tests {
    use super::super::names::unpermute_rows;
    use super::*;

    #[test]
    fn permute_inverts_unpermute() {
        let rows: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let tensor = HostTensor::new(vec![16, 1], rows.clone());
        let back = unpermute_rows(permute_rows(tensor, 2), 2);
        assert_eq!(back.data, rows);
    }
}
