//! A generic trainer for burn models: any model, batch and loss, on any backend.
//!
//! The trainer knows nothing of papers or keywords. A task supplies a model implementing
//! [`TrainModel`], a [`Loss`], a burn `Dataset` and `Batcher`, and [`TrainHooks`] that evaluate
//! and save; the trainer runs AdamW (no decay on biases and LayerNorm) with warmup and a decay
//! schedule, gradient accumulation and clipping, evaluates and saves by epoch or by steps, keeps
//! the best checkpoint by a chosen metric, stops early when asked, logs to `metrics.jsonl`, and
//! resumes a checkpoint exactly (see [`state`]). [`report`] turns a run folder into a
//! self-contained `report.html`.

pub mod adamw;
pub mod clip;
pub mod config;
pub mod loss;
pub mod report;
pub mod schedule;
pub mod signal;
pub mod state;
pub mod trainer;

pub use adamw::FusedAdamW;
pub use config::{Strategy, TrainConfig};
pub use loss::{BceWithLogitsLoss, CausalLmLoss, ClassificationLoss, CrossEntropyLoss, FocalLoss, Loss, LossConfig, LossName};
pub use schedule::{LrSchedule, ScheduleKind};
pub use signal::stop_on_signals;
pub use state::{CheckpointContext, ResumePoint, TrainerState, write_file_atomic};
pub use trainer::{
    Metrics, PhaseTimings, SaveKind, StopReason, TrainError, TrainHooks, TrainModel, TrainProgress, TrainSummary, Trainer,
    epoch_order,
};
