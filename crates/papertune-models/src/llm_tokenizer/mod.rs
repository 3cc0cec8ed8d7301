//! The tokenizer of a causal LM, with its special tokens and chat template: read from
//! `tokenizer.json` (+ `tokenizer_config.json`), or rebuilt from GGUF metadata with the
//! `tokenizers` crate: a GPT-2-style byte-level BPE (tokens, merges, pre-tokenizer, special
//! tokens), or Gemma's SentencePiece vocabulary (`spm.rs`). Chat templates are the model's own
//! Jinja text, rendered with minijinja; a Gemma file without one gets Gemma's turn format.

mod spm;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn user(content: impl Into<String>) -> Self {
        Self { role: "user".into(), content: content.into() }
    }
}

/// A causal LM's tokenizer.
#[derive(Clone)]
pub struct LlmTokenizer {
    /// Where it was read from (for errors).
    pub source: PathBuf,
    pub tokenizer: Tokenizer,
    pub chat_template: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    /// Ids that end generation.
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    /// Whether encoding a prompt starts with the BOS token.
    pub add_bos: bool,
}

impl std::fmt::Debug for LlmTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmTokenizer")
            .field("source", &self.source)
            .field("vocab_size", &self.tokenizer.get_vocab_size(true))
            .field("eos_token", &self.eos_token)
            .field("chat_template", &self.chat_template.is_some())
            .finish()
    }
}

/// GGUF token types that are special tokens (3 = control, 4 = user defined).
const SPECIAL_TOKEN_TYPES: [i64; 2] = [3, 4];

/// Gemma's turn format (its documented chat layout): a system message goes in front of the
/// first user turn, the assistant's role is `model`. The content is kept as written (Gemma's
/// own template trims it; the prompt encoder needs the user text reproduced). BOS is not part
/// of it: `encode` adds it.
const GEMMA_TURNS: &str = "{% set ns = namespace(system='') %}{% for message in messages %}\
{% if message['role'] == 'system' %}{% set ns.system = message['content'] ~ '\\n\\n' %}\
{% else %}{{ '<start_of_turn>' ~ ('model' if message['role'] == 'assistant' else message['role']) ~ '\\n' }}\
{% if message['role'] == 'user' %}{{ ns.system }}{% set ns.system = '' %}{% endif %}\
{{ message['content'] }}{{ '<end_of_turn>\\n' }}{% endif %}{% endfor %}\
{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}";

/// The control token that ends a turn in Gemma's format.
const GEMMA_END_OF_TURN: &str = "<end_of_turn>";

/// ChatML, the turn format of SmolLM2, Qwen2 and many others (no default system message).
const CHATML: &str = "{% for message in messages %}\
{{ '<|im_start|>' ~ message['role'] ~ '\\n' ~ message['content'] ~ '<|im_end|>\\n' }}{% endfor %}\
{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// The chat templates a config can name: name, template, the token that opens a turn and the
/// one that closes it.
const NAMED_TEMPLATES: [(&str, &str, &str, &str); 2] = [
    ("gemma", GEMMA_TURNS, "<start_of_turn>", GEMMA_END_OF_TURN),
    ("chatml", CHATML, "<|im_start|>", "<|im_end|>"),
];

/// Split patterns of the Llama 3 and Qwen2 pre-tokenizers (digits in groups of three, or alone).
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

impl LlmTokenizer {
    /// Replaces the chat template by a named one: `gemma` (Gemma's turn format, a turn closed by
    /// `<end_of_turn>`) or `chatml` (`<|im_start|>` ... `<|im_end|>`). The token that closes a
    /// turn becomes the first end-of-sequence id: training answers end with it and generation
    /// stops at it. Fails for another name, or when the vocabulary lacks the format's tokens.
    pub fn use_named_template(&mut self, name: &str) -> Result<()> {
        let bad = |message: String| ModelError::Tokenizer { path: self.source.clone(), message };
        let Some(&(_, template, open, close)) =
            NAMED_TEMPLATES.iter().find(|(known, ..)| *known == name)
        else {
            let known: Vec<&str> = NAMED_TEMPLATES.iter().map(|(known, ..)| *known).collect();
            return Err(bad(format!(
                "no chat template named {name:?}; known: {}",
                known.join(", ")
            )));
        };
        let id = |token: &str| {
            self.tokenizer.token_to_id(token).ok_or_else(|| {
                bad(format!(
                    "the {name} template needs the token {token:?}, which this vocabulary lacks"
                ))
            })
        };
        id(open)?;
        let end = id(close)?;
        self.chat_template = Some(template.to_owned());
        self.eos_token_ids.retain(|&other| other != end);
        self.eos_token_ids.insert(0, end);
        Ok(())
    }

    /// Reads `tokenizer.json`, and `tokenizer_config.json` beside it when present (chat
    /// template, BOS/EOS tokens).
    pub fn from_files(tokenizer_json: &Path, tokenizer_config: Option<&Path>) -> Result<Self> {
        let tokenizer = Tokenizer::from_file(tokenizer_json).map_err(|e| {
            ModelError::Tokenizer { path: tokenizer_json.to_path_buf(), message: e.to_string() }
        })?;
        let mut out = Self {
            source: tokenizer_json.to_path_buf(),
            tokenizer,
            chat_template: None,
            bos_token: None,
            eos_token: None,
            eos_token_ids: Vec::new(),
            pad_token_id: None,
            add_bos: false,
        };
        if let Some(path) = tokenizer_config.filter(|p| p.exists()) {
            let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
            let config: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                ModelError::Tokenizer { path: path.to_path_buf(), message: e.to_string() }
            })?;
            let token_text = |key: &str| match config.get(key) {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Object(o)) => {
                    o.get("content").and_then(|c| c.as_str()).map(str::to_owned)
                }
                _ => None,
            };
            out.bos_token = token_text("bos_token");
            out.eos_token = token_text("eos_token");
            out.add_bos = config.get("add_bos_token").and_then(|v| v.as_bool()).unwrap_or(false);
            out.chat_template = match config.get("chat_template") {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Array(items)) => items
                    .iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                    .and_then(|t| t.get("template"))
                    .and_then(|t| t.as_str())
                    .map(str::to_owned),
                _ => None,
            };
            if let Some(pad) = token_text("pad_token") {
                out.pad_token_id = out.tokenizer.token_to_id(&pad);
            }
        }
        if let Some(eos) = out.eos_token.clone() {
            out.eos_token_ids = out.tokenizer.token_to_id(&eos).into_iter().collect();
        }
        Ok(out)
    }

    /// Rebuilds the tokenizer from GGUF metadata (`tokenizer.ggml.*`): byte-level BPE
    /// (`tokenizer.ggml.model = "gpt2"`), or SentencePiece (`"llama"`) for the Gemma
    /// architectures; other models fail with a clear error.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let bad = |message: String| ModelError::Tokenizer { path: file.path.clone(), message };
        let model = file.get_str("tokenizer.ggml.model")?;
        let architecture = file.get("general.architecture").and_then(|v| v.as_str()).unwrap_or("");
        match (model, architecture) {
            ("gpt2", _) => {}
            ("llama", "gemma" | "gemma2" | "gemma3") => return Self::gemma_from_gguf(file),
            _ => {
                return Err(bad(format!(
                    "tokenizer.ggml.model {model:?} of architecture {architecture:?} cannot be rebuilt (papertune \
                     rebuilds \"gpt2\" byte-level BPE, and \"llama\" SentencePiece for Gemma); put the model's \
                     tokenizer.json beside the GGUF file instead"
                )));
            }
        }
        let tokens = file.get_strings("tokenizer.ggml.tokens")?;
        let merges = file.get_strings("tokenizer.ggml.merges")?;
        let token_types: Vec<i64> =
            match file.get("tokenizer.ggml.token_type").and_then(|v| v.as_array()) {
                Some(values) => values.iter().map(|v| v.as_f64().unwrap_or(1.0) as i64).collect(),
                None => vec![1; tokens.len()],
            };
        let vocab: tokenizers::models::bpe::Vocab =
            tokens.iter().enumerate().map(|(i, t)| ((*t).to_owned(), i as u32)).collect();
        let merges = merges
            .iter()
            .enumerate()
            .map(|(i, m)| {
                m.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())).ok_or_else(|| {
                    bad(format!("merge {i} ({m:?}) is not two tokens separated by a space"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| bad(format!("cannot build the BPE model: {e}")))?;
        let pre = file.get("tokenizer.ggml.pre").and_then(|v| v.as_str()).unwrap_or("default");
        let byte_level = ByteLevel::new(false, true, true);
        let byte_level_no_regex = ByteLevel::new(false, true, false);
        let split = |pattern: &str| -> Result<PreTokenizerWrapper> {
            let split = Split::new(
                SplitPattern::Regex(pattern.to_owned()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| bad(format!("pre-tokenizer regex: {e}")))?;
            Ok(split.into())
        };
        let pre_tokenizer: PreTokenizerWrapper = match pre {
            // GPT-2's regex inside the byte-level pre-tokenizer.
            "default" | "gpt2" | "gpt-2" => byte_level.into(),
            // SmolLM: every digit on its own, then GPT-2's regex.
            "smollm" => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
            "llama3" | "llama-bpe" => {
                Sequence::new(vec![split(LLAMA3_PATTERN)?, byte_level_no_regex.into()]).into()
            }
            "qwen2" => {
                Sequence::new(vec![split(QWEN2_PATTERN)?, byte_level_no_regex.into()]).into()
            }
            other => {
                return Err(bad(format!(
                    "tokenizer.ggml.pre {other:?} is not known to papertune (known: default, gpt2, smollm, \
                     llama3, llama-bpe, qwen2); put the model's tokenizer.json beside the GGUF file instead"
                )));
            }
        };
        let mut tokenizer = Tokenizer::new(bpe);
        tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
        tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
        let specials: Vec<AddedToken> = tokens
            .iter()
            .zip(&token_types)
            .filter(|(_, ty)| SPECIAL_TOKEN_TYPES.contains(ty))
            .map(|(t, _)| AddedToken::from((*t).to_owned(), true))
            .collect();
        tokenizer.add_special_tokens(&specials);

        let id = |key: &str| {
            file.get(&format!("tokenizer.ggml.{key}")).and_then(|v| v.as_u64()).map(|v| v as u32)
        };
        let text_of =
            |id: Option<u32>| id.and_then(|i| tokens.get(i as usize)).map(|t| (*t).to_owned());
        let bos_id = id("bos_token_id");
        let eos_id = id("eos_token_id");
        Ok(Self {
            source: file.path.clone(),
            tokenizer,
            chat_template: file
                .get("tokenizer.chat_template")
                .and_then(|v| v.as_str())
                .map(str::to_owned),
            bos_token: text_of(bos_id),
            eos_token: text_of(eos_id),
            eos_token_ids: eos_id.into_iter().collect(),
            pad_token_id: id("padding_token_id"),
            add_bos: file
                .get("tokenizer.ggml.add_bos_token")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
        })
    }

    /// Gemma's SentencePiece vocabulary from the metadata, with Gemma's turn format as the chat
    /// template when the file carries none (a pretrained base model), ending turns (and
    /// training answers) at `<end_of_turn>`; EOS also ends generation.
    fn gemma_from_gguf(file: &GgufFile) -> Result<Self> {
        let bad = |message: String| ModelError::Tokenizer { path: file.path.clone(), message };
        let tokens = file.get_strings("tokenizer.ggml.tokens")?;
        let token_types: Vec<i64> =
            match file.get("tokenizer.ggml.token_type").and_then(|v| v.as_array()) {
                Some(values) => values.iter().map(|v| v.as_f64().unwrap_or(1.0) as i64).collect(),
                None => Vec::new(),
            };
        let id = |key: &str| {
            file.get(&format!("tokenizer.ggml.{key}")).and_then(|v| v.as_u64()).map(|v| v as u32)
        };
        let text_of = |what: &str, id: Option<u32>| -> Result<Option<String>> {
            match id {
                None => Ok(None),
                Some(i) => tokens.get(i as usize).map(|t| Some((*t).to_owned())).ok_or_else(|| {
                    bad(format!(
                        "{what} token id {i} is outside the {}-token vocabulary",
                        tokens.len()
                    ))
                }),
            }
        };
        let (bos_id, eos_id, unk_id, pad_id) = (
            id("bos_token_id"),
            id("eos_token_id"),
            id("unknown_token_id"),
            id("padding_token_id"),
        );
        let bos_token = text_of("BOS", bos_id)?;
        let eos_token = text_of("EOS", eos_id)?;
        let unk = text_of("unknown", unk_id)?.unwrap_or_else(|| "<unk>".into());
        let pad = text_of("padding", pad_id)?;
        let specials: Vec<&str> = [&bos_token, &eos_token, &pad]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .chain([unk.as_str()])
            .collect();
        let tokenizer =
            spm::gemma_tokenizer(&tokens, &token_types, &specials, &unk).map_err(bad)?;
        let file_template =
            file.get("tokenizer.chat_template").and_then(|v| v.as_str()).map(str::to_owned);
        // With Gemma's turn format, a turn (an answer) ends with `<end_of_turn>`: first, so that
        // training targets end with it; EOS still stops generation.
        let end_of_turn =
            tokenizer.token_to_id(GEMMA_END_OF_TURN).filter(|_| file_template.is_none());
        let mut eos_token_ids: Vec<u32> = end_of_turn.into_iter().collect();
        eos_token_ids.extend(eos_id.filter(|id| !eos_token_ids.contains(id)));
        Ok(Self {
            source: file.path.clone(),
            tokenizer,
            chat_template: Some(file_template.unwrap_or_else(|| GEMMA_TURNS.to_owned())),
            bos_token,
            eos_token,
            eos_token_ids,
            pad_token_id: pad_id,
            // transformers prepends BOS to Gemma's text unless the file says otherwise.
            add_bos: file
                .get("tokenizer.ggml.add_bos_token")
                .and_then(|v| v.as_bool())
                .unwrap_or(true),
        })
    }

    /// Writes `tokenizer.json` (with BOS prepended by its post-processor when this tokenizer
    /// adds it, as transformers expects) and `tokenizer_config.json` (special tokens, chat
    /// template) into `dir`.
    pub fn save_hf(&self, dir: &Path) -> Result<()> {
        let bad = |message: String| ModelError::Tokenizer { path: dir.to_path_buf(), message };
        let mut tokenizer = self.tokenizer.clone();
        if let (true, Some(bos)) = (self.add_bos, self.bos_token.as_deref()) {
            let id = tokenizer
                .token_to_id(bos)
                .ok_or_else(|| bad(format!("BOS token {bos:?} is not in the vocabulary")))?;
            let special = tokenizers::processors::template::SpecialToken::new(
                "<bos>".into(),
                vec![id],
                vec![bos.to_owned()],
            )
            .map_err(|e| bad(e.to_string()))?;
            let template = tokenizers::processors::template::TemplateProcessing::builder()
                .try_single("<bos> $A")
                .and_then(|t| t.try_pair("<bos> $A <bos> $B:1"))
                .map_err(|e| bad(e.to_string()))?
                .special_tokens(vec![special])
                .build()
                .map_err(|e| bad(e.to_string()))?;
            tokenizer.with_post_processor(Some(template));
        }
        let json = tokenizer.to_string(false).map_err(|e| bad(e.to_string()))?;
        crate::checkpoint::write_atomic(&dir.join("tokenizer.json"), json.as_bytes())?;
        let pad = self.pad_token_id.and_then(|id| self.tokenizer.id_to_token(id));
        let config = serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "pad_token": pad,
            "add_bos_token": self.add_bos,
            "chat_template": self.chat_template,
        });
        let text = serde_json::to_string_pretty(&config).map_err(|e| bad(e.to_string()))?;
        crate::checkpoint::write_atomic(&dir.join("tokenizer_config.json"), text.as_bytes())
    }

    /// Token ids of `text`; special tokens written in the text are recognised. With
    /// `add_special`, the BOS token is prepended when the model asks for it.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let encoding = self.tokenizer.encode(text, false).map_err(|e| ModelError::Tokenizer {
            path: self.source.clone(),
            message: e.to_string(),
        })?;
        let mut ids = encoding.get_ids().to_vec();
        if add_special
            && self.add_bos
            && let Some(bos) = self.bos_token.as_deref().and_then(|b| self.tokenizer.token_to_id(b))
        {
            ids.insert(0, bos);
        }
        Ok(ids)
    }

    /// Text of `ids`, with or without the special tokens.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.tokenizer.decode(ids, skip_special).map_err(|e| ModelError::Tokenizer {
            path: self.source.clone(),
            message: e.to_string(),
        })
    }

    /// The id of a token text (a special token, or a whole vocabulary entry).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// The single id `text` encodes to, or an error naming the text (for answers such as "0"/"1").
    pub fn single_token(&self, text: &str) -> Result<u32> {
        let ids = self.encode(text, false)?;
        match ids.as_slice() {
            [id] => Ok(*id),
            _ => Err(ModelError::Tokenizer {
                path: self.source.clone(),
                message: format!(
                    "{text:?} is {} tokens ({ids:?}), expected exactly one",
                    ids.len()
                ),
            }),
        }
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Pads with this id: the pad token, else the first EOS id, else 0.
    pub fn pad_id(&self) -> u32 {
        self.pad_token_id.or_else(|| self.eos_token_ids.first().copied()).unwrap_or(0)
    }

    /// Renders messages with the model's chat template (as transformers'
    /// `apply_chat_template(..., tokenize=False)` does).
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let template = self.chat_template.as_deref().ok_or_else(|| ModelError::Tokenizer {
            path: self.source.clone(),
            message: "the model has no chat template; use a plain prompt template instead".into(),
        })?;
        render_chat_template(
            template,
            messages,
            add_generation_prompt,
            self.bos_token.as_deref(),
            self.eos_token.as_deref(),
        )
        .map_err(|message| ModelError::Tokenizer { path: self.source.clone(), message })
    }
}

/// Renders a Jinja chat template with the variables transformers passes (`messages`,
/// `add_generation_prompt`, `bos_token`, `eos_token`) and its `raise_exception` function.
pub fn render_chat_template(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos_token: Option<&str>,
    eos_token: Option<&str>,
) -> std::result::Result<String, String> {
    let mut env = minijinja::Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |message: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, message))
        },
    );
    env.add_template("chat", template).map_err(|e| format!("chat template does not parse: {e}"))?;
    let context = minijinja::context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token.unwrap_or(""),
        eos_token => eos_token.unwrap_or(""),
    };
    env.get_template("chat")
        .and_then(|t| t.render(context))
        .map_err(|e| format!("chat template failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_template_renders_like_transformers() {
        let template = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}\
            {{ '<|im_start|>system\nBe brief.<|im_end|>\n' }}{% endif %}\
            {{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}\
            {% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
        let text =
            render_chat_template(template, &[ChatMessage::user("Hi")], true, None, None).unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let system = ChatMessage { role: "system".into(), content: "Be brief.".into() };
        let reply = ChatMessage { role: "assistant".into(), content: "Hello.".into() };
        let gemma = render_chat_template(
            GEMMA_TURNS,
            &[system, ChatMessage::user("Hi"), reply],
            true,
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            gemma,
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n<start_of_turn>model\n"
        );
        let err = render_chat_template("{{ raise_exception('no') }}", &[], false, None, None)
            .unwrap_err();
        assert!(err.contains("no"), "{err}");
        let chatml =
            render_chat_template(CHATML, &[ChatMessage::user("Hi")], true, None, None).unwrap();
        assert_eq!(chatml, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn a_named_template_replaces_the_model_s_and_ends_answers_with_its_turn_token() {
        let tokens =
            ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "▁", "h", "i"];
        let types = [3, 3, 3, 2, 3, 3, 1, 1, 1];
        let mut tokenizer = LlmTokenizer {
            source: PathBuf::from("tiny.gguf"),
            tokenizer: spm::gemma_tokenizer(&tokens, &types, &["<bos>", "<eos>"], "<unk>").unwrap(),
            chat_template: Some(CHATML.to_owned()),
            bos_token: Some("<bos>".into()),
            eos_token: Some("<eos>".into()),
            eos_token_ids: vec![1],
            pad_token_id: Some(0),
            add_bos: true,
        };
        tokenizer.use_named_template("gemma").unwrap();
        assert_eq!(tokenizer.chat_template.as_deref(), Some(GEMMA_TURNS));
        assert_eq!(tokenizer.eos_token_ids, [5, 1]);
        let err = tokenizer.use_named_template("chatml").unwrap_err().to_string();
        assert!(err.contains("<|im_start|>") && err.contains("tiny.gguf"), "{err}");
        let err = tokenizer.use_named_template("alpaca").unwrap_err().to_string();
        assert!(err.contains("\"alpaca\"") && err.contains("gemma, chatml"), "{err}");
        assert_eq!(
            tokenizer.chat_template.as_deref(),
            Some(GEMMA_TURNS),
            "a refused name changes nothing"
        );
    }
}
