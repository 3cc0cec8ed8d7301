//! Paper rows: the competition layout `uuid,title,author,abstract,Keywords,label`, with the column
//! names mapped by configuration and every cell validated.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::table::Table;

/// Which column holds which field. Extra columns in a file are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ColumnMap {
    /// Row identifier, copied to the submission file.
    pub uuid: String,
    /// Paper title.
    pub title: String,
    /// Author list, as one string.
    pub author: String,
    /// Abstract.
    #[serde(rename = "abstract")]
    pub abstract_text: String,
    /// Gold keywords, `; `-joined (optional in the file).
    pub keywords: String,
    /// Label: 1 medical, 0 not (required for training and evaluation).
    pub label: String,
}

impl Default for ColumnMap {
    fn default() -> Self {
        Self {
            uuid: "uuid".into(),
            title: "title".into(),
            author: "author".into(),
            abstract_text: "abstract".into(),
            keywords: "Keywords".into(),
            label: "label".into(),
        }
    }
}

/// What to do with rows whose title and abstract are both empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmptyTextPolicy {
    /// Stop with an error naming the rows.
    #[default]
    Error,
    /// Drop them, and report how many and which.
    Skip,
    /// Keep them (for prediction, where every row needs an answer), with a warning.
    Keep,
}

/// One paper.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PaperRecord {
    /// 1-based data row in the source file (header excluded).
    pub row: usize,
    pub uuid: String,
    pub title: String,
    pub author: String,
    pub abstract_text: String,
    /// Gold keywords, if the file has them.
    pub keywords: Option<String>,
    /// Gold label, if the file has one.
    pub label: Option<u8>,
}

impl PaperRecord {
    /// Whether the row has no title and no abstract.
    pub fn is_text_empty(&self) -> bool {
        self.title.trim().is_empty() && self.abstract_text.trim().is_empty()
    }
}

/// Options for [`load_papers`].
#[derive(Debug, Clone)]
pub struct LoadOptions<'a> {
    pub columns: &'a ColumnMap,
    /// Keep only the first N data rows.
    pub max_rows: Option<usize>,
    /// Fail when the label column is missing (training, evaluation).
    pub require_label: bool,
    /// What to do with empty rows.
    pub empty_text: EmptyTextPolicy,
}

/// What loading found besides the records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub path: PathBuf,
    /// Rows read from the file (after `max_rows`).
    pub rows_read: usize,
    /// Rows with an empty text (dropped with [`EmptyTextPolicy::Skip`], kept with
    /// [`EmptyTextPolicy::Keep`]).
    pub empty_rows: Vec<usize>,
}

/// Reads and validates paper rows.
///
/// Missing optional columns (`uuid`, `author`, `Keywords`) are tolerated: `uuid` falls back to the
/// row number, the others to empty. `title` and `abstract` must exist; `label` must exist when
/// `require_label` is set, and every label must then be `0` or `1` (without it, other values
/// are read as no label).
pub fn load_papers(
    path: &Path,
    options: &LoadOptions<'_>,
) -> Result<(Vec<PaperRecord>, LoadReport)> {
    let table = Table::read(path, options.max_rows)?;
    if table.is_empty() {
        return Err(DataError::NoRows { path: path.to_path_buf() });
    }
    let columns = options.columns;
    let missing = |column: &str, role: &'static str| DataError::MissingColumn {
        path: path.to_path_buf(),
        column: column.to_owned(),
        role,
        found: table.column_names().join(", "),
    };
    let required = |column: &str, role: &'static str| {
        table.text_column(column).ok_or_else(|| missing(column, role))
    };
    let optional = |column: &str| table.text_column(column);

    let titles = required(&columns.title, "title")?;
    let abstracts = required(&columns.abstract_text, "abstract")?;
    let labels = if options.require_label {
        Some(required(&columns.label, "label")?)
    } else {
        optional(&columns.label)
    };
    let uuids = optional(&columns.uuid);
    let authors = optional(&columns.author);
    let keywords = optional(&columns.keywords);

    let cell = |column: &Option<Vec<Option<String>>>, i: usize| {
        column.as_ref().and_then(|c| c[i].clone()).unwrap_or_default()
    };

    let mut records = Vec::with_capacity(table.len());
    let mut empty_rows = Vec::new();
    for i in 0..table.len() {
        let row = i + 1;
        let label = match &labels {
            // Where labels are not needed (prediction), a value other than 0 or 1 is no label.
            Some(labels) if !options.require_label => parse_label(labels[i].as_deref()),
            Some(labels) => {
                Some(parse_label(labels[i].as_deref()).ok_or_else(|| DataError::BadLabel {
                    path: path.to_path_buf(),
                    row,
                    column: columns.label.clone(),
                    value: labels[i].clone().unwrap_or_else(|| "<empty>".into()),
                })?)
            }
            None => None,
        };
        let record = PaperRecord {
            row,
            uuid: uuids.as_ref().and_then(|c| c[i].clone()).unwrap_or_else(|| row.to_string()),
            title: titles[i].clone().unwrap_or_default(),
            author: cell(&authors, i),
            abstract_text: abstracts[i].clone().unwrap_or_default(),
            keywords: keywords.as_ref().and_then(|c| c[i].clone()),
            label,
        };
        if record.is_text_empty() {
            empty_rows.push(row);
            if options.empty_text != EmptyTextPolicy::Keep {
                continue;
            }
        }
        records.push(record);
    }
    if !empty_rows.is_empty() {
        match options.empty_text {
            EmptyTextPolicy::Error => {
                return Err(DataError::EmptyText {
                    path: path.to_path_buf(),
                    count: empty_rows.len(),
                    first_rows: empty_rows.iter().take(10).copied().collect(),
                });
            }
            EmptyTextPolicy::Skip | EmptyTextPolicy::Keep => tracing::warn!(
                "{}: {} {} row(s) with an empty text, first rows: {:?}",
                path.display(),
                if options.empty_text == EmptyTextPolicy::Skip { "skipped" } else { "kept" },
                empty_rows.len(),
                &empty_rows[..empty_rows.len().min(10)]
            ),
        }
    }
    if records.is_empty() {
        return Err(DataError::NoRows { path: path.to_path_buf() });
    }
    let report = LoadReport { path: path.to_path_buf(), rows_read: table.len(), empty_rows };
    Ok((records, report))
}

/// Accepts `0`/`1` as written by CSV, and `0.0`/`1.0`/`true`/`false` as written by other tools.
fn parse_label(cell: Option<&str>) -> Option<u8> {
    match cell?.trim() {
        "0" | "0.0" | "false" | "False" => Some(0),
        "1" | "1.0" | "true" | "True" => Some(1),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &tempfile::TempDir, name: &str, content: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::File::create(&path).unwrap().write_all(content).unwrap();
        path
    }

    fn options(columns: &ColumnMap) -> LoadOptions<'_> {
        LoadOptions {
            columns,
            max_rows: None,
            require_label: true,
            empty_text: EmptyTextPolicy::Error,
        }
    }

    const CSV: &str = "uuid,title,author,abstract,Keywords,label,source\n\
        a1,Heart study,\"Doe, J\",\"Patients with, commas\",heart; study,1,medline\n\
        a2,Graph codes,,An algorithm,graphs,0,inspec\n";

    #[test]
    fn reads_competition_layout_and_ignores_extra_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "p.csv", CSV.as_bytes());
        let columns = ColumnMap::default();
        let (records, report) = load_papers(&path, &options(&columns)).unwrap();
        assert_eq!(report.rows_read, 2);
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].uuid, "a1");
        assert_eq!(records[0].author, "Doe, J");
        assert_eq!(records[0].abstract_text, "Patients with, commas");
        assert_eq!(records[0].keywords.as_deref(), Some("heart; study"));
        assert_eq!(records[0].label, Some(1));
        assert_eq!(records[1].author, "");
        assert_eq!(records[1].label, Some(0));
    }

    #[test]
    fn maps_columns_by_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "p.csv", b"id,heading,body,y\n7,T,Body text,1\n");
        let columns = ColumnMap {
            uuid: "id".into(),
            title: "heading".into(),
            abstract_text: "body".into(),
            label: "y".into(),
            ..ColumnMap::default()
        };
        let (records, _) = load_papers(&path, &options(&columns)).unwrap();
        assert_eq!(records[0].uuid, "7");
        assert_eq!(records[0].title, "T");
        assert_eq!(records[0].abstract_text, "Body text");
        assert_eq!(records[0].author, "");
    }

    #[test]
    fn max_rows_keeps_the_first_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "p.csv", CSV.as_bytes());
        let columns = ColumnMap::default();
        let opts = LoadOptions { max_rows: Some(1), ..options(&columns) };
        let (records, _) = load_papers(&path, &opts).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].uuid, "a1");
    }

    #[test]
    fn reads_json_lines_and_parquet_alike() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "p.jsonl",
            b"{\"uuid\":\"x\",\"title\":\"T\",\"abstract\":\"A\",\"label\":1}\n{\"uuid\":\"y\",\"title\":\"U\",\"abstract\":\"B\",\"label\":0}\n",
        );
        let columns = ColumnMap::default();
        let (records, _) = load_papers(&path, &options(&columns)).unwrap();
        assert_eq!(records.iter().map(|r| r.label).collect::<Vec<_>>(), vec![Some(1), Some(0)]);

        let mut frame = polars::prelude::df!(
            "uuid" => ["p"], "title" => ["T"], "abstract" => ["A"], "label" => [1i64]
        )
        .unwrap();
        let parquet = dir.path().join("p.parquet");
        polars::prelude::ParquetWriter::new(std::fs::File::create(&parquet).unwrap())
            .finish(&mut frame)
            .unwrap();
        let (records, _) = load_papers(&parquet, &options(&columns)).unwrap();
        assert_eq!(records[0].label, Some(1));
        assert_eq!(records[0].uuid, "p");
    }

    #[test]
    fn missing_file_is_named() {
        let columns = ColumnMap::default();
        let err = load_papers(Path::new("no/such.csv"), &options(&columns)).unwrap_err();
        assert!(matches!(err, DataError::NotFound { .. }));
        assert!(err.to_string().contains("no/such.csv"));
    }

    #[test]
    fn missing_column_names_the_column_and_what_was_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "p.csv", b"uuid,title,label\n1,T,1\n");
        let columns = ColumnMap::default();
        let err = load_papers(&path, &options(&columns)).unwrap_err().to_string();
        assert!(err.contains("missing column \"abstract\""), "{err}");
        assert!(err.contains("uuid, title, label"), "{err}");
    }

    #[test]
    fn bad_label_names_row_column_and_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "p.csv", b"title,abstract,label\nT,A,1\nU,B,2\n");
        let columns = ColumnMap::default();
        let err = load_papers(&path, &options(&columns)).unwrap_err().to_string();
        assert!(err.contains("row 2"), "{err}");
        assert!(err.contains("\"label\""), "{err}");
        assert!(err.contains("\"2\""), "{err}");
    }

    #[test]
    fn non_utf8_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "p.csv", b"title,abstract,label\nT,A,1\nU,\xff\xfe,0\n");
        let columns = ColumnMap::default();
        let err = load_papers(&path, &options(&columns)).unwrap_err();
        assert!(matches!(err, DataError::NotUtf8 { line: 3, .. }), "{err}");
    }

    #[test]
    fn empty_text_fails_or_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "p.csv", b"title,abstract,label\nT,A,1\n,,0\n\"\",\" \",1\n");
        let columns = ColumnMap::default();
        let err = load_papers(&path, &options(&columns)).unwrap_err();
        assert!(
            matches!(&err, DataError::EmptyText { count: 2, first_rows, .. } if first_rows == &vec![2, 3]),
            "{err}"
        );

        let opts = LoadOptions { empty_text: EmptyTextPolicy::Skip, ..options(&columns) };
        let (records, report) = load_papers(&path, &opts).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(report.empty_rows, vec![2, 3]);
    }

    #[test]
    fn a_line_of_megabytes_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let huge = "x".repeat(6 << 20);
        let path = write(
            &dir,
            "big.csv",
            format!("uuid,title,abstract,label\nq,T,A,1\nr,T,{huge},0\n").as_bytes(),
        );
        let columns = ColumnMap::default();
        let error = load_papers(&path, &options(&columns)).unwrap_err().to_string();
        assert!(
            error.contains("big.csv: line 3 is 6291462 bytes") && error.contains("at most 1048576"),
            "{error}"
        );
    }

    #[test]
    fn label_is_optional_for_prediction() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "p.csv", b"uuid,title,abstract\nq,T,A\n");
        let columns = ColumnMap::default();
        let opts = LoadOptions { require_label: false, ..options(&columns) };
        let (records, _) = load_papers(&path, &opts).unwrap();
        assert_eq!(records[0].label, None);
        // A label column with other values does not stop a prediction; training refuses it.
        let path = write(&dir, "q.csv", b"uuid,title,abstract,label\nq,T,A,medical\nr,T,A,1\n");
        let (records, _) = load_papers(&path, &opts).unwrap();
        assert_eq!(records.iter().map(|r| r.label).collect::<Vec<_>>(), vec![None, Some(1)]);
        let error = load_papers(&path, &options(&columns)).unwrap_err().to_string();
        assert!(error.contains("medical") && error.contains("row 1"), "{error}");
    }
}
