//! Tasks of papertune: medical-paper classification (task 1) on BERT-family encoders, both
//! tasks (classification and keyword generation) through a LoRA-tuned causal LM, their metrics
//! and the challenge's submission file, plus sentence embeddings.
//!
//! This crate wires the others together: rows and tokens from `papertune-data`, encoders from
//! `papertune-models`, the loop from `papertune-train`.

pub mod classifier;
pub mod classify;
pub mod config;
pub mod embed;
pub mod error;
pub mod llm;
pub mod metrics;
pub mod run_dir;
pub mod session;
pub mod submission;

pub use classifier::{HeadConfig, Pooling, SequenceClassifier};
pub use classify::{
    Ensemble, InspectReport, LoadedRun, PredictReport, TrainReport, TunedThreshold, best_f1_threshold, evaluate, evaluate_runs,
    inspect, predict, predict_runs, train, train_folds, train_with,
};
pub use config::{ClassifyConfig, DataConfig, ModelConfig};
pub use error::TaskError;
pub use llm::{LlmConfig, LoadedLlmRun};
pub use metrics::{BinaryMetrics, KeywordMetrics};
pub use run_dir::{CheckpointState, RunDir, Which};
pub use session::{TrainOptions, expand_runs};
pub use submission::{SubmissionRow, write_submission};
