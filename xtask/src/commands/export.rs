//! `export`: a LoRA run's adapter or merged model written for llama.cpp or transformers, or a
//! classifier run written as a transformers folder (`AutoModelForSequenceClassification`).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use papertune_models::gguf::ExportType;
use papertune_tasks::llm::ExportFormat;
use papertune_tasks::run_dir::{RunDir, Which};

use super::device_for;

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// The adapter as llama.cpp's LoRA GGUF (llama-cli -m BASE.gguf --lora FILE).
    GgufLora,
    /// The merged model as a GGUF (--type q8_0 or f16) with the base file's metadata.
    Gguf,
    /// A Hugging Face folder (safetensors, config.json, tokenizer files): a LoRA run's merged
    /// model, or a classifier run for AutoModelForSequenceClassification (pooling "pooler"
    /// without head.hidden_layer; a one-logit BCE head z becomes the two logits [0, z]).
    Hf,
}

#[derive(Clone, Copy, ValueEnum)]
enum GgufType {
    #[value(name = "q8_0")]
    Q8_0,
    F16,
}

#[derive(Args)]
pub struct ExportArgs {
    /// A LoRA run folder (every format), or a classifier run folder (--format hf).
    #[arg(long)]
    run: PathBuf,
    #[arg(long, value_enum)]
    format: Format,
    /// The merged GGUF's matrices (with --format gguf).
    #[arg(long = "type", value_enum, default_value = "q8_0")]
    ty: GgufType,
    /// The file (gguf, gguf-lora) or folder (hf) to write; it must not exist.
    #[arg(long)]
    out: PathBuf,
    /// `best` or `last`.
    #[arg(long, default_value = "best")]
    checkpoint: String,
}

pub fn run(args: ExportArgs) -> Result<()> {
    let which = match args.checkpoint.as_str() {
        "best" => Which::Best,
        "last" => Which::Last,
        other => anyhow::bail!("--checkpoint {other:?}: expected best or last"),
    };
    let format = match (args.format, args.ty) {
        (Format::GgufLora, _) => ExportFormat::GgufLora,
        (Format::Gguf, GgufType::Q8_0) => ExportFormat::Gguf(ExportType::Q8_0),
        (Format::Gguf, GgufType::F16) => ExportFormat::Gguf(ExportType::F16),
        (Format::Hf, _) => ExportFormat::Hf,
    };
    if is_classifier_run(&args.run) {
        // An existing output is refused first, whatever the format, as for LoRA runs.
        anyhow::ensure!(
            !args.out.exists(),
            "invalid configuration: {} already exists; export writes a new file or folder",
            args.out.display()
        );
        anyhow::ensure!(
            matches!(format, ExportFormat::Hf),
            "{}: a classifier run is exported with --format hf (a transformers folder); gguf and gguf-lora write LoRA runs",
            args.run.display()
        );
        papertune_tasks::classify::export_hf(&args.run, which, &args.out)?;
    } else {
        let device = device_for(Some("flex"), Default::default())?;
        papertune_tasks::llm::export(&args.run, which, format, &args.out, &device)?;
    }
    tracing::info!("wrote {}", args.out.display());
    println!("{}", args.out.display());
    Ok(())
}

/// Whether `run` holds a classifier run: a config that is neither a LoRA (`[lora]`) nor a
/// keyword (`[method]`) run's.
fn is_classifier_run(run: &std::path::Path) -> bool {
    RunDir::new(run).config().is_file()
        && !papertune_tasks::llm::is_llm_run(run)
        && !papertune_tasks::keywords::is_keywords_run(run)
}
