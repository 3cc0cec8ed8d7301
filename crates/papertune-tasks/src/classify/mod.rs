//! Task 1 on a BERT-family encoder: train a sequence classifier from a config (alone or as k
//! folds), evaluate a run or an ensemble on a labelled file, write the submission file, and
//! describe a run's weights.
//!
//! The rooms: `config.rs` (the `[data] [model] [head] [loss] [train]` sections), `head.rs` (the
//! classification head on the encoder), `train.rs` (the task's side of the shared training
//! pipeline), `infer.rs` (loaded runs and what they do), `export.rs` (a run as a transformers folder).

mod config;
mod export;
mod folds;
mod head;
mod infer;
mod train;

pub use config::{ClassifyConfig, DataConfig, ModelConfig};
pub use export::export_hf;
pub use folds::{FoldsSummary, MetricSpread};
pub use head::{HeadConfig, Pooling, SequenceClassifier};
pub use infer::{
    Ensemble, EvalOptions, InspectReport, LoadedRun, ScoredRow, TunedThreshold, best_f1_threshold,
    evaluate, evaluate_rows, inspect, predict, predict_probabilities, predict_scores,
    scored_rows_text, submission_rows, write_scored_rows,
};
pub use train::{train, train_folds};
