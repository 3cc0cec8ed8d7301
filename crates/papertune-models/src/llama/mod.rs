//! The Llama-family decoder (Touvron et al., 2023) as SmolLM2, Mistral, Qwen2, Qwen3 and Gemma 3 use
//! it: token embedding, then `num_hidden_layers` pre-norm blocks of
//! `h = x + Attention(RMSNorm(x))`, `y = h + SwiGLU(RMSNorm(h))`, a final RMSNorm and a language
//! model head (tied to the embedding or separate).
//!
//! Gemma 3 (Gemma Team, 2025) is the same outline with the switches of [`LlamaConfig`] set:
//! embeddings scaled by `sqrt(hidden)`, an RMSNorm on each query and key head, RMSNorms on the
//! sublayers' outputs as well (`h = x + RMSNorm(Attention(RMSNorm(x)))`), GELU (tanh form) in
//! the gated feed-forward, and five sliding-window layers (their own RoPE base) per global one.
//! Qwen3 is Llama with the RMSNorm on each query and key head alone.
//!
//! Attention is grouped-query: `num_attention_heads` query heads share `num_key_value_heads`
//! key/value heads, with rotary position embeddings (the "rotate half" form Hugging Face uses)
//! applied to queries and keys, and a causal mask. Without a KV cache (training, scoring) the
//! attention is one fused causal operation ([`papertune_kernels::causal_attention`]); over a
//! cache, products and a softmax with the mask built on the host. Every projection is a
//! [`LoraLinear`], so adapters attach by module path (`model.layers.3.self_attn.q_proj`).
//!
//! Weights come from Hugging Face safetensors (names as in transformers' `LlamaForCausalLM`) or
//! from GGUF, whose names and Q/K row order [`crate::gguf::llama_checkpoint`] maps back to
//! Hugging Face's on load.

use burn::module::{Module, Param};
use burn::nn::Embedding;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use papertune_kernels as kernels;

use crate::checkpoint::Checkpoint;
use crate::error::{ModelError, Result};
use crate::gguf::QuantizedWeights;
use crate::lora::{LoraLinear, LoraModel, QuantizedLinear};
use crate::mask::masked_bias;
use crate::weights::{TensorReader, TensorWriter};

mod config;

pub use config::{HiddenAct, LayerAttention, LlamaConfig};

/// Root-mean-square layer norm: `x / sqrt(mean(x^2) + eps) * weight`.
#[derive(Module, Debug)]
pub struct RmsNorm {
    pub weight: Param<Tensor<1>>,
    pub eps: f64,
}

impl RmsNorm {
    /// `[.., d]` -> `[.., d]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        kernels::rms_norm(x, self.weight.val(), self.eps)
    }
}

/// Rotary position embedding tables for one forward pass: `cos`, `sin` of `[batch, 1, seq, head_dim]`.
#[derive(Debug, Clone)]
pub struct Rotary {
    cos: Tensor<4>,
    sin: Tensor<4>,
}

impl Rotary {
    /// Angles `position * theta^(-2i / head_dim) / divisors[i]` (no divisors: plain RoPE),
    /// duplicated over both halves of the head.
    pub fn new(
        positions: &[Vec<i64>],
        head_dim: usize,
        theta: f64,
        divisors: &[f32],
        device: &Device,
    ) -> Self {
        let batch = positions.len();
        let seq = positions.first().map_or(0, Vec::len);
        let half = head_dim / 2;
        let divisor = |i: usize| divisors.get(i).map_or(1.0, |&d| f64::from(d));
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| (1.0 / theta.powf(2.0 * i as f64 / head_dim as f64) / divisor(i)) as f32)
            .collect();
        let mut cos = Vec::with_capacity(batch * seq * head_dim);
        let mut sin = Vec::with_capacity(batch * seq * head_dim);
        for row in positions {
            for &p in row {
                for _ in 0..2 {
                    for &f in &inv_freq {
                        let angle = p as f32 * f;
                        cos.push(angle.cos());
                        sin.push(angle.sin());
                    }
                }
            }
        }
        let shape = [batch, 1, seq, head_dim];
        Self {
            cos: Tensor::from_data(TensorData::new(cos, shape), device),
            sin: Tensor::from_data(TensorData::new(sin, shape), device),
        }
    }

    /// `x [batch, heads, seq, head_dim]` rotated: `x cos + rotate_half(x) sin`.
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        kernels::rotary(x, self.cos.clone(), self.sin.clone())
    }
}

/// One layer's cached keys and values: buffers of `[batch, kv_heads, capacity, head_dim]`
/// whose first `len` positions are filled. New positions are written into the buffers in place
/// (the buffers are owned by the cache alone between steps), so a decoding step does not copy
/// the positions before it; a buffer that fills up doubles.
#[derive(Debug, Clone)]
pub struct LayerCache {
    key: Tensor<4>,
    value: Tensor<4>,
    len: usize,
}

impl LayerCache {
    /// Appends `key` and `value` (`[batch, kv_heads, seq, head_dim]`) and returns the keys and
    /// values of every cached position, `[batch, kv_heads, len, head_dim]` each (views of the
    /// buffers).
    fn append(
        slot: &mut Option<Self>,
        key: Tensor<4>,
        value: Tensor<4>,
        capacity: usize,
    ) -> (Tensor<4>, Tensor<4>) {
        let [batch, kv_heads, seq, head_dim] = key.dims();
        let mut entry = slot.take().unwrap_or_else(|| {
            // Two separate buffers: a shared one would be copied by the first write.
            let shape = [batch, kv_heads, capacity.max(seq), head_dim];
            Self {
                key: Tensor::zeros(shape, &key.device()),
                value: Tensor::zeros(shape, &key.device()),
                len: 0,
            }
        });
        let [cached_batch, cached_heads, available, cached_dim] = entry.key.dims();
        assert_eq!(
            [cached_batch, cached_heads, cached_dim],
            [batch, kv_heads, head_dim],
            "KV cache holds [batch, kv_heads, head_dim] {:?}, new keys are {:?} (call select_rows when sequences leave the batch)",
            [cached_batch, cached_heads, cached_dim],
            [batch, kv_heads, head_dim]
        );
        let end = entry.len + seq;
        if end > available {
            let grown = end.max(2 * available);
            let extra =
                Tensor::zeros([batch, kv_heads, grown - available, head_dim], &key.device());
            entry.key = Tensor::cat(vec![entry.key, extra.clone()], 2);
            entry.value = Tensor::cat(vec![entry.value, extra], 2);
        }
        let range = [0..batch, 0..kv_heads, entry.len..end, 0..head_dim];
        entry.key = entry.key.slice_assign(range.clone(), key);
        entry.value = entry.value.slice_assign(range, value);
        entry.len = end;
        let filled = (entry.key.clone().narrow(2, 0, end), entry.value.clone().narrow(2, 0, end));
        *slot = Some(entry);
        filled
    }
}

/// Keys and values of earlier positions, per layer.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<LayerCache>>,
    /// Positions the buffers are first allocated for.
    capacity: usize,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        Self::with_capacity(num_layers, 0)
    }

    /// A cache whose buffers hold `positions` positions before they need to grow (the prompt
    /// length plus the tokens to generate).
    pub fn with_capacity(num_layers: usize, positions: usize) -> Self {
        Self { layers: vec![None; num_layers], capacity: positions }
    }

    /// Positions already cached.
    pub fn len(&self) -> usize {
        self.layers.first().and_then(|l| l.as_ref()).map_or(0, |entry| entry.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps only the given batch rows (e.g. after some sequences finished).
    pub fn select_rows(&mut self, rows: Tensor<1, Int>) {
        for entry in self.layers.iter_mut().flatten() {
            entry.key = entry.key.clone().select(0, rows.clone());
            entry.value = entry.value.clone().select(0, rows.clone());
        }
    }
}

/// Grouped-query self-attention with rotary embeddings.
#[derive(Module, Debug)]
pub struct LlamaAttention {
    pub q_proj: LoraLinear,
    pub k_proj: LoraLinear,
    pub v_proj: LoraLinear,
    pub o_proj: LoraLinear,
    /// RMSNorm over each query head, before the rotary embedding (Gemma 3, Qwen3).
    pub q_norm: Option<RmsNorm>,
    /// RMSNorm over each key head, before the rotary embedding.
    pub k_norm: Option<RmsNorm>,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// The scores' scale, `1 / sqrt(head_dim)` unless the architecture says otherwise.
    pub scale: f64,
    /// Attends to a sliding window (the input's local mask and rotary tables).
    pub sliding: bool,
}

impl LlamaAttention {
    /// `x [batch, seq, hidden]` -> `[batch, seq, hidden]`
    pub fn forward(&self, x: Tensor<3>, rotary: &Rotary, attend: Attend<'_>) -> Tensor<3> {
        let [batch, seq, _] = x.dims();
        let (heads, kv_heads, head_dim) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let group = heads / kv_heads;
        let head_norm = |norm: &Option<RmsNorm>, t: Tensor<4>| match norm {
            Some(norm) => norm.forward(t),
            None => t,
        };
        let query = self.q_proj.forward(x.clone()).reshape([batch, seq, heads, head_dim]);
        let key = self.k_proj.forward(x.clone()).reshape([batch, seq, kv_heads, head_dim]);
        let query = head_norm(&self.q_norm, query).swap_dims(1, 2);
        let key = head_norm(&self.k_norm, key).swap_dims(1, 2);
        let value =
            self.v_proj.forward(x).reshape([batch, seq, kv_heads, head_dim]).swap_dims(1, 2);
        let query = rotary.apply(query); // [batch, heads, seq, head_dim]
        let key = rotary.apply(key); // [batch, kv_heads, seq, head_dim]
        let (mask_bias, slot, capacity) = match attend {
            Attend::Causal { key_bias, window } => {
                // Without a cache, one causal attention on the projections' layout, the
                // key/value heads shared in place.
                let heads_second = |t: Tensor<4>| t.swap_dims(1, 2); // [batch, seq, heads, head_dim]
                let context = kernels::causal_attention(
                    heads_second(query),
                    heads_second(key),
                    heads_second(value),
                    key_bias,
                    self.scale,
                    window,
                );
                return self.o_proj.forward(context.reshape([batch, seq, heads * head_dim]));
            }
            Attend::OverCache { bias, slot, capacity } => (bias, slot, capacity),
        };
        let (key, value) = LayerCache::append(slot, key, value, capacity); // [batch, kv_heads, past + seq, head_dim]
        let total = key.dims()[2];

        // The `group` query heads that share a key/value head are stacked along the sequence
        // axis, so that K and V are used as they are instead of being repeated per head.
        let query = query.reshape([batch, kv_heads, group * seq, head_dim]);
        let mask_bias = mask_bias.repeat_dim(2, group); // [batch, 1, group * seq, total]
        let scale = self.scale;
        // The scale goes on the query, smaller than the scores when total > head_dim.
        let scores =
            kernels::batched_matmul(query.mul_scalar(scale), key.swap_dims(2, 3)) + mask_bias; // [batch, kv_heads, group * seq, total]
        let probs = kernels::softmax_last(scores);
        let context = kernels::batched_matmul(probs, value); // [batch, kv_heads, group * seq, head_dim]
        let context = context.reshape([batch, heads, seq, head_dim]).swap_dims(1, 2).reshape([
            batch,
            seq,
            heads * head_dim,
        ]);
        debug_assert!(total >= seq);
        self.o_proj.forward(context)
    }
}

/// The gated feed-forward layer: `down(act(gate(x)) * up(x))`, SwiGLU with SiLU, GeGLU with
/// GELU.
#[derive(Module, Debug)]
pub struct LlamaMlp {
    pub gate_proj: LoraLinear,
    pub up_proj: LoraLinear,
    pub down_proj: LoraLinear,
    /// GELU (tanh form) instead of SiLU.
    pub gelu: bool,
}

impl LlamaMlp {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = self.gate_proj.forward(x.clone());
        let up = self.up_proj.forward(x);
        let gated =
            if self.gelu { kernels::geglu_tanh(gate, up) } else { kernels::swiglu(gate, up) };
        self.down_proj.forward(gated)
    }
}

/// One pre-norm decoder block. The norms are named by their place (as llama.cpp names them);
/// [`norm_names`] gives the Hugging Face names, which differ between Llama and Gemma.
#[derive(Module, Debug)]
pub struct LlamaLayer {
    /// Before attention.
    pub attn_norm: RmsNorm,
    pub self_attn: LlamaAttention,
    /// On the attention's output, before the residual sum (Gemma's sandwich norms).
    pub attn_post_norm: Option<RmsNorm>,
    /// Before the feed-forward layer.
    pub ffn_norm: RmsNorm,
    pub mlp: LlamaMlp,
    /// On the feed-forward's output, before the residual sum.
    pub ffn_post_norm: Option<RmsNorm>,
}

/// The Hugging Face names of a layer's four norms: before attention, after it, before the
/// feed-forward layer, after it (the second and fourth only with sandwich norms).
pub fn norm_names(config: &LlamaConfig) -> [&'static str; 4] {
    if config.sandwich_norms {
        [
            "input_layernorm",
            "post_attention_layernorm",
            "pre_feedforward_layernorm",
            "post_feedforward_layernorm",
        ]
    } else {
        ["input_layernorm", "", "post_attention_layernorm", ""]
    }
}

impl LlamaLayer {
    pub fn forward(&self, x: Tensor<3>, rotary: &Rotary, attend: Attend<'_>) -> Tensor<3> {
        let post = |norm: &Option<RmsNorm>, t: Tensor<3>| match norm {
            Some(norm) => norm.forward(t),
            None => t,
        };
        let attended = self.self_attn.forward(self.attn_norm.forward(x.clone()), rotary, attend);
        let h = x + post(&self.attn_post_norm, attended);
        let fed = self.mlp.forward(self.ffn_norm.forward(h.clone()));
        h + post(&self.ffn_post_norm, fed)
    }
}

/// How a decoder encodes positions: the rotary embedding's width and base, and for
/// sliding-window layers their window and base.
#[derive(Debug, Clone, PartialEq)]
pub struct PositionEncoding {
    pub head_dim: usize,
    pub rope_theta: f64,
    /// What each rotary frequency is divided by (Llama 3.1); empty for plain RoPE.
    pub rope_freq_divisors: Vec<f32>,
    /// `(window, rope_theta)` of the sliding-window layers.
    pub sliding: Option<(usize, f64)>,
}

/// What the queries of one layer attend to.
#[derive(Debug)]
pub enum Attend<'a> {
    /// The new positions alone (no cache): the fused causal attention, with the padding
    /// masked by `key_bias [batch, seq]` and, in a sliding-window layer, its `window`.
    Causal { key_bias: Tensor<2>, window: Option<usize> },
    /// The cached positions and the new ones, which are appended to `slot`; `bias
    /// [batch, 1, seq, past + seq]` is 0 where a query may attend, a large negative number where
    /// not (later positions, padding, outside the window).
    OverCache { bias: Tensor<4>, slot: &'a mut Option<LayerCache>, capacity: usize },
}

/// The rotary tables and window of the sliding-window layers.
#[derive(Debug, Clone)]
pub struct SlidingInput {
    pub rotary: Rotary,
    /// Keys at most `window - 1` positions before a query are seen.
    pub window: usize,
}

/// Token ids with their positions and attention mask, for one forward pass.
#[derive(Debug, Clone)]
pub struct DecoderInput {
    /// `[batch, seq]`
    pub input_ids: Tensor<2, Int>,
    /// Rotary tables for the positions of these tokens.
    pub rotary: Rotary,
    /// Additive padding mask `[batch, past + seq]`: 0 for real tokens, a large negative number
    /// for padding (the causal part and the window are added where attention needs them).
    pub key_bias: Tensor<2>,
    /// For models with sliding-window layers.
    pub sliding: Option<SlidingInput>,
}

impl DecoderInput {
    /// Builds ids, positions and the padding mask on the host.
    ///
    /// `ids` are `[batch][seq]` new tokens; `attention_mask` is `[batch][past + seq]` over the
    /// cached and new tokens (1 real, 0 padding). Positions count real tokens only, so left
    /// padding does not shift them (as Hugging Face computes them from the mask). The sliding
    /// window is counted in cache slots, as Hugging Face does.
    pub fn new(
        ids: &[Vec<u32>],
        attention_mask: &[Vec<u8>],
        encoding: &PositionEncoding,
        device: &Device,
    ) -> Self {
        let batch = ids.len();
        let seq = ids.first().map_or(0, Vec::len);
        let total = attention_mask.first().map_or(seq, Vec::len);
        let past = total - seq;
        let masked = masked_bias(device.settings().float_dtype.into());
        let mut positions = Vec::with_capacity(batch);
        let key_bias: Vec<f32> =
            attention_mask.iter().flatten().map(|&m| if m == 1 { 0.0 } else { masked }).collect();
        for mask in attention_mask {
            let mut count = 0i64;
            let mut row_positions = Vec::with_capacity(total);
            for &m in mask {
                row_positions.push((count - 1 + i64::from(m)).max(0));
                count += i64::from(m);
            }
            positions.push(row_positions[past..].to_vec());
        }
        let flat: Vec<i64> = ids.iter().flatten().map(|&i| i64::from(i)).collect();
        let rotary = Rotary::new(
            &positions,
            encoding.head_dim,
            encoding.rope_theta,
            &encoding.rope_freq_divisors,
            device,
        );
        let sliding = encoding.sliding.map(|(window, theta)| SlidingInput {
            window,
            rotary: if theta == encoding.rope_theta {
                rotary.clone()
            } else {
                Rotary::new(
                    &positions,
                    encoding.head_dim,
                    theta,
                    &encoding.rope_freq_divisors,
                    device,
                )
            },
        });
        Self {
            input_ids: Tensor::from_data(TensorData::new(flat, [batch, seq]), device),
            rotary,
            key_bias: Tensor::from_data(TensorData::new(key_bias, [batch, total]), device),
            sliding,
        }
    }

    /// The additive mask of attention over a KV cache, `[batch, 1, seq, past + seq]`: the
    /// padding of `key_bias`, and a large negative number where a key comes after the query or,
    /// with a `window`, `window` or more positions before it (counted in cache slots).
    fn over_cache_bias(&self, window: Option<usize>) -> Tensor<4> {
        let [batch, seq] = self.input_ids.dims();
        let [_, total] = self.key_bias.dims();
        let past = total - seq;
        let device = self.key_bias.device();
        let closed: Vec<bool> = (0..seq)
            .flat_map(|q| {
                let q_abs = past + q;
                (0..total).map(move |k| k > q_abs || window.is_some_and(|w| q_abs - k >= w))
            })
            .collect();
        let closed =
            Tensor::<4, Bool>::from_data(TensorData::new(closed, [1, 1, seq, total]), &device)
                .expand([batch, 1, seq, total]);
        let masked = masked_bias(device.settings().float_dtype.into());
        self.key_bias
            .clone()
            .reshape([batch, 1, 1, total])
            .expand([batch, 1, seq, total])
            .mask_fill(closed, masked)
    }
}

/// A Llama-family causal language model.
#[derive(Module, Debug)]
pub struct LlamaModel {
    /// The token embedding in f32; `None` when the lookup reads the tied head's quantised
    /// blocks (`quantized_head`) instead.
    pub embed_tokens: Option<Embedding>,
    pub layers: Vec<LlamaLayer>,
    pub norm: RmsNorm,
    /// `None` when the head is tied to `embed_tokens`.
    pub lm_head: Option<LoraLinear>,
    /// The tied head: `embed_tokens`' weight transposed once into a contiguous `[hidden, vocab]`
    /// copy (frozen), so that computing logits does not re-layout 28M values at every call.
    pub tied_head: Option<Param<Tensor<2>>>,
    /// The tied head kept in the token embedding's quantised blocks (GGUF, quantised loading),
    /// in place of `tied_head`; the embedding lookup decodes its rows too.
    pub quantized_head: Option<QuantizedLinear>,
    pub head_dim: usize,
    pub rope_theta: f64,
    /// What each rotary frequency is divided by (Llama 3.1); empty for plain RoPE.
    pub rope_freq_divisors: Vec<f32>,
    /// The sliding-window layers' window and RoPE base.
    pub sliding: Option<(usize, f64)>,
    /// Embeddings are multiplied by this (Gemma: `sqrt(hidden)`).
    pub embedding_scale: Option<f64>,
}

impl LlamaModel {
    /// Builds the model from a checkpoint with Hugging Face tensor names, taking out what it uses.
    pub fn load(
        config: &LlamaConfig,
        checkpoint: &mut Checkpoint,
        device: &Device,
    ) -> Result<Self> {
        Self::load_with_quantized(config, checkpoint, &mut QuantizedWeights::new(), device)
    }

    /// As [`LlamaModel::load`], with the linear layers in `quantized` (and a tied head under
    /// `lm_head.weight`) kept in their blocks; they are taken out of the map.
    pub fn load_with_quantized(
        config: &LlamaConfig,
        checkpoint: &mut Checkpoint,
        quantized: &mut QuantizedWeights,
        device: &Device,
    ) -> Result<Self> {
        let c = config;
        let path = checkpoint.path.clone();
        if c.norm_unit_offset {
            // Gemma's checkpoints hold `w` of `x̂ (1 + w)`; the model holds `1 + w`.
            checkpoint.offset_tensors("norm.weight", 1.0);
        }
        let mut reader = TensorReader::new(checkpoint, device);
        let r = &mut reader;
        let norm = |r: &mut TensorReader<'_>, name: &str, width: usize| -> Result<RmsNorm> {
            Ok(RmsNorm {
                weight: Param::from_tensor(r.tensor(&format!("{name}.weight"), [width])?),
                eps: c.rms_norm_eps,
            })
        };
        let mut linear = |r: &mut TensorReader<'_>,
                          name: &str,
                          d_in: usize,
                          d_out: usize,
                          bias: bool|
         -> Result<LoraLinear> {
            let Some(weight) = quantized.remove(&format!("{name}.weight")) else {
                return Ok(LoraLinear::new(r.linear(name, d_in, d_out, bias)?));
            };
            if (weight.rows, weight.cols) != (d_out, d_in) {
                return Err(ModelError::ShapeMismatch {
                    path: path.clone(),
                    name: format!("{name}.weight"),
                    expected: vec![d_out, d_in],
                    found: vec![weight.rows, weight.cols],
                });
            }
            let bias = if bias { Some(r.tensor(&format!("{name}.bias"), [d_out])?) } else { None };
            Ok(LoraLinear::quantized(weight, bias))
        };
        let (q_width, kv_width) =
            (c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim);
        let [attn_norm, attn_post_norm, ffn_norm, ffn_post_norm] = norm_names(c);
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let head_norm = |r: &mut TensorReader<'_>, name: &str| -> Result<Option<RmsNorm>> {
                c.qk_norm.then(|| norm(r, &format!("{p}.self_attn.{name}"), c.head_dim)).transpose()
            };
            let sandwich = |r: &mut TensorReader<'_>, name: &str| -> Result<Option<RmsNorm>> {
                c.sandwich_norms.then(|| norm(r, &format!("{p}.{name}"), c.hidden_size)).transpose()
            };
            layers.push(LlamaLayer {
                attn_norm: norm(r, &format!("{p}.{attn_norm}"), c.hidden_size)?,
                self_attn: LlamaAttention {
                    q_proj: linear(
                        r,
                        &format!("{p}.self_attn.q_proj"),
                        c.hidden_size,
                        q_width,
                        c.qkv_bias,
                    )?,
                    k_proj: linear(
                        r,
                        &format!("{p}.self_attn.k_proj"),
                        c.hidden_size,
                        kv_width,
                        c.qkv_bias,
                    )?,
                    v_proj: linear(
                        r,
                        &format!("{p}.self_attn.v_proj"),
                        c.hidden_size,
                        kv_width,
                        c.qkv_bias,
                    )?,
                    o_proj: linear(
                        r,
                        &format!("{p}.self_attn.o_proj"),
                        q_width,
                        c.hidden_size,
                        c.o_bias,
                    )?,
                    q_norm: head_norm(r, "q_norm")?,
                    k_norm: head_norm(r, "k_norm")?,
                    num_heads: c.num_attention_heads,
                    num_kv_heads: c.num_key_value_heads,
                    head_dim: c.head_dim,
                    scale: c.attention_scale(),
                    sliding: c.is_sliding(i),
                },
                attn_post_norm: sandwich(r, attn_post_norm)?,
                ffn_norm: norm(r, &format!("{p}.{ffn_norm}"), c.hidden_size)?,
                mlp: LlamaMlp {
                    gate_proj: linear(
                        r,
                        &format!("{p}.mlp.gate_proj"),
                        c.hidden_size,
                        c.intermediate_size,
                        false,
                    )?,
                    up_proj: linear(
                        r,
                        &format!("{p}.mlp.up_proj"),
                        c.hidden_size,
                        c.intermediate_size,
                        false,
                    )?,
                    down_proj: linear(
                        r,
                        &format!("{p}.mlp.down_proj"),
                        c.intermediate_size,
                        c.hidden_size,
                        false,
                    )?,
                    gelu: c.hidden_act == HiddenAct::GeluTanh,
                },
                ffn_post_norm: sandwich(r, ffn_post_norm)?,
            });
        }
        let norm = norm(r, "model.norm", c.hidden_size)?;
        let lm_head = if c.tie_word_embeddings {
            // Some tied checkpoints still store the head; it must equal the embedding.
            if r.contains("lm_head.weight") {
                r.tensor::<2>("lm_head.weight", [c.vocab_size, c.hidden_size])?;
            }
            None
        } else {
            Some(linear(r, "lm_head", c.hidden_size, c.vocab_size, false)?)
        };
        let quantized_head =
            match quantized.remove("lm_head.weight").filter(|_| c.tie_word_embeddings) {
                Some(weight) if (weight.rows, weight.cols) != (c.vocab_size, c.hidden_size) => {
                    return Err(ModelError::ShapeMismatch {
                        path,
                        name: "model.embed_tokens.weight".into(),
                        expected: vec![c.vocab_size, c.hidden_size],
                        found: vec![weight.rows, weight.cols],
                    });
                }
                Some(weight) => Some(QuantizedLinear { weight, bias: None }),
                None => None,
            };
        let embed_tokens = match quantized_head {
            Some(_) => None,
            None => Some(r.embedding("model.embed_tokens", c.vocab_size, c.hidden_size)?),
        };
        let tied_head = match (&embed_tokens, c.tie_word_embeddings) {
            (Some(embedding), true) => {
                let transposed = crate::weights::to_host(embedding.weight.val()).transposed();
                Some(
                    Param::from_tensor(crate::weights::to_device(transposed, r.device()))
                        .set_require_grad(false),
                )
            }
            _ => None,
        };
        Ok(Self {
            embed_tokens,
            layers,
            norm,
            lm_head,
            tied_head,
            quantized_head,
            head_dim: c.head_dim,
            rope_theta: c.rope_theta,
            rope_freq_divisors: c.rope_freq_divisors.clone(),
            sliding: c
                .sliding_window
                .map(|window| (window, c.rope_local_theta.unwrap_or(c.rope_theta))),
            embedding_scale: c.scale_embeddings.then(|| (c.hidden_size as f64).sqrt()),
        })
    }

    /// Tensors a checkpoint may hold that the model does not need.
    pub fn ignorable_tensors() -> &'static [&'static str] {
        &["rotary_emb.inv_freq"]
    }

    /// Writes the weights (adapters merged or not, as they are) under Hugging Face names, the
    /// norms as `config` stores them.
    pub fn export(&self, config: &LlamaConfig, writer: &mut TensorWriter) {
        let norm = |writer: &mut TensorWriter, name: &str, norm: &RmsNorm| {
            let weight = norm.weight.val();
            writer.tensor(
                &format!("{name}.weight"),
                if config.norm_unit_offset { weight.sub_scalar(1.0) } else { weight },
            );
        };
        let [attn_norm, attn_post_norm, ffn_norm, ffn_post_norm] = norm_names(config);
        match (&self.embed_tokens, &self.quantized_head) {
            (Some(embedding), _) => writer.embedding("model.embed_tokens", embedding),
            (None, Some(head)) => {
                let weight = &head.weight;
                let values = TensorData::new(weight.dequantize(), [weight.rows, weight.cols]);
                writer.tensor(
                    "model.embed_tokens.weight",
                    Tensor::<2>::from_data(values, &self.device()),
                );
            }
            (None, None) => unreachable!("a model is built with an embedding"),
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            norm(writer, &format!("{p}.{attn_norm}"), &layer.attn_norm);
            norm(writer, &format!("{p}.{ffn_norm}"), &layer.ffn_norm);
            if let (Some(before), Some(after)) = (&layer.attn_post_norm, &layer.ffn_post_norm) {
                norm(writer, &format!("{p}.{attn_post_norm}"), before);
                norm(writer, &format!("{p}.{ffn_post_norm}"), after);
            }
            let a = &layer.self_attn;
            if let (Some(q), Some(k)) = (&a.q_norm, &a.k_norm) {
                norm(writer, &format!("{p}.self_attn.q_norm"), q);
                norm(writer, &format!("{p}.self_attn.k_norm"), k);
            }
            for (name, l) in [
                ("q_proj", &a.q_proj),
                ("k_proj", &a.k_proj),
                ("v_proj", &a.v_proj),
                ("o_proj", &a.o_proj),
            ] {
                writer.linear(&format!("{p}.self_attn.{name}"), &l.f32_base(&self.device()));
            }
            let m = &layer.mlp;
            for (name, l) in
                [("gate_proj", &m.gate_proj), ("up_proj", &m.up_proj), ("down_proj", &m.down_proj)]
            {
                writer.linear(&format!("{p}.mlp.{name}"), &l.f32_base(&self.device()));
            }
        }
        norm(writer, "model.norm", &self.norm);
        if let Some(head) = &self.lm_head {
            writer.linear("lm_head", &head.f32_base(&self.device()));
        }
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    pub fn vocab_size(&self) -> usize {
        match (&self.embed_tokens, &self.quantized_head) {
            (Some(embedding), _) => embedding.weight.dims()[0],
            (None, Some(head)) => head.weight.rows,
            (None, None) => 0,
        }
    }

    pub fn device(&self) -> Device {
        self.norm.weight.device()
    }

    /// The token embeddings of `ids [batch, seq]`: `[batch, seq, hidden]`, from the f32 table or
    /// decoded from the tied head's blocks, row by row.
    fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let embedding = match (&self.embed_tokens, &self.quantized_head) {
            (Some(embedding), _) => return embedding.forward(ids),
            (None, Some(head)) => &head.weight,
            (None, None) => unreachable!("a model is built with an embedding"),
        };
        let [batch, seq] = ids.dims();
        let ids: Vec<i64> =
            ids.into_data().convert::<i64>().try_to_vec::<i64>().unwrap_or_default();
        let (cols, row_bytes) = (embedding.cols, embedding.row_bytes());
        let mut values = vec![0.0f32; ids.len() * cols];
        for (&id, out) in ids.iter().zip(values.chunks_exact_mut(cols)) {
            // Ids come from a tokenizer checked against the vocabulary; any other row reads zeros.
            if let Some(row) = usize::try_from(id).ok().filter(|&r| r < embedding.rows) {
                papertune_kernels::quant::dequantize_into(
                    embedding.ty,
                    &embedding.bytes[row * row_bytes..(row + 1) * row_bytes],
                    out,
                );
            }
        }
        Tensor::from_data(TensorData::new(values, [batch, seq, cols]), &self.device())
    }

    /// Host-side input for `ids` with `attention_mask` over cached + new tokens.
    pub fn input(&self, ids: &[Vec<u32>], attention_mask: &[Vec<u8>]) -> DecoderInput {
        DecoderInput::new(ids, attention_mask, &self.position_encoding(), &self.device())
    }

    /// The rotary bases and sliding window this model was built with.
    pub fn position_encoding(&self) -> PositionEncoding {
        PositionEncoding {
            head_dim: self.head_dim,
            rope_theta: self.rope_theta,
            rope_freq_divisors: self.rope_freq_divisors.clone(),
            sliding: self.sliding,
        }
    }

    /// Final hidden states (after the last norm): `[batch, seq, hidden]`. With a cache, the
    /// new keys and values are appended to it.
    pub fn forward_hidden(
        &self,
        input: DecoderInput,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        // Over a cache, the masks of the global and the sliding-window layers, once a pass.
        let over_cache = cache.is_some().then(|| {
            (
                input.over_cache_bias(None),
                input.sliding.as_ref().map(|s| input.over_cache_bias(Some(s.window))),
            )
        });
        let mut hidden = self.embed(input.input_ids); // [batch, seq, hidden]
        if let Some(scale) = self.embedding_scale {
            // In the float type of the activations, as Gemma's reference computes it.
            hidden = hidden.mul_scalar(scale as f32);
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let local = input.sliding.as_ref().filter(|_| layer.self_attn.sliding);
            let rotary = local.map_or(&input.rotary, |s| &s.rotary);
            let window = local.map(|s| s.window);
            let attend = match (cache.as_deref_mut(), &over_cache) {
                (Some(c), Some((global, local_bias))) => {
                    if c.layers.len() <= i {
                        c.layers.resize(i + 1, None);
                    }
                    let bias =
                        local_bias.as_ref().filter(|_| window.is_some()).unwrap_or(global).clone();
                    Attend::OverCache { bias, slot: &mut c.layers[i], capacity: c.capacity }
                }
                _ => Attend::Causal { key_bias: input.key_bias.clone(), window },
            };
            hidden = layer.forward(hidden, rotary, attend);
        }
        self.norm.forward(hidden)
    }

    /// Next-token logits from hidden states: `[.., hidden]` -> `[.., vocab]`.
    pub fn logits<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D> {
        if let (None, Some(head)) = (&self.lm_head, &self.quantized_head) {
            return kernels::quantized_linear(hidden, &head.weight, None);
        }
        match (&self.lm_head, &self.tied_head) {
            (Some(head), _) => head.forward(hidden),
            (None, Some(weight)) => kernels::linear(hidden, weight.val(), None),
            // The embedding [vocab, hidden] read as [hidden, vocab] through a transposed view.
            (None, None) => match &self.embed_tokens {
                Some(embedding) => {
                    kernels::linear(hidden, embedding.weight.val().transpose(), None)
                }
                None => unreachable!("a model without an f32 embedding has a quantised head"),
            },
        }
    }

    /// Logits for every position: `[batch, seq, vocab]`.
    pub fn forward(&self, input: DecoderInput, cache: Option<&mut KvCache>) -> Tensor<3> {
        let hidden = self.forward_hidden(input, cache);
        self.logits(hidden)
    }
}

impl LoraModel for LlamaModel {
    fn lora_linears(&self) -> Vec<(String, bool, &LoraLinear)> {
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let a = &layer.self_attn;
            let m = &layer.mlp;
            for (name, l) in [
                ("self_attn.q_proj", &a.q_proj),
                ("self_attn.k_proj", &a.k_proj),
                ("self_attn.v_proj", &a.v_proj),
                ("self_attn.o_proj", &a.o_proj),
                ("mlp.gate_proj", &m.gate_proj),
                ("mlp.up_proj", &m.up_proj),
                ("mlp.down_proj", &m.down_proj),
            ] {
                out.push((format!("model.layers.{i}.{name}"), false, l));
            }
        }
        if let Some(head) = &self.lm_head {
            out.push(("lm_head".into(), true, head));
        }
        out
    }

    fn lora_linears_mut(&mut self) -> Vec<(String, bool, &mut LoraLinear)> {
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let a = &mut layer.self_attn;
            let m = &mut layer.mlp;
            for (name, l) in [
                ("self_attn.q_proj", &mut a.q_proj),
                ("self_attn.k_proj", &mut a.k_proj),
                ("self_attn.v_proj", &mut a.v_proj),
                ("self_attn.o_proj", &mut a.o_proj),
                ("mlp.gate_proj", &mut m.gate_proj),
                ("mlp.up_proj", &mut m.up_proj),
                ("mlp.down_proj", &mut m.down_proj),
            ] {
                out.push((format!("model.layers.{i}.{name}"), false, l));
            }
        }
        if let Some(head) = &mut self.lm_head {
            out.push(("lm_head".into(), true, head));
        }
        out
    }
}

#[cfg(test)]
mod quantized_tests {
    use std::path::Path;
    use std::sync::Arc;

    use burn::tensor::Device;
    use papertune_kernels::quant::{QuantMatrix, QuantType};

    use super::*;
    use crate::checkpoint::HostTensor;
    use crate::gguf::{GgufFile, GgufWriter};
    use crate::lora::LoraConfig;

    /// The tiny model twice: its projections in Q8_0 blocks, and the blocks' values in f32.
    fn twins(device: &Device) -> (LlamaModel, LlamaModel) {
        let config = LlamaConfig::tiny();
        let mut exact = crate::init::random_llama_checkpoint(&config, 7);
        let mut rest = crate::init::random_llama_checkpoint(&config, 7);
        let mut quantized = QuantizedWeights::new();
        let names: Vec<String> =
            rest.names().filter(|n| n.ends_with("_proj.weight")).map(str::to_owned).collect();
        for name in names {
            let tensor = rest.remove(&name).unwrap();
            let (rows, cols) = (tensor.shape[0], tensor.shape[1]);
            let mut writer = GgufWriter::new();
            writer.tensor_q8_0("w", &[rows, cols], &tensor.data);
            let file = GgufFile::parse(Path::new("w.gguf"), writer.to_bytes()).unwrap();
            let matrix = QuantMatrix::new(
                QuantType::Q8_0,
                rows,
                cols,
                file.raw(&file.tensors[0]).unwrap().to_vec(),
            )
            .unwrap();
            exact.insert(name.clone(), HostTensor::new(vec![rows, cols], matrix.dequantize()));
            quantized.insert(name, Arc::new(matrix));
        }
        let exact = LlamaModel::load(&config, &mut exact, device).unwrap();
        let quantised =
            LlamaModel::load_with_quantized(&config, &mut rest, &mut quantized, device).unwrap();
        assert!(quantized.is_empty() && quantised.layers[1].mlp.down_proj.quantized.is_some());
        (exact, quantised)
    }

    /// Every adapter's `A` and `B` gradients of `sum(logits * ramp)` over `batch` sequences of
    /// `seq` tokens, with `B` set away from zero so that the gradients reach earlier layers
    /// through the later ones' frozen weights.
    fn adapter_gradients(model: LlamaModel, batch: usize, seq: usize) -> Vec<f32> {
        let config = LoraConfig {
            target_modules: vec!["all-linear".into()],
            dropout: 0.0,
            ..LoraConfig::default()
        };
        let mut model = model.attach_lora(&config).unwrap();
        for (i, (_, _, linear)) in model.lora_linears_mut().into_iter().enumerate() {
            let lora = linear.lora.as_mut().unwrap();
            let [r, out] = lora.b.dims();
            let values: Vec<f32> =
                (0..r * out).map(|j| ((j * 7 + i * 3) % 11) as f32 / 110.0 - 0.05).collect();
            lora.b = Param::from_tensor(Tensor::from_data(
                TensorData::new(values, [r, out]),
                &lora.b.device(),
            ));
        }
        let ids: Vec<Vec<u32>> = (0..batch)
            .map(|b| (0..seq).map(|t| ((b * 5 + t * 3) % 60) as u32 + 3).collect())
            .collect();
        let input = model.input(&ids, &vec![vec![1; seq]; batch]);
        let logits = model.forward(input, None); // [batch, seq, vocab]
        let ramp = Tensor::<3>::from_data(
            TensorData::new(
                (0..logits.dims().iter().product::<usize>())
                    .map(|i| (i % 13) as f32 / 13.0)
                    .collect::<Vec<_>>(),
                logits.dims(),
            ),
            &logits.device(),
        );
        let grads = (logits * ramp).sum().backward();
        let mut out = Vec::new();
        for (_, _, linear) in model.lora_linears() {
            let lora = linear.lora.as_ref().unwrap();
            for grad in [lora.a.grad(&grads).unwrap(), lora.b.grad(&grads).unwrap()] {
                out.extend(grad.into_data().convert::<f32>().try_into_vec::<f32>().unwrap());
            }
        }
        out
    }

    /// A LoRA step on the quantised base gives the adapters the gradients of the decoded model:
    /// to f32 rounding when the products decode bands of the weight (more than 16 rows), and
    /// within the 8-bit rounding of the activations when few rows take the integer path
    /// (`quant::q8_error_bound`; the backward pass `dy W` always decodes).
    #[test]
    fn lora_gradients_reach_through_the_quantised_base() {
        let device = Device::flex().autodiff();
        for (batch, seq, tolerance) in [(2, 12, 1e-4), (1, 4, 3e-2)] {
            let (exact, quantised) = twins(&device);
            let (a, b) =
                (adapter_gradients(exact, batch, seq), adapter_gradients(quantised, batch, seq));
            let scale = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!(scale > 0.0);
            let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            assert!(
                worst <= tolerance * scale,
                "{batch}x{seq} rows: largest difference {worst}, largest gradient {scale}"
            );
        }
    }
}
