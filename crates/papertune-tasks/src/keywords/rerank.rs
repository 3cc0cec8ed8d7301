//! Evidence from the training papers added to a method's scores: how often a phrase was a gold
//! keyword where it occurred (keyphraseness, as KEA uses it), and the gold keywords of the
//! training papers most similar to the document (which may be absent from its text).
//!
//! The run folder keeps the training papers' texts and gold keywords (`keyword_memory.json`);
//! the statistics and the similarity index are rebuilt from it when the run is loaded.

use std::collections::{HashMap, HashSet};

use papertune_data::normalize_keyword;
use serde::{Deserialize, Serialize};

use super::extract::{is_stopword, segments};

/// `[rerank]`: what the training papers add to each candidate's score (all off by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RerankConfig {
    /// Weight of keyphraseness: `g / (t + 1)` for a phrase that was a gold keyword of `g`
    /// training papers and occurs in the text of `t`.
    pub keyphraseness: f64,
    /// Training papers consulted per document (by TF-IDF cosine of title and abstract); 0: none.
    pub neighbours: usize,
    /// Weight of the neighbours' vote: each neighbour's gold keywords get its similarity,
    /// divided by the sum of the neighbours' similarities.
    pub neighbour_weight: f64,
    /// Candidates taken from the method before re-ranking, as a multiple of the final count.
    pub pool: usize,
}

impl Default for RerankConfig {
    fn default() -> Self {
        Self { keyphraseness: 0.0, neighbours: 0, neighbour_weight: 0.0, pool: 4 }
    }
}

impl RerankConfig {
    /// Candidates taken from the method to re-rank for a final `top_k`.
    pub fn pool_size(&self, top_k: usize) -> usize {
        top_k.saturating_mul(self.pool)
    }

    /// Whether anything is added.
    pub fn enabled(&self) -> bool {
        self.keyphraseness > 0.0 || (self.neighbours > 0 && self.neighbour_weight > 0.0)
    }

    /// Checks the options; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        for (key, value) in
            [("keyphraseness", self.keyphraseness), ("neighbour_weight", self.neighbour_weight)]
        {
            if !(value >= 0.0 && value.is_finite()) {
                return Err(format!("rerank.{key} must be a non-negative number, found {value}"));
            }
        }
        if self.neighbours > 1000 {
            return Err(format!(
                "rerank.neighbours must be at most 1000, found {}",
                self.neighbours
            ));
        }
        if !(1..=100).contains(&self.pool) {
            return Err(format!("rerank.pool must be in 1..=100, found {}", self.pool));
        }
        Ok(())
    }
}

/// One training paper as the run folder keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryPaper {
    /// Title and abstract ([`super::document_text`]).
    pub text: String,
    /// Gold keywords, normalised.
    pub keywords: Vec<String>,
}

/// The training papers, as `keyword_memory.json` holds them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct KeywordMemory {
    pub papers: Vec<MemoryPaper>,
}

/// A sparse unit vector: term ids and weights, sorted by id.
type SparseVector = Vec<(u32, f32)>;

/// [`KeywordMemory`] made ready: keyphraseness counts and a TF-IDF index of the texts.
pub struct MemoryIndex {
    /// Per gold keyword (as word tokens joined by spaces): papers where it was gold, papers
    /// whose text holds it.
    counts: HashMap<String, (u32, u32)>,
    terms: HashMap<String, u32>,
    idf: Vec<f32>,
    vectors: Vec<SparseVector>,
    keywords: Vec<Vec<String>>,
}

fn phrase_key(phrase: &str) -> String {
    segments(phrase).into_iter().flatten().collect::<Vec<_>>().join(" ")
}

/// Unigrams and bigrams of the content words of each segment (stopwords dropped first).
fn terms_of(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for segment in segments(text) {
        let content: Vec<&String> = segment
            .iter()
            .filter(|w| !is_stopword(w) && w.chars().any(char::is_alphanumeric))
            .collect();
        out.extend(content.iter().map(|w| (*w).clone()));
        out.extend(content.windows(2).map(|pair| format!("{} {}", pair[0], pair[1])));
    }
    out
}

impl MemoryIndex {
    /// Builds the counts and the index (terms in at least two papers, sublinear term
    /// frequency, smoothed idf, unit length).
    pub fn new(memory: &KeywordMemory, longest_keyword: usize) -> Self {
        let mut counts: HashMap<String, (u32, u32)> = HashMap::new();
        for paper in &memory.papers {
            let gold: HashSet<String> =
                paper.keywords.iter().map(|k| phrase_key(k)).filter(|k| !k.is_empty()).collect();
            for key in gold {
                counts.entry(key).or_default().0 += 1;
            }
        }
        let longest = longest_keyword.max(1);
        for paper in &memory.papers {
            let mut seen: HashSet<String> = HashSet::new();
            for segment in segments(&paper.text) {
                for start in 0..segment.len() {
                    let mut key = String::new();
                    for word in segment.iter().skip(start).take(longest) {
                        if !key.is_empty() {
                            key.push(' ');
                        }
                        key.push_str(word);
                        if counts.contains_key(&key) {
                            seen.insert(key.clone());
                        }
                    }
                }
            }
            for key in seen {
                if let Some(entry) = counts.get_mut(&key) {
                    entry.1 += 1;
                }
            }
        }
        let documents: Vec<Vec<String>> = memory.papers.iter().map(|p| terms_of(&p.text)).collect();
        let mut document_frequency: HashMap<&str, u32> = HashMap::new();
        for terms in &documents {
            for term in terms.iter().map(String::as_str).collect::<HashSet<_>>() {
                *document_frequency.entry(term).or_default() += 1;
            }
        }
        let n = memory.papers.len() as f32;
        let mut terms: HashMap<String, u32> = HashMap::new();
        let mut idf = Vec::new();
        let mut kept: Vec<(&str, u32)> =
            document_frequency.into_iter().filter(|(_, df)| *df >= 2).collect();
        kept.sort();
        for (term, df) in kept {
            terms.insert(term.to_owned(), idf.len() as u32);
            idf.push(((1.0 + n) / (1.0 + df as f32)).ln() + 1.0);
        }
        let mut index = Self {
            counts,
            terms,
            idf,
            vectors: Vec::new(),
            keywords: memory.papers.iter().map(|p| p.keywords.clone()).collect(),
        };
        index.vectors = documents.iter().map(|terms| index.vector(terms)).collect();
        index
    }

    fn vector(&self, terms: &[String]) -> SparseVector {
        let mut counts: HashMap<u32, f32> = HashMap::new();
        for term in terms {
            if let Some(&id) = self.terms.get(term) {
                *counts.entry(id).or_default() += 1.0;
            }
        }
        let mut vector: SparseVector = counts
            .into_iter()
            .map(|(id, tf)| (id, (1.0 + tf.ln()) * self.idf[id as usize]))
            .collect();
        vector.sort_by_key(|&(id, _)| id);
        let norm = vector.iter().map(|(_, w)| w * w).sum::<f32>().sqrt();
        if norm > 0.0 {
            vector.iter_mut().for_each(|(_, w)| *w /= norm);
        }
        vector
    }

    /// Keyphraseness of a phrase: `g / (t + 1)`, 0 for a phrase never gold in training.
    pub fn keyphraseness(&self, phrase: &str) -> f64 {
        self.counts
            .get(&phrase_key(phrase))
            .map_or(0.0, |&(gold, text)| f64::from(gold) / (f64::from(text) + 1.0))
    }

    /// The `k` training papers most similar to `text`, with their cosine, best first.
    pub fn neighbours(&self, text: &str, k: usize) -> Vec<(usize, f64)> {
        let query = self.vector(&terms_of(text));
        let mut similar: Vec<(usize, f64)> = self
            .vectors
            .iter()
            .enumerate()
            .map(|(i, vector)| (i, f64::from(sparse_dot(&query, vector))))
            .filter(|(_, s)| *s > 0.0)
            .collect();
        similar.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        similar.truncate(k);
        similar
    }

    /// A method's scored phrases for `text` with the training papers' evidence added, best
    /// first, at most `top_k`.
    pub fn rerank(
        &self,
        text: &str,
        scored: &[(String, f64)],
        config: &RerankConfig,
        top_k: usize,
    ) -> Vec<(String, f64)> {
        let mut order: Vec<String> = Vec::new();
        let mut total: HashMap<String, f64> = HashMap::new();
        for (phrase, score) in scored {
            add_score(
                &mut order,
                &mut total,
                phrase,
                *score + config.keyphraseness * self.keyphraseness(phrase),
            );
        }
        if config.neighbours > 0 && config.neighbour_weight > 0.0 {
            let neighbours = self.neighbours(text, config.neighbours);
            let sum: f64 = neighbours.iter().map(|(_, s)| s).sum();
            for (i, similarity) in neighbours {
                for keyword in &self.keywords[i] {
                    let keyword = normalize_keyword(keyword);
                    // A phrase the method did not propose gets its keyphraseness here, once.
                    let prior = if total.contains_key(&keyword) {
                        0.0
                    } else {
                        config.keyphraseness * self.keyphraseness(&keyword)
                    };
                    add_score(
                        &mut order,
                        &mut total,
                        &keyword,
                        config.neighbour_weight * similarity / sum + prior,
                    );
                }
            }
        }
        let mut ranked: Vec<(String, f64)> = order
            .into_iter()
            .map(|p| {
                let score = total[&p];
                (p, score)
            })
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        ranked.truncate(top_k);
        ranked
    }
}

/// Adds `value` to a phrase's score, remembering the order phrases first came in.
fn add_score(order: &mut Vec<String>, total: &mut HashMap<String, f64>, phrase: &str, value: f64) {
    match total.get_mut(phrase) {
        Some(score) => *score += value,
        None => {
            order.push(phrase.to_owned());
            total.insert(phrase.to_owned(), value);
        }
    }
}

/// Re-ranking ready to apply: what to add, and the training papers' index.
pub struct Reranker {
    pub config: RerankConfig,
    pub index: MemoryIndex,
}

/// How many candidates a method proposes for `top_k` final ones: a larger pool when re-ranking.
pub fn pool_size(reranker: Option<&Reranker>, top_k: usize) -> usize {
    reranker.map_or(top_k, |r| r.config.pool_size(top_k))
}

/// A method's candidates for `text` made final: re-ranked when there is a reranker, cut at
/// `top_k` either way.
pub fn finish(
    reranker: Option<&Reranker>,
    text: &str,
    mut scored: Vec<(String, f64)>,
    top_k: usize,
) -> Vec<(String, f64)> {
    match reranker {
        Some(r) => r.index.rerank(text, &scored, &r.config, top_k),
        None => {
            scored.truncate(top_k);
            scored
        }
    }
}

fn sparse_dot(a: &[(u32, f32)], b: &[(u32, f32)]) -> f32 {
    let (mut i, mut j, mut sum) = (0, 0, 0.0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                sum += a[i].1 * b[j].1;
                i += 1;
                j += 1;
            }
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory() -> KeywordMemory {
        let paper = |text: &str, keywords: &[&str]| MemoryPaper {
            text: text.into(),
            keywords: keywords.iter().map(|k| (*k).to_owned()).collect(),
        };
        KeywordMemory {
            papers: vec![
                paper(
                    "Graph kernels for molecules. Graph kernels compare molecules.",
                    &["graph kernels", "chemistry"],
                ),
                paper("Graph kernels on social networks.", &["social networks"]),
                paper("Tumour growth in mice under a new dose.", &["tumour growth", "dose"]),
            ],
        }
    }

    #[test]
    fn keyphraseness_counts_gold_against_occurrences() {
        let index = MemoryIndex::new(&memory(), 4);
        // "graph kernels": gold once, in the text of two papers -> 1 / 3.
        assert!((index.keyphraseness("Graph  kernels") - 1.0 / 3.0).abs() < 1e-12);
        // "chemistry": gold once, in no text -> 1 / 1.
        assert!((index.keyphraseness("chemistry") - 1.0).abs() < 1e-12);
        assert_eq!(index.keyphraseness("molecules"), 0.0);
    }

    #[test]
    fn neighbours_vote_for_their_gold_keywords() {
        let index = MemoryIndex::new(&memory(), 4);
        let near = index.neighbours("kernels on graph data", 2);
        assert_eq!(near.len(), 2);
        assert!(near.iter().all(|(i, _)| *i < 2), "{near:?}");
        let config =
            RerankConfig { keyphraseness: 0.0, neighbours: 2, neighbour_weight: 1.0, pool: 4 };
        let ranked =
            index.rerank("kernels on graph data", &[("graph data".into(), 0.2)], &config, 5);
        let names: Vec<&str> = ranked.iter().map(|(k, _)| k.as_str()).collect();
        assert!(names.contains(&"graph kernels") && names.contains(&"graph data"), "{names:?}");
        assert!(!names.contains(&"dose"));
        // Off: the method's order, cut.
        let off = RerankConfig::default();
        assert!(!off.enabled());
        assert_eq!(
            index.rerank("x", &[("a".into(), 0.5), ("b".into(), 0.2)], &off, 1),
            vec![("a".to_owned(), 0.5)]
        );
    }
}
