//! Parity of papertune's Llama-family decoder with Python's transformers.
//!
//! - SmolLM2-135M-Instruct from its Q4_1 GGUF (the `smollm2-135m` preset), against
//!   transformers loading the same file (`scripts/make_smollm2_reference.py`): tokenizer ids on
//!   20 strings, the chat template, next-token logits for 3 prompts, greedy continuations, and
//!   the instruction recipe's token ids and loss (`scripts/make_instruction_reference.py`).
//! - Tiny random Llama and Qwen2 checkpoints in Hugging Face's layout, and a PEFT adapter made by
//!   Python's PEFT (`scripts/make_tiny_llama_peft.py`): logits with and without the adapter.
//!   The other direction: an adapter papertune writes, with its logits, is loaded into PEFT by
//!   `scripts/make_tiny_llama_peft.py check` (the ignored test
//!   `papertune_adapter_gives_the_same_logits_in_peft`, which needs torch and peft; or by hand
//!   on the folder `PAPERTUNE_PEFT_EXPORT` names).
//!
//! Tokenizer note: transformers rebuilds this GGUF's tokenizer with plain GPT-2 pre-tokenization,
//! dropping the `smollm` rule that splits every digit off first (llama.cpp applies it, as did the
//! model's training tokenizer). papertune keeps the rule, so on the two strings where the two
//! differ (runs of spaces before a digit, a space before a non-ASCII numeral) it is checked
//! against llama.cpp's ids, recorded as `ids_llama_cpp`.

use burn::data::dataloader::batcher::Batcher;
use burn::module::Param;
use burn::tensor::Device;
use burn::tensor::{Tensor, TensorData};
use papertune_data::{CausalLmBatcher, PaperRecord};
use papertune_integration::{fixture, read_json};
use papertune_models::generate::{FinishReason, GenerationConfig, Generator};
use papertune_models::llama::{KvCache, LlamaModel};
use papertune_models::llm_tokenizer::ChatMessage;
use papertune_models::lora::{LoraConfig, LoraModel, load_peft_adapter, save_peft_adapter};
use papertune_models::{PretrainedCausalLm, source};
use papertune_tasks::llm::{CausalLmTrainer, LlmConfig, PromptEncoder};
use papertune_train::{CausalLmLoss, Loss, TrainModel};

fn ids(value: &serde_json::Value) -> Vec<u32> {
    value.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
}

fn last_logits(model: &LlamaModel, prompt: &[u32]) -> Vec<f32> {
    let input = model.input(&[prompt.to_vec()], &[vec![1; prompt.len()]]);
    let logits = model.forward(input, None); // [1, seq, vocab]
    let [_, seq, vocab] = logits.dims();
    logits
        .narrow(1, seq - 1, 1)
        .reshape([vocab])
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

/// The logits after `context` as a decoding step computes them: the tokens before the last
/// fill a KV cache, then the last runs alone (one row, so quantised products take their 8-bit
/// path, as they do in generation).
fn decoding_logits(model: &LlamaModel, context: &[u32]) -> Vec<f32> {
    let (head, last) = context.split_at(context.len() - 1);
    let mut cache = KvCache::new(model.num_layers());
    model.forward_hidden(model.input(&[head.to_vec()], &[vec![1; head.len()]]), Some(&mut cache));
    let hidden = model
        .forward_hidden(model.input(&[last.to_vec()], &[vec![1; context.len()]]), Some(&mut cache));
    let logits = model.logits(hidden); // [1, 1, vocab]
    let vocab = logits.dims()[2];
    logits.reshape([vocab]).into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
}

/// Token ids and round trip of every string of a reference (`ids_llama_cpp` where llama.cpp's
/// ids differ from transformers').
fn check_tokenizer(lm: &PretrainedCausalLm, reference: &serde_json::Value) {
    for case in reference["tokenizer"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let expected = ids(case.get("ids_llama_cpp").unwrap_or(&case["ids"]));
        let found = lm.tokenizer.encode(text, true).unwrap();
        assert_eq!(found, expected, "token ids of {text:?}");
        assert_eq!(lm.tokenizer.decode(&found, false).unwrap(), case["decoded"].as_str().unwrap());
    }
}

/// Next-token logits of a reference's prompts within 1e-3 relative (to the larger of
/// |reference| and 1): the 50 highest and every 16th, and the same argmax.
fn check_logits(model: &LlamaModel, reference: &serde_json::Value) {
    for case in reference["logits"].as_array().unwrap() {
        let prompt = ids(&case["ids"]);
        let logits = last_logits(model, &prompt);
        let close = |found: f32, expected: f64, what: String| {
            let tolerance = 1e-3 * expected.abs().max(1.0);
            assert!(
                (f64::from(found) - expected).abs() <= tolerance,
                "{what}: {found} vs {expected}"
            );
        };
        for pair in case["top"].as_array().unwrap() {
            let (id, value) = (pair[0].as_u64().unwrap() as usize, pair[1].as_f64().unwrap());
            close(logits[id], value, format!("logit of token {id} after {} tokens", prompt.len()));
        }
        for (i, value) in case["strided"].as_array().unwrap().iter().enumerate() {
            close(
                logits[i * 16],
                value.as_f64().unwrap(),
                format!("logit of token {} after {} tokens", i * 16, prompt.len()),
            );
        }
        let top_id = case["top"][0][0].as_u64().unwrap() as u32;
        assert_eq!(papertune_models::generate::argmax(&logits), top_id);
    }
}

#[test]
fn smollm2_gguf_matches_transformers() {
    let device = Device::flex();
    let files = source::resolve_llm("smollm2-135m")
        .expect("the smollm2-135m preset resolves (fetched once)");
    let lm = PretrainedCausalLm::load(&files, &device).unwrap();
    let reference = read_json(&fixture("smollm2_reference.json"));

    check_tokenizer(&lm, &reference);

    // Chat template and prompt ids.
    let chat = &reference["chat"];
    let question = chat["messages"][0]["content"].as_str().unwrap();
    let rendered = lm.tokenizer.apply_chat_template(&[ChatMessage::user(question)], true).unwrap();
    assert_eq!(rendered, chat["rendered"].as_str().unwrap());
    let prompt_ids = lm.tokenizer.encode(&rendered, true).unwrap();
    assert_eq!(prompt_ids, ids(&chat["prompt_ids"]));

    let model = &lm.model;
    check_logits(model, &reference);

    // Greedy decoding with the KV cache: the chat answer (stops at EOS) ...
    let generator = Generator::new(model, &lm.tokenizer);
    let greedy = GenerationConfig { max_new_tokens: 20, ..Default::default() };
    let out = generator.generate(std::slice::from_ref(&prompt_ids), &greedy).unwrap().remove(0);
    let mut expected = ids(&chat["greedy_ids"]);
    assert_eq!(expected.pop(), Some(2), "the reference answer ends with <|im_end|>");
    assert_eq!(out.ids, expected);
    assert_eq!(out.finish_reason, FinishReason::Eos);
    assert_eq!(out.text, "The capital of France is Paris.");

    // The instruction recipe: token ids of prompt + answer (prompt masked, cut to fit) and the
    // base model's mean answer-token loss over a right-padded batch, as the PEFT reference
    // script computes them (`scripts/make_instruction_reference.py`).
    let instruction = read_json(&fixture("instruction_reference.json"));
    let papers: Vec<PaperRecord> = instruction["rows"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, r)| PaperRecord {
            row: i + 1,
            uuid: r["uuid"].as_str().unwrap().into(),
            title: r["title"].as_str().unwrap().into(),
            author: r["author"].as_str().unwrap().into(),
            abstract_text: r["abstract"].as_str().unwrap().into(),
            keywords: Some(r["Keywords"].as_str().unwrap().into()),
            label: r["label"].as_str().unwrap().parse().ok(),
        })
        .collect();
    for case in instruction["cases"].as_array().unwrap() {
        let mut config = LlmConfig::default();
        config.data.task = serde_json::from_value(case["task"].clone()).unwrap();
        let (max_len, max_answer) = (
            case["max_len"].as_u64().unwrap() as usize,
            case["max_target_len"].as_u64().unwrap() as usize,
        );
        let encoder = PromptEncoder { tokenizer: &lm.tokenizer, chat_template: true };
        let mut examples = Vec::new();
        for (record, expected) in
            config.records(&papers).iter().zip(case["examples"].as_array().unwrap())
        {
            let example = encoder.training_example(record, max_len, max_answer).unwrap();
            assert_eq!(
                example.input_ids,
                ids(&expected["input_ids"]),
                "{} input ids",
                case["task"]
            );
            let labels: Vec<Option<u32>> = expected["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_i64().filter(|&v| v >= 0).map(|v| v as u32))
                .collect();
            assert_eq!(example.labels, labels, "{} labels", case["task"]);
            examples.push(example);
        }
        let batch = CausalLmBatcher { pad_id: 2 }.batch(examples, &device);
        let (output, target) = CausalLmTrainer { lm: model.clone() }.forward_train(batch);
        let loss: f32 = CausalLmLoss::default().forward(output, target).into_scalar();
        let expected = case["batch_loss"].as_f64().unwrap();
        assert!(
            (f64::from(loss) - expected).abs() <= 1e-4 * expected,
            "{} batch loss {loss} vs {expected}",
            case["task"]
        );
    }

    // ... and 20 tokens of a plain continuation, also batched with a shorter prompt (left padding).
    let continuation = &reference["continuation"];
    let prompt = ids(&continuation["prompt_ids"]);
    let mut no_eos = lm.tokenizer.clone();
    no_eos.eos_token_ids.clear();
    let generator = Generator::new(model, &no_eos);
    let outs = generator.generate(&[prompt.clone(), prompt_ids[..5].to_vec()], &greedy).unwrap();
    assert_eq!(outs[0].ids, ids(&continuation["greedy_ids"]));
    assert_eq!(outs[0].finish_reason, FinishReason::Length);
    let alone = generator.generate(&[prompt_ids[..5].to_vec()], &greedy).unwrap();
    assert_eq!(
        outs[1].ids, alone[0].ids,
        "left padding does not change a shorter prompt's continuation"
    );
}

/// Gemma 3 270M from its Q4_K_M GGUF (the `gemma3-270m` preset), dequantised to f32, against
/// transformers loading the same file (`scripts/make_gemma3_reference.py`): the SentencePiece
/// tokenizer rebuilt from the metadata, next-token logits, and 20 greedy tokens.
#[test]
fn gemma3_gguf_matches_transformers() {
    let device = Device::flex();
    let files =
        source::resolve_llm("gemma3-270m").expect("the gemma3-270m preset resolves (fetched once)");
    let lm = PretrainedCausalLm::load(&files, &device).unwrap();
    let reference = read_json(&fixture("gemma3_reference.json"));
    check_tokenizer(&lm, &reference);
    check_logits(&lm.model, &reference);
    let continuation = &reference["continuation"];
    let mut no_eos = lm.tokenizer.clone();
    no_eos.eos_token_ids.clear();
    let greedy = GenerationConfig { max_new_tokens: 20, ..Default::default() };
    let generator = Generator::new(&lm.model, &no_eos).with_candidates(3);
    let out = generator.generate(&[ids(&continuation["prompt_ids"])], &greedy).unwrap().remove(0);
    assert_eq!(out.ids, ids(&continuation["greedy_ids"]));
    assert_eq!(out.text, continuation["greedy_text"].as_str().unwrap());
    // The candidates of every step: three, best first, the greedy token leading.
    assert_eq!(out.candidates.len(), out.ids.len());
    for (step, (candidates, &id)) in out.candidates.iter().zip(&out.ids).enumerate() {
        assert_eq!(candidates.len(), 3, "step {step}");
        assert_eq!(candidates[0].id, id, "step {step}: the first candidate is the greedy token");
        assert!(
            candidates.windows(2).all(|w| w[0].logit >= w[1].logit),
            "step {step}: {candidates:?}"
        );
    }
}

/// Every quantised tensor of the two preset files (Q4_1; Q4_K, Q5_0, Q6_K, Q8_0) decodes to the
/// bits the `gguf` Python package gives: the sha256 of its first 65,536 values as little-endian
/// f32 (`scripts/make_gguf_block_reference.py`; the weights themselves are not in the
/// repository).
#[test]
fn real_gguf_tensors_decode_as_gguf_py_does() {
    use sha2::{Digest, Sha256};
    let reference = read_json(&fixture("gguf_tensor_digests.json"));
    let covered = reference["values_per_tensor"].as_u64().unwrap() as usize;
    for preset in ["gemma3-270m", "smollm2-135m"] {
        let path = match source::resolve_llm(preset).unwrap() {
            source::LlmFiles::Gguf(path) => path,
            other => panic!("{preset} resolves to {other:?}"),
        };
        let file = papertune_models::gguf::GgufFile::read(&path).unwrap();
        let expected =
            reference["files"][path.file_name().unwrap().to_str().unwrap()].as_object().unwrap();
        let quantised: Vec<_> = file
            .tensors
            .iter()
            .filter(|t| matches!(t.ggml_type, papertune_models::gguf::GgmlType::Quant(_)))
            .collect();
        assert_eq!(quantised.len(), expected.len(), "{preset}: quantised tensors");
        for info in quantised {
            let values = file.dequantize(info).unwrap().data;
            let bytes: Vec<u8> =
                values.iter().take(covered).flat_map(|v| v.to_le_bytes()).collect();
            let digest: String =
                Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
            let case = &expected[&info.name];
            assert_eq!(
                case["type"].as_str().unwrap(),
                info.ggml_type.name(),
                "{preset} {}",
                info.name
            );
            assert_eq!(
                digest,
                case["sha256"].as_str().unwrap(),
                "{preset} {}: values differ from gguf-py's",
                info.name
            );
        }
    }
}

/// Gemma 3 computed from its quantised blocks against the same model decoded to f32.
///
/// The quantised path rounds each linear layer's input to 8 bits per block of 32 (or 256)
/// values, `x ≈ d q` with `d = max|x| / 127`: every input moves by at most `d / 2`, so an
/// output moves by at most `Σ_blocks d_b / 2 · Σ |w|` (`quant::q8_error_bound`); measured per
/// layer, 0.4 to 0.8 % of the output's norm. Through 18 layers this gives next-token logits
/// within a few percent of their spread (checked: the logits' RMS difference is under 10 % of
/// their standard deviation, and the argmax agrees). Greedy decoding follows the f32 path
/// until a step where the f32 path's two best tokens are closer than the measured logit
/// error: there the quantised text may take the other one, and the test checks that every
/// divergence happens at such a step.
#[test]
fn gemma3_quantised_weights_follow_the_dequantised_model() {
    quantised_weights_follow_the_dequantised_model("gemma3-270m", "gemma3_reference.json");
}

/// The same for SmolLM2 (Q4_1 blocks, a Q8_0 tied head).
#[test]
fn smollm2_quantised_weights_follow_the_dequantised_model() {
    quantised_weights_follow_the_dequantised_model("smollm2-135m", "smollm2_reference.json");
}

fn quantised_weights_follow_the_dequantised_model(preset: &str, reference: &str) {
    let device = Device::flex();
    let files = source::resolve_llm(preset).unwrap();
    let exact = PretrainedCausalLm::load(&files, &device).unwrap();
    let quantised = PretrainedCausalLm::load_with(
        &files,
        papertune_models::WeightPrecision::Quantized,
        &device,
    )
    .unwrap();
    assert!(
        quantised.model.quantized_head.is_some()
            && quantised.model.layers[0].self_attn.q_proj.quantized.is_some()
    );
    let reference = read_json(&fixture(reference));
    let stats = |a: &[f32], b: &[f32]| {
        let n = a.len() as f64;
        let mean = a.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let std = (a.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n).sqrt();
        let rms =
            (a.iter().zip(b).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum::<f64>()
                / n)
                .sqrt();
        let max = a.iter().zip(b).map(|(&x, &y)| (x - y).abs()).fold(0.0f32, f32::max);
        (rms / std, max)
    };
    for case in reference["logits"].as_array().unwrap() {
        let prompt = ids(&case["ids"]);
        let (a, b) = (last_logits(&exact.model, &prompt), last_logits(&quantised.model, &prompt));
        let (relative_rms, max) = stats(&a, &b);
        println!(
            "{} tokens: logits' RMS difference {relative_rms:.4} of their std, largest {max:.4}",
            prompt.len()
        );
        assert!(relative_rms < 0.1, "{relative_rms}");
        assert_eq!(papertune_models::generate::argmax(&a), papertune_models::generate::argmax(&b));
    }
    // Greedy steps along the f32 path's continuation: where the two paths pick different
    // tokens, the f32 path's margin between them is within the logit error at that step.
    let continuation = &reference["continuation"];
    let mut context = ids(&continuation["prompt_ids"]);
    for (step, &next) in ids(&continuation["greedy_ids"]).iter().enumerate() {
        let (a, b) = (last_logits(&exact.model, &context), last_logits(&quantised.model, &context));
        let (ta, tb) =
            (papertune_models::generate::argmax(&a), papertune_models::generate::argmax(&b));
        assert_eq!(ta, next, "the f32 path reproduces transformers' step {step}");
        if ta != tb {
            let margin = a[ta as usize] - a[tb as usize];
            let error =
                (a[ta as usize] - b[ta as usize]).abs() + (a[tb as usize] - b[tb as usize]).abs();
            println!(
                "step {step}: f32 picks {ta}, quantised {tb}; f32 margin {margin:.4}, their logits moved by {error:.4}"
            );
            assert!(
                margin <= error,
                "step {step}: a margin of {margin} is not explained by an error of {error}"
            );
        }
        context.push(next);
    }
    // Generation with the KV cache (one row per decoding step, so every step takes the 8-bit
    // path): its first token that differs from the f32 text comes at a step whose f32 margin
    // is within the logit error there.
    let mut no_eos = quantised.tokenizer.clone();
    no_eos.eos_token_ids.clear();
    let greedy = GenerationConfig { max_new_tokens: 20, ..Default::default() };
    let prompt = ids(&continuation["prompt_ids"]);
    let generated = Generator::new(&quantised.model, &no_eos)
        .generate(std::slice::from_ref(&prompt), &greedy)
        .unwrap()
        .remove(0)
        .ids;
    let expected = ids(&continuation["greedy_ids"]);
    println!("quantised text: {:?}", quantised.tokenizer.decode(&generated, false).unwrap());
    if let Some(step) = generated.iter().zip(&expected).position(|(a, b)| a != b) {
        let context: Vec<u32> = prompt.iter().chain(&expected[..step]).copied().collect();
        let (a, b) =
            (last_logits(&exact.model, &context), decoding_logits(&quantised.model, &context));
        let (ta, tb) = (expected[step] as usize, generated[step] as usize);
        let margin = a[ta] - a[tb];
        let error = (a[ta] - b[ta]).abs() + (a[tb] - b[tb]).abs();
        println!(
            "generation departs at step {step}: f32 margin {margin:.4} between the two tokens, their logits moved by {error:.4}"
        );
        assert!(
            margin <= 2.0 * error,
            "step {step}: a margin of {margin} is not explained by an error of {error}"
        );
    }
}

fn logits_rows(value: &serde_json::Value) -> Vec<f32> {
    value[0]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32))
        .collect()
}

fn all_logits(model: &LlamaModel, input_ids: &[u32]) -> Vec<f32> {
    let input = model.input(&[input_ids.to_vec()], &[vec![1; input_ids.len()]]);
    model.forward(input, None).into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
}

fn assert_close(found: &[f32], expected: &[f32], tolerance: f32, what: &str) {
    assert_eq!(found.len(), expected.len(), "{what}: length");
    let worst = found.iter().zip(expected).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(worst <= tolerance, "{what}: max abs diff {worst}");
}

#[test]
fn tiny_hugging_face_checkpoints_and_peft_adapter_match_python() {
    let device = Device::flex();
    for (folder, expected_key) in [
        ("tiny_llama", "base_logits"),
        ("tiny_qwen2", "logits"),
        ("tiny_qwen3", "logits"),
        ("tiny_llama3", "logits"),
    ] {
        let dir = fixture(folder);
        let config = papertune_models::llama::LlamaConfig::read(&dir.join("config.json")).unwrap();
        let mut checkpoint =
            papertune_models::checkpoint::Checkpoint::read(&dir.join("model.safetensors")).unwrap();
        let model = LlamaModel::load(&config, &mut checkpoint, &device).unwrap();
        checkpoint.ensure_consumed(LlamaModel::ignorable_tensors()).unwrap();
        let expected = read_json(&dir.join("expected.json"));
        let input_ids = ids(&expected["input_ids"][0]);
        assert_close(
            &all_logits(&model, &input_ids),
            &logits_rows(&expected[expected_key]),
            1e-4,
            folder,
        );

        if folder == "tiny_llama" {
            // PEFT -> papertune: the adapter made by Python's PEFT gives PEFT's logits.
            let (adapted, lora) = load_peft_adapter(model, &dir.join("adapter")).unwrap();
            assert_eq!((lora.r, lora.alpha), (4, 8.0));
            let adapted_logits = all_logits(&adapted, &input_ids);
            assert_close(
                &adapted_logits,
                &logits_rows(&expected["adapted_logits"]),
                1e-4,
                "PEFT adapter",
            );

            // papertune -> PEFT layout -> papertune: written and read back unchanged; merged
            // weights give the same logits as the separate adapter.
            let out = tempfile::tempdir().unwrap();
            save_peft_adapter(&adapted, &lora, "tiny_llama", out.path()).unwrap();
            let written = read_json(&out.path().join("adapter_config.json"));
            assert_eq!(written["r"], 4);
            assert_eq!(written["task_type"], "CAUSAL_LM");
            let fresh = LlamaModel::load(
                &config,
                &mut papertune_models::checkpoint::Checkpoint::read(&dir.join("model.safetensors"))
                    .unwrap(),
                &device,
            )
            .unwrap();
            let (reloaded, _) = load_peft_adapter(fresh, out.path()).unwrap();
            assert_close(
                &all_logits(&reloaded, &input_ids),
                &adapted_logits,
                1e-6,
                "adapter round trip",
            );
            let merged = reloaded.merge_lora();
            assert_close(&all_logits(&merged, &input_ids), &adapted_logits, 1e-4, "merged adapter");

            // papertune -> PEFT: an adapter made here, for `scripts/make_tiny_llama_peft.py check`
            // (the ignored test below runs it).
            let scratch = tempfile::tempdir().unwrap();
            let check_dir = std::env::var_os("PAPERTUNE_PEFT_EXPORT")
                .map_or_else(|| scratch.path().to_path_buf(), Into::into);
            export_adapter_for_peft(&check_dir);
        }
    }
}

/// Writes `dir/adapter` (LoRA on every linear layer of the tiny Llama, B filled so that it
/// matters) and `dir/logits.json` (its logits on the fixture's input ids), checks that papertune
/// reads the adapter back to the same logits.
fn export_adapter_for_peft(dir: &std::path::Path) {
    let device = Device::flex();
    let fixture_dir = fixture("tiny_llama");
    let config =
        papertune_models::llama::LlamaConfig::read(&fixture_dir.join("config.json")).unwrap();
    let base = || {
        let mut checkpoint =
            papertune_models::checkpoint::Checkpoint::read(&fixture_dir.join("model.safetensors"))
                .unwrap();
        LlamaModel::load(&config, &mut checkpoint, &device).unwrap()
    };
    let input_ids = ids(&read_json(&fixture_dir.join("expected.json"))["input_ids"][0]);
    let own = LoraConfig {
        r: 2,
        alpha: 4.0,
        dropout: 0.0,
        target_modules: vec!["all-linear".into()],
        ..Default::default()
    };
    let mut ours = base().attach_lora(&own).unwrap();
    for (_, _, linear) in ours.lora_linears_mut() {
        let Some(lora) = linear.lora.as_mut() else { continue }; // the LM head
        let [r, out] = lora.b.val().dims();
        let values: Vec<f32> =
            (0..r * out).map(|i| ((i * 7919 % 89) as f32 / 89.0 - 0.5) * 0.3).collect();
        lora.b = Param::from_tensor(Tensor::from_data(TensorData::new(values, [r, out]), &device));
    }
    save_peft_adapter(&ours, &own, "tiny_llama", &dir.join("adapter")).unwrap();
    let logits = all_logits(&ours, &input_ids);
    let rows: Vec<Vec<f32>> = logits.chunks(config.vocab_size).map(<[f32]>::to_vec).collect();
    let json = serde_json::json!({"input_ids": [input_ids], "logits": [rows]});
    std::fs::write(dir.join("logits.json"), json.to_string()).unwrap();
    let reloaded = load_peft_adapter(base(), &dir.join("adapter")).unwrap().0;
    assert_close(&all_logits(&reloaded, &input_ids), &logits, 1e-6, "papertune adapter round trip");
}

/// papertune -> PEFT: Python's PEFT loads an adapter papertune wrote (every tensor, as written)
/// and computes the same logits within 1e-4.
#[test]
#[ignore = "needs python3 with torch, transformers and peft (PYTHON names another interpreter): cargo test --test llama_parity -- --ignored peft"]
fn papertune_adapter_gives_the_same_logits_in_peft() {
    let dir = tempfile::tempdir().unwrap();
    export_adapter_for_peft(dir.path());
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make_tiny_llama_peft.py");
    let output = std::process::Command::new(&python)
        .arg(&script)
        .arg("check")
        .arg(dir.path().join("adapter"))
        .arg(dir.path().join("logits.json"))
        .arg("--base")
        .arg(fixture("tiny_llama"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{report}");
    assert!(
        output.status.success(),
        "{} check failed ({}):\n{report}",
        script.display(),
        output.status
    );
}
