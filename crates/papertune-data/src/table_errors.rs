//! polars' errors in papertune's words: the file, the row or line at fault when polars tells
//! it (or papertune can find it), and none of the advice polars writes for its Python users
//! (`infer_schema_length=10000`, `ignore_errors=True`, `truncate_ragged_lines=True`), options
//! papertune does not have.

use std::path::Path;

use crate::error::DataError;
use crate::table::TableFormat;

/// Lines of polars' messages that advise on options of polars' own API.
const ADVICE: &[&str] = &[
    "Consider setting",
    "You might want to try",
    "infer_schema_length",
    "schema_overrides",
    "ignore_errors",
    "null_values",
    "truncate_ragged_lines",
    "Original error",
    "The current offset in the file",
];

/// The error of a table polars could not read, from the error polars gave.
pub(crate) fn polars_error(
    path: &Path,
    format: TableFormat,
    error: &dyn std::fmt::Display,
) -> DataError {
    let separator = match format {
        TableFormat::Csv => Some(b','),
        TableFormat::Tsv => Some(b'\t'),
        TableFormat::Parquet | TableFormat::JsonLines | TableFormat::Json => None,
    };
    // The file again, to locate the row (a file only: a pipe has been read once already).
    let bytes = std::fs::metadata(path)
        .is_ok_and(|m| m.is_file() && separator.is_some())
        .then(|| std::fs::read(path).ok())
        .flatten();
    table_error(path, format.name(), &error.to_string(), bytes.as_deref(), separator)
}

/// The error of a table polars could not read: `message` is polars' text, `bytes` the file's
/// contents when papertune has them (to locate the row), `separator` a CSV's or TSV's.
pub(crate) fn table_error(
    path: &Path,
    format: &'static str,
    message: &str,
    bytes: Option<&[u8]>,
    separator: Option<u8>,
) -> DataError {
    let parse = |message: String| DataError::Parse { path: path.to_path_buf(), format, message };
    if message.contains("found more fields than defined in 'Schema'")
        && let (Some(bytes), Some(separator)) = (bytes, separator)
        && let Some(ragged) = ragged_row(bytes, separator)
    {
        let shown = if separator == b'\t' { "a tab" } else { "a comma" };
        return parse(format!(
            "row {} (line {}) has {} fields but the header has {}; a field that holds {shown} \
             must be quoted (\"...\")",
            ragged.row, ragged.line, ragged.fields, ragged.header
        ));
    }
    if let Some(cell) = unparsable_cell(message) {
        let line = bytes.map(|b| {
            let end = cell.offset.min(b.len());
            b[..end].iter().filter(|&&c| c == b'\n').count() + 1
        });
        return parse(format!(
            "{}column {:?}: cannot read the cell {:?}",
            line.map(|l| format!("line {l}, ")).unwrap_or_default(),
            cell.column,
            cell.value
        ));
    }
    let text = without_advice(message).replace(
        "found more fields than defined in 'Schema'",
        "a row has more fields than the header (a field that holds the separator must be quoted)",
    );
    parse(text)
}

/// polars' message without its advice, on one line.
fn without_advice(message: &str) -> String {
    let kept: Vec<&str> = message
        .lines()
        .map(str::trim)
        .take_while(|line| !ADVICE.iter().any(|advice| line.contains(advice)))
        .filter(|line| !line.is_empty())
        .collect();
    let text = kept.join(" ");
    if text.is_empty() { "polars could not read it".into() } else { text }
}

/// A row whose field count differs from the header's.
#[derive(Debug, PartialEq, Eq)]
struct RaggedRow {
    /// Data row, from 1 (the header is row 0).
    row: usize,
    /// Line of the file where the row starts, from 1.
    line: usize,
    fields: usize,
    header: usize,
}

/// The first row with more fields than the header, read as polars reads a CSV: `"` quotes a
/// field (a doubled `""` inside is a quote), and a newline inside quotes belongs to the field.
fn ragged_row(bytes: &[u8], separator: u8) -> Option<RaggedRow> {
    let (mut row, mut line, mut row_line, mut fields) = (0usize, 1usize, 1usize, 1usize);
    let (mut quoted, mut header, mut empty) = (false, None, true);
    for &byte in bytes {
        match byte {
            b'"' => quoted = !quoted,
            b'\n' => {
                line += 1;
                if quoted {
                    continue;
                }
                if !empty {
                    match header {
                        None => header = Some(fields),
                        Some(h) if fields > h => {
                            return Some(RaggedRow { row, line: row_line, fields, header: h });
                        }
                        Some(_) => {}
                    }
                    row += 1;
                }
                (fields, empty, row_line) = (1, true, line);
                continue;
            }
            b'\r' => continue,
            _ if byte == separator && !quoted => fields += 1,
            _ => {}
        }
        empty = false;
    }
    match header {
        Some(h) if !empty && fields > h => {
            Some(RaggedRow { row, line: row_line, fields, header: h })
        }
        _ => None,
    }
}

/// A cell polars could not convert, from its "could not parse `x` as dtype `t` at column 'c'
/// (column number n) ... The current offset in the file is N bytes" message.
struct UnparsableCell {
    value: String,
    column: String,
    offset: usize,
}

fn unparsable_cell(message: &str) -> Option<UnparsableCell> {
    let rest = message.strip_prefix("could not parse `")?;
    let (value, rest) = rest.split_once("` as dtype `")?;
    let (_, rest) = rest.split_once("` at column '")?;
    let (column, rest) = rest.split_once("' (column number")?;
    let offset = rest
        .split_once("The current offset in the file is ")
        .and_then(|(_, r)| r.split_once(" bytes"))
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap_or(usize::MAX);
    Some(UnparsableCell { value: value.to_owned(), column: column.to_owned(), offset })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ragged_rows_are_found_past_quoted_separators_and_newlines() {
        let csv = b"uuid,title,abstract\na,\"one, two\",x\nb,\"multi\nline\",y\nc,three,z,extra\n";
        assert_eq!(
            ragged_row(csv, b','),
            Some(RaggedRow { row: 3, line: 5, fields: 4, header: 3 })
        );
        assert_eq!(ragged_row(b"a,b\n1,2\n3,4", b','), None);
        assert_eq!(ragged_row(b"a\tb\n1\t2\t3", b'\t').map(|r| (r.row, r.line)), Some((1, 2)));
    }

    #[test]
    fn polars_advice_is_left_out() {
        let message = "could not parse `x` as dtype `i64` at column 'label' (column number 3)\n\n\
            The current offset in the file is 25 bytes.\n\nYou might want to try:\n\
            - increasing `infer_schema_length` (e.g. `infer_schema_length=10000`),\n\
            - setting `ignore_errors` to `True`,\n\nOriginal error: ```x```";
        let bytes = b"uuid,title,label\na,b,0\nc,d,x\n";
        let error =
            table_error(Path::new("t.csv"), "CSV", message, Some(bytes), Some(b',')).to_string();
        assert_eq!(
            error,
            "t.csv: cannot parse as CSV: line 3, column \"label\": cannot read the cell \"x\""
        );
        let error = table_error(
            Path::new("t.csv"),
            "CSV",
            "some failure\n\nConsider setting 'truncate_ragged_lines=True'.",
            None,
            None,
        )
        .to_string();
        assert_eq!(error, "t.csv: cannot parse as CSV: some failure");
    }

    /// Malformed tables read through `Table::read`: the message names the file and the row,
    /// and carries none of polars' Python advice.
    #[test]
    fn malformed_tables_are_told_in_papertune_words() {
        let dir = tempfile::tempdir().unwrap();
        let ragged = dir.path().join("ragged.csv");
        std::fs::write(&ragged, "uuid,title,abstract,label\nq,T,A,1\nr,T,A, B,1\n").unwrap();
        let error = crate::table::Table::read(&ragged, None).unwrap_err().to_string();
        assert!(
            error.contains("ragged.csv") && error.contains("row 2 (line 3) has 5 fields"),
            "{error}"
        );
        let bad_json = dir.path().join("bad.jsonl");
        std::fs::write(
            &bad_json,
            "{\"uuid\": \"a\", \"title\": \"T\"}\n{\"uuid\": \"b\", \"title\": \n",
        )
        .unwrap();
        for path in [&ragged, &bad_json] {
            let error = match crate::table::Table::read(path, None) {
                Ok(_) => continue,
                Err(e) => e.to_string(),
            };
            for advice in ["infer_schema_length", "ignore_errors", "truncate_ragged_lines", "=True"]
            {
                assert!(!error.contains(advice), "{error}");
            }
            assert!(error.contains(path.file_name().unwrap().to_str().unwrap()), "{error}");
        }
    }
}
