//! `cargo xtask`: papertune's command line. Reads configs, picks the backend, wires the crates.
//!
//! The rooms: `commands/` holds the user commands (train, eval, predict, report, generate,
//! embed, inspect), one file each; `dev/` the commands that measure and check papertune itself
//! (bench, gpu-check) and build its data set; `config.rs` reads run configs with `--set`
//! overrides; `backend.rs` turns a backend name into a device.

mod backend;
mod commands;
mod config;
#[cfg(test)]
mod config_doc;
mod dev;
mod output;
mod ranks;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    version,
    about = "papertune: fine-tune transformers to classify scientific papers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    globals: Globals,
}

/// The flags every command takes.
#[derive(Args, Clone)]
pub struct Globals {
    /// Only warnings and errors on stderr, no progress bar.
    #[arg(long, global = true)]
    pub quiet: bool,
    /// Log lines on stderr as `text` or as one JSON object per line (`json`, for scripts).
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Colour in log lines: `auto` (only when stderr is a terminal, TERM is not `dumb` and
    /// NO_COLOR is unset), `always` or `never`.
    #[arg(long, global = true, default_value = "auto", value_parser = ["auto", "always", "never"])]
    color: String,
}

impl Globals {
    /// Whether a progress bar may be drawn: text logs, not quiet.
    pub fn show_progress(&self) -> bool {
        !self.quiet && self.log_format == "text"
    }
}

#[derive(Subcommand)]
enum Command {
    /// Train a model from a TOML config (default: configs/default.toml).
    #[command(after_help = "Examples:
  cargo xtask train
  cargo xtask train --config configs/classify-minilm.toml --set data.train=train.csv --set data.valid=valid.csv --out runs/minilm
  cargo xtask train --resume runs/minilm --set train.max_steps=400
  cargo xtask train --config configs/lora-keywords-smollm2.toml --print-config")]
    Train(commands::train::TrainArgs),
    /// Rebuild a run folder's report.html from its files.
    #[command(after_help = "Example:\n  cargo xtask report --run runs/minilm")]
    Report(commands::report::ReportArgs),
    /// Score a run on a labelled file; prints one line of JSON.
    #[command(after_help = "Examples:
  cargo xtask eval --run runs/minilm --data valid.csv
  cargo xtask eval --run runs/folds --data valid.csv        (a k-fold folder: the ensemble)
  cargo xtask eval --run runs/kw --data valid.csv --max-rows 50 --no-adapter
  cargo xtask eval --run runs/minilm --data valid.csv --predictions scored.csv   (uuid,label,probability,gold)")]
    Eval(commands::eval::EvalArgs),
    /// Continue a prompt with a causal LM; prints the new text.
    #[command(after_help = "Examples:
  cargo xtask generate --prompt \"The heart\" --max-new-tokens 20
  cargo xtask generate --chat --prompt \"Name three keywords for: cardiac surgery outcomes\"
  cargo xtask generate --model gemma3-270m --prompt \"Keywords: heart failure,\" --top-logits 3")]
    Generate(commands::generate::GenerateArgs),
    /// Write a LoRA run's adapter (llama.cpp's LoRA GGUF) or merged model (GGUF, Hugging Face
    /// folder), or a classifier run as a transformers folder, for other tools.
    #[command(after_help = "Examples:
  cargo xtask export --run runs/minilm --format hf --out minilm-hf   (AutoModelForSequenceClassification)
  cargo xtask export --run runs/kw-gemma3 --format gguf-lora --out kw.lora.gguf
  cargo xtask export --run runs/kw-gemma3 --format gguf --type q8_0 --out kw-merged.gguf
  cargo xtask export --run runs/kw-gemma3 --format hf --out kw-hf")]
    Export(commands::export::ExportArgs),
    /// Write the submission CSV (uuid,Keywords,label) for a file.
    #[command(after_help = "Examples:
  cargo xtask predict --run runs/minilm --data testB.csv --output submission.csv
  cargo xtask predict --run runs/minilm --data testB.csv --output - | head
  cargo xtask predict --run runs/minilm --run runs/kw-best --data testB.csv --output submission.csv
  cargo xtask predict --run runs/minilm --run runs/lora-keywords --data testB.csv --output submission.csv
  cargo xtask predict --run runs/minilm --data testB.csv --output scored.csv --scores --threshold 0.3")]
    Predict(commands::predict::PredictArgs),
    /// Run a keyword extractor that needs no training on a file: with gold keywords, prints one
    /// line of JSON with the metrics; without, each row's keyphrases as JSON lines.
    #[command(after_help = "Examples:
  cargo xtask keywords --method yake --data keywords_valid.csv
  cargo xtask keywords --method yake --data testB.csv --top-k 8   (no gold keywords: {\"uuid\",\"row\",\"keywords\",\"scores\"} per row)
  cargo xtask keywords --method tfidf --idf-from keywords_train.csv --data keywords_valid.csv --keyword-metric literature
  cargo xtask keywords --method embed-rank --diversity 0.5 --data inspec.jsonl --top-k 10")]
    Keywords(commands::keywords::KeywordsArgs),
    /// Print the mean-pooled, L2-normalised sentence embedding of each text as a JSON array.
    #[command(
        after_help = "Example:\n  cargo xtask embed --model minilm --text \"cardiac surgery\" --text \"graph kernels\""
    )]
    Embed(commands::embed::EmbedArgs),
    /// Describe a run's weights; prints one line of JSON.
    #[command(after_help = "Example:\n  cargo xtask inspect --run runs/minilm --checkpoint last")]
    Inspect(commands::inspect::InspectArgs),
    /// List the model presets and the ready-made configs.
    #[command(after_help = "Example:\n  cargo xtask presets")]
    Presets,
    /// Measure workload throughput (medians after a warm-up); prints JSON.
    #[command(after_help = "Examples:
  cargo xtask bench --only W2,W4
  cargo xtask bench --compare --rounds 3 --json bench.json")]
    Bench(dev::bench::BenchArgs),
    /// On a machine with an NVIDIA GPU: the parity and training tests on CUDA, then the
    /// benchmark on CUDA (needs a build with `--features cuda`).
    #[command(
        after_help = "Example (on a machine with an NVIDIA GPU):\n  cargo run --release -p xtask --features cuda -- gpu-check"
    )]
    GpuCheck(dev::gpu_check::GpuCheckArgs),
    /// Build a data set papertune makes itself and print its files (medline-2021).
    #[command(after_help = "Example:\n  cargo xtask dataset medline-2021")]
    Dataset(dev::dataset::DatasetArgs),
}

fn main() {
    // Rust ignores SIGPIPE, so that writing to a closed pipe is an error, which `println!`
    // turns into a panic; a command-line tool ends quietly instead, as `cat` does.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to the default, before any other thread runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Freed tensor buffers are reused instead of returned to the system.
    papertune_kernels::keep_freed_memory();
    let cli = Cli::parse();
    // The ranks other than 0 of a job over several processes tell warnings and errors only.
    let default_level =
        if cli.globals.quiet || ranks::launcher_rank() > 0 { "warn" } else { "info" };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let ansi = match cli.globals.color.as_str() {
        "always" => true,
        "never" => false,
        _ => {
            use std::io::IsTerminal;
            std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::env::var("TERM").map_or(true, |t| t != "dumb")
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi);
    if cli.globals.log_format == "json" {
        logs.json().with_current_span(true).init();
    } else {
        logs.init();
    }
    papertune_tasks::show_progress(cli.globals.show_progress());
    if let Err(error) = run(cli) {
        if error.is::<commands::train::Interrupted>() {
            std::process::exit(130);
        }
        eprintln!("error: {}", describe(&error));
        std::process::exit(1);
    }
}

/// An error and its causes on one line, each cause once: an error whose message already ends
/// with its cause's (`path: No such file or directory`) does not repeat it.
pub fn describe(error: &anyhow::Error) -> String {
    let mut message = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !message.ends_with(&cause) {
            message.push_str(": ");
            message.push_str(&cause);
        }
    }
    message
}

fn run(cli: Cli) -> Result<()> {
    let globals = &cli.globals;
    match cli.command {
        Command::Train(args) => commands::train::run(args, globals),
        Command::Report(args) => commands::report::run(args),
        Command::Eval(args) => commands::eval::run(args),
        Command::Generate(args) => commands::generate::run(args),
        Command::Export(args) => commands::export::run(args),
        Command::Predict(args) => commands::predict::run(args),
        Command::Embed(args) => commands::embed::run(args),
        Command::Keywords(args) => commands::keywords::run(args),
        Command::Inspect(args) => commands::inspect::run(args),
        Command::Presets => commands::presets::run(),
        Command::Bench(args) => dev::bench::run(args),
        Command::GpuCheck(args) => dev::gpu_check::run(args),
        Command::Dataset(args) => dev::dataset::run(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_that_quotes_its_cause_is_described_once() {
        #[derive(Debug)]
        struct Quoting {
            source: std::io::Error,
        }
        impl std::fmt::Display for Quoting {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "runs/x/config.toml: {}", self.source)
            }
        }
        impl std::error::Error for Quoting {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.source)
            }
        }
        let cause =
            || std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let error = anyhow::Error::new(Quoting { source: cause() });
        assert_eq!(describe(&error), "runs/x/config.toml: No such file or directory");
        let error = anyhow::Error::new(cause()).context("reading the config");
        assert_eq!(describe(&error), "reading the config: No such file or directory");
    }
}
