//! `cargo xtask bench`: throughput of the LLM workloads on real weights with fixed random token
//! ids, as medians over repeats after a warm-up.
//!
//! - W3: SmolLM2-135M LoRA train step (r 8, alpha 16, q_proj + v_proj), batch 4 x 256 tokens,
//!   causal-LM loss on every position, AdamW -> tokens/s.
//! - W4: SmolLM2-135M greedy generation, 128-token prompt, 32 new tokens, KV cache -> new tokens/s.
//!
//! Each workload reports its phases (forward, backward, optimizer; prefill, decode) so that a
//! profile can start from the numbers.

use std::time::Instant;

use anyhow::{Result, bail};
use burn::data::dataloader::batcher::Batcher;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::Device;
use papertune_data::{CausalLmBatcher, CausalLmExample};
use papertune_models::generate::{GenerationConfig, Generator};
use papertune_models::lora::{LoraConfig, LoraModel};
use papertune_models::{PretrainedCausalLm, source};
use papertune_tasks::llm::CausalLmTrainer;
use papertune_train::{CausalLmLoss, Loss, TrainModel};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// Options of one bench run.
pub struct BenchOptions {
    pub only: Vec<String>,
    pub repeats: usize,
    pub backend: String,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn random_ids(rng: &mut StdRng, n: usize, vocab: usize) -> Vec<u32> {
    // Skip the special tokens at the start of the vocabulary.
    (0..n).map(|_| rng.random_range(32..vocab as u32)).collect()
}

/// Peak resident memory of this process so far, in MiB.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn w3(device: &Device, options: &BenchOptions) -> Result<Value> {
    let (batch, seq) = (4usize, 256usize);
    let train_device = device.clone().autodiff();
    let lm = PretrainedCausalLm::load(&source::resolve_llm("smollm2-135m")?, &train_device)?;
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
    let mut optimizer = AdamWConfig::new().with_weight_decay(0.0).init();
    let (mut forward, mut backward, mut step_time, mut total) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..options.repeats + 1 {
        let start = Instant::now();
        let batch_data = batcher.batch(examples.clone(), &train_device);
        let (output, target) = model.forward_train(batch_data);
        let loss = CausalLmLoss::default().forward(output, target);
        let _ = loss.clone().into_scalar::<f32>();
        let forward_done = Instant::now();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let backward_done = Instant::now();
        model = optimizer.step(1e-4, model, grads);
        let _ = model.lm.layers[0].self_attn.q_proj.lora.as_ref().map(|l| l.b.val().into_data());
        let end = Instant::now();
        if i > 0 {
            forward.push((forward_done - start).as_secs_f64());
            backward.push((backward_done - forward_done).as_secs_f64());
            step_time.push((end - backward_done).as_secs_f64());
            total.push((end - start).as_secs_f64());
        }
        tracing::info!("W3 repeat {i}: {:.2} s", (end - start).as_secs_f64());
    }
    let seconds = median(&mut total);
    Ok(json!({
        "throughput": (batch * seq) as f64 / seconds,
        "unit": "tokens/s",
        "peak_rss_mib": peak_rss_mib(),
        "backend": options.backend,
        "seconds_per_step": seconds,
        "phases": {"forward": median(&mut forward), "backward": median(&mut backward), "optimizer": median(&mut step_time)},
        "shape": [batch, seq],
    }))
}

fn w4(device: &Device, options: &BenchOptions) -> Result<Value> {
    let (prompt_len, new_tokens) = (128usize, 32usize);
    let lm = PretrainedCausalLm::load(&source::resolve_llm("smollm2-135m")?, device)?;
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
    let seconds = median(&mut totals);
    let prefill = median(&mut prefills);
    Ok(json!({
        "throughput": new_tokens as f64 / seconds,
        "unit": "tokens/s",
        "peak_rss_mib": peak_rss_mib(),
        "backend": options.backend,
        "seconds": seconds,
        "phases": {"prefill": prefill, "decode_per_token": (seconds - prefill) / (new_tokens - 1) as f64},
        "shape": [prompt_len, new_tokens],
    }))
}

/// Runs the chosen workloads; an object keyed by workload name.
pub fn run(device: &Device, options: &BenchOptions) -> Result<Value> {
    let mut out = serde_json::Map::new();
    for name in &options.only {
        let value = match name.as_str() {
            "W3" => w3(device, options)?,
            "W4" => w4(device, options)?,
            other => bail!("unknown workload {other:?}; known: W3, W4"),
        };
        tracing::info!("{name}: {value}");
        out.insert(name.clone(), value);
    }
    Ok(Value::Object(out))
}
