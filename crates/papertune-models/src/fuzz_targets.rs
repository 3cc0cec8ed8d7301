//! Fuzz targets shared by the mutation tests (`fuzz.rs`) and coverage-guided fuzzers (the
//! `fuzz/` crate, with afl.rs): each takes untrusted bytes and must return, never panic.
//! Behind the `test-util` feature.

use std::path::Path;

use crate::gguf::{GgufFile, GgufValue, GgufWriter, llama_checkpoint};
use crate::llama::LlamaConfig;
use crate::llm_tokenizer::LlmTokenizer;

/// A GGUF file read as `generate` and LoRA training read one: the reader, every tensor's
/// dequantisation, the tokenizer rebuilt from the metadata (and one encoding), the Llama config
/// and llama.cpp's name map.
pub fn gguf(bytes: &[u8]) {
    let Ok(file) = GgufFile::parse(Path::new("fuzz.gguf"), bytes.to_vec()) else { return };
    for info in &file.tensors {
        let _ = file.dequantize(info);
    }
    let _ = LlmTokenizer::from_gguf(&file).map(|t| t.encode("ab a", true));
    if let Ok(config) = LlamaConfig::from_gguf(&file) {
        let _ = llama_checkpoint(&file, &config);
    }
}

/// Valid GGUF files to start from: a tiny Llama with a byte-level BPE tokenizer and tensors in
/// F32, Q8_0 and Q4_1, without and with a chat template.
pub fn gguf_seeds() -> Vec<Vec<u8>> {
    vec![llama_gguf(false), llama_gguf(true)]
}

pub(crate) fn ramp(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect()
}

/// A tiny Llama GGUF: metadata, a byte-level BPE tokenizer, and tensors in F32, Q8_0 and Q4_1.
fn llama_gguf(with_chat_template: bool) -> Vec<u8> {
    let mut w = GgufWriter::new();
    let u32v = GgufValue::U32;
    let strings = |items: &[&str]| {
        GgufValue::Array(items.iter().map(|t| GgufValue::String((*t).into())).collect())
    };
    w.metadata("general.architecture", GgufValue::String("llama".into()))
        .metadata("llama.embedding_length", u32v(32))
        .metadata("llama.feed_forward_length", u32v(64))
        .metadata("llama.block_count", u32v(1))
        .metadata("llama.attention.head_count", u32v(2))
        .metadata("llama.attention.head_count_kv", u32v(1))
        .metadata("llama.context_length", u32v(64))
        .metadata("llama.attention.layer_norm_rms_epsilon", GgufValue::F32(1e-5))
        .metadata("tokenizer.ggml.model", GgufValue::String("gpt2".into()))
        .metadata("tokenizer.ggml.tokens", strings(&["a", "b", "ab", "<s>"]))
        .metadata("tokenizer.ggml.merges", strings(&["a b"]))
        .metadata("tokenizer.ggml.eos_token_id", u32v(3));
    if with_chat_template {
        w.metadata(
            "tokenizer.chat_template",
            GgufValue::String("{% for m in messages %}{{ m['content'] }}{% endfor %}".into()),
        );
    }
    w.tensor_q8_0("token_embd.weight", &[4, 32], &ramp(128))
        .tensor_f32("output_norm.weight", &[32], &ramp(32))
        .tensor_f32("blk.0.attn_norm.weight", &[32], &ramp(32))
        .tensor_q4_1("blk.0.attn_q.weight", &[32, 32], &ramp(1024))
        .tensor_q8_0("blk.0.attn_k.weight", &[16, 32], &ramp(512));
    w.to_bytes()
}
