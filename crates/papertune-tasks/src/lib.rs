//! Tasks of papertune: medical-paper classification (task 1) on BERT-family encoders, keyword
//! extraction (task 2) by a keyphrase tagger on the same encoders or by classic extractors, both
//! tasks through a LoRA-tuned causal LM, their metrics and the challenge's submission file, plus
//! sentence embeddings.
//!
//! This crate wires the others together: rows and tokens from `papertune-data`, models from
//! `papertune-models`, the loop from `papertune-train`. The task families, [`classify`],
//! [`keywords`] and [`llm`], offer the same calls (`train`, `evaluate`, and a run loaded for
//! inference) and train through one pipeline (`pipeline.rs`: run folder, resuming, trainer options, report, summary). The run
//! folder's layout, every file name included, is [`run_dir`]'s; [`report`] renders a run folder
//! as `report.html`.
//!
//! ```no_run
//! use std::path::Path;
//! use burn::tensor::Device;
//! use papertune_tasks::{TrainOptions, classify};
//!
//! # fn main() -> Result<(), papertune_tasks::TaskError> {
//! let mut config = classify::ClassifyConfig::default();
//! config.data.train = Some("train.csv".into());
//! let report = classify::train(&config, Path::new("runs/try"), &Device::default(), &TrainOptions::with_progress(true))?;
//! println!("best validation metrics: {:?}", report.best_metrics);
//! # Ok(()) }
//! ```

pub mod classify;
mod data;
pub mod embed;
mod encoder;
mod error;
pub mod keywords;
pub mod llm;
pub mod metrics;
mod pipeline;
mod progress;
pub mod report;
pub mod run_dir;
pub mod submission;

pub use data::{DataSource, RowRules};
pub use error::TaskError;
pub use pipeline::{TrainOptions, TrainReport};
pub use progress::show_progress;
