//! The challenge's submission file: `uuid,Keywords,label`, keywords joined by `; `, written with
//! the `csv` crate (RFC 4180 quoting).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::TaskError;
use crate::run_dir::write_atomic;

/// One row of a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmissionRow {
    pub uuid: String,
    pub keywords: Vec<String>,
    pub label: u8,
}

/// What a `predict` call wrote.
#[derive(Debug, Clone, Serialize)]
pub struct PredictReport {
    pub output: PathBuf,
    pub rows: usize,
    /// Rows labelled 1.
    pub label_1: usize,
}

/// The submission as CSV text.
pub fn submission_csv(rows: &[SubmissionRow]) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(["uuid", "Keywords", "label"]).expect("writes to memory");
    for row in rows {
        writer
            .write_record([row.uuid.as_str(), &row.keywords.join("; "), &row.label.to_string()])
            .expect("writes to memory");
    }
    String::from_utf8(writer.into_inner().expect("writes to memory")).expect("UTF-8 fields")
}

/// Writes the submission atomically, creating its folder if needed; `-` is standard output.
pub fn write_submission(path: &Path, rows: &[SubmissionRow]) -> Result<PredictReport, TaskError> {
    let label_1 = rows.iter().filter(|r| r.label == 1).count();
    if path == Path::new("-") {
        let mut stdout = std::io::stdout().lock();
        std::io::Write::write_all(&mut stdout, submission_csv(rows).as_bytes())
            .and_then(|()| std::io::Write::flush(&mut stdout))
            .map_err(crate::error::io_error(Path::new("standard output")))?;
        return Ok(PredictReport { output: path.to_path_buf(), rows: rows.len(), label_1 });
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(crate::error::io_error(dir))?;
    }
    write_atomic(path, submission_csv(rows).as_bytes())?;
    Ok(PredictReport { output: path.to_path_buf(), rows: rows.len(), label_1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_quoting_and_keyword_join() {
        let rows = vec![
            SubmissionRow { uuid: "a".into(), keywords: vec![], label: 1 },
            SubmissionRow {
                uuid: "b,c".into(),
                keywords: vec!["x".into(), "y \"z\"".into()],
                label: 0,
            },
            SubmissionRow { uuid: "d".into(), keywords: vec!["two\nlines".into()], label: 0 },
        ];
        assert_eq!(
            submission_csv(&rows),
            "uuid,Keywords,label\na,,1\n\"b,c\",\"x; y \"\"z\"\"\",0\nd,\"two\nlines\",0\n"
        );
    }
}
