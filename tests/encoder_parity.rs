//! Parity of papertune's BERT encoder with Python's transformers on the real all-MiniLM-L6-v2
//! weights: token ids, last hidden state, pooler output and sentence embedding, for three texts,
//! each alone and all three in one padded batch. The reference file comes from
//! `fixtures/make_minilm_reference.py`.

use std::path::Path;

use papertune_data::TextTokenizer;
use papertune_integration::{TestBackend, test_backends};
use papertune_models::bert::BertInput;
use papertune_models::{PretrainedEncoder, source};
use papertune_tasks::embed::sentence_embeddings;

struct Reference {
    text: String,
    input_ids: Vec<u32>,
    last_hidden_state: Vec<Vec<f32>>,
    pooler_output: Vec<f32>,
    sentence_embedding: Vec<f32>,
}

fn reference() -> Vec<Reference> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/minilm_reference.json");
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let floats = |v: &serde_json::Value| {
        v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect::<Vec<_>>()
    };
    value["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| Reference {
            text: r["text"].as_str().unwrap().to_owned(),
            input_ids: r["input_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect(),
            last_hidden_state: r["last_hidden_state"]
                .as_array()
                .unwrap()
                .iter()
                .map(floats)
                .collect(),
            pooler_output: floats(&r["pooler_output"]),
            sentence_embedding: floats(&r["sentence_embedding"]),
        })
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// On every backend compiled in and usable here (see `test_backends`), with its tolerance.
#[test]
fn minilm_matches_transformers() {
    for backend in test_backends() {
        eprintln!("MiniLM parity on {}", backend.name);
        minilm_matches_transformers_on(&backend);
    }
}

fn minilm_matches_transformers_on(backend: &TestBackend) {
    let (device, tolerance, name) = (&backend.device, backend.tolerance, backend.name);
    let files = source::resolve("minilm")
        .expect("the minilm preset resolves (fetched once into the cache)");
    let encoder = PretrainedEncoder::load(&files, device).unwrap();
    let tokenizer = TextTokenizer::from_file(&files.tokenizer, 256).unwrap();
    let references = reference();

    let texts: Vec<String> = references.iter().map(|r| r.text.clone()).collect();
    let encodings = tokenizer.encode_all(&texts, None).unwrap();
    for (encoding, r) in encodings.iter().zip(&references) {
        assert_eq!(encoding.ids, r.input_ids, "token ids of {:?}", r.text);
    }

    // One text at a time: no padding.
    for (encoding, r) in encodings.iter().zip(&references) {
        let seq = encoding.ids.len();
        let ids: Vec<i64> = encoding.ids.iter().map(|&t| i64::from(t)).collect();
        let input = BertInput {
            input_ids: burn::tensor::Tensor::from_data(
                burn::tensor::TensorData::new(ids, [1, seq]),
                device,
            ),
            token_type_ids: burn::tensor::Tensor::zeros([1, seq], device),
            attention_mask: burn::tensor::Tensor::ones([1, seq], device),
        };
        let output = encoder.model.forward(input);
        let hidden = output.last_hidden_state.try_into_vec_as::<f32>().unwrap();
        let expected: Vec<f32> = r.last_hidden_state.iter().flatten().copied().collect();
        let diff = max_abs_diff(&hidden, &expected);
        assert!(
            diff <= tolerance,
            "{name}: last hidden state of {:?}: max abs diff {diff}",
            r.text
        );
        let pooled = output.pooler_output.unwrap().try_into_vec_as::<f32>().unwrap();
        let diff = max_abs_diff(&pooled, &r.pooler_output);
        assert!(diff <= tolerance, "{name}: pooler output of {:?}: max abs diff {diff}", r.text);
    }

    // All three in one right-padded batch: padding must not change any embedding.
    let embeddings = sentence_embeddings(&encoder, &tokenizer, &texts, device).unwrap();
    for (embedding, r) in embeddings.iter().zip(&references) {
        let diff = max_abs_diff(embedding, &r.sentence_embedding);
        assert!(
            diff <= tolerance,
            "{name}: sentence embedding of {:?}: max abs diff {diff}",
            r.text
        );
    }
}
