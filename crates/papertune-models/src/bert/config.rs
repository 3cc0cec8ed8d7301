//! `config.json` of BERT-family checkpoints (BERT, RoBERTa, XLM-RoBERTa, MiniLM), as Hugging Face
//! writes it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// Which member of the BERT family a checkpoint is; decides position ids and tensor prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BertFlavor {
    /// BERT, MiniLM, and other `model_type: "bert"` checkpoints: positions start at 0.
    Bert,
    /// RoBERTa and XLM-RoBERTa: positions start at `pad_token_id + 1`, one token type.
    Roberta,
}

/// The fields of `config.json` that define a BERT-family encoder. Unknown fields are ignored
/// (checkpoints carry many that do not change the architecture).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    #[serde(default = "default_model_type")]
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: usize,
    #[serde(default = "default_position_embedding_type")]
    pub position_embedding_type: String,
}

fn default_model_type() -> String {
    "bert".into()
}
fn default_hidden_act() -> String {
    "gelu".into()
}
fn default_dropout() -> f64 {
    0.1
}
fn default_max_positions() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_position_embedding_type() -> String {
    "absolute".into()
}

impl BertConfig {
    /// Reads and checks `config.json`.
    pub fn read(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(ModelError::NotFound { path: path.to_path_buf() });
        }
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let config: Self = serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: path.to_path_buf(),
            message: format!("not a BERT config: {e}"),
        })?;
        config
            .validate()
            .map_err(|message| ModelError::Config { path: path.to_path_buf(), message })?;
        Ok(config)
    }

    /// Checks the values papertune's encoder supports.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !matches!(self.model_type.as_str(), "bert" | "roberta" | "xlm-roberta" | "camembert") {
            return Err(format!(
                "model_type {:?} is not a BERT-family encoder (expected bert, roberta, xlm-roberta or camembert)",
                self.model_type
            ));
        }
        crate::config_checks::sizes(&[
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ])?;
        for (key, value) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            ("attention_probs_dropout_prob", self.attention_probs_dropout_prob),
        ] {
            if !(0.0..1.0).contains(&value) {
                return Err(format!("{key} must be in [0, 1), found {value}"));
            }
        }
        if !(self.layer_norm_eps > 0.0 && self.layer_norm_eps.is_finite()) {
            return Err(format!("layer_norm_eps must be positive, found {}", self.layer_norm_eps));
        }
        if self.pad_token_id >= self.vocab_size {
            return Err(format!(
                "pad_token_id {} is outside the vocabulary of {}",
                self.pad_token_id, self.vocab_size
            ));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !matches!(self.hidden_act.as_str(), "gelu" | "gelu_new" | "gelu_pytorch_tanh" | "relu") {
            return Err(format!(
                "hidden_act {:?} is not supported (gelu, gelu_new, relu)",
                self.hidden_act
            ));
        }
        if self.position_embedding_type != "absolute" {
            return Err(format!(
                "position_embedding_type {:?} is not supported (absolute only)",
                self.position_embedding_type
            ));
        }
        if self.type_vocab_size == 0 {
            return Err("type_vocab_size must be at least 1".into());
        }
        Ok(())
    }

    /// The family member, from `model_type`.
    pub fn flavor(&self) -> BertFlavor {
        match self.model_type.as_str() {
            "roberta" | "xlm-roberta" | "camembert" => BertFlavor::Roberta,
            _ => BertFlavor::Bert,
        }
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The longest input the position table allows (RoBERTa reserves `pad_token_id + 1` slots).
    pub fn max_sequence_len(&self) -> usize {
        match self.flavor() {
            BertFlavor::Bert => self.max_position_embeddings,
            BertFlavor::Roberta => {
                self.max_position_embeddings.saturating_sub(self.pad_token_id + 1)
            }
        }
    }

    /// A tiny configuration for tests and examples.
    pub fn tiny(vocab_size: usize) -> Self {
        Self {
            model_type: "bert".into(),
            vocab_size,
            hidden_size: 32,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 64,
            hidden_act: "gelu".into(),
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            max_position_embeddings: 128,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
            position_embedding_type: "absolute".into(),
        }
    }

    /// Writes the configuration as `config.json`.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut value = serde_json::to_value(self).expect("config serialises");
        let architecture = match self.flavor() {
            BertFlavor::Bert => "BertModel",
            BertFlavor::Roberta => "RobertaModel",
        };
        value["architectures"] = serde_json::json!([architecture]);
        let text = serde_json::to_string_pretty(&value).expect("config serialises");
        crate::checkpoint::write_atomic(path, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_minilm_like_config_and_ignores_extra_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"architectures":["BertModel"],"model_type":"bert","vocab_size":30522,"hidden_size":384,
                "num_hidden_layers":6,"num_attention_heads":12,"intermediate_size":1536,
                "hidden_act":"gelu","max_position_embeddings":512,"type_vocab_size":2,
                "layer_norm_eps":1e-12,"pad_token_id":0,"gradient_checkpointing":false}"#,
        )
        .unwrap();
        let config = BertConfig::read(&path).unwrap();
        assert_eq!(config.head_dim(), 32);
        assert_eq!(config.flavor(), BertFlavor::Bert);
        assert_eq!(config.max_sequence_len(), 512);
    }

    #[test]
    fn roberta_reserves_padding_positions() {
        let config = BertConfig {
            model_type: "roberta".into(),
            max_position_embeddings: 514,
            pad_token_id: 1,
            type_vocab_size: 1,
            ..BertConfig::tiny(100)
        };
        assert_eq!(config.flavor(), BertFlavor::Roberta);
        assert_eq!(config.max_sequence_len(), 512);
    }

    #[test]
    fn rejects_other_architectures_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let mut value = serde_json::to_value(BertConfig::tiny(10)).unwrap();
        value["model_type"] = "llama".into();
        std::fs::write(&path, value.to_string()).unwrap();
        let err = BertConfig::read(&path).unwrap_err().to_string();
        assert!(err.contains("config.json") && err.contains("llama"), "{err}");
    }

    #[test]
    fn rejects_zero_sizes_and_certain_dropout_before_any_arithmetic() {
        let refused = |edit: fn(&mut BertConfig)| {
            let mut config = BertConfig::tiny(10);
            edit(&mut config);
            config.validate().unwrap_err()
        };
        assert_eq!(
            refused(|c| c.num_attention_heads = 0),
            "num_attention_heads must be at least 1"
        );
        assert!(
            refused(|c| c.hidden_dropout_prob = 1.0)
                .contains("hidden_dropout_prob must be in [0, 1)")
        );
        assert!(
            refused(|c| c.attention_probs_dropout_prob = f64::NAN)
                .contains("attention_probs_dropout_prob")
        );
        assert!(refused(|c| c.layer_norm_eps = 0.0).contains("layer_norm_eps"));
        assert!(refused(|c| c.pad_token_id = 10).contains("pad_token_id 10"));
    }
}
