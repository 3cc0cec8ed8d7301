//! Named evaluation results, and the record of one evaluation that checkpoints carry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Named evaluation results, e.g. `f1`, `accuracy`.
pub type Metrics = BTreeMap<String, f64>;

/// One evaluation of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    pub step: usize,
    pub epoch: usize,
    pub metrics: Metrics,
}
