"""Reference outputs of Gemma 3 270M (GGUF, Q4_K_M) from Python's transformers.

Writes tests/fixtures/gemma3_reference.json for papertune's Gemma 3 parity test, in the layout
of scripts/make_smollm2_reference.py (whose helpers and strings it reuses):

- "tokenizer": the same 20 strings plus Gemma's turn markers, with transformers' ids
  (`tok(text).input_ids`, BOS first) and `tok.decode(ids)`. transformers rebuilds the
  SentencePiece vocabulary of the file's metadata (scores, token types, byte fallback).
- "continuation": the plain prompt "The capital of France is" and exactly 20 argmax tokens taken
  one at a time with the KV cache, EOS ignored. The file is the pretrained base model and has no
  chat template, so there is no chat case.
- "logits": the three plain prompts of the SmolLM2 reference: for the last position the 50
  highest logits, every 16th logit, and their mean and population std.
- "meta": library versions, the file's sha256 and the config transformers built from it.

transformers dequantises every tensor to float32 when loading, so these are the outputs of the
dequantised model (papertune's `--dequantize` path).

Usage:
    python3 scripts/make_gemma3_reference.py [--gguf PATH] [--out PATH]

--gguf defaults to $PAPERTUNE_CACHE (or ~/.cache/papertune) joined with
models/gemma3-270m/gemma-3-270m-q4_k_m.gguf. Needs torch, transformers 5.24 and gguf.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_smollm2_reference import (  # noqa: E402
    LOGIT_PROMPTS,
    REPO_ROOT,
    TOKENIZER_TEXTS,
    continuation_record,
    default_gguf,
    dumps,
    load_gguf,
    logit_record,
    meta_record,
)

GGUF_RELATIVE = "models/gemma3-270m/gemma-3-270m-q4_k_m.gguf"
CONTINUATION_PROMPT = "The capital of France is"
# Gemma's turn markers are control tokens of its vocabulary; the SmolLM2 list's ChatML line is not.
EXTRA_TEXTS = ["<start_of_turn>user\nName three rivers.<end_of_turn>\n<start_of_turn>model\n"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", type=Path, default=default_gguf(GGUF_RELATIVE))
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "tests/fixtures/gemma3_reference.json")
    args = parser.parse_args()
    torch.set_num_threads(2)

    tok, model = load_gguf(args.gguf)

    tokenizer = []
    for text in TOKENIZER_TEXTS + EXTRA_TEXTS:
        ids = tok(text, add_special_tokens=True).input_ids
        tokenizer.append({"text": text, "ids": ids, "decoded": tok.decode(ids)})

    continuation = continuation_record(model, tok, CONTINUATION_PROMPT)

    keys = (
        "model_type",
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "rms_norm_eps",
        "query_pre_attn_scalar",
        "sliding_window",
        "layer_types",
        "hidden_activation",
        "final_logit_softcapping",
        "attn_logit_softcapping",
        "tie_word_embeddings",
        "rope_parameters",
    )
    reference = {
        "meta": meta_record(args.gguf, model, keys),
        "tokenizer": tokenizer,
        "continuation": continuation,
        "logits": [logit_record(model, tok, prompt) for prompt in LOGIT_PROMPTS],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(dumps(reference) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    print("continuation:", repr(continuation["greedy_text"]))


if __name__ == "__main__":
    main()
