//! Training a classifier: the labelled rows encoded, the encoder with a new head (or the last
//! checkpoint's weights when resuming), and the hooks that evaluate on the validation rows and
//! write the checkpoints, through the shared pipeline; k-fold training on top.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::Device;
use papertune_data::{
    ClassificationBatcher, ClassificationDataset, ClassificationItem, Encoded, PaperRecord,
    TextTokenizer,
};
use papertune_models::PretrainedEncoder;
use papertune_models::bert::{BertConfig, BertModel};
use papertune_models::checkpoint::Checkpoint;
use papertune_train::{
    CheckpointContext, Metrics, SaveKind, StopReason, TrainError, TrainHooks, TrainProgress,
};

use super::config::ClassifyConfig;
use super::folds::FoldsSummary;
use super::head::SequenceClassifier;
use super::infer::{
    TunedThreshold, best_f1_threshold, encode, predict_probabilities, threshold_labels,
};
use crate::data::RowRules;
use crate::encoder::encoder_files;
use crate::error::{TaskError, io_error};
use crate::metrics::BinaryMetrics;
use crate::pipeline::{RunFacts, TrainOptions, TrainReport, TrainSession};
use crate::report::EvalPredictions;
use crate::run_dir::{
    CheckpointState, ENCODER_CONFIG_FILE, FOLDS_FILE, RunDir, THRESHOLD_FILE, WEIGHTS_FILE, Which,
    write_json,
};

/// Tokenized, labelled rows.
struct Encodings {
    tokens: Vec<Encoded>,
    labels: Vec<u8>,
}

impl Encodings {
    fn new(
        config: &ClassifyConfig,
        tokenizer: &TextTokenizer,
        papers: &[PaperRecord],
    ) -> Result<Self, TaskError> {
        Ok(Self {
            tokens: encode(config, tokenizer, papers)?,
            labels: papers
                .iter()
                .map(|p| p.label.expect("labels are required when loading"))
                .collect(),
        })
    }

    /// Rows with label 0 and with label 1.
    fn label_counts(&self) -> [usize; 2] {
        let ones = self.labels.iter().filter(|&&l| l == 1).count();
        [self.labels.len() - ones, ones]
    }
}

/// Evaluation and checkpoint saving during training.
struct ClassifyHooks<'a> {
    run: RunDir,
    valid: &'a Encodings,
    encoder_config: &'a BertConfig,
    pad_id: u32,
    batch_size: usize,
    threshold: f64,
    tune_threshold: bool,
    device: Device,
    metric_for_best: String,
    /// The probabilities of the last evaluation, for the best checkpoint's threshold and curves.
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
        model.export().write(&dir.join(WEIGHTS_FILE), Some(metadata))?;
        self.encoder_config.write(&dir.join(ENCODER_CONFIG_FILE))?;
        if let Some(tuned) = tuned {
            write_json(&dir.join(THRESHOLD_FILE), tuned)?;
        }
        context.write_resume_files(model, dir)?;
        CheckpointState::at(context.progress, &self.metric_for_best).seal(dir)
    }
}

impl TrainHooks<SequenceClassifier> for ClassifyHooks<'_> {
    fn evaluate(
        &mut self,
        model: &SequenceClassifier,
        _progress: &TrainProgress,
    ) -> Result<Metrics, TrainError> {
        let probabilities = predict_probabilities(
            model,
            &self.valid.tokens,
            self.pad_id,
            self.batch_size,
            &self.device,
        );
        let predicted = threshold_labels(&probabilities, self.threshold);
        let mut metrics = BinaryMetrics::compute(&predicted, &self.valid.labels).as_map();
        if self.tune_threshold {
            let (threshold, f1) = best_f1_threshold(&probabilities, &self.valid.labels);
            metrics.insert("tuned_threshold".into(), threshold);
            metrics.insert("tuned_f1".into(), f1);
        }
        self.last_probabilities = probabilities;
        Ok(metrics)
    }

    fn save(
        &mut self,
        model: &SequenceClassifier,
        kind: SaveKind,
        context: &CheckpointContext<'_>,
    ) -> Result<(), TrainError> {
        let hook = |e: TaskError| TrainError::Hook(e.to_string());
        match kind {
            SaveKind::Best => {
                let tuned = self.tune_threshold.then(|| {
                    let (threshold, valid_f1) =
                        best_f1_threshold(&self.last_probabilities, &self.valid.labels);
                    TunedThreshold { threshold, valid_f1 }
                });
                self.run
                    .write_checkpoint(Which::Best, |dir| {
                        self.write_files(dir, model, context, tuned.as_ref())
                    })
                    .map_err(hook)?;
                let predictions = EvalPredictions {
                    probabilities: self.last_probabilities.clone(),
                    labels: self.valid.labels.clone(),
                    threshold: tuned.map_or(self.threshold, |t| t.threshold),
                    step: Some(context.progress.step),
                };
                write_json(&self.run.eval_predictions(), &predictions).map_err(hook)
            }
            SaveKind::Last => {
                let keep = context.state().config.save_total_limit;
                self.run
                    .write_checkpoint_keeping(Which::Last, keep, |dir| {
                        self.write_files(dir, model, context, None)
                    })
                    .map_err(hook)
            }
        }
    }
}

/// The rules of training rows: every row labelled, empty rows as `data.empty_text` says.
fn training_rows(config: &ClassifyConfig) -> RowRules {
    RowRules { require_label: true, empty_text: config.data.empty_text }
}

/// Trains a classifier as `config` says, writing the run to `out`.
pub fn train(
    config: &ClassifyConfig,
    out: &Path,
    device: &Device,
    options: &TrainOptions,
) -> Result<TrainReport, TaskError> {
    config.validate().map_err(TaskError::Config)?;
    let source = config.data.source();
    let rows = source.train_rows(training_rows(config))?;
    let (train_papers, valid_papers) =
        source.split(rows, training_rows(config), config.data.max_rows, config.train.seed)?;
    train_on(config, out, &train_papers, &valid_papers, device, options)
}

/// K-fold training: the rows of `data.train` are dealt into `k` stratified folds, and run
/// `out/fold-<i>` trains on all folds but fold `i`, which is its validation data. `out/folds.json`
/// lists the runs, so that `eval` and `predict` can take `out` for the ensemble of all folds;
/// `out/folds_summary.json` holds the mean and standard deviation of the folds' best validation
/// metrics ([`FoldsSummary`]) once every fold has finished.
pub fn train_folds(
    config: &ClassifyConfig,
    out: &Path,
    k: usize,
    device: &Device,
    options: &TrainOptions,
) -> Result<Vec<TrainReport>, TaskError> {
    config.validate().map_err(TaskError::Config)?;
    if options.resume {
        return Err(TaskError::Config(
            "--resume applies to one run; resume a fold with --resume <out>/fold-<i>".into(),
        ));
    }
    if config.data.valid.is_some() {
        tracing::warn!(
            "data.valid is not used by k-fold training: each fold validates on its held-out part of data.train"
        );
    }
    let papers = config.data.source().train_rows(training_rows(config))?;
    let labels: Vec<u8> = papers.iter().map(|p| p.label.unwrap_or(0)).collect();
    let folds = papertune_data::stratified_folds(
        &labels,
        k,
        config.data.split_seed.unwrap_or(config.train.seed),
    )?;
    let names: Vec<String> = (1..=k).map(|i| format!("fold-{i}")).collect();
    // The k-fold folder is held while its folds train, each of which holds its own.
    let _lock = if options.writes_run_folder() {
        std::fs::create_dir_all(out).map_err(io_error(out))?;
        let lock = RunDir::new(out).lock()?;
        write_json(&out.join(FOLDS_FILE), &names)?;
        Some(lock)
    } else {
        None
    };
    let mut reports = Vec::new();
    for (i, valid_idx) in folds.iter().enumerate() {
        tracing::info!("fold {}/{k}: {} validation rows", i + 1, valid_idx.len());
        let valid: Vec<PaperRecord> = valid_idx.iter().map(|&j| papers[j].clone()).collect();
        let mut in_valid = vec![false; papers.len()];
        valid_idx.iter().for_each(|&j| in_valid[j] = true);
        let train: Vec<PaperRecord> =
            papers.iter().zip(&in_valid).filter(|(_, v)| !**v).map(|(p, _)| p.clone()).collect();
        reports.push(train_on(config, &out.join(&names[i]), &train, &valid, device, options)?);
    }
    let finished = reports.iter().all(|r| r.stop_reason != StopReason::Interrupted);
    if finished
        && options.writes_run_folder()
        && let Some(summary) = FoldsSummary::new(&reports, &config.train.metric_for_best)
    {
        summary.write(out)?;
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
    let (files, encoder_config, tokenizer) =
        encoder_files(&config.model.source, config.model.max_len)?;

    let train_set = Encodings::new(config, &tokenizer, train_papers)?;
    let valid_set = Encodings::new(config, &tokenizer, valid_papers)?;
    let ([train_0, train_1], [valid_0, valid_1]) =
        (train_set.label_counts(), valid_set.label_counts());
    tracing::info!(
        "data: {} training rows ({train_1} label 1 / {train_0} label 0), {} validation rows ({valid_1} / {valid_0})",
        train_set.labels.len(),
        valid_set.labels.len()
    );
    if train_0 == 0 || train_1 == 0 {
        tracing::warn!(
            "the training data holds only one label; the classifier cannot learn the other"
        );
    }
    let tokens_per_example = train_set.tokens.iter().map(|e| e.ids.len()).sum::<usize>() as f64
        / train_set.tokens.len().max(1) as f64;

    let session = TrainSession::open(out, config, options, &["train"])?;
    if session.writes() {
        tokenizer.save(&session.run.tokenizer())?;
    }
    let train_device = device.clone().autodiff();
    let (num_outputs, dropout) = (config.loss.num_outputs(), encoder_config.hidden_dropout_prob);
    let model = match session.resume_dir() {
        None => {
            let encoder = PretrainedEncoder::load_weights(
                encoder_config.clone(),
                &files.weights,
                &train_device,
            )?;
            SequenceClassifier::new(
                encoder.model,
                &config.head,
                num_outputs,
                dropout,
                config.train.seed,
            )?
        }
        Some(last) => {
            let mut checkpoint = Checkpoint::read(&last.join(WEIGHTS_FILE))?;
            let encoder =
                BertModel::from_checkpoint(&encoder_config, &mut checkpoint, &train_device)?;
            SequenceClassifier::load(
                encoder,
                &mut checkpoint,
                &config.head,
                num_outputs,
                dropout,
                &train_device,
            )?
        }
    };
    let items = train_set
        .tokens
        .into_iter()
        .zip(&train_set.labels)
        .map(|(tokens, &label)| ClassificationItem { tokens, label });
    let dataset = ClassificationDataset::new(items.collect());
    let mut hooks = ClassifyHooks {
        run: session.run.clone(),
        valid: &valid_set,
        encoder_config: &encoder_config,
        pad_id: tokenizer.pad_id(),
        batch_size: config.eval_batch_size(),
        threshold: config.head.threshold,
        tune_threshold: config.head.tune_threshold,
        device: device.clone(),
        metric_for_best: config.train.metric_for_best.clone(),
        last_probabilities: Vec::new(),
    };
    let facts = RunFacts {
        model: config.model.source.clone(),
        train_examples: dataset.items().len(),
        valid_examples: valid_set.labels.len(),
        tokens_per_example,
        ..RunFacts::default()
    };
    let batcher = ClassificationBatcher::new(tokenizer.pad_id());
    session.fit(
        model,
        &config.train,
        device,
        &config.loss.build(),
        &dataset,
        &batcher,
        &mut hooks,
        facts,
    )
}
