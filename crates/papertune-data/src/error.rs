//! The one error type of the data crate: every variant names the file, row or column at fault.

use std::path::PathBuf;

/// Everything that can go wrong while reading, validating, splitting or tokenizing data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The input file does not exist.
    #[error("{path}: file not found")]
    NotFound { path: PathBuf },

    /// The file exists but could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The extension does not name a supported table format.
    #[error(
        "{path}: unsupported file type {extension:?}; expected .csv, .tsv, .parquet, .jsonl, .ndjson or .json"
    )]
    UnsupportedFormat { path: PathBuf, extension: String },

    /// A text file holds bytes that are not UTF-8.
    #[error(
        "{path}: line {line}: invalid UTF-8 at byte offset {offset}; papertune reads UTF-8 text only"
    )]
    NotUtf8 { path: PathBuf, line: usize, offset: usize },

    /// A line of a text table is longer than papertune reads (a cell of megabytes is no
    /// paper's field, and costs many times its size in memory).
    #[error("{path}: line {line} is {bytes} bytes; papertune reads lines of at most {limit} bytes")]
    LineTooLong { path: PathBuf, line: usize, bytes: usize, limit: usize },

    /// A pipe or device read as a table gives more than papertune reads from one.
    #[error("{path}: {message}")]
    Stream { path: PathBuf, message: String },

    /// The table reader rejected the file.
    #[error("{path}: cannot parse as {format}: {message}")]
    Parse { path: PathBuf, format: &'static str, message: String },

    /// A column the configuration asks for is absent.
    #[error(
        "{path}: missing column {column:?} (configured as data.columns.{role}); columns found: {found}"
    )]
    MissingColumn { path: PathBuf, column: String, role: &'static str, found: String },

    /// A label cell holds something outside the label set.
    #[error(
        "{path}: row {row}, column {column:?}: label {value:?} is not in the label set {{0, 1}}"
    )]
    BadLabel { path: PathBuf, row: usize, column: String, value: String },

    /// Rows whose text is empty, with the policy set to fail.
    #[error(
        "{path}: {count} row(s) have an empty text (title and abstract both empty), first rows: {first_rows:?}; \
         set data.empty_text = \"skip\" to drop them"
    )]
    EmptyText { path: PathBuf, count: usize, first_rows: Vec<usize> },

    /// The file has a header but no data rows (after `max_rows`).
    #[error("{path}: no data rows")]
    NoRows { path: PathBuf },

    /// A text template refers to a field that does not exist, or is malformed.
    #[error("template {template:?}: {message}")]
    Template { template: String, message: String },

    /// A stratified split cannot be made from these labels.
    #[error("cannot split: {message}")]
    Split { message: String },

    /// A cell holds a value that cannot be used.
    #[error("{path}: row {row}, column {column:?}: {message}")]
    Invalid { path: PathBuf, row: usize, column: String, message: String },

    /// The tokenizer file could not be loaded or used.
    #[error("tokenizer {path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
}

/// Result alias of the data crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
