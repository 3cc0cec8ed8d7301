//! BERT-family encoder: BERT (Devlin et al., 2019), RoBERTa (Liu et al., 2019), MiniLM.
//!
//! Post-LN transformer encoder. Each layer computes
//! `h = LN(x + Attn(x))`, `y = LN(h + W2·act(W1·h))`; the pooler is `tanh(W·h_[CLS] + b)`.
//! Field names follow the Hugging Face checkpoint so that the name map stays readable.

use burn::module::Module;
use burn::nn::{Embedding, Linear};
use burn::tensor::activation::{gelu_approximate, relu, tanh};
use burn::tensor::{Device, Int, Tensor};

use papertune_kernels as kernels;
use papertune_kernels::dropout::Dropout;

use crate::checkpoint::Checkpoint;
use crate::error::{ModelError, Result};
use crate::layer_norm::LayerNorm;
use crate::weights::{TensorReader, TensorWriter};

mod config;

pub use config::{BertConfig, BertFlavor};

/// Model input: token ids, segment ids and the padding mask, all `[batch, seq]`.
#[derive(Debug, Clone)]
pub struct BertInput {
    pub input_ids: Tensor<2, Int>,
    pub token_type_ids: Tensor<2, Int>,
    /// 1.0 for real tokens, 0.0 for padding.
    pub attention_mask: Tensor<2>,
}

/// Encoder output.
#[derive(Debug, Clone)]
pub struct BertOutput {
    /// `[batch, seq, hidden]`
    pub last_hidden_state: Tensor<3>,
    /// `[batch, hidden]`: `tanh(W·h_[CLS] + b)`, when the checkpoint has a pooler.
    pub pooler_output: Option<Tensor<2>>,
}

/// Hidden activation of the feed-forward block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HiddenAct {
    /// Exact GELU, `x·Φ(x)`.
    Gelu,
    /// Tanh approximation of GELU.
    GeluTanh,
    Relu,
}

impl HiddenAct {
    fn from_name(name: &str) -> Self {
        match name {
            "gelu_new" | "gelu_pytorch_tanh" => Self::GeluTanh,
            "relu" => Self::Relu,
            _ => Self::Gelu,
        }
    }

    fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Self::Gelu => kernels::gelu(x),
            Self::GeluTanh => gelu_approximate(x),
            Self::Relu => relu(x),
        }
    }
}

/// Token, position and segment embeddings, summed and normalised.
#[derive(Module, Debug)]
pub struct BertEmbeddings {
    pub word_embeddings: Embedding,
    pub position_embeddings: Embedding,
    pub token_type_embeddings: Embedding,
    pub layer_norm: LayerNorm,
    pub dropout: Dropout,
    /// First position id: 0 for BERT, `pad_token_id + 1` for RoBERTa.
    pub position_offset: usize,
}

impl BertEmbeddings {
    /// `[batch, seq]` ids -> `[batch, seq, hidden]`
    pub fn forward(&self, input_ids: Tensor<2, Int>, token_type_ids: Tensor<2, Int>) -> Tensor<3> {
        let [batch, seq] = input_ids.dims();
        let device = input_ids.device();
        let start = self.position_offset as i64;
        // Right-padded batches: real tokens sit at positions offset..offset+len, as in HF's
        // RoBERTa position ids; padded slots are masked out of attention, so their ids do not matter.
        let position_ids = Tensor::<1, Int>::arange(start..start + seq as i64, &device)
            .unsqueeze::<2>()
            .expand([batch, seq]);
        let embeddings = self.word_embeddings.forward(input_ids)
            + self.position_embeddings.forward(position_ids)
            + self.token_type_embeddings.forward(token_type_ids);
        self.dropout.forward(self.layer_norm.forward(embeddings))
    }
}

/// Multi-head scaled dot-product self-attention.
#[derive(Module, Debug)]
pub struct BertSelfAttention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub dropout: Dropout,
    pub num_heads: usize,
    pub head_dim: usize,
}

impl BertSelfAttention {
    /// `hidden [batch, seq, hidden]`, `mask_bias [batch, 1, 1, seq]` -> `[batch, seq, hidden]`
    pub fn forward(&self, hidden: Tensor<3>, mask_bias: Tensor<4>) -> Tensor<3> {
        self.forward_queries(hidden.clone(), hidden, mask_bias)
    }

    /// Attention of the positions in `queries [batch, seq_q, hidden]` over all of `hidden
    /// [batch, seq, hidden]` (the keys and values); `-> [batch, seq_q, hidden]`.
    pub fn forward_queries(
        &self,
        queries: Tensor<3>,
        hidden: Tensor<3>,
        mask_bias: Tensor<4>,
    ) -> Tensor<3> {
        let [batch, seq, width] = hidden.dims();
        let seq_q = queries.dims()[1];
        let split_heads = |x: Tensor<3>| {
            let rows = x.dims()[1];
            x.reshape([batch, rows, self.num_heads, self.head_dim])
        };
        let query = split_heads(kernels::linear_layer(&self.query, queries)); // [batch, seq_q, heads, head_dim]
        let key = split_heads(kernels::linear_layer(&self.key, hidden.clone())); // [batch, seq, heads, head_dim]
        let value = split_heads(kernels::linear_layer(&self.value, hidden));

        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let key_bias = mask_bias.reshape([batch, seq]);
        let device = query.device();
        let context = if device.is_autodiff() {
            // Training: one tracked operation that draws the dropout mask of the probabilities
            // itself and computes them again in its backward pass instead of keeping them.
            let (dropout, seed) = self.dropout.next_mask(&device).unwrap_or((0.0, 0));
            kernels::attention_dropout(query, key, value, key_bias, scale, dropout, seed) // [batch, seq_q, heads, head_dim]
        } else {
            // Inference: one attention operation that never writes the whole
            // [batch, heads, seq_q, seq] score tensor out (dropout is off anyway).
            kernels::attention_key_bias(query, key, value, key_bias, scale) // [batch, seq_q, heads, head_dim]
        };
        context.reshape([batch, seq_q, width])
    }
}

/// Projection after attention or feed-forward, with dropout, residual and LayerNorm.
#[derive(Module, Debug)]
pub struct BertResidualOutput {
    pub dense: Linear,
    pub layer_norm: LayerNorm,
    pub dropout: Dropout,
}

impl BertResidualOutput {
    pub fn forward(&self, hidden: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        if !self.dropout.is_active(&hidden.device()) {
            // No dropout between the product and the residual: the bias, the residual and the
            // normalisation in one pass.
            let norm = &self.layer_norm;
            return kernels::linear_residual_layer_norm(
                &self.dense,
                hidden,
                residual,
                norm.gamma.val(),
                norm.beta.val(),
                norm.epsilon,
            );
        }
        let projected = self.dropout.forward(kernels::linear_layer(&self.dense, hidden));
        self.layer_norm.forward(projected + residual)
    }
}

/// Attention block: self-attention and its residual output.
#[derive(Module, Debug)]
pub struct BertAttention {
    pub self_attention: BertSelfAttention,
    pub output: BertResidualOutput,
}

/// One encoder layer.
#[derive(Module, Debug)]
pub struct BertLayer {
    pub attention: BertAttention,
    /// `W1`: hidden -> intermediate.
    pub intermediate: Linear,
    #[module(skip)]
    pub activation: HiddenAct,
    /// `W2`, dropout, residual and LayerNorm.
    pub output: BertResidualOutput,
}

impl BertLayer {
    pub fn forward(&self, hidden: Tensor<3>, mask_bias: Tensor<4>) -> Tensor<3> {
        self.forward_queries(hidden.clone(), hidden, mask_bias)
    }

    /// The layer's output at the positions of `queries [batch, seq_q, hidden]` (the residual
    /// stream there), attending over all of `hidden [batch, seq, hidden]`; `-> [batch, seq_q,
    /// hidden]`. Every step after the keys and values is per position, so this equals those
    /// rows of [`BertLayer::forward`].
    pub fn forward_queries(
        &self,
        queries: Tensor<3>,
        hidden: Tensor<3>,
        mask_bias: Tensor<4>,
    ) -> Tensor<3> {
        let attended =
            self.attention.self_attention.forward_queries(queries.clone(), hidden, mask_bias);
        let hidden = self.attention.output.forward(attended, queries);
        let expanded = match self.activation {
            HiddenAct::Gelu => kernels::linear_gelu(&self.intermediate, hidden.clone()),
            activation => {
                activation.apply(kernels::linear_layer(&self.intermediate, hidden.clone()))
            }
        }; // [batch, seq_q, intermediate]
        self.output.forward(expanded, hidden)
    }
}

/// The BERT-family encoder with its optional pooler.
#[derive(Module, Debug)]
pub struct BertModel {
    pub embeddings: BertEmbeddings,
    pub layers: Vec<BertLayer>,
    /// `dense` of the pooler: `tanh(W·h_[CLS] + b)`.
    pub pooler: Option<Linear>,
}

/// Tensors a checkpoint may carry that the encoder does not use.
const IGNORABLE: &[&str] =
    &["position_ids", "cls.", "lm_head.", "classifier.", "score.", "qa_outputs."];

impl BertModel {
    /// Builds the encoder from checkpoint tensors, checking every name and shape.
    ///
    /// `prefix` is what precedes `embeddings.` in the file (`""`, `"bert."`, `"roberta."`); use
    /// [`BertModel::detect_prefix`] to find it.
    pub fn load(config: &BertConfig, reader: &mut TensorReader<'_>, prefix: &str) -> Result<Self> {
        let hidden = config.hidden_size;
        let eps = config.layer_norm_eps;
        let position_offset = match config.flavor() {
            BertFlavor::Bert => 0,
            BertFlavor::Roberta => config.pad_token_id + 1,
        };
        let hidden_dropout = || Dropout::new(config.hidden_dropout_prob);
        let embeddings = BertEmbeddings {
            word_embeddings: reader.embedding(
                &format!("{prefix}embeddings.word_embeddings"),
                config.vocab_size,
                hidden,
            )?,
            position_embeddings: reader.embedding(
                &format!("{prefix}embeddings.position_embeddings"),
                config.max_position_embeddings,
                hidden,
            )?,
            token_type_embeddings: reader.embedding(
                &format!("{prefix}embeddings.token_type_embeddings"),
                config.type_vocab_size,
                hidden,
            )?,
            layer_norm: reader.layer_norm(&format!("{prefix}embeddings.LayerNorm"), hidden, eps)?,
            dropout: hidden_dropout(),
            position_offset,
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("{prefix}encoder.layer.{i}");
            layers.push(BertLayer {
                attention: BertAttention {
                    self_attention: BertSelfAttention {
                        query: reader.linear(
                            &format!("{p}.attention.self.query"),
                            hidden,
                            hidden,
                            true,
                        )?,
                        key: reader.linear(
                            &format!("{p}.attention.self.key"),
                            hidden,
                            hidden,
                            true,
                        )?,
                        value: reader.linear(
                            &format!("{p}.attention.self.value"),
                            hidden,
                            hidden,
                            true,
                        )?,
                        dropout: Dropout::new(config.attention_probs_dropout_prob),
                        num_heads: config.num_attention_heads,
                        head_dim: config.head_dim(),
                    },
                    output: BertResidualOutput {
                        dense: reader.linear(
                            &format!("{p}.attention.output.dense"),
                            hidden,
                            hidden,
                            true,
                        )?,
                        layer_norm: reader.layer_norm(
                            &format!("{p}.attention.output.LayerNorm"),
                            hidden,
                            eps,
                        )?,
                        dropout: hidden_dropout(),
                    },
                },
                intermediate: reader.linear(
                    &format!("{p}.intermediate.dense"),
                    hidden,
                    config.intermediate_size,
                    true,
                )?,
                activation: HiddenAct::from_name(&config.hidden_act),
                output: BertResidualOutput {
                    dense: reader.linear(
                        &format!("{p}.output.dense"),
                        config.intermediate_size,
                        hidden,
                        true,
                    )?,
                    layer_norm: reader.layer_norm(&format!("{p}.output.LayerNorm"), hidden, eps)?,
                    dropout: hidden_dropout(),
                },
            });
        }
        let pooler_name = format!("{prefix}pooler.dense");
        let pooler = if reader.contains(&format!("{pooler_name}.weight")) {
            Some(reader.linear(&pooler_name, hidden, hidden, true)?)
        } else {
            None
        };
        Ok(Self { embeddings, layers, pooler })
    }

    /// Builds the encoder from a checkpoint, taking out the tensors it uses (under any of the
    /// prefixes [`BertModel::detect_prefix`] knows); what is left (a task head, say) stays in
    /// `checkpoint` for the caller.
    pub fn from_checkpoint(
        config: &BertConfig,
        checkpoint: &mut Checkpoint,
        device: &Device,
    ) -> Result<Self> {
        let mut reader = TensorReader::new(checkpoint, device);
        let prefix = Self::detect_prefix(&reader).ok_or_else(|| ModelError::MissingTensor {
            path: reader.path().to_path_buf(),
            name: "embeddings.word_embeddings.weight".into(),
            expected: vec![config.vocab_size, config.hidden_size],
            hint: " (also looked for the prefixes bert., roberta., model., encoder.)".into(),
        })?;
        Self::load(config, &mut reader, &prefix)
    }

    /// The prefix in front of `embeddings.word_embeddings.weight` in a checkpoint, if any.
    pub fn detect_prefix(reader: &TensorReader<'_>) -> Option<String> {
        ["", "bert.", "roberta.", "model.", "encoder."]
            .into_iter()
            .find(|p| reader.contains(&format!("{p}embeddings.word_embeddings.weight")))
            .map(str::to_owned)
    }

    /// Names of checkpoint tensors the encoder ignores without complaint.
    pub fn ignorable_tensors() -> &'static [&'static str] {
        IGNORABLE
    }

    /// Writes the encoder's tensors under Hugging Face names (`[out, in]` linear weights).
    pub fn export(&self, writer: &mut TensorWriter, prefix: &str) {
        let e = &self.embeddings;
        writer.embedding(&format!("{prefix}embeddings.word_embeddings"), &e.word_embeddings);
        writer
            .embedding(&format!("{prefix}embeddings.position_embeddings"), &e.position_embeddings);
        writer.embedding(
            &format!("{prefix}embeddings.token_type_embeddings"),
            &e.token_type_embeddings,
        );
        writer.layer_norm(&format!("{prefix}embeddings.LayerNorm"), &e.layer_norm);
        for (i, layer) in self.layers.iter().enumerate() {
            let p = format!("{prefix}encoder.layer.{i}");
            let attention = &layer.attention;
            writer.linear(&format!("{p}.attention.self.query"), &attention.self_attention.query);
            writer.linear(&format!("{p}.attention.self.key"), &attention.self_attention.key);
            writer.linear(&format!("{p}.attention.self.value"), &attention.self_attention.value);
            writer.linear(&format!("{p}.attention.output.dense"), &attention.output.dense);
            writer.layer_norm(
                &format!("{p}.attention.output.LayerNorm"),
                &attention.output.layer_norm,
            );
            writer.linear(&format!("{p}.intermediate.dense"), &layer.intermediate);
            writer.linear(&format!("{p}.output.dense"), &layer.output.dense);
            writer.layer_norm(&format!("{p}.output.LayerNorm"), &layer.output.layer_norm);
        }
        if let Some(pooler) = &self.pooler {
            writer.linear(&format!("{prefix}pooler.dense"), pooler);
        }
    }

    /// Hidden width.
    pub fn hidden_size(&self) -> usize {
        self.embeddings.word_embeddings.weight.dims()[1]
    }

    /// Rows of the token embedding.
    pub fn vocab_size(&self) -> usize {
        self.embeddings.word_embeddings.weight.dims()[0]
    }

    /// Runs the encoder.
    pub fn forward(&self, input: BertInput) -> BertOutput {
        self.forward_positions(input, false)
    }

    /// [`BertModel::forward`] for heads that read only the `[CLS]` position (BERT's pooler, `cls`
    /// pooling): the last layer computes its keys and values over every position but the rest
    /// (query, attention output, feed-forward, about five sixths of the layer) for `[CLS]`
    /// alone, so `last_hidden_state` is `[batch, 1, hidden]`. The `[CLS]` state and the pooler
    /// output are those of `forward`.
    pub fn forward_cls(&self, input: BertInput) -> BertOutput {
        self.forward_positions(input, true)
    }

    fn forward_positions(&self, input: BertInput, cls_only: bool) -> BertOutput {
        // Additive mask: 0 for real tokens, a large negative number for padding.
        let [batch, seq] = input.attention_mask.dims();
        let masked = crate::mask::masked_bias(input.attention_mask.dtype());
        let mask_bias = (input.attention_mask.ones_like() - input.attention_mask)
            .mul_scalar(masked)
            .reshape([batch, 1, 1, seq]);
        let mut hidden = self.embeddings.forward(input.input_ids, input.token_type_ids); // [batch, seq, hidden]
        let last = self.layers.len().saturating_sub(1);
        for (index, layer) in self.layers.iter().enumerate() {
            hidden = if cls_only && index == last {
                let cls = hidden.clone().narrow(1, 0, 1); // [batch, 1, hidden]
                layer.forward_queries(cls, hidden, mask_bias.clone()) // [batch, 1, hidden]
            } else {
                layer.forward(hidden, mask_bias.clone())
            };
        }
        let pooler_output = self.pooler.as_ref().map(|dense| {
            let width = hidden.dims()[2];
            let cls = hidden.clone().narrow(1, 0, 1).reshape([batch, width]); // [batch, hidden]
            tanh(kernels::linear_layer(dense, cls))
        });
        BertOutput { last_hidden_state: hidden, pooler_output }
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.embeddings.word_embeddings.weight.device()
    }
}

/// Mean of the token states over real tokens: `[batch, seq, hidden]`, `[batch, seq]` -> `[batch, hidden]`.
pub fn masked_mean(hidden: Tensor<3>, attention_mask: Tensor<2>) -> Tensor<2> {
    let [batch, seq, width] = hidden.dims();
    let mask = attention_mask.reshape([batch, seq, 1]); // [batch, seq, 1]
    let summed = (hidden * mask.clone()).sum_dim(1).reshape([batch, width]);
    let counts = mask.sum_dim(1).reshape([batch, 1]).clamp_min(1e-9);
    summed / counts
}

/// Scales each row to unit L2 norm: `[batch, hidden]` -> `[batch, hidden]`.
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().powf_scalar(2.0).sum_dim(1).sqrt().clamp_min(1e-12); // [batch, 1]
    x / norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    /// `forward_cls` gives `forward`'s `[CLS]` state and pooler output, and the same gradients,
    /// on a tiny random encoder with a padded sequence (no dropout, so both draw nothing).
    fn check_cls_only_last_layer(device: &Device) {
        let config = BertConfig {
            hidden_dropout_prob: 0.0,
            attention_probs_dropout_prob: 0.0,
            ..BertConfig::tiny(50)
        };
        let model = crate::PretrainedEncoder::random(config, 3, device).unwrap().model;
        let ids = [[2i64, 17, 33, 8, 41, 3], [2, 9, 27, 3, 0, 0]];
        let mask = [[1.0f32; 6], [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]];
        let input = || BertInput {
            input_ids: Tensor::<2, Int>::from_data(TensorData::from(ids), device),
            token_type_ids: Tensor::<2, Int>::zeros([2, 6], device),
            attention_mask: Tensor::<2>::from_data(TensorData::from(mask), device),
        };
        let (full, cls_only) = (model.forward(input()), model.forward_cls(input()));
        assert_eq!(cls_only.last_hidden_state.dims(), [2, 1, 32]);
        let values = |t: Tensor<2>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        let cls_state = |t: Tensor<3>| t.narrow(1, 0, 1).reshape([2, 32]);
        let pairs = [
            (cls_state(full.last_hidden_state), cls_state(cls_only.last_hidden_state)),
            (full.pooler_output.unwrap(), cls_only.pooler_output.unwrap()),
        ];
        for (a, b) in pairs {
            for (x, y) in values(a).iter().zip(values(b)) {
                assert!((x - y).abs() < 1e-5, "[CLS] output: full {x}, [CLS] only {y}");
            }
        }
        if device.is_autodiff() {
            // A fresh pass for each backward: the graph is consumed by one.
            let weight = model.embeddings.word_embeddings.weight.val();
            let grad = |output: BertOutput| {
                values(weight.grad(&output.pooler_output.unwrap().sum().backward()).unwrap())
            };
            let (full, cls_only) = (grad(model.forward(input())), grad(model.forward_cls(input())));
            for (x, y) in full.iter().zip(&cls_only) {
                assert!((x - y).abs() < 1e-5, "embedding gradient: full {x}, [CLS] only {y}");
            }
        }
    }

    #[test]
    fn the_cls_only_last_layer_matches_the_full_forward() {
        let device = Device::default();
        check_cls_only_last_layer(&device);
        check_cls_only_last_layer(&device.autodiff());
    }
}
