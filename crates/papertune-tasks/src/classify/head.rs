//! Sequence classification on a BERT-family encoder: pooling, dropout and a linear layer to 2
//! logits (cross-entropy) or 1 logit (BCE with logits).

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::activation::{relu, sigmoid, softmax};
use burn::tensor::{Device, Int, Tensor};
use papertune_data::TokenBatch;
use papertune_kernels as kernels;
use papertune_kernels::dropout::Dropout;
use papertune_models::ModelError;
use papertune_models::bert::{BertInput, BertModel, masked_mean};
use papertune_models::checkpoint::Checkpoint;
use papertune_models::weights::{TensorReader, TensorWriter};
use papertune_train::TrainModel;
use serde::{Deserialize, Serialize};

/// How the token states become one vector per example.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Pooling {
    /// BERT's pooler: `tanh(W·h_[CLS] + b)` (as BertForSequenceClassification does).
    #[default]
    #[serde(rename = "pooler")]
    Pooler,
    /// The `[CLS]` token's state.
    #[serde(rename = "cls")]
    Cls,
    /// Mean over real tokens.
    #[serde(rename = "mean")]
    Mean,
    /// The topline's fusion: the average of the classifier applied to the pooled `[CLS]`
    /// (the pooler output when the checkpoint has one) and to the mean.
    #[serde(rename = "cls+mean")]
    ClsMean,
}

/// The classification head's options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeadConfig {
    /// `pooler`, `cls`, `mean` or `cls+mean`.
    pub pooling: Pooling,
    /// Dropout before the classifier (the encoder's `hidden_dropout_prob` when unset).
    pub dropout: Option<f64>,
    /// Width of an optional hidden layer with ReLU before the classifier (the BERT baseline
    /// of the challenge uses 256); none when unset.
    pub hidden_layer: Option<usize>,
    /// Probability of class 1 above which the label is 1.
    pub threshold: f64,
    /// Pick the threshold that maximises validation F1 at each evaluation and store it with the
    /// best checkpoint (`threshold.json`); `eval` and `predict` then use it instead of
    /// `threshold`.
    pub tune_threshold: bool,
}

impl Default for HeadConfig {
    fn default() -> Self {
        Self {
            pooling: Pooling::Pooler,
            dropout: None,
            hidden_layer: None,
            threshold: 0.5,
            tune_threshold: false,
        }
    }
}

/// Encoder + pooling + dropout + linear classifier.
#[derive(Module, Debug)]
pub struct SequenceClassifier {
    pub encoder: BertModel,
    pub dropout: Dropout,
    /// Optional `[hidden] -> [hidden_layer]` projection followed by ReLU.
    pub pre_classifier: Option<Linear>,
    /// `[hidden or hidden_layer] -> [num_outputs]`
    pub classifier: Linear,
    #[module(skip)]
    pub pooling: Pooling,
}

impl SequenceClassifier {
    /// Wraps an encoder with a new head; the classifier is drawn from N(0, 0.02), bias 0.
    /// `num_outputs` is 2 for softmax losses, 1 for BCE ([`papertune_train::LossConfig::num_outputs`]).
    pub fn new(
        encoder: BertModel,
        head: &HeadConfig,
        num_outputs: usize,
        hidden_dropout: f64,
        seed: u64,
    ) -> Result<Self, ModelError> {
        if head.pooling == Pooling::Pooler && encoder.pooler.is_none() {
            return Err(ModelError::Config {
                path: "head.pooling".into(),
                message: "pooling \"pooler\" needs a checkpoint with pooler weights; use \"cls\" or \"mean\"".into(),
            });
        }
        let hidden = encoder.hidden_size();
        let device = encoder.device();
        let mut checkpoint = papertune_models::init::random_linear(
            "classifier",
            head.hidden_layer.unwrap_or(hidden),
            num_outputs,
            seed,
        );
        if let Some(width) = head.hidden_layer {
            let pre = papertune_models::init::random_linear(
                "pre_classifier",
                hidden,
                width,
                seed.wrapping_add(1),
            );
            for name in ["pre_classifier.weight", "pre_classifier.bias"] {
                let tensor = pre.get(name).expect("just initialised").clone();
                checkpoint.insert(name, tensor);
            }
        }
        Self::load(encoder, &mut checkpoint, head, num_outputs, hidden_dropout, &device)
    }

    /// Rebuilds a trained classifier: the encoder, then `classifier.weight`/`classifier.bias`,
    /// from one checkpoint; fails on anything missing or left over.
    pub fn load(
        encoder: BertModel,
        checkpoint: &mut Checkpoint,
        head: &HeadConfig,
        num_outputs: usize,
        hidden_dropout: f64,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let hidden = encoder.hidden_size();
        let mut reader = TensorReader::new(checkpoint, device);
        let pre_classifier = match head.hidden_layer {
            Some(width) => Some(reader.linear("pre_classifier", hidden, width, true)?),
            None => None,
        };
        let classifier =
            reader.linear("classifier", head.hidden_layer.unwrap_or(hidden), num_outputs, true)?;
        checkpoint.ensure_consumed(&["position_ids"])?;
        Ok(Self {
            encoder,
            dropout: Dropout::new(head.dropout.unwrap_or(hidden_dropout)),
            pre_classifier,
            classifier,
            pooling: head.pooling,
        })
    }

    /// All tensors under Hugging Face names (encoder without prefix, then `classifier.*`).
    pub fn export(&self) -> Checkpoint {
        let mut writer = TensorWriter::new();
        self.encoder.export(&mut writer, "");
        if let Some(pre) = &self.pre_classifier {
            writer.linear("pre_classifier", pre);
        }
        writer.linear("classifier", &self.classifier);
        writer.into_checkpoint()
    }

    /// Logits `[batch, num_outputs]`.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Tensor<2, Int>,
        attention_mask: Tensor<2>,
    ) -> Tensor<2> {
        let input = BertInput { input_ids, token_type_ids, attention_mask: attention_mask.clone() };
        let output = match self.pooling {
            // The head reads only [CLS]: the last layer need not compute the other positions.
            Pooling::Pooler | Pooling::Cls => self.encoder.forward_cls(input),
            Pooling::Mean | Pooling::ClsMean => self.encoder.forward(input),
        };
        let hidden = output.last_hidden_state; // [batch, seq, hidden], [batch, 1, hidden] for the [CLS] poolings
        let [batch, _, width] = hidden.dims();
        let cls = || hidden.clone().narrow(1, 0, 1).reshape([batch, width]); // [batch, hidden]
        let classify = |pooled: Tensor<2>| {
            let x = self.dropout.forward(pooled);
            let x = match &self.pre_classifier {
                Some(pre) => relu(kernels::linear_layer(pre, x)),
                None => x,
            };
            kernels::linear_layer(&self.classifier, x)
        };
        match self.pooling {
            Pooling::Pooler => classify(output.pooler_output.expect("checked at construction")),
            Pooling::Cls => classify(cls()),
            Pooling::Mean => classify(masked_mean(hidden.clone(), attention_mask)),
            Pooling::ClsMean => {
                let pooled_cls = output.pooler_output.unwrap_or_else(cls);
                let mean = masked_mean(hidden.clone(), attention_mask);
                (classify(pooled_cls) + classify(mean)).div_scalar(2.0)
            }
        }
    }

    /// Probability of class 1 for each example: `[batch]`.
    pub fn positive_probability(&self, batch: &TokenBatch) -> Tensor<1> {
        Self::probability_from_logits(self.logits(batch))
    }

    /// Logits `[batch, num_outputs]` of a batch.
    pub fn logits(&self, batch: &TokenBatch) -> Tensor<2> {
        self.forward(
            batch.input_ids.clone(),
            batch.token_type_ids.clone(),
            batch.attention_mask.clone(),
        )
    }

    /// Probability of class 1 from logits `[batch, 1 or 2]`: the sigmoid of one logit, the
    /// softmax of two.
    pub fn probability_from_logits(logits: Tensor<2>) -> Tensor<1> {
        let [n, width] = logits.dims();
        if width == 1 {
            sigmoid(logits).reshape([n])
        } else {
            softmax(logits, 1).narrow(1, 1, 1).reshape([n])
        }
    }
}

impl TrainModel<TokenBatch> for SequenceClassifier {
    type Output = Tensor<2>;
    type Target = Tensor<1, Int>;

    fn forward_train(&self, batch: TokenBatch) -> (Tensor<2>, Tensor<1, Int>) {
        (self.forward(batch.input_ids, batch.token_type_ids, batch.attention_mask), batch.labels)
    }
}
