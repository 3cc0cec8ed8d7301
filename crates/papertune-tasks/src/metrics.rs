//! Task metrics: binary F1 (positive class 1), precision, recall and accuracy for task 1, and
//! the precision-recall curve; keyword set F1, F1@5 and F1@M for task 2.

use std::collections::BTreeMap;

use serde::Serialize;

/// Checks that `train.metric_for_best` is one of the task's metrics (`what`: "classification",
/// "keyword").
pub(crate) fn check_metric_for_best(
    metric: &str,
    names: &[&str],
    what: &str,
) -> Result<(), String> {
    if names.contains(&metric) {
        return Ok(());
    }
    Err(format!("train.metric_for_best {metric:?} is not a {what} metric ({})", names.join(", ")))
}

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
    /// The metrics that can pick the best checkpoint (`train.metric_for_best`).
    pub const NAMES: [&str; 4] = ["f1", "precision", "recall", "accuracy"];

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

/// Precision and recall at every distinct threshold, from the highest score down; `None`
/// without positives.
pub fn precision_recall_curve(
    probabilities: &[f32],
    labels: &[u8],
) -> Option<Vec<(f64, f64, f64)>> {
    let positives = labels.iter().filter(|&&l| l == 1).count();
    if positives == 0 || probabilities.len() != labels.len() {
        return None;
    }
    let mut order: Vec<usize> = (0..labels.len()).collect();
    order.sort_by(|&a, &b| probabilities[b].total_cmp(&probabilities[a]));
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut curve = Vec::new(); // (recall, precision, threshold)
    for (k, &i) in order.iter().enumerate() {
        if labels[i] == 1 {
            tp += 1;
        } else {
            fp += 1;
        }
        let last_of_score = order.get(k + 1).is_none_or(|&j| probabilities[j] != probabilities[i]);
        if last_of_score {
            curve.push((
                tp as f64 / positives as f64,
                tp as f64 / (tp + fp) as f64,
                f64::from(probabilities[i]),
            ));
        }
    }
    Some(curve)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_ratios() {
        // tp=2, fp=1, tn=1, fn=1
        let m = BinaryMetrics::compute(&[1, 1, 1, 0, 0], &[1, 1, 0, 0, 1]);
        assert_eq!(
            (m.true_positives, m.false_positives, m.true_negatives, m.false_negatives),
            (2, 1, 1, 1)
        );
        assert!((m.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.f1 - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.accuracy - 0.6).abs() < 1e-12);
    }

    #[test]
    fn precision_recall_by_hand() {
        let curve = precision_recall_curve(&[0.9, 0.8, 0.8, 0.1], &[1, 0, 1, 0]).unwrap();
        assert_eq!(
            curve,
            vec![
                (0.5, 1.0, 0.9f32 as f64),
                (1.0, 2.0 / 3.0, 0.8f32 as f64),
                (1.0, 0.5, 0.1f32 as f64)
            ]
        );
        assert!(precision_recall_curve(&[0.5], &[0]).is_none());
    }

    #[test]
    fn no_positive_predictions_give_zero_f1_not_nan() {
        let m = BinaryMetrics::compute(&[0, 0], &[1, 0]);
        assert_eq!(m.f1, 0.0);
        assert_eq!(m.precision, 0.0);
        assert_eq!(m.accuracy, 0.5);
    }
}

/// Keyword metrics over a corpus, on normalised, de-duplicated keywords
/// (see `papertune_data::normalize_keyword`).
///
/// - `kw_precision`, `kw_recall`, `kw_f1`: micro-averaged set metrics (matches over all
///   documents / predictions over all documents, / gold keywords over all documents).
/// - `kw_f1_at_m`: mean over documents of the F1 of all predictions.
/// - `kw_f1_at_5`: mean over documents of the F1 of the first five predictions, precision
///   counted out of five (missing predictions count as wrong), as in the keyphrase literature.
///
/// Documents without gold keywords are left out; `n` counts the others.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KeywordMetrics {
    pub kw_precision: f64,
    pub kw_recall: f64,
    pub kw_f1: f64,
    pub kw_f1_at_5: f64,
    pub kw_f1_at_m: f64,
    /// Mean number of predicted keywords per scored document.
    pub mean_predicted: f64,
    pub n: usize,
}

fn f1(precision: f64, recall: f64) -> f64 {
    if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 }
}

impl KeywordMetrics {
    /// The metrics that can pick the best checkpoint (`train.metric_for_best`).
    pub const NAMES: [&str; 5] = ["kw_f1", "kw_f1_at_5", "kw_f1_at_m", "kw_precision", "kw_recall"];

    /// Scores predictions against gold keywords, document by document.
    pub fn compute(predicted: &[Vec<String>], gold: &[Vec<String>]) -> Self {
        assert_eq!(predicted.len(), gold.len(), "one prediction list per document");
        let (mut matched_total, mut predicted_total, mut gold_total) = (0usize, 0usize, 0usize);
        let (mut f1_at_m, mut f1_at_5, mut n) = (0.0, 0.0, 0usize);
        for (pred, gold) in predicted.iter().zip(gold) {
            if gold.is_empty() {
                continue;
            }
            n += 1;
            let matched = pred.iter().filter(|k| gold.contains(k)).count();
            matched_total += matched;
            predicted_total += pred.len();
            gold_total += gold.len();
            let precision = if pred.is_empty() { 0.0 } else { matched as f64 / pred.len() as f64 };
            f1_at_m += f1(precision, matched as f64 / gold.len() as f64);
            let matched_5 = pred.iter().take(5).filter(|k| gold.contains(k)).count();
            f1_at_5 += f1(matched_5 as f64 / 5.0, matched_5 as f64 / gold.len() as f64);
        }
        let precision =
            if predicted_total == 0 { 0.0 } else { matched_total as f64 / predicted_total as f64 };
        let recall = if gold_total == 0 { 0.0 } else { matched_total as f64 / gold_total as f64 };
        let per_doc = |sum: f64| if n == 0 { 0.0 } else { sum / n as f64 };
        Self {
            kw_precision: precision,
            kw_recall: recall,
            kw_f1: f1(precision, recall),
            kw_f1_at_5: per_doc(f1_at_5),
            kw_f1_at_m: per_doc(f1_at_m),
            mean_predicted: per_doc(predicted_total as f64),
            n,
        }
    }

    /// The metrics by name, for the trainer.
    pub fn as_map(&self) -> BTreeMap<String, f64> {
        BTreeMap::from([
            ("kw_precision".to_owned(), self.kw_precision),
            ("kw_recall".to_owned(), self.kw_recall),
            ("kw_f1".to_owned(), self.kw_f1),
            ("kw_f1_at_5".to_owned(), self.kw_f1_at_5),
            ("kw_f1_at_m".to_owned(), self.kw_f1_at_m),
            ("mean_predicted".to_owned(), self.mean_predicted),
        ])
    }
}

#[cfg(test)]
mod keyword_tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn keyword_metrics_by_hand() {
        // Doc 1: 2 of 3 predictions right, 4 gold. Doc 2: 1 of 6 right, 1 gold. Doc 3: no gold.
        let predicted =
            vec![list(&["a", "b", "x"]), list(&["q", "r", "s", "t", "u", "k"]), list(&["z"])];
        let gold = vec![list(&["a", "b", "c", "d"]), list(&["k"]), list(&[])];
        let m = KeywordMetrics::compute(&predicted, &gold);
        assert_eq!(m.n, 2);
        assert!((m.kw_precision - 3.0 / 9.0).abs() < 1e-12);
        assert!((m.kw_recall - 3.0 / 5.0).abs() < 1e-12);
        let doc1 = 2.0 * (2.0 / 3.0) * 0.5 / (2.0 / 3.0 + 0.5);
        let doc2 = 2.0 * (1.0 / 6.0) * 1.0 / (1.0 / 6.0 + 1.0);
        assert!((m.kw_f1_at_m - (doc1 + doc2) / 2.0).abs() < 1e-12);
        // F1@5: doc 1 precision 2/5, recall 2/4; doc 2: "k" is sixth, so nothing matched.
        let doc1_at_5 = 2.0 * 0.4 * 0.5 / 0.9;
        assert!((m.kw_f1_at_5 - doc1_at_5 / 2.0).abs() < 1e-12);
        assert!((m.mean_predicted - 4.5).abs() < 1e-12);
    }
}
