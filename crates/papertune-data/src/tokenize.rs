//! Tokenization with the `tokenizers` crate, from a checkpoint's `tokenizer.json`.

use std::path::{Path, PathBuf};

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{DataError, Result};

/// Token ids of one text (or text pair), truncated to the tokenizer's `max_len`, not padded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Encoded {
    /// Token ids, special tokens included.
    pub ids: Vec<u32>,
    /// Segment ids (0 for the first text, 1 for the second of a pair).
    pub type_ids: Vec<u32>,
}

/// A tokenizer that truncates to a fixed length and leaves padding to the batcher.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    path: PathBuf,
    max_len: usize,
    pad_id: u32,
}

impl TextTokenizer {
    /// Loads `tokenizer.json`; sequences are truncated to `max_len` tokens, special tokens included.
    pub fn from_file(path: &Path, max_len: usize) -> Result<Self> {
        let error = |message: String| DataError::Tokenizer { path: path.to_path_buf(), message };
        if !path.exists() {
            return Err(DataError::NotFound { path: path.to_path_buf() });
        }
        if max_len < 2 {
            return Err(error(format!("max_len must be at least 2, found {max_len}")));
        }
        let mut inner = Tokenizer::from_file(path).map_err(|e| error(e.to_string()))?;
        let pad_id = inner
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| {
                ["[PAD]", "<pad>", "<|endoftext|>"].iter().find_map(|t| inner.token_to_id(t))
            })
            .unwrap_or(0);
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| error(e.to_string()))?;
        inner.with_padding(None);
        Ok(Self { inner, path: path.to_path_buf(), max_len, pad_id })
    }

    /// The longest sequence this tokenizer produces.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The id used to pad batches.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Encodes one text with the tokenizer's special tokens.
    pub fn encode(&self, text: &str) -> Result<Encoded> {
        let encoding = self.encoding(text)?;
        Ok(Encoded { ids: encoding.get_ids().to_vec(), type_ids: encoding.get_type_ids().to_vec() })
    }

    /// The whole `tokenizers` encoding of one text with the special tokens: besides the ids,
    /// each token's byte offsets in `text`, its word and whether it is a special token.
    pub fn encoding(&self, text: &str) -> Result<tokenizers::Encoding> {
        self.inner.encode(text, true).map_err(|e| self.error(e.to_string()))
    }

    /// Encodes a pair of texts the way the model was pre-trained on pairs (`[CLS] a [SEP] b [SEP]`).
    pub fn encode_pair(&self, first: &str, second: &str) -> Result<Encoded> {
        let encoding =
            self.inner.encode((first, second), true).map_err(|e| self.error(e.to_string()))?;
        Ok(Encoded { ids: encoding.get_ids().to_vec(), type_ids: encoding.get_type_ids().to_vec() })
    }

    /// Encodes many texts (or pairs when `seconds` is given).
    pub fn encode_all(
        &self,
        firsts: &[String],
        seconds: Option<&[String]>,
    ) -> Result<Vec<Encoded>> {
        match seconds {
            None => firsts.iter().map(|t| self.encode(t)).collect(),
            Some(seconds) => {
                firsts.iter().zip(seconds).map(|(a, b)| self.encode_pair(a, b)).collect()
            }
        }
    }

    /// Writes the tokenizer (with its truncation settings) to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner
            .save(path, false)
            .map_err(|e| DataError::Tokenizer { path: path.to_path_buf(), message: e.to_string() })
    }

    fn error(&self, message: String) -> DataError {
        DataError::Tokenizer { path: self.path.clone(), message }
    }
}

/// Renders each paper through `template` (and `pair_template` as the second text of a pair,
/// when given) and tokenizes the result.
pub fn encode_papers(
    tokenizer: &TextTokenizer,
    template: &crate::TextTemplate,
    pair_template: Option<&crate::TextTemplate>,
    papers: &[crate::PaperRecord],
) -> Result<Vec<Encoded>> {
    let firsts: Vec<String> = papers.iter().map(|p| template.render(p)).collect();
    let seconds: Option<Vec<String>> =
        pair_template.map(|t| papers.iter().map(|p| t.render(p)).collect());
    tokenizer.encode_all(&firsts, seconds.as_deref())
}
