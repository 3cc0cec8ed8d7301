//! Reading a table (CSV, TSV, Parquet, JSON lines, JSON array) with polars, every column as text.

use std::fs::File;
use std::path::Path;

use polars::prelude::*;

use crate::error::{DataError, Result};

/// Table formats papertune reads, chosen by file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    Csv,
    Tsv,
    Parquet,
    JsonLines,
    Json,
}

impl TableFormat {
    /// The format a path's extension names.
    pub fn from_path(path: &Path) -> Result<Self> {
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .unwrap_or_default();
        match extension.as_str() {
            "csv" => Ok(Self::Csv),
            "tsv" => Ok(Self::Tsv),
            "parquet" | "pq" => Ok(Self::Parquet),
            "jsonl" | "ndjson" => Ok(Self::JsonLines),
            "json" => Ok(Self::Json),
            _ => Err(DataError::UnsupportedFormat { path: path.to_path_buf(), extension }),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Csv => "CSV",
            Self::Tsv => "TSV",
            Self::Parquet => "Parquet",
            Self::JsonLines => "JSON lines",
            Self::Json => "JSON",
        }
    }
}

/// A table read from disk: its columns, each as optional strings, in file order.
#[derive(Debug, Clone)]
pub struct Table {
    frame: DataFrame,
}

impl Table {
    /// Reads `path`, keeping at most `max_rows` data rows. Every column is converted to text so
    /// that ids, labels and keywords are seen exactly as written.
    pub fn read(path: &Path, max_rows: Option<usize>) -> Result<Self> {
        if !path.exists() {
            return Err(DataError::NotFound { path: path.to_path_buf() });
        }
        let format = TableFormat::from_path(path)?;
        if matches!(
            format,
            TableFormat::Csv | TableFormat::Tsv | TableFormat::JsonLines | TableFormat::Json
        ) {
            // One JSON document may be a single long line; rows of the other formats may not.
            let line_limit = (format != TableFormat::Json).then_some(MAX_LINE_BYTES);
            check_text(path, line_limit)?;
        }
        let parse_error = |e: PolarsError| DataError::Parse {
            path: path.to_path_buf(),
            format: format.name(),
            message: e.to_string(),
        };
        let open = || {
            File::open(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })
        };
        let frame = match format {
            TableFormat::Csv | TableFormat::Tsv => {
                let separator = if format == TableFormat::Tsv { b'\t' } else { b',' };
                CsvReadOptions::default()
                    .with_has_header(true)
                    .with_infer_schema_length(Some(0))
                    .with_n_rows(max_rows)
                    .map_parse_options(|o| o.with_separator(separator))
                    .into_reader_with_file_handle(open()?)
                    .finish()
                    .map_err(parse_error)?
            }
            TableFormat::Parquet => ParquetReader::new(open()?).finish().map_err(parse_error)?,
            TableFormat::JsonLines | TableFormat::Json => {
                let json_format = if format == TableFormat::Json {
                    JsonFormat::Json
                } else {
                    JsonFormat::JsonLines
                };
                JsonReader::new(open()?)
                    .with_json_format(json_format)
                    .finish()
                    .map_err(parse_error)?
            }
        };
        let frame = match max_rows {
            Some(n) => frame.head(Some(n)),
            None => frame,
        };
        Ok(Self { frame })
    }

    /// Number of data rows.
    pub fn len(&self) -> usize {
        self.frame.height()
    }

    /// Whether the table has no data rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Column names, in file order.
    pub fn column_names(&self) -> Vec<String> {
        self.frame.get_column_names().iter().map(|s| s.to_string()).collect()
    }

    /// Whether a column of that name exists.
    pub fn has_column(&self, name: &str) -> bool {
        self.frame.column(name).is_ok()
    }

    /// The cells of one column as text (`None` for nulls), or `None` if there is no such column.
    /// The name is matched exactly, else case-insensitively when only one column matches (a
    /// `keywords` field serves for `Keywords`). A list column (JSON arrays of strings) gives its
    /// items joined by `"; "`, as keyword cells are written.
    pub fn text_column(&self, name: &str) -> Option<Vec<Option<String>>> {
        let column = self.frame.column(name).ok().or_else(|| {
            let mut matches = self
                .frame
                .columns()
                .iter()
                .filter(|c| c.name().as_str().eq_ignore_ascii_case(name));
            let only = matches.next()?;
            matches.next().is_none().then_some(only)
        })?;
        if let DataType::List(_) = column.dtype() {
            let lists = column.list().ok()?;
            let cells = (0..lists.len()).map(|i| {
                let items = lists.get_as_series(i)?.cast(&DataType::String).ok()?;
                let joined: Vec<String> =
                    items.str().ok()?.iter().flatten().map(str::to_owned).collect();
                Some(joined.join("; "))
            });
            return Some(cells.collect());
        }
        let column = column.cast(&DataType::String).ok()?;
        let strings = column.str().ok()?;
        Some(strings.iter().map(|cell| cell.map(str::to_owned)).collect())
    }
}

/// The longest line of a CSV, TSV or JSON-lines table papertune reads: a whole paper (title,
/// authors, abstract, keywords) takes a few kilobytes.
const MAX_LINE_BYTES: usize = 1 << 20;

/// Fails with the line and byte offset of the first byte sequence that is not UTF-8, or with
/// the first line longer than `line_limit` bytes.
fn check_text(path: &Path, line_limit: Option<usize>) -> Result<()> {
    let bytes =
        std::fs::read(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    if let Err(e) = std::str::from_utf8(&bytes) {
        let offset = e.valid_up_to();
        let line = bytes[..offset].iter().filter(|&&b| b == b'\n').count() + 1;
        return Err(DataError::NotUtf8 { path: path.to_path_buf(), line, offset });
    }
    if let Some(limit) = line_limit
        && let Some((index, line)) =
            bytes.split(|&b| b == b'\n').enumerate().find(|(_, line)| line.len() > limit)
    {
        return Err(DataError::LineTooLong {
            path: path.to_path_buf(),
            line: index + 1,
            bytes: line.len(),
            limit,
        });
    }
    Ok(())
}
