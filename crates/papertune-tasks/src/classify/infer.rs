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
use papertune_models::lora::ADAPTER_WEIGHTS;
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
    /// `full` (a classifier or tagger: every weight saved) or `lora` (the adapter only).
    pub kind: &'static str,
    /// The weight file described, inside `checkpoint`.
    pub weights_file: &'static str,
    /// A LoRA run's base model (`model.source` of its config); its weights are not in the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_model: Option<String>,
    pub step: usize,
    /// Parameters in the weight file (a LoRA run: the adapter's).
    pub params: usize,
    pub trainable_params: usize,
    pub tensors: usize,
    /// sha256 over every tensor in name order: name, shape, then the little-endian f32 bytes.
    pub weights_digest: String,
    pub best_metric: Option<f64>,
    pub metric_for_best: String,
}

/// Describes a run's best checkpoint (or `last`): a classifier's or tagger's weights, or a LoRA
/// run's adapter.
pub fn inspect(run: &Path, which: Which) -> Result<InspectReport, TaskError> {
    let dir = RunDir::new(run);
    if !dir.config().is_file() {
        return Err(crate::error::no_run_folder(run));
    }
    let checkpoint_dir = dir.checkpoint(which).map_err(|e| match extractor_name(&dir) {
        Some(method) => TaskError::Run {
            path: run.to_path_buf(),
            message: format!(
                "is a {method} keyword run: an extractor keeps no weights, so there is nothing to inspect"
            ),
        },
        None => e,
    })?;
    let lora = checkpoint_dir.join(ADAPTER_WEIGHTS).exists()
        && !checkpoint_dir.join(WEIGHTS_FILE).exists();
    let (kind, weights_file) =
        if lora { ("lora", ADAPTER_WEIGHTS) } else { ("full", WEIGHTS_FILE) };
    let checkpoint = Checkpoint::read(&checkpoint_dir.join(weights_file))?;
    let state = dir.checkpoint_state(which)?;
    let base_model = lora.then(|| run_model_source(&dir)).flatten();
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
        kind,
        weights_file,
        base_model,
        step: state.step,
        params,
        // Full fine-tuning trains every parameter; a LoRA run saves only what it trains.
        trainable_params: params,
        tensors: checkpoint.len(),
        weights_digest: format!("{:x}", hasher.finalize()),
        best_metric: state.best_metric,
        metric_for_best: state.metric_for_best,
    })
}

/// `method.name` of a keyword run's `config.toml` when that method is an extractor (no model).
fn extractor_name(dir: &RunDir) -> Option<String> {
    let config: toml::Table = std::fs::read_to_string(dir.config()).ok()?.parse().ok()?;
    let name = config.get("method")?.get("name")?.as_str()?.to_owned();
    (name != "tagger").then_some(name)
}

/// `model.source` of a run's `config.toml`, if it reads.
fn run_model_source(dir: &RunDir) -> Option<String> {
    let config: toml::Table = std::fs::read_to_string(dir.config()).ok()?.parse().ok()?;
    Some(config.get("model")?.get("source")?.as_str()?.to_owned())
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

    /// A LoRA run keeps `adapter_model.safetensors`, not `model.safetensors`: inspect describes
    /// the adapter (its parameters, step and digest) and names the base model.
    #[test]
    fn inspect_describes_a_lora_run_by_its_adapter() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.toml"),
            "[model]\nsource = \"smollm2-135m\"\n[lora]\nr = 2\n",
        )
        .unwrap();
        let run = RunDir::new(dir.path());
        run.write_checkpoint(Which::Last, |last| {
            let tensors = std::collections::BTreeMap::from([
                (
                    "base_model.model.q_proj.lora_A.weight".to_owned(),
                    papertune_models::checkpoint::HostTensor::new(vec![2, 3], vec![0.5; 6]),
                ),
                (
                    "base_model.model.q_proj.lora_B.weight".to_owned(),
                    papertune_models::checkpoint::HostTensor::new(vec![3, 2], vec![0.0; 6]),
                ),
            ]);
            let path = last.join(ADAPTER_WEIGHTS);
            Checkpoint::from_tensors(&path, tensors).write(&path, None)?;
            CheckpointState { step: 7, ..CheckpointState::default() }.seal(last)
        })
        .unwrap();
        let report = inspect(dir.path(), Which::Best).unwrap();
        assert_eq!((report.kind, report.weights_file), ("lora", ADAPTER_WEIGHTS));
        assert_eq!(
            (report.step, report.params, report.trainable_params, report.tensors),
            (7, 12, 12, 2)
        );
        assert_eq!(report.base_model.as_deref(), Some("smollm2-135m"));
        assert_eq!(report.weights_digest.len(), 64);

        // Not a run folder: said so, naming the run a checkpoint folder belongs to.
        let error = inspect(&dir.path().join("nowhere"), Which::Best).unwrap_err().to_string();
        assert!(error.starts_with("no run folder at") && error.contains("config.toml"), "{error}");
        let error = inspect(&dir.path().join("last"), Which::Best).unwrap_err().to_string();
        let parent = dir.path().display().to_string();
        assert!(error.contains(&format!("run folder {parent}")), "{error}");
        // An extractor's run keeps no weights.
        let extractor = tempfile::tempdir().unwrap();
        std::fs::write(extractor.path().join("config.toml"), "[method]\nname = \"yake\"\n")
            .unwrap();
        let error = inspect(extractor.path(), Which::Best).unwrap_err().to_string();
        assert!(error.contains("yake keyword run") && error.contains("no weights"), "{error}");
    }
}
