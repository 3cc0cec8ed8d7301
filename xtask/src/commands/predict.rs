//! `predict`: the submission CSV (`uuid,Keywords,label`) for every row of a file.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use papertune_tasks::{classify, llm};

use super::{PrecisionArg, device_for, single_llm_run};

#[derive(Args)]
pub struct PredictArgs {
    /// Run folder; repeat it (or give a k-fold folder) to average the runs' probabilities.
    #[arg(long, required = true)]
    run: Vec<PathBuf>,
    /// The table to predict for (CSV, TSV, Parquet, JSON lines or JSON); labels not needed.
    #[arg(long)]
    data: PathBuf,
    /// The submission CSV to write; `-` writes it to standard output.
    #[arg(long)]
    output: PathBuf,
    /// Backend: flex (CPU), ndarray (CPU), wgpu or cuda, if compiled in.
    #[arg(long)]
    backend: Option<String>,
    #[command(flatten)]
    precision: PrecisionArg,
}

pub fn run(args: PredictArgs) -> Result<()> {
    let device = device_for(args.backend.as_deref(), args.precision.precision)?;
    let report = match single_llm_run(&args.run)? {
        Some(run) => llm::predict(&run, &args.data, &args.output, &device)?,
        None => classify::predict(&args.run, &args.data, &args.output, &device)?,
    };
    tracing::info!("wrote {} rows ({} labelled 1) to {}", report.rows, report.label_1, report.output.display());
    Ok(())
}
