//! A trained classifier at work: runs loaded (alone or as an ensemble), probabilities, tuned
//! thresholds, evaluation on a labelled file, the submission file, and a run's weights
//! described.

use std::path::{Path, PathBuf};

use burn::data::dataloader::batcher::Batcher;
use burn::tensor::Device;
use papertune_data::{
    ClassificationBatcher, ClassificationItem, EmptyTextPolicy, Encoded, PaperRecord,
    TextTokenizer, encode_papers, load_papers,
};
use papertune_models::bert::{BertConfig, BertModel};
use papertune_models::checkpoint::Checkpoint;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::ClassifyConfig;
use super::head::SequenceClassifier;
use crate::data::RowRules;
use crate::error::TaskError;
use crate::metrics::{BinaryMetrics, precision_recall_curve};
use crate::progress::Progress;
use crate::run_dir::{
    CheckpointState, ENCODER_CONFIG_FILE, RunDir, STATE_FILE, THRESHOLD_FILE, WEIGHTS_FILE, Which,
    expand_runs, read_json, read_toml,
};
use crate::submission::{PredictReport, SubmissionRow, keep_scores, write_submission};

/// Model inputs for papers: the config's templates (held parsed) rendered and tokenized.
pub(super) fn encode(
    config: &ClassifyConfig,
    tokenizer: &TextTokenizer,
    papers: &[PaperRecord],
) -> Result<Vec<Encoded>, TaskError> {
    Ok(encode_papers(
        tokenizer,
        &config.data.template,
        config.data.text_pair_template.as_ref(),
        papers,
    )?)
}

/// Probability of class 1 for each encoding, batched by similar length to save padding.
pub fn predict_probabilities(
    model: &SequenceClassifier,
    encodings: &[Encoded],
    pad_id: u32,
    batch_size: usize,
    device: &Device,
) -> Vec<f32> {
    predict_scores(model, encodings, pad_id, batch_size, device).0
}

/// Probability of class 1 and the logits `[class 0, class 1]` for each encoding (a one-logit
/// head's `z` as `[0, z]`, whose softmax is the sigmoid of `z`), batched by similar length.
pub fn predict_scores(
    model: &SequenceClassifier,
    encodings: &[Encoded],
    pad_id: u32,
    batch_size: usize,
    device: &Device,
) -> (Vec<f32>, Vec<[f32; 2]>) {
    let mut order: Vec<usize> = (0..encodings.len()).collect();
    order.sort_by_key(|&i| encodings[i].ids.len());
    let batcher = ClassificationBatcher::new(pad_id);
    let mut probabilities = vec![0.0f32; encodings.len()];
    let mut logits = vec![[0.0f32; 2]; encodings.len()];
    let mut progress = Progress::new(encodings.len(), "scoring");
    for chunk in order.chunks(batch_size.max(1)) {
        let items: Vec<ClassificationItem> = chunk
            .iter()
            .map(|&i| ClassificationItem { tokens: encodings[i].clone(), label: 0 })
            .collect();
        let batch = batcher.batch(items, device);
        let batch_logits = model.logits(&batch);
        let width = batch_logits.dims()[1];
        let values = SequenceClassifier::probability_from_logits(batch_logits.clone())
            .try_into_vec_as::<f32>()
            .expect("float output");
        let raw = batch_logits.try_into_vec_as::<f32>().expect("float output");
        for (k, (&i, p)) in chunk.iter().zip(values).enumerate() {
            probabilities[i] = p;
            logits[i] = match width {
                1 => [0.0, raw[k]],
                _ => [raw[k * width], raw[k * width + 1]],
            };
        }
        progress.advance(chunk.len());
    }
    (probabilities, logits)
}

/// Label 1 where the probability is above `threshold`.
pub(super) fn threshold_labels(probabilities: &[f32], threshold: f64) -> Vec<u8> {
    probabilities.iter().map(|&p| u8::from(f64::from(p) > threshold)).collect()
}

/// The decision threshold that maximises F1 on `labels` (label 1 when the probability is
/// above it), with that F1. Candidates lie halfway between consecutive distinct scores; among
/// equal F1s the one closest to 0.5 wins.
pub fn best_f1_threshold(probabilities: &[f32], labels: &[u8]) -> (f64, f64) {
    // One point per distinct score, highest first: everything down to that score is label 1.
    let Some(curve) = precision_recall_curve(probabilities, labels) else {
        return (0.5, 0.0);
    };
    let mut best = (0.5f64, 0.0f64);
    for (k, &(recall, precision, score)) in curve.iter().enumerate() {
        let threshold = match curve.get(k + 1) {
            Some(&(_, _, lower)) => (score + lower) / 2.0,
            None => score / 2.0,
        };
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        let closer = (threshold - 0.5).abs() < (best.0 - 0.5).abs();
        if f1 > best.1 + 1e-12 || ((f1 - best.1).abs() <= 1e-12 && closer) {
            best = (threshold, f1);
        }
    }
    best
}

/// `threshold.json` in a best checkpoint: the threshold tuned on validation data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TunedThreshold {
    pub threshold: f64,
    /// Validation F1 at that threshold.
    pub valid_f1: f64,
}

/// A trained run, loaded for inference.
pub struct LoadedRun {
    pub dir: RunDir,
    pub config: ClassifyConfig,
    pub model: SequenceClassifier,
    pub tokenizer: TextTokenizer,
    pub state: CheckpointState,
    /// Decision threshold: the one tuned on validation data when the run has it
    /// (`head.tune_threshold`), else `head.threshold`.
    pub threshold: f64,
}

impl LoadedRun {
    /// Loads the run's config, tokenizer and the chosen checkpoint, after checking the
    /// checkpoint's files against their recorded checksums.
    pub fn open(run: &Path, which: Which, device: &Device) -> Result<Self, TaskError> {
        let dir = RunDir::new(run);
        let config: ClassifyConfig = read_toml(&dir.config())?;
        let checkpoint_dir = dir.verified_checkpoint(which)?;
        let encoder_config = BertConfig::read(&checkpoint_dir.join(ENCODER_CONFIG_FILE))?;
        let mut checkpoint = Checkpoint::read(&checkpoint_dir.join(WEIGHTS_FILE))?;
        let encoder = BertModel::from_checkpoint(&encoder_config, &mut checkpoint, device)?;
        let (num_outputs, dropout) =
            (config.loss.num_outputs(), encoder_config.hidden_dropout_prob);
        let model = SequenceClassifier::load(
            encoder,
            &mut checkpoint,
            &config.head,
            num_outputs,
            dropout,
            device,
        )?;
        let max_len = config.model.max_len.min(encoder_config.max_sequence_len());
        let tokenizer = TextTokenizer::from_file(&dir.tokenizer(), max_len)?;
        let state: CheckpointState = read_json(&checkpoint_dir.join(STATE_FILE))?;
        let tuned = checkpoint_dir.join(THRESHOLD_FILE);
        let threshold = if tuned.exists() {
            read_json::<TunedThreshold>(&tuned)?.threshold
        } else {
            config.head.threshold
        };
        Ok(Self { dir, config, model, tokenizer, state, threshold })
    }

    /// Probability of class 1 for each paper.
    pub fn probabilities(
        &self,
        papers: &[PaperRecord],
        device: &Device,
    ) -> Result<Vec<f32>, TaskError> {
        Ok(self.scores(papers, device)?.0)
    }

    /// Probability of class 1 and the logits `[class 0, class 1]` for each paper (see
    /// [`predict_scores`]).
    pub fn scores(
        &self,
        papers: &[PaperRecord],
        device: &Device,
    ) -> Result<(Vec<f32>, Vec<[f32; 2]>), TaskError> {
        let encodings = encode(&self.config, &self.tokenizer, papers)?;
        Ok(predict_scores(
            &self.model,
            &encodings,
            self.tokenizer.pad_id(),
            self.config.eval_batch_size(),
            device,
        ))
    }
}

/// Several runs as one model: the mean of their probabilities against the mean of their
/// thresholds (the topline's model averaging). One run is an ensemble of one.
pub struct Ensemble {
    pub runs: Vec<LoadedRun>,
}

impl Ensemble {
    /// Loads the best checkpoint of each run (a k-fold parent folder stands for its folds).
    pub fn open(runs: &[PathBuf], device: &Device) -> Result<Self, TaskError> {
        let runs = expand_runs(runs)?
            .iter()
            .map(|r| LoadedRun::open(r, Which::Best, device))
            .collect::<Result<Vec<_>, _>>()?;
        if runs.len() > 1 {
            tracing::info!("ensemble of {} runs", runs.len());
        }
        Ok(Self { runs })
    }

    /// The first run's papers of `data` (the first `max_rows`), read with its column names and
    /// `rules`.
    fn read_papers(
        &self,
        data: &Path,
        max_rows: Option<usize>,
        rules: RowRules,
    ) -> Result<Vec<PaperRecord>, TaskError> {
        Ok(load_papers(data, &self.runs[0].config.data.source().load_options(max_rows, rules))?.0)
    }

    pub fn threshold(&self) -> f64 {
        self.runs.iter().map(|r| r.threshold).sum::<f64>() / self.runs.len() as f64
    }

    /// Mean probability of class 1 over the runs, for each paper.
    pub fn probabilities(
        &self,
        papers: &[PaperRecord],
        device: &Device,
    ) -> Result<Vec<f32>, TaskError> {
        let mut total = vec![0.0f32; papers.len()];
        for run in &self.runs {
            for (sum, p) in total.iter_mut().zip(run.probabilities(papers, device)?) {
                *sum += p;
            }
        }
        let n = self.runs.len() as f32;
        Ok(total.into_iter().map(|p| p / n).collect())
    }
}

/// How [`evaluate`] reads the data.
#[derive(Debug, Clone, Default)]
pub struct EvalOptions {
    /// Score only the first N rows.
    pub max_rows: Option<usize>,
}

/// One scored row of an evaluation: the predicted label, the probability of class 1 and the
/// gold label.
#[derive(Debug, Clone, Serialize)]
pub struct ScoredRow {
    pub uuid: String,
    pub label: u8,
    pub probability: f32,
    pub gold: u8,
}

/// Scores the best checkpoint of a run, or the ensemble of several, on a labelled file.
pub fn evaluate(
    runs: &[PathBuf],
    data: &Path,
    options: &EvalOptions,
    device: &Device,
) -> Result<BinaryMetrics, TaskError> {
    Ok(evaluate_rows(runs, data, options, device)?.0)
}

/// [`evaluate`], with each scored row's prediction, in the file's order.
pub fn evaluate_rows(
    runs: &[PathBuf],
    data: &Path,
    options: &EvalOptions,
    device: &Device,
) -> Result<(BinaryMetrics, Vec<ScoredRow>), TaskError> {
    let ensemble = Ensemble::open(runs, device)?;
    let rules =
        RowRules { require_label: true, empty_text: ensemble.runs[0].config.data.empty_text };
    let papers = ensemble.read_papers(data, options.max_rows, rules)?;
    let probabilities = ensemble.probabilities(&papers, device)?;
    let predicted = threshold_labels(&probabilities, ensemble.threshold());
    let gold: Vec<u8> = papers.iter().map(|p| p.label.expect("required")).collect();
    let rows = papers
        .iter()
        .zip(&predicted)
        .zip(&probabilities)
        .zip(&gold)
        .map(|(((paper, &label), &probability), &gold)| ScoredRow {
            uuid: paper.uuid.clone(),
            label,
            probability,
            gold,
        })
        .collect();
    Ok((BinaryMetrics::compute(&predicted, &gold), rows))
}

/// Scored rows as text: CSV (`uuid,label,probability,gold`) or JSON lines
/// (`{"uuid", "label", "probability", "gold"}`).
pub fn scored_rows_text(rows: &[ScoredRow], csv: bool) -> String {
    if !csv {
        return rows
            .iter()
            .map(|row| serde_json::to_string(row).expect("serialisable") + "\n")
            .collect();
    }
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(["uuid", "label", "probability", "gold"]).expect("writes to memory");
    for row in rows {
        let fields = [
            row.uuid.clone(),
            row.label.to_string(),
            row.probability.to_string(),
            row.gold.to_string(),
        ];
        writer.write_record(&fields).expect("writes to memory");
    }
    String::from_utf8(writer.into_inner().expect("writes to memory")).expect("UTF-8 fields")
}

/// Writes scored rows to `path`: CSV when its name ends in `.csv`, else JSON lines.
pub fn write_scored_rows(path: &Path, rows: &[ScoredRow]) -> Result<(), TaskError> {
    let csv = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    crate::run_dir::write_output(path, scored_rows_text(rows, csv).as_bytes())
}

/// Writes the submission file `uuid,Keywords,label` for every row of `data`, with the best
/// checkpoint of a run or the ensemble of several.
pub fn predict(
    runs: &[PathBuf],
    data: &Path,
    output: &Path,
    device: &Device,
) -> Result<PredictReport, TaskError> {
    let mut rows = submission_rows(runs, data, device)?;
    keep_scores(&mut rows, false, false);
    write_submission(output, &rows)
}

/// The submission's rows for every row of `data` (labels and both classes' probabilities, the
/// ensemble's mean; the logits too when there is one run; no keywords).
pub fn submission_rows(
    runs: &[PathBuf],
    data: &Path,
    device: &Device,
) -> Result<Vec<SubmissionRow>, TaskError> {
    let ensemble = Ensemble::open(runs, device)?;
    let papers = ensemble.read_papers(
        data,
        None,
        RowRules { require_label: false, empty_text: EmptyTextPolicy::Keep },
    )?;
    let (probabilities, logits) = match ensemble.runs.as_slice() {
        [run] => {
            let (probabilities, logits) = run.scores(&papers, device)?;
            (probabilities, logits.into_iter().map(Some).collect())
        }
        _ => (ensemble.probabilities(&papers, device)?, vec![None; papers.len()]),
    };
    let labels = threshold_labels(&probabilities, ensemble.threshold());
    Ok(papers
        .iter()
        .zip(labels)
        .zip(probabilities.iter().zip(logits))
        .map(|((paper, label), (&p, logits))| SubmissionRow {
            probabilities: Some([1.0 - p, p]),
            logits,
            ..SubmissionRow::labelled(paper.uuid.clone(), Vec::new(), Some(label))
        })
        .collect())
}

/// A run's weights, summarised.
#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    pub run: PathBuf,
    pub checkpoint: PathBuf,
    pub step: usize,
    pub params: usize,
    pub trainable_params: usize,
    pub tensors: usize,
    /// sha256 over every tensor in name order: name, shape, then the little-endian f32 bytes.
    pub weights_digest: String,
    pub best_metric: Option<f64>,
    pub metric_for_best: String,
}

/// Describes a run's best checkpoint (or `last`).
pub fn inspect(run: &Path, which: Which) -> Result<InspectReport, TaskError> {
    let dir = RunDir::new(run);
    let checkpoint_dir = dir.checkpoint(which)?;
    let checkpoint = Checkpoint::read(&checkpoint_dir.join(WEIGHTS_FILE))?;
    let state = dir.checkpoint_state(which)?;
    let mut hasher = Sha256::new();
    let mut params = 0usize;
    for name in checkpoint.names() {
        let tensor = checkpoint.get(name).expect("listed name");
        hasher.update(name.as_bytes());
        for d in &tensor.shape {
            hasher.update((*d as u64).to_le_bytes());
        }
        for value in &tensor.data {
            hasher.update(value.to_le_bytes());
        }
        params += tensor.data.len();
    }
    Ok(InspectReport {
        run: run.to_path_buf(),
        checkpoint: checkpoint_dir,
        step: state.step,
        params,
        // Full fine-tuning trains every parameter.
        trainable_params: params,
        tensors: checkpoint.len(),
        weights_digest: format!("{:x}", hasher.finalize()),
        best_metric: state.best_metric,
        metric_for_best: state.metric_for_best,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scored_rows_as_json_lines_and_csv() {
        let rows = [ScoredRow { uuid: "a,b".into(), label: 1, probability: 0.75, gold: 0 }];
        assert_eq!(
            scored_rows_text(&rows, false),
            "{\"uuid\":\"a,b\",\"label\":1,\"probability\":0.75,\"gold\":0}\n"
        );
        assert_eq!(
            scored_rows_text(&rows, true),
            "uuid,label,probability,gold\n\"a,b\",1,0.75,0\n"
        );
    }

    #[test]
    fn tuned_threshold_maximises_f1() {
        // Scores 0.9 (1), 0.7 (0), 0.6 (1), 0.4 (1), 0.2 (0).
        let probabilities = [0.9f32, 0.7, 0.6, 0.4, 0.2];
        let labels = [1u8, 0, 1, 1, 0];
        // Cut below 0.4: tp 3, fp 1 -> F1 6/7, the best (below 0.9 only: 2/4; below 0.6: 4/6).
        let (threshold, f1) = best_f1_threshold(&probabilities, &labels);
        assert!((f1 - 6.0 / 7.0).abs() < 1e-12, "{f1}");
        assert!((threshold - 0.3).abs() < 1e-6, "{threshold}");
        assert_eq!(threshold_labels(&probabilities, threshold), vec![1, 1, 1, 1, 0]);
        // No positives: the default stays.
        assert_eq!(best_f1_threshold(&[0.3, 0.8], &[0, 0]), (0.5, 0.0));
        // Separable scores: the cut lies halfway between the classes.
        let (threshold, f1) = best_f1_threshold(&[0.8, 0.2], &[1, 0]);
        assert!((threshold - 0.5).abs() < 1e-6 && f1 == 1.0, "{threshold} {f1}");
    }
}
