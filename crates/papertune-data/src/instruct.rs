//! Instruction-tuning data: `instruction / input / output` records built from paper rows (the
//! two tasks' default instructions; input = title + author + abstract) or read from Alpaca-style
//! files, their token sequences with the prompt masked out of the loss, and batches for causal LM
//! training in which only answer positions reach the LM head.
//!
//! Keyword helpers live here too: the training target made from the gold `Keywords` cell, and
//! the normalisation and parsing the keyword metrics use.

use std::path::Path;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, DatasetError};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::papers::PaperRecord;
use crate::table::Table;
use crate::template::TextTemplate;

/// Task 1's instruction: answer "1" (medical) or "0".
pub const CLASSIFY_INSTRUCTION: &str = "Please judge whether it is a medical field paper according to the given paper title and abstract, output 1 or 0, the following is the paper title and abstract -->";
/// Task 2's instruction: the keywords, separated by commas.
pub const KEYWORDS_INSTRUCTION: &str = "Please extract keywords from the given paper title and abstract in the text below, separated by commas -->";
/// The input built from a paper row.
pub const DEFAULT_INPUT_TEMPLATE: &str = "title: {title}\nauthor: {author}\nabstract: {abstract}";

/// Which paper task an instruction record serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstructionTask {
    /// Medical (1) or not (0).
    Classify,
    /// Generate the keywords.
    Keywords,
}

impl InstructionTask {
    /// The task's default instruction.
    pub fn default_instruction(self) -> &'static str {
        match self {
            Self::Classify => CLASSIFY_INSTRUCTION,
            Self::Keywords => KEYWORDS_INSTRUCTION,
        }
    }
}

/// One instruction-tuning example.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstructionRecord {
    pub instruction: String,
    pub input: String,
    /// The answer; empty when only a prompt is needed (prediction).
    pub output: String,
    /// An optional system message.
    #[serde(default)]
    pub system: Option<String>,
}

impl InstructionRecord {
    /// The user turn: the instruction, then the input on the next line (when there is one).
    pub fn user_content(&self) -> String {
        if self.input.is_empty() {
            self.instruction.clone()
        } else {
            format!("{}\n{}", self.instruction, self.input)
        }
    }
}

/// Builds records from paper rows: the input is the template rendered with the fields trimmed;
/// the output is the label ("1"/"0") for classification and the keyword target
/// ([`keywords_target`]) for keywords; rows without them get an empty output.
pub fn records_from_papers(
    papers: &[PaperRecord],
    task: InstructionTask,
    instruction: &str,
    input_template: &TextTemplate,
) -> Vec<InstructionRecord> {
    papers
        .iter()
        .map(|paper| InstructionRecord {
            instruction: instruction.to_owned(),
            input: input_template.render(&PaperRecord {
                title: paper.title.trim().to_owned(),
                author: paper.author.trim().to_owned(),
                abstract_text: paper.abstract_text.trim().to_owned(),
                ..paper.clone()
            }),
            output: match task {
                InstructionTask::Classify => paper.label.map(|l| l.to_string()).unwrap_or_default(),
                InstructionTask::Keywords => {
                    paper.keywords.as_deref().map(keywords_target).unwrap_or_default()
                }
            },
            system: None,
        })
        .collect()
}

/// Reads Alpaca / LLaMA-Factory records (`instruction`, `input`, `output`, optional `system`)
/// from JSON, JSON lines, CSV or Parquet. `input` and `system` may be absent.
pub fn read_alpaca(path: &Path, max_rows: Option<usize>) -> Result<Vec<InstructionRecord>> {
    let table = Table::read(path, max_rows)?;
    let column = |name: &'static str, required: bool| -> Result<Option<Vec<Option<String>>>> {
        match table.text_column(name) {
            Some(values) => Ok(Some(values)),
            None if required => Err(DataError::MissingColumn {
                path: path.to_path_buf(),
                column: name.into(),
                role: name,
                found: table.column_names().join(", "),
            }),
            None => Ok(None),
        }
    };
    let instruction = column("instruction", true)?.expect("required");
    let output = column("output", true)?.expect("required");
    let input = column("input", false)?;
    let system = column("system", false)?;
    let mut records = Vec::with_capacity(instruction.len());
    for row in 0..instruction.len() {
        let instruction = instruction[row].clone().unwrap_or_default();
        if instruction.trim().is_empty() {
            return Err(DataError::Invalid {
                path: path.to_path_buf(),
                row: row + 1,
                column: "instruction".into(),
                message: "is empty".into(),
            });
        }
        records.push(InstructionRecord {
            instruction,
            input: input.as_ref().and_then(|c| c[row].clone()).unwrap_or_default(),
            output: output[row].clone().unwrap_or_default(),
            system: system.as_ref().and_then(|c| c[row].clone()).filter(|s| !s.is_empty()),
        });
    }
    Ok(records)
}

/// The training answer for a gold `Keywords` cell: split on `;`, trimmed, trailing dots
/// removed, empty ones dropped, joined with `", "` (the instruction asks for commas).
pub fn keywords_target(gold: &str) -> String {
    gold.split(';')
        .map(|k| k.trim().trim_end_matches('.').trim())
        .filter(|k| !k.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A keyword as the metrics compare it: lowercase, runs of whitespace made one space, trimmed,
/// trailing `.,;:!?` removed.
pub fn normalize_keyword(keyword: &str) -> String {
    let collapsed = keyword.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
    collapsed.trim_end_matches(|c: char| ".,;:!?".contains(c) || c.is_whitespace()).to_owned()
}

/// Normalised, de-duplicated keywords (first occurrence kept) of a text split on the given
/// separators.
pub fn split_keywords(text: &str, separators: &[char]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for piece in text.split(|c| separators.contains(&c)) {
        let keyword = normalize_keyword(piece);
        if !keyword.is_empty() && !out.contains(&keyword) {
            out.push(keyword);
        }
    }
    out
}

/// Keywords of a generated answer (split on `,` and `;`).
pub fn parse_generated_keywords(text: &str) -> Vec<String> {
    split_keywords(text, &[',', ';'])
}

/// Keywords of a gold `Keywords` cell (split on `;`).
pub fn parse_gold_keywords(gold: &str) -> Vec<String> {
    split_keywords(gold, &[';'])
}

/// A tokenized training example: `input_ids` = prompt + answer, and `labels` holding the answer
/// ids at answer positions and `None` at prompt positions (left out of the loss).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CausalLmExample {
    pub input_ids: Vec<u32>,
    pub labels: Vec<Option<u32>>,
}

impl CausalLmExample {
    /// Joins a prompt and its answer, cutting the prompt (never the answer) to fit `max_len`.
    ///
    /// The prompt comes in two parts: `head` (system and user text, cut from its end when too
    /// long) and `tail` (the template's closing tokens, e.g. `<|im_end|>\n<|im_start|>assistant\n`,
    /// always kept). The answer is cut to `max_answer` tokens, keeping its last token (the EOS).
    pub fn new(
        head: &[u32],
        tail: &[u32],
        answer: &[u32],
        max_len: usize,
        max_answer: usize,
    ) -> Self {
        let mut answer = answer.to_vec();
        if answer.len() > max_answer && max_answer > 0 {
            let last = *answer.last().expect("non-empty");
            answer.truncate(max_answer - 1);
            answer.push(last);
        }
        let budget = max_len.saturating_sub(answer.len() + tail.len());
        let head = &head[..head.len().min(budget)];
        let mut input_ids = Vec::with_capacity(head.len() + tail.len() + answer.len());
        input_ids.extend_from_slice(head);
        input_ids.extend_from_slice(tail);
        let prompt_len = input_ids.len();
        input_ids.extend_from_slice(&answer);
        let mut labels = vec![None; prompt_len];
        labels.extend(answer.iter().map(|&id| Some(id)));
        Self { input_ids, labels }
    }

    /// Answer tokens (positions in the loss).
    pub fn answer_len(&self) -> usize {
        self.labels.iter().filter(|l| l.is_some()).count()
    }
}

/// In-memory dataset of tokenized examples.
#[derive(Debug, Clone, Default)]
pub struct CausalLmDataset {
    examples: Vec<CausalLmExample>,
}

impl CausalLmDataset {
    pub fn new(examples: Vec<CausalLmExample>) -> Self {
        Self { examples }
    }

    pub fn examples(&self) -> &[CausalLmExample] {
        &self.examples
    }

    /// Tokens over all examples.
    pub fn total_tokens(&self) -> usize {
        self.examples.iter().map(|e| e.input_ids.len()).sum()
    }
}

impl Dataset<CausalLmExample> for CausalLmDataset {
    fn get(&self, index: usize) -> std::result::Result<CausalLmExample, DatasetError> {
        self.examples.get(index).cloned().ok_or_else(|| {
            DatasetError::new(std::io::Error::other(format!(
                "index {index} out of {} examples",
                self.examples.len()
            )))
        })
    }

    fn len(&self) -> usize {
        self.examples.len()
    }
}

/// A causal LM training batch, right-padded. Position `t` predicts token `t + 1`; only the
/// positions whose next token is an answer token are scored, listed by `scored_positions` (flat
/// index `row * seq + t`) with their `targets`.
#[derive(Debug, Clone)]
pub struct CausalLmBatch {
    /// `[batch][seq]` token ids (host side: the model builds its own input from them).
    pub input_ids: Vec<Vec<u32>>,
    /// `[batch][seq]` 1 for tokens, 0 for padding.
    pub attention_mask: Vec<Vec<u8>>,
    /// `[scored]` flat positions.
    pub scored_positions: Tensor<1, Int>,
    /// `[scored]` next-token ids.
    pub targets: Tensor<1, Int>,
    /// Number of scored tokens.
    pub scored: usize,
}

/// Pads examples to the longest and lists the scored positions.
#[derive(Debug, Clone, Copy)]
pub struct CausalLmBatcher {
    pub pad_id: u32,
}

impl Batcher<CausalLmExample, CausalLmBatch> for CausalLmBatcher {
    fn batch(&self, items: Vec<CausalLmExample>, device: &Device) -> CausalLmBatch {
        let seq = items.iter().map(|e| e.input_ids.len()).max().unwrap_or(0);
        let mut input_ids = Vec::with_capacity(items.len());
        let mut attention_mask = Vec::with_capacity(items.len());
        let mut positions = Vec::new();
        let mut targets = Vec::new();
        for (row, example) in items.iter().enumerate() {
            let n = example.input_ids.len();
            let mut ids = example.input_ids.clone();
            ids.resize(seq, self.pad_id);
            input_ids.push(ids);
            let mut mask = vec![1u8; n];
            mask.resize(seq, 0);
            attention_mask.push(mask);
            for t in 0..n.saturating_sub(1) {
                if let Some(target) = example.labels[t + 1] {
                    positions.push((row * seq + t) as i64);
                    targets.push(i64::from(target));
                }
            }
        }
        let scored = positions.len();
        CausalLmBatch {
            input_ids,
            attention_mask,
            scored_positions: Tensor::from_data(TensorData::new(positions, [scored]), device),
            targets: Tensor::from_data(TensorData::new(targets, [scored]), device),
            scored,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyword_targets_and_normalisation() {
        assert_eq!(
            keywords_target("Deep learning; Protein folding.; ; X-ray."),
            "Deep learning, Protein folding, X-ray"
        );
        assert_eq!(normalize_keyword("  Deep   Learning.; "), "deep learning");
        assert_eq!(
            parse_generated_keywords("Deep learning, deep  learning; proteins!, "),
            vec!["deep learning", "proteins"]
        );
        assert_eq!(parse_gold_keywords("A, B; C."), vec!["a, b", "c"]);
    }

    #[test]
    fn truncation_keeps_the_answer_and_the_template_tail() {
        let example = CausalLmExample::new(&[1, 2, 3, 4, 5], &[8, 9], &[20, 21, 2], 7, 8);
        assert_eq!(example.input_ids, vec![1, 2, 8, 9, 20, 21, 2]);
        assert_eq!(example.labels, vec![None, None, None, None, Some(20), Some(21), Some(2)]);
        let long_answer = CausalLmExample::new(&[1], &[9], &[20, 21, 22, 23, 2], 10, 3);
        assert_eq!(long_answer.input_ids, vec![1, 9, 20, 21, 2]);
        assert_eq!(long_answer.answer_len(), 3);
    }

    #[test]
    fn batches_score_only_positions_before_answer_tokens() {
        let a = CausalLmExample::new(&[1, 2], &[9], &[20, 2], 16, 8); // 5 tokens
        let b = CausalLmExample::new(&[1], &[9], &[30, 2], 16, 8); // 4 tokens
        let batch = CausalLmBatcher { pad_id: 0 }.batch(vec![a, b], &Device::default());
        assert_eq!(batch.input_ids[1], vec![1, 9, 30, 2, 0]);
        assert_eq!(batch.attention_mask[1], vec![1, 1, 1, 1, 0]);
        let positions: Vec<i64> =
            batch.scored_positions.into_data().convert::<i64>().try_into_vec().unwrap();
        let targets: Vec<i64> = batch.targets.into_data().convert::<i64>().try_into_vec().unwrap();
        assert_eq!(positions, vec![2, 3, 6, 7]);
        assert_eq!(targets, vec![20, 2, 30, 2]);
    }
}

#[cfg(test)]
mod alpaca_tests {
    use super::*;

    #[test]
    fn reads_alpaca_json_and_jsonl_and_names_missing_columns() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("records.json");
        std::fs::write(
            &json,
            r#"[{"instruction": "Say hi", "input": "", "output": "hi"},
            {"instruction": "Add", "input": "1 + 1", "output": "2", "system": "Be exact."}]"#,
        )
        .unwrap();
        let records = read_alpaca(&json, None).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].user_content(), "Say hi");
        assert_eq!(records[1].user_content(), "Add\n1 + 1");
        assert_eq!(records[1].system.as_deref(), Some("Be exact."));

        let jsonl = dir.path().join("records.jsonl");
        std::fs::write(&jsonl, "{\"instruction\": \"Say hi\", \"output\": \"hi\"}\n").unwrap();
        assert_eq!(read_alpaca(&jsonl, None).unwrap()[0].input, "");

        let bad = dir.path().join("bad.jsonl");
        std::fs::write(&bad, "{\"prompt\": \"x\", \"output\": \"y\"}\n").unwrap();
        let err = read_alpaca(&bad, None).unwrap_err().to_string();
        assert!(err.contains("instruction") && err.contains("prompt"), "{err}");
    }
}
