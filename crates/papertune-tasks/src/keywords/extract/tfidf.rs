//! pke-style tf-idf keyword ranking: clean candidates of a document scored by their count in
//! the document times a smoothed inverse document frequency from a training corpus.

use std::collections::BTreeMap;

use papertune_data::normalize_keyword;

use super::candidates::Candidates;

/// Document frequencies of clean candidates over a training corpus; serialisable (serde) so a run folder can store it as JSON.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IdfTable {
    /// Number of training documents.
    pub documents: usize,
    /// Longest candidate, in tokens, used when counting (and when ranking with this table).
    pub max_ngram: usize,
    /// For each clean candidate phrase, the number of training documents that contain it.
    pub df: BTreeMap<String, u32>,
}

impl IdfTable {
    /// Counts, for every clean candidate of up to `max_ngram` tokens, how many of `texts`
    /// contain it. Each text is one document's
    /// [`document_text`](super::candidates::document_text); empty texts still count as
    /// documents.
    pub fn build<'a>(texts: impl IntoIterator<Item = &'a str>, max_ngram: usize) -> Self {
        let mut df: BTreeMap<String, u32> = BTreeMap::new();
        let mut documents = 0;
        for text in texts {
            documents += 1;
            for phrase in Candidates::clean(text, max_ngram).phrases {
                *df.entry(phrase).or_insert(0) += 1;
            }
        }
        IdfTable { documents, max_ngram, df }
    }

    /// scikit-learn's smoothed idf, `ln((1 + n) / (1 + df)) + 1`, with `n` the number of
    /// documents and `df` the phrase's document frequency (0 for a phrase never seen).
    pub fn idf(&self, phrase: &str) -> f64 {
        let df = self.df.get(phrase).copied().unwrap_or(0);
        ((1.0 + self.documents as f64) / (1.0 + f64::from(df))).ln() + 1.0
    }

    /// Checks a table read from a file: candidates of 1 to 8 words, and no phrase in more
    /// documents than the table counts.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=8).contains(&self.max_ngram) {
            return Err(format!("max_ngram must be in 1..=8, found {}", self.max_ngram));
        }
        if let Some((phrase, df)) = self.df.iter().find(|(_, df)| **df as usize > self.documents) {
            return Err(format!("{phrase:?} is counted in {df} documents of {}", self.documents));
        }
        Ok(())
    }
}

/// Phrases of `text` ranked by count × idf (ties by first occurrence), normalised and de-duplicated, at most k, with scores.
///
/// The candidates are [`Candidates::clean`] with the table's `max_ngram`; `text` is a
/// [`document_text`](super::candidates::document_text). Each phrase goes through
/// `normalize_keyword`; a phrase whose normal form is empty or already taken is skipped, so
/// the list is what papertune's keyword metric would score. (The reference script first cuts
/// the ranking at 4k; clean candidates are already distinct and in normal form, so the result
/// is the same.)
pub fn tfidf_keywords(text: &str, idf: &IdfTable, k: usize) -> Vec<(String, f64)> {
    let candidates = Candidates::clean(text, idf.max_ngram);
    let scores: Vec<f64> = candidates
        .phrases
        .iter()
        .zip(&candidates.counts)
        .map(|(phrase, &count)| count as f64 * idf.idf(phrase))
        .collect();
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut out: Vec<(String, f64)> = Vec::new();
    for i in order {
        if out.len() >= k {
            break;
        }
        let keyword = normalize_keyword(&candidates.phrases[i]);
        if !keyword.is_empty() && out.iter().all(|(seen, _)| *seen != keyword) {
            out.push((keyword, scores[i]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> IdfTable {
        let docs = ["Graph neural networks", "Neural networks for images", "Image graph"];
        IdfTable::build(docs.iter().copied(), 3)
    }

    #[test]
    fn document_frequencies_by_hand() {
        let idf = corpus();
        assert_eq!(idf.documents, 3);
        assert_eq!(idf.df["graph"], 2);
        assert_eq!(idf.df["neural networks"], 2);
        assert_eq!(idf.df["graph neural networks"], 1);
        assert_eq!(idf.df["images"], 1);
        assert!(!idf.df.contains_key("for"), "stopword");
        assert!(!idf.df.contains_key("networks for images"), "stopword inside");
        assert_eq!(idf.df.len(), 9);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(idf.idf("graph"), (4.0f64 / 3.0).ln() + 1.0));
        assert!(close(idf.idf("images"), 2.0f64.ln() + 1.0));
        assert!(close(idf.idf("never seen"), 4.0f64.ln() + 1.0));
        let empty = IdfTable::build(std::iter::empty(), 3);
        assert_eq!(empty.idf("anything"), 1.0);
    }

    #[test]
    fn ranking_by_hand() {
        let idf = corpus();
        let text = "Neural networks and graph networks. Graph networks! Proteins";
        let got = tfidf_keywords(text, &idf, 10);
        let a = (4.0f64 / 3.0).ln() + 1.0; // df 2
        let b = 4.0f64.ln() + 1.0; // df 0
        let want = [
            ("graph networks", 2.0 * b),
            ("networks", 3.0 * a),
            ("graph", 2.0 * a),
            ("proteins", b),
            ("neural", a), // tie with "neural networks": first occurrence wins
            ("neural networks", a),
        ];
        assert_eq!(got.len(), want.len());
        for ((phrase, score), (want_phrase, want_score)) in got.iter().zip(want) {
            assert_eq!(phrase, want_phrase);
            assert!((score - want_score).abs() < 1e-12, "{phrase}");
        }
        let top2: Vec<String> = tfidf_keywords(text, &idf, 2).into_iter().map(|p| p.0).collect();
        assert_eq!(top2, ["graph networks", "networks"]);
        assert!(tfidf_keywords(text, &idf, 0).is_empty());
        assert!(tfidf_keywords("", &idf, 5).is_empty());
    }

    #[test]
    fn table_round_trips_through_json() {
        let idf = corpus();
        let json = serde_json::to_string(&idf).unwrap();
        let back: IdfTable = serde_json::from_str(&json).unwrap();
        assert_eq!(back, idf);
    }
}
