//! The half-precision checks shared by the test binaries `half_precision_bf16` and
//! `half_precision_f16`: the real MiniLM and SmolLM2 weights run in the binary's precision on
//! the CPU (flex), and on wgpu and CUDA where the device has the type, against the f32
//! references of the parity tests, with tolerances for 8 (bf16) and 11 (f16) bits of mantissa.
//!
//! A device's float type is a process-wide setting fixed at its first tensor, so each precision
//! is a test binary, a process, of its own.

use burn::tensor::{DType, Device, Tensor, TensorData};
use papertune_data::TextTokenizer;
use papertune_integration::{fixture, read_json};
use papertune_models::bert::BertInput;
use papertune_models::generate::{GenerationConfig, Generator};
use papertune_models::precision::{Precision, configure};
use papertune_models::{PretrainedCausalLm, PretrainedEncoder, source};
use papertune_tasks::embed::sentence_embeddings;

fn floats(value: &serde_json::Value) -> Vec<f32> {
    value.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "embedding lengths");
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

/// The devices to test in `precision`: flex, wgpu when its adapter has the type, and CUDA
/// (feature `cuda`) when a driver is present and has it.
fn half_devices(precision: Precision) -> Vec<(&'static str, Device)> {
    let mut flex = Device::flex();
    configure(&mut flex, "flex", precision).expect("flex runs f16 and bf16");
    #[allow(unused_mut)]
    let mut devices = vec![("flex", flex)];
    #[cfg(feature = "wgpu")]
    {
        let mut wgpu = Device::wgpu(Default::default());
        match configure(&mut wgpu, "wgpu", precision) {
            Ok(()) => devices.push(("wgpu", wgpu)),
            Err(e) => skip_unless_required("wgpu", precision, &e.to_string()),
        }
    }
    #[cfg(feature = "cuda")]
    if std::path::Path::new("/proc/driver/nvidia/version").exists() {
        let mut cuda = Device::cuda(0);
        match configure(&mut cuda, "cuda", precision) {
            Ok(()) => devices.push(("cuda", cuda)),
            Err(e) => skip_unless_required("cuda", precision, &e.to_string()),
        }
    }
    devices
}

/// A GPU backend that cannot run `precision` here is skipped with a note, unless
/// PAPERTUNE_REQUIRE_BACKENDS demands it: `wgpu` demands the backend (a device that lacks the
/// type, as lavapipe lacks bf16, is still skipped), `wgpu:bf16` the backend in that type.
#[allow(dead_code)]
fn skip_unless_required(name: &str, precision: Precision, error: &str) {
    let lacks_type = error.contains("does not support");
    if papertune_integration::backend_required(&format!("{name}:{precision}"))
        || (papertune_integration::backend_required(name) && !lacks_type)
    {
        panic!(
            "{name} {precision} is required by PAPERTUNE_REQUIRE_BACKENDS but does not run here: {error}"
        );
    }
    eprintln!("{name} {precision} skipped: {error}");
}

/// Largest difference allowed on hidden states (magnitudes up to about 1, six layers) and on a
/// logit (magnitude about 20): about twice the largest error measured on flex (bf16: 0.046 and
/// 0.126; f16: 0.0054 and 0.017), so that a kernel that loses a few more bits fails.
fn tolerances(precision: Precision) -> (f32, f32) {
    match precision {
        Precision::Bf16 => (0.08, 0.25),
        Precision::F16 => (0.01, 0.035),
        Precision::F32 => (1e-4, 1e-3),
    }
}

/// MiniLM's hidden states within the tolerance of f32's, and its padded sentence embeddings
/// pointing the same way.
pub fn minilm_stays_close_to_f32(precision: Precision) {
    let reference = read_json(&fixture("minilm_reference.json"));
    let records = reference["records"].as_array().unwrap();
    let files = source::resolve("minilm")
        .expect("the minilm preset resolves (fetched once into the cache)");
    for (name, device) in half_devices(precision) {
        let encoder = PretrainedEncoder::load(&files, &device).unwrap();
        let weight_dtype = encoder.model.embeddings.word_embeddings.weight.val().dtype();
        assert_eq!(
            weight_dtype,
            DType::from(precision.float_dtype()),
            "{name}: weights are stored in {precision}"
        );
        let tokenizer = TextTokenizer::from_file(&files.tokenizer, 256).unwrap();
        for r in records {
            let ids: Vec<i64> =
                r["input_ids"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
            let seq = ids.len();
            let input = BertInput {
                input_ids: Tensor::from_data(TensorData::new(ids, [1, seq]), &device),
                token_type_ids: Tensor::zeros([1, seq], &device),
                attention_mask: Tensor::ones([1, seq], &device),
            };
            let output = encoder.model.forward(input);
            assert_eq!(output.last_hidden_state.dtype(), DType::from(precision.float_dtype()));
            let hidden = output.last_hidden_state.try_into_vec_as::<f32>().unwrap();
            let expected: Vec<f32> =
                r["last_hidden_state"].as_array().unwrap().iter().flat_map(floats).collect();
            assert_eq!(
                hidden.len(),
                expected.len(),
                "{name} {precision}: hidden state length against the reference's"
            );
            let worst =
                hidden.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(
                hidden.iter().all(|x| x.is_finite()),
                "{name} {precision}: non-finite hidden state"
            );
            assert!(
                worst <= tolerances(precision).0,
                "{name} {precision}: last hidden state max abs diff {worst}"
            );
            eprintln!("{name} {precision}: {} tokens, hidden state max abs diff {worst:.4}", seq);
        }
        // The sentence embeddings, padded in one batch, point where f32's do.
        let texts: Vec<String> =
            records.iter().map(|r| r["text"].as_str().unwrap().to_owned()).collect();
        let embeddings = sentence_embeddings(&encoder, &tokenizer, &texts, &device).unwrap();
        assert_eq!(embeddings.len(), records.len(), "{name} {precision}: one embedding a text");
        for (embedding, r) in embeddings.iter().zip(records) {
            let similarity = cosine(embedding, &floats(&r["sentence_embedding"]));
            assert!(
                similarity >= 0.999,
                "{name} {precision}: sentence embedding cosine {similarity}"
            );
        }
    }
}

/// SmolLM2's next tokens and top logits as in f32, and the first greedy tokens with the cache.
pub fn smollm2_predicts_the_f32_tokens(precision: Precision) {
    let reference = read_json(&fixture("smollm2_reference.json"));
    let files = source::resolve_llm("smollm2-135m")
        .expect("the smollm2-135m preset resolves (fetched once)");
    let ids = |v: &serde_json::Value| {
        v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect::<Vec<_>>()
    };
    for (name, device) in half_devices(precision) {
        let lm = PretrainedCausalLm::load(&files, &device).unwrap();
        for case in reference["logits"].as_array().unwrap() {
            let prompt = ids(&case["ids"]);
            let input = lm.model.input(std::slice::from_ref(&prompt), &[vec![1; prompt.len()]]);
            let logits = lm.model.forward(input, None); // [1, seq, vocab]
            let [_, seq, vocab] = logits.dims();
            let last =
                logits.narrow(1, seq - 1, 1).reshape([vocab]).try_into_vec_as::<f32>().unwrap();
            // The reference's top token stays on top, and its logit close.
            let (top_id, top_value) = (
                case["top"][0][0].as_u64().unwrap() as u32,
                case["top"][0][1].as_f64().unwrap() as f32,
            );
            assert_eq!(
                papertune_models::generate::argmax(&last),
                top_id,
                "{name} {precision}: top token after {} tokens",
                prompt.len()
            );
            let diff = (last[top_id as usize] - top_value).abs();
            assert!(
                diff <= tolerances(precision).1,
                "{name} {precision}: top logit {} vs {top_value}",
                last[top_id as usize]
            );
            eprintln!("{name} {precision}: top logit diff {diff:.3} after {} tokens", prompt.len());
        }
        // Greedy decoding with the KV cache in half precision: the answer starts as f32's does.
        let chat = &reference["chat"];
        let prompt_ids = ids(&chat["prompt_ids"]);
        let expected = ids(&chat["greedy_ids"]);
        let greedy = GenerationConfig { max_new_tokens: 8, ..Default::default() };
        let out = Generator::new(&lm.model, &lm.tokenizer)
            .generate(&[prompt_ids], &greedy)
            .unwrap()
            .remove(0);
        assert_eq!(out.ids[..4], expected[..4], "{name} {precision}: first greedy tokens");
    }
}
