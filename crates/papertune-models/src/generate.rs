//! Text generation with a KV cache: greedy decoding or sampling (temperature, top-k, top-p),
//! stopping on an end-of-sequence id, a stop string, or `max_new_tokens` (always set, so
//! generation always ends). Prompts are batched with left padding; finished sequences leave the
//! batch so that later steps only run the ones still going.

use burn::tensor::{Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::llama::{KvCache, LlamaModel};
use crate::llm_tokenizer::LlmTokenizer;

/// How to pick tokens and when to stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerationConfig {
    /// Upper bound on new tokens per sequence.
    pub max_new_tokens: usize,
    /// 0 picks the most likely token (greedy); above 0 samples from `softmax(logits / T)`.
    pub temperature: f64,
    /// Sample only among the k most likely tokens.
    pub top_k: Option<usize>,
    /// Sample only among the most likely tokens whose probabilities sum to p.
    pub top_p: Option<f64>,
    /// Generation of a sequence ends when its text contains one of these (cut before it).
    pub stop_strings: Vec<String>,
    /// Seed of the sampler.
    pub seed: u64,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 64,
            temperature: 0.0,
            top_k: None,
            top_p: None,
            stop_strings: Vec::new(),
            seed: 42,
        }
    }
}

/// Why a sequence stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-sequence token was produced (not included in the output).
    Eos,
    /// A stop string appeared (the text is cut before it).
    StopString,
    /// `max_new_tokens` were produced.
    Length,
}

/// One generated continuation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// New token ids (without the EOS token).
    pub ids: Vec<u32>,
    /// Their text, special tokens skipped, cut at a stop string.
    pub text: String,
    pub finish_reason: FinishReason,
    /// For each new token (and the end-of-sequence token, if one ended the sequence), the most
    /// likely candidates at that step with their logits, best first: empty unless
    /// [`Generator::with_candidates`] asked for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<Vec<Candidate>>,
}

/// A token the model considered at one step, with its logit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub id: u32,
    pub logit: f32,
}

/// Runs generation for a model and its tokenizer.
pub struct Generator<'a> {
    pub model: &'a LlamaModel,
    pub tokenizer: &'a LlmTokenizer,
    candidates: usize,
}

impl<'a> Generator<'a> {
    pub fn new(model: &'a LlamaModel, tokenizer: &'a LlmTokenizer) -> Self {
        Self { model, tokenizer, candidates: 0 }
    }

    /// Records the `n` most likely tokens of every step in [`Generation::candidates`] (to see
    /// how close a choice was, e.g. where two implementations' greedy texts part).
    pub fn with_candidates(mut self, n: usize) -> Self {
        self.candidates = n;
        self
    }

    /// Continues each prompt (token ids). The model should be in inference form (`valid()`).
    pub fn generate(
        &self,
        prompts: &[Vec<u32>],
        config: &GenerationConfig,
    ) -> Result<Vec<Generation>> {
        // On a thread of rayon's pool: a decoding step is some twenty small operations per
        // layer, most of them parallel, and each one started from a thread outside the pool
        // hands its work to the pool and waits for it (tens of microseconds each, milliseconds
        // per token); started inside the pool, a small one runs where it is.
        rayon::scope(|_| self.generate_in_pool(prompts, config))
    }

    fn generate_in_pool(
        &self,
        prompts: &[Vec<u32>],
        config: &GenerationConfig,
    ) -> Result<Vec<Generation>> {
        let batch = prompts.len();
        let mut results: Vec<Option<Generation>> = vec![None; batch];
        if batch == 0 {
            return Ok(Vec::new());
        }
        let mut rng = StdRng::seed_from_u64(config.seed);
        let pad = self.tokenizer.pad_id();
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0).max(1);
        // Left padding: every prompt ends at the same position, where generation starts.
        let mut ids: Vec<Vec<u32>> = Vec::with_capacity(batch);
        let mut mask: Vec<Vec<u8>> = Vec::with_capacity(batch);
        for prompt in prompts {
            let padding = longest - prompt.len();
            ids.push(std::iter::repeat_n(pad, padding).chain(prompt.iter().copied()).collect());
            mask.push(
                std::iter::repeat_n(0, padding)
                    .chain(std::iter::repeat_n(1, prompt.len()))
                    .collect(),
            );
        }
        let mut active: Vec<usize> = (0..batch).collect();
        let mut generated: Vec<Vec<u32>> = vec![Vec::new(); batch];
        let mut considered: Vec<Vec<Vec<Candidate>>> = vec![Vec::new(); batch];
        let positions =
            longest.checked_add(config.max_new_tokens).ok_or_else(|| ModelError::Generation {
                message: format!(
                    "max_new_tokens {} does not fit beside a prompt of {longest} tokens",
                    config.max_new_tokens
                ),
            })?;
        // The cache grows as tokens come; what is reserved up front stays modest whatever the
        // budget (generation usually ends at an end-of-sequence token long before it).
        let mut cache =
            KvCache::with_capacity(self.model.num_layers(), positions.min(longest + 512));
        let mut step_ids = ids;

        for step in 0..config.max_new_tokens {
            let input = self.model.input(&step_ids, &mask);
            let hidden = self.model.forward_hidden(input, Some(&mut cache)); // [active, seq, hidden]
            let [rows, seq, width] = hidden.dims();
            let last = hidden.narrow(1, seq - 1, 1).reshape([rows, width]);
            let logits = self.model.logits(last); // [active, vocab]
            let vocab = logits.dims()[1];
            let logits: Vec<f32> =
                logits.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 logits");

            let mut still_active = Vec::with_capacity(active.len());
            let mut keep_rows = Vec::with_capacity(active.len());
            let mut next_ids = Vec::with_capacity(active.len());
            for (row, &seq_index) in active.iter().enumerate() {
                let row_logits = &logits[row * vocab..(row + 1) * vocab];
                let token = pick_token(row_logits, config, &mut rng);
                if self.candidates > 0 {
                    considered[seq_index].push(top_candidates(row_logits, self.candidates));
                }
                let finished = if self.tokenizer.eos_token_ids.contains(&token) {
                    Some(FinishReason::Eos)
                } else {
                    generated[seq_index].push(token);
                    if !config.stop_strings.is_empty() {
                        let text = self.tokenizer.decode(&generated[seq_index], true)?;
                        config
                            .stop_strings
                            .iter()
                            .any(|s| text.contains(s.as_str()))
                            .then_some(FinishReason::StopString)
                    } else {
                        None
                    }
                };
                let finished = finished
                    .or((step + 1 == config.max_new_tokens).then_some(FinishReason::Length));
                match finished {
                    Some(reason) => {
                        let mut text = self.tokenizer.decode(&generated[seq_index], true)?;
                        if reason == FinishReason::StopString
                            && let Some(cut) = config
                                .stop_strings
                                .iter()
                                .filter_map(|s| text.find(s.as_str()))
                                .min()
                        {
                            text.truncate(cut);
                        }
                        results[seq_index] = Some(Generation {
                            ids: std::mem::take(&mut generated[seq_index]),
                            text,
                            finish_reason: reason,
                            candidates: std::mem::take(&mut considered[seq_index]),
                        });
                    }
                    None => {
                        still_active.push(seq_index);
                        keep_rows.push(row as i64);
                        next_ids.push(vec![token]);
                    }
                }
            }
            if still_active.is_empty() {
                break;
            }
            if still_active.len() != active.len() {
                let rows = Tensor::<1, Int>::from_data(
                    TensorData::new(keep_rows.clone(), [keep_rows.len()]),
                    &self.model.device(),
                );
                cache.select_rows(rows);
                mask = keep_rows.iter().map(|&r| mask[r as usize].clone()).collect();
            }
            for row in &mut mask {
                row.push(1);
            }
            active = still_active;
            step_ids = next_ids;
        }
        Ok(results
            .into_iter()
            .map(|r| {
                r.unwrap_or(Generation {
                    ids: Vec::new(),
                    text: String::new(),
                    finish_reason: FinishReason::Length,
                    candidates: Vec::new(),
                })
            })
            .collect())
    }
}

/// Picks the next token from one row of logits.
pub fn pick_token(logits: &[f32], config: &GenerationConfig, rng: &mut StdRng) -> u32 {
    if config.temperature <= 0.0 {
        return argmax(logits);
    }
    let inv_t = (1.0 / config.temperature) as f32;
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    if let Some(k) = config.top_k.filter(|&k| k > 0) {
        order.truncate(k);
    }
    let max = logits[order[0] as usize] * inv_t;
    let mut probs: Vec<f32> =
        order.iter().map(|&i| (logits[i as usize] * inv_t - max).exp()).collect();
    let total: f32 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if let Some(top_p) = config.top_p.filter(|p| *p < 1.0) {
        let mut cumulative = 0.0;
        let mut keep = probs.len();
        for (i, p) in probs.iter().enumerate() {
            cumulative += p;
            if cumulative >= top_p as f32 {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
        order.truncate(keep);
        let total: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
    }
    let mut draw: f32 = rng.random();
    for (i, p) in probs.iter().enumerate() {
        draw -= p;
        if draw <= 0.0 {
            return order[i];
        }
    }
    order[probs.len() - 1]
}

/// The `n` largest logits of a row with their ids, best first (the lower id first on ties).
pub fn top_candidates(logits: &[f32], n: usize) -> Vec<Candidate> {
    let mut best: Vec<Candidate> = Vec::with_capacity(n + 1);
    for (id, &logit) in logits.iter().enumerate() {
        if best.len() == n && best.last().is_none_or(|last| logit <= last.logit) {
            continue;
        }
        let at = best.partition_point(|c| c.logit >= logit);
        best.insert(at, Candidate { id: id as u32, logit });
        best.truncate(n);
    }
    best
}

/// Index of the largest value (the first on ties, as torch's argmax).
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.1, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn candidates_are_the_largest_logits_best_first() {
        let ids = |c: Vec<Candidate>| c.iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(ids(top_candidates(&[0.5, 2.0, -1.0, 2.0, 1.5], 3)), [1, 3, 4]);
        assert_eq!(ids(top_candidates(&[0.5, 2.0], 5)), [1, 0]);
        assert!(top_candidates(&[0.5, 2.0], 0).is_empty());
    }

    #[test]
    fn top_k_one_is_greedy_and_top_p_keeps_the_head() {
        let logits = [0.0, 5.0, 1.0, 4.9];
        let mut rng = StdRng::seed_from_u64(0);
        let config = GenerationConfig { temperature: 1.0, top_k: Some(1), ..Default::default() };
        for _ in 0..20 {
            assert_eq!(pick_token(&logits, &config, &mut rng), 1);
        }
        let config = GenerationConfig { temperature: 1.0, top_p: Some(0.5), ..Default::default() };
        for _ in 0..20 {
            assert_eq!(pick_token(&logits, &config, &mut rng), 1);
        }
        let config = GenerationConfig { temperature: 1.0, top_p: Some(0.9), ..Default::default() };
        let picks: Vec<u32> = (0..200).map(|_| pick_token(&logits, &config, &mut rng)).collect();
        assert!(picks.contains(&1) && picks.contains(&3) && !picks.contains(&0));
    }
}
