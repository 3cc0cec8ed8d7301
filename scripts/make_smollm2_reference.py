"""Reference outputs of SmolLM2-135M-Instruct (GGUF, Q4_1) from Python's transformers.

Writes tests/fixtures/smollm2_reference.json for papertune's Llama-decoder parity tests:

- "tokenizer": 20 hand-written strings with their ids (`tok(text).input_ids`) and `tok.decode(ids)`.
  transformers builds the GGUF tokenizer with the plain GPT-2 byte-level regex, because it has no
  entry for the file's pre-tokenizer "smollm". llama.cpp (and SmolLM2's own tokenizer.json) first
  isolate every \p{N} character, which changes a few ids: a run of spaces before a digit, or a
  space before a non-ASCII numeral such as "½". Where the two differ, the entry also carries
  "ids_llama_cpp", the ids with digits isolated first.
- "chat": one user message rendered with the file's chat template, its ids, and the greedy reply
  from `model.generate(max_new_tokens=20, do_sample=False)`; stops after EOS (id 2), which is then
  the last id kept.
- "continuation": a plain prompt and exactly 20 argmax tokens taken one at a time with the KV
  cache, EOS ignored.
- "logits": three plain prompts (about 5, 30 and 120 tokens). For the last position: the 50
  highest logits as [id, logit], the logits of ids 0, 16, 32, ... ("strided", 3072 values), and
  the mean and population std (ddof=0) over all 49152 logits. Floats have 6 significant digits.
- "meta": library versions, the GGUF file's sha256 and the config transformers built from it.

transformers dequantises every tensor to float32 when loading (gguf-py's numpy dequantiser), so
these are the outputs of the dequantised model in float32, not of llama.cpp's quantised kernels.

Usage:
    python3 scripts/make_smollm2_reference.py [--gguf PATH] [--out PATH]

--gguf defaults to $PAPERTUNE_CACHE (or ~/.cache/papertune) joined with
models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf. It runs on the CPU with one
thread and takes about a minute, most of it in loading.
"""

import argparse
import hashlib
import json
import os
from importlib.metadata import version
from pathlib import Path

import torch
from tokenizers import Tokenizer, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, GgufConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
GGUF_RELATIVE = "models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf"
EOS_ID = 2

TOKENIZER_TEXTS = [
    "Small models can be fine-tuned on a laptop in an afternoon.",
    "   three leading spaces and two trailing  ",
    "gaps    of  four   and   3 spaces",
    "first line\nsecond line\n\nfourth line after a blank\n",
    "name\tscore\tnote\n\tindented with a tab",
    "In 2021 the ratio was 3.14, up from 2.718 in 1999; n = 10000.",
    "Release v0.12.3 shipped on 2024-11-05 at 17:30 (UTC+1).",
    "Wait... really?! Yes: (a) [b] {c} <d> \"e\" 'f' #g @h $9.99 50% x&y ~z",
    "Café au lait, crème brûlée, naïve façade, Müller's Übung, señor.",
    "Greek αβγ Ελληνικά, Russian Привет, Chinese 你好世界, Japanese こんにちは",
    "Emoji 🙂 rocket 🚀 thumbs 👍🏽 family 👨‍👩‍👧 and a check ✓",
    "anti-inflammatory beta-lactamase-producing non-small-cell carcinoma",
    "Write to ada.lovelace+notes@example-lab.org or visit https://example.org/a?b=c",
    "<|im_start|>user\nhi<|im_end|>",
    "CRISPR-Cas9 raised IL-6 and TNF-α 2.5-fold (p < 0.001, n=48).",
    "I'm sure they'll say it's fine, but we'd rather you didn't.",
    "snake_case_name, camelCaseName, SCREAMING_CASE and Title Case",
    "x² + y² = r², ½ cup, 3×4, €15 and ¥200",
    "def add(a, b):\n    return a + b  # sum\n",
    "a",
]

CHAT_MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]

CONTINUATION_PROMPT = "The best way to learn a new programming language is"

LOGIT_PROMPTS = [
    "The weather today is",
    "Researchers measured the growth of tomato plants under three kinds of light for six "
    "weeks in a greenhouse. Compared with the others, the plants that received blue light grew",
    "A small bakery opened on the corner of our street last spring. At first, only a few "
    "neighbours stopped by in the mornings to buy bread and coffee, but word spread quickly. "
    "By the summer there was a queue outside the door before it opened, and the owner had "
    "hired two more people to help with the baking. Even on rainy days the little shop was full. She told me that the secret was not a "
    "special recipe but patience: every loaf rests overnight before it goes into the oven. "
    "When I asked what she planned to do next, she smiled and said that she wanted to",
]


def default_gguf(relative: str = GGUF_RELATIVE) -> Path:
    """A GGUF file in papertune's cache ($PAPERTUNE_CACHE or ~/.cache/papertune)."""
    cache = os.environ.get("PAPERTUNE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "papertune")
    return Path(cache) / relative


def meta_record(path: Path, model, config_keys: tuple) -> dict:
    """Library versions, the GGUF file's name and sha256, and the config transformers built."""
    return {
        "transformers": version("transformers"),
        "torch": version("torch"),
        "gguf": version("gguf"),
        "gguf_file": path.name,
        "gguf_sha256": sha256(path),
        "dtype": "float32",
        "config": {key: getattr(model.config, key, None) for key in config_keys},
    }


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sig(value: float, digits: int = 6) -> float:
    return float(f"{value:.{digits}g}")


def load_gguf(path: Path):
    """transformers' tokenizer and float32 model of a GGUF file. dequantize=True: plain float32
    weights even where transformers could keep GGUF blocks packed."""
    directory, name = str(path.parent), path.name
    tok = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        directory,
        gguf_file=name,
        dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True),
    ).eval()
    return tok, model


def digits_first(tok) -> Tokenizer:
    """A copy of `tok`'s backend that isolates each \\p{N} character before the byte-level regex."""
    backend = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    return backend


def last_logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, -1]


def greedy_continuation(model, ids: list[int], steps: int) -> list[int]:
    """Argmax decoding with the KV cache, `steps` tokens, never stopping at EOS."""
    new, cache, inputs = [], DynamicCache(config=model.config), torch.tensor([ids])
    with torch.no_grad():
        for _ in range(steps):
            out = model(inputs, cache=cache, use_cache=True)
            next_id = int(out.logits[0, -1].argmax())
            new.append(next_id)
            inputs = torch.tensor([[next_id]])
    return new


def continuation_record(model, tok, prompt: str) -> dict:
    """A prompt's ids and its 20 greedy tokens (EOS ignored), with their text."""
    ids = tok(prompt).input_ids
    new = greedy_continuation(model, ids, 20)
    return {"prompt": prompt, "prompt_ids": ids, "greedy_ids": new, "greedy_text": tok.decode(new, skip_special_tokens=False)}


def logit_record(model, tok, prompt: str) -> dict:
    ids = tok(prompt).input_ids
    logits = last_logits(model, ids)
    top = torch.topk(logits, 50)
    return {
        "prompt": prompt,
        "ids": ids,
        "top": [[int(i), sig(v)] for v, i in zip(top.values.tolist(), top.indices.tolist())],
        "strided": [sig(v) for v in logits[::16].tolist()],
        "mean": sig(logits.mean().item()),
        "std": sig(logits.std(correction=0).item()),
    }


def dumps(value, indent: int = 0) -> str:
    """JSON with objects indented and every list on one line."""
    if isinstance(value, dict) and value:
        pad = "  " * (indent + 1)
        items = [f"{pad}{json.dumps(k)}: {dumps(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    if isinstance(value, list) and value and isinstance(value[0], dict):
        pad = "  " * (indent + 1)
        items = [pad + dumps(v, indent + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + "  " * indent + "]"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", type=Path, default=default_gguf())
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "tests/fixtures/smollm2_reference.json")
    args = parser.parse_args()
    torch.set_num_threads(1)

    tok, model = load_gguf(args.gguf)

    llama_cpp_tok = digits_first(tok)
    tokenizer = []
    for text in TOKENIZER_TEXTS:
        ids = tok(text, add_special_tokens=True).input_ids
        entry = {"text": text, "ids": ids, "decoded": tok.decode(ids)}
        llama_cpp_ids = llama_cpp_tok.encode(text).ids
        if llama_cpp_ids != ids:
            entry["ids_llama_cpp"] = llama_cpp_ids
        tokenizer.append(entry)

    rendered = tok.apply_chat_template(CHAT_MESSAGES, tokenize=False, add_generation_prompt=True)
    prompt_ids = tok(rendered).input_ids
    with torch.no_grad():
        generated = model.generate(
            torch.tensor([prompt_ids]),
            attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
            max_new_tokens=20,
            do_sample=False,
            eos_token_id=EOS_ID,
            pad_token_id=EOS_ID,
        )
    chat_new = generated[0, len(prompt_ids) :].tolist()
    if EOS_ID in chat_new:
        chat_new = chat_new[: chat_new.index(EOS_ID) + 1]
    chat = {
        "messages": CHAT_MESSAGES,
        "rendered": rendered,
        "prompt_ids": prompt_ids,
        "greedy_ids": chat_new,
        "greedy_text": tok.decode(chat_new, skip_special_tokens=False),
    }

    continuation = continuation_record(model, tok, CONTINUATION_PROMPT)

    keys = (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "rms_norm_eps",
        "max_position_embeddings",
        "tie_word_embeddings",
        "rope_parameters",
    )
    reference = {
        "meta": meta_record(args.gguf, model, keys),
        "tokenizer": tokenizer,
        "chat": chat,
        "continuation": continuation,
        "logits": [logit_record(model, tok, prompt) for prompt in LOGIT_PROMPTS],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(dumps(reference) + "\n", encoding="utf-8")

    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    print("chat:", repr(chat["greedy_text"]))
    print("continuation:", repr(continuation["greedy_text"]))
    for record in reference["logits"]:
        print(f"logits: {len(record['ids'])} prompt tokens, top id {record['top'][0]}")


if __name__ == "__main__":
    main()
