//! What a checkpoint needs for an exact resume, beside the model weights the task writes:
//! `resume_state.json` (the trainer's counters, best metric, early-stopping count, evaluation
//! history and the options in force), `optimizer.bpk` (AdamW moments and step counts, burn's
//! record format) and `param_ids.json` (which parameter each optimizer entry belongs to, by
//! module path, with its shape).
//!
//! Everything else a run depends on is a pure function of the step: the data order
//! ([`crate::epoch_order`] of the seed and epoch, position from the step), the learning rate
//! ([`crate::LrSchedule`]) and the random streams of dropout (the device's re-seeded from the
//! seed and the step before every step, papertune's dropout stream from the seed, the step and
//! the micro-batch, in the thread that runs it). So a run stopped after N steps and resumed for
//! M more ends where one run of N+M steps ends.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{ModuleOptimizer, OptimizerRecord};
use burn::tensor::{Bytes, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::error::{TrainError, io_error, write_atomic};
use crate::metrics::EvalRecord;

/// File names the trainer writes into a checkpoint folder.
pub const RESUME_STATE_FILE: &str = "resume_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.bpk";
pub const PARAM_IDS_FILE: &str = "param_ids.json";

/// Where training stands, passed to the hooks.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainProgress {
    /// Optimizer steps done.
    pub step: usize,
    /// Epochs begun (1-based).
    pub epoch: usize,
    pub total_steps: usize,
    /// Best value of `metric_for_best`, and the step it was reached at.
    pub best: Option<(f64, usize)>,
}

/// The trainer's counters at a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Layout version of this file.
    pub format: u32,
    /// Optimizer steps done.
    pub step: usize,
    /// Epochs begun (1-based).
    pub epoch: usize,
    pub total_steps: usize,
    /// Size of the training set the run was started on.
    pub examples: usize,
    pub examples_seen: usize,
    /// Seconds of training so far (evaluation excluded).
    pub train_seconds: f64,
    /// Best `metric_for_best` and its step.
    pub best: Option<(f64, usize)>,
    /// Evaluations since the last improvement larger than the early-stopping threshold.
    pub evals_without_improvement: usize,
    /// Best value early stopping compares against.
    pub early_stopping_best: Option<f64>,
    pub eval_history: Vec<EvalRecord>,
    /// The options in force when the checkpoint was written.
    pub config: TrainConfig,
}

impl TrainerState {
    pub(crate) const FORMAT: u32 = 1;
}

/// A parameter's identity in the optimizer state, by module path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ParamEntry {
    id: u64,
    shape: Vec<usize>,
}

/// Module path (`encoder.layer.0.attention.query.weight`) of every float parameter.
struct ParamPaths {
    path: Vec<String>,
    entries: BTreeMap<String, ParamEntry>,
}

impl ModuleVisitor for ParamPaths {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_owned());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let shape = param.shape().to_vec();
        self.entries.insert(self.path.join("."), ParamEntry { id: param.id.val(), shape });
    }
}

fn param_entries<M: Module>(model: &M) -> BTreeMap<String, ParamEntry> {
    let mut visitor = ParamPaths { path: Vec::new(), entries: BTreeMap::new() };
    model.visit(&mut visitor);
    visitor.entries
}

/// Gives each parameter the id it had when the checkpoint was written, so that the optimizer
/// state (keyed by id) finds its parameters again.
struct RestoreIds<'a> {
    path: Vec<String>,
    ids: &'a BTreeMap<String, ParamEntry>,
}

impl ModuleMapper for RestoreIds<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_owned());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        match self.ids.get(&self.path.join(".")) {
            Some(entry) => {
                let (_, value, mapper) = param.consume();
                Param::from_mapped_value(ParamId::from(entry.id), value, mapper)
            }
            None => param,
        }
    }
}

fn corrupt(path: &Path, message: impl std::fmt::Display) -> TrainError {
    TrainError::Checkpoint { path: path.to_path_buf(), message: message.to_string() }
}

/// What the trainer hands to [`crate::TrainHooks::save`] beside the model: the run's position,
/// and for the `last/` checkpoint the state an exact resume needs.
pub struct CheckpointContext<'a> {
    pub progress: &'a TrainProgress,
    pub(crate) state: TrainerState,
    pub(crate) optimizer: Option<&'a ModuleOptimizer>,
}

impl CheckpointContext<'_> {
    /// The trainer's state at this checkpoint.
    pub fn state(&self) -> &TrainerState {
        &self.state
    }

    /// Whether this checkpoint carries the optimizer state (the `last/` checkpoints do).
    pub fn is_resumable(&self) -> bool {
        self.optimizer.is_some()
    }

    /// Writes the resume files into `dir` (nothing for a checkpoint that is not resumable);
    /// returns the names written.
    pub fn write_resume_files<M: Module>(
        &self,
        model: &M,
        dir: &Path,
    ) -> Result<Vec<String>, TrainError> {
        let Some(optimizer) = self.optimizer else {
            return Ok(Vec::new());
        };
        let bytes = optimizer.to_record().into_bytes().map_err(|e| {
            corrupt(
                &dir.join(OPTIMIZER_FILE),
                format!("cannot serialise the optimizer state: {e:?}"),
            )
        })?;
        write_atomic(&dir.join(OPTIMIZER_FILE), &bytes)?;
        let ids = serde_json::to_vec_pretty(&param_entries(model)).expect("serialisable ids");
        write_atomic(&dir.join(PARAM_IDS_FILE), &ids)?;
        let state = serde_json::to_vec_pretty(&self.state).expect("serialisable state");
        write_atomic(&dir.join(RESUME_STATE_FILE), &state)?;
        Ok(vec![OPTIMIZER_FILE.into(), PARAM_IDS_FILE.into(), RESUME_STATE_FILE.into()])
    }
}

/// A checkpoint to continue from: see [`crate::Trainer::with_resume`].
pub struct ResumePoint {
    pub dir: PathBuf,
    pub state: TrainerState,
    optimizer: OptimizerRecord,
    params: BTreeMap<String, ParamEntry>,
}

impl std::fmt::Debug for ResumePoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResumePoint")
            .field("dir", &self.dir)
            .field("step", &self.state.step)
            .finish()
    }
}

impl ResumePoint {
    /// Reads the resume files of a checkpoint folder; a missing or damaged file is an error
    /// naming it.
    pub fn read(dir: &Path) -> Result<Self, TrainError> {
        let state_path = dir.join(RESUME_STATE_FILE);
        if !state_path.exists() {
            return Err(corrupt(
                dir,
                format!(
                    "no {RESUME_STATE_FILE}: this checkpoint cannot be resumed (it was not written as a last/ checkpoint)"
                ),
            ));
        }
        let text = std::fs::read(&state_path).map_err(io_error(&state_path))?;
        let state: TrainerState =
            serde_json::from_slice(&text).map_err(|e| corrupt(&state_path, e))?;
        if state.format != TrainerState::FORMAT {
            return Err(corrupt(
                &state_path,
                format!(
                    "layout version {} (this papertune reads {})",
                    state.format,
                    TrainerState::FORMAT
                ),
            ));
        }
        let ids_path = dir.join(PARAM_IDS_FILE);
        let text = std::fs::read(&ids_path).map_err(io_error(&ids_path))?;
        let params = serde_json::from_slice(&text).map_err(|e| corrupt(&ids_path, e))?;
        let optimizer_path = dir.join(OPTIMIZER_FILE);
        let bytes = std::fs::read(&optimizer_path).map_err(io_error(&optimizer_path))?;
        let optimizer = OptimizerRecord::from_bytes(Bytes::from_bytes_vec(bytes))
            .map_err(|e| corrupt(&optimizer_path, format!("unreadable optimizer state: {e:?}")))?;
        Ok(Self { dir: dir.to_path_buf(), state, optimizer, params })
    }

    /// Checks that `model` has the parameters of the checkpoint, with the same shapes, and gives
    /// them their ids back.
    pub(crate) fn restore_param_ids<M: Module>(&self, model: M) -> Result<M, TrainError> {
        let current = param_entries(&model);
        let changed = |message: String| {
            TrainError::Resume(format!(
                "{}: the model changed since the checkpoint: {message}",
                self.dir.display()
            ))
        };
        for (path, entry) in &self.params {
            match current.get(path) {
                None => return Err(changed(format!("parameter {path} is gone"))),
                Some(now) if now.shape != entry.shape => {
                    return Err(changed(format!(
                        "parameter {path} was {:?}, is now {:?}",
                        entry.shape, now.shape
                    )));
                }
                Some(_) => {}
            }
        }
        if let Some(path) = current.keys().find(|p| !self.params.contains_key(*p)) {
            return Err(changed(format!("parameter {path} is new")));
        }
        Ok(model.map(&mut RestoreIds { path: Vec::new(), ids: &self.params }))
    }

    pub(crate) fn into_optimizer_record(self) -> OptimizerRecord {
        self.optimizer
    }
}
