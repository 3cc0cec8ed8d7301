//! The rows of a keyword run: which rows are read, the papers that have gold keywords, and the
//! text every method reads.

use papertune_data::{EmptyTextPolicy, PaperRecord, parse_gold_keywords};

use super::document_text;
use crate::data::RowRules;

/// The rows of a keyword run: every row with text; gold keywords are needed to train and score.
pub(super) fn keyword_rows() -> RowRules {
    RowRules { require_label: false, empty_text: EmptyTextPolicy::Skip }
}

/// Papers with at least one gold keyword, and their gold keywords.
pub(super) fn with_gold(papers: Vec<PaperRecord>) -> (Vec<PaperRecord>, Vec<Vec<String>>) {
    papers
        .into_iter()
        .filter_map(|p| {
            let gold = p.keywords.as_deref().map(parse_gold_keywords).unwrap_or_default();
            (!gold.is_empty()).then_some((p, gold))
        })
        .unzip()
}

/// Each paper's [`document_text`].
pub(super) fn texts(papers: &[PaperRecord]) -> Vec<String> {
    papers.iter().map(|p| document_text(&p.title, &p.abstract_text)).collect()
}
