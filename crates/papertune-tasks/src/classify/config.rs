//! The run configuration of a classification experiment, read from TOML. Each section is one
//! concern; every field has a default; unknown keys are rejected.

use papertune_data::{DEFAULT_TEMPLATE, EmptyTextPolicy, TextTemplate};
use papertune_train::{LossConfig, TrainConfig};
use serde::{Deserialize, Serialize};

use super::head::HeadConfig;
use crate::data::data_section;
use crate::metrics::BinaryMetrics;

data_section! {
    /// `[data]`: where the rows come from and how they become model input.
    pub struct DataConfig {
        /// Model input built from each row.
        pub template: TextTemplate = TextTemplate::parse(DEFAULT_TEMPLATE).expect("the default template parses"),
        /// Second text of a pair encoding (`[CLS] template [SEP] pair [SEP]`), when set.
        pub text_pair_template: Option<TextTemplate> = None,
        /// Rows with empty title and abstract: `error` or `skip`.
        pub empty_text: EmptyTextPolicy = EmptyTextPolicy::Error,
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
    /// Checks every section before any work starts; the message names the key. (Templates
    /// are checked as the config is read: they are held parsed.)
    pub fn validate(&self) -> Result<(), String> {
        self.train.validate()?;
        self.loss.validate("loss")?;
        if self.model.max_len < 8 {
            return Err(format!("model.max_len must be at least 8, found {}", self.model.max_len));
        }
        if !(self.head.threshold > 0.0 && self.head.threshold < 1.0) {
            return Err(format!("head.threshold must be in (0, 1), found {}", self.head.threshold));
        }
        if self.head.dropout.is_some_and(|p| !(0.0..1.0).contains(&p)) {
            return Err("head.dropout must be in [0, 1)".into());
        }
        if self.data.valid.is_none()
            && !(self.data.valid_fraction > 0.0 && self.data.valid_fraction < 1.0)
        {
            return Err(format!(
                "data.valid_fraction must be in (0, 1), found {}",
                self.data.valid_fraction
            ));
        }
        if self.model.eval_batch_size == Some(0) {
            return Err("model.eval_batch_size must be at least 1".into());
        }
        crate::metrics::check_metric_for_best(
            &self.train.metric_for_best,
            &BinaryMetrics::NAMES,
            "classification",
        )
    }

    /// Batch size used for evaluation and prediction.
    pub fn eval_batch_size(&self) -> usize {
        self.model.eval_batch_size.unwrap_or(self.train.batch_size * 2)
    }
}
