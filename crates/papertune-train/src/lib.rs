//! A generic trainer for burn models: any model, batch and loss, on any backend.
//!
//! The trainer knows nothing of papers, keywords or model architectures. A task supplies a
//! model implementing [`TrainModel`], a [`Loss`], a burn `Dataset` and `Batcher`, and
//! [`TrainHooks`] that evaluate, save and hear the run's events; the trainer runs AdamW (no
//! decay on biases and LayerNorm) with warmup and a decay schedule, gradient accumulation and
//! clipping, data parallelism over devices and over processes (MPI ranks, feature `mpi`), evaluates and saves by epoch or by steps, keeps the
//! best checkpoint by a chosen metric, stops early when asked, logs each [`TrainEvent`] to
//! `metrics.jsonl`, and resumes a checkpoint exactly (see [`ResumePoint`]).
//!
//! The rooms: `trainer/` (the loop and its parts), `config.rs` (every option, with defaults),
//! `schedule.rs`, `adamw.rs`, `clip.rs` and `loss.rs` (the arithmetic of a step), `state.rs`
//! (what a checkpoint records for an exact resume), `error.rs` and `metrics.rs` (shared types),
//! `signal.rs` (Ctrl-C as a stop request), `distributed/` (ranks of a data-parallel job).

mod adamw;
mod clip;
mod config;
mod distributed;
mod error;
mod loss;
mod metrics;
mod params;
mod schedule;
mod signal;
mod state;
mod trainer;

pub use adamw::FusedAdamW;
pub use clip::{clip_grad_norm, clip_grad_value};
pub use config::{LogTarget, Strategy, TrainConfig};
pub use distributed::Collective;
#[cfg(feature = "mpi")]
pub use distributed::MpiWorld;
pub use error::TrainError;
pub use loss::{
    BceWithLogitsLoss, CausalLmLoss, ClassificationLoss, CrossEntropyLoss, FocalLoss, Loss,
    LossConfig, LossName,
};
pub use metrics::{EvalRecord, Metrics};
pub use params::trainable_parameters;
pub use schedule::{LrSchedule, ScheduleKind};
pub use signal::stop_on_signals;
pub use state::{CheckpointContext, ResumePoint, TrainProgress, TrainerState};
pub use trainer::{
    PhaseTimings, SaveKind, StopReason, TrainEvent, TrainHooks, TrainModel, TrainSummary, Trainer,
    epoch_order,
};
