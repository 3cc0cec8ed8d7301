#!/usr/bin/env python3
"""Writes papertune's catalogue of crafted input files into a folder (the first argument).

Each file is made to break a reader that trusts sizes or names from its input: GGUF headers
with counts and offsets far past the file, safetensors headers that lie, model configs with
zero or impossible values, an index and a k-fold list that point outside their folder, and
tables with bad cells. `replay.sh` runs the built binary on each and requires a clean error.
Standard library only.
"""

import json
import struct
import sys
from pathlib import Path


def gguf_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def gguf(kv: list[bytes], tensors: list[bytes], tail: bytes = b"") -> bytes:
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv))
    return head + b"".join(kv) + b"".join(tensors) + tail


def kv_u64(key: str, value: int) -> bytes:
    return gguf_string(key) + struct.pack("<IQ", 10, value)


def kv_u32(key: str, value: int) -> bytes:
    return gguf_string(key) + struct.pack("<II", 4, value)


def kv_f32(key: str, value: float) -> bytes:
    return gguf_string(key) + struct.pack("<If", 6, value)


def kv_str(key: str, value: str) -> bytes:
    return gguf_string(key) + struct.pack("<I", 8) + gguf_string(value)


def kv_strings(key: str, values: list[str]) -> bytes:
    return gguf_string(key) + struct.pack("<IIQ", 9, 8, len(values)) + b"".join(gguf_string(v) for v in values)


def tensor_info(name: str, dims: list[int], ggml_type: int = 0, offset: int = 0) -> bytes:
    return gguf_string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", ggml_type, offset)


def llama_metadata(block_count: int) -> list[bytes]:
    return [
        kv_str("general.architecture", "llama"),
        kv_u32("llama.embedding_length", 8),
        kv_u32("llama.feed_forward_length", 16),
        kv_u64("llama.block_count", block_count),
        kv_u32("llama.attention.head_count", 2),
        kv_u32("llama.attention.head_count_kv", 1),
        kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5),
        kv_str("tokenizer.ggml.model", "gpt2"),
        kv_strings("tokenizer.ggml.tokens", ["a", "b", "ab"]),
        kv_strings("tokenizer.ggml.merges", ["a b"]),
    ]


def write_ggufs(out: Path) -> None:
    deep = gguf_string("deep") + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 1_000_000
    (out / "gguf-nested-arrays.gguf").write_bytes(gguf([deep], []))
    long = gguf_string("long") + struct.pack("<IIQ", 9, 0, 1 << 40)
    (out / "gguf-array-count.gguf").write_bytes(gguf([long], []))
    (out / "gguf-u8-array-64mib.gguf").write_bytes(gguf([gguf_string("bytes") + struct.pack("<IIQ", 9, 0, 64 << 20) + bytes(64 << 20)], []))
    (out / "gguf-dims-overflow.gguf").write_bytes(gguf([], [tensor_info("w", [1 << 32, 1 << 32])]))
    (out / "gguf-offset-max.gguf").write_bytes(gguf([], [tensor_info("w", [4], 0, (1 << 64) - 1)]))
    (out / "gguf-alignment-max.gguf").write_bytes(gguf([kv_u64("general.alignment", (1 << 64) - 1)], []))
    (out / "gguf-block-count.gguf").write_bytes(gguf(llama_metadata(1 << 40), [tensor_info("token_embd.weight", [8, 3])], bytes(128)))
    zero_dim_q = [tensor_info("token_embd.weight", [8, 3]), tensor_info("blk.0.attn_q.weight", [], 0, 96)]
    (out / "gguf-zero-dim-query.gguf").write_bytes(gguf(llama_metadata(1), zero_dim_q, bytes(256)))
    (out / "gguf-truncated.gguf").write_bytes(gguf([], [tensor_info("w", [1024])])[:-3])
    (out / "gguf-not-gguf.gguf").write_bytes(b"GGML" + bytes(60))


def safetensors(header: bytes, body: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + body


def write_encoder_folders(out: Path) -> None:
    """Encoder folders (config.json, tokenizer.json, model.safetensors) broken one way each."""
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4, "a": 5}
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": None, "pre_tokenizer": {"type": "BertPreTokenizer"}, "post_processor": None, "decoder": None,
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": vocab},
    }
    config = {
        "model_type": "bert", "vocab_size": 6, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 16, "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": 16, "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0,
    }
    cases = {
        "config-zero-heads": ({"num_attention_heads": 0}, None),
        "config-dropout-one": ({"hidden_dropout_prob": 1.0}, None),
        "safetensors-header-length": ({}, struct.pack("<Q", (1 << 64) - 1) + b"{}"),
        "safetensors-offsets-outside": ({}, safetensors(json.dumps({"x": {"dtype": "F32", "shape": [1 << 20], "data_offsets": [0, 4 << 20]}}).encode(), bytes(16))),
    }
    for name, (changes, weights) in cases.items():
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps({**config, **changes}))
        (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
        (folder / "model.safetensors").write_bytes(weights if weights is not None else safetensors(b"{}"))
    index = out / "safetensors-index-escape"
    index.mkdir(exist_ok=True)
    (index / "config.json").write_text(json.dumps(config))
    (index / "tokenizer.json").write_text(json.dumps(tokenizer))
    (index / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "../../../../etc/passwd"}}))


def write_tables(out: Path) -> None:
    (out / "papers-bad-label.csv").write_text("uuid,title,abstract,label\nq,T,A,medical\n")
    (out / "papers-no-title.csv").write_text("uuid,abstract,label\nq,A,1\n")
    (out / "papers-empty.csv").write_text("uuid,title,abstract,label\n")
    (out / "papers-binary.csv").write_bytes(b"\xff\xfe\x00\x01" * 64)
    (out / "papers-6mb-cell.csv").write_text("uuid,title,abstract,label\nq,T," + "x" * (6 << 20) + ",1\n")
    folds = out / "folds-escape"
    folds.mkdir(exist_ok=True)
    (folds / "folds.json").write_text(json.dumps(["../../../../etc"]))
    (out / "config-nan-clip.toml").write_text('[model]\nsource = "minilm"\n[train]\nmax_grad_norm = nan\n')
    (out / "config-unknown-key.toml").write_text('[train]\nlearning_rate = 1e-4\n')
    (out / "keywords.csv").write_text("uuid,title,abstract,Keywords\nq,Graph kernels,Graph kernels compare graphs.,graph kernels\n")
    for name, idf in [("kw-idf-ngrams", {"documents": 2, "max_ngram": 99, "df": {"graph": 1}}),
                      ("kw-idf-counts", {"documents": 18446744073709551615, "max_ngram": 3, "df": {"graph": 4294967295}})]:
        run = out / name
        run.mkdir(exist_ok=True)
        (run / "config.toml").write_text('[method]\nname = "tfidf"\n')
        (run / "idf.json").write_text(json.dumps(idf))
    run = out / "kw-top-k"
    run.mkdir(exist_ok=True)
    (run / "config.toml").write_text('[method]\nname = "yake"\ntop_k = 18446744073709551615\n')


def write_message_cases(out: Path) -> None:
    """Inputs whose errors (or summaries) must speak papertune's words: a CSV row with more
    fields than its header, a keyword extractor's run config, and a run folder whose adapter
    sits in `last/`."""
    (out / "papers-ragged.csv").write_text("uuid,title,abstract,label\nq,T,A,1\nr,T,A, B,1\n")
    (out / "config-kw-yake.toml").write_text(
        f'[data]\ntrain = "{out / "keywords.csv"}"\nvalid = "{out / "keywords.csv"}"\n[method]\nname = "yake"\n')
    run = out / "lora-run"
    (run / "last").mkdir(parents=True, exist_ok=True)
    (run / "config.toml").write_text('[model]\nsource = "smollm2-135m"\n[lora]\nr = 2\n')
    adapter = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 2, "lora_alpha": 4.0, "lora_dropout": 0.0,
               "target_modules": ["q_proj"], "bias": "none"}
    (run / "last" / "adapter_config.json").write_text(json.dumps(adapter))


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    write_ggufs(out)
    write_encoder_folders(out)
    write_tables(out)
    write_message_cases(out)


if __name__ == "__main__":
    main()
