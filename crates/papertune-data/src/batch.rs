//! burn `Dataset` and `Batcher` for sequence classification: pre-tokenized items, padded per
//! batch to the longest sequence, with an attention mask.

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, DatasetError};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::tokenize::Encoded;

/// One tokenized example with its label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassificationItem {
    pub tokens: Encoded,
    pub label: u8,
}

/// Tokenized examples held in memory.
#[derive(Debug, Clone, Default)]
pub struct ClassificationDataset {
    items: Vec<ClassificationItem>,
}

impl ClassificationDataset {
    pub fn new(items: Vec<ClassificationItem>) -> Self {
        Self { items }
    }

    pub fn items(&self) -> &[ClassificationItem] {
        &self.items
    }

    /// Labels in item order.
    pub fn labels(&self) -> Vec<u8> {
        self.items.iter().map(|i| i.label).collect()
    }

    /// Total tokens over all items (for throughput figures).
    pub fn total_tokens(&self) -> usize {
        self.items.iter().map(|i| i.tokens.ids.len()).sum()
    }
}

impl Dataset<ClassificationItem> for ClassificationDataset {
    fn get(&self, index: usize) -> Result<ClassificationItem, DatasetError> {
        Ok(self.items[index].clone())
    }

    fn len(&self) -> usize {
        self.items.len()
    }
}

/// A padded batch of token sequences.
#[derive(Debug, Clone)]
pub struct TokenBatch {
    /// `[batch, seq]`
    pub input_ids: Tensor<2, Int>,
    /// `[batch, seq]`
    pub token_type_ids: Tensor<2, Int>,
    /// `[batch, seq]`: 1.0 for tokens, 0.0 for padding.
    pub attention_mask: Tensor<2>,
    /// `[batch]`
    pub labels: Tensor<1, Int>,
}

/// Pads a list of encodings on the right to the longest one; returns ids, type ids and mask
/// as flat row-major vectors with the padded length.
pub fn pad_right(sequences: &[&Encoded], pad_id: u32) -> (Vec<i64>, Vec<i64>, Vec<f32>, usize) {
    let seq = sequences.iter().map(|s| s.ids.len()).max().unwrap_or(0).max(1);
    let mut ids = Vec::with_capacity(sequences.len() * seq);
    let mut types = Vec::with_capacity(sequences.len() * seq);
    let mut mask = Vec::with_capacity(sequences.len() * seq);
    for s in sequences {
        let len = s.ids.len();
        ids.extend(s.ids.iter().map(|&t| i64::from(t)));
        ids.extend(std::iter::repeat_n(i64::from(pad_id), seq - len));
        types.extend(s.type_ids.iter().map(|&t| i64::from(t)));
        types.extend(std::iter::repeat_n(0, seq - len));
        mask.extend(std::iter::repeat_n(1.0, len));
        mask.extend(std::iter::repeat_n(0.0, seq - len));
    }
    (ids, types, mask, seq)
}

/// Builds [`TokenBatch`]es with dynamic padding.
#[derive(Debug, Clone, Copy)]
pub struct ClassificationBatcher {
    pub pad_id: u32,
}

impl ClassificationBatcher {
    pub fn new(pad_id: u32) -> Self {
        Self { pad_id }
    }
}

impl Batcher<ClassificationItem, TokenBatch> for ClassificationBatcher {
    fn batch(&self, items: Vec<ClassificationItem>, device: &Device) -> TokenBatch {
        let batch = items.len();
        let sequences: Vec<&Encoded> = items.iter().map(|i| &i.tokens).collect();
        let (ids, types, mask, seq) = pad_right(&sequences, self.pad_id);
        let labels: Vec<i64> = items.iter().map(|i| i64::from(i.label)).collect();
        TokenBatch {
            input_ids: Tensor::from_data(TensorData::new(ids, [batch, seq]), device),
            token_type_ids: Tensor::from_data(TensorData::new(types, [batch, seq]), device),
            attention_mask: Tensor::from_data(TensorData::new(mask, [batch, seq]), device),
            labels: Tensor::from_data(TensorData::new(labels, [batch]), device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(ids: &[u32], label: u8) -> ClassificationItem {
        ClassificationItem {
            tokens: Encoded { ids: ids.to_vec(), type_ids: vec![0; ids.len()] },
            label,
        }
    }

    #[test]
    fn pads_to_the_longest_sequence_with_mask() {
        let device = Device::flex();
        let batch = ClassificationBatcher::new(0)
            .batch(vec![item(&[101, 7, 102], 1), item(&[101, 102], 0)], &device);
        assert_eq!(batch.input_ids.dims(), [2, 3]);
        let ids: Vec<i64> = batch.input_ids.try_into_vec_as::<i64>().unwrap();
        assert_eq!(ids, vec![101, 7, 102, 101, 102, 0]);
        let mask: Vec<f32> = batch.attention_mask.try_into_vec_as::<f32>().unwrap();
        assert_eq!(mask, vec![1.0, 1.0, 1.0, 1.0, 1.0, 0.0]);
        let labels: Vec<i64> = batch.labels.try_into_vec_as::<i64>().unwrap();
        assert_eq!(labels, vec![1, 0]);
    }

    #[test]
    fn dataset_serves_items_by_index() {
        let data = ClassificationDataset::new(vec![item(&[1], 0), item(&[2, 3], 1)]);
        assert_eq!(data.len(), 2);
        assert_eq!(data.get(1).unwrap().label, 1);
        assert_eq!(data.total_tokens(), 3);
    }
}
