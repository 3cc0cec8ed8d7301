//! `cargo xtask`: papertune's command line. Reads configs, picks the backend, wires the crates.

mod backend;
mod bench;
mod config;
mod medline;

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Parser, Subcommand};
use papertune_data::TextTokenizer;
use papertune_models::generate::{GenerationConfig, Generator};
use papertune_models::lora::LoraModel;
use papertune_models::precision::Precision;
use papertune_models::{ChatMessage, PretrainedCausalLm, PretrainedEncoder, source};
use config::RunConfig;
use papertune_tasks::Which;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "papertune: fine-tune transformers to classify scientific papers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Only warnings and errors on stderr, no progress bar.
    #[arg(long, global = true)]
    quiet: bool,
    /// Log lines on stderr as `text` or as one JSON object per line (`json`, for scripts).
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Float type of the backend's tensors: f32, or half precision f16 / bf16 for inference
    /// (eval, predict, generate, embed, bench W2 and W4), meant for GPUs. Training runs in f32.
    #[arg(long, global = true, default_value = "f32")]
    precision: Precision,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model from a TOML config (default: configs/default.toml).
    Train {
        /// The run config (default: configs/default.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Backend: flex (CPU), ndarray (CPU), wgpu or cuda, if compiled in.
        #[arg(long)]
        backend: Option<String>,
        /// Override a config key, e.g. --set train.epochs=2 (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Run folder (default: runs/<config name>, numbered if taken).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue the run in this folder from its last checkpoint, with its own config
        /// (training options may be changed with --set).
        #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "out", "folds"])]
        resume: Option<PathBuf>,
        /// Train K runs on stratified folds of data.train (out/fold-1 ... fold-K); eval and
        /// predict take the parent folder as the ensemble of the folds. Classification only.
        #[arg(long, value_name = "K")]
        folds: Option<usize>,
        /// Stop after this optimizer step with a resumable checkpoint (train in sessions).
        #[arg(long, value_name = "N")]
        stop_at_step: Option<usize>,
        /// Data parallelism over N devices of the backend (GPUs 0..N-1; on a CPU backend, N
        /// threads sharing the cores): each step's micro-batches are shared among them, so
        /// train.gradient_accumulation_steps must be at least N.
        #[arg(long, value_name = "N", default_value_t = 1)]
        devices: usize,
    },
    /// Rebuild a run folder's report.html from its files.
    Report {
        #[arg(long)]
        run: PathBuf,
    },
    /// Score a run on a labelled file; prints one line of JSON.
    Eval {
        /// Run folder; repeat it (or give a k-fold folder) to average the runs' probabilities.
        #[arg(long, required = true)]
        run: Vec<PathBuf>,
        #[arg(long)]
        data: PathBuf,
        /// LoRA runs: evaluate the base model without the adapter (zero-shot, same prompt).
        #[arg(long)]
        no_adapter: bool,
        /// LoRA runs: score only the first N rows.
        #[arg(long)]
        max_rows: Option<usize>,
        #[arg(long)]
        backend: Option<String>,
    },
    /// Continue a prompt with a causal LM; prints the new text.
    Generate {
        /// Preset (smollm2-135m), .gguf file, model folder or hub id.
        #[arg(long, default_value = "smollm2-135m")]
        model: String,
        #[arg(long)]
        prompt: String,
        /// Wrap the prompt as a user message in the model's chat template.
        #[arg(long)]
        chat: bool,
        #[arg(long, default_value_t = 64)]
        max_new_tokens: usize,
        /// 0 decodes greedily.
        #[arg(long, default_value_t = 0.0)]
        temperature: f64,
        #[arg(long)]
        top_k: Option<usize>,
        #[arg(long)]
        top_p: Option<f64>,
        /// Stop when the text contains this (repeatable).
        #[arg(long = "stop")]
        stop: Vec<String>,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// A PEFT adapter folder to apply.
        #[arg(long)]
        adapter: Option<PathBuf>,
        #[arg(long)]
        backend: Option<String>,
    },
    /// Write the submission CSV (uuid,Keywords,label) for a file.
    Predict {
        /// Run folder; repeat it (or give a k-fold folder) to average the runs' probabilities.
        #[arg(long, required = true)]
        run: Vec<PathBuf>,
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        output: PathBuf,
        #[arg(long)]
        backend: Option<String>,
    },
    /// Print the mean-pooled, L2-normalised sentence embedding of a text as a JSON array.
    Embed {
        /// Preset, Hugging Face id or checkpoint folder.
        #[arg(long)]
        model: String,
        #[arg(long)]
        text: String,
        /// Longest input in tokens (sentence-transformers uses 256 for MiniLM).
        #[arg(long, default_value_t = 256)]
        max_len: usize,
        #[arg(long)]
        backend: Option<String>,
    },
    /// Describe a run's weights; prints one line of JSON.
    Inspect {
        #[arg(long)]
        run: PathBuf,
        /// `best` or `last`.
        #[arg(long, default_value = "best")]
        checkpoint: String,
    },
    /// Measure workload throughput (medians after a warm-up); prints JSON.
    Bench {
        /// Workloads to run, comma-separated (default: all four; W2,W4 with half precision).
        #[arg(long)]
        only: Option<String>,
        /// Also run bench/torch_reference.py (transformers + PEFT) on the same workloads, each
        /// in a process of its own, and print the papertune/PyTorch ratios.
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
        #[arg(long)]
        backend: Option<String>,
    },
    /// On a machine with an NVIDIA GPU: the parity and training tests on CUDA, then the
    /// benchmark on CUDA (needs a build with `--features cuda`).
    GpuCheck {
        /// Also write the benchmark's JSON here.
        #[arg(long, default_value = "gpu-check.json")]
        json: PathBuf,
        /// Timed repeats of each workload.
        #[arg(long, default_value_t = 5)]
        repeats: usize,
    },
    /// Build a data set papertune makes itself and print its files (medline-2021).
    Dataset {
        #[arg(default_value = "medline-2021")]
        name: String,
    },
}

fn main() {
    // Freed tensor buffers are reused instead of returned to the system (papertune_models::memory).
    papertune_models::memory::keep_freed_memory();
    let cli = Cli::parse();
    let default_level = if cli.quiet { "warn" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    if cli.log_format == "json" {
        logs.json().with_current_span(true).init();
    } else {
        logs.init();
    }
    if let Err(error) = run(cli) {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn device_for(backend: Option<&str>, precision: Precision) -> Result<burn::tensor::Device> {
    let name = backend.unwrap_or_else(|| backend::default_name());
    let device = backend::device(name, precision)?;
    tracing::info!("backend: {name} ({precision})");
    Ok(device)
}

fn run(cli: Cli) -> Result<()> {
    let precision = cli.precision;
    match cli.command {
        Command::Train { config, backend, overrides, out, resume, folds, stop_at_step, devices } => {
            let resuming = resume.is_some();
            let (config, out) = match resume {
                Some(dir) => (dir.join("config.toml"), dir),
                None => {
                    let config = config.unwrap_or_else(|| PathBuf::from("configs/default.toml"));
                    let out = out.unwrap_or_else(|| default_run_dir(&config));
                    (config, out)
                }
            };
            anyhow::ensure!(
                !precision.is_half(),
                "training runs in f32 (--precision {precision} applies to eval, predict, generate, embed and bench W2/W4): \
                 pure half-precision updates round away AdamW's small steps, and mixed precision is not implemented"
            );
            let resolved = config::load_run_config(&config, &overrides)?;
            let backend_name = backend.clone().unwrap_or_else(|| backend::default_name().to_owned());
            let device = device_for(Some(&backend_name), precision)?;
            let options = papertune_tasks::TrainOptions {
                show_progress: !cli.quiet && cli.log_format == "text",
                resume: resuming,
                stop: Some(papertune_train::stop_on_signals()?),
                stop_at_step,
                devices: backend::devices(&backend_name, devices, precision)?,
                backend: Some(backend_name),
            };
            tracing::info!("run folder: {}{}", out.display(), if options.resume { " (resuming)" } else { "" });
            let reports = match (&resolved, folds) {
                (RunConfig::Classify(c), Some(k)) => papertune_tasks::train_folds(c, &out, k, &device, &options)?,
                (RunConfig::Classify(c), None) => vec![papertune_tasks::train_with(c, &out, &device, &options)?],
                (RunConfig::Llm(_), Some(_)) => anyhow::bail!("--folds applies to classification configs only"),
                (RunConfig::Llm(c), None) => vec![papertune_tasks::llm::train_with(c, &out, &device, &options)?],
            };
            // Repeated in the resume hint of an interrupted run: a resume takes them from the
            // command line, not from the run folder (the device count does not change the result).
            let mut resume_flags = String::new();
            if let Some(name) = &backend {
                resume_flags.push_str(&format!(" --backend {name}"));
            }
            if devices > 1 {
                resume_flags.push_str(&format!(" --devices {devices}"));
            }
            for report in &reports {
                print_train_report(report, &resume_flags);
            }
            let shown = if folds.is_some() { out.clone() } else { reports[0].run.clone() };
            println!("next: cargo xtask eval --run {} --data FILE", shown.display());
        }
        Command::Report { run } => {
            let path = papertune_train::report::write_report(&run)?;
            println!("{}", path.display());
        }
        Command::Eval { run, data, no_adapter, max_rows, backend } => {
            let device = device_for(backend.as_deref(), precision)?;
            if let Some(run) = single_llm_run(&run)? {
                let metrics = papertune_tasks::llm::evaluate(&run, &data, !no_adapter, max_rows, &device)?;
                println!("{}", serde_json::to_string(&metrics)?);
            } else {
                anyhow::ensure!(!no_adapter && max_rows.is_none(), "--no-adapter and --max-rows apply to LoRA runs only");
                let metrics = papertune_tasks::evaluate_runs(&run, &data, &device)?;
                println!("{}", serde_json::to_string(&metrics)?);
            }
        }
        Command::Predict { run, data, output, backend } => {
            let device = device_for(backend.as_deref(), precision)?;
            if let Some(run) = single_llm_run(&run)? {
                let rows = papertune_tasks::llm::predict(&run, &data, &output, &device)?;
                tracing::info!("wrote {rows} rows to {}", output.display());
            } else {
                let report = papertune_tasks::predict_runs(&run, &data, &output, &device)?;
                tracing::info!("wrote {} rows ({} labelled 1) to {}", report.rows, report.label_1, report.output.display());
            }
        }
        Command::Generate { model, prompt, chat, max_new_tokens, temperature, top_k, top_p, stop, seed, adapter, backend } => {
            let device = device_for(backend.as_deref(), precision)?;
            let files = source::resolve_llm(&model)?;
            let lm = PretrainedCausalLm::load(&files, &device)?;
            let mut weights = lm.model;
            if let Some(dir) = adapter {
                weights = papertune_models::lora::load_peft_adapter(weights, &dir)?.0.merge_lora();
            }
            let text = if chat { lm.tokenizer.apply_chat_template(&[ChatMessage::user(prompt)], true)? } else { prompt };
            let ids = lm.tokenizer.encode(&text, true)?;
            let generation = GenerationConfig { max_new_tokens, temperature, top_k, top_p, stop_strings: stop, seed };
            let out = Generator::new(&weights, &lm.tokenizer).generate(&[ids], &generation)?.remove(0);
            tracing::info!("{} new tokens, finished by {:?}", out.ids.len(), out.finish_reason);
            println!("{}", out.text);
        }
        Command::Embed { model, text, max_len, backend } => {
            let device = device_for(backend.as_deref(), precision)?;
            let files = source::resolve(&model)?;
            let encoder = PretrainedEncoder::load(&files, &device)?;
            let max_len = max_len.min(encoder.config.max_sequence_len());
            let tokenizer = TextTokenizer::from_file(&files.tokenizer, max_len)?;
            let embeddings = papertune_tasks::embed::sentence_embeddings(&encoder, &tokenizer, &[text], &device)?;
            println!("{}", serde_json::to_string(&embeddings[0])?);
        }
        Command::Inspect { run, checkpoint } => {
            let which = match checkpoint.as_str() {
                "best" => Which::Best,
                "last" => Which::Last,
                other => anyhow::bail!("--checkpoint {other:?}: expected best or last"),
            };
            let report = papertune_tasks::inspect(&run, which)?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Command::Bench { only, repeats, rounds, json, backend, compare } => {
            let name = backend.clone().unwrap_or_else(|| backend::default_name().to_owned());
            let device = device_for(Some(&name), precision)?;
            // Half precision defaults to the inference workloads.
            let only = only.unwrap_or_else(|| if precision.is_half() { "W2,W4" } else { "W1,W2,W3,W4" }.to_owned());
            let options = bench::BenchOptions {
                only: only.split(',').map(|w| w.trim().to_owned()).filter(|w| !w.is_empty()).collect(),
                repeats: repeats.max(1),
                backend: name,
                precision,
                rounds: rounds.max(1),
            };
            let results = if compare { bench::compare(&options)? } else { bench::run(&device, &options)? };
            let text = serde_json::to_string_pretty(&results)?;
            if let Some(path) = json {
                papertune_models::fsutil::write_atomic(&path, text.as_bytes())?;
            }
            println!("{text}");
        }
        Command::GpuCheck { json, repeats } => gpu_check(&json, repeats)?,
        Command::Dataset { name } => {
            anyhow::ensure!(name == "medline-2021", "unknown data set {name:?}; known: medline-2021");
            let files = medline::build()?;
            for path in [files.train, files.valid, files.test] {
                println!("{}", path.display());
            }
        }
    }
    Ok(())
}

/// `gpu-check`: CUDA must be compiled in and a driver present; runs the parity, half-precision
/// and backend tests with CUDA required, then the four workloads on CUDA in f32 and the
/// inference workloads in bf16 and f16.
fn gpu_check(json: &Path, repeats: usize) -> Result<()> {
    anyhow::ensure!(
        backend::compiled_in().contains(&"cuda"),
        "gpu-check needs CUDA compiled in: cargo run --release -p xtask --features cuda -- gpu-check"
    );
    anyhow::ensure!(
        Path::new("/proc/driver/nvidia/version").exists(),
        "no NVIDIA driver here (/proc/driver/nvidia/version is missing)"
    );
    tracing::info!("parity and training tests on cuda");
    let status = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["test", "--release", "-p", "papertune-integration", "--features", "cuda"])
        .args(["--test", "encoder_parity", "--test", "backends", "--test", "half_precision_bf16", "--test", "half_precision_f16"])
        .args(["--", "--nocapture"])
        .env("PAPERTUNE_REQUIRE_BACKENDS", "cuda")
        .status()?;
    anyhow::ensure!(status.success(), "the CUDA tests failed ({status})");
    // A device's float type is fixed at its first tensor, so each precision runs in a process
    // of its own: this binary again, with `bench`.
    let exe = std::env::current_exe()?;
    let scratch = bench::tempfile_dir()?;
    let mut results = serde_json::Map::new();
    for precision in Precision::ALL {
        tracing::info!("benchmark on cuda in {precision}");
        let out = scratch.join(format!("{precision}.json"));
        let status = std::process::Command::new(&exe)
            .args(["bench", "--backend", "cuda", "--precision", precision.name(), "--repeats", &repeats.max(1).to_string()])
            .arg("--json")
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "the cuda benchmark in {precision} failed ({status})");
        results.insert(precision.name().to_owned(), bench::read_json_file(&out)?);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let text = serde_json::to_string_pretty(&serde_json::Value::Object(results))?;
    papertune_models::fsutil::write_atomic(json, text.as_bytes())?;
    println!("{text}");
    Ok(())
}

/// The LoRA run among `runs`, if they are one; several runs are an ensemble of classifiers.
fn single_llm_run(runs: &[PathBuf]) -> Result<Option<PathBuf>> {
    let llm = runs.iter().filter(|r| papertune_tasks::llm::is_llm_run(r)).count();
    match (llm, runs.len()) {
        (0, _) => Ok(None),
        (1, 1) => Ok(Some(runs[0].clone())),
        _ => anyhow::bail!("ensembles (several --run) are supported for classification runs only"),
    }
}

fn print_train_report(report: &papertune_tasks::TrainReport, resume_flags: &str) {
    println!("run: {}", report.run.display());
    println!(
        "trained {} on {} examples ({} validation): {} steps in {:.0} s ({:.2} examples/s, {:.0} tokens/s), final loss {:.4}{}",
        report.model,
        report.train_examples,
        report.valid_examples,
        report.steps,
        report.train_seconds,
        report.examples_per_second,
        report.tokens_per_second,
        report.final_loss,
        match report.stop_reason {
            papertune_train::StopReason::Completed => String::new(),
            papertune_train::StopReason::EarlyStopping => ", stopped early".into(),
            papertune_train::StopReason::Interrupted =>
                format!(" -- interrupted; continue with: cargo xtask train --resume {}{resume_flags}", report.run.display()),
        }
    );
    if let (Some(step), Some(metrics)) = (report.best_step, &report.best_metrics) {
        let line: Vec<String> = metrics.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
        println!("best checkpoint at step {step}: valid {}", line.join(", "));
    }
    println!("report: {}", report.run.join("report.html").display());
}

/// `runs/<config stem>`, or `runs/<stem>-2`, `-3`, ... when taken.
fn default_run_dir(config: &Path) -> PathBuf {
    let stem = config.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
    let base = Path::new("runs").join(&stem);
    let taken = |p: &Path| p.exists() && std::fs::read_dir(p).map(|mut d| d.next().is_some()).unwrap_or(true);
    if !taken(&base) {
        return base;
    }
    (2..)
        .map(|i| Path::new("runs").join(format!("{stem}-{i}")))
        .find(|p| !taken(p))
        .expect("some numbered folder is free")
}

