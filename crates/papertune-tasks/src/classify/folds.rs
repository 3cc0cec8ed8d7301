//! The summary of a k-fold training: the mean and sample standard deviation, over the folds, of
//! each validation metric of the folds' best checkpoints (`folds_summary.json` in the k-fold
//! folder, and the lines `train` prints at the end).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::TaskError;
use crate::pipeline::TrainReport;
use crate::run_dir::{FOLDS_SUMMARY_FILE, write_json};

/// One metric over the folds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSpread {
    pub mean: f64,
    /// Sample standard deviation (divided by n - 1); none with fewer than two values.
    pub std: Option<f64>,
    /// The value of each fold that reported the metric, in fold order.
    pub values: Vec<f64>,
}

impl MetricSpread {
    fn of(values: Vec<f64>) -> Self {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let std = (values.len() > 1)
            .then(|| (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
        Self { mean, std, values }
    }
}

/// The validation metrics of the folds' best checkpoints, summarised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldsSummary {
    /// The fold runs with a best checkpoint (`fold-1`, ...), in order: the ones summarised.
    pub folds: Vec<String>,
    /// The step of each of their best checkpoints.
    pub best_steps: Vec<usize>,
    /// The metric that picked the best checkpoints.
    pub metric_for_best: String,
    pub metrics: BTreeMap<String, MetricSpread>,
}

impl FoldsSummary {
    /// The summary of the folds' reports; `None` when no fold has a best checkpoint.
    pub fn new(reports: &[TrainReport], metric_for_best: &str) -> Option<Self> {
        let best: Vec<(&TrainReport, usize, &papertune_train::Metrics)> = reports
            .iter()
            .filter_map(|r| Some((r, r.best_step?, r.best_metrics.as_ref()?)))
            .collect();
        if best.is_empty() {
            return None;
        }
        let mut values: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (_, _, metrics) in &best {
            for (name, value) in metrics.iter() {
                values.entry(name.clone()).or_default().push(*value);
            }
        }
        let name = |r: &TrainReport| {
            r.run
                .file_name()
                .map_or_else(|| r.run.display().to_string(), |n| n.to_string_lossy().into())
        };
        Some(Self {
            folds: best.iter().map(|(r, _, _)| name(r)).collect(),
            best_steps: best.iter().map(|(_, step, _)| *step).collect(),
            metric_for_best: metric_for_best.to_owned(),
            metrics: values.into_iter().map(|(k, v)| (k, MetricSpread::of(v))).collect(),
        })
    }

    /// Writes `folds_summary.json` into the k-fold folder `out` (atomically).
    pub fn write(&self, out: &Path) -> Result<(), TaskError> {
        write_json(&out.join(FOLDS_SUMMARY_FILE), self)
    }

    /// What `train` prints: a header, then `metric  mean ± std` per metric.
    pub fn lines(&self) -> Vec<String> {
        let width = self.metrics.keys().map(String::len).max().unwrap_or(0);
        let mut lines = vec![format!(
            "{} folds, best checkpoints by {}: mean ± sample standard deviation",
            self.folds.len(),
            self.metric_for_best
        )];
        for (name, spread) in &self.metrics {
            let std = spread.std.map_or_else(|| "-".to_owned(), |s| format!("{s:.4}"));
            lines.push(format!("  {name:<width$}  {:.4} ± {std}", spread.mean));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_standard_deviation() {
        let spread = MetricSpread::of(vec![0.5, 0.75, 1.0]);
        assert!((spread.mean - 0.75).abs() < 1e-12);
        assert!((spread.std.unwrap() - 0.25).abs() < 1e-12);
        assert_eq!(MetricSpread::of(vec![0.5]).std, None);
    }
}
