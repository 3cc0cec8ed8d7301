//! The configuration of a keyword run, read from TOML: which method extracts the keyphrases
//! (`[method]`), its options, and for the trained tagger the encoder and training options.
//! Every field has a default; unknown keys are rejected.

use papertune_train::TrainConfig;
use serde::{Deserialize, Serialize};

use super::rerank::RerankConfig;
use super::spans::{DecodeOptions, MAX_KEYPHRASES};
use crate::data::data_section;
use crate::metrics::KeywordMetrics;

data_section! {
    /// `[data]`: the rows (title, abstract and the gold `Keywords` column).
    pub struct DataConfig {
    }
}

/// The keyword methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum MethodName {
    /// An encoder fine-tuned to tag keyphrases (BIO over the tokens), then spans ranked by
    /// their probability.
    #[default]
    #[serde(rename = "tagger")]
    Tagger,
    /// n-gram candidates ranked by count × idf, the idf counted over the training rows that have
    /// gold keywords (`cargo xtask keywords --idf-from` counts every row of its file).
    #[serde(rename = "tfidf")]
    Tfidf,
    /// YAKE's statistical features of the text alone.
    #[serde(rename = "yake")]
    Yake,
    /// Candidates ranked by the cosine of their MiniLM embedding to the document's, with MMR
    /// diversity.
    #[serde(rename = "embed-rank")]
    EmbedRank,
}

impl MethodName {
    /// The name as configs and the command line write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tagger => "tagger",
            Self::Tfidf => "tfidf",
            Self::Yake => "yake",
            Self::EmbedRank => "embed-rank",
        }
    }

    /// Whether the method trains weights (the others need no training; `train` only stores
    /// what they read from the training file).
    pub fn trains(self) -> bool {
        self == Self::Tagger
    }
}

impl std::str::FromStr for MethodName {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        [Self::Tagger, Self::Tfidf, Self::Yake, Self::EmbedRank]
            .into_iter()
            .find(|m| m.as_str() == text)
            .ok_or_else(|| {
                format!("unknown keyword method {text:?} (tagger, tfidf, yake, embed-rank)")
            })
    }
}

/// `[method]`: the method and the keyphrases it returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MethodConfig {
    /// `tagger`, `tfidf`, `yake` or `embed-rank`.
    pub name: MethodName,
    /// Keyphrases per document (the extractors; the tagger's count is `[decode]`'s).
    pub top_k: usize,
    /// Longest candidate in words (tfidf, yake, embed-rank).
    pub max_ngram: usize,
    /// embed-rank: 0 ranks by cosine alone; above 0, maximal marginal relevance with this
    /// weight on the distance to the phrases already picked (KeyBERT's `diversity`).
    pub diversity: f64,
}

impl Default for MethodConfig {
    fn default() -> Self {
        Self { name: MethodName::Tagger, top_k: 5, max_ngram: 3, diversity: 0.0 }
    }
}

/// `[model]`: the encoder of the tagger and of embed-rank.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// A preset (`minilm`, `bert-base-uncased`, `roberta-base`), a Hugging Face id or a folder.
    pub source: String,
    /// Longest input in tokens, special tokens included; the rest of a long text is not read.
    pub max_len: usize,
    /// Batch size for evaluation and prediction (`train.batch_size` × 2 when unset).
    pub eval_batch_size: Option<usize>,
    /// Dropout before the tag layer (the encoder's `hidden_dropout_prob` when unset).
    pub dropout: Option<f64>,
    /// Weights of the tags `O`, `B`, `I` in the cross-entropy (none: all 1).
    pub tag_weights: Option<[f32; 3]>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            source: "minilm".into(),
            max_len: 512,
            eval_batch_size: None,
            dropout: None,
            tag_weights: None,
        }
    }
}

/// A whole keyword run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeywordsConfig {
    pub data: DataConfig,
    pub method: MethodConfig,
    pub model: ModelConfig,
    /// `[decode]`: how the tagger's probabilities become keyphrases.
    pub decode: DecodeOptions,
    pub rerank: RerankConfig,
    pub train: TrainConfig,
}

impl Default for KeywordsConfig {
    fn default() -> Self {
        Self {
            data: DataConfig::default(),
            method: MethodConfig::default(),
            model: ModelConfig::default(),
            decode: DecodeOptions::default(),
            rerank: RerankConfig::default(),
            train: TrainConfig { metric_for_best: "kw_f1_at_5".into(), ..TrainConfig::default() },
        }
    }
}

impl KeywordsConfig {
    /// Checks every section before any work starts; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        self.train.validate()?;
        self.decode.validate("decode")?;
        self.rerank.validate()?;
        if !(1..=MAX_KEYPHRASES).contains(&self.method.top_k) {
            return Err(format!(
                "method.top_k must be in 1..={MAX_KEYPHRASES}, found {}",
                self.method.top_k
            ));
        }
        if !(1..=8).contains(&self.method.max_ngram) {
            return Err(format!(
                "method.max_ngram must be in 1..=8, found {}",
                self.method.max_ngram
            ));
        }
        if !(0.0..=1.0).contains(&self.method.diversity) {
            return Err(format!(
                "method.diversity must be in [0, 1], found {}",
                self.method.diversity
            ));
        }
        if self.model.max_len < 8 {
            return Err(format!("model.max_len must be at least 8, found {}", self.model.max_len));
        }
        if self.model.dropout.is_some_and(|p| !(0.0..1.0).contains(&p)) {
            return Err("model.dropout must be in [0, 1)".into());
        }
        if let Some(weights) = self.model.tag_weights
            && (weights.iter().any(|w| !(*w >= 0.0 && w.is_finite()))
                || weights.iter().all(|w| *w == 0.0))
        {
            return Err(format!(
                "model.tag_weights must be three non-negative numbers, not all 0; found {weights:?}"
            ));
        }
        if self.model.eval_batch_size == Some(0) {
            return Err("model.eval_batch_size must be at least 1".into());
        }
        if self.data.valid.is_none()
            && !(self.data.valid_fraction > 0.0 && self.data.valid_fraction < 1.0)
        {
            return Err(format!(
                "data.valid_fraction must be in (0, 1), found {}",
                self.data.valid_fraction
            ));
        }
        crate::metrics::check_metric_for_best(
            &self.train.metric_for_best,
            &KeywordMetrics::NAMES,
            "keyword",
        )
    }

    /// Keyphrases per document: `[decode] top_k` for the tagger, `[method] top_k` for the
    /// extractors.
    pub fn top_k(&self) -> usize {
        if self.method.name == MethodName::Tagger { self.decode.top_k } else { self.method.top_k }
    }

    /// Batch size used for evaluation and prediction.
    pub fn eval_batch_size(&self) -> usize {
        self.model.eval_batch_size.unwrap_or(self.train.batch_size.saturating_mul(2))
    }

    /// The longest phrase the method proposes, in words (what re-ranking counts occurrences of).
    pub fn longest_phrase(&self) -> usize {
        self.decode.max_words.max(self.method.max_ngram)
    }
}
