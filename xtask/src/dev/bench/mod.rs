//! `cargo xtask bench`: throughput of the encoder and LLM workloads, alone or against PyTorch.
//!
//! - W1: MiniLM-L6 sequence classification train step (pooler head, 2 logits, cross-entropy,
//!   AdamW), batch 16 x 128 tokens -> examples/s.
//! - W2: MiniLM-L6 classification inference, batch 32 x 256 tokens -> examples/s.
//! - W3: SmolLM2-135M LoRA train step (r 8, alpha 16, q_proj + v_proj), batch 4 x 256 tokens,
//!   causal-LM loss on every position, AdamW -> tokens/s.
//! - W4: SmolLM2-135M greedy generation, 128-token prompt, 32 new tokens, KV cache -> new tokens/s,
//!   with the weights decoded to f32; W4Q the same computed from the Q4_1 blocks, W4G Gemma 3
//!   270M from its Q4_K_M blocks and W4GF Gemma 3 decoded to f32 (run with --only).
//! - W5: the W3 step on Gemma 3 270M with its frozen base kept in the Q4_K_M blocks (the
//!   adapters train through them); W5F the same base decoded to f32 (run with --only).
//!
//! The rooms: `workloads.rs` (the workloads, timed), `compare.rs` (the same against
//! transformers + PEFT, and generation against llama.cpp, in processes of their own).

mod compare;
mod workloads;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use papertune_models::precision::Precision;
use serde_json::Value;

use crate::backend;
use crate::commands::{PrecisionArg, device_for};

#[derive(Args)]
pub struct BenchArgs {
    /// Workloads to run, comma-separated (default: all four; W2,W4 with half precision).
    #[arg(long)]
    only: Option<String>,
    /// Also run bench/torch_reference.py (transformers + PEFT) on the same workloads, and
    /// llama.cpp's llama-bench on the W4 workloads' GGUF files where it is installed (on PATH
    /// or named by PAPERTUNE_LLAMA_BENCH), each in a process of its own, and print the ratios.
    #[arg(long)]
    compare: bool,
    /// Timed repeats after one warm-up.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// With --compare: runs of each side per workload, alternating which goes first; the
    /// ratio is the median of the rounds' ratios.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Also write the JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Backend: flex (CPU), ndarray (CPU), wgpu or cuda, if compiled in.
    #[arg(long)]
    backend: Option<String>,
    /// The training workloads (W1, W3) run in f32 only; half precision runs W2 and W4.
    #[command(flatten)]
    precision: PrecisionArg,
}

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

pub fn run(args: BenchArgs) -> Result<()> {
    let precision = args.precision.precision;
    let name = args.backend.unwrap_or_else(|| backend::default_name().to_owned());
    // Half precision defaults to the inference workloads.
    let only = args
        .only
        .unwrap_or_else(|| if precision.is_half() { "W2,W4" } else { "W1,W2,W3,W4" }.to_owned());
    let options = BenchOptions {
        only: only.split(',').map(|w| w.trim().to_owned()).filter(|w| !w.is_empty()).collect(),
        repeats: args.repeats.max(1),
        backend: name,
        precision,
        rounds: args.rounds.max(1),
    };
    let results = if args.compare {
        compare::compare(&options)?
    } else {
        workloads::run(&device_for(Some(&options.backend), precision)?, &options)?
    };
    let text = serde_json::to_string_pretty(&results)?;
    if let Some(path) = args.json {
        crate::output::write_atomic(&path, text.as_bytes())?;
    }
    println!("{text}");
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Peak resident memory of this process so far, in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// A JSON file written by a bench run in another process.
pub fn read_json_file(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))
}
