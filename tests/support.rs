//! Helpers shared by the integration tests: tiny tokenizers and models written to disk, so that
//! tests run the same loading code as real checkpoints.

use std::path::{Path, PathBuf};

use papertune_models::bert::BertConfig;
use papertune_models::init::random_bert_checkpoint;

/// A file or folder under `tests/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

/// A JSON file, read and parsed (panics naming the file).
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Special tokens first, in BERT's order of ids 0..5.
const SPECIAL: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// `added_tokens` entries of a tokenizer.json: the special tokens with ids 0, 1, ...
fn added_tokens(specials: &[&str]) -> Vec<serde_json::Value> {
    specials
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                               "rstrip": false, "normalized": false, "special": true})
        })
        .collect()
}

/// Writes a BERT-style WordPiece `tokenizer.json` (lowercasing, `[CLS] a [SEP] b [SEP]`) whose
/// vocabulary is the special tokens followed by `words`.
pub fn write_wordpiece_tokenizer(path: &Path, words: &[&str]) {
    let vocab: serde_json::Map<String, serde_json::Value> = SPECIAL
        .iter()
        .chain(words)
        .enumerate()
        .map(|(i, w)| (w.to_string(), serde_json::json!(i)))
        .collect();
    let added = added_tokens(&SPECIAL);
    let special =
        |t: &str, type_id: u32| serde_json::json!({"SpecialToken": {"id": t, "type_id": type_id}});
    let sequence =
        |s: &str, type_id: u32| serde_json::json!({"Sequence": {"id": s, "type_id": type_id}});
    let tokenizer = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [special("[CLS]", 0), sequence("A", 0), special("[SEP]", 0)],
            "pair": [special("[CLS]", 0), sequence("A", 0), special("[SEP]", 0), sequence("B", 1), special("[SEP]", 1)],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}
            }
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}
    });
    std::fs::write(path, serde_json::to_string_pretty(&tokenizer).unwrap()).unwrap();
}

/// Writes a randomly initialised tiny BERT checkpoint folder (config.json, model.safetensors,
/// tokenizer.json) for `words`, and returns its configuration.
pub fn write_tiny_bert(dir: &Path, words: &[&str], seed: u64) -> BertConfig {
    std::fs::create_dir_all(dir).unwrap();
    let config = BertConfig::tiny(SPECIAL.len() + words.len());
    config.write(&dir.join("config.json")).unwrap();
    random_bert_checkpoint(&config, seed).write(&dir.join("model.safetensors"), None).unwrap();
    write_wordpiece_tokenizer(&dir.join("tokenizer.json"), words);
    config
}

pub const MEDICAL: [&str; 8] =
    ["patient", "clinical", "therapy", "cardiac", "surgery", "dose", "tumor", "hospital"];
pub const TECHNICAL: [&str; 8] =
    ["graph", "algorithm", "network", "compiler", "protocol", "cache", "parser", "kernel"];

/// 32 rows: label 1 draws words from MEDICAL, label 0 from TECHNICAL; shared filler words.
pub fn write_synthetic_rows(path: &Path) {
    let filler = ["study", "results", "method"];
    let mut csv = String::from("uuid,title,author,abstract,Keywords,label,source\n");
    for i in 0..32 {
        let label = i % 2;
        let words = if label == 1 { &MEDICAL } else { &TECHNICAL };
        let title = format!("{} {}", words[i % 8], filler[i % 3]);
        let abstract_text = format!(
            "{} {} {} {}",
            words[(i + 3) % 8],
            filler[(i + 1) % 3],
            words[(i + 5) % 8],
            filler[(i + 2) % 3]
        );
        csv.push_str(&format!("id{i},{title},\"A, B\",{abstract_text},k1; k2,{label},synthetic\n"));
    }
    std::fs::write(path, csv).unwrap();
}

/// The vocabulary of the synthetic rows.
pub fn synthetic_words() -> Vec<&'static str> {
    MEDICAL
        .iter()
        .chain(&TECHNICAL)
        .chain(&["study", "results", "method", "a", "b"])
        .copied()
        .collect()
}

/// Special tokens of the tiny chat tokenizer, ids 0..3.
pub const LLM_SPECIAL: [&str; 3] = ["[UNK]", "<|im_start|>", "<|im_end|>"];

/// ChatML without a default system message.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Writes a tiny causal LM folder: a word-level tokenizer over `words` (plus chat words and
/// punctuation) with a ChatML template in `tokenizer_config.json`, and a random Llama checkpoint
/// sized to it. Returns the vocabulary size.
pub fn write_tiny_llm(dir: &Path, words: &[&str], seed: u64) -> usize {
    std::fs::create_dir_all(dir).unwrap();
    let chat_words = [
        "system",
        "user",
        "assistant",
        "title",
        "author",
        "abstract",
        "answer",
        ":",
        ",",
        "-->",
        "0",
        "1",
    ];
    let mut vocab_words: Vec<&str> = LLM_SPECIAL.to_vec();
    for w in chat_words.iter().chain(words) {
        if !vocab_words.contains(w) {
            vocab_words.push(w);
        }
    }
    let vocab: serde_json::Map<String, serde_json::Value> = vocab_words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), serde_json::json!(i)))
        .collect();
    let added = added_tokens(&LLM_SPECIAL);
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    });
    std::fs::write(dir.join("tokenizer.json"), serde_json::to_string_pretty(&tokenizer).unwrap())
        .unwrap();
    let tokenizer_config = serde_json::json!({
        "chat_template": CHATML_TEMPLATE, "eos_token": "<|im_end|>", "pad_token": "<|im_end|>", "bos_token": null
    });
    std::fs::write(dir.join("tokenizer_config.json"), tokenizer_config.to_string()).unwrap();
    let mut config = papertune_models::llama::LlamaConfig::tiny();
    config.vocab_size = vocab_words.len();
    config.eos_token_ids = vec![2];
    config.pad_token_id = Some(2);
    config.bos_token_id = None;
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config.to_hf_json()).unwrap(),
    )
    .unwrap();
    // A frozen tied embedding of std 0.02 bounds the logits of a 32-wide model to about +-0.6, too
    // flat to overfit anything; std 0.2 lets the adapters reach confident answers.
    let mut checkpoint = papertune_models::init::random_llama_checkpoint(&config, seed);
    let mut embedding = checkpoint.remove("model.embed_tokens.weight").unwrap();
    embedding.data.iter_mut().for_each(|v| *v *= 10.0);
    checkpoint.insert("model.embed_tokens.weight", embedding);
    checkpoint.write(&dir.join("model.safetensors"), None).unwrap();
    vocab_words.len()
}

/// A backend the tests run on, with the tolerance of its parity checks.
pub struct TestBackend {
    pub name: &'static str,
    pub device: burn::tensor::Device,
    /// Largest absolute difference allowed against transformers' float32 outputs.
    pub tolerance: f32,
}

/// Whether the environment insists on a backend (`PAPERTUNE_REQUIRE_BACKENDS=wgpu,cuda`): CI sets
/// it so that a missing driver fails instead of skipping.
pub fn backend_required(name: &str) -> bool {
    std::env::var("PAPERTUNE_REQUIRE_BACKENDS")
        .is_ok_and(|list| list.split(',').any(|b| b.trim() == name))
}

/// A device that computes: creating it and summing a tensor must not panic (no adapter, no
/// driver).
#[allow(dead_code)]
fn usable(
    make: impl FnOnce() -> burn::tensor::Device + std::panic::UnwindSafe,
) -> Result<burn::tensor::Device, String> {
    std::panic::catch_unwind(|| {
        let device = make();
        let sum: f32 = burn::tensor::Tensor::<1>::ones([4], &device).sum().into_scalar();
        assert_eq!(sum, 4.0);
        device
    })
    .map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

/// Every backend compiled into this test build that can run here: the CPU backends always,
/// wgpu (feature `wgpu`) when a Vulkan/Metal/DX12 adapter answers, CUDA (feature `cuda`) when an
/// NVIDIA driver is present.
pub fn test_backends() -> Vec<TestBackend> {
    #[allow(deprecated)]
    let ndarray = burn::tensor::Device::ndarray();
    #[allow(unused_mut)] // pushed to only with the wgpu or cuda feature
    let mut backends = vec![
        TestBackend { name: "flex", device: burn::tensor::Device::flex(), tolerance: 1e-4 },
        TestBackend { name: "ndarray", device: ndarray, tolerance: 1e-4 },
    ];
    #[cfg(feature = "wgpu")]
    match usable(|| burn::tensor::Device::wgpu(Default::default())) {
        // GPU kernels sum in another order (and the CPU fallback adapter too).
        Ok(device) => backends.push(TestBackend { name: "wgpu", device, tolerance: 1e-3 }),
        Err(e) if backend_required("wgpu") => {
            panic!("wgpu is required here but has no usable adapter: {e}")
        }
        Err(e) => eprintln!("wgpu compiled in but skipped: no usable adapter ({e})"),
    }
    #[cfg(feature = "cuda")]
    {
        let driver = Path::new("/proc/driver/nvidia/version").exists();
        match driver.then(|| usable(|| burn::tensor::Device::cuda(0))) {
            Some(Ok(device)) => {
                backends.push(TestBackend { name: "cuda", device, tolerance: 1e-3 })
            }
            Some(Err(e)) if backend_required("cuda") => {
                panic!("cuda is required here but does not run: {e}")
            }
            None if backend_required("cuda") => {
                panic!("cuda is required here but no NVIDIA driver is present")
            }
            Some(Err(e)) => eprintln!("cuda compiled in but skipped: {e}"),
            None => eprintln!("cuda compiled in but skipped: no NVIDIA driver"),
        }
    }
    backends
}

/// A tiny random encoder (seed `seed`) and the 32 synthetic rows written under `dir`, with a
/// classification config that trains on them: `(config, rows.csv)`. Tests set what they vary.
pub fn tiny_classify_setup(
    dir: &Path,
    seed: u64,
    max_len: usize,
) -> (papertune_tasks::classify::ClassifyConfig, std::path::PathBuf) {
    let model_dir = dir.join("tiny-bert");
    write_tiny_bert(&model_dir, &synthetic_words(), seed);
    let data = dir.join("rows.csv");
    write_synthetic_rows(&data);
    let mut config = papertune_tasks::classify::ClassifyConfig::default();
    config.data.train = Some(data.clone());
    config.model.source = model_dir.to_string_lossy().into_owned();
    config.model.max_len = max_len;
    (config, data)
}
