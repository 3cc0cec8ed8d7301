//! The user commands, one file each, and what they share: the device a command runs on, and
//! telling LoRA runs from classifier runs.

pub mod embed;
pub mod eval;
pub mod export;
pub mod generate;
pub mod inspect;
pub mod keywords;
pub mod predict;
pub mod presets;
pub mod report;
pub mod train;

use std::path::PathBuf;

use anyhow::Result;
use papertune_models::precision::Precision;

use crate::backend;

/// The float type an inference command computes in (`--precision`).
#[derive(clap::Args, Clone, Copy)]
pub struct PrecisionArg {
    /// Float type of the backend's tensors: f32, or half precision f16 / bf16, meant for GPUs
    /// (weights are cast as they load).
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
}

/// How a keyword evaluation reports (`eval` of a keyword run, `keywords`).
#[derive(clap::Args, Clone)]
pub struct KeywordReportArgs {
    /// `ours` (papertune's exact-match metric) or `literature` (adds what keyphrase papers
    /// report: Porter-stemmed matches, present and absent keyphrases scored apart, F1@5 and
    /// F1@M as `literature.{present,absent,all}`).
    #[arg(long, default_value = "ours", value_parser = ["ours", "literature"])]
    pub keyword_metric: String,
    /// Write each scored row's prediction. Keyword runs: JSON lines `{"uuid", "row",
    /// "keywords", "scores"}`; classifier runs: `uuid`, predicted `label`, `probability` of
    /// class 1 and `gold` label, as CSV when FILE ends in `.csv`, else JSON lines.
    #[arg(long, value_name = "FILE")]
    pub predictions: Option<PathBuf>,
    /// Replace the --predictions file if it exists.
    #[arg(long)]
    pub force: bool,
}

impl KeywordReportArgs {
    /// Refuses, before any work, a --predictions file that may not be written: an existing
    /// file without --force, a folder, a symbolic link to a file.
    pub fn check_predictions(&self) -> Result<()> {
        if let Some(path) = &self.predictions {
            papertune_tasks::run_dir::check_output(path, self.force)?;
        }
        Ok(())
    }

    /// Whether the literature's figures were asked for.
    pub fn literature(&self) -> bool {
        self.keyword_metric == "literature"
    }
}

/// The device of backend `name` (the default backend when unset) in `precision`.
pub fn device_for(backend: Option<&str>, precision: Precision) -> Result<burn::tensor::Device> {
    let name = backend.unwrap_or_else(|| backend::default_name());
    let device = backend::device(name, precision)?;
    tracing::info!("backend: {name} ({precision})");
    Ok(device)
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
