//! Embedding ranker (KeyBERT-style): a document's candidate phrases ranked by the cosine of
//! their sentence embedding to the document's, on papertune's own MiniLM; optionally in maximal
//! marginal relevance order, which trades similarity to the document against similarity to the
//! phrases already picked.

use std::collections::HashMap;

use burn::tensor::Device;
use papertune_data::{TextTokenizer, normalize_keyword};
use papertune_models::PretrainedEncoder;
use papertune_models::bert::BertConfig;
use papertune_models::source;

use super::candidates::Candidates;
use crate::embed::sentence_embeddings;
use crate::encoder::encoder_files;
use crate::error::TaskError;
use crate::progress::Progress;

/// Longest input of the sentence encoder, in tokens (sentence-transformers' setting for
/// all-MiniLM-L6-v2).
const EMBED_MAX_LEN: usize = 256;

/// The ranker: a sentence encoder and the ranking options.
pub struct EmbedRanker {
    encoder: PretrainedEncoder,
    tokenizer: TextTokenizer,
    max_ngram: usize,
    diversity: f64,
    batch_size: usize,
}

impl EmbedRanker {
    /// Loads encoder `source` (a preset, hub id or folder); texts are cut at 256 tokens, or at
    /// the encoder's positions when it has fewer.
    pub fn load(
        source: &str,
        max_ngram: usize,
        diversity: f64,
        batch_size: usize,
        device: &Device,
    ) -> Result<Self, TaskError> {
        let positions = BertConfig::read(&source::resolve(source)?.config)?.max_sequence_len();
        let (files, encoder_config, tokenizer) =
            encoder_files(source, EMBED_MAX_LEN.min(positions))?;
        let encoder = PretrainedEncoder::load_weights(encoder_config, &files.weights, device)?;
        Ok(Self { encoder, tokenizer, max_ngram, diversity, batch_size: batch_size.max(1) })
    }

    /// Unit-length embeddings of `texts`, batched by length (in bytes, a proxy for tokens).
    fn embed(
        &self,
        texts: &[&str],
        device: &Device,
        what: &'static str,
    ) -> Result<Vec<Vec<f32>>, TaskError> {
        let lengths: Vec<usize> = texts.iter().map(|t| t.len()).collect();
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| lengths[i]);
        let mut out = vec![Vec::new(); texts.len()];
        let mut progress = Progress::new(texts.len(), what);
        for chunk in order.chunks(self.batch_size) {
            let batch: Vec<String> = chunk.iter().map(|&i| texts[i].to_owned()).collect();
            for (vector, &i) in sentence_embeddings(&self.encoder, &self.tokenizer, &batch, device)?
                .into_iter()
                .zip(chunk)
            {
                out[i] = vector;
            }
            progress.advance(chunk.len());
        }
        Ok(out)
    }

    /// Keyphrases of each text, best first, normalised and de-duplicated, at most `top_k`.
    pub fn rank(
        &self,
        texts: &[String],
        top_k: usize,
        device: &Device,
    ) -> Result<Vec<Vec<String>>, TaskError> {
        let candidates: Vec<Vec<String>> =
            texts.iter().map(|t| Candidates::edge(t, self.max_ngram).phrases).collect();
        // Every distinct candidate of the collection is embedded once.
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut distinct: Vec<&str> = Vec::new();
        for phrase in candidates.iter().flatten() {
            index.entry(phrase.as_str()).or_insert_with(|| {
                distinct.push(phrase.as_str());
                distinct.len() - 1
            });
        }
        let phrase_vectors = self.embed(&distinct, device, "embedding candidates")?;
        let document_refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let document_vectors = self.embed(&document_refs, device, "embedding documents")?;
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let mut out = Vec::with_capacity(texts.len());
        for (phrases, document) in candidates.iter().zip(&document_vectors) {
            let vectors: Vec<&[f32]> =
                phrases.iter().map(|p| phrase_vectors[index[p.as_str()]].as_slice()).collect();
            let similarity: Vec<f32> = vectors.iter().map(|v| dot(v, document)).collect();
            let order = if self.diversity > 0.0 {
                mmr_order(&similarity, &vectors, top_k, self.diversity as f32)
            } else {
                let mut order: Vec<usize> = (0..phrases.len()).collect();
                order.sort_by(|&a, &b| similarity[b].total_cmp(&similarity[a]).then(a.cmp(&b)));
                order.truncate(top_k.saturating_mul(4));
                order
            };
            let mut kept: Vec<String> = Vec::new();
            for i in order {
                let keyword = normalize_keyword(&phrases[i]);
                if !keyword.is_empty() && !kept.contains(&keyword) {
                    kept.push(keyword);
                }
            }
            kept.truncate(top_k);
            out.push(kept);
        }
        Ok(out)
    }
}

/// Maximal marginal relevance, greedily: first the candidate most similar to the document, then
/// each time the one maximising `(1 - diversity) · sim(doc) - diversity · max sim(picked)`; ties
/// go to the earlier candidate. Returns at most `top_k` indices in pick order.
pub fn mmr_order(
    similarity: &[f32],
    vectors: &[&[f32]],
    top_k: usize,
    diversity: f32,
) -> Vec<usize> {
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let mut picked: Vec<usize> = Vec::new();
    let mut closest_picked = vec![f32::NEG_INFINITY; similarity.len()];
    let mut left: Vec<usize> = (0..similarity.len()).collect();
    while picked.len() < top_k && !left.is_empty() {
        let score = |i: usize| {
            if picked.is_empty() {
                similarity[i]
            } else {
                (1.0 - diversity) * similarity[i] - diversity * closest_picked[i]
            }
        };
        let mut best = 0;
        for at in 1..left.len() {
            if score(left[at]) > score(left[best]) {
                best = at;
            }
        }
        let choice = left.remove(best);
        picked.push(choice);
        for &i in &left {
            closest_picked[i] = closest_picked[i].max(dot(vectors[i], vectors[choice]));
        }
    }
    picked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mmr_trades_relevance_for_diversity() {
        // Candidates 0 and 1 are near copies; 2 is less relevant but different.
        let vectors: Vec<Vec<f32>> = vec![vec![1.0, 0.0], vec![0.995, 0.0999], vec![0.0, 1.0]];
        let refs: Vec<&[f32]> = vectors.iter().map(Vec::as_slice).collect();
        let similarity = [0.9, 0.89, 0.5];
        assert_eq!(mmr_order(&similarity, &refs, 3, 0.0), vec![0, 1, 2]);
        // With diversity 0.5, the second pick is 2: 0.5 * 0.5 - 0.5 * 0 beats 0.5 * 0.89 - 0.5 * 0.995.
        assert_eq!(mmr_order(&similarity, &refs, 2, 0.5), vec![0, 2]);
        assert!(mmr_order(&[], &[], 3, 0.5).is_empty());
    }
}
