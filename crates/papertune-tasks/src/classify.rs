//! Task 1 end to end: train a sequence classifier from a config, evaluate a run on a labelled
//! file, write the submission CSV, and describe a run's weights.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::data::dataloader::batcher::Batcher;
use burn::tensor::Device;
use papertune_data::{
    ClassificationBatcher, ClassificationDataset, ClassificationItem, EmptyTextPolicy, Encoded, LoadOptions,
    PaperRecord, TextTemplate, TextTokenizer, encode_papers, load_papers, stratified_split,
};
use papertune_models::{BertConfig, Checkpoint, PretrainedEncoder, load_encoder, source};
use papertune_train::report::{EVAL_PREDICTIONS_FILE, EvalPredictions, precision_recall_curve};
use papertune_train::{
    CheckpointContext, Metrics, PhaseTimings, SaveKind, StopReason, TrainError, TrainHooks, TrainProgress, TrainSummary,
    Trainer,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::classifier::SequenceClassifier;
use crate::config::ClassifyConfig;
use crate::error::{TaskError, io_error};
use crate::metrics::BinaryMetrics;
use crate::run_dir::{CheckpointState, RunDir, STATE_FILE, Which, read_json, write_json};
use crate::session::{FOLDS_FILE, TrainOptions, expand_runs, open_run};
use crate::submission::{SubmissionRow, write_submission};

/// What [`train`] reports at the end.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub run: PathBuf,
    pub model: String,
    pub train_examples: usize,
    pub valid_examples: usize,
    pub steps: usize,
    pub train_seconds: f64,
    pub examples_per_second: f64,
    pub final_loss: f64,
    pub best_step: Option<usize>,
    /// Validation metrics of the best checkpoint.
    pub best_metrics: Option<BTreeMap<String, f64>>,
    /// Input tokens (padding excluded) per second of training.
    pub tokens_per_second: f64,
    pub stop_reason: StopReason,
    /// Step the run was resumed from, if it was.
    pub resumed_from: Option<usize>,
    /// This session's seconds per phase.
    pub timings: PhaseTimings,
    pub backend: Option<String>,
}

/// What the task knows about a run that the trainer does not.
pub(crate) struct RunFacts {
    /// Mean input tokens of a training example (padding excluded).
    pub tokens_per_example: f64,
    pub backend: Option<String>,
}

impl TrainReport {
    /// The report of a finished `fit`, written to the run's `summary.json`.
    pub(crate) fn write(
        run: &RunDir,
        model: &str,
        (train_examples, valid_examples): (usize, usize),
        summary: &TrainSummary,
        best_metrics: Option<Metrics>,
        facts: RunFacts,
    ) -> Result<Self, TaskError> {
        let report = Self {
            run: run.root.clone(),
            model: model.to_owned(),
            train_examples,
            valid_examples,
            steps: summary.steps,
            train_seconds: summary.train_seconds,
            examples_per_second: summary.examples_per_second,
            final_loss: summary.final_loss,
            best_step: summary.best.map(|b| b.1),
            best_metrics,
            tokens_per_second: summary.examples_per_second * facts.tokens_per_example,
            stop_reason: summary.stop_reason,
            resumed_from: summary.resumed_from,
            timings: summary.timings,
            backend: facts.backend,
        };
        write_json(&run.summary(), &report)?;
        Ok(report)
    }
}

/// Tokenized, labelled rows.
struct Encodings {
    tokens: Vec<Encoded>,
    labels: Vec<u8>,
}

/// Probability of class 1 for each encoding, batched by similar length to save padding.
pub fn predict_probabilities(
    model: &SequenceClassifier,
    encodings: &[Encoded],
    pad_id: u32,
    batch_size: usize,
    device: &Device,
) -> Vec<f32> {
    let mut order: Vec<usize> = (0..encodings.len()).collect();
    order.sort_by_key(|&i| encodings[i].ids.len());
    let batcher = ClassificationBatcher::new(pad_id);
    let mut probabilities = vec![0.0f32; encodings.len()];
    for chunk in order.chunks(batch_size.max(1)) {
        let items: Vec<ClassificationItem> =
            chunk.iter().map(|&i| ClassificationItem { tokens: encodings[i].clone(), label: 0 }).collect();
        let batch = batcher.batch(items, device);
        let values = model.positive_probability(&batch).try_into_vec_as::<f32>().expect("float output");
        for (&i, p) in chunk.iter().zip(values) {
            probabilities[i] = p;
        }
    }
    probabilities
}

fn threshold_labels(probabilities: &[f32], threshold: f64) -> Vec<u8> {
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
        let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
        let closer = (threshold - 0.5).abs() < (best.0 - 0.5).abs();
        if f1 > best.1 + 1e-12 || ((f1 - best.1).abs() <= 1e-12 && closer) {
            best = (threshold, f1);
        }
    }
    best
}

/// `threshold.json` in a best checkpoint: the threshold tuned on validation data.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct TunedThreshold {
    pub threshold: f64,
    /// Validation F1 at that threshold.
    pub valid_f1: f64,
}

const THRESHOLD_FILE: &str = "threshold.json";

/// Evaluation and checkpoint saving during training.
struct ClassifyHooks<'a> {
    run: &'a RunDir,
    valid: &'a Encodings,
    encoder_config: &'a BertConfig,
    pad_id: u32,
    batch_size: usize,
    threshold: f64,
    tune_threshold: bool,
    device: Device,
    metric_for_best: String,
    best_metrics: Option<Metrics>,
    last_metrics: Option<Metrics>,
    last_probabilities: Vec<f32>,
}

impl ClassifyHooks<'_> {
    fn write_files(
        &self,
        dir: &Path,
        model: &SequenceClassifier,
        context: &CheckpointContext<'_>,
        tuned: Option<&TunedThreshold>,
    ) -> Result<(), TaskError> {
        let metadata = BTreeMap::from([("format".to_owned(), "pt".to_owned())]);
        model.export().write(&dir.join("model.safetensors"), Some(metadata))?;
        self.encoder_config.write(&dir.join("config.json"))?;
        if let Some(tuned) = tuned {
            write_json(&dir.join(THRESHOLD_FILE), tuned)?;
        }
        context.write_resume_files(model, dir)?;
        CheckpointState::at(context.progress, &self.metric_for_best).seal(dir)
    }
}

impl TrainHooks<SequenceClassifier> for ClassifyHooks<'_> {
    fn evaluate(&mut self, model: &SequenceClassifier, _progress: &TrainProgress) -> Result<Metrics, TrainError> {
        let probabilities = predict_probabilities(model, &self.valid.tokens, self.pad_id, self.batch_size, &self.device);
        let predicted = threshold_labels(&probabilities, self.threshold);
        let mut metrics = BinaryMetrics::compute(&predicted, &self.valid.labels).as_map();
        if self.tune_threshold {
            let (threshold, f1) = best_f1_threshold(&probabilities, &self.valid.labels);
            metrics.insert("tuned_threshold".into(), threshold);
            metrics.insert("tuned_f1".into(), f1);
        }
        self.last_metrics = Some(metrics.clone());
        self.last_probabilities = probabilities;
        Ok(metrics)
    }

    fn save(&mut self, model: &SequenceClassifier, kind: SaveKind, context: &CheckpointContext<'_>) -> Result<(), TrainError> {
        let hook = |e: TaskError| TrainError::Hook(e.to_string());
        match kind {
            SaveKind::Best => {
                self.best_metrics = self.last_metrics.clone();
                let tuned = self.tune_threshold.then(|| {
                    let (threshold, valid_f1) = best_f1_threshold(&self.last_probabilities, &self.valid.labels);
                    TunedThreshold { threshold, valid_f1 }
                });
                self.run
                    .write_checkpoint(Which::Best, |dir| self.write_files(dir, model, context, tuned.as_ref()))
                    .map_err(hook)?;
                let predictions = EvalPredictions {
                    probabilities: self.last_probabilities.clone(),
                    labels: self.valid.labels.clone(),
                    threshold: tuned.map_or(self.threshold, |t| t.threshold),
                    step: Some(context.progress.step),
                };
                write_json(&self.run.root.join(EVAL_PREDICTIONS_FILE), &predictions).map_err(hook)
            }
            SaveKind::Last => {
                let keep = context.state().config.save_total_limit;
                self.run
                    .write_checkpoint_keeping(Which::Last, keep, |dir| self.write_files(dir, model, context, None))
                    .map_err(hook)
            }
        }
    }
}

fn load_options(config: &ClassifyConfig, require_label: bool, empty_text: EmptyTextPolicy) -> LoadOptions<'_> {
    LoadOptions { columns: &config.data.columns, max_rows: config.data.max_rows, require_label, empty_text }
}

fn encode(config: &ClassifyConfig, tokenizer: &TextTokenizer, papers: &[PaperRecord]) -> Result<Vec<Encoded>, TaskError> {
    let template = TextTemplate::parse(&config.data.template)?;
    let pair = config.data.text_pair_template.as_deref().map(TextTemplate::parse).transpose()?;
    Ok(encode_papers(tokenizer, &template, pair.as_ref(), papers)?)
}

fn labelled(config: &ClassifyConfig, tokenizer: &TextTokenizer, papers: &[PaperRecord]) -> Result<Encodings, TaskError> {
    Ok(Encodings {
        tokens: encode(config, tokenizer, papers)?,
        labels: papers.iter().map(|p| p.label.expect("labels are required when loading")).collect(),
    })
}

fn label_counts(labels: &[u8]) -> [usize; 2] {
    let ones = labels.iter().filter(|&&l| l == 1).count();
    [labels.len() - ones, ones]
}

/// Trains a classifier as `config` says, writing the run to `out`.
pub fn train(config: &ClassifyConfig, out: &Path, device: &Device, show_progress: bool) -> Result<TrainReport, TaskError> {
    train_with(config, out, device, &TrainOptions::with_progress(show_progress))
}

fn read_training_papers(config: &ClassifyConfig) -> Result<Vec<PaperRecord>, TaskError> {
    let train_path =
        config.data.train.as_deref().ok_or_else(|| TaskError::Config("data.train is not set".into()))?;
    Ok(load_papers(train_path, &load_options(config, true, config.data.empty_text))?.0)
}

/// [`train`] with the session options: resuming, stop requests, the backend's name.
pub fn train_with(config: &ClassifyConfig, out: &Path, device: &Device, options: &TrainOptions) -> Result<TrainReport, TaskError> {
    config.validate().map_err(TaskError::Config)?;
    let train_papers = read_training_papers(config)?;
    let (train_papers, valid_papers) = match &config.data.valid {
        Some(valid_path) => {
            let (valid, _) = load_papers(valid_path, &load_options(config, true, config.data.empty_text))?;
            (train_papers, valid)
        }
        None => {
            let labels: Vec<u8> = train_papers.iter().map(|p| p.label.unwrap_or(0)).collect();
            let seed = config.data.split_seed.unwrap_or(config.train.seed);
            let (train_idx, valid_idx) = stratified_split(&labels, config.data.valid_fraction, seed)?;
            let pick = |idx: &[usize]| idx.iter().map(|&i| train_papers[i].clone()).collect::<Vec<_>>();
            (pick(&train_idx), pick(&valid_idx))
        }
    };
    train_on(config, out, &train_papers, &valid_papers, device, options)
}

/// K-fold training: the rows of `data.train` are dealt into `k` stratified folds, and run
/// `out/fold-<i>` trains on all folds but fold `i`, which is its validation data. `out/folds.json`
/// lists the runs, so that `eval` and `predict` can take `out` for the ensemble of all folds.
pub fn train_folds(config: &ClassifyConfig, out: &Path, k: usize, device: &Device, options: &TrainOptions) -> Result<Vec<TrainReport>, TaskError> {
    config.validate().map_err(TaskError::Config)?;
    if options.resume {
        return Err(TaskError::Config("--resume applies to one run; resume a fold with --resume <out>/fold-<i>".into()));
    }
    if config.data.valid.is_some() {
        tracing::warn!("data.valid is not used by k-fold training: each fold validates on its held-out part of data.train");
    }
    let papers = read_training_papers(config)?;
    let labels: Vec<u8> = papers.iter().map(|p| p.label.unwrap_or(0)).collect();
    let folds = papertune_data::stratified_folds(&labels, k, config.data.split_seed.unwrap_or(config.train.seed))?;
    let names: Vec<String> = (1..=k).map(|i| format!("fold-{i}")).collect();
    std::fs::create_dir_all(out).map_err(io_error(out))?;
    write_json(&out.join(FOLDS_FILE), &names)?;
    let mut reports = Vec::new();
    for (i, valid_idx) in folds.iter().enumerate() {
        tracing::info!("fold {}/{k}: {} validation rows", i + 1, valid_idx.len());
        let valid: Vec<PaperRecord> = valid_idx.iter().map(|&j| papers[j].clone()).collect();
        let mut in_valid = vec![false; papers.len()];
        valid_idx.iter().for_each(|&j| in_valid[j] = true);
        let train: Vec<PaperRecord> = papers.iter().zip(&in_valid).filter(|(_, v)| !**v).map(|(p, _)| p.clone()).collect();
        reports.push(train_on(config, &out.join(&names[i]), &train, &valid, device, options)?);
    }
    Ok(reports)
}

fn train_on(
    config: &ClassifyConfig,
    out: &Path,
    train_papers: &[PaperRecord],
    valid_papers: &[PaperRecord],
    device: &Device,
    options: &TrainOptions,
) -> Result<TrainReport, TaskError> {
    let files = source::resolve(&config.model.source)?;
    let encoder_config = BertConfig::read(&files.config)?;
    let max_len = config.model.max_len.min(encoder_config.max_sequence_len());
    let tokenizer = TextTokenizer::from_file(&files.tokenizer, max_len)?;

    let train_set = labelled(config, &tokenizer, train_papers)?;
    let valid_set = labelled(config, &tokenizer, valid_papers)?;
    let [train_0, train_1] = label_counts(&train_set.labels);
    let [valid_0, valid_1] = label_counts(&valid_set.labels);
    tracing::info!(
        "data: {} training rows ({train_1} label 1 / {train_0} label 0), {} validation rows ({valid_1} / {valid_0})",
        train_set.labels.len(),
        valid_set.labels.len()
    );
    if train_0 == 0 || train_1 == 0 {
        tracing::warn!("the training data holds only one label; the classifier cannot learn the other");
    }
    let tokens_per_example =
        train_set.tokens.iter().map(|e| e.ids.len()).sum::<usize>() as f64 / train_set.tokens.len().max(1) as f64;

    let config_text = toml::to_string_pretty(config).map_err(|e| TaskError::Config(e.to_string()))?;
    let (run, resume) = open_run(out, &config_text, options.resume, &["train"])?;
    tokenizer.save(&run.tokenizer())?;

    let train_device = device.clone().autodiff();
    let num_outputs = config.loss.num_outputs();
    let model = match &resume {
        None => {
            let encoder = PretrainedEncoder::load(&files, &train_device)?;
            SequenceClassifier::new(encoder.model, &config.head, num_outputs, encoder_config.hidden_dropout_prob, config.train.seed)?
        }
        Some((last, _)) => {
            let mut checkpoint = Checkpoint::read(&last.join("model.safetensors"))?;
            let encoder = load_encoder(&encoder_config, &mut checkpoint, &train_device)?;
            SequenceClassifier::load(encoder, &mut checkpoint, &config.head, num_outputs, encoder_config.hidden_dropout_prob, &train_device)?
        }
    };

    let dataset = ClassificationDataset::new(
        train_set
            .tokens
            .into_iter()
            .zip(&train_set.labels)
            .map(|(tokens, &label)| ClassificationItem { tokens, label })
            .collect(),
    );
    let mut hooks = ClassifyHooks {
        run: &run,
        valid: &valid_set,
        encoder_config: &encoder_config,
        pad_id: tokenizer.pad_id(),
        batch_size: config.eval_batch_size(),
        threshold: config.head.threshold,
        tune_threshold: config.head.tune_threshold,
        device: device.clone(),
        metric_for_best: config.train.metric_for_best.clone(),
        best_metrics: None,
        last_metrics: None,
        last_probabilities: Vec::new(),
    };
    let mut trainer = options.configure(Trainer::new(config.train.clone(), &train_device)?, &run);
    if let Some((_, point)) = resume {
        hooks.best_metrics = best_metrics_from_history(&point.state);
        trainer = trainer.with_resume(point);
    }
    let batcher = ClassificationBatcher::new(tokenizer.pad_id());
    let (_, summary) = trainer.fit(model, &config.loss.build(), &dataset, &batcher, &mut hooks)?;

    let report = TrainReport::write(
        &run,
        &config.model.source,
        (dataset.items().len(), valid_set.labels.len()),
        &summary,
        hooks.best_metrics.clone(),
        RunFacts { tokens_per_example, backend: options.backend.clone() },
    )?;
    refresh_report(&run);
    Ok(report)
}

/// The metrics of the best evaluation recorded in a resumed run's history.
pub(crate) fn best_metrics_from_history(state: &papertune_train::TrainerState) -> Option<Metrics> {
    let (_, step) = state.best?;
    state.eval_history.iter().find(|e| e.step == step).map(|e| e.metrics.clone())
}

/// Rewrites the run's `report.html` once `summary.json` is in place.
pub(crate) fn refresh_report(run: &RunDir) {
    if let Err(e) = papertune_train::report::write_report(&run.root) {
        tracing::warn!("report not written: {e}");
    }
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
        let config_path = dir.config();
        let text = std::fs::read_to_string(&config_path).map_err(io_error(&config_path))?;
        let config: ClassifyConfig =
            toml::from_str(&text).map_err(|e| TaskError::Run { path: config_path.clone(), message: e.to_string() })?;
        let checkpoint_dir = dir.verified_checkpoint(which)?;
        let encoder_config = BertConfig::read(&checkpoint_dir.join("config.json"))?;
        let mut checkpoint = Checkpoint::read(&checkpoint_dir.join("model.safetensors"))?;
        let encoder = load_encoder(&encoder_config, &mut checkpoint, device)?;
        let model = SequenceClassifier::load(
            encoder,
            &mut checkpoint,
            &config.head,
            config.loss.num_outputs(),
            encoder_config.hidden_dropout_prob,
            device,
        )?;
        let max_len = config.model.max_len.min(encoder_config.max_sequence_len());
        let tokenizer = TextTokenizer::from_file(&dir.tokenizer(), max_len)?;
        let state: CheckpointState = read_json(&checkpoint_dir.join(STATE_FILE))?;
        let tuned = checkpoint_dir.join(THRESHOLD_FILE);
        let threshold = if tuned.exists() { read_json::<TunedThreshold>(&tuned)?.threshold } else { config.head.threshold };
        Ok(Self { dir, config, model, tokenizer, state, threshold })
    }

    /// Probability of class 1 for each paper.
    pub fn probabilities(&self, papers: &[PaperRecord], device: &Device) -> Result<Vec<f32>, TaskError> {
        let encodings = encode(&self.config, &self.tokenizer, papers)?;
        Ok(predict_probabilities(&self.model, &encodings, self.tokenizer.pad_id(), self.config.eval_batch_size(), device))
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
        let runs = expand_runs(runs)?.iter().map(|r| LoadedRun::open(r, Which::Best, device)).collect::<Result<Vec<_>, _>>()?;
        if runs.len() > 1 {
            tracing::info!("ensemble of {} runs", runs.len());
        }
        Ok(Self { runs })
    }

    /// The first run's config: its column names and empty-text policy read the data.
    fn config(&self) -> &ClassifyConfig {
        &self.runs[0].config
    }

    pub fn threshold(&self) -> f64 {
        self.runs.iter().map(|r| r.threshold).sum::<f64>() / self.runs.len() as f64
    }

    /// Mean probability of class 1 over the runs, for each paper.
    pub fn probabilities(&self, papers: &[PaperRecord], device: &Device) -> Result<Vec<f32>, TaskError> {
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

/// Scores a run's best checkpoint on a labelled file.
pub fn evaluate(run: &Path, data: &Path, device: &Device) -> Result<BinaryMetrics, TaskError> {
    evaluate_runs(&[run.to_path_buf()], data, device)
}

/// Scores the ensemble of several runs on a labelled file.
pub fn evaluate_runs(runs: &[PathBuf], data: &Path, device: &Device) -> Result<BinaryMetrics, TaskError> {
    let ensemble = Ensemble::open(runs, device)?;
    let config = ensemble.config();
    let options = LoadOptions { max_rows: None, ..load_options(config, true, config.data.empty_text) };
    let (papers, _) = load_papers(data, &options)?;
    let probabilities = ensemble.probabilities(&papers, device)?;
    let predicted = threshold_labels(&probabilities, ensemble.threshold());
    let gold: Vec<u8> = papers.iter().map(|p| p.label.expect("required")).collect();
    Ok(BinaryMetrics::compute(&predicted, &gold))
}

/// What [`predict`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct PredictReport {
    pub output: PathBuf,
    pub rows: usize,
    pub label_1: usize,
}

/// Writes the submission file `uuid,Keywords,label` for every row of `data`.
pub fn predict(run: &Path, data: &Path, output: &Path, device: &Device) -> Result<PredictReport, TaskError> {
    predict_runs(&[run.to_path_buf()], data, output, device)
}

/// [`predict`] with the ensemble of several runs.
pub fn predict_runs(runs: &[PathBuf], data: &Path, output: &Path, device: &Device) -> Result<PredictReport, TaskError> {
    let ensemble = Ensemble::open(runs, device)?;
    let config = ensemble.config();
    let options = LoadOptions { max_rows: None, ..load_options(config, false, EmptyTextPolicy::Keep) };
    let (papers, _) = load_papers(data, &options)?;
    let probabilities = ensemble.probabilities(&papers, device)?;
    let labels = threshold_labels(&probabilities, ensemble.threshold());
    let rows: Vec<SubmissionRow> = papers
        .iter()
        .zip(&labels)
        .map(|(p, &label)| SubmissionRow { uuid: p.uuid.clone(), keywords: Vec::new(), label })
        .collect();
    write_submission(output, &rows)?;
    Ok(PredictReport { output: output.to_path_buf(), rows: rows.len(), label_1: labels.iter().filter(|&&l| l == 1).count() })
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
    let checkpoint = Checkpoint::read(&checkpoint_dir.join("model.safetensors"))?;
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
        weights_digest: papertune_models::source::hex(&hasher.finalize()),
        best_metric: state.best_metric,
        metric_for_best: state.metric_for_best,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
