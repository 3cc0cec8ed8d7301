//! The run configuration of a classification experiment, read from TOML. Each section is one
//! concern; every field has a default; unknown keys are rejected.

use std::path::PathBuf;

use papertune_data::{ColumnMap, DEFAULT_TEMPLATE, EmptyTextPolicy, TextTemplate};
use papertune_train::{LossConfig, TrainConfig};
use serde::{Deserialize, Serialize};

use crate::classifier::HeadConfig;

/// `[data]`: where the rows come from and how they become model input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Training file (CSV, TSV, Parquet, JSON lines).
    pub train: Option<PathBuf>,
    /// Validation file; when unset, a stratified `valid_fraction` of `train` is held out.
    pub valid: Option<PathBuf>,
    /// Use only the first N rows of each file.
    pub max_rows: Option<usize>,
    /// Share of `train` held out for validation when `valid` is unset.
    pub valid_fraction: f64,
    /// Seed of that split (`train.seed` when unset).
    pub split_seed: Option<u64>,
    /// Column names.
    pub columns: ColumnMap,
    /// Model input built from each row.
    pub template: String,
    /// Second text of a pair encoding (`[CLS] template [SEP] pair [SEP]`), when set.
    pub text_pair_template: Option<String>,
    /// Rows with empty title and abstract: `error` or `skip`.
    pub empty_text: EmptyTextPolicy,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            train: None,
            valid: None,
            max_rows: None,
            valid_fraction: 0.1,
            split_seed: None,
            columns: ColumnMap::default(),
            template: DEFAULT_TEMPLATE.into(),
            text_pair_template: None,
            empty_text: EmptyTextPolicy::Error,
        }
    }
}

/// `[model]`: which checkpoint, and how long its inputs may be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// A preset (`minilm`, `bert-base-uncased`, `roberta-base`), a Hugging Face id or a folder.
    pub source: String,
    /// Longest input in tokens, special tokens included.
    pub max_len: usize,
    /// Batch size for evaluation and prediction (`train.batch_size` × 2 when unset).
    pub eval_batch_size: Option<usize>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self { source: "minilm".into(), max_len: 128, eval_batch_size: None }
    }
}

/// Metrics a classification evaluation reports, any of which can pick the best checkpoint.
pub const CLASSIFICATION_METRICS: [&str; 4] = ["f1", "precision", "recall", "accuracy"];

/// A whole classification run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassifyConfig {
    pub data: DataConfig,
    pub model: ModelConfig,
    pub head: HeadConfig,
    /// `[loss]`: the objective by name (`cross-entropy`, `bce`, `focal`) and its options.
    pub loss: LossConfig,
    pub train: TrainConfig,
}

impl ClassifyConfig {
    /// Checks every section before any work starts; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        self.train.validate()?;
        self.loss.validate("loss")?;
        TextTemplate::parse(&self.data.template).map_err(|e| format!("data.template: {e}"))?;
        if let Some(pair) = &self.data.text_pair_template {
            TextTemplate::parse(pair).map_err(|e| format!("data.text_pair_template: {e}"))?;
        }
        if self.model.max_len < 8 {
            return Err(format!("model.max_len must be at least 8, found {}", self.model.max_len));
        }
        if !(self.head.threshold > 0.0 && self.head.threshold < 1.0) {
            return Err(format!("head.threshold must be in (0, 1), found {}", self.head.threshold));
        }
        if self.head.dropout.is_some_and(|p| !(0.0..1.0).contains(&p)) {
            return Err("head.dropout must be in [0, 1)".into());
        }
        if self.data.valid.is_none() && !(self.data.valid_fraction > 0.0 && self.data.valid_fraction < 1.0) {
            return Err(format!("data.valid_fraction must be in (0, 1), found {}", self.data.valid_fraction));
        }
        if self.model.eval_batch_size == Some(0) {
            return Err("model.eval_batch_size must be at least 1".into());
        }
        if !CLASSIFICATION_METRICS.contains(&self.train.metric_for_best.as_str()) {
            return Err(format!(
                "train.metric_for_best {:?} is not a classification metric (f1, precision, recall, accuracy)",
                self.train.metric_for_best
            ));
        }
        Ok(())
    }

    /// Batch size used for evaluation and prediction.
    pub fn eval_batch_size(&self) -> usize {
        self.model.eval_batch_size.unwrap_or(self.train.batch_size * 2)
    }
}
