//! `eval`: score a run (or an ensemble of classifier runs) on a labelled file; one line of JSON.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use papertune_tasks::{classify, llm};

use super::{device_for, single_llm_run};
use crate::Globals;

#[derive(Args)]
pub struct EvalArgs {
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
}

pub fn run(args: EvalArgs, globals: &Globals) -> Result<()> {
    let device = device_for(args.backend.as_deref(), globals.precision)?;
    if let Some(run) = single_llm_run(&args.run)? {
        let options = llm::EvalOptions { with_adapter: !args.no_adapter, max_rows: args.max_rows };
        let metrics = llm::evaluate(&run, &args.data, &options, &device)?;
        println!("{}", serde_json::to_string(&metrics)?);
    } else {
        anyhow::ensure!(!args.no_adapter && args.max_rows.is_none(), "--no-adapter and --max-rows apply to LoRA runs only");
        let metrics = classify::evaluate(&args.run, &args.data, &device)?;
        println!("{}", serde_json::to_string(&metrics)?);
    }
    Ok(())
}
