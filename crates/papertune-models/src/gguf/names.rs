//! llama.cpp's tensor names for the Llama family (Gemma 3 included), mapped to Hugging Face's,
//! so that a GGUF file loads through the same name map as a safetensors checkpoint.

use std::collections::BTreeMap;
use std::sync::Arc;

use papertune_kernels::quant::{QuantMatrix, QuantWeight};

use super::{GgmlType, GgufFile};
use crate::checkpoint::{Checkpoint, HostTensor};
use crate::error::{ModelError, Result};
use crate::llama::LlamaConfig;

/// Maps GGUF tensors (llama.cpp names) to a checkpoint with Hugging Face names, dequantised to
/// f32, undoing the Q/K row permutation llama.cpp applies to Llama models, and the `+ 1`
/// llama.cpp adds to Gemma's norm scales.
pub fn llama_checkpoint(file: &GgufFile, config: &LlamaConfig) -> Result<Checkpoint> {
    Ok(llama_weights(file, config, false)?.0)
}

/// The linear layers' weights kept in their quantised blocks, by Hugging Face name
/// (`model.layers.0.self_attn.q_proj.weight`; `lm_head.weight` for a tied head, the token
/// embedding's blocks).
pub type QuantizedWeights = BTreeMap<String, QuantWeight>;

/// As [`llama_checkpoint`], with the quantised weights of the linear layers (and of a tied head)
/// kept in their blocks instead of decoded: the checkpoint holds the rest (norms, the token
/// embedding, f32 tensors).
pub fn llama_checkpoint_quantized(
    file: &GgufFile,
    config: &LlamaConfig,
) -> Result<(Checkpoint, QuantizedWeights)> {
    llama_weights(file, config, true)
}

fn llama_weights(
    file: &GgufFile,
    config: &LlamaConfig,
    keep_blocks: bool,
) -> Result<(Checkpoint, QuantizedWeights)> {
    let unpermute = config.model_type == "llama" || config.model_type == "mistral";
    let mut checkpoint = Checkpoint::from_tensors(file.path.clone(), Default::default());
    let mut quantized = QuantizedWeights::new();
    for info in &file.tensors {
        let name = hf_name(&info.name, config).ok_or_else(|| ModelError::Config {
            path: file.path.clone(),
            message: format!(
                "GGUF tensor {:?} has no Hugging Face counterpart papertune knows",
                info.name
            ),
        })?;
        let is_linear = name.ends_with("_proj.weight") || name == "lm_head.weight";
        let tied_head = config.tie_word_embeddings && name == "model.embed_tokens.weight";
        if let (true, GgmlType::Quant(ty), &[rows, cols]) =
            (keep_blocks && (is_linear || tied_head), info.ggml_type, info.shape.as_slice())
        {
            let matrix =
                QuantMatrix::new(ty, rows, cols, file.raw(info)?.to_vec()).map_err(|message| {
                    ModelError::Config {
                        path: file.path.clone(),
                        message: format!("tensor {:?}: {message}", info.name),
                    }
                })?;
            let heads = query_or_key_heads(&name, config).filter(|_| unpermute);
            let matrix = match heads {
                Some(heads) => {
                    unpermute_block_rows(matrix, heads, config.head_dim, &file.path, &info.name)?
                }
                None => matrix,
            };
            // A tied embedding's blocks serve both the head and the lookup.
            let key = if tied_head { "lm_head.weight".to_owned() } else { name.clone() };
            quantized.insert(key, Arc::new(matrix));
            continue;
        }
        let mut tensor = file.dequantize(info)?;
        if let Some(heads) = query_or_key_heads(&name, config).filter(|_| unpermute) {
            // The rows must be the heads' before they are moved (the name map checks the rest).
            let rows = heads * config.head_dim;
            if tensor.shape.first() != Some(&rows) {
                return Err(ModelError::ShapeMismatch {
                    path: file.path.clone(),
                    name: info.name.clone(),
                    expected: vec![rows],
                    found: tensor.shape.clone(),
                });
            }
            tensor = unpermute_rows(tensor, heads);
        }
        checkpoint.insert(name, tensor);
    }
    if config.norm_unit_offset {
        checkpoint.offset_tensors("norm.weight", -1.0);
    }
    Ok((checkpoint, quantized))
}

/// The heads of a query or key projection's rows (which llama.cpp permutes for Llama models).
fn query_or_key_heads(name: &str, config: &LlamaConfig) -> Option<usize> {
    if name.ends_with("q_proj.weight") || name.ends_with("q_proj.bias") {
        Some(config.num_attention_heads)
    } else if name.ends_with("k_proj.weight") || name.ends_with("k_proj.bias") {
        Some(config.num_key_value_heads)
    } else {
        None
    }
}

/// [`unpermute_rows`] on a matrix kept in blocks: each row is whole blocks, so rows move as
/// byte ranges.
fn unpermute_block_rows(
    matrix: QuantMatrix,
    heads: usize,
    head_dim: usize,
    path: &std::path::Path,
    name: &str,
) -> Result<QuantMatrix> {
    if matrix.rows != heads * head_dim {
        return Err(ModelError::ShapeMismatch {
            path: path.to_path_buf(),
            name: name.to_owned(),
            expected: vec![heads * head_dim],
            found: vec![matrix.rows, matrix.cols],
        });
    }
    let order = inverse_order(&llama_cpp_row_sources(matrix.rows, heads));
    let bytes = gather_rows(&matrix.bytes, matrix.row_bytes(), &order);
    QuantMatrix::new(matrix.ty, matrix.rows, matrix.cols, bytes)
        .map_err(|message| ModelError::Config { path: path.to_path_buf(), message })
}

/// llama.cpp's tensor name -> Hugging Face's.
pub(super) fn hf_name(gguf: &str, config: &LlamaConfig) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        "rope_freqs.weight" => Some("rotary_emb.inv_freq"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some(name.to_owned());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, param) = rest.rsplit_once('.')?;
    let [attn_norm, attn_post_norm, ffn_norm, ffn_post_norm] = crate::llama::norm_names(config);
    let hf_module = match module {
        "attn_norm" => attn_norm,
        "ffn_norm" => ffn_norm,
        "post_attention_norm" if config.sandwich_norms => attn_post_norm,
        "post_ffw_norm" if config.sandwich_norms => ffn_post_norm,
        "attn_q_norm" if config.qk_norm => "self_attn.q_norm",
        "attn_k_norm" if config.qk_norm => "self_attn.k_norm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf_module}.{param}"))
}

/// For each row of a query or key projection in llama.cpp's order, the Hugging Face row it
/// holds: within each head of `head_dim` rows, llama.cpp interleaves the two rotary halves (row
/// `2j + s` holds Hugging Face's row `s * head_dim/2 + j`).
pub(super) fn llama_cpp_row_sources(rows: usize, heads: usize) -> Vec<usize> {
    let head_dim = rows / heads.max(1);
    let half = head_dim / 2;
    (0..rows).map(|i| (i / head_dim) * head_dim + (i % 2) * half + (i % head_dim) / 2).collect()
}

/// Rows of `row_len` values gathered: row `i` of the result is row `order[i]` of `data`.
pub(super) fn gather_rows<T: Copy>(data: &[T], row_len: usize, order: &[usize]) -> Vec<T> {
    order
        .iter()
        .flat_map(|&from| data[from * row_len..(from + 1) * row_len].iter().copied())
        .collect()
}

/// The inverse of a row order.
pub(super) fn inverse_order(order: &[usize]) -> Vec<usize> {
    let mut inverse = vec![0; order.len()];
    for (i, &from) in order.iter().enumerate() {
        inverse[from] = i;
    }
    inverse
}

/// Undoes llama.cpp's permutation of Q/K rows (see [`llama_cpp_row_sources`]).
pub(super) fn unpermute_rows(tensor: HostTensor, heads: usize) -> HostTensor {
    let rows = tensor.shape[0];
    let cols: usize = tensor.shape[1..].iter().product();
    let order = inverse_order(&llama_cpp_row_sources(rows, heads));
    HostTensor::new(tensor.shape, gather_rows(&tensor.data, cols, &order))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_names_map_to_hugging_face() {
        let llama = LlamaConfig::tiny();
        assert_eq!(
            hf_name("blk.12.attn_q.weight", &llama).unwrap(),
            "model.layers.12.self_attn.q_proj.weight"
        );
        assert_eq!(
            hf_name("blk.0.ffn_down.weight", &llama).unwrap(),
            "model.layers.0.mlp.down_proj.weight"
        );
        assert_eq!(
            hf_name("blk.0.ffn_norm.weight", &llama).unwrap(),
            "model.layers.0.post_attention_layernorm.weight"
        );
        assert_eq!(hf_name("token_embd.weight", &llama).unwrap(), "model.embed_tokens.weight");
        assert!(hf_name("blk.0.mystery.weight", &llama).is_none());
        assert!(
            hf_name("blk.0.post_ffw_norm.weight", &llama).is_none(),
            "a Llama has no sandwich norms"
        );
        let gemma = LlamaConfig::tiny_gemma3();
        assert_eq!(
            hf_name("blk.1.ffn_norm.weight", &gemma).unwrap(),
            "model.layers.1.pre_feedforward_layernorm.weight"
        );
        assert_eq!(
            hf_name("blk.1.post_attention_norm.weight", &gemma).unwrap(),
            "model.layers.1.post_attention_layernorm.weight"
        );
        assert_eq!(
            hf_name("blk.1.post_ffw_norm.weight", &gemma).unwrap(),
            "model.layers.1.post_feedforward_layernorm.weight"
        );
        assert_eq!(
            hf_name("blk.1.attn_k_norm.weight", &gemma).unwrap(),
            "model.layers.1.self_attn.k_norm.weight"
        );
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        // Two heads of four rows, one column: HF rows [0..8].
        let hf: Vec<f32> = (0..8).map(|v| v as f32).collect();
        // llama.cpp: reshape(heads, 2, half, cols).swapaxes(1, 2) -> row 2j+s = hf row s*half+j.
        let permuted = vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0];
        let back = unpermute_rows(HostTensor::new(vec![8, 1], permuted), 2);
        assert_eq!(back.data, hf);
    }

    #[test]
    fn query_rows_that_are_not_the_heads_are_refused_before_the_permutation() {
        let mut writer = crate::gguf::GgufWriter::new();
        writer.tensor_f32("blk.0.attn_q.weight", &[], &[1.0]);
        let file = GgufFile::parse(std::path::Path::new("q.gguf"), writer.to_bytes()).unwrap();
        let err = llama_checkpoint(&file, &LlamaConfig::tiny()).unwrap_err().to_string();
        assert!(err.contains("q.gguf") && err.contains("blk.0.attn_q.weight"), "{err}");
    }
}
