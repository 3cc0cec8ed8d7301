//! Task 1 metrics: binary F1 (positive class 1), precision, recall and accuracy.

use std::collections::BTreeMap;

use serde::Serialize;

/// Confusion counts and the metrics derived from them.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct BinaryMetrics {
    pub f1: f64,
    pub precision: f64,
    pub recall: f64,
    pub accuracy: f64,
    pub n: usize,
    pub true_positives: usize,
    pub false_positives: usize,
    pub true_negatives: usize,
    pub false_negatives: usize,
}

impl BinaryMetrics {
    /// Scores predictions against gold labels (both 0/1, same length).
    pub fn compute(predicted: &[u8], gold: &[u8]) -> Self {
        assert_eq!(predicted.len(), gold.len(), "one prediction per gold label");
        let mut m = Self { n: gold.len(), ..Self::default() };
        for (&p, &g) in predicted.iter().zip(gold) {
            match (p == 1, g == 1) {
                (true, true) => m.true_positives += 1,
                (true, false) => m.false_positives += 1,
                (false, false) => m.true_negatives += 1,
                (false, true) => m.false_negatives += 1,
            }
        }
        let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        m.precision = ratio(m.true_positives, m.true_positives + m.false_positives);
        m.recall = ratio(m.true_positives, m.true_positives + m.false_negatives);
        m.f1 = if m.precision + m.recall == 0.0 {
            0.0
        } else {
            2.0 * m.precision * m.recall / (m.precision + m.recall)
        };
        m.accuracy = ratio(m.true_positives + m.true_negatives, m.n);
        m
    }

    /// The four headline metrics by name (for the trainer's best-checkpoint choice).
    pub fn as_map(&self) -> BTreeMap<String, f64> {
        BTreeMap::from([
            ("f1".to_owned(), self.f1),
            ("precision".to_owned(), self.precision),
            ("recall".to_owned(), self.recall),
            ("accuracy".to_owned(), self.accuracy),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_ratios() {
        // tp=2, fp=1, tn=1, fn=1
        let m = BinaryMetrics::compute(&[1, 1, 1, 0, 0], &[1, 1, 0, 0, 1]);
        assert_eq!((m.true_positives, m.false_positives, m.true_negatives, m.false_negatives), (2, 1, 1, 1));
        assert!((m.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.f1 - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.accuracy - 0.6).abs() < 1e-12);
    }

    #[test]
    fn no_positive_predictions_give_zero_f1_not_nan() {
        let m = BinaryMetrics::compute(&[0, 0], &[1, 0]);
        assert_eq!(m.f1, 0.0);
        assert_eq!(m.precision, 0.0);
        assert_eq!(m.accuracy, 0.5);
    }
}
