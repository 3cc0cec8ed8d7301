//! Keyphrases as spans of the text: gold keywords located in a document and turned into BIO
//! tags over its tokens (training), and tag probabilities turned back into ranked phrases
//! (inference).
//!
//! Matching ignores case and whitespace runs and is word-bounded: `neural network` is found in
//! "Neural\n network" but not in "neural networks". A keyword that occurs several times tags
//! every occurrence; where two keywords overlap, the longer one keeps the tokens.

use std::collections::HashMap;
use std::ops::Range;

use papertune_data::normalize_keyword;
use serde::{Deserialize, Serialize};

/// Tag of a token outside any keyphrase.
pub const TAG_O: u8 = 0;
/// Tag of a keyphrase's first token.
pub const TAG_B: u8 = 1;
/// Tag of a keyphrase's later tokens.
pub const TAG_I: u8 = 2;
/// Tokens left out of the loss (special tokens).
pub const TAG_IGNORE: u8 = u8::MAX;
/// The number of tags the head predicts.
pub const NUM_TAGS: usize = 3;
/// The most keyphrases a config may ask for per document.
pub const MAX_KEYPHRASES: usize = 1000;

/// A text folded for matching: lowercase, whitespace runs as one space, with the byte position
/// in the original text of every byte (and of the end).
struct Folded {
    text: String,
    origin: Vec<usize>,
}

fn fold(text: &str) -> Folded {
    let mut folded = Folded {
        text: String::with_capacity(text.len()),
        origin: Vec::with_capacity(text.len() + 1),
    };
    let mut in_space = false;
    for (at, ch) in text.char_indices() {
        if ch.is_whitespace() {
            if !in_space {
                folded.text.push(' ');
                folded.origin.push(at);
            }
            in_space = true;
            continue;
        }
        in_space = false;
        // A capital sigma that ends a word lowers to the final form, as `str::to_lowercase`
        // (and so `normalize_keyword`) lowers it; both forms take two bytes.
        let final_sigma = ch == 'Σ'
            && text[..at].chars().next_back().is_some_and(char::is_alphabetic)
            && !text[at + ch.len_utf8()..].chars().next().is_some_and(char::is_alphabetic);
        if final_sigma {
            folded.text.push('ς');
            folded.origin.extend([at, at]);
            continue;
        }
        for lower in ch.to_lowercase() {
            let before = folded.text.len();
            folded.text.push(lower);
            folded.origin.extend(std::iter::repeat_n(at, folded.text.len() - before));
        }
    }
    folded.origin.push(text.len());
    folded
}

fn is_word_char(ch: Option<char>) -> bool {
    ch.is_some_and(char::is_alphanumeric)
}

/// Byte ranges of `text` where the keywords occur, word-bounded, ignoring case and whitespace
/// runs; sorted by position, never overlapping (the longer keyword wins, then the earlier).
pub fn locate_keywords(text: &str, keywords: &[String]) -> Vec<Range<usize>> {
    let folded = fold(text);
    let mut found: Vec<Range<usize>> = Vec::new();
    for keyword in keywords {
        let needle = normalize_keyword(keyword);
        if needle.is_empty() {
            continue;
        }
        let mut from = 0;
        while let Some(at) = folded.text[from..].find(&needle) {
            let (start, end) = (from + at, from + at + needle.len());
            let before = folded.text[..start].chars().next_back();
            let after = folded.text[end..].chars().next();
            if !is_word_char(before) && !is_word_char(after) {
                found.push(folded.origin[start]..folded.origin[end]);
            }
            from = start + folded.text[start..].chars().next().map_or(1, char::len_utf8);
        }
    }
    // Longest first, then earliest; keep those that overlap nothing kept.
    found.sort_by(|a, b| (b.len(), a.start).cmp(&(a.len(), b.start)));
    let mut kept: Vec<Range<usize>> = Vec::new();
    for span in found {
        if kept.iter().all(|k| span.end <= k.start || span.start >= k.end) {
            kept.push(span);
        }
    }
    kept.sort_by_key(|s| s.start);
    kept
}

/// BIO tags of tokens with byte `offsets` into the text: the first token overlapping a span is
/// `B`, the span's later tokens `I`, the rest `O`; special tokens (and empty ones) are ignored.
pub fn bio_tags(offsets: &[(usize, usize)], special: &[bool], spans: &[Range<usize>]) -> Vec<u8> {
    let mut tags = vec![TAG_O; offsets.len()];
    let mut span_of_previous: Option<usize> = None;
    for (i, &(start, end)) in offsets.iter().enumerate() {
        if special.get(i).copied().unwrap_or(false) || start >= end {
            tags[i] = TAG_IGNORE;
            continue;
        }
        let span = spans.iter().position(|s| start < s.end && end > s.start);
        tags[i] = match span {
            None => TAG_O,
            Some(s) if span_of_previous == Some(s) => TAG_I,
            Some(_) => TAG_B,
        };
        span_of_previous = span;
    }
    tags
}

/// How tag probabilities become keyphrases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecodeOptions {
    /// Keyphrases returned per document, at most.
    pub top_k: usize,
    /// Longest span considered, in words (as the tokenizer's pre-tokenizer splits them:
    /// punctuation counts as a word).
    pub max_words: usize,
    /// Spans whose score (see `span_score`) is below this are dropped (but at least
    /// `min_keywords` are kept).
    pub min_score: f32,
    /// Keyphrases returned per document, at least (when the text has that many candidates).
    pub min_keywords: usize,
    /// How the occurrences of a phrase combine: `max` keeps the best one's probability, `sum`
    /// adds them up (a phrase the text repeats counts more).
    pub merge: Merge,
    /// How a span's tag probabilities make its score: `exact` (the probability that the tagger
    /// marks exactly that span) or `per-word` (its geometric mean over the span's factors).
    pub span_score: SpanScore,
}

/// How a span is scored from its tag probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SpanScore {
    #[default]
    #[serde(rename = "exact")]
    Exact,
    #[serde(rename = "per-word")]
    PerWord,
}

/// How the scores of a phrase's occurrences combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Merge {
    #[default]
    Max,
    Sum,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            top_k: 10,
            max_words: 8,
            min_score: 0.0,
            min_keywords: 5,
            merge: Merge::Max,
            span_score: SpanScore::Exact,
        }
    }
}

impl DecodeOptions {
    /// Checks the options; the message names the key under `section`.
    pub fn validate(&self, section: &str) -> Result<(), String> {
        if !(1..=MAX_KEYPHRASES).contains(&self.top_k) {
            return Err(format!(
                "{section}.top_k must be in 1..={}, found {}",
                MAX_KEYPHRASES, self.top_k
            ));
        }
        if !(1..=64).contains(&self.max_words) {
            return Err(format!("{section}.max_words must be in 1..=64, found {}", self.max_words));
        }
        if !(0.0..=1.0).contains(&self.min_score) {
            return Err(format!("{section}.min_score must be in [0, 1], found {}", self.min_score));
        }
        Ok(())
    }
}

/// One token of a tagged document: where it lies in the text, which word it belongs to, and the
/// head's probabilities of `O`, `B` and `I`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaggedToken {
    pub offsets: (usize, usize),
    pub word: Option<u32>,
    pub probs: [f32; NUM_TAGS],
}

/// Whether a span of the text can be a keyphrase: it starts and ends with a letter or digit,
/// and holds no bracket, no clause punctuation and no sentence end (a full stop followed by a
/// space). Hyphens, slashes, apostrophes and inner dots ("3.5") may stay.
fn plausible_phrase(surface: &str) -> bool {
    let edges_ok = surface.chars().next().is_some_and(char::is_alphanumeric)
        && surface.chars().next_back().is_some_and(char::is_alphanumeric);
    let sentence_end = surface
        .char_indices()
        .any(|(at, c)| c == '.' && surface[at + 1..].starts_with(char::is_whitespace));
    edges_ok
        && !sentence_end
        && !surface.contains(|c: char| ",;:()[]{}<>!?\"".contains(c) || c.is_control())
}

/// Keyphrases of `text` from its tagged tokens, best first, with their scores.
///
/// A word is read from its first token; a word the text continues without a break (the last
/// word of a truncated document) is left out. The span of words `i..=j` scores
/// `p_B(i) · p_I(i+1) ⋯ p_I(j) · (1 - p_I(j+1))`: the probability, under the head's independent
/// decisions, that the tagger marks exactly that span (`span_score = "exact"`), or the geometric
/// mean of those factors (`"per-word"`). A phrase found several times keeps its best score or
/// the sum of them (`merge`). Phrases are normalised as the metrics normalise keywords.
pub fn decode_keyphrases(
    text: &str,
    tokens: &[TaggedToken],
    options: &DecodeOptions,
) -> Vec<(String, f32)> {
    // Words: (start byte, end byte, probabilities of the first token).
    let mut words: Vec<(usize, usize, [f32; NUM_TAGS])> = Vec::new();
    let mut current: Option<u32> = None;
    for token in tokens {
        let Some(word) = token.word else {
            current = None;
            continue;
        };
        if token.offsets.0 >= token.offsets.1 {
            continue;
        }
        match words.last_mut() {
            Some(last) if current == Some(word) => last.1 = last.1.max(token.offsets.1),
            _ => words.push((token.offsets.0, token.offsets.1, token.probs)),
        }
        current = Some(word);
    }
    // A word the text goes on without a break was cut by truncation.
    if let Some(&(_, end, _)) = words.last()
        && text.get(end..).is_some_and(|rest| rest.starts_with(char::is_alphanumeric))
    {
        words.pop();
    }
    let floor = match options.span_score {
        SpanScore::Exact => 1e-6,
        SpanScore::PerWord => 1e-6f32.powi(options.max_words as i32).max(f32::MIN_POSITIVE),
    };
    let mut best: HashMap<String, f32> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    for i in 0..words.len() {
        let mut score = words[i].2[TAG_B as usize];
        for j in i..words.len().min(i + options.max_words) {
            if j > i {
                score *= words[j].2[TAG_I as usize];
            }
            if score < floor {
                break;
            }
            let closed = words.get(j + 1).map_or(1.0, |next| 1.0 - next.2[TAG_I as usize]);
            let (start, end) = (words[i].0, words[j].1);
            let Some(surface) = text.get(start..end) else { continue };
            if !plausible_phrase(surface) {
                continue;
            }
            let phrase = normalize_keyword(surface);
            if phrase.is_empty() {
                continue;
            }
            let value = match options.span_score {
                SpanScore::Exact => score * closed,
                // Geometric mean of the span's factors: length no longer costs by itself.
                SpanScore::PerWord => (score * closed).powf(1.0 / (j - i + 2) as f32),
            };
            match best.get_mut(&phrase) {
                Some(kept) => match options.merge {
                    Merge::Max => *kept = kept.max(value),
                    Merge::Sum => *kept += value,
                },
                None => {
                    order.push(phrase.clone());
                    best.insert(phrase, value);
                }
            }
        }
    }
    let mut ranked: Vec<(String, f32)> = order
        .into_iter()
        .map(|p| {
            let score = best[&p];
            (p, score)
        })
        .collect();
    // Stable: equal scores keep the order of first occurrence.
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let keep = ranked
        .iter()
        .take_while(|(_, s)| *s >= options.min_score)
        .count()
        .max(options.min_keywords);
    ranked.truncate(keep.min(options.top_k));
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn keywords_are_found_word_bounded_ignoring_case_and_spaces() {
        let text = "Graph Neural\n  Networks for graph neural networks; not graphs.";
        let spans =
            locate_keywords(text, &words(&["graph neural networks", "graph", "neural networks"]));
        let found: Vec<&str> = spans.iter().map(|s| &text[s.clone()]).collect();
        // The longer keyword keeps its tokens; "graphs" is not "graph".
        assert_eq!(found, vec!["Graph Neural\n  Networks", "graph neural networks"]);
        let spans = locate_keywords("Über-Struktur und ÜBER-struktur.", &words(&["über-struktur"]));
        assert_eq!(spans.len(), 2);
        assert!(locate_keywords("anything", &words(&["", " . "])).is_empty());
        // Greek capitals fold as the keywords are normalised (a final sigma included).
        assert_eq!(locate_keywords("ΟΔΟΣ και ΟΔΟΣ.", &words(&["οδος"])).len(), 2);
        assert_eq!(locate_keywords("ΣΟΦΙΑ", &words(&["ΣΟΦΙΑ"])).len(), 1);
    }

    #[test]
    fn tags_mark_first_and_later_tokens() {
        // "[CLS] deep learn ##ing helps [SEP]" over "deep learning helps".
        let offsets = [(0, 0), (0, 4), (5, 10), (10, 13), (14, 19), (0, 0)];
        let special = [true, false, false, false, false, true];
        let spans = locate_keywords("deep learning helps", &words(&["deep learning", "helps"]));
        let tags = bio_tags(&offsets, &special, &spans);
        assert_eq!(tags, vec![TAG_IGNORE, TAG_B, TAG_I, TAG_I, TAG_B, TAG_IGNORE]);
    }

    #[test]
    fn spans_across_punctuation_are_not_phrases() {
        for good in ["x-ray imaging", "3.5 GHz", "Alzheimer's disease", "TiO2/graphene"] {
            assert!(plausible_phrase(good), "{good}");
        }
        for bad in [
            "clustering (",
            "sketch-",
            "data. Su",
            "data.\tSu",
            "(sc)",
            "a, b",
            "end.",
            "",
            "two\nlines",
        ] {
            assert!(!plausible_phrase(bad), "{bad}");
        }
    }

    #[test]
    fn spans_decode_by_probability_and_merge_repeats() {
        let text = "deep learning helps deep learning";
        let token = |start: usize, end: usize, word: u32, probs: [f32; 3]| TaggedToken {
            offsets: (start, end),
            word: Some(word),
            probs,
        };
        let tokens = [
            TaggedToken { offsets: (0, 0), word: None, probs: [1.0, 0.0, 0.0] },
            token(0, 4, 0, [0.1, 0.8, 0.1]),
            token(5, 10, 1, [0.1, 0.1, 0.8]),
            token(10, 13, 1, [0.9, 0.05, 0.05]), // a later piece of the same word: not read
            token(14, 19, 2, [0.9, 0.05, 0.05]),
            token(20, 24, 3, [0.5, 0.4, 0.1]),
            token(25, 33, 4, [0.5, 0.1, 0.4]),
        ];
        let options = DecodeOptions {
            top_k: 3,
            max_words: 3,
            min_score: 0.0,
            min_keywords: 0,
            merge: Merge::Max,
            span_score: SpanScore::Exact,
        };
        let ranked = decode_keyphrases(text, &tokens, &options);
        // "deep learning": 0.8 * 0.8 * (1 - 0.05) = 0.608 at the first occurrence (0.16 * 1.0 at
        // the second); "deep": 0.4 * (1 - 0.4) = 0.24 at the second (0.8 * (1 - 0.8) at the first).
        assert_eq!(ranked[0].0, "deep learning");
        assert!((ranked[0].1 - 0.608).abs() < 1e-6, "{ranked:?}");
        assert_eq!(ranked.len(), 3);
        assert_eq!(ranked[1].0, "deep");
        assert!((ranked[1].1 - 0.24).abs() < 1e-6, "{ranked:?}");
        // A threshold keeps fewer, but never fewer than min_keywords.
        let strict = DecodeOptions { min_score: 0.5, min_keywords: 2, ..options.clone() };
        assert_eq!(decode_keyphrases(text, &tokens, &strict).len(), 2);
        let strict = DecodeOptions { min_keywords: 0, ..strict };
        assert_eq!(decode_keyphrases(text, &tokens, &strict).len(), 1);
        assert!(decode_keyphrases("", &[], &options).is_empty());
        // Summed over occurrences: "deep learning" 0.608 + 0.16, "deep" 0.16 + 0.24.
        let summed =
            decode_keyphrases(text, &tokens, &DecodeOptions { merge: Merge::Sum, ..options });
        assert!(
            (summed[0].1 - 0.768).abs() < 1e-6 && (summed[1].1 - 0.4).abs() < 1e-6,
            "{summed:?}"
        );
    }
}
