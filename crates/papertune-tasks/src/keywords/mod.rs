//! Task 2 by extraction: keyphrases found in a paper's title and abstract, by a trained tagger
//! or by one of the classic extractors, and scored with papertune's metric or the keyphrase
//! literature's.
//!
//! The rooms: `config.rs` (the `[data] [method] [model] [decode] [rerank] [train]` sections), `spans.rs`
//! (gold keywords located in a text and made BIO tags; tag probabilities decoded into ranked
//! phrases), `rows.rs` (the rows a keyword run reads and the text of each), `tagger.rs` (the token-classification head on a BERT-family encoder, its examples
//! and batches), `train.rs` (the tagger through the shared pipeline; an extractor's run folder),
//! `rerank.rs` (the training papers' evidence added to a method's scores: keyphraseness and
//! the gold keywords of similar papers), `infer.rs` (a method loaded and at work: keyphrases,
//! evaluation, the submission's column),
//! `extract/` (candidates, TF-IDF, YAKE, the embedding ranker) and `literature.rs` (stemmed,
//! present/absent F1@5 and F1@M).
//!
//! ```no_run
//! use std::path::Path;
//! use burn::tensor::Device;
//! use papertune_tasks::keywords::{EvalOptions, KeywordsConfig, Keyphraser, MethodName, evaluate_with};
//!
//! # fn main() -> Result<(), papertune_tasks::TaskError> {
//! let mut config = KeywordsConfig::default();
//! config.method.name = MethodName::Yake;
//! let device = Device::default();
//! let yake = Keyphraser::prepare(&config, &[], None, &device)?;
//! let (scores, _) = evaluate_with(&config, &yake, Path::new("keywords_valid.csv"), &EvalOptions::default(), &device)?;
//! println!("F1@5 {:.3}", scores.metrics.kw_f1_at_5);
//! # Ok(()) }
//! ```

mod config;
mod extract;
mod infer;
mod literature;
#[cfg(test)]
mod reference_tests;
mod rerank;
mod rows;
mod spans;
mod tagger;
mod train;

pub use config::{DataConfig, KeywordsConfig, MethodConfig, MethodName, ModelConfig};
pub use extract::{
    Candidates, EmbedRanker, IdfTable, YakeOptions, document_text, is_stopword, mmr_order,
    segments, tfidf_keywords, yake_keywords,
};
pub use infer::{
    DocumentKeyphrases, EvalOptions, IDF_FILE, Keyphraser, KeywordEvaluation, MEMORY_FILE, Method,
    evaluate, evaluate_with, extract_with, fill_keywords, has_gold_keywords, is_keywords_run,
    predict_keywords, predictions_text, read_texts, write_predictions,
};
pub use literature::{LiteratureMetrics, LiteratureScores};
pub use rerank::{KeywordMemory, MemoryIndex, MemoryPaper, RerankConfig, Reranker};
pub use spans::{
    DecodeOptions, Merge, SpanScore, TaggedToken, bio_tags, decode_keyphrases, locate_keywords,
};
pub use tagger::{
    KeyphraseTagger, TaggingBatch, TaggingBatcher, TaggingDataset, TaggingInput, TaggingItem,
};
pub use train::train;
