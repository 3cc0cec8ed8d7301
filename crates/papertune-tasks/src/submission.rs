//! The challenge's submission file: `uuid,Keywords,label`, keywords joined by `; `, written with
//! the `csv` crate (RFC 4180 quoting); on request, each class's probability (`prob_0,prob_1`)
//! and logit (`logit_0,logit_1`) follow the label.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::TaskError;
use crate::run_dir::write_output;

/// One row of a submission.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SubmissionRow {
    pub uuid: String,
    pub keywords: Vec<String>,
    /// `None` when no run gave labels (a keyword-only prediction): the cell is left empty.
    pub label: Option<u8>,
    /// Probability of class 0 and class 1: the columns `prob_0,prob_1` when some row has them.
    pub probabilities: Option<[f32; 2]>,
    /// The classifier's logits for class 0 and class 1 (a one-logit head's `z` as `[0, z]`,
    /// which gives the same probability): the columns `logit_0,logit_1` when some row has them.
    pub logits: Option<[f32; 2]>,
}

impl SubmissionRow {
    /// A row with a label (or none) and nothing else.
    pub fn labelled(uuid: String, keywords: Vec<String>, label: Option<u8>) -> Self {
        Self { uuid, keywords, label, ..Self::default() }
    }
}

/// Drops the probability and logit columns not asked for (the challenge's file has neither).
pub fn keep_scores(rows: &mut [SubmissionRow], probabilities: bool, logits: bool) {
    for row in rows {
        if !probabilities {
            row.probabilities = None;
        }
        if !logits {
            row.logits = None;
        }
    }
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
    let with_probabilities = rows.iter().any(|r| r.probabilities.is_some());
    let with_logits = rows.iter().any(|r| r.logits.is_some());
    let mut header = vec!["uuid", "Keywords", "label"];
    if with_probabilities {
        header.extend(["prob_0", "prob_1"]);
    }
    if with_logits {
        header.extend(["logit_0", "logit_1"]);
    }
    let pair = |values: Option<[f32; 2]>| match values {
        Some([a, b]) => [a.to_string(), b.to_string()],
        None => [String::new(), String::new()],
    };
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(&header).expect("writes to memory");
    for row in rows {
        let label = row.label.map(|l| l.to_string()).unwrap_or_default();
        let mut record = vec![row.uuid.clone(), row.keywords.join("; "), label];
        if with_probabilities {
            record.extend(pair(row.probabilities));
        }
        if with_logits {
            record.extend(pair(row.logits));
        }
        writer.write_record(&record).expect("writes to memory");
    }
    String::from_utf8(writer.into_inner().expect("writes to memory")).expect("UTF-8 fields")
}

/// Writes the submission: `-` is standard output, a FIFO or a device is written to in place,
/// a file atomically, its folder created if needed ([`write_output`]; the command checks first
/// that it may replace an existing file, see [`crate::run_dir::check_output`]).
pub fn write_submission(path: &Path, rows: &[SubmissionRow]) -> Result<PredictReport, TaskError> {
    let label_1 = rows.iter().filter(|r| r.label == Some(1)).count();
    write_output(path, submission_csv(rows).as_bytes())?;
    Ok(PredictReport { output: path.to_path_buf(), rows: rows.len(), label_1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_quoting_and_keyword_join() {
        let rows = vec![
            SubmissionRow::labelled("a".into(), vec![], Some(1)),
            SubmissionRow::labelled("b,c".into(), vec!["x".into(), "y \"z\"".into()], Some(0)),
            SubmissionRow::labelled("d".into(), vec!["two\nlines".into()], Some(0)),
        ];
        assert_eq!(
            submission_csv(&rows),
            "uuid,Keywords,label\na,,1\n\"b,c\",\"x; y \"\"z\"\"\",0\nd,\"two\nlines\",0\n"
        );
    }

    #[test]
    fn labels_may_be_left_empty_and_scores_follow_the_label() {
        let unlabelled = [SubmissionRow::labelled("a".into(), vec!["k".into()], None)];
        assert_eq!(submission_csv(&unlabelled), "uuid,Keywords,label\na,k,\n");
        let scored = [SubmissionRow {
            probabilities: Some([0.25, 0.75]),
            logits: Some([0.0, 1.5]),
            ..SubmissionRow::labelled("a".into(), vec![], Some(1))
        }];
        assert_eq!(
            submission_csv(&scored),
            "uuid,Keywords,label,prob_0,prob_1,logit_0,logit_1\na,,1,0.25,0.75,0,1.5\n"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_submission_goes_through_a_fifo_and_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let rows = [SubmissionRow::labelled("a".into(), vec![], Some(1))];
        let file = dir.path().join("kept.csv");
        std::fs::write(&file, "kept").unwrap();
        let link = dir.path().join("link.csv");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let error = write_submission(&link, &rows).unwrap_err().to_string();
        assert!(error.contains("link.csv") && error.contains("symbolic link"), "{error}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "kept");
        let fifo = dir.path().join("fifo.csv");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
        };
        assert_eq!(write_submission(&fifo, &rows).unwrap().rows, 1);
        assert_eq!(reader.join().unwrap(), "uuid,Keywords,label\na,,1\n");
    }
}
