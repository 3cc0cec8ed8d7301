//! `predict`: the submission CSV (`uuid,Keywords,label`) for every row of a file. A classifier
//! run (or an ensemble of them) or a LoRA classification run fills `label`; a keyword run (a
//! `[method]` config) or a LoRA keyword run fills `Keywords`; given together, one command writes
//! both columns. Without a run for the labels the `label` column is left empty. `--scores` and
//! `--logits` add each class's probability and logit after the label.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use papertune_data::InstructionTask;
use papertune_tasks::submission::{SubmissionRow, keep_scores, write_submission};
use papertune_tasks::{classify, keywords, llm};

use super::{PrecisionArg, device_for, single_llm_run};

#[derive(Args)]
pub struct PredictArgs {
    /// Run folder; repeat it (or give a k-fold folder) to average the runs' probabilities. A
    /// keyword run ([method] config) or a LoRA keyword run among them fills the `Keywords`
    /// column; without a classifier or LoRA classification run the `label` column is empty.
    #[arg(long, required = true)]
    run: Vec<PathBuf>,
    /// The table to predict for (CSV, TSV, Parquet, JSON lines or JSON); labels not needed.
    #[arg(long)]
    data: PathBuf,
    /// The submission CSV to write; `-` writes it to standard output, a FIFO or a device is
    /// written to in place; an existing file only with --force.
    #[arg(long)]
    output: PathBuf,
    /// Replace the --output file if it exists.
    #[arg(long)]
    force: bool,
    /// Add the probability of each class after the label: columns `prob_0,prob_1` (an
    /// ensemble's mean; a one-logit BCE head gets both too).
    #[arg(long)]
    scores: bool,
    /// Add the logit of each class: columns `logit_0,logit_1` (one classifier run; a one-logit
    /// BCE head's `z` is written as `0,z`, whose softmax is its sigmoid).
    #[arg(long)]
    logits: bool,
    /// Label 1 where the probability of class 1 is above P, instead of the run's threshold (the
    /// one tuned on validation data, else `head.threshold`; 0.5 for LoRA runs); P in [0, 1].
    #[arg(long, value_name = "P")]
    threshold: Option<f64>,
    /// Backend: flex (CPU), ndarray (CPU), wgpu or cuda, if compiled in.
    #[arg(long)]
    backend: Option<String>,
    #[command(flatten)]
    precision: PrecisionArg,
}

/// `--threshold`: a probability in [0, 1]; NaN and anything outside are refused.
fn check_threshold(value: f64) -> Result<()> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&value),
        "--threshold {value}: expected a probability in [0, 1]"
    );
    Ok(())
}

/// Where the keywords come from.
enum KeywordRun {
    /// A keyword run folder (a `[method]` config: the tagger or an extractor).
    Method(PathBuf),
    /// A LoRA run trained on the keywords task.
    Lora(PathBuf),
}

impl KeywordRun {
    fn path(&self) -> &Path {
        match self {
            Self::Method(path) | Self::Lora(path) => path,
        }
    }
}

/// The runs given, sorted by the column they fill.
struct Sources {
    keywords: Option<KeywordRun>,
    /// Classifier runs (an ensemble), or one LoRA classification run.
    labels: Vec<PathBuf>,
}

fn sort_runs(runs: &[PathBuf]) -> Result<Sources> {
    let mut keyword_runs = Vec::new();
    let mut labels = Vec::new();
    for run in runs {
        if keywords::is_keywords_run(run) {
            keyword_runs.push(KeywordRun::Method(run.clone()));
        } else if llm::llm_run_task(run) == Some(InstructionTask::Keywords) {
            keyword_runs.push(KeywordRun::Lora(run.clone()));
        } else {
            labels.push(run.clone());
        }
    }
    if let [first, second, ..] = keyword_runs.as_slice() {
        anyhow::bail!(
            "{} and {} both give keywords: pass one of them, with a classifier or LoRA classification run for the labels",
            first.path().display(),
            second.path().display()
        );
    }
    Ok(Sources { keywords: keyword_runs.pop(), labels })
}

pub fn run(args: PredictArgs) -> Result<()> {
    papertune_tasks::run_dir::check_output(&args.output, args.force)?;
    let sources = sort_runs(&args.run)?;
    check_flags(&args, &sources)?;
    let device = device_for(args.backend.as_deref(), args.precision.precision)?;
    let mut rows = match single_llm_run(&sources.labels)? {
        _ if sources.labels.is_empty() => None,
        Some(run) => Some(llm::submission_rows(&run, &args.data, &device)?),
        None => Some(classify::submission_rows(&sources.labels, &args.data, &device)?),
    };
    if rows.is_none() {
        tracing::warn!(
            "no classifier or LoRA classification run among --run: the label column is left empty"
        );
    }
    match &sources.keywords {
        None => {}
        Some(KeywordRun::Method(run)) => {
            let predicted = keywords::predict_keywords(run, &args.data, &device)?;
            match &mut rows {
                Some(rows) => keywords::fill_keywords(rows, predicted, &args.data)?,
                None => {
                    rows = Some(
                        predicted
                            .into_iter()
                            .map(|(paper, k)| SubmissionRow::labelled(paper.uuid, k, None))
                            .collect(),
                    )
                }
            }
        }
        Some(KeywordRun::Lora(run)) => {
            let predicted = llm::submission_rows(run, &args.data, &device)?;
            match &mut rows {
                Some(rows) => merge_keywords(rows, predicted, &args.data)?,
                None => rows = Some(predicted),
            }
        }
    }
    let mut rows = rows.expect("some run fills a column");
    if args.logits && rows.iter().any(|r| r.logits.is_none()) {
        anyhow::bail!(
            "--logits needs one classifier run: an ensemble averages probabilities, not logits"
        );
    }
    if let Some(threshold) = args.threshold {
        tracing::info!("label 1 above probability {threshold} (--threshold)");
        relabel(&mut rows, threshold);
    }
    keep_scores(&mut rows, args.scores, args.logits);
    let report = write_submission(&args.output, &rows)?;
    tracing::info!(
        "wrote {} rows ({} labelled 1) to {}",
        report.rows,
        report.label_1,
        report.output.display()
    );
    Ok(())
}

/// Refuses, before any work, the flags that the runs given cannot serve.
fn check_flags(args: &PredictArgs, sources: &Sources) -> Result<()> {
    if let Some(threshold) = args.threshold {
        check_threshold(threshold)?;
    }
    let for_labels = [
        (args.scores, "--scores"),
        (args.logits, "--logits"),
        (args.threshold.is_some(), "--threshold"),
    ];
    for (given, flag) in for_labels {
        anyhow::ensure!(
            !given || !sources.labels.is_empty(),
            "{flag} applies to the labels, and no --run gives them: add a classifier or LoRA classification run"
        );
    }
    if args.logits {
        anyhow::ensure!(
            sources.labels.len() == 1 && !llm::is_llm_run(&sources.labels[0]),
            "--logits needs one classifier run: an ensemble averages probabilities, not logits, and a LoRA run scores the answer's tokens"
        );
    }
    Ok(())
}

/// Label 1 where the probability of class 1 is above `threshold`.
fn relabel(rows: &mut [SubmissionRow], threshold: f64) {
    for row in rows {
        if let Some([_, p]) = row.probabilities {
            row.label = Some(u8::from(f64::from(p) > threshold));
        }
    }
}

/// Puts the keywords of a LoRA keyword run's rows into the label rows of the same uuids, in the
/// same order; fails naming the first row that differs.
fn merge_keywords(
    rows: &mut [SubmissionRow],
    predicted: Vec<SubmissionRow>,
    data: &Path,
) -> Result<()> {
    anyhow::ensure!(
        rows.len() == predicted.len(),
        "{}: the runs read {} and {} rows",
        data.display(),
        rows.len(),
        predicted.len()
    );
    for (k, (row, keyword_row)) in rows.iter_mut().zip(predicted).enumerate() {
        anyhow::ensure!(
            row.uuid == keyword_row.uuid,
            "{}: row {}: the runs read uuid {:?} and {:?}",
            data.display(),
            k + 1,
            row.uuid,
            keyword_row.uuid
        );
        row.keywords = keyword_row.keywords;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run folder holding only `config.toml`.
    fn run_folder(root: &Path, name: &str, config: &str) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.toml"), config).unwrap();
        dir
    }

    #[test]
    fn a_lora_keyword_run_fills_keywords_beside_a_classifier() {
        let root = tempfile::tempdir().unwrap();
        let classifier = run_folder(root.path(), "clf", "[head]\npooling = \"pooler\"\n");
        let lora_keywords = run_folder(root.path(), "kw", "[lora]\n[data]\ntask = \"keywords\"\n");
        let lora_classify = run_folder(root.path(), "lc", "[lora]\n[data]\ntask = \"classify\"\n");
        let method = run_folder(root.path(), "tfidf", "[method]\nname = \"tfidf\"\n");

        let sources = sort_runs(&[classifier.clone(), lora_keywords.clone()]).unwrap();
        assert!(matches!(&sources.keywords, Some(KeywordRun::Lora(p)) if p == &lora_keywords));
        assert_eq!(sources.labels, vec![classifier.clone()]);
        assert_eq!(single_llm_run(&sources.labels).unwrap(), None);

        let sources = sort_runs(&[lora_keywords.clone(), lora_classify.clone()]).unwrap();
        assert_eq!(single_llm_run(&sources.labels).unwrap(), Some(lora_classify));

        // Keywords alone: no labels (the column is left empty).
        let sources = sort_runs(std::slice::from_ref(&method)).unwrap();
        assert!(
            matches!(sources.keywords, Some(KeywordRun::Method(_))) && sources.labels.is_empty()
        );
        let err = sort_runs(&[method, lora_keywords, classifier]).err().unwrap().to_string();
        assert!(err.contains("both give keywords"), "{err}");
    }

    #[test]
    fn threshold_flag_is_a_probability() {
        for good in [0.0, 0.25, 1.0] {
            assert!(check_threshold(good).is_ok(), "{good}");
        }
        for bad in [f64::NAN, -0.1, 1.5, f64::INFINITY] {
            let err = check_threshold(bad).unwrap_err().to_string();
            assert!(err.starts_with("--threshold "), "{err}");
        }
    }

    #[test]
    fn relabelling_follows_the_probability_of_class_1() {
        let row = |p: f32| SubmissionRow {
            probabilities: Some([1.0 - p, p]),
            ..SubmissionRow::labelled("a".into(), vec![], Some(0))
        };
        let mut rows = vec![row(0.2), row(0.4), row(0.9)];
        relabel(&mut rows, 0.3);
        let labels: Vec<_> = rows.iter().map(|r| r.label).collect();
        assert_eq!(labels, vec![Some(0), Some(1), Some(1)]);
    }

    #[test]
    fn keywords_of_another_file_are_refused() {
        let mut rows = vec![SubmissionRow::labelled("a".into(), vec![], Some(1))];
        let same = vec![SubmissionRow::labelled("a".into(), vec!["k".into()], None)];
        merge_keywords(&mut rows, same, Path::new("d.csv")).unwrap();
        assert_eq!((rows[0].keywords.clone(), rows[0].label), (vec!["k".to_owned()], Some(1)));
        let other = vec![SubmissionRow::labelled("b".into(), vec![], None)];
        let err = merge_keywords(&mut rows, other, Path::new("d.csv")).unwrap_err().to_string();
        assert!(err.contains("row 1") && err.contains("\"b\""), "{err}");
    }
}
