//! Loading a BERT-family encoder's files for a task: the checkpoint folder, its config, and its
//! tokenizer with the task's length, checked against each other.

use papertune_data::TextTokenizer;
use papertune_models::bert::BertConfig;
use papertune_models::source;

use crate::error::TaskError;

/// The files of encoder `spec` (a preset, hub id or folder), its config, and its tokenizer
/// cutting inputs at `max_len` tokens; refuses a `max_len` beyond the model's positions and a
/// tokenizer larger than the embedding table.
pub(crate) fn encoder_files(
    spec: &str,
    max_len: usize,
) -> Result<(source::ModelFiles, BertConfig, TextTokenizer), TaskError> {
    let files = source::resolve(spec)?;
    let encoder_config = BertConfig::read(&files.config)?;
    let limit = encoder_config.max_sequence_len();
    if max_len > limit {
        return Err(TaskError::Config(format!(
            "model.max_len is {max_len} but {spec} reads at most {limit} tokens ({}); set model.max_len to {limit} or less",
            files.config.display()
        )));
    }
    let tokenizer = TextTokenizer::from_file(&files.tokenizer, max_len)?;
    if tokenizer.vocab_size() > encoder_config.vocab_size {
        return Err(TaskError::Config(format!(
            "{}: the tokenizer has {} tokens but the model's embedding table has {} rows ({})",
            files.tokenizer.display(),
            tokenizer.vocab_size(),
            encoder_config.vocab_size,
            files.config.display()
        )));
    }
    Ok((files, encoder_config, tokenizer))
}
