//! Keyword extractors that need no training: candidate phrases of a text (`candidates.rs`),
//! ranked by TF-IDF against a corpus (`tfidf.rs`), by YAKE's statistics of the text alone
//! (`yake.rs`), or by their embedding's similarity to the document's (`embed_rank.rs`).

mod candidates;
mod embed_rank;
mod tfidf;
mod yake;

pub use candidates::{Candidates, document_text, is_stopword, segments};
pub use embed_rank::{EmbedRanker, mmr_order};
pub use tfidf::{IdfTable, tfidf_keywords};
pub use yake::{YakeOptions, yake_keywords};
