//! A keyword run: for the tagger, the encoder with a new tag layer trained on the gold keywords
//! found in each training text, through the shared pipeline; for the extractors, which need no
//! training, the run folder with what they read from the training file (the idf table), and
//! the validation figures.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use burn::tensor::Device;
use papertune_data::PaperRecord;
use papertune_models::PretrainedEncoder;
use papertune_models::bert::{BertConfig, BertModel};
use papertune_models::checkpoint::Checkpoint;
use papertune_train::{
    CheckpointContext, CrossEntropyLoss, Metrics, SaveKind, StopReason, TrainError, TrainHooks,
    TrainProgress,
};

use super::config::KeywordsConfig;
use super::infer::{Keyphraser, MEMORY_FILE, rank_tagged, reranker};
use super::rerank::{KeywordMemory, MemoryPaper, Reranker};
use super::rows::{keyword_rows, texts, with_gold};
use super::spans::DecodeOptions;
use super::tagger::{KeyphraseTagger, TaggingBatcher, TaggingDataset, TaggingInput};
use crate::encoder::encoder_files;
use crate::error::TaskError;
use crate::metrics::KeywordMetrics;
use crate::pipeline::{
    RunFacts, TrainOptions, TrainReport, TrainSession, create_run_dir, remove_run_dir,
};
use crate::run_dir::{
    CheckpointState, ENCODER_CONFIG_FILE, RunDir, WEIGHTS_FILE, Which, write_json,
};

/// Validation documents of the tagger, tokenized once.
struct TaggerValid {
    texts: Vec<String>,
    inputs: Vec<TaggingInput>,
    gold: Vec<Vec<String>>,
}

/// Evaluation and checkpoint saving during training.
struct TaggerHooks<'a> {
    run: RunDir,
    valid: &'a TaggerValid,
    encoder_config: &'a BertConfig,
    decode: &'a DecodeOptions,
    /// The training papers' evidence, when the config re-ranks.
    rerank: Option<Reranker>,
    pad_id: u32,
    batch_size: usize,
    device: Device,
    metric_for_best: String,
}

impl TaggerHooks<'_> {
    fn write_files(
        &self,
        dir: &Path,
        model: &KeyphraseTagger,
        context: &CheckpointContext<'_>,
    ) -> Result<(), TaskError> {
        let metadata = BTreeMap::from([("format".to_owned(), "pt".to_owned())]);
        model.export().write(&dir.join(WEIGHTS_FILE), Some(metadata))?;
        self.encoder_config.write(&dir.join(ENCODER_CONFIG_FILE))?;
        context.write_resume_files(model, dir)?;
        CheckpointState::at(context.progress, &self.metric_for_best).seal(dir)
    }
}

impl TrainHooks<KeyphraseTagger> for TaggerHooks<'_> {
    fn evaluate(
        &mut self,
        model: &KeyphraseTagger,
        _progress: &TrainProgress,
    ) -> Result<Metrics, TrainError> {
        let tagged =
            model.tag_probabilities(&self.valid.inputs, self.pad_id, self.batch_size, &self.device);
        let predicted: Vec<Vec<String>> = self
            .valid
            .texts
            .iter()
            .zip(&tagged)
            .map(|(text, tokens)| rank_tagged(text, tokens, self.decode, self.rerank.as_ref()))
            .collect();
        Ok(KeywordMetrics::compute(&predicted, &self.valid.gold).as_map())
    }

    fn save(
        &mut self,
        model: &KeyphraseTagger,
        kind: SaveKind,
        context: &CheckpointContext<'_>,
    ) -> Result<(), TrainError> {
        let hook = |e: TaskError| TrainError::Hook(e.to_string());
        match kind {
            SaveKind::Best => self
                .run
                .write_checkpoint(Which::Best, |dir| self.write_files(dir, model, context))
                .map_err(hook),
            SaveKind::Last => {
                let keep = context.state().config.save_total_limit;
                self.run
                    .write_checkpoint_keeping(Which::Last, keep, |dir| {
                        self.write_files(dir, model, context)
                    })
                    .map_err(hook)
            }
        }
    }
}

/// Trains (the tagger) or prepares (the extractors) a keyword run as `config` says, writing it
/// to `out`.
pub fn train(
    config: &KeywordsConfig,
    out: &Path,
    device: &Device,
    options: &TrainOptions,
) -> Result<TrainReport, TaskError> {
    config.validate().map_err(TaskError::Config)?;
    let source = config.data.source();
    let rows = source.train_rows(keyword_rows())?;
    let (train_rows, valid_rows) =
        source.split(rows, keyword_rows(), config.data.max_rows, config.train.seed)?;
    let (train_papers, train_gold) = with_gold(train_rows);
    let (valid_papers, valid_gold) = with_gold(valid_rows);
    if train_papers.is_empty() {
        return Err(TaskError::Run {
            path: source.train_path()?.to_path_buf(),
            message: "no row has gold keywords to learn from".into(),
        });
    }
    if valid_papers.is_empty() && config.method.name.trains() {
        let path = source.valid.unwrap_or(source.train_path()?).to_path_buf();
        return Err(TaskError::Run { path, message: "no validation row has gold keywords: the tagger's checkpoints could not be compared".into() });
    }
    tracing::info!(
        "data: {} training rows, {} validation rows with gold keywords",
        train_papers.len(),
        valid_papers.len()
    );
    if config.method.name.trains() {
        train_tagger(
            config,
            out,
            (&train_papers, &train_gold),
            (&valid_papers, &valid_gold),
            device,
            options,
        )
    } else {
        prepare_extractor(
            config,
            out,
            (&train_papers, &train_gold),
            (&valid_papers, &valid_gold),
            device,
            options,
        )
    }
}

/// The training papers as re-ranking reads them, when the config re-ranks.
fn memory_of(
    config: &KeywordsConfig,
    texts: &[String],
    gold: &[Vec<String>],
) -> Option<KeywordMemory> {
    config.rerank.enabled().then(|| KeywordMemory {
        papers: texts
            .iter()
            .zip(gold)
            .map(|(text, keywords)| MemoryPaper { text: text.clone(), keywords: keywords.clone() })
            .collect(),
    })
}

fn train_tagger(
    config: &KeywordsConfig,
    out: &Path,
    (train_papers, train_gold): (&[PaperRecord], &[Vec<String>]),
    (valid_papers, valid_gold): (&[PaperRecord], &[Vec<String>]),
    device: &Device,
    options: &TrainOptions,
) -> Result<TrainReport, TaskError> {
    let (files, encoder_config, tokenizer) =
        encoder_files(&config.model.source, config.model.max_len)?;
    let encode = |papers: &[PaperRecord]| -> Result<(Vec<String>, Vec<TaggingInput>), TaskError> {
        let texts = texts(papers);
        let inputs =
            texts.iter().map(|t| TaggingInput::new(&tokenizer, t)).collect::<Result<_, _>>()?;
        Ok((texts, inputs))
    };
    let (train_texts, train_inputs) = encode(train_papers)?;
    let items: Vec<_> = train_inputs
        .into_iter()
        .zip(&train_texts)
        .zip(train_gold)
        .map(|((input, text), gold)| input.example(text, gold))
        .collect();
    let tagged_tokens = items
        .iter()
        .flat_map(|i| &i.tags)
        .filter(|&&t| t == super::spans::TAG_B || t == super::spans::TAG_I)
        .count();
    let tokens: usize = items.iter().map(|i| i.tokens.ids.len()).sum();
    tracing::info!(
        "tags: {tagged_tokens} of {tokens} training tokens inside a gold keyword ({:.1}%)",
        100.0 * tagged_tokens as f64 / tokens.max(1) as f64
    );
    let (valid_texts, valid_inputs) = encode(valid_papers)?;
    let valid = TaggerValid { texts: valid_texts, inputs: valid_inputs, gold: valid_gold.to_vec() };

    let memory = memory_of(config, &train_texts, train_gold);
    // The best checkpoint is picked by the metric of the decoding and re-ranking in force: a
    // resumed run may change the training options only.
    let session = TrainSession::open(out, config, options, &["train"])?;
    if session.writes() && !options.resume {
        tokenizer.save(&session.run.tokenizer())?;
        if let Some(memory) = &memory {
            write_json(&session.run.root.join(MEMORY_FILE), memory)?;
        }
    }
    let rerank = reranker(config, memory.as_ref())?;
    let train_device = device.clone().autodiff();
    let dropout = config.model.dropout.unwrap_or(encoder_config.hidden_dropout_prob);
    let model = match session.resume_dir() {
        None => {
            let encoder = PretrainedEncoder::load_weights(
                encoder_config.clone(),
                &files.weights,
                &train_device,
            )?;
            KeyphraseTagger::new(encoder.model, dropout, config.train.seed)?
        }
        Some(last) => {
            let mut checkpoint = Checkpoint::read(&last.join(WEIGHTS_FILE))?;
            let encoder =
                BertModel::from_checkpoint(&encoder_config, &mut checkpoint, &train_device)?;
            KeyphraseTagger::load(encoder, &mut checkpoint, dropout, &train_device)?
        }
    };
    let dataset = TaggingDataset { items };
    let mut hooks = TaggerHooks {
        run: session.run.clone(),
        valid: &valid,
        encoder_config: &encoder_config,
        decode: &config.decode,
        rerank,
        pad_id: tokenizer.pad_id(),
        batch_size: config.eval_batch_size(),
        device: device.clone(),
        metric_for_best: config.train.metric_for_best.clone(),
    };
    let facts = RunFacts {
        model: config.model.source.clone(),
        train_examples: dataset.items.len(),
        valid_examples: valid.texts.len(),
        tokens_per_example: tokens as f64 / dataset.items.len().max(1) as f64,
        ..RunFacts::default()
    };
    let loss = CrossEntropyLoss {
        class_weights: config.model.tag_weights.map(|w| w.to_vec()),
        label_smoothing: 0.0,
    };
    let batcher = TaggingBatcher { pad_id: tokenizer.pad_id() };
    session.fit(model, &config.train, device, &loss, &dataset, &batcher, &mut hooks, facts)
}

/// An extractor's run folder: `config.toml`, the idf table for tfidf, and `summary.json` with
/// the validation figures.
fn prepare_extractor(
    config: &KeywordsConfig,
    out: &Path,
    (train_papers, train_gold): (&[PaperRecord], &[Vec<String>]),
    (valid_papers, valid_gold): (&[PaperRecord], &[Vec<String>]),
    device: &Device,
    options: &TrainOptions,
) -> Result<TrainReport, TaskError> {
    if options.resume {
        return Err(TaskError::Config(format!(
            "--resume: a {} run has nothing to resume; train it again",
            config.method.name.as_str()
        )));
    }
    // Refused before any work if the folder is taken; removed again if a later step fails.
    let created =
        if options.writes_run_folder() { Some(create_run_dir(out, false)?) } else { None };
    let _lock = created.as_ref().map(|(run, _)| run.lock()).transpose()?;
    let written = extract_and_write(
        config,
        created.as_ref().map(|(run, _)| run),
        (train_papers, train_gold),
        (valid_papers, valid_gold),
        device,
        options,
    );
    if written.is_err()
        && let Some((run, kind)) = &created
    {
        remove_run_dir(run, *kind);
    }
    written
}

fn extract_and_write(
    config: &KeywordsConfig,
    run: Option<&RunDir>,
    (train_papers, train_gold): (&[PaperRecord], &[Vec<String>]),
    (valid_papers, valid_gold): (&[PaperRecord], &[Vec<String>]),
    device: &Device,
    options: &TrainOptions,
) -> Result<TrainReport, TaskError> {
    let started = Instant::now();
    let train_texts = texts(train_papers);
    let memory = memory_of(config, &train_texts, train_gold);
    let keyphraser = Keyphraser::prepare(config, &train_texts, memory.as_ref(), device)?;
    let best_metrics = if valid_papers.is_empty() {
        None
    } else {
        let predicted = keyphraser.keyphrases(&texts(valid_papers), device)?;
        Some(KeywordMetrics::compute(&predicted, valid_gold).as_map())
    };
    let seconds = started.elapsed().as_secs_f64();
    let config_toml =
        toml::to_string_pretty(config).map_err(|e| TaskError::Config(e.to_string()))?;
    let report = TrainReport {
        run: run.map_or_else(std::path::PathBuf::new, |r| r.root.clone()),
        model: config.method.name.as_str().to_owned(),
        train_examples: train_papers.len(),
        valid_examples: valid_papers.len(),
        parameters: 0,
        trainable_parameters: 0,
        steps: 0,
        train_seconds: seconds,
        examples_per_second: (train_papers.len() + valid_papers.len()) as f64 / seconds.max(1e-9),
        final_loss: 0.0,
        best_step: best_metrics.as_ref().map(|_| 0),
        best_metrics,
        tokens_per_second: 0.0,
        stop_reason: StopReason::Completed,
        resumed_from: None,
        timings: Default::default(),
        backend: options.backend.clone(),
    };
    if let Some(run) = run {
        crate::run_dir::write_atomic(&run.config(), config_toml.as_bytes())?;
        keyphraser.save(run)?;
        if let Some(memory) = &memory {
            write_json(&run.root.join(MEMORY_FILE), memory)?;
        }
        write_json(&run.summary(), &report)?;
    }
    Ok(report)
}
