//! Sentence embeddings the sentence-transformers way: mean of the token states over real
//! tokens, then L2 normalisation.

use burn::tensor::{Device, Int, Tensor, TensorData};
use papertune_data::{TextTokenizer, pad_right};
use papertune_models::PretrainedEncoder;
use papertune_models::bert::{BertInput, l2_normalize, masked_mean};

use crate::error::TaskError;

/// Embeds each text; returns one unit-length vector per text.
pub fn sentence_embeddings(
    encoder: &PretrainedEncoder,
    tokenizer: &TextTokenizer,
    texts: &[String],
    device: &Device,
) -> Result<Vec<Vec<f32>>, TaskError> {
    let encodings = tokenizer.encode_all(texts, None)?;
    let sequences: Vec<_> = encodings.iter().collect();
    let (ids, types, mask, seq) = pad_right(&sequences, tokenizer.pad_id());
    let batch = texts.len();
    let attention_mask: Tensor<2> = Tensor::from_data(TensorData::new(mask, [batch, seq]), device);
    let input = BertInput {
        input_ids: Tensor::<2, Int>::from_data(TensorData::new(ids, [batch, seq]), device),
        token_type_ids: Tensor::<2, Int>::from_data(TensorData::new(types, [batch, seq]), device),
        attention_mask: attention_mask.clone(),
    };
    let hidden = encoder.model.forward(input).last_hidden_state; // [batch, seq, hidden]
    let embeddings = l2_normalize(masked_mean(hidden, attention_mask)); // [batch, hidden]
    let width = embeddings.dims()[1];
    let flat = embeddings.try_into_vec_as::<f32>().expect("float output");
    Ok(flat.chunks(width).map(<[f32]>::to_vec).collect())
}
