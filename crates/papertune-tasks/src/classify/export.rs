//! A classifier run as a transformers folder: `AutoModelForSequenceClassification` and
//! `AutoTokenizer` load it (`from_pretrained(DIR)`) and give the run's logits.
//!
//! transformers' heads read the `[CLS]` (`<s>`) state through a tanh layer and one linear
//! layer: BERT's pooler then `classifier`, RoBERTa's `classifier.dense` + tanh then
//! `classifier.out_proj`. papertune's head with `pooling = "pooler"` and no `hidden_layer` is
//! exactly that; the other poolings and the extra layer have no transformers counterpart and
//! are refused. A one-logit BCE head `z` is written as two logits `[0, z]`: softmax gives class
//! 1 the probability sigmoid(z), the BCE run's own.

use std::collections::BTreeMap;
use std::path::Path;

use papertune_models::bert::{BertConfig, BertFlavor};
use papertune_models::checkpoint::{Checkpoint, HostTensor};

use super::config::ClassifyConfig;
use super::head::Pooling;
use crate::error::{TaskError, io_error};
use crate::run_dir::{ENCODER_CONFIG_FILE, RunDir, THRESHOLD_FILE, WEIGHTS_FILE, Which, read_toml};

/// Checks that the run's head is one transformers has: the error names the key that is not.
fn check_head(config: &ClassifyConfig, run: &Path) -> Result<(), TaskError> {
    let refuse = |message: String| Err(TaskError::Run { path: run.to_path_buf(), message });
    if config.head.pooling != Pooling::Pooler {
        let name = serde_json::to_value(config.head.pooling).expect("serialisable");
        return refuse(format!(
            "head.pooling is {name}; transformers' ...ForSequenceClassification classifies the pooled [CLS] state (pooling \"pooler\"), so only such a run can be exported as a transformers folder"
        ));
    }
    if let Some(width) = config.head.hidden_layer {
        return refuse(format!(
            "head.hidden_layer is {width}: a layer transformers' ...ForSequenceClassification does not have, so the run cannot be exported as a transformers folder"
        ));
    }
    Ok(())
}

/// transformers' model class, tokenizer-independent, for an encoder's `model_type`.
fn architecture(model_type: &str) -> &'static str {
    match model_type {
        "roberta" => "RobertaForSequenceClassification",
        "xlm-roberta" => "XLMRobertaForSequenceClassification",
        "camembert" => "CamembertForSequenceClassification",
        _ => "BertForSequenceClassification",
    }
}

/// A `[1, hidden]` / `[1]` classifier as two rows, the first zero: logits `[0, z]`.
fn two_logits(tensor: &HostTensor) -> HostTensor {
    let mut shape = tensor.shape.clone();
    shape[0] = 2;
    let mut data = vec![0.0; tensor.data.len()];
    data.extend_from_slice(&tensor.data);
    HostTensor::new(shape, data)
}

/// The run's tensors under transformers' names for `flavor`'s sequence classifier.
fn hf_tensors(
    checkpoint: &Checkpoint,
    flavor: BertFlavor,
    one_logit: bool,
    path: &Path,
) -> Result<BTreeMap<String, HostTensor>, TaskError> {
    let mut tensors = BTreeMap::new();
    for name in checkpoint.names() {
        if name.ends_with("position_ids") {
            continue;
        }
        let tensor = checkpoint.get(name).expect("listed name");
        let (hf_name, tensor) = match (flavor, name.strip_prefix("classifier.")) {
            (BertFlavor::Bert, Some(_)) => (name.to_owned(), tensor.clone()),
            (BertFlavor::Roberta, Some(rest)) => {
                (format!("classifier.out_proj.{rest}"), tensor.clone())
            }
            (BertFlavor::Roberta, None) if name.starts_with("pooler.dense.") => {
                (name.replacen("pooler.", "classifier.", 1), tensor.clone())
            }
            (BertFlavor::Bert, None) => (format!("bert.{name}"), tensor.clone()),
            (BertFlavor::Roberta, None) => (format!("roberta.{name}"), tensor.clone()),
        };
        let tensor =
            if one_logit && name.starts_with("classifier.") { two_logits(&tensor) } else { tensor };
        tensors.insert(hf_name, tensor);
    }
    let classifier = match flavor {
        BertFlavor::Bert => ["bert.pooler.dense.weight", "classifier.weight"],
        BertFlavor::Roberta => ["classifier.dense.weight", "classifier.out_proj.weight"],
    };
    if let Some(missing) = classifier.iter().find(|n| !tensors.contains_key(**n)) {
        return Err(TaskError::Run {
            path: path.to_path_buf(),
            message: format!(
                "has no tensor for {missing} (expected the pooler and the classifier)"
            ),
        });
    }
    Ok(tensors)
}

/// `config.json`: the encoder's fields, the architecture, the two labels, and papertune's input
/// recipe (`papertune`: template, max_len, threshold) for whoever feeds the model.
fn hf_config(encoder: &BertConfig, config: &ClassifyConfig, threshold: f64) -> serde_json::Value {
    let mut value = serde_json::to_value(encoder).expect("config serialises");
    value["architectures"] = serde_json::json!([architecture(&encoder.model_type)]);
    value["id2label"] = serde_json::json!({"0": "0", "1": "1"});
    value["label2id"] = serde_json::json!({"0": 0, "1": 1});
    value["problem_type"] = "single_label_classification".into();
    value["papertune"] = serde_json::json!({
        "template": config.data.template,
        "text_pair_template": config.data.text_pair_template,
        "max_len": config.model.max_len.min(encoder.max_sequence_len()),
        "threshold": threshold,
        "loss": config.loss.name,
    });
    value
}

/// The special tokens of a `tokenizer.json` that transformers' tokenizer config names, by role.
fn special_tokens(tokenizer: &serde_json::Value, flavor: BertFlavor) -> serde_json::Value {
    let roles: &[(&str, &str)] = match flavor {
        BertFlavor::Bert => &[
            ("cls_token", "[CLS]"),
            ("sep_token", "[SEP]"),
            ("pad_token", "[PAD]"),
            ("unk_token", "[UNK]"),
            ("mask_token", "[MASK]"),
        ],
        BertFlavor::Roberta => &[
            ("bos_token", "<s>"),
            ("cls_token", "<s>"),
            ("eos_token", "</s>"),
            ("sep_token", "</s>"),
            ("pad_token", "<pad>"),
            ("unk_token", "<unk>"),
            ("mask_token", "<mask>"),
        ],
    };
    let added: Vec<&str> = tokenizer["added_tokens"]
        .as_array()
        .map(|tokens| tokens.iter().filter_map(|t| t["content"].as_str()).collect())
        .unwrap_or_default();
    let map: serde_json::Map<String, serde_json::Value> = roles
        .iter()
        .filter(|(_, token)| added.contains(token))
        .map(|(role, token)| ((*role).to_owned(), (*token).into()))
        .collect();
    map.into()
}

/// Writes a classifier run's chosen checkpoint to `out` as a transformers folder:
/// `config.json`, `model.safetensors`, `tokenizer.json`, `tokenizer_config.json` and
/// `special_tokens_map.json`. `out` must not exist; the folder is assembled beside it and
/// renamed into place, so a failure leaves nothing behind.
pub fn export_hf(run: &Path, which: Which, out: &Path) -> Result<(), TaskError> {
    if out.exists() {
        return Err(TaskError::Config(format!(
            "{} already exists; export writes a new file or folder",
            out.display()
        )));
    }
    let dir = RunDir::new(run);
    let config: ClassifyConfig = read_toml(&dir.config())?;
    check_head(&config, run)?;
    let checkpoint_dir = dir.verified_checkpoint(which)?;
    let encoder = BertConfig::read(&checkpoint_dir.join(ENCODER_CONFIG_FILE))?;
    let weights = checkpoint_dir.join(WEIGHTS_FILE);
    let checkpoint = Checkpoint::read(&weights)?;
    let one_logit = config.loss.num_outputs() == 1;
    let tensors = hf_tensors(&checkpoint, encoder.flavor(), one_logit, &weights)?;
    let tuned = checkpoint_dir.join(THRESHOLD_FILE);
    let threshold = if tuned.exists() {
        crate::run_dir::read_json::<super::TunedThreshold>(&tuned)?.threshold
    } else {
        config.head.threshold
    };
    let tokenizer_path = dir.tokenizer();
    let tokenizer_text =
        std::fs::read_to_string(&tokenizer_path).map_err(io_error(&tokenizer_path))?;
    let tokenizer: serde_json::Value =
        serde_json::from_str(&tokenizer_text).map_err(|e| TaskError::Run {
            path: tokenizer_path.clone(),
            message: format!("not a tokenizer.json: {e}"),
        })?;
    let specials = special_tokens(&tokenizer, encoder.flavor());
    let mut tokenizer_config = specials.clone();
    tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast".into();
    // BERT reads the segment of each token (a text pair's second text is segment 1).
    tokenizer_config["model_input_names"] = match encoder.flavor() {
        BertFlavor::Bert => serde_json::json!(["input_ids", "token_type_ids", "attention_mask"]),
        BertFlavor::Roberta => serde_json::json!(["input_ids", "attention_mask"]),
    };
    tokenizer_config["model_max_length"] =
        config.model.max_len.min(encoder.max_sequence_len()).into();

    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let staging = parent.join(format!(".{name}.partial-{}", std::process::id()));
    let json =
        |value: &serde_json::Value| serde_json::to_string_pretty(value).expect("serialisable");
    let write = || -> Result<(), TaskError> {
        std::fs::create_dir_all(&staging).map_err(io_error(&staging))?;
        let metadata = BTreeMap::from([("format".to_owned(), "pt".to_owned())]);
        Checkpoint::from_tensors(staging.join(WEIGHTS_FILE), tensors)
            .write(&staging.join(WEIGHTS_FILE), Some(metadata))?;
        let files = [
            ("config.json", json(&hf_config(&encoder, &config, threshold))),
            ("tokenizer.json", tokenizer_text.clone()),
            ("tokenizer_config.json", json(&tokenizer_config)),
            ("special_tokens_map.json", json(&specials)),
        ];
        for (file, text) in files {
            crate::run_dir::write_atomic(&staging.join(file), text.as_bytes())?;
        }
        std::fs::rename(&staging, out).map_err(io_error(out))
    };
    let outcome = write();
    if outcome.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    if (threshold - 0.5).abs() > 1e-12 {
        tracing::info!(
            "the run labels 1 above probability {threshold}; transformers' argmax labels 1 above 0.5 (config.json keeps the threshold under papertune.threshold)"
        );
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poolings_without_a_transformers_head_are_refused_by_name() {
        let mut config = ClassifyConfig::default();
        assert!(check_head(&config, Path::new("run")).is_ok());
        config.head.pooling = Pooling::ClsMean;
        let err = check_head(&config, Path::new("run")).unwrap_err().to_string();
        assert!(err.contains("head.pooling is \"cls+mean\""), "{err}");
        config.head.pooling = Pooling::Pooler;
        config.head.hidden_layer = Some(256);
        let err = check_head(&config, Path::new("run")).unwrap_err().to_string();
        assert!(err.contains("head.hidden_layer is 256"), "{err}");
    }

    #[test]
    fn names_follow_transformers_and_one_logit_becomes_two() {
        let t = |shape: Vec<usize>, data: Vec<f32>| HostTensor::new(shape, data);
        let tensors = BTreeMap::from([
            ("embeddings.word_embeddings.weight".to_owned(), t(vec![1, 2], vec![1.0, 2.0])),
            ("embeddings.position_ids".to_owned(), t(vec![1], vec![0.0])),
            ("pooler.dense.weight".to_owned(), t(vec![2, 2], vec![1.0; 4])),
            ("classifier.weight".to_owned(), t(vec![1, 2], vec![3.0, 4.0])),
            ("classifier.bias".to_owned(), t(vec![1], vec![5.0])),
        ]);
        let checkpoint = Checkpoint::from_tensors("w", tensors);
        let bert = hf_tensors(&checkpoint, BertFlavor::Bert, true, Path::new("w")).unwrap();
        let names: Vec<&str> = bert.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "bert.embeddings.word_embeddings.weight",
                "bert.pooler.dense.weight",
                "classifier.bias",
                "classifier.weight"
            ]
        );
        assert_eq!(bert["classifier.weight"].shape, vec![2, 2]);
        assert_eq!(bert["classifier.weight"].data, vec![0.0, 0.0, 3.0, 4.0]);
        assert_eq!(bert["classifier.bias"].data, vec![0.0, 5.0]);
        let roberta = hf_tensors(&checkpoint, BertFlavor::Roberta, false, Path::new("w")).unwrap();
        let names: Vec<&str> = roberta.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "classifier.dense.weight",
                "classifier.out_proj.bias",
                "classifier.out_proj.weight",
                "roberta.embeddings.word_embeddings.weight"
            ]
        );
        assert_eq!(roberta["classifier.out_proj.bias"].data, vec![5.0]);
    }
}
