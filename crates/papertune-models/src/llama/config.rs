//! The shape of a Llama-family causal LM (Llama, SmolLM2, Mistral-style, Qwen2), read from a
//! Hugging Face `config.json` or from GGUF metadata.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;

/// Everything that decides the decoder's architecture and its special tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// `llama`, `mistral` or `qwen2`.
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// Width of the SwiGLU feed-forward layer.
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Key/value heads of grouped-query attention (equal to `num_attention_heads` without GQA).
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    pub max_position_embeddings: usize,
    /// The LM head reuses the token embedding.
    pub tie_word_embeddings: bool,
    /// Biases on the q/k/v projections (Qwen2, or Llama with `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the output projection (Llama with `attention_bias`).
    pub o_bias: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
}

/// `config.json` as Hugging Face writes it, the fields papertune reads.
#[derive(Debug, Deserialize)]
struct HfLlamaConfig {
    #[serde(default)]
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rope_theta: Option<f64>,
    /// transformers 5 nests the RoPE options.
    rope_parameters: Option<serde_json::Value>,
    rope_scaling: Option<serde_json::Value>,
    #[serde(default = "default_rms_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_max_positions")]
    max_position_embeddings: usize,
    tie_word_embeddings: Option<bool>,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    hidden_act: Option<String>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<serde_json::Value>,
    pad_token_id: Option<u32>,
}

fn default_rms_eps() -> f64 {
    1e-6
}
fn default_max_positions() -> usize {
    2048
}

const SUPPORTED: &[&str] = &["llama", "mistral", "qwen2"];

impl LlamaConfig {
    /// Reads a Hugging Face `config.json`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        Self::from_json(path, &text)
    }

    /// Parses `config.json` text; `path` names it in errors.
    pub fn from_json(path: &Path, text: &str) -> Result<Self> {
        let bad = |message: String| ModelError::Config { path: path.to_path_buf(), message };
        let raw: HfLlamaConfig = serde_json::from_str(text).map_err(|e| bad(format!("not a Llama-family config: {e}")))?;
        let model_type = raw.model_type.unwrap_or_else(|| "llama".into());
        if !SUPPORTED.contains(&model_type.as_str()) {
            return Err(bad(format!("model_type {model_type:?} is not supported; supported: {}", SUPPORTED.join(", "))));
        }
        if let Some(act) = raw.hidden_act.as_deref().filter(|a| *a != "silu") {
            return Err(bad(format!("hidden_act {act:?} is not supported (only silu)")));
        }
        if raw.mlp_bias {
            return Err(bad("mlp_bias = true is not supported".into()));
        }
        let rope_type = |v: &serde_json::Value| v.get("rope_type").or_else(|| v.get("type")).and_then(|t| t.as_str()).map(str::to_owned);
        for scaling in [raw.rope_scaling.as_ref(), raw.rope_parameters.as_ref()].into_iter().flatten() {
            if let Some(kind) = rope_type(scaling).filter(|k| k != "default") {
                return Err(bad(format!("RoPE scaling {kind:?} is not supported (only the default RoPE)")));
            }
        }
        let rope_theta = raw
            .rope_theta
            .or_else(|| raw.rope_parameters.as_ref().and_then(|p| p.get("rope_theta")).and_then(|t| t.as_f64()))
            .unwrap_or(10_000.0);
        let eos_token_ids = match raw.eos_token_id {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Number(n)) => n.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
            Some(serde_json::Value::Array(items)) => items.iter().filter_map(|v| v.as_u64()).map(|v| v as u32).collect(),
            Some(other) => return Err(bad(format!("eos_token_id {other} is neither a number nor a list"))),
        };
        let is_qwen2 = model_type == "qwen2";
        let config = Self {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            num_key_value_heads: raw.num_key_value_heads.unwrap_or(raw.num_attention_heads),
            head_dim: raw.head_dim.unwrap_or(raw.hidden_size / raw.num_attention_heads.max(1)),
            rope_theta,
            rms_norm_eps: raw.rms_norm_eps,
            max_position_embeddings: raw.max_position_embeddings,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(is_qwen2),
            qkv_bias: is_qwen2 || raw.attention_bias,
            o_bias: !is_qwen2 && raw.attention_bias,
            bos_token_id: raw.bos_token_id,
            eos_token_ids,
            pad_token_id: raw.pad_token_id,
            model_type,
        };
        config.validate().map_err(bad)?;
        Ok(config)
    }

    /// Reads the architecture from GGUF metadata (`general.architecture` and its `<arch>.*`
    /// keys); whether the head is tied is told by the absence of `output.weight`.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let arch = file.get_str("general.architecture")?.to_owned();
        if !SUPPORTED.contains(&arch.as_str()) {
            return Err(ModelError::Config {
                path: file.path.clone(),
                message: format!("GGUF architecture {arch:?} is not supported; supported: {}", SUPPORTED.join(", ")),
            });
        }
        let key = |name: &str| format!("{arch}.{name}");
        let usize_of = |name: &str| file.get_u64(&key(name)).map(|v| v as usize);
        let hidden_size = usize_of("embedding_length")?;
        let num_attention_heads = usize_of("attention.head_count")?;
        let vocab_size = match file.get(&key("vocab_size")).and_then(|v| v.as_u64()) {
            Some(v) => v as usize,
            None => file.get_strings("tokenizer.ggml.tokens")?.len(),
        };
        let head_dim = file
            .get(&key("attention.key_length"))
            .and_then(|v| v.as_u64())
            .map_or(hidden_size / num_attention_heads.max(1), |v| v as usize);
        let token = |name: &str| file.get(&format!("tokenizer.ggml.{name}")).and_then(|v| v.as_u64()).map(|v| v as u32);
        let is_qwen2 = arch == "qwen2";
        let config = Self {
            vocab_size,
            hidden_size,
            intermediate_size: usize_of("feed_forward_length")?,
            num_hidden_layers: usize_of("block_count")?,
            num_attention_heads,
            num_key_value_heads: file
                .get(&key("attention.head_count_kv"))
                .and_then(|v| v.as_u64())
                .map_or(num_attention_heads, |v| v as usize),
            head_dim,
            rope_theta: file.get(&key("rope.freq_base")).and_then(|v| v.as_f64()).unwrap_or(10_000.0),
            rms_norm_eps: file.get_f64(&key("attention.layer_norm_rms_epsilon"))?,
            max_position_embeddings: file.get(&key("context_length")).and_then(|v| v.as_u64()).map_or(2048, |v| v as usize),
            tie_word_embeddings: file.tensor_info("output.weight").is_none(),
            qkv_bias: file.tensor_info("blk.0.attn_q.bias").is_some(),
            o_bias: file.tensor_info("blk.0.attn_output.bias").is_some(),
            bos_token_id: token("bos_token_id"),
            eos_token_ids: token("eos_token_id").into_iter().collect(),
            pad_token_id: token("padding_token_id"),
            model_type: if is_qwen2 { "qwen2".into() } else { arch },
        };
        config.validate().map_err(|message| ModelError::Config { path: file.path.clone(), message })?;
        // Every block has its tensors: a count the file cannot hold is refused before any
        // allocation follows it.
        if config.num_hidden_layers > file.tensors.len() {
            return Err(ModelError::Config {
                path: file.path.clone(),
                message: format!("block_count is {} but the file has {} tensors", config.num_hidden_layers, file.tensors.len()),
            });
        }
        Ok(config)
    }

    /// Checks the numbers that must agree with each other.
    pub fn validate(&self) -> Result<(), String> {
        if self.num_attention_heads == 0 || self.num_key_value_heads == 0 {
            return Err("attention head counts must be at least 1".into());
        }
        crate::config_checks::sizes(&[
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("head_dim", self.head_dim),
        ])?;
        if !(self.rms_norm_eps > 0.0 && self.rms_norm_eps.is_finite()) {
            return Err(format!("rms_norm_eps must be positive, found {}", self.rms_norm_eps));
        }
        if self.num_attention_heads % self.num_key_value_heads != 0 {
            return Err(format!(
                "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if self.head_dim % 2 != 0 {
            return Err(format!("head_dim {} must be even for rotary embeddings", self.head_dim));
        }
        Ok(())
    }

    /// A tiny configuration for tests.
    pub fn tiny() -> Self {
        Self {
            model_type: "llama".into(),
            vocab_size: 64,
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 8,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-5,
            max_position_embeddings: 256,
            tie_word_embeddings: true,
            qkv_bias: false,
            o_bias: false,
            bos_token_id: Some(1),
            eos_token_ids: vec![2],
            pad_token_id: Some(2),
        }
    }

    /// Writes `config.json` in Hugging Face's layout.
    pub fn to_hf_json(&self) -> serde_json::Value {
        serde_json::json!({
            "architectures": [if self.model_type == "qwen2" { "Qwen2ForCausalLM" } else { "LlamaForCausalLM" }],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.model_type != "qwen2" && self.qkv_bias,
            "hidden_act": "silu",
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_ids.first(),
            "pad_token_id": self.pad_token_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_smollm_style_config() {
        let json = r#"{"model_type":"llama","vocab_size":49152,"hidden_size":576,"intermediate_size":1536,
            "num_hidden_layers":30,"num_attention_heads":9,"num_key_value_heads":3,"rms_norm_eps":1e-5,
            "rope_parameters":{"rope_theta":100000.0,"rope_type":"default"},"tie_word_embeddings":true,
            "bos_token_id":1,"eos_token_id":2,"hidden_act":"silu"}"#;
        let c = LlamaConfig::from_json(Path::new("config.json"), json).unwrap();
        assert_eq!(c.head_dim, 64);
        assert_eq!(c.rope_theta, 100000.0);
        assert!(c.tie_word_embeddings && !c.qkv_bias);
        assert_eq!(c.eos_token_ids, vec![2]);
    }

    #[test]
    fn qwen2_has_qkv_biases_and_unknown_types_are_named() {
        let json = r#"{"model_type":"qwen2","vocab_size":10,"hidden_size":8,"intermediate_size":16,
            "num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,"eos_token_id":[3,4]}"#;
        let c = LlamaConfig::from_json(Path::new("c.json"), json).unwrap();
        assert!(c.qkv_bias && !c.o_bias);
        assert_eq!(c.eos_token_ids, vec![3, 4]);
        let err = LlamaConfig::from_json(Path::new("c.json"), &json.replace("qwen2", "gpt_neox")).unwrap_err();
        assert!(err.to_string().contains("gpt_neox"), "{err}");
        let err = LlamaConfig::from_json(Path::new("c.json"), &json.replace("\"num_key_value_heads\":1", "\"num_key_value_heads\":3")).unwrap_err();
        assert!(err.to_string().contains("num_key_value_heads"), "{err}");
    }
}

#[cfg(test)]
mod gguf_tests {
    use super::*;
    use crate::gguf::{GgufValue, GgufWriter};
    use crate::llm_tokenizer::LlmTokenizer;

    fn metadata(arch: &str, tokenizer_model: &str) -> GgufFile {
        with_block_count(arch, tokenizer_model, GgufValue::U32(1))
    }

    fn with_block_count(arch: &str, tokenizer_model: &str, block_count: GgufValue) -> GgufFile {
        let mut w = GgufWriter::new();
        let u32v = GgufValue::U32;
        w.metadata("general.architecture", GgufValue::String(arch.into()))
            .metadata(&format!("{arch}.embedding_length"), u32v(8))
            .metadata(&format!("{arch}.feed_forward_length"), u32v(16))
            .metadata(&format!("{arch}.block_count"), block_count)
            .metadata(&format!("{arch}.attention.head_count"), u32v(2))
            .metadata(&format!("{arch}.attention.head_count_kv"), u32v(1))
            .metadata(&format!("{arch}.attention.layer_norm_rms_epsilon"), GgufValue::F32(1e-5))
            .metadata("tokenizer.ggml.model", GgufValue::String(tokenizer_model.into()))
            .metadata(
                "tokenizer.ggml.tokens",
                GgufValue::Array(["a", "b", "ab"].iter().map(|t| GgufValue::String((*t).into())).collect()),
            )
            .metadata("tokenizer.ggml.merges", GgufValue::Array(vec![GgufValue::String("a b".into())]))
            .tensor_f32("token_embd.weight", &[3, 8], &[0.0; 24]);
        GgufFile::parse(Path::new("m.gguf"), w.to_bytes()).unwrap()
    }

    #[test]
    fn architecture_and_tokenizer_from_gguf_metadata() {
        let file = metadata("llama", "gpt2");
        let config = LlamaConfig::from_gguf(&file).unwrap();
        assert_eq!((config.hidden_size, config.num_key_value_heads, config.head_dim, config.vocab_size), (8, 1, 4, 3));
        assert!(config.tie_word_embeddings, "no output.weight: tied head");
        let tokenizer = LlmTokenizer::from_gguf(&file).unwrap();
        assert_eq!(tokenizer.encode("ab", false).unwrap(), vec![2]);
    }

    #[test]
    fn a_block_count_the_file_cannot_hold_is_refused() {
        let err = LlamaConfig::from_gguf(&with_block_count("llama", "gpt2", GgufValue::U64(1 << 40))).unwrap_err().to_string();
        assert!(err.contains("m.gguf") && err.contains("block_count is 1099511627776 but the file has 1 tensors"), "{err}");
        let err = LlamaConfig::from_gguf(&with_block_count("llama", "gpt2", GgufValue::U32(0))).unwrap_err().to_string();
        assert!(err.contains("num_hidden_layers must be at least 1"), "{err}");
    }

    #[test]
    fn unknown_architecture_and_tokenizer_model_are_named() {
        let err = LlamaConfig::from_gguf(&metadata("falcon", "gpt2")).unwrap_err().to_string();
        assert!(err.contains("falcon") && err.contains("llama"), "{err}");
        let err = LlmTokenizer::from_gguf(&metadata("llama", "llama")).unwrap_err().to_string();
        assert!(err.contains("\"llama\"") && err.contains("tokenizer.json"), "{err}");
    }
}
