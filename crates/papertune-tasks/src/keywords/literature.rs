//! The keyphrase literature's evaluation: F1@5 and F1@M over stemmed phrases, split into
//! present and absent keyphrases.

use std::collections::{BTreeMap, HashSet};

use rust_stemmers::{Algorithm, Stemmer};

/// Keyphrase metrics as keyphrase papers report them.
///
/// Macro averages over the documents that have at least one gold keyphrase of the category
/// (`documents` counts them); each document's F1 comes from its own precision and recall
/// (0 when both are 0), and precision and recall are averaged the same way.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct LiteratureScores {
    /// Mean F1 of the first five predictions, precision out of 5.
    pub f1_at_5: f64,
    /// Mean F1 of all predictions.
    pub f1_at_m: f64,
    /// Mean precision of the first five predictions: matches / 5, also when fewer are predicted.
    pub precision_at_5: f64,
    /// Mean recall of the first five predictions.
    pub recall_at_5: f64,
    /// Mean precision of all predictions: matches / predicted (0 when none).
    pub precision_at_m: f64,
    /// Mean recall of all predictions.
    pub recall_at_m: f64,
    /// Documents averaged over: those with at least one gold keyphrase of the category.
    pub documents: usize,
}

/// F1@5 and F1@M for present, absent and all keyphrases.
///
/// Every phrase (prediction, gold keyphrase, and the source text) is lowercased and split into
/// tokens at every character that is not a letter or digit, so "X-ray" and "x ray" are the
/// same two tokens and "3.5" is "3", "5". Each token is stemmed with Snowball's English
/// (Porter2) stemmer from `rust-stemmers`; published keyphrase work mostly uses NLTK's
/// original Porter stemmer, and the two stem a small share of words differently, so figures
/// can differ slightly from a paper's own script. Phrases are compared as stemmed token
/// sequences. A phrase with no token is dropped; among predictions with the same stemmed form
/// only the first is kept, and likewise for gold.
///
/// A phrase is *present* when its stemmed tokens occur contiguously in the stemmed tokens of
/// the document's title + abstract, *absent* otherwise. Present predictions (in their order)
/// are scored against present gold, absent predictions against absent gold, and `all` scores
/// every prediction against all gold.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct LiteratureMetrics {
    /// Present predictions against present gold.
    pub present: LiteratureScores,
    /// Absent predictions against absent gold.
    pub absent: LiteratureScores,
    /// All predictions against all gold.
    pub all: LiteratureScores,
}

/// A phrase as the metric compares it: its stemmed tokens.
type Stemmed = Vec<String>;

impl LiteratureMetrics {
    /// predicted[i], gold[i]: keyphrases of document i (any case); source[i]: its title + abstract.
    ///
    /// # Panics
    /// When the three slices differ in length.
    pub fn compute(predicted: &[Vec<String>], gold: &[Vec<String>], source: &[String]) -> Self {
        assert_eq!(predicted.len(), gold.len(), "one prediction list per gold list");
        assert_eq!(source.len(), gold.len(), "one source text per gold list");
        let stemmer = Stemmer::create(Algorithm::English);
        let mut sums = [Sums::default(), Sums::default(), Sums::default()];
        for ((pred, gold), source) in predicted.iter().zip(gold).zip(source) {
            let text = stem_phrase(&stemmer, source);
            let pred = distinct_stemmed(&stemmer, pred);
            let gold = distinct_stemmed(&stemmer, gold);
            let pred_present: Vec<bool> = pred.iter().map(|p| occurs_in(p, &text)).collect();
            let gold_present: Vec<bool> = gold.iter().map(|g| occurs_in(g, &text)).collect();
            let pick = |phrases: &[Stemmed], flags: &[bool], want: Option<bool>| -> Vec<Stemmed> {
                let keep = |i: usize| want.is_none_or(|w| flags[i] == w);
                (0..phrases.len()).filter(|&i| keep(i)).map(|i| phrases[i].clone()).collect()
            };
            for (sum, want) in sums.iter_mut().zip([Some(true), Some(false), None]) {
                sum.add(&pick(&pred, &pred_present, want), &pick(&gold, &gold_present, want));
            }
        }
        let [present, absent, all] = sums.map(Sums::mean);
        LiteratureMetrics { present, absent, all }
    }

    /// The figures as a flat map: `lit_{present,absent,all}_{f1_at_5, f1_at_m,
    /// precision_at_5, recall_at_5, precision_at_m, recall_at_m, documents}`.
    pub fn as_map(&self) -> BTreeMap<String, f64> {
        let mut map = BTreeMap::new();
        for (category, s) in
            [("present", &self.present), ("absent", &self.absent), ("all", &self.all)]
        {
            let fields = [
                ("f1_at_5", s.f1_at_5),
                ("f1_at_m", s.f1_at_m),
                ("precision_at_5", s.precision_at_5),
                ("recall_at_5", s.recall_at_5),
                ("precision_at_m", s.precision_at_m),
                ("recall_at_m", s.recall_at_m),
                ("documents", s.documents as f64),
            ];
            for (name, value) in fields {
                map.insert(format!("lit_{category}_{name}"), value);
            }
        }
        map
    }
}

/// Lowercase tokens split at every non-alphanumeric character, each stemmed.
fn stem_phrase(stemmer: &Stemmer, phrase: &str) -> Stemmed {
    phrase
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(|t| stemmer.stem(t).into_owned())
        .collect()
}

/// Stemmed forms of `phrases`, empty ones dropped, first occurrence of each kept.
fn distinct_stemmed(stemmer: &Stemmer, phrases: &[String]) -> Vec<Stemmed> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for phrase in phrases {
        let stemmed = stem_phrase(stemmer, phrase);
        if !stemmed.is_empty() && seen.insert(stemmed.clone()) {
            out.push(stemmed);
        }
    }
    out
}

/// Whether `phrase` (non-empty) occurs as a contiguous run of `text`.
fn occurs_in(phrase: &[String], text: &[String]) -> bool {
    !phrase.is_empty()
        && phrase.len() <= text.len()
        && text.windows(phrase.len()).any(|w| w == phrase)
}

fn f1(precision: f64, recall: f64) -> f64 {
    if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 }
}

/// Per-document figures of one category, summed.
#[derive(Default)]
struct Sums {
    scores: LiteratureScores,
}

impl Sums {
    /// Adds one document; skipped when it has no gold phrase of the category.
    fn add(&mut self, pred: &[Stemmed], gold: &[Stemmed]) {
        if gold.is_empty() {
            return;
        }
        let gold: HashSet<&Stemmed> = gold.iter().collect();
        let hits = |list: &[Stemmed]| list.iter().filter(|p| gold.contains(p)).count() as f64;
        let n_gold = gold.len() as f64;
        let (hits_5, hits_m) = (hits(&pred[..pred.len().min(5)]), hits(pred));
        let (p5, r5) = (hits_5 / 5.0, hits_5 / n_gold);
        let pm = if pred.is_empty() { 0.0 } else { hits_m / pred.len() as f64 };
        let rm = hits_m / n_gold;
        let s = &mut self.scores;
        s.precision_at_5 += p5;
        s.recall_at_5 += r5;
        s.f1_at_5 += f1(p5, r5);
        s.precision_at_m += pm;
        s.recall_at_m += rm;
        s.f1_at_m += f1(pm, rm);
        s.documents += 1;
    }

    /// The means (all 0 when no document counted).
    fn mean(self) -> LiteratureScores {
        let s = self.scores;
        let n = s.documents.max(1) as f64;
        LiteratureScores {
            f1_at_5: s.f1_at_5 / n,
            f1_at_m: s.f1_at_m / n,
            precision_at_5: s.precision_at_5 / n,
            recall_at_5: s.recall_at_5 / n,
            precision_at_m: s.precision_at_m / n,
            recall_at_m: s.recall_at_m / n,
            documents: s.documents,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    fn assert_scores(got: LiteratureScores, want: [f64; 6], documents: usize) {
        let fields = [
            got.f1_at_5,
            got.precision_at_5,
            got.recall_at_5,
            got.f1_at_m,
            got.precision_at_m,
            got.recall_at_m,
        ];
        for (i, (g, w)) in fields.iter().zip(want).enumerate() {
            assert!(close(*g, w), "field {i}: got {g}, want {w}");
        }
        assert_eq!(got.documents, documents);
    }

    fn f(p: f64, r: f64) -> f64 {
        2.0 * p * r / (p + r)
    }

    #[test]
    fn three_documents_by_hand() {
        let source = strings(&[
            "Neural networks for image segmentation.\nWe train a neural network on medical images.",
            "Protein folding with graph models.",
            "",
        ]);
        let gold = vec![
            strings(&["Neural network", "image segmentation", "deep learning"]),
            // duplicate after normalisation; no absent gold, so left out of the absent average
            strings(&["protein folding", "graph models", "Protein Folding"]),
            vec![], // no gold at all: left out everywhere
        ];
        let predicted = vec![
            // 4 distinct after stemming ("Neural Network" = "neural networks"): fewer than 5
            strings(&[
                "neural networks",
                "image segmentation",
                "medical images",
                "Neural Network",
                "deep learning",
            ]),
            // "Protein-folding" splits into "protein folding"; the match is 7th overall
            strings(&[
                "graph model",
                "molecular dynamics",
                "protein",
                "folding",
                "models",
                "graphs",
                "Protein-folding",
            ]),
            strings(&["anything"]),
        ];
        let m = LiteratureMetrics::compute(&predicted, &gold, &source);
        // doc 1 present: 3 predictions, 2 gold, 2 hits; doc 2 present: 6 predictions (hits at
        // 1st and 6th), 2 gold
        let (d1_5, d2_5) = ((0.4, 1.0), (0.2, 0.5));
        let (d1_m, d2_m) = ((2.0 / 3.0, 1.0), (1.0 / 3.0, 1.0));
        assert_scores(
            m.present,
            [
                (f(d1_5.0, d1_5.1) + f(d2_5.0, d2_5.1)) / 2.0,
                0.3,
                0.75,
                (f(d1_m.0, d1_m.1) + f(d2_m.0, d2_m.1)) / 2.0,
                0.5,
                1.0,
            ],
            2,
        );
        // only doc 1 has absent gold ("deep learning"), predicted once, precision out of 5
        assert_scores(m.absent, [f(0.2, 1.0), 0.2, 1.0, 1.0, 1.0, 1.0], 1);
        // doc 1: 4 predictions, 3 gold, 3 hits; doc 2: 7 predictions, 2 gold, 1 hit in the first
        // five and 2 in all
        assert_scores(
            m.all,
            [
                (f(0.6, 1.0) + f(0.2, 0.5)) / 2.0,
                0.4,
                0.75,
                (f(0.75, 1.0) + f(2.0 / 7.0, 1.0)) / 2.0,
                (0.75 + 2.0 / 7.0) / 2.0,
                1.0,
            ],
            2,
        );
        let map = m.as_map();
        assert_eq!(map.len(), 21);
        assert_eq!(map["lit_absent_documents"], 1.0);
        assert!(close(map["lit_present_f1_at_5"], m.present.f1_at_5));
        assert!(close(map["lit_all_recall_at_m"], 1.0));
    }

    #[test]
    fn stemming_and_tokens() {
        let stemmer = Stemmer::create(Algorithm::English);
        assert_eq!(
            stem_phrase(&stemmer, "Neural Networks"),
            stem_phrase(&stemmer, "neural network")
        );
        assert_eq!(stem_phrase(&stemmer, "X-ray, 3.5"), strings(&["x", "ray", "3", "5"]));
        assert!(stem_phrase(&stemmer, " — ; ").is_empty());
        assert!(occurs_in(&strings(&["b", "c"]), &strings(&["a", "b", "c"])));
        assert!(!occurs_in(&strings(&["c", "b"]), &strings(&["a", "b", "c"])));
        assert!(!occurs_in(&strings(&["a", "b"]), &strings(&["a"])));
    }

    #[test]
    fn empty_inputs_do_not_panic() {
        assert_eq!(LiteratureMetrics::compute(&[], &[], &[]), LiteratureMetrics::default());
        let m = LiteratureMetrics::compute(
            &[vec![], strings(&["", "—"])],
            &[strings(&["", "!!"]), strings(&["word"])],
            &strings(&["", ""]),
        );
        assert_eq!(m.present.documents, 0);
        assert_scores(m.absent, [0.0; 6], 1);
        assert_scores(m.all, [0.0; 6], 1);
    }

    #[test]
    #[should_panic(expected = "one prediction list per gold list")]
    fn lengths_must_agree() {
        LiteratureMetrics::compute(&[vec![]], &[], &[]);
    }
}
