//! The shape of a Llama-family causal LM (Llama, SmolLM2, Mistral-style, Qwen2, Gemma 3), read
//! from a Hugging Face `config.json` or from GGUF metadata.
//!
//! The architectures differ in a handful of switches rather than in code: the feed-forward
//! activation, norms on the q/k heads, norms on the sublayers' outputs ("sandwich" norms), the
//! embedding scale, the attention scale, and which layers attend to a sliding window with which
//! RoPE base. A new member of the family is a new set of values here.

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
    /// The gated feed-forward's activation.
    #[serde(default)]
    pub hidden_act: HiddenAct,
    /// An RMSNorm over each query and key head before the rotary embedding (Gemma 3, Qwen3).
    #[serde(default)]
    pub qk_norm: bool,
    /// RMSNorms on the attention and feed-forward outputs too, before each residual sum
    /// (Gemma 2 and 3).
    #[serde(default)]
    pub sandwich_norms: bool,
    /// Hugging Face checkpoints store the RMSNorm scales as offsets from 1 (`x̂ (1 + w)`, Gemma);
    /// the model holds `1 + w`, as GGUF files do.
    #[serde(default)]
    pub norm_unit_offset: bool,
    /// Token embeddings are multiplied by `sqrt(hidden_size)` (Gemma).
    #[serde(default)]
    pub scale_embeddings: bool,
    /// Attention scores are scaled by `query_pre_attn_scalar^(-1/2)`; `None` means `head_dim`.
    #[serde(default)]
    pub query_pre_attn_scalar: Option<f64>,
    /// Per layer, whether it attends to every earlier position or to a sliding window; empty
    /// when every layer is global.
    #[serde(default)]
    pub layer_types: Vec<LayerAttention>,
    /// The window of the sliding-window layers, in positions (the query's own included).
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// The RoPE base of the sliding-window layers, when it differs from `rope_theta` (Gemma 3:
    /// 10,000 locally, 1,000,000 globally).
    #[serde(default)]
    pub rope_local_theta: Option<f64>,
    /// Llama 3.1's RoPE scaling, as `config.json` gives it (`rope_type = "llama3"`).
    #[serde(default)]
    pub rope_llama3: Option<Llama3Rope>,
    /// Per rotary frequency (`head_dim / 2` of them), what its frequency is divided by: from
    /// `rope_llama3`, or a GGUF file's `rope_freqs.weight`; empty for plain RoPE.
    #[serde(default)]
    pub rope_freq_divisors: Vec<f32>,
}

/// Llama 3.1's rescaling of the rotary frequencies for long contexts: frequencies whose
/// wavelength exceeds `original_max_position_embeddings / low_freq_factor` are divided by
/// `factor`, those whose wavelength is under `original_max_position_embeddings /
/// high_freq_factor` are kept, and the ones between move smoothly from one to the other.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Llama3Rope {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: f64,
}

impl Llama3Rope {
    /// Reads the parameters from a `rope_scaling` / `rope_parameters` object.
    fn from_json(value: &serde_json::Value) -> std::result::Result<Self, String> {
        let number = |name: &str| {
            value
                .get(name)
                .and_then(|v| v.as_f64())
                .filter(|v| *v > 0.0 && v.is_finite())
                .ok_or_else(|| format!("llama3 RoPE scaling needs a positive {name}"))
        };
        let rope = Self {
            factor: number("factor")?,
            low_freq_factor: number("low_freq_factor")?,
            high_freq_factor: number("high_freq_factor")?,
            original_max_position_embeddings: number("original_max_position_embeddings")?,
        };
        if rope.high_freq_factor <= rope.low_freq_factor {
            return Err(format!(
                "llama3 RoPE scaling needs high_freq_factor ({}) above low_freq_factor ({})",
                rope.high_freq_factor, rope.low_freq_factor
            ));
        }
        Ok(rope)
    }

    /// The divisor of each of the `head_dim / 2` frequencies of base `theta`.
    pub fn divisors(&self, head_dim: usize, theta: f64) -> Vec<f32> {
        let long = self.original_max_position_embeddings / self.low_freq_factor; // wavelengths beyond: divided by factor
        let short = self.original_max_position_embeddings / self.high_freq_factor; // below: kept
        (0..head_dim / 2)
            .map(|i| {
                let frequency = theta.powf(-2.0 * i as f64 / head_dim as f64);
                let wavelength = 2.0 * std::f64::consts::PI / frequency;
                let divisor = if wavelength < short {
                    1.0
                } else if wavelength > long {
                    self.factor
                } else {
                    // The share of the kept frequency, 0 at `long` and 1 at `short`.
                    let kept = (self.original_max_position_embeddings / wavelength
                        - self.low_freq_factor)
                        / (self.high_freq_factor - self.low_freq_factor);
                    1.0 / ((1.0 - kept) / self.factor + kept)
                };
                divisor as f32
            })
            .collect()
    }

    fn to_json(self, theta: f64) -> serde_json::Value {
        serde_json::json!({
            "rope_type": "llama3",
            "rope_theta": theta,
            "factor": self.factor,
            "low_freq_factor": self.low_freq_factor,
            "high_freq_factor": self.high_freq_factor,
            "original_max_position_embeddings": self.original_max_position_embeddings.round() as u64,
        })
    }
}

/// The activation of the gated feed-forward layer `down(act(gate(x)) * up(x))`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HiddenAct {
    /// SiLU (SwiGLU): Llama, Mistral, Qwen.
    #[default]
    Silu,
    /// GELU in its tanh approximation (GeGLU): Gemma, as `gelu_pytorch_tanh`.
    #[serde(rename = "gelu_pytorch_tanh")]
    GeluTanh,
}

/// What one layer attends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerAttention {
    /// Every earlier position.
    #[serde(rename = "full_attention")]
    Full,
    /// The last `sliding_window` positions.
    #[serde(rename = "sliding_attention")]
    Sliding,
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
    /// Gemma's name for `hidden_act`.
    hidden_activation: Option<String>,
    query_pre_attn_scalar: Option<f64>,
    sliding_window: Option<usize>,
    layer_types: Option<Vec<LayerAttention>>,
    /// Gemma 2 and 3 (1B and up) cap logits with tanh; papertune does not.
    final_logit_softcapping: Option<f64>,
    attn_logit_softcapping: Option<f64>,
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

const SUPPORTED: &[&str] = &["llama", "mistral", "qwen2", "qwen3", "gemma3_text"];
/// GGUF's `general.architecture` values papertune reads.
const SUPPORTED_GGUF: &[&str] = &["llama", "mistral", "qwen2", "qwen3", "gemma3"];
/// Gemma 3 alternates five sliding-window layers with one global layer.
const GEMMA3_SLIDING_PATTERN: usize = 6;
/// The RoPE base of Gemma 3's sliding-window layers.
const GEMMA3_LOCAL_ROPE_THETA: f64 = 10_000.0;

impl LlamaConfig {
    /// Reads a Hugging Face `config.json`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        Self::from_json(path, &text)
    }

    /// Parses `config.json` text; `path` names it in errors.
    pub fn from_json(path: &Path, text: &str) -> Result<Self> {
        let bad = |message: String| ModelError::Config { path: path.to_path_buf(), message };
        let raw: HfLlamaConfig = serde_json::from_str(text)
            .map_err(|e| bad(format!("not a Llama-family config: {e}")))?;
        let model_type = raw.model_type.unwrap_or_else(|| "llama".into());
        if !SUPPORTED.contains(&model_type.as_str()) {
            return Err(bad(format!(
                "model_type {model_type:?} is not supported; supported: {}",
                SUPPORTED.join(", ")
            )));
        }
        let is_gemma = model_type == "gemma3_text";
        let hidden_act = match raw.hidden_activation.as_deref().or(raw.hidden_act.as_deref()) {
            None => {
                if is_gemma {
                    HiddenAct::GeluTanh
                } else {
                    HiddenAct::Silu
                }
            }
            Some("silu") => HiddenAct::Silu,
            Some("gelu_pytorch_tanh") => HiddenAct::GeluTanh,
            Some(act) => {
                return Err(bad(format!(
                    "hidden_act {act:?} is not supported (silu and gelu_pytorch_tanh are)"
                )));
            }
        };
        if raw.mlp_bias {
            return Err(bad("mlp_bias = true is not supported".into()));
        }
        for (name, cap) in [
            ("final_logit_softcapping", raw.final_logit_softcapping),
            ("attn_logit_softcapping", raw.attn_logit_softcapping),
        ] {
            if let Some(cap) = cap {
                return Err(bad(format!("{name} = {cap} is not supported (logit soft-capping)")));
            }
        }
        // transformers 5 nests the RoPE options, per layer type where the types differ.
        let rope_of = |kind: &str| {
            raw.rope_parameters.as_ref().and_then(|p| p.get(kind)).filter(|v| v.is_object())
        };
        let (global_rope, local_rope) = match rope_of("full_attention") {
            Some(full) => (Some(full), rope_of("sliding_attention")),
            None => (raw.rope_parameters.as_ref(), None),
        };
        let rope_type = |v: &serde_json::Value| {
            v.get("rope_type").or_else(|| v.get("type")).and_then(|t| t.as_str()).map(str::to_owned)
        };
        let mut rope_llama3 = None;
        for scaling in [raw.rope_scaling.as_ref(), global_rope, local_rope].into_iter().flatten() {
            match rope_type(scaling).as_deref() {
                None | Some("default") => {}
                Some("llama3") if !is_gemma => {
                    rope_llama3 = Some(Llama3Rope::from_json(scaling).map_err(bad)?)
                }
                Some(kind) => {
                    return Err(bad(format!(
                        "RoPE scaling {kind:?} is not supported (the default RoPE and llama3's are)"
                    )));
                }
            }
        }
        let theta_of = |v: Option<&serde_json::Value>| {
            v.and_then(|p| p.get("rope_theta")).and_then(|t| t.as_f64())
        };
        let rope_theta = raw.rope_theta.or_else(|| theta_of(global_rope)).unwrap_or(10_000.0);
        let rope_local_theta = theta_of(local_rope).filter(|&t| t != rope_theta);
        let eos_token_ids = match raw.eos_token_id {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Number(n)) => {
                n.as_u64().map(|v| vec![v as u32]).unwrap_or_default()
            }
            Some(serde_json::Value::Array(items)) => {
                items.iter().filter_map(|v| v.as_u64()).map(|v| v as u32).collect()
            }
            Some(other) => {
                return Err(bad(format!("eos_token_id {other} is neither a number nor a list")));
            }
        };
        let is_qwen2 = model_type == "qwen2";
        let layer_types = raw.layer_types.unwrap_or_default();
        let head_dim = raw.head_dim.unwrap_or(raw.hidden_size / raw.num_attention_heads.max(1));
        let config = Self {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            num_key_value_heads: raw.num_key_value_heads.unwrap_or(raw.num_attention_heads),
            head_dim,
            rope_theta,
            rms_norm_eps: raw.rms_norm_eps,
            max_position_embeddings: raw.max_position_embeddings,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(is_qwen2 || is_gemma),
            qkv_bias: is_qwen2 || raw.attention_bias,
            o_bias: !is_qwen2 && raw.attention_bias,
            bos_token_id: raw.bos_token_id,
            eos_token_ids,
            pad_token_id: raw.pad_token_id,
            hidden_act,
            // Qwen3 normalises each query and key head as Gemma 3 does (weights used as they are).
            qk_norm: is_gemma || model_type == "qwen3",
            sandwich_norms: is_gemma,
            norm_unit_offset: is_gemma,
            scale_embeddings: is_gemma,
            query_pre_attn_scalar: raw.query_pre_attn_scalar,
            sliding_window: raw
                .sliding_window
                .filter(|_| layer_types.contains(&LayerAttention::Sliding)),
            layer_types,
            rope_local_theta,
            rope_freq_divisors: rope_llama3
                .map(|r| r.divisors(head_dim, rope_theta))
                .unwrap_or_default(),
            rope_llama3,
            model_type,
        };
        config.validate().map_err(bad)?;
        Ok(config)
    }

    /// Reads the architecture from GGUF metadata (`general.architecture` and its `<arch>.*`
    /// keys); whether the head is tied is told by the absence of `output.weight`.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let arch = file.get_str("general.architecture")?.to_owned();
        let bad = |message: String| ModelError::Config { path: file.path.clone(), message };
        if !SUPPORTED_GGUF.contains(&arch.as_str()) {
            return Err(bad(format!(
                "GGUF architecture {arch:?} is not supported; supported: {}",
                SUPPORTED_GGUF.join(", ")
            )));
        }
        let key = |name: &str| format!("{arch}.{name}");
        let usize_of = |name: &str| file.get_u64(&key(name)).map(|v| v as usize);
        let optional =
            |name: &str| file.get(&key(name)).and_then(|v| v.as_u64()).map(|v| v as usize);
        let hidden_size = usize_of("embedding_length")?;
        let num_attention_heads = usize_of("attention.head_count")?;
        let num_hidden_layers = usize_of("block_count")?;
        // Every block has its tensors: a count the file cannot hold is refused before any
        // allocation follows it.
        if num_hidden_layers > file.tensors.len() {
            return Err(bad(format!(
                "block_count is {num_hidden_layers} but the file has {} tensors",
                file.tensors.len()
            )));
        }
        let vocab_size = match optional("vocab_size") {
            Some(v) => v,
            None => file.get_strings("tokenizer.ggml.tokens")?.len(),
        };
        let head_dim =
            optional("attention.key_length").unwrap_or(hidden_size / num_attention_heads.max(1));
        let token = |name: &str| {
            file.get(&format!("tokenizer.ggml.{name}")).and_then(|v| v.as_u64()).map(|v| v as u32)
        };
        let has = |name: &str| file.tensor_info(name).is_some();
        let is_gemma = arch == "gemma3";
        // Llama 3.1's scaled rotary frequencies travel as a tensor of divisors.
        let rope_freq_divisors = match file.tensor_info("rope_freqs.weight") {
            Some(info) => file.dequantize(info)?.data,
            None => Vec::new(),
        };
        // llama.cpp names no layer pattern in Gemma 3's metadata: five sliding-window layers,
        // then a global one.
        let sliding_window = optional("attention.sliding_window").filter(|_| is_gemma);
        let layer_types = match sliding_window {
            Some(_) => (0..num_hidden_layers)
                .map(|i| {
                    if (i + 1) % GEMMA3_SLIDING_PATTERN == 0 {
                        LayerAttention::Full
                    } else {
                        LayerAttention::Sliding
                    }
                })
                .collect(),
            None => Vec::new(),
        };
        let config = Self {
            vocab_size,
            hidden_size,
            intermediate_size: usize_of("feed_forward_length")?,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads: optional("attention.head_count_kv").unwrap_or(num_attention_heads),
            head_dim,
            rope_theta: file
                .get(&key("rope.freq_base"))
                .and_then(|v| v.as_f64())
                .unwrap_or(10_000.0),
            rms_norm_eps: file.get_f64(&key("attention.layer_norm_rms_epsilon"))?,
            max_position_embeddings: optional("context_length").unwrap_or(2048),
            tie_word_embeddings: !has("output.weight"),
            qkv_bias: has("blk.0.attn_q.bias"),
            o_bias: has("blk.0.attn_output.bias"),
            bos_token_id: token("bos_token_id"),
            eos_token_ids: token("eos_token_id").into_iter().collect(),
            pad_token_id: token("padding_token_id"),
            hidden_act: if is_gemma { HiddenAct::GeluTanh } else { HiddenAct::Silu },
            qk_norm: has("blk.0.attn_q_norm.weight"),
            sandwich_norms: has("blk.0.post_attention_norm.weight"),
            norm_unit_offset: is_gemma,
            scale_embeddings: is_gemma,
            query_pre_attn_scalar: None,
            sliding_window,
            layer_types,
            rope_local_theta: sliding_window.map(|_| GEMMA3_LOCAL_ROPE_THETA),
            rope_llama3: None,
            rope_freq_divisors,
            model_type: if is_gemma { "gemma3_text".into() } else { arch },
        };
        config.validate().map_err(bad)?;
        Ok(config)
    }

    /// Whether layer `i` attends to a sliding window.
    pub fn is_sliding(&self, layer: usize) -> bool {
        self.layer_types.get(layer) == Some(&LayerAttention::Sliding)
    }

    /// The attention scores' scale.
    pub fn attention_scale(&self) -> f64 {
        1.0 / self.query_pre_attn_scalar.unwrap_or(self.head_dim as f64).sqrt()
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
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return Err(format!(
                "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!("head_dim {} must be even for rotary embeddings", self.head_dim));
        }
        if !self.rope_freq_divisors.is_empty() && self.rope_freq_divisors.len() != self.head_dim / 2
        {
            return Err(format!(
                "rope_freqs holds {} values; head_dim {} has {} rotary frequencies",
                self.rope_freq_divisors.len(),
                self.head_dim,
                self.head_dim / 2
            ));
        }
        if let Some(bad) = self.rope_freq_divisors.iter().find(|d| !(**d > 0.0 && d.is_finite())) {
            return Err(format!("rope_freqs must hold positive numbers, found {bad}"));
        }
        if !self.layer_types.is_empty() && self.layer_types.len() != self.num_hidden_layers {
            return Err(format!(
                "layer_types lists {} layers but num_hidden_layers is {}",
                self.layer_types.len(),
                self.num_hidden_layers
            ));
        }
        if self.layer_types.contains(&LayerAttention::Sliding)
            && self.sliding_window.is_none_or(|w| w == 0)
        {
            return Err("sliding_attention layers need a sliding_window of at least 1".into());
        }
        if let Some(scalar) = self.query_pre_attn_scalar.filter(|s| !(*s > 0.0 && s.is_finite())) {
            return Err(format!("query_pre_attn_scalar must be positive, found {scalar}"));
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
            hidden_act: HiddenAct::Silu,
            qk_norm: false,
            sandwich_norms: false,
            norm_unit_offset: false,
            scale_embeddings: false,
            query_pre_attn_scalar: None,
            layer_types: Vec::new(),
            sliding_window: None,
            rope_local_theta: None,
            rope_llama3: None,
            rope_freq_divisors: Vec::new(),
        }
    }

    /// A tiny Gemma 3-shaped configuration for tests: q/k norms, sandwich norms, GeGLU, scaled
    /// embeddings, and sliding-window layers (window 4) around a global one.
    pub fn tiny_gemma3() -> Self {
        Self {
            model_type: "gemma3_text".into(),
            num_hidden_layers: 3,
            num_key_value_heads: 1,
            hidden_act: HiddenAct::GeluTanh,
            qk_norm: true,
            sandwich_norms: true,
            norm_unit_offset: true,
            scale_embeddings: true,
            query_pre_attn_scalar: Some(16.0),
            layer_types: vec![
                LayerAttention::Sliding,
                LayerAttention::Full,
                LayerAttention::Sliding,
            ],
            sliding_window: Some(4),
            rope_theta: 1_000_000.0,
            rope_local_theta: Some(10_000.0),
            rms_norm_eps: 1e-6,
            ..Self::tiny()
        }
    }

    /// Whether [`LlamaConfig::to_hf_json`] can say everything this architecture does: a GGUF
    /// file gives Llama 3.1's scaled rotary frequencies as divisors (`rope_freqs.weight`), not
    /// as the `rope_scaling` parameters `config.json` needs.
    pub fn hf_expressible(&self) -> std::result::Result<(), String> {
        if !self.rope_freq_divisors.is_empty() && self.rope_llama3.is_none() {
            return Err("the rotary frequencies are rescaled by the GGUF file's rope_freqs.weight, which config.json cannot express \
                        without llama3's rope_scaling parameters; export as GGUF instead (--format gguf)"
                .into());
        }
        Ok(())
    }

    /// Writes `config.json` in Hugging Face's layout.
    pub fn to_hf_json(&self) -> serde_json::Value {
        let architecture = match self.model_type.as_str() {
            "qwen2" => "Qwen2ForCausalLM",
            "qwen3" => "Qwen3ForCausalLM",
            "gemma3_text" => "Gemma3ForCausalLM",
            _ => "LlamaForCausalLM",
        };
        let hidden_act = match self.hidden_act {
            HiddenAct::Silu => "silu",
            HiddenAct::GeluTanh => "gelu_pytorch_tanh",
        };
        let mut json = serde_json::json!({
            "architectures": [architecture],
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
            "hidden_act": hidden_act,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_ids.first(),
            "pad_token_id": self.pad_token_id,
        });
        if let (Some(rope), Some(object)) = (self.rope_llama3, json.as_object_mut()) {
            object.insert("rope_scaling".into(), rope.to_json(self.rope_theta));
        }
        if self.model_type == "gemma3_text" {
            let rope =
                |theta: f64| serde_json::json!({"rope_type": "default", "rope_theta": theta});
            let extra = serde_json::json!({
                "hidden_activation": hidden_act,
                // transformers' config class takes an integer here.
                "query_pre_attn_scalar": self.query_pre_attn_scalar.unwrap_or(self.head_dim as f64).round() as u64,
                "sliding_window": self.sliding_window,
                "layer_types": self.layer_types,
                "rope_parameters": {
                    "full_attention": rope(self.rope_theta),
                    "sliding_attention": rope(self.rope_local_theta.unwrap_or(self.rope_theta)),
                },
                "final_logit_softcapping": null,
                "attn_logit_softcapping": null,
            });
            if let (Some(object), serde_json::Value::Object(extra)) = (json.as_object_mut(), extra)
            {
                object.remove("rope_theta");
                object.extend(extra);
            }
        }
        json
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
        let err = LlamaConfig::from_json(Path::new("c.json"), &json.replace("qwen2", "gpt_neox"))
            .unwrap_err();
        assert!(err.to_string().contains("gpt_neox"), "{err}");
        let err = LlamaConfig::from_json(
            Path::new("c.json"),
            &json.replace("\"num_key_value_heads\":1", "\"num_key_value_heads\":3"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("num_key_value_heads"), "{err}");
    }

    /// Llama 3.1's RoPE scaling from `config.json`: the divisors of the four frequencies of a
    /// head of 8 (kept, blended, divided twice), and the parameters written back; divisors
    /// without parameters (from a GGUF file) cannot go into `config.json`.
    #[test]
    fn llama3_rope_scaling_divides_the_long_wavelengths() {
        let json = r#"{"model_type":"llama","vocab_size":10,"hidden_size":32,"intermediate_size":16,"num_hidden_layers":1,
            "num_attention_heads":4,"rope_parameters":{"rope_type":"llama3","rope_theta":10000.0,"factor":8.0,
            "low_freq_factor":1.0,"high_freq_factor":8.0,"original_max_position_embeddings":64}}"#;
        let c = LlamaConfig::from_json(Path::new("c.json"), json).unwrap();
        let d = &c.rope_freq_divisors;
        assert_eq!(d.len(), 4);
        assert_eq!((d[0], d[2], d[3]), (1.0, 8.0, 8.0));
        // Wavelength 20π: a share (64 / 20π - 1) / 7 of the frequency is kept.
        let kept = (64.0 / (20.0 * std::f64::consts::PI) - 1.0) / 7.0;
        assert!((f64::from(d[1]) - 1.0 / ((1.0 - kept) / 8.0 + kept)).abs() < 1e-5, "{d:?}");
        assert_eq!(c.to_hf_json()["rope_scaling"]["rope_type"], "llama3");
        assert_eq!(
            LlamaConfig::from_json(Path::new("c.json"), &c.to_hf_json().to_string())
                .unwrap()
                .rope_freq_divisors,
            c.rope_freq_divisors
        );
        assert!(c.hf_expressible().is_ok());
        let from_gguf = LlamaConfig { rope_llama3: None, ..c };
        assert!(from_gguf.hf_expressible().unwrap_err().contains("rope_freqs"));
        let err = LlamaConfig::from_json(
            Path::new("c.json"),
            &json.replace("\"high_freq_factor\":8.0", "\"high_freq_factor\":0.5"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("high_freq_factor"), "{err}");
        let err = LlamaConfig::from_json(Path::new("c.json"), &json.replace("llama3", "yarn"))
            .unwrap_err();
        assert!(err.to_string().contains("yarn"), "{err}");
    }

    /// Qwen3's config: q/k norms, no biases unless `attention_bias`, an explicit head size.
    #[test]
    fn qwen3_normalises_queries_and_keys() {
        let json = r#"{"model_type":"qwen3","vocab_size":10,"hidden_size":8,"intermediate_size":16,"head_dim":8,
            "num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,"tie_word_embeddings":true}"#;
        let c = LlamaConfig::from_json(Path::new("c.json"), json).unwrap();
        assert!(c.qk_norm && !c.qkv_bias && !c.o_bias && !c.norm_unit_offset && !c.sandwich_norms);
        assert_eq!(c.head_dim, 8);
        let c = LlamaConfig::from_json(
            Path::new("c.json"),
            &json.replace("\"head_dim\":8", "\"head_dim\":8,\"attention_bias\":true"),
        )
        .unwrap();
        assert!(c.qkv_bias && c.o_bias);
        assert_eq!(c.to_hf_json()["architectures"][0], "Qwen3ForCausalLM");
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
                GgufValue::Array(
                    ["a", "b", "ab"].iter().map(|t| GgufValue::String((*t).into())).collect(),
                ),
            )
            .metadata(
                "tokenizer.ggml.merges",
                GgufValue::Array(vec![GgufValue::String("a b".into())]),
            )
            .tensor_f32("token_embd.weight", &[3, 8], &[0.0; 24]);
        GgufFile::parse(Path::new("m.gguf"), w.to_bytes()).unwrap()
    }

    #[test]
    fn architecture_and_tokenizer_from_gguf_metadata() {
        let file = metadata("llama", "gpt2");
        let config = LlamaConfig::from_gguf(&file).unwrap();
        assert_eq!(
            (config.hidden_size, config.num_key_value_heads, config.head_dim, config.vocab_size),
            (8, 1, 4, 3)
        );
        assert!(config.tie_word_embeddings, "no output.weight: tied head");
        let tokenizer = LlmTokenizer::from_gguf(&file).unwrap();
        assert_eq!(tokenizer.encode("ab", false).unwrap(), vec![2]);
    }

    #[test]
    fn a_block_count_the_file_cannot_hold_is_refused() {
        let err =
            LlamaConfig::from_gguf(&with_block_count("llama", "gpt2", GgufValue::U64(1 << 40)))
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("m.gguf")
                && err.contains("block_count is 1099511627776 but the file has 1 tensors"),
            "{err}"
        );
        let err = LlamaConfig::from_gguf(&with_block_count("llama", "gpt2", GgufValue::U32(0)))
            .unwrap_err()
            .to_string();
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
