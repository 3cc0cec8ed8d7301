//! The four workloads, on real weights with fixed random token ids, each timed as the median
//! of `repeats` runs after one warm-up, with its phases (forward, backward, optimizer; prefill,
//! decode) so that a profile can start from the numbers.

use std::time::Instant;

use anyhow::{Result, bail};
use burn::data::dataloader::batcher::Batcher;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::Device;
use papertune_data::{
    CausalLmBatcher, CausalLmExample, ClassificationBatcher, ClassificationItem, Encoded,
    TokenBatch,
};
use papertune_models::generate::{GenerationConfig, Generator};
use papertune_models::lora::{LoraConfig, LoraModel};
use papertune_models::{PretrainedCausalLm, PretrainedEncoder, WeightPrecision, source};

use super::{BenchOptions, median, peak_rss_mib};
use papertune_tasks::classify::{HeadConfig, SequenceClassifier};
use papertune_tasks::llm::CausalLmTrainer;
use papertune_train::{CausalLmLoss, CrossEntropyLoss, FusedAdamW, Loss, TrainModel};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

fn random_ids(rng: &mut StdRng, n: usize, vocab: usize) -> Vec<u32> {
    // Skip the special tokens at the start of the vocabulary.
    (0..n).map(|_| rng.random_range(32..vocab as u32)).collect()
}

/// Medians of train-step phases over `repeats` timed steps after one warm-up; `step` runs one
/// step and returns the instants at which its forward and backward passes ended.
struct StepTimes {
    forward: f64,
    backward: f64,
    optimizer: f64,
    total: f64,
}

impl StepTimes {
    /// The step's seconds and phases, for a workload's result.
    fn detail(&self) -> Value {
        json!({
            "seconds_per_step": self.total,
            "phases": {"forward": self.forward, "backward": self.backward, "optimizer": self.optimizer},
        })
    }
}

/// A workload's result: `units` (examples or tokens) in `seconds`, as throughput with the
/// fields every workload has, and the workload's own `detail` (seconds, phases).
fn result(
    units: f64,
    seconds: f64,
    unit: &str,
    shape: [usize; 2],
    options: &BenchOptions,
    detail: Value,
) -> Value {
    let mut value = json!({
        "throughput": units / seconds,
        "unit": unit,
        "peak_rss_mib": peak_rss_mib(),
        "backend": options.backend,
        "shape": shape,
    });
    if let (Some(all), Value::Object(own)) = (value.as_object_mut(), detail) {
        all.extend(own);
    }
    value
}

fn time_train_steps(
    name: &str,
    repeats: usize,
    mut step: impl FnMut() -> (Instant, Instant),
) -> StepTimes {
    let (mut forward, mut backward, mut optimizer, mut total) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..repeats + 1 {
        let start = Instant::now();
        let (forward_done, backward_done) = step();
        let end = Instant::now();
        if i > 0 {
            forward.push((forward_done - start).as_secs_f64());
            backward.push((backward_done - forward_done).as_secs_f64());
            optimizer.push((end - backward_done).as_secs_f64());
            total.push((end - start).as_secs_f64());
        }
        tracing::info!("{name} repeat {i}: {:.2} s", (end - start).as_secs_f64());
    }
    StepTimes {
        forward: median(&mut forward),
        backward: median(&mut backward),
        optimizer: median(&mut optimizer),
        total: median(&mut total),
    }
}

/// A batch of `batch` rows of `seq` random word-piece ids between `[CLS]` and `[SEP]`, no
/// padding, labels alternating.
fn encoder_batch(
    rng: &mut StdRng,
    batch: usize,
    seq: usize,
    vocab: usize,
    device: &Device,
) -> TokenBatch {
    let items = (0..batch)
        .map(|i| {
            // 999..: past BERT's [unused] and special tokens.
            let mut ids = vec![101u32];
            ids.extend((0..seq - 2).map(|_| rng.random_range(999..vocab as u32)));
            ids.push(102);
            ClassificationItem {
                tokens: Encoded { type_ids: vec![0; seq], ids },
                label: (i % 2) as u8,
            }
        })
        .collect();
    ClassificationBatcher::new(0).batch(items, device)
}

fn minilm_classifier(device: &Device) -> Result<SequenceClassifier> {
    let encoder = PretrainedEncoder::load(&source::resolve("minilm")?, device)?;
    let dropout = encoder.config.hidden_dropout_prob;
    Ok(SequenceClassifier::new(encoder.model, &HeadConfig::default(), 2, dropout, 42)?)
}

fn w1(device: &Device, options: &BenchOptions) -> Result<Value> {
    let (batch, seq) = (16usize, 128usize);
    let train_device = device.clone().autodiff();
    let mut model = minilm_classifier(&train_device)?;
    let vocab = model.encoder.vocab_size();
    let data = encoder_batch(&mut StdRng::seed_from_u64(2), batch, seq, vocab, &train_device);
    let mut optimizer =
        ModuleOptimizer::from(FusedAdamW { weight_decay: 0.01, ..FusedAdamW::default() });
    let loss_fn = CrossEntropyLoss::new();
    let times = time_train_steps("W1", options.repeats, || {
        let (output, target) = model.forward_train(data.clone());
        let loss = loss_fn.forward(output, target);
        let _ = loss.clone().into_scalar::<f32>();
        let forward_done = Instant::now();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let backward_done = Instant::now();
        model = optimizer.step(5e-5, model.clone(), grads);
        let _ = model.classifier.weight.val().into_data();
        (forward_done, backward_done)
    });
    Ok(result(batch as f64, times.total, "examples/s", [batch, seq], options, times.detail()))
}

fn w2(device: &Device, options: &BenchOptions) -> Result<Value> {
    let (batch, seq) = (32usize, 256usize);
    let model = minilm_classifier(device)?;
    let data = encoder_batch(
        &mut StdRng::seed_from_u64(3),
        batch,
        seq,
        model.encoder.vocab_size(),
        device,
    );
    let mut total = Vec::new();
    for i in 0..options.repeats + 1 {
        let start = Instant::now();
        let probabilities = model.positive_probability(&data).into_data();
        let seconds = start.elapsed().as_secs_f64();
        if probabilities.num_elements() != batch {
            bail!("W2 produced {} probabilities instead of {batch}", probabilities.num_elements());
        }
        if i > 0 {
            total.push(seconds);
        }
        tracing::info!("W2 repeat {i}: {seconds:.2} s");
    }
    let seconds = median(&mut total);
    Ok(result(
        batch as f64,
        seconds,
        "examples/s",
        [batch, seq],
        options,
        json!({"seconds_per_batch": seconds}),
    ))
}

/// A LoRA train step on `preset`'s GGUF, its frozen base held as `precision` says: W3
/// (SmolLM2 decoded to f32), W5 (Gemma 3 kept in its Q4_K_M blocks, the adapters trained through
/// them) and W5F (Gemma 3 decoded to f32).
fn w3(
    device: &Device,
    options: &BenchOptions,
    name: &str,
    preset: &str,
    precision: WeightPrecision,
) -> Result<Value> {
    let (batch, seq) = (4usize, 256usize);
    let train_device = device.clone().autodiff();
    let lm =
        PretrainedCausalLm::load_with(&source::resolve_llm(preset)?, precision, &train_device)?;
    let lora = LoraConfig { r: 8, alpha: 16.0, dropout: 0.0, ..LoraConfig::default() };
    let mut model = CausalLmTrainer { lm: lm.model.attach_lora(&lora)? };
    let vocab = model.lm.vocab_size();
    let mut rng = StdRng::seed_from_u64(0);
    let examples: Vec<CausalLmExample> = (0..batch)
        .map(|_| {
            let ids = random_ids(&mut rng, seq, vocab);
            // Every position after the first is a target: the plain causal-LM loss.
            let labels = std::iter::once(None).chain(ids[1..].iter().map(|&i| Some(i))).collect();
            CausalLmExample { input_ids: ids, labels }
        })
        .collect();
    let batcher = CausalLmBatcher { pad_id: 0 };
    let mut optimizer =
        ModuleOptimizer::from(FusedAdamW { weight_decay: 0.0, ..FusedAdamW::default() });
    let times = time_train_steps(name, options.repeats, || {
        let batch_data = batcher.batch(examples.clone(), &train_device);
        let (output, target) = model.forward_train(batch_data);
        let loss = CausalLmLoss::default().forward(output, target);
        let _ = loss.clone().into_scalar::<f32>();
        let forward_done = Instant::now();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let backward_done = Instant::now();
        model = optimizer.step(1e-4, model.clone(), grads);
        let _ = model.lm.layers[0].self_attn.q_proj.lora.as_ref().map(|l| l.b.val().into_data());
        (forward_done, backward_done)
    });
    Ok(result((batch * seq) as f64, times.total, "tokens/s", [batch, seq], options, times.detail()))
}

/// Greedy generation with the KV cache from `preset`'s GGUF, its weights held as `precision`
/// says: W4 (SmolLM2, decoded to f32), W4Q (SmolLM2 Q4_1 computed from its blocks), W4G (Gemma 3
/// Q4_K_M from its blocks) and W4GF (Gemma 3 decoded to f32).
fn w4(
    device: &Device,
    options: &BenchOptions,
    preset: &str,
    precision: WeightPrecision,
) -> Result<Value> {
    let (prompt_len, new_tokens) = (128usize, 32usize);
    let lm = PretrainedCausalLm::load_with(&source::resolve_llm(preset)?, precision, device)?;
    let mut tokenizer = lm.tokenizer.clone();
    tokenizer.eos_token_ids.clear(); // always produce every new token
    let mut rng = StdRng::seed_from_u64(1);
    let prompt = random_ids(&mut rng, prompt_len, lm.model.vocab_size());
    let generator = Generator::new(&lm.model, &tokenizer);
    let generation = GenerationConfig { max_new_tokens: new_tokens, ..Default::default() };
    let prefill_only = GenerationConfig { max_new_tokens: 1, ..Default::default() };
    let (mut totals, mut prefills) = (Vec::new(), Vec::new());
    for i in 0..options.repeats + 1 {
        let start = Instant::now();
        generator.generate(std::slice::from_ref(&prompt), &prefill_only)?;
        let prefill = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let out = generator.generate(std::slice::from_ref(&prompt), &generation)?;
        let seconds = start.elapsed().as_secs_f64();
        if out[0].ids.len() != new_tokens {
            bail!("W4 produced {} tokens instead of {new_tokens}", out[0].ids.len());
        }
        if i > 0 {
            totals.push(seconds);
            prefills.push(prefill);
        }
        tracing::info!("W4 repeat {i}: {seconds:.2} s");
    }
    let (seconds, prefill) = (median(&mut totals), median(&mut prefills));
    let decode_per_token = (seconds - prefill) / (new_tokens - 1) as f64;
    let detail = json!({"seconds": seconds, "phases": {"prefill": prefill, "decode_per_token": decode_per_token}});
    Ok(result(new_tokens as f64, seconds, "tokens/s", [prompt_len, new_tokens], options, detail))
}

/// Runs the chosen workloads; an object keyed by workload name.
pub fn run(device: &Device, options: &BenchOptions) -> Result<Value> {
    let mut out = serde_json::Map::new();
    for name in &options.only {
        if options.precision.is_half() && matches!(name.as_str(), "W1" | "W3" | "W5" | "W5F") {
            bail!(
                "{name} is a training workload and training runs in f32; with --precision {} run --only W2,W4",
                options.precision
            );
        }
        let mut value = match name.as_str() {
            "W1" => w1(device, options)?,
            "W2" => w2(device, options)?,
            "W3" => w3(device, options, "W3", "smollm2-135m", WeightPrecision::Dequantized)?,
            "W5" => w3(device, options, "W5", "gemma3-270m", WeightPrecision::Quantized)?,
            "W5F" => w3(device, options, "W5F", "gemma3-270m", WeightPrecision::Dequantized)?,
            "W4" => w4(device, options, "smollm2-135m", WeightPrecision::Dequantized)?,
            "W4Q" => w4(device, options, "smollm2-135m", WeightPrecision::Quantized)?,
            "W4G" => w4(device, options, "gemma3-270m", WeightPrecision::Quantized)?,
            "W4GF" => w4(device, options, "gemma3-270m", WeightPrecision::Dequantized)?,
            other => {
                bail!("unknown workload {other:?}; known: W1, W2, W3, W4, W4Q, W4G, W4GF, W5, W5F")
            }
        };
        value["precision"] = json!(options.precision.name());
        tracing::info!("{name}: {value}");
        out.insert(name.clone(), value);
    }
    Ok(Value::Object(out))
}
