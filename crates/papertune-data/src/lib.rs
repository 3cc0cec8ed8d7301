//! Data for papertune: read paper tables (CSV, TSV, Parquet, JSON lines) with polars, map and
//! validate their columns, build model inputs from templates, split them stratified, tokenize
//! with a checkpoint's `tokenizer.json`, and batch them for burn.
//!
//! ```no_run
//! use std::path::Path;
//! use papertune_data::{ColumnMap, EmptyTextPolicy, LoadOptions, TextTemplate, load_papers};
//!
//! # fn main() -> Result<(), papertune_data::DataError> {
//! let columns = ColumnMap::default();
//! let options = LoadOptions { columns: &columns, max_rows: Some(100), require_label: true, empty_text: EmptyTextPolicy::Error };
//! let (papers, _report) = load_papers(Path::new("train.csv"), &options)?;
//! let template = TextTemplate::parse("{title} [SEP] {author} [SEP] {abstract}")?;
//! println!("{}", template.render(&papers[0]));
//! # Ok(()) }
//! ```

mod batch;
mod error;
#[cfg(test)]
mod fuzz;
mod instruct;
mod papers;
mod split;
mod table;
mod table_errors;
mod template;
mod tokenize;

pub use batch::{
    ClassificationBatcher, ClassificationDataset, ClassificationItem, TokenBatch, pad_right,
};
pub use error::{DataError, Result};
pub use instruct::{
    CLASSIFY_INSTRUCTION, CausalLmBatch, CausalLmBatcher, CausalLmDataset, CausalLmExample,
    DEFAULT_INPUT_TEMPLATE, InstructionRecord, InstructionTask, KEYWORDS_INSTRUCTION,
    keywords_target, normalize_keyword, parse_generated_keywords, parse_gold_keywords, read_alpaca,
    records_from_papers, split_keywords,
};
pub use papers::{ColumnMap, EmptyTextPolicy, LoadOptions, LoadReport, PaperRecord, load_papers};
pub use split::{stratified_folds, stratified_split};
pub use table::{Table, TableFormat};
pub use template::{DEFAULT_TEMPLATE, TEMPLATE_FIELDS, TextTemplate};
pub use tokenize::{Encoded, TextTokenizer, encode_papers};
