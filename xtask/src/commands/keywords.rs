//! `keywords`: a keyword extractor that needs no training (tfidf, yake, embed-rank) run on a
//! file. With gold keywords it prints one line of JSON with the metrics and times (and can write
//! each document's keyphrases); without, it prints each document's keyphrases as JSON lines.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use papertune_tasks::keywords::{self, KeywordsConfig, MethodName};

use super::{KeywordReportArgs, PrecisionArg, device_for};

#[derive(Args)]
pub struct KeywordsArgs {
    /// tfidf, yake or embed-rank.
    #[arg(long)]
    method: MethodName,
    /// The file to extract from (title, abstract). With a keywords column of gold keywords
    /// (`;`-separated text or a JSON list) on some row, the keyphrases are scored against it;
    /// without, each row's keyphrases are printed, one JSON line per row with a title or an
    /// abstract: `{"uuid", "row", "keywords", "scores"}`.
    #[arg(long)]
    data: PathBuf,
    /// tfidf: the file whose titles and abstracts give the document frequencies.
    #[arg(long, value_name = "FILE")]
    idf_from: Option<PathBuf>,
    /// Keyphrases per document.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Longest candidate, in words.
    #[arg(long, default_value_t = 3)]
    max_ngram: usize,
    /// embed-rank: weight of diversity in maximal marginal relevance (0: cosine order).
    #[arg(long, default_value_t = 0.0)]
    diversity: f64,
    /// embed-rank: the sentence encoder (a preset, hub id or folder).
    #[arg(long, default_value = "minilm")]
    model: String,
    /// Score only the first N rows.
    #[arg(long)]
    max_rows: Option<usize>,
    #[command(flatten)]
    report: KeywordReportArgs,
    /// Backend: flex (CPU), ndarray (CPU), wgpu or cuda, if compiled in.
    #[arg(long)]
    backend: Option<String>,
    #[command(flatten)]
    precision: PrecisionArg,
}

pub fn run(args: KeywordsArgs) -> Result<()> {
    args.report.check_predictions()?;
    anyhow::ensure!(
        !args.method.trains(),
        "the tagger is trained: cargo xtask train --config configs/keywords-best.toml"
    );
    anyhow::ensure!(
        args.idf_from.is_some() || args.method != MethodName::Tfidf,
        "--method tfidf needs --idf-from FILE (e.g. the training file)"
    );
    anyhow::ensure!(
        args.idf_from.is_none() || args.method == MethodName::Tfidf,
        "--idf-from applies to --method tfidf only"
    );
    let device = device_for(args.backend.as_deref(), args.precision.precision)?;
    let mut config = KeywordsConfig::default();
    config.method.name = args.method;
    config.method.top_k = args.top_k;
    config.method.max_ngram = args.max_ngram;
    config.method.diversity = args.diversity;
    config.model.source = args.model.clone();
    config.model.eval_batch_size = Some(128);
    config.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let started = Instant::now();
    let idf_texts = match &args.idf_from {
        Some(path) => keywords::read_texts(&config, path)?,
        None => Vec::new(),
    };
    let keyphraser = keywords::Keyphraser::prepare(&config, &idf_texts, None, &device)?;
    let prepare_seconds = started.elapsed().as_secs_f64();
    if !keywords::has_gold_keywords(&config, &args.data, args.max_rows)? {
        anyhow::ensure!(
            !args.report.literature(),
            "--keyword-metric literature scores gold keywords, and no row of {} has any",
            args.data.display()
        );
        tracing::info!(
            "{}: no row has gold keywords: printing each row's keyphrases",
            args.data.display()
        );
        let rows =
            keywords::extract_with(&config, &keyphraser, &args.data, args.max_rows, &device)?;
        if let Some(path) = &args.report.predictions {
            keywords::write_predictions(path, &rows)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        print!("{}", keywords::predictions_text(&rows));
        return Ok(());
    }
    let options =
        keywords::EvalOptions { max_rows: args.max_rows, literature: args.report.literature() };
    let (evaluation, predicted) =
        keywords::evaluate_with(&config, &keyphraser, &args.data, &options, &device)?;
    if let Some(path) = &args.report.predictions {
        keywords::write_predictions(path, &predicted)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let mut json = serde_json::to_value(&evaluation)?;
    json["prepare_seconds"] = prepare_seconds.into();
    json["seconds"] = started.elapsed().as_secs_f64().into();
    println!("{}", serde_json::to_string(&json)?);
    Ok(())
}
