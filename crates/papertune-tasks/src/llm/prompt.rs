//! Records as token ids: the prompt rendered with the model's chat template (or as plain text),
//! the part that may be cut to fit told apart from the part that must stay, and the answer with
//! its end-of-sequence token.

use papertune_data::{CausalLmExample, InstructionRecord};
use papertune_models::llm_tokenizer::{ChatMessage, LlmTokenizer};

use crate::error::TaskError;

/// Turns records into token ids: the prompt (chat template or plain), the answer with EOS.
pub struct PromptEncoder<'a> {
    pub tokenizer: &'a LlmTokenizer,
    pub chat_template: bool,
}

/// Closing text of plain (non-chat) prompts.
const PLAIN_TAIL: &str = "\nanswer: ";

impl PromptEncoder<'_> {
    /// The prompt's ids in two parts: `head` (everything up to the end of the user text, which
    /// may be cut) and `tail` (the template's closing text, always kept).
    pub fn prompt_parts(
        &self,
        record: &InstructionRecord,
    ) -> Result<(Vec<u32>, Vec<u32>), TaskError> {
        let content = record.user_content();
        let (head, tail) = if self.chat_template {
            let mut messages = Vec::new();
            if let Some(system) = &record.system {
                messages.push(ChatMessage { role: "system".into(), content: system.clone() });
            }
            messages.push(ChatMessage::user(content.clone()));
            let text = self.tokenizer.apply_chat_template(&messages, true)?;
            let end = text.rfind(&content).map(|i| i + content.len()).ok_or_else(|| {
                TaskError::Config("the chat template does not reproduce the user text; set model.chat_template = false".into())
            })?;
            (text[..end].to_owned(), text[end..].to_owned())
        } else {
            let head = match &record.system {
                Some(system) => format!("{system}\n{content}"),
                None => content,
            };
            (head, PLAIN_TAIL.to_owned())
        };
        Ok((self.tokenizer.encode(&head, true)?, self.tokenizer.encode(&tail, false)?))
    }

    /// Answer ids followed by the EOS token.
    pub fn answer_ids(&self, output: &str) -> Result<Vec<u32>, TaskError> {
        let mut ids = self.tokenizer.encode(output, false)?;
        let eos = self.tokenizer.eos_token_ids.first().copied().ok_or_else(|| {
            TaskError::Config(format!(
                "the tokenizer of {} names no end-of-sequence token",
                self.tokenizer.source.display()
            ))
        })?;
        ids.push(eos);
        Ok(ids)
    }

    /// A training example: prompt + answer, prompt masked out of the loss.
    pub fn training_example(
        &self,
        record: &InstructionRecord,
        max_len: usize,
        max_answer: usize,
    ) -> Result<CausalLmExample, TaskError> {
        let (head, tail) = self.prompt_parts(record)?;
        let answer = self.answer_ids(&record.output)?;
        Ok(CausalLmExample::new(&head, &tail, &answer, max_len, max_answer))
    }

    /// A prompt of at most `budget` tokens (the head is cut, the tail kept).
    pub fn prompt_ids(
        &self,
        record: &InstructionRecord,
        budget: usize,
    ) -> Result<Vec<u32>, TaskError> {
        let (mut head, tail) = self.prompt_parts(record)?;
        head.truncate(budget.saturating_sub(tail.len()));
        head.extend(tail);
        Ok(head)
    }
}
