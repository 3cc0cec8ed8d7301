//! The challenge's submission file: `uuid,Keywords,label`, keywords joined by `; `.

use std::path::Path;

use papertune_models::fsutil::write_atomic;

use crate::error::TaskError;

/// One row of a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmissionRow {
    pub uuid: String,
    pub keywords: Vec<String>,
    pub label: u8,
}

/// Quotes a CSV field when it holds a comma, quote or line break (RFC 4180).
pub fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

/// The submission as CSV text.
pub fn submission_csv(rows: &[SubmissionRow]) -> String {
    let mut out = String::from("uuid,Keywords,label\n");
    for row in rows {
        out.push_str(&csv_field(&row.uuid));
        out.push(',');
        out.push_str(&csv_field(&row.keywords.join("; ")));
        out.push(',');
        out.push_str(&row.label.to_string());
        out.push('\n');
    }
    out
}

/// Writes the submission atomically.
pub fn write_submission(path: &Path, rows: &[SubmissionRow]) -> Result<(), TaskError> {
    write_atomic(path, submission_csv(rows).as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_quoting_and_keyword_join() {
        let rows = vec![
            SubmissionRow { uuid: "a".into(), keywords: vec![], label: 1 },
            SubmissionRow { uuid: "b,c".into(), keywords: vec!["x".into(), "y \"z\"".into()], label: 0 },
        ];
        assert_eq!(submission_csv(&rows), "uuid,Keywords,label\na,,1\n\"b,c\",\"x; y \"\"z\"\"\",0\n");
    }
}
