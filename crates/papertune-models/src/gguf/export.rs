//! A decoder written back to the llama.cpp world: its LoRA adapters as llama.cpp's adapter
//! GGUF (`llama-cli --lora FILE`), or the whole model (adapters merged) re-encoded as F16 or
//! Q8_0 with the base file's metadata (architecture, tokenizer, chat template).
//!
//! Both follow the base file's tensor names and llama.cpp's conventions: Llama-architecture
//! query and key rows in llama.cpp's rotary order, Gemma's norm scales as `1 + w`.

use std::collections::BTreeMap;
use std::path::Path;

use super::names::{gather_rows, hf_name, llama_cpp_row_sources};
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
        .map(|info| Ok((known_hf_name(base, &info.name, config)?, info.name.clone())))
        .collect()
}

/// The Hugging Face name of one of the base file's tensors.
fn known_hf_name(base: &GgufFile, name: &str, config: &LlamaConfig) -> Result<String> {
    hf_name(name, config).ok_or_else(|| ModelError::Config {
        path: base.path.clone(),
        message: format!("GGUF tensor {name:?} has no Hugging Face counterpart papertune knows"),
    })
}

/// Whether llama.cpp keeps this architecture's query and key rows in its own rotary order.
fn permuted(config: &LlamaConfig) -> bool {
    config.model_type == "llama" || config.model_type == "mistral"
}

/// The rows of a query or key projection (or of its LoRA `B`) in llama.cpp's order: the
/// inverse of `names::unpermute_rows`.
fn permute_rows(tensor: HostTensor, heads: usize) -> HostTensor {
    let cols: usize = tensor.shape[1..].iter().product();
    let order = llama_cpp_row_sources(tensor.shape[0], heads);
    HostTensor::new(tensor.shape, gather_rows(&tensor.data, cols, &order))
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
pub fn write_lora_adapter(
    model: &LlamaModel,
    config: &LlamaConfig,
    lora: &LoraConfig,
    base: &GgufFile,
    path: &Path,
) -> Result<()> {
    let names = gguf_names(base, config)?;
    let mut writer = GgufWriter::new();
    let alpha = if lora.use_rslora { lora.alpha * (lora.r as f64).sqrt() } else { lora.alpha };
    writer
        .metadata(
            "general.architecture",
            GgufValue::String(base.get_str("general.architecture")?.to_owned()),
        )
        .metadata("general.type", GgufValue::String("adapter".into()))
        .metadata("adapter.type", GgufValue::String("lora".into()))
        .metadata("adapter.lora.alpha", GgufValue::F32(alpha as f32));
    let mut written = 0;
    for (module, _, linear) in model.lora_linears() {
        let Some(adapter) = &linear.lora else { continue };
        let hf = format!("{module}.weight");
        let name = names.get(&hf).ok_or_else(|| ModelError::Lora {
            message: format!(
                "{hf} has an adapter but the base file {} has no such tensor",
                base.path.display()
            ),
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
pub fn write_merged_model(
    model: LlamaModel,
    config: &LlamaConfig,
    base: &GgufFile,
    ty: ExportType,
    path: &Path,
) -> Result<()> {
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
        let hf = known_hf_name(base, &info.name, config)?;
        let Some(mut tensor) = checkpoint.remove(&hf) else {
            // Tensors the model does not hold (rotary frequency tables) are copied as they are.
            writer.tensor_encoded(
                &info.name,
                &info.shape,
                info.ggml_type,
                base.raw(info)?.to_vec(),
            );
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
            (_, ExportType::Q8_0) if cols % 32 == 0 => {
                writer.tensor_q8_0(&info.name, &tensor.shape, &tensor.data)
            }
            _ => writer.tensor_f16(&info.name, &tensor.shape, &tensor.data),
        };
    }
    if let Some(left) = checkpoint.names().next() {
        return Err(ModelError::Config {
            path: base.path.clone(),
            message: format!("the model's tensor {left} has no place in the base file"),
        });
    }
    writer.write(path)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use burn::module::Param;
    use burn::tensor::{Device, Tensor, TensorData};

    use super::super::names::{llama_checkpoint, unpermute_rows};
    use super::*;
    use crate::llama::LayerAttention;

    #[test]
    fn permute_inverts_unpermute() {
        let rows: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let tensor = HostTensor::new(vec![16, 1], rows.clone());
        let back = unpermute_rows(permute_rows(tensor, 2), 2);
        assert_eq!(back.data, rows);
    }

    /// A base GGUF of `config`'s shape with random weights, in llama.cpp's conventions (the
    /// writer's inverse: Llama q/k rows permuted, Gemma norms as `1 + w`), read back.
    fn tiny_base(config: &LlamaConfig, dir: &Path) -> GgufFile {
        let arch =
            if config.model_type == "gemma3_text" { "gemma3" } else { config.model_type.as_str() };
        let mut checkpoint = crate::init::random_llama_checkpoint(config, 11);
        let mut names = vec!["token_embd.weight".to_owned(), "output_norm.weight".to_owned()];
        for i in 0..config.num_hidden_layers {
            for part in [
                "attn_norm",
                "ffn_norm",
                "post_attention_norm",
                "post_ffw_norm",
                "attn_q_norm",
                "attn_k_norm",
                "attn_q",
                "attn_k",
                "attn_v",
                "attn_output",
                "ffn_gate",
                "ffn_up",
                "ffn_down",
            ] {
                names.push(format!("blk.{i}.{part}.weight"));
            }
        }
        let mut writer = GgufWriter::new();
        let key = |k: &str| format!("{arch}.{k}");
        writer
            .metadata("general.architecture", GgufValue::String(arch.into()))
            .metadata(&key("embedding_length"), GgufValue::U32(config.hidden_size as u32))
            .metadata(&key("feed_forward_length"), GgufValue::U32(config.intermediate_size as u32))
            .metadata(&key("block_count"), GgufValue::U32(config.num_hidden_layers as u32))
            .metadata(
                &key("attention.head_count"),
                GgufValue::U32(config.num_attention_heads as u32),
            )
            .metadata(
                &key("attention.head_count_kv"),
                GgufValue::U32(config.num_key_value_heads as u32),
            )
            .metadata(&key("attention.key_length"), GgufValue::U32(config.head_dim as u32))
            .metadata(
                &key("attention.layer_norm_rms_epsilon"),
                GgufValue::F32(config.rms_norm_eps as f32),
            )
            .metadata(&key("rope.freq_base"), GgufValue::F32(config.rope_theta as f32))
            .metadata(&key("vocab_size"), GgufValue::U32(config.vocab_size as u32))
            .metadata("general.file_type", GgufValue::U32(0));
        if let Some(window) = config.sliding_window {
            writer.metadata(&key("attention.sliding_window"), GgufValue::U32(window as u32));
        }
        for name in names {
            let Some(hf) = hf_name(&name, config) else { continue };
            let Some(mut tensor) = checkpoint.remove(&hf) else { continue };
            if config.norm_unit_offset && hf.ends_with("norm.weight") {
                tensor.data.iter_mut().for_each(|v| *v += 1.0);
            }
            if let Some(heads) = rotary_heads(&hf, config) {
                tensor = permute_rows(tensor, heads);
            }
            writer.tensor_f32(&name, &tensor.shape, &tensor.data);
        }
        if !config.rope_freq_divisors.is_empty() {
            writer.tensor_f32(
                "rope_freqs.weight",
                &[config.head_dim / 2],
                &config.rope_freq_divisors,
            );
        }
        assert_eq!(checkpoint.names().count(), 0, "every tensor has a GGUF name");
        let path = dir.join(format!("{arch}.gguf"));
        writer.write(&path).unwrap();
        GgufFile::read(&path).unwrap()
    }

    fn last_logits(model: &LlamaModel) -> Vec<f32> {
        let ids = vec![vec![3u32, 17, 5, 40, 9, 22]];
        let logits = model.forward(model.input(&ids, &[vec![1; 6]]), None);
        logits.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
    }

    /// The adapter file names the base file's tensors with llama.cpp's shapes and row order, and
    /// the merged file, read back through papertune's GGUF loader, is the merged model (Llama,
    /// Llama 3.1's rotary frequency divisors, Qwen3 and Gemma 3 conventions).
    #[test]
    fn exports_read_back_as_the_model_they_came_from() {
        let dir = tempfile::tempdir().unwrap();
        let device = Device::flex();
        let qwen3 =
            LlamaConfig { model_type: "qwen3".into(), qk_norm: true, ..LlamaConfig::tiny() };
        let gemma3 = LlamaConfig {
            layer_types: vec![
                LayerAttention::Sliding,
                LayerAttention::Sliding,
                LayerAttention::Full,
            ],
            ..LlamaConfig::tiny_gemma3()
        };
        let llama3 =
            LlamaConfig { rope_freq_divisors: vec![1.0, 2.5, 8.0, 8.0], ..LlamaConfig::tiny() };
        for written in [LlamaConfig::tiny(), llama3, qwen3, gemma3] {
            let base = tiny_base(&written, dir.path());
            let config = LlamaConfig::from_gguf(&base).unwrap();
            // The architecture comes back from the metadata and the tensors the file holds.
            assert_eq!(
                (config.model_type.as_str(), config.qk_norm, config.sliding_window),
                (written.model_type.as_str(), written.qk_norm, written.sliding_window)
            );
            assert_eq!(config.rope_freq_divisors, written.rope_freq_divisors);
            let mut checkpoint = llama_checkpoint(&base, &config).unwrap();
            let model = LlamaModel::load(&config, &mut checkpoint, &device).unwrap();
            let lora = LoraConfig {
                r: 4,
                target_modules: vec!["q_proj".into(), "v_proj".into()],
                dropout: 0.0,
                ..LoraConfig::default()
            };
            let mut model = model.attach_lora(&lora).unwrap();
            for (i, (_, _, linear)) in model.lora_linears_mut().into_iter().enumerate() {
                if let Some(adapter) = linear.lora.as_mut() {
                    let [r, out] = adapter.b.dims();
                    let values: Vec<f32> =
                        (0..r * out).map(|j| ((j * 5 + i) % 9) as f32 / 30.0 - 0.13).collect();
                    adapter.b = Param::from_tensor(Tensor::from_data(
                        TensorData::new(values, [r, out]),
                        &device,
                    ));
                }
            }

            let adapter_path = dir.path().join("adapter.gguf");
            write_lora_adapter(&model, &config, &lora, &base, &adapter_path).unwrap();
            let adapter = GgufFile::read(&adapter_path).unwrap();
            assert_eq!(adapter.get_str("general.type").unwrap(), "adapter");
            assert_eq!(adapter.get_f64("adapter.lora.alpha").unwrap(), lora.alpha);
            let a = adapter.tensor_info("blk.1.attn_q.weight.lora_a").unwrap();
            let b = adapter.tensor_info("blk.1.attn_q.weight.lora_b").unwrap();
            assert_eq!(
                (a.shape.clone(), b.shape.clone()),
                (
                    vec![4, config.hidden_size],
                    vec![config.num_attention_heads * config.head_dim, 4]
                )
            );
            let stored = adapter.dequantize(b).unwrap();
            let stored = if rotary_heads("q_proj.weight", &config).is_some() {
                unpermute_rows(stored, config.num_attention_heads)
            } else {
                stored
            };
            let ours = to_host(model.layers[1].self_attn.q_proj.lora.as_ref().unwrap().b.val())
                .transposed();
            assert_eq!(
                stored.data, ours.data,
                "{}: lora_b of q_proj in Hugging Face's row order",
                config.model_type
            );
            assert_eq!(adapter.tensors.len(), 4 * config.num_hidden_layers);

            let expected = last_logits(&model.clone().merge_lora());
            let merged_path = dir.path().join("merged.gguf");
            write_merged_model(model, &config, &base, ExportType::F16, &merged_path).unwrap();
            let merged = GgufFile::read(&merged_path).unwrap();
            assert_eq!(merged.get_u64("general.file_type").unwrap(), 1);
            let mut checkpoint =
                llama_checkpoint(&merged, &LlamaConfig::from_gguf(&merged).unwrap()).unwrap();
            let reread = LlamaModel::load(&config, &mut checkpoint, &device).unwrap();
            let found = last_logits(&reread);
            let worst =
                expected.iter().zip(&found).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            assert!(
                worst < 2e-2,
                "{}: merged GGUF logits differ by {worst} (F16 rounding)",
                config.model_type
            );
        }
    }
}
