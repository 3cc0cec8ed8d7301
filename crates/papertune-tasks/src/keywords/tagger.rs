//! The keyphrase head: token classification on a BERT-family encoder, one linear layer from
//! each token's last hidden state to the logits of `O`, `B` and `I`; with its examples, their
//! batches, and the tag probabilities of a document at inference.

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, DatasetError};
use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use papertune_data::{Encoded, TextTokenizer, pad_right};
use papertune_kernels as kernels;
use papertune_kernels::dropout::Dropout;
use papertune_models::ModelError;
use papertune_models::bert::{BertInput, BertModel};
use papertune_models::checkpoint::Checkpoint;
use papertune_models::weights::{TensorReader, TensorWriter};
use papertune_train::TrainModel;

use super::spans::{NUM_TAGS, TAG_IGNORE, TaggedToken, bio_tags, locate_keywords};
use crate::error::TaskError;

/// A document tokenized for tagging: ids, and for each token its byte offsets in the text, its
/// word and whether it is a special token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaggingInput {
    pub tokens: Encoded,
    pub offsets: Vec<(usize, usize)>,
    pub words: Vec<Option<u32>>,
    pub special: Vec<bool>,
}

impl TaggingInput {
    /// Tokenizes `text` (truncated to the tokenizer's length) with the offsets the tagger needs.
    pub fn new(tokenizer: &TextTokenizer, text: &str) -> Result<Self, TaskError> {
        let encoding = tokenizer.encoding(text)?;
        Ok(Self {
            tokens: Encoded {
                ids: encoding.get_ids().to_vec(),
                type_ids: encoding.get_type_ids().to_vec(),
            },
            offsets: encoding.get_offsets().to_vec(),
            words: encoding.get_word_ids().to_vec(),
            special: encoding.get_special_tokens_mask().iter().map(|&m| m == 1).collect(),
        })
    }

    /// The training example: gold keywords located in `text` and turned into tags.
    pub fn example(self, text: &str, keywords: &[String]) -> TaggingItem {
        let spans = locate_keywords(text, keywords);
        let tags = bio_tags(&self.offsets, &self.special, &spans);
        TaggingItem { tokens: self.tokens, tags }
    }
}

/// One training example: token ids and a tag per token ([`TAG_IGNORE`] left out of the loss).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggingItem {
    pub tokens: Encoded,
    pub tags: Vec<u8>,
}

/// Tagging examples held in memory.
#[derive(Debug, Clone, Default)]
pub struct TaggingDataset {
    pub items: Vec<TaggingItem>,
}

impl Dataset<TaggingItem> for TaggingDataset {
    fn get(&self, index: usize) -> Result<TaggingItem, DatasetError> {
        Ok(self.items[index].clone())
    }

    fn len(&self) -> usize {
        self.items.len()
    }
}

/// A padded batch of tagged sequences.
#[derive(Debug, Clone)]
pub struct TaggingBatch {
    /// `[batch, seq]`
    pub input_ids: Tensor<2, Int>,
    /// `[batch, seq]`
    pub token_type_ids: Tensor<2, Int>,
    /// `[batch, seq]`: 1.0 for tokens, 0.0 for padding.
    pub attention_mask: Tensor<2>,
    /// `[positions]`: the flat indices (`row * seq + column`) of the tokens in the loss.
    pub positions: Tensor<1, Int>,
    /// `[positions]`: their tags.
    pub tags: Tensor<1, Int>,
}

/// Builds [`TaggingBatch`]es with dynamic padding.
#[derive(Debug, Clone, Copy)]
pub struct TaggingBatcher {
    pub pad_id: u32,
}

impl Batcher<TaggingItem, TaggingBatch> for TaggingBatcher {
    fn batch(&self, items: Vec<TaggingItem>, device: &Device) -> TaggingBatch {
        let batch = items.len();
        let sequences: Vec<&Encoded> = items.iter().map(|i| &i.tokens).collect();
        let (ids, types, mask, seq) = pad_right(&sequences, self.pad_id);
        let (mut positions, mut tags) = (Vec::new(), Vec::new());
        for (row, item) in items.iter().enumerate() {
            for (column, &tag) in item.tags.iter().enumerate().take(seq) {
                if tag != TAG_IGNORE {
                    positions.push((row * seq + column) as i64);
                    tags.push(i64::from(tag));
                }
            }
        }
        if positions.is_empty() {
            // A batch of special tokens only has nothing to score; the loss needs one position:
            // the first, as O.
            positions.push(0);
            tags.push(0);
        }
        let n = positions.len();
        TaggingBatch {
            input_ids: Tensor::from_data(TensorData::new(ids, [batch, seq]), device),
            token_type_ids: Tensor::from_data(TensorData::new(types, [batch, seq]), device),
            attention_mask: Tensor::from_data(TensorData::new(mask, [batch, seq]), device),
            positions: Tensor::from_data(TensorData::new(positions, [n]), device),
            tags: Tensor::from_data(TensorData::new(tags, [n]), device),
        }
    }
}

/// Encoder + dropout + linear layer to the three tag logits, per token.
#[derive(Module, Debug)]
pub struct KeyphraseTagger {
    pub encoder: BertModel,
    pub dropout: Dropout,
    /// `[hidden] -> [3]`
    pub classifier: Linear,
}

impl KeyphraseTagger {
    /// Wraps an encoder with a new head drawn from N(0, 0.02), bias 0.
    pub fn new(encoder: BertModel, dropout: f64, seed: u64) -> Result<Self, ModelError> {
        let device = encoder.device();
        let mut checkpoint = papertune_models::init::random_linear(
            "classifier",
            encoder.hidden_size(),
            NUM_TAGS,
            seed,
        );
        Self::load(encoder, &mut checkpoint, dropout, &device)
    }

    /// Rebuilds a trained tagger: the encoder, then `classifier.*`, from one checkpoint.
    pub fn load(
        encoder: BertModel,
        checkpoint: &mut Checkpoint,
        dropout: f64,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let mut reader = TensorReader::new(checkpoint, device);
        let classifier = reader.linear("classifier", encoder.hidden_size(), NUM_TAGS, true)?;
        checkpoint.ensure_consumed(&["position_ids"])?;
        Ok(Self { encoder, dropout: Dropout::new(dropout), classifier })
    }

    /// All tensors under Hugging Face names (as `BertForTokenClassification` names them).
    pub fn export(&self) -> Checkpoint {
        let mut writer = TensorWriter::new();
        self.encoder.export(&mut writer, "");
        writer.linear("classifier", &self.classifier);
        writer.into_checkpoint()
    }

    /// Tag logits `[batch, seq, 3]`.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Tensor<2, Int>,
        attention_mask: Tensor<2>,
    ) -> Tensor<3> {
        let input = BertInput { input_ids, token_type_ids, attention_mask };
        let hidden = self.encoder.forward(input).last_hidden_state; // [batch, seq, hidden]
        kernels::linear_layer(&self.classifier, self.dropout.forward(hidden)) // [batch, seq, 3]
    }

    /// Tag probabilities of each document's tokens, batched by similar length.
    pub fn tag_probabilities(
        &self,
        inputs: &[TaggingInput],
        pad_id: u32,
        batch_size: usize,
        device: &Device,
    ) -> Vec<Vec<TaggedToken>> {
        let mut order: Vec<usize> = (0..inputs.len()).collect();
        order.sort_by_key(|&i| inputs[i].tokens.ids.len());
        let mut out = vec![Vec::new(); inputs.len()];
        let mut progress = crate::progress::Progress::new(inputs.len(), "tagging");
        for chunk in order.chunks(batch_size.max(1)) {
            let sequences: Vec<&Encoded> = chunk.iter().map(|&i| &inputs[i].tokens).collect();
            let (ids, types, mask, seq) = pad_right(&sequences, pad_id);
            let rows = chunk.len();
            let logits = self.forward(
                Tensor::from_data(TensorData::new(ids, [rows, seq]), device),
                Tensor::from_data(TensorData::new(types, [rows, seq]), device),
                Tensor::from_data(TensorData::new(mask, [rows, seq]), device),
            );
            let probs = softmax(logits, 2).try_into_vec_as::<f32>().expect("float output"); // [rows, seq, 3]
            for (row, &i) in chunk.iter().enumerate() {
                let input = &inputs[i];
                out[i] = (0..input.tokens.ids.len())
                    .map(|t| {
                        let at = (row * seq + t) * NUM_TAGS;
                        TaggedToken {
                            offsets: input.offsets[t],
                            word: if input.special[t] { None } else { input.words[t] },
                            probs: [probs[at], probs[at + 1], probs[at + 2]],
                        }
                    })
                    .collect();
            }
            progress.advance(rows);
        }
        out
    }
}

impl TrainModel<TaggingBatch> for KeyphraseTagger {
    /// Logits of the tokens in the loss, `[positions, 3]`.
    type Output = Tensor<2>;
    type Target = Tensor<1, Int>;

    fn forward_train(&self, batch: TaggingBatch) -> (Tensor<2>, Tensor<1, Int>) {
        let logits = self.forward(batch.input_ids, batch.token_type_ids, batch.attention_mask); // [batch, seq, 3]
        let [rows, seq, tags] = logits.dims();
        let flat = logits.reshape([rows * seq, tags]); // [batch * seq, 3]
        (flat.select(0, batch.positions), batch.tags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keywords::spans::{TAG_B, TAG_I, TAG_O};

    #[test]
    fn batches_list_the_tagged_positions() {
        let item = |ids: &[u32], tags: &[u8]| TaggingItem {
            tokens: Encoded { ids: ids.to_vec(), type_ids: vec![0; ids.len()] },
            tags: tags.to_vec(),
        };
        let device = Device::flex();
        let batch = TaggingBatcher { pad_id: 0 }.batch(
            vec![
                item(&[101, 7, 8, 102], &[TAG_IGNORE, TAG_B, TAG_I, TAG_IGNORE]),
                item(&[101, 9, 102], &[TAG_IGNORE, TAG_O, TAG_IGNORE]),
            ],
            &device,
        );
        assert_eq!(batch.input_ids.dims(), [2, 4]);
        assert_eq!(batch.positions.try_into_vec_as::<i64>().unwrap(), vec![1, 2, 5]);
        assert_eq!(batch.tags.try_into_vec_as::<i64>().unwrap(), vec![1, 2, 0]);
    }
}
