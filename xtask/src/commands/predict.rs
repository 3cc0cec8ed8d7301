//! `predict`: the submission CSV (`uuid,Keywords,label`) for every row of a file. A classifier
//! run (or an ensemble of them) or a LoRA run fills the column of its task; a keyword run
//! (a `[method]` config) fills `Keywords`, and beside it a classifier run or a LoRA
//! classification run fills `label`, so that one command writes both columns.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use papertune_tasks::submission::{SubmissionRow, write_submission};
use papertune_tasks::{classify, keywords, llm};

use super::{PrecisionArg, device_for, single_llm_run};

#[derive(Args)]
pub struct PredictArgs {
    /// Run folder; repeat it (or give a k-fold folder) to average the runs' probabilities. A
    /// keyword run among them fills the `Keywords` column.
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
    let (keyword_runs, others): (Vec<_>, Vec<_>) =
        args.run.iter().cloned().partition(|r| keywords::is_keywords_run(r));
    anyhow::ensure!(
        keyword_runs.len() <= 1,
        "one keyword run at most: {} given",
        keyword_runs.len()
    );
    let report = match keyword_runs.first() {
        None => match single_llm_run(&others)? {
            Some(run) => llm::predict(&run, &args.data, &args.output, &device)?,
            None => classify::predict(&others, &args.data, &args.output, &device)?,
        },
        Some(keyword_run) => {
            let llm_keywords = others
                .iter()
                .find(|r| llm::llm_run_task(r) == Some(papertune_data::InstructionTask::Keywords));
            if let Some(run) = llm_keywords {
                anyhow::bail!(
                    "{} and {} both give keywords: pass one of them, with a classifier or LoRA classification run for the labels",
                    run.display(),
                    keyword_run.display()
                );
            }
            let predicted = keywords::predict_keywords(keyword_run, &args.data, &device)?;
            let mut rows: Vec<SubmissionRow> = match single_llm_run(&others)? {
                _ if others.is_empty() => predicted
                    .iter()
                    .map(|(paper, _)| SubmissionRow {
                        uuid: paper.uuid.clone(),
                        keywords: Vec::new(),
                        label: 0,
                    })
                    .collect(),
                Some(run) => llm::submission_rows(&run, &args.data, &device)?,
                None => classify::submission_rows(&others, &args.data, &device)?,
            };
            keywords::fill_keywords(&mut rows, predicted, &args.data)?;
            write_submission(&args.output, &rows)?
        }
    };
    tracing::info!(
        "wrote {} rows ({} labelled 1) to {}",
        report.rows,
        report.label_1,
        report.output.display()
    );
    Ok(())
}
