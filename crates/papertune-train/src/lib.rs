//! A generic trainer for burn models: any model, batch and loss, on any backend.
//!
//! The trainer knows nothing of papers or keywords. A task supplies a model implementing
//! [`TrainModel`], a [`Loss`], a burn `Dataset` and `Batcher`, and [`TrainHooks`] that evaluate
//! and save; the trainer runs AdamW (no decay on biases and LayerNorm) with warmup and decay,
//! clips the global gradient norm, evaluates each epoch (and every N steps), keeps the best
//! checkpoint by a chosen metric, and logs to `metrics.jsonl`.

pub mod clip;
pub mod config;
pub mod loss;
pub mod schedule;
pub mod trainer;

pub use config::TrainConfig;
pub use loss::{BceWithLogitsLoss, CrossEntropyLoss, Loss};
pub use schedule::{LrSchedule, ScheduleKind};
pub use trainer::{Metrics, SaveKind, TrainError, TrainHooks, TrainModel, TrainProgress, TrainSummary, Trainer, epoch_order};
