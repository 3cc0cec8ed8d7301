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
use papertune_models::fsutil::write_atomic;
use papertune_models::{BertConfig, Checkpoint, PretrainedEncoder, load_encoder, source};
use papertune_train::{
    BceWithLogitsLoss, CrossEntropyLoss, Metrics, SaveKind, TrainError, TrainHooks, TrainProgress, TrainSummary, Trainer,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::classifier::{ClassificationLoss, SequenceClassifier};
use crate::config::ClassifyConfig;
use crate::error::{TaskError, io_error};
use crate::metrics::BinaryMetrics;
use crate::run_dir::{CheckpointState, RunDir, Which, read_json, write_json};
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
}

impl TrainReport {
    /// The report of a finished `fit`, written to the run's `summary.json`.
    pub(crate) fn write(
        run: &RunDir,
        model: &str,
        (train_examples, valid_examples): (usize, usize),
        summary: &TrainSummary,
        best_metrics: Option<Metrics>,
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

/// Evaluation and checkpoint saving during training.
struct ClassifyHooks<'a> {
    run: &'a RunDir,
    valid: &'a Encodings,
    encoder_config: &'a BertConfig,
    pad_id: u32,
    batch_size: usize,
    threshold: f64,
    device: Device,
    metric_for_best: String,
    best_metrics: Option<Metrics>,
    last_metrics: Option<Metrics>,
}

impl TrainHooks<SequenceClassifier> for ClassifyHooks<'_> {
    fn evaluate(&mut self, model: &SequenceClassifier, _progress: &TrainProgress) -> Result<Metrics, TrainError> {
        let probabilities = predict_probabilities(model, &self.valid.tokens, self.pad_id, self.batch_size, &self.device);
        let predicted = threshold_labels(&probabilities, self.threshold);
        let metrics = BinaryMetrics::compute(&predicted, &self.valid.labels).as_map();
        self.last_metrics = Some(metrics.clone());
        Ok(metrics)
    }

    fn save(&mut self, model: &SequenceClassifier, kind: SaveKind, progress: &TrainProgress) -> Result<(), TrainError> {
        let which = match kind {
            SaveKind::Best => {
                self.best_metrics = self.last_metrics.clone();
                Which::Best
            }
            SaveKind::Last => Which::Last,
        };
        let state = CheckpointState::at(progress, &self.metric_for_best);
        let checkpoint = model.export();
        self.run
            .write_checkpoint(which, |dir| {
                let metadata = BTreeMap::from([("format".to_owned(), "pt".to_owned())]);
                checkpoint.write(&dir.join("model.safetensors"), Some(metadata))?;
                self.encoder_config.write(&dir.join("config.json"))?;
                write_json(&dir.join("trainer_state.json"), &state)
            })
            .map_err(|e| TrainError::Hook(e.to_string()))
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

/// Creates a fresh run folder; refuses one that already holds files.
pub(crate) fn create_run_dir(out: &Path) -> Result<RunDir, TaskError> {
    if out.exists() && std::fs::read_dir(out).map_err(io_error(out))?.next().is_some() {
        return Err(TaskError::Run {
            path: out.to_path_buf(),
            message: "the run folder already exists and is not empty; choose another --out".into(),
        });
    }
    std::fs::create_dir_all(out).map_err(io_error(out))?;
    Ok(RunDir::new(out))
}

/// Trains a classifier as `config` says, writing the run to `out`.
pub fn train(config: &ClassifyConfig, out: &Path, device: &Device, show_progress: bool) -> Result<TrainReport, TaskError> {
    config.validate().map_err(TaskError::Config)?;
    let train_path = config
        .data
        .train
        .as_deref()
        .ok_or_else(|| TaskError::Config("data.train is not set".into()))?;

    let files = source::resolve(&config.model.source)?;
    let encoder_config = BertConfig::read(&files.config)?;
    let max_len = config.model.max_len.min(encoder_config.max_sequence_len());
    let tokenizer = TextTokenizer::from_file(&files.tokenizer, max_len)?;

    let (train_papers, _) = load_papers(train_path, &load_options(config, true, config.data.empty_text))?;
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
    let train_set = labelled(config, &tokenizer, &train_papers)?;
    let valid_set = labelled(config, &tokenizer, &valid_papers)?;
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

    let run = create_run_dir(out)?;
    let config_text = toml::to_string_pretty(config).map_err(|e| TaskError::Config(e.to_string()))?;
    write_atomic(&run.config(), config_text.as_bytes())?;
    tokenizer.save(&run.tokenizer())?;

    let train_device = device.clone().autodiff();
    let encoder = PretrainedEncoder::load(&files, &train_device)?;
    let model = SequenceClassifier::new(
        encoder.model,
        &config.head,
        encoder_config.hidden_dropout_prob,
        config.train.seed,
    )?;

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
        device: device.clone(),
        metric_for_best: config.train.metric_for_best.clone(),
        best_metrics: None,
        last_metrics: None,
    };
    let trainer = Trainer::new(config.train.clone(), &train_device)?
        .with_metrics_log(&run.metrics())
        .with_progress(show_progress);
    let batcher = ClassificationBatcher::new(tokenizer.pad_id());
    let (_, summary) = match config.head.loss {
        ClassificationLoss::CrossEntropy => trainer.fit(model, &CrossEntropyLoss, &dataset, &batcher, &mut hooks)?,
        ClassificationLoss::Bce => trainer.fit(model, &BceWithLogitsLoss, &dataset, &batcher, &mut hooks)?,
    };

    TrainReport::write(
        &run,
        &config.model.source,
        (dataset.items().len(), valid_set.labels.len()),
        &summary,
        hooks.best_metrics.clone(),
    )
}

/// A trained run, loaded for inference.
pub struct LoadedRun {
    pub dir: RunDir,
    pub config: ClassifyConfig,
    pub model: SequenceClassifier,
    pub tokenizer: TextTokenizer,
    pub state: CheckpointState,
}

impl LoadedRun {
    /// Loads the run's config, tokenizer and the chosen checkpoint.
    pub fn open(run: &Path, which: Which, device: &Device) -> Result<Self, TaskError> {
        let dir = RunDir::new(run);
        let config_path = dir.config();
        let text = std::fs::read_to_string(&config_path).map_err(io_error(&config_path))?;
        let config: ClassifyConfig =
            toml::from_str(&text).map_err(|e| TaskError::Run { path: config_path.clone(), message: e.to_string() })?;
        let checkpoint_dir = dir.checkpoint(which)?;
        let encoder_config = BertConfig::read(&checkpoint_dir.join("config.json"))?;
        let mut checkpoint = Checkpoint::read(&checkpoint_dir.join("model.safetensors"))?;
        let encoder = load_encoder(&encoder_config, &mut checkpoint, device)?;
        let model = SequenceClassifier::load(
            encoder,
            &mut checkpoint,
            &config.head,
            encoder_config.hidden_dropout_prob,
            device,
        )?;
        let max_len = config.model.max_len.min(encoder_config.max_sequence_len());
        let tokenizer = TextTokenizer::from_file(&dir.tokenizer(), max_len)?;
        let state: CheckpointState = read_json(&checkpoint_dir.join("trainer_state.json"))?;
        Ok(Self { dir, config, model, tokenizer, state })
    }

    /// Probability of class 1 for each paper.
    pub fn probabilities(&self, papers: &[PaperRecord], device: &Device) -> Result<Vec<f32>, TaskError> {
        let encodings = encode(&self.config, &self.tokenizer, papers)?;
        Ok(predict_probabilities(&self.model, &encodings, self.tokenizer.pad_id(), self.config.eval_batch_size(), device))
    }
}

/// Scores a run's best checkpoint on a labelled file.
pub fn evaluate(run: &Path, data: &Path, device: &Device) -> Result<BinaryMetrics, TaskError> {
    let loaded = LoadedRun::open(run, Which::Best, device)?;
    let options = LoadOptions { max_rows: None, ..load_options(&loaded.config, true, loaded.config.data.empty_text) };
    let (papers, _) = load_papers(data, &options)?;
    let probabilities = loaded.probabilities(&papers, device)?;
    let predicted = threshold_labels(&probabilities, loaded.config.head.threshold);
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
    let loaded = LoadedRun::open(run, Which::Best, device)?;
    let options = LoadOptions { max_rows: None, ..load_options(&loaded.config, false, EmptyTextPolicy::Keep) };
    let (papers, _) = load_papers(data, &options)?;
    let probabilities = loaded.probabilities(&papers, device)?;
    let labels = threshold_labels(&probabilities, loaded.config.head.threshold);
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
