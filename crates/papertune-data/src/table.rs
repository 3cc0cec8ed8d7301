//! Reading a table (CSV, TSV, Parquet, JSON lines, JSON array) with polars, every column as text.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use polars::io::mmap::MmapBytesReader;
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

    pub(crate) fn name(self) -> &'static str {
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
        let text = matches!(
            format,
            TableFormat::Csv | TableFormat::Tsv | TableFormat::JsonLines | TableFormat::Json
        );
        // One JSON document may be a single long line; rows of the other formats may not.
        let line_limit = (text && format != TableFormat::Json).then_some(MAX_LINE_BYTES);
        // A text table is read once, checked, and parsed from memory (a pipe cannot be read
        // twice, and a file could change between the check and the parse); a Parquet file is
        // read by polars itself, unless it is a pipe.
        let bytes = if text || is_stream(path) { Some(read_once(path, line_limit)?) } else { None };
        if text && let Some(bytes) = &bytes {
            check_text(path, bytes, line_limit)?;
        }
        let frame = match &bytes {
            Some(bytes) => parse(path, format, std::io::Cursor::new(bytes.as_slice()), max_rows)?,
            None => {
                let file = File::open(path)
                    .map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
                parse(path, format, file, max_rows)?
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

/// Parses a table of `format` from `reader`, keeping at most `max_rows` rows of a CSV or TSV.
fn parse<R: MmapBytesReader>(
    path: &Path,
    format: TableFormat,
    reader: R,
    max_rows: Option<usize>,
) -> Result<DataFrame> {
    let parse_error = |e: PolarsError| crate::table_errors::polars_error(path, format, &e);
    match format {
        TableFormat::Csv | TableFormat::Tsv => {
            let separator = if format == TableFormat::Tsv { b'\t' } else { b',' };
            CsvReadOptions::default()
                .with_has_header(true)
                .with_infer_schema_length(Some(0))
                .with_n_rows(max_rows)
                .map_parse_options(|o| o.with_separator(separator))
                .into_reader_with_file_handle(reader)
                .finish()
                .map_err(parse_error)
        }
        TableFormat::Parquet => ParquetReader::new(reader).finish().map_err(parse_error),
        TableFormat::JsonLines | TableFormat::Json => {
            let json_format =
                if format == TableFormat::Json { JsonFormat::Json } else { JsonFormat::JsonLines };
            JsonReader::new(reader).with_json_format(json_format).finish().map_err(parse_error)
        }
    }
}

/// The most papertune reads from a pipe or a device given as a table (a file has no limit but
/// its lines'): a stream that never ends must not fill the memory.
const MAX_STREAM_BYTES: usize = 1 << 30;

/// Whether `path` is something other than a file or a folder: a FIFO (`<(...)`, `mkfifo`), a
/// device or a socket, which can be read only once and may never end.
fn is_stream(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir())
}

/// Pipes and devices read so far, with their bytes: a second read of the same path (a command
/// that reads its data twice) gets the same bytes instead of waiting for a writer that is gone.
static STREAMS: std::sync::Mutex<Vec<(std::path::PathBuf, Arc<Vec<u8>>)>> =
    std::sync::Mutex::new(Vec::new());

/// The bytes of `path`, read once: a file whole; a pipe or device at most once per process, up
/// to [`MAX_STREAM_BYTES`], refusing a line over `line_limit` as soon as it has arrived.
fn read_once(path: &Path, line_limit: Option<usize>) -> Result<Arc<Vec<u8>>> {
    let io = |source| DataError::Io { path: path.to_path_buf(), source };
    if !is_stream(path) {
        return Ok(Arc::new(std::fs::read(path).map_err(io)?));
    }
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut streams = STREAMS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, bytes)) = streams.iter().find(|(p, _)| *p == key) {
        return Ok(Arc::clone(bytes));
    }
    let bytes = Arc::new(read_stream(path, line_limit)?);
    streams.push((key, Arc::clone(&bytes)));
    Ok(bytes)
}

/// Reads a pipe or device to its end, within [`MAX_STREAM_BYTES`] and `line_limit`.
fn read_stream(path: &Path, line_limit: Option<usize>) -> Result<Vec<u8>> {
    use std::io::Read;
    let refuse = |message: String| Err(DataError::Stream { path: path.to_path_buf(), message });
    let mut file =
        File::open(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    let (mut bytes, mut chunk) = (Vec::new(), vec![0u8; 1 << 16]);
    let (mut line, mut line_start) = (1, 0);
    loop {
        let n = match file.read(&mut chunk) {
            Ok(0) => return Ok(bytes),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(DataError::Io { path: path.to_path_buf(), source }),
        };
        let start = bytes.len();
        bytes.extend_from_slice(&chunk[..n]);
        for (i, _) in bytes[start..].iter().enumerate().filter(|(_, b)| **b == b'\n') {
            line += 1;
            line_start = start + i + 1;
        }
        if let Some(limit) = line_limit
            && bytes.len() - line_start > limit
        {
            return refuse(format!(
                "line {line} is longer than {limit} bytes (read from a pipe or device; papertune \
                 reads lines of at most {limit} bytes)"
            ));
        }
        if bytes.len() > MAX_STREAM_BYTES {
            return refuse(format!(
                "gives more than {MAX_STREAM_BYTES} bytes; papertune reads at most that from a \
                 pipe or device: save the table to a file"
            ));
        }
    }
}

/// The longest line of a CSV, TSV or JSON-lines table papertune reads: a whole paper (title,
/// authors, abstract, keywords) takes a few kilobytes.
const MAX_LINE_BYTES: usize = 1 << 20;

/// Fails with the line and byte offset of the first byte sequence that is not UTF-8, or with
/// the first line longer than `line_limit` bytes.
fn check_text(path: &Path, bytes: &[u8], line_limit: Option<usize>) -> Result<()> {
    if let Err(e) = std::str::from_utf8(bytes) {
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

#[cfg(all(test, unix))]
mod tests {
    use std::path::PathBuf;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// A FIFO made with `mkfifo`, fed `bytes` by a thread (once: the writer then goes away).
    fn fifo_with(dir: &Path, name: &str, bytes: Vec<u8>) -> PathBuf {
        let fifo = dir.join(name);
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success(), "mkfifo failed");
        let path = fifo.clone();
        // The reader may refuse before the end: the write then fails, which is expected.
        std::thread::spawn(move || std::fs::write(path, bytes));
        fifo
    }

    /// `Table::read` in a thread, failing the test if it has not answered within a minute.
    fn read_within_a_minute(path: &Path) -> Result<Table> {
        let (send, receive) = mpsc::channel();
        let path = path.to_path_buf();
        std::thread::spawn(move || send.send(Table::read(&path, None)));
        receive.recv_timeout(Duration::from_secs(60)).expect("reading the table hung")
    }

    #[test]
    fn a_fifo_is_read_once_and_read_again_from_memory() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = fifo_with(dir.path(), "papers.csv", b"uuid,title\na,one\nb,two\n".to_vec());
        let table = read_within_a_minute(&fifo).unwrap();
        assert_eq!(table.len(), 2);
        // Nobody writes to it any more: opening it again would wait for a writer for ever.
        let again = read_within_a_minute(&fifo).unwrap();
        assert_eq!(again.text_column("title"), Some(vec![Some("one".into()), Some("two".into())]));
    }

    #[test]
    fn a_fifo_with_an_endless_line_is_refused_at_the_line_limit() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = fifo_with(dir.path(), "long.jsonl", vec![b'x'; 3 * MAX_LINE_BYTES]);
        let error = read_within_a_minute(&fifo).unwrap_err().to_string();
        assert!(
            error.contains("long.jsonl") && error.contains("line 1 is longer than 1048576 bytes"),
            "{error}"
        );
    }
}
