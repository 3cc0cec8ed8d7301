//! Loads all-MiniLM-L6-v2 (fetched once into the cache) and prints the cosine similarity of
//! sentence embeddings, using the models crate alone with the `tokenizers` crate.
//!
//! cargo run -p papertune-models --example embed

use burn::tensor::{Device, Int, Tensor, TensorData};
use papertune_models::bert::{BertInput, l2_normalize, masked_mean};
use papertune_models::{PretrainedEncoder, source};

fn embed(
    encoder: &PretrainedEncoder,
    tokenizer: &tokenizers::Tokenizer,
    text: &str,
    device: &Device,
) -> Vec<f32> {
    let encoding = tokenizer.encode(text, true).expect("tokenizes");
    let ids: Vec<i64> = encoding.get_ids().iter().map(|&t| i64::from(t)).collect();
    let seq = ids.len();
    let mask = Tensor::<2>::ones([1, seq], device);
    let input = BertInput {
        input_ids: Tensor::<2, Int>::from_data(TensorData::new(ids, [1, seq]), device),
        token_type_ids: Tensor::<2, Int>::zeros([1, seq], device),
        attention_mask: mask.clone(),
    };
    let hidden = encoder.model.forward(input).last_hidden_state;
    l2_normalize(masked_mean(hidden, mask)).try_into_vec_as::<f32>().expect("floats")
}

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let device = Device::flex();
    let files = source::resolve("minilm")?;
    let encoder = PretrainedEncoder::load(&files, &device)?;
    let mut tokenizer = tokenizers::Tokenizer::from_file(&files.tokenizer)?;
    tokenizer.with_padding(None);
    let texts = [
        "Aspirin lowers the risk of stroke in atrial fibrillation.",
        "Anticoagulants prevent strokes in patients with an irregular heartbeat.",
        "A new compiler pass removes redundant bounds checks.",
    ];
    let vectors: Vec<Vec<f32>> =
        texts.iter().map(|t| embed(&encoder, &tokenizer, t, &device)).collect();
    for i in 0..texts.len() {
        for j in i + 1..texts.len() {
            let cosine: f32 = vectors[i].iter().zip(&vectors[j]).map(|(a, b)| a * b).sum();
            println!("cos({i}, {j}) = {cosine:.3}");
        }
    }
    Ok(())
}
