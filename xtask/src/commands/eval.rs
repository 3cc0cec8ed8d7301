//! `eval`: score a run (or an ensemble of classifier runs) on a labelled file; one line of JSON
//! with the metrics, `seconds` (wall time, loading included) and `examples_per_second`;
//! `--predictions FILE` keeps each row's prediction (classifier and keyword runs).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use papertune_tasks::{classify, keywords, llm};
use serde_json::Value;

use super::{KeywordReportArgs, PrecisionArg, device_for, single_llm_run};

#[derive(Args)]
pub struct EvalArgs {
    /// Run folder; repeat it (or give a k-fold folder) to average the runs' probabilities.
    #[arg(long, required = true)]
    run: Vec<PathBuf>,
    /// The labelled table to score (CSV, TSV, Parquet, JSON lines or JSON).
    #[arg(long)]
    data: PathBuf,
    /// LoRA runs: evaluate the base model without the adapter (zero-shot, same prompt).
    #[arg(long)]
    no_adapter: bool,
    /// Score only the first N rows.
    #[arg(long)]
    max_rows: Option<usize>,
    /// Keyword runs ([method] configs; LoRA keyword runs take --keyword-metric too).
    #[command(flatten)]
    report: KeywordReportArgs,
    /// Backend: flex (CPU), ndarray (CPU), wgpu or cuda, if compiled in.
    #[arg(long)]
    backend: Option<String>,
    #[command(flatten)]
    precision: PrecisionArg,
}

pub fn run(args: EvalArgs) -> Result<()> {
    args.report.check_predictions()?;
    let device = device_for(args.backend.as_deref(), args.precision.precision)?;
    let started = Instant::now();
    let literature = args.report.literature();
    let keyword_run = args.run.iter().find(|r| keywords::is_keywords_run(r));
    let metrics = if let Some(run) = keyword_run {
        anyhow::ensure!(args.run.len() == 1, "a keyword run is evaluated alone: give one --run");
        anyhow::ensure!(!args.no_adapter, "--no-adapter applies to LoRA runs only");
        let options = keywords::EvalOptions { max_rows: args.max_rows, literature };
        let (evaluation, predicted) = keywords::evaluate(run, &args.data, &options, &device)?;
        if let Some(path) = &args.report.predictions {
            keywords::write_predictions(path, &predicted)?;
        }
        serde_json::to_value(evaluation)?
    } else if let Some(run) = single_llm_run(&args.run)? {
        anyhow::ensure!(
            args.report.predictions.is_none(),
            "--predictions applies to classifier and keyword runs ([method] configs), not LoRA runs"
        );
        let options = llm::EvalOptions {
            with_adapter: !args.no_adapter,
            max_rows: args.max_rows,
            literature,
        };
        serde_json::to_value(llm::evaluate(&run, &args.data, &options, &device)?)?
    } else {
        anyhow::ensure!(!args.no_adapter, "--no-adapter applies to LoRA runs only");
        anyhow::ensure!(
            !literature,
            "--keyword-metric literature applies to keyword runs (a [method] or LoRA keywords config)"
        );
        let options = classify::EvalOptions { max_rows: args.max_rows };
        let (metrics, rows) = classify::evaluate_rows(&args.run, &args.data, &options, &device)?;
        if let Some(path) = &args.report.predictions {
            classify::write_scored_rows(path, &rows)?;
        }
        serde_json::to_value(metrics)?
    };
    println!("{}", serde_json::to_string(&with_timing(metrics, started.elapsed().as_secs_f64()))?);
    Ok(())
}

/// The metrics with the evaluation's wall time (loading the run included) and its rate.
fn with_timing(mut metrics: Value, seconds: f64) -> Value {
    if let Some(fields) = metrics.as_object_mut() {
        let n = fields.get("n").and_then(Value::as_f64).unwrap_or(0.0);
        fields.insert("seconds".into(), seconds.into());
        fields.insert("examples_per_second".into(), (n / seconds.max(1e-9)).into());
    }
    metrics
}
