//! `cargo xtask bench`: throughput of the encoder and LLM workloads on real weights with fixed
//! random token ids, as medians over repeats after a warm-up.
//!
//! - W1: MiniLM-L6 sequence classification train step (pooler head, 2 logits, cross-entropy,
//!   AdamW), batch 16 x 128 tokens -> examples/s.
//! - W2: MiniLM-L6 classification inference, batch 32 x 256 tokens -> examples/s.
//! - W3: SmolLM2-135M LoRA train step (r 8, alpha 16, q_proj + v_proj), batch 4 x 256 tokens,
//!   causal-LM loss on every position, AdamW -> tokens/s.
//! - W4: SmolLM2-135M greedy generation, 128-token prompt, 32 new tokens, KV cache -> new tokens/s.
//!
//! Each workload reports its phases (forward, backward, optimizer; prefill, decode) so that a
//! profile can start from the numbers.

use std::time::Instant;

use anyhow::{Result, bail};
use burn::data::dataloader::batcher::Batcher;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::Device;
use papertune_data::{CausalLmBatcher, CausalLmExample, ClassificationBatcher, ClassificationItem, Encoded, TokenBatch};
use papertune_models::generate::{GenerationConfig, Generator};
use papertune_models::lora::{LoraConfig, LoraModel};
use papertune_models::precision::Precision;
use papertune_models::{PretrainedCausalLm, PretrainedEncoder, source};
use papertune_tasks::llm::CausalLmTrainer;
use papertune_tasks::{HeadConfig, SequenceClassifier};
use papertune_train::{CausalLmLoss, CrossEntropyLoss, FusedAdamW, Loss, TrainModel};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// Options of one bench run.
pub struct BenchOptions {
    pub only: Vec<String>,
    pub repeats: usize,
    pub backend: String,
    /// Float type of the device; the training workloads (W1, W3) run in f32 only.
    pub precision: Precision,
    /// `--compare`: how many times each side runs each workload, alternating.
    pub rounds: usize,
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

/// Medians of train-step phases over `repeats` timed steps after one warm-up; `step` runs one
/// step and returns the instants at which its forward and backward passes ended.
struct StepTimes {
    forward: f64,
    backward: f64,
    optimizer: f64,
    total: f64,
}

fn time_train_steps(name: &str, repeats: usize, mut step: impl FnMut() -> (Instant, Instant)) -> StepTimes {
    let (mut forward, mut backward, mut optimizer, mut total) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
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
    StepTimes { forward: median(&mut forward), backward: median(&mut backward), optimizer: median(&mut optimizer), total: median(&mut total) }
}

/// A batch of `batch` rows of `seq` random word-piece ids between `[CLS]` and `[SEP]`, no
/// padding, labels alternating.
fn encoder_batch(rng: &mut StdRng, batch: usize, seq: usize, vocab: usize, device: &Device) -> TokenBatch {
    let items = (0..batch)
        .map(|i| {
            // 999..: past BERT's [unused] and special tokens.
            let mut ids = vec![101u32];
            ids.extend((0..seq - 2).map(|_| rng.random_range(999..vocab as u32)));
            ids.push(102);
            ClassificationItem { tokens: Encoded { type_ids: vec![0; seq], ids }, label: (i % 2) as u8 }
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
    let mut optimizer = ModuleOptimizer::from(FusedAdamW { weight_decay: 0.01, ..FusedAdamW::default() });
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
    let seconds = times.total;
    Ok(json!({
        "throughput": batch as f64 / seconds,
        "unit": "examples/s",
        "peak_rss_mib": peak_rss_mib(),
        "backend": options.backend,
        "seconds_per_step": seconds,
        "phases": {"forward": times.forward, "backward": times.backward, "optimizer": times.optimizer},
        "shape": [batch, seq],
    }))
}

fn w2(device: &Device, options: &BenchOptions) -> Result<Value> {
    let (batch, seq) = (32usize, 256usize);
    let model = minilm_classifier(device)?;
    let data = encoder_batch(&mut StdRng::seed_from_u64(3), batch, seq, model.encoder.vocab_size(), device);
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
    Ok(json!({
        "throughput": batch as f64 / seconds,
        "unit": "examples/s",
        "peak_rss_mib": peak_rss_mib(),
        "backend": options.backend,
        "seconds_per_batch": seconds,
        "shape": [batch, seq],
    }))
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
    let mut optimizer = ModuleOptimizer::from(FusedAdamW { weight_decay: 0.0, ..FusedAdamW::default() });
    let times = time_train_steps("W3", options.repeats, || {
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
    let seconds = times.total;
    Ok(json!({
        "throughput": (batch * seq) as f64 / seconds,
        "unit": "tokens/s",
        "peak_rss_mib": peak_rss_mib(),
        "backend": options.backend,
        "seconds_per_step": seconds,
        "phases": {"forward": times.forward, "backward": times.backward, "optimizer": times.optimizer},
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
        if options.precision.is_half() && matches!(name.as_str(), "W1" | "W3") {
            bail!("{name} is a training workload and training runs in f32; with --precision {} run --only W2,W4", options.precision);
        }
        let mut value = match name.as_str() {
            "W1" => w1(device, options)?,
            "W2" => w2(device, options)?,
            "W3" => w3(device, options)?,
            "W4" => w4(device, options)?,
            other => bail!("unknown workload {other:?}; known: W1, W2, W3, W4"),
        };
        value["precision"] = json!(options.precision.name());
        tracing::info!("{name}: {value}");
        out.insert(name.clone(), value);
    }
    Ok(Value::Object(out))
}

/// Where the PyTorch side finds the same weights.
fn reference_weights() -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let minilm = source::resolve("minilm")?;
    let minilm_dir = minilm.config.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    let gguf = match source::resolve_llm("smollm2-135m")? {
        source::LlmFiles::Gguf(path) => path,
        source::LlmFiles::Folder { .. } => bail!("the smollm2-135m preset is expected to be a GGUF file"),
    };
    Ok((minilm_dir, gguf))
}

pub fn read_json_file(path: &std::path::Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// `--compare`: each workload in a process of its own on both sides (so that peak memory is the
/// workload's), PyTorch through `bench/torch_reference.py`, `rounds` times each, alternating
/// which side goes first; prints the ratio table and returns papertune's results with the
/// PyTorch figures and ratios added.
///
/// This machine's speed drifts by tens of percent over minutes, which moves one side's figure
/// and not the other's. So each round pairs a papertune run with the PyTorch run next to it,
/// and the reported ratio is the median of the rounds' ratios; the throughputs are each side's
/// median and the peak memory each side's largest.
pub fn compare(options: &BenchOptions) -> Result<Value> {
    if options.precision.is_half() {
        bail!("--compare measures against PyTorch in f32; drop --precision {}", options.precision);
    }
    let (minilm_dir, gguf) = reference_weights()?;
    let scratch = tempfile_dir()?;
    let exe = std::env::current_exe()?;
    let repeats = options.repeats.to_string();
    let run_ours = |name: &str, json: &std::path::Path| -> Result<Value> {
        tracing::info!("{name}: papertune ({})", options.backend);
        let status = std::process::Command::new(&exe)
            .args(["bench", "--only", name, "--repeats", &repeats, "--backend", &options.backend])
            .arg("--json")
            .arg(json)
            .stdout(std::process::Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "papertune's {name} failed ({status})");
        Ok(read_json_file(json)?[name].clone())
    };
    let run_theirs = |name: &str, json: &std::path::Path| -> Result<Value> {
        tracing::info!("{name}: PyTorch");
        let status = std::process::Command::new("python3")
            .arg("bench/torch_reference.py")
            .args(["--only", name, "--repeats", &repeats])
            .arg("--minilm")
            .arg(&minilm_dir)
            .arg("--gguf")
            .arg(&gguf)
            .arg("--json")
            .arg(json)
            .stdout(std::process::Stdio::null())
            .status()
            .map_err(|e| anyhow::anyhow!("cannot run python3 bench/torch_reference.py: {e}"))?;
        anyhow::ensure!(status.success(), "bench/torch_reference.py {name} failed ({status}); it needs torch, transformers, peft and gguf");
        Ok(read_json_file(json)?[name].clone())
    };
    let number = |v: &Value, key: &str| v[key].as_f64().unwrap_or(f64::NAN);
    let mut out = serde_json::Map::new();
    let mut table = vec![
        "| workload | unit | papertune | PyTorch | ratio | ratio by round | peak RSS papertune (MiB) | peak RSS PyTorch (MiB) |".to_owned(),
        "|---|---|---|---|---|---|---|---|".to_owned(),
    ];
    for name in &options.only {
        let (ours_json, theirs_json) = (scratch.join(format!("{name}.papertune.json")), scratch.join(format!("{name}.torch.json")));
        let mut rounds = Vec::new();
        for round in 0..options.rounds.max(1) {
            let (ours, theirs) = if round % 2 == 0 {
                let ours = run_ours(name, &ours_json)?;
                (ours, run_theirs(name, &theirs_json)?)
            } else {
                let theirs = run_theirs(name, &theirs_json)?;
                (run_ours(name, &ours_json)?, theirs)
            };
            tracing::info!(
                "{name} round {}: papertune {:.2}, PyTorch {:.2}",
                round + 1,
                number(&ours, "throughput"),
                number(&theirs, "throughput")
            );
            rounds.push((ours, theirs));
        }
        let side = |pick: fn(&(Value, Value)) -> &Value, key: &str| rounds.iter().map(|r| number(pick(r), key)).collect::<Vec<f64>>();
        let by_round: Vec<f64> = rounds.iter().map(|(o, t)| number(o, "throughput") / number(t, "throughput")).collect();
        let ratio = median(&mut by_round.clone());
        let (ours_tp, theirs_tp) = (median(&mut side(|r| &r.0, "throughput")), median(&mut side(|r| &r.1, "throughput")));
        let peak = |values: Vec<f64>| values.into_iter().fold(f64::NAN, f64::max);
        let (ours_rss, theirs_rss) = (peak(side(|r| &r.0, "peak_rss_mib")), peak(side(|r| &r.1, "peak_rss_mib")));
        let (mut ours, mut theirs) = rounds.last().cloned().expect("at least one round");
        table.push(format!(
            "| {name} | {} | {ours_tp:.2} | {theirs_tp:.2} | {ratio:.2} | {} | {ours_rss:.0} | {theirs_rss:.0} |",
            ours["unit"].as_str().unwrap_or(""),
            by_round.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", "),
        ));
        theirs["throughput"] = json!(theirs_tp);
        theirs["peak_rss_mib"] = json!(theirs_rss);
        ours["throughput"] = json!(ours_tp);
        ours["peak_rss_mib"] = json!(ours_rss);
        ours["pytorch"] = theirs;
        ours["ratio"] = json!(ratio);
        ours["ratios_by_round"] = json!(by_round);
        out.insert(name.clone(), ours);
    }
    println!("{}", table.join("\n"));
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(Value::Object(out))
}

pub fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("papertune-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
