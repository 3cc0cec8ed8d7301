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
}

#[derive(Subcommand)]
enum Command {
    /// Train a model from a TOML config (default: configs/default.toml).
    Train {
        #[arg(long, default_value = "configs/default.toml")]
        config: PathBuf,
        /// Backend: flex (CPU), ndarray (CPU), wgpu or cuda, if compiled in.
        #[arg(long)]
        backend: Option<String>,
        /// Override a config key, e.g. --set train.epochs=2 (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Run folder (default: runs/<config name>, numbered if taken).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Score a run on a labelled file; prints one line of JSON.
    Eval {
        #[arg(long)]
        run: PathBuf,
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
        #[arg(long)]
        run: PathBuf,
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
        /// Workloads to run, comma-separated.
        #[arg(long, default_value = "W3,W4")]
        only: String,
        /// Timed repeats after one warm-up.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Also write the JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        #[arg(long)]
        backend: Option<String>,
    },
    /// Build a data set papertune makes itself and print its files (medline-2021).
    Dataset {
        #[arg(default_value = "medline-2021")]
        name: String,
    },
}

fn main() {
    let cli = Cli::parse();
    let default_level = if cli.quiet { "warn" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)))
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    if let Err(error) = run(cli) {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn device_for(backend: Option<&str>) -> Result<burn::tensor::Device> {
    let name = backend.unwrap_or_else(|| backend::default_name());
    let device = backend::device(name)?;
    tracing::info!("backend: {name}");
    Ok(device)
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train { config, backend, overrides, out } => {
            let resolved = config::load_run_config(&config, &overrides)?;
            let device = device_for(backend.as_deref())?;
            let out = out.unwrap_or_else(|| default_run_dir(&config));
            tracing::info!("run folder: {}", out.display());
            let report = match &resolved {
                RunConfig::Classify(c) => papertune_tasks::train(c, &out, &device, !cli.quiet)?,
                RunConfig::Llm(c) => papertune_tasks::llm::train(c, &out, &device, !cli.quiet)?,
            };
            println!("run: {}", report.run.display());
            println!(
                "trained {} on {} examples ({} validation): {} steps in {:.0} s ({:.2} examples/s), final loss {:.4}",
                report.model,
                report.train_examples,
                report.valid_examples,
                report.steps,
                report.train_seconds,
                report.examples_per_second,
                report.final_loss
            );
            if let (Some(step), Some(metrics)) = (report.best_step, &report.best_metrics) {
                let line: Vec<String> = metrics.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
                println!("best checkpoint at step {step}: valid {}", line.join(", "));
            }
            println!("next: cargo xtask eval --run {} --data FILE", report.run.display());
        }
        Command::Eval { run, data, no_adapter, max_rows, backend } => {
            let device = device_for(backend.as_deref())?;
            if papertune_tasks::llm::is_llm_run(&run) {
                let metrics = papertune_tasks::llm::evaluate(&run, &data, !no_adapter, max_rows, &device)?;
                println!("{}", serde_json::to_string(&metrics)?);
            } else {
                anyhow::ensure!(!no_adapter && max_rows.is_none(), "--no-adapter and --max-rows apply to LoRA runs only");
                let metrics = papertune_tasks::evaluate(&run, &data, &device)?;
                println!("{}", serde_json::to_string(&metrics)?);
            }
        }
        Command::Predict { run, data, output, backend } => {
            let device = device_for(backend.as_deref())?;
            if papertune_tasks::llm::is_llm_run(&run) {
                let rows = papertune_tasks::llm::predict(&run, &data, &output, &device)?;
                tracing::info!("wrote {rows} rows to {}", output.display());
            } else {
                let report = papertune_tasks::predict(&run, &data, &output, &device)?;
                tracing::info!("wrote {} rows ({} labelled 1) to {}", report.rows, report.label_1, report.output.display());
            }
        }
        Command::Generate { model, prompt, chat, max_new_tokens, temperature, top_k, top_p, stop, seed, adapter, backend } => {
            let device = device_for(backend.as_deref())?;
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
            let device = device_for(backend.as_deref())?;
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
        Command::Bench { only, repeats, json, backend } => {
            let name = backend.clone().unwrap_or_else(|| backend::default_name().to_owned());
            let device = device_for(Some(&name))?;
            let options = bench::BenchOptions {
                only: only.split(',').map(|w| w.trim().to_owned()).filter(|w| !w.is_empty()).collect(),
                repeats: repeats.max(1),
                backend: name,
            };
            let results = bench::run(&device, &options)?;
            let text = serde_json::to_string_pretty(&results)?;
            if let Some(path) = json {
                papertune_models::fsutil::write_atomic(&path, text.as_bytes())?;
            }
            println!("{text}");
        }
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

