"""The papertune LoRA recipe in Python (transformers + PEFT + a plain PyTorch loop), to compare
with the Rust (burn) implementation.

Model: SmolLM2-135M-Instruct loaded from its GGUF file (de-quantised to float32 by transformers).
Tasks:
  keywords  generate the paper's keywords (comma separated); scored against the `Keywords` column.
  classify  answer "1" (medical paper) or "0"; scored from the next-token logits of "0" and "1"
            against the `label` column.

The text preparation and the metrics are defined by the functions at the top of this file; they
are the reference definition the Rust side must match. The training recipe:
  * example = chat-templated prompt (SmolLM's default system message + one user turn + the
    assistant header) followed by the answer ids (target text + <|im_end|>); loss only on the
    answer ids; prompts are truncated at the end of the user content so the answer always fits
    (see `encode_example`);
  * right padding with pad id 2 (<|im_end|>), labels -100 and attention mask 0 on padding;
  * LoRA (peft) r=8, alpha=16, dropout 0.05 on q_proj,v_proj, bias "none";
  * AdamW(lr 2e-4, betas (0.9, 0.999), eps 1e-8, weight decay 0) on the LoRA parameters only;
  * micro-batch 4, gradient accumulation 4 (each micro-batch loss = mean token cross-entropy
    over that micro-batch's answer tokens, divided by grad_accum), global grad-norm clip 1.0;
  * linear warmup over ceil(warmup_ratio * total_steps) optimizer steps, then cosine decay to 0
    (the formula of transformers' get_cosine_schedule_with_warmup; the scheduler is stepped after
    each optimizer step, so the first optimizer step runs at lr * 0 when there is a warmup);
  * data order: one torch.Generator seeded with `seed`, torch.randperm(n) at the start of every
    epoch; an optimizer step after every grad_accum micro-batches and after the last micro-batch
    of the epoch (total_steps = ceil(ceil(n / batch) / grad_accum) * epochs).

Needs: pip install torch transformers peft gguf

Usage (smoke test on CPU, 8 training rows, 3 validation rows):
  python3 scripts/train_lora_reference.py --task keywords \
      --train keywords_train.csv --valid keywords_valid.csv --out runs/py-lora-smoke --smoke
Zero-shot evaluation of the base model:  ... --no-train
Timing of one training step and one generation: ... --benchmark

Writes OUT/metrics.json (metrics, training time, examples/s, adapter size, arguments) and the
adapter (PEFT save_pretrained) in OUT/adapter; prints the metrics JSON at the end.
"""

import argparse
import csv
import json
import math
import os
import random
import re
import sys
import time

# ---------------------------------------------------------------------------------------------
# Reference definitions: text preparation
# ---------------------------------------------------------------------------------------------

INSTRUCTIONS = {
    "keywords": "Please extract keywords from the given paper title and abstract in the text below, "
    "separated by commas -->",
    "classify": "Please judge whether it is a medical field paper according to the given paper title "
    "and abstract, output 1 or 0, the following is the paper title and abstract -->",
}

EOS_TOKEN = "<|im_end|>"  # id 2 in SmolLM2; also the padding id
IGNORE_INDEX = -100
TRAILING_PUNCT = ".,;:!?"


def read_rows(path: str, max_rows: int | None = None) -> list[dict]:
    """Rows of a papers CSV (RFC 4180, UTF-8, header `uuid,title,author,abstract,Keywords[,label]`),
    the first `max_rows` of them when given."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return rows[:max_rows] if max_rows is not None else rows


def input_text(row: dict) -> str:
    """The paper as the model reads it: fields stripped, empty (or missing) fields kept as ""."""
    title = (row.get("title") or "").strip()
    author = (row.get("author") or "").strip()
    abstract = (row.get("abstract") or "").strip()
    return f"title: {title}\nauthor: {author}\nabstract: {abstract}"


def user_content(task: str, row: dict) -> str:
    """The content of the single user message: instruction + "\\n" + input text."""
    return INSTRUCTIONS[task] + "\n" + input_text(row)


def target_text(task: str, row: dict) -> str:
    """The answer the model is trained to produce (without the end-of-turn token).

    keywords: the gold `Keywords` split on ';', each stripped, then trailing '.' characters
    stripped, empty ones dropped, joined with ", ".  classify: "1" or "0" from `label`."""
    if task == "keywords":
        parts = [k.strip().rstrip(".").strip() for k in (row.get("Keywords") or "").split(";")]
        return ", ".join(p for p in parts if p)
    label = int(str(row["label"]).strip())
    assert label in (0, 1), f"label must be 0 or 1, got {row['label']!r}"
    return str(label)


def split_prompt(tokenizer, content: str) -> tuple[str, str]:
    """(head_text, tail_text) of the chat-templated prompt: head ends with the user content,
    tail is what the template adds after it (for ChatML "<|im_end|>\\n<|im_start|>assistant\\n")."""
    messages = [{"role": "user", "content": content}]
    prompt_text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    end = prompt_text.index(content) + len(content)
    return prompt_text[:end], prompt_text[end:]


def prompt_ids(tokenizer, content: str, budget_without_tail: int) -> list[int]:
    """Prompt ids whose head (everything up to the end of the user content) is cut to fit:
    head_ids[:budget] + tail_ids with budget = budget_without_tail - len(tail_ids) (at least 0).
    Head and tail are tokenized separately, without special tokens added by the tokenizer."""
    head_text, tail_text = split_prompt(tokenizer, content)
    head = tokenizer(head_text, add_special_tokens=False).input_ids
    tail = tokenizer(tail_text, add_special_tokens=False).input_ids
    budget = max(0, budget_without_tail - len(tail))
    return head[:budget] + tail


def answer_ids(tokenizer, target: str, eos_id: int, max_target_len: int) -> list[int]:
    """tokenizer(target).input_ids + [eos_id], cut to max_target_len keeping eos as the last id."""
    ids = tokenizer(target, add_special_tokens=False).input_ids + [eos_id]
    if len(ids) > max_target_len:
        ids = ids[: max_target_len - 1] + [eos_id]
    return ids


def encode_example(tokenizer, task: str, row: dict, eos_id: int, max_len: int, max_target_len: int) -> dict:
    """One training example: input_ids = prompt_ids + answer_ids, labels = [-100]*len(prompt) +
    answer_ids (not shifted: the model predicts labels[t+1] at position t), where the prompt head
    gets budget = max_len - len(answer_ids) - len(tail_ids)."""
    answer = answer_ids(tokenizer, target_text(task, row), eos_id, max_target_len)
    prompt = prompt_ids(tokenizer, user_content(task, row), max_len - len(answer))
    return {"input_ids": prompt + answer, "labels": [IGNORE_INDEX] * len(prompt) + answer}


# ---------------------------------------------------------------------------------------------
# Reference definitions: metrics
# ---------------------------------------------------------------------------------------------


def normalize_keyword(text: str) -> str:
    """Lowercase, collapse whitespace runs to one space (Python's str.split() whitespace), strip,
    then strip trailing characters from ".,;:!?" and whitespace repeatedly."""
    s = " ".join(text.lower().split())
    while s and (s[-1] in TRAILING_PUNCT or s[-1].isspace()):
        s = s[:-1]
    return s


def dedupe(items: list[str]) -> list[str]:
    """Drop empty strings and repeats, keeping the first occurrence."""
    seen, out = set(), []
    for item in items:
        if item and item not in seen:
            seen.add(item)
            out.append(item)
    return out


def parse_predicted_keywords(generated: str) -> list[str]:
    """Generated text (decoded with skip_special_tokens) split on ',' or ';', normalised, deduped."""
    return dedupe([normalize_keyword(p) for p in re.split(r"[,;]", generated)])


def parse_gold_keywords(keywords: str) -> list[str]:
    """Gold `Keywords` split on ';', normalised, deduped."""
    return dedupe([normalize_keyword(p) for p in keywords.split(";")])


def _f1(matched: int, n_pred: int, n_gold: int) -> float:
    if matched == 0:
        return 0.0
    p, r = matched / n_pred, matched / n_gold
    return 2 * p * r / (p + r)


def keyword_metrics(predictions: list[list[str]], golds: list[list[str]]) -> dict:
    """Keyword extraction scores; documents without gold keywords are skipped (n = documents scored).

    kw_precision / kw_recall / kw_f1: micro over the corpus (total matched / total predicted,
    total matched / total gold, harmonic mean; 0 when a denominator is 0).
    kw_f1_at_m: mean per-document F1 using all predictions.
    kw_f1_at_5: mean per-document F1 using the first 5 predictions with precision denominator 5
    (missing predictions count as wrong).  Per-document F1 is 0 when nothing matched.
    mean_pred_keywords: mean number of (deduped) predictions per scored document."""
    n = total_matched = total_pred = total_gold = 0
    sum_f1_m = sum_f1_5 = 0.0
    for pred, gold in zip(predictions, golds, strict=True):
        if not gold:
            continue
        gold_set = set(gold)
        matched = sum(1 for k in pred if k in gold_set)
        matched5 = sum(1 for k in pred[:5] if k in gold_set)
        n += 1
        total_matched += matched
        total_pred += len(pred)
        total_gold += len(gold)
        sum_f1_m += _f1(matched, len(pred), len(gold))
        sum_f1_5 += _f1(matched5, 5, len(gold))
    precision = total_matched / total_pred if total_pred else 0.0
    recall = total_matched / total_gold if total_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "kw_precision": precision,
        "kw_recall": recall,
        "kw_f1": f1,
        "kw_f1_at_m": sum_f1_m / n if n else 0.0,
        "kw_f1_at_5": sum_f1_5 / n if n else 0.0,
        "mean_pred_keywords": total_pred / n if n else 0.0,
        "n": n,
    }


def binary_metrics(predicted: list[int], gold: list[int]) -> dict:
    """F1 / precision / recall of the positive class 1, accuracy, n."""
    tp = sum(1 for p, g in zip(predicted, gold, strict=True) if p == 1 and g == 1)
    fp = sum(1 for p, g in zip(predicted, gold) if p == 1 and g == 0)
    fn = sum(1 for p, g in zip(predicted, gold) if p == 0 and g == 1)
    correct = sum(1 for p, g in zip(predicted, gold) if p == g)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f1": f1, "precision": precision, "recall": recall,
            "accuracy": correct / len(gold) if gold else 0.0, "n": len(gold)}


def cosine_with_warmup(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR multiplier after `step` optimizer steps (transformers' get_cosine_schedule_with_warmup,
    num_cycles 0.5): step / warmup during warmup, then 0.5 * (1 + cos(pi * progress)) floored at 0."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


# ---------------------------------------------------------------------------------------------
# Model, batching, training, evaluation
# ---------------------------------------------------------------------------------------------

import torch  # noqa: E402  (imported after the pure-Python definitions on purpose)
import torch.nn.functional as F  # noqa: E402


GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_FOLDERS = ("smollm2-135m-instruct-q4_1", "smollm2-135m")  # first one that holds the file wins


def default_gguf() -> str:
    """$PAPERTUNE_CACHE (or ~/.cache/papertune) + models/<folder>/SmolLM2-135M-Instruct.Q4_1.gguf."""
    cache = os.environ.get("PAPERTUNE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "papertune")
    candidates = [os.path.join(cache, "models", folder, GGUF_NAME) for folder in GGUF_FOLDERS]
    return next((c for c in candidates if os.path.isfile(c)), candidates[0])


def load_model(gguf_path: str, device: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not os.path.isfile(gguf_path):
        raise SystemExit(f"GGUF file not found: {gguf_path} (pass --gguf)")
    directory, name = os.path.dirname(os.path.abspath(gguf_path)), os.path.basename(gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    # `dtype` is the current name of `torch_dtype` in transformers >= 4.56.
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    return tokenizer, model.to(device)


def pad_right(examples: list[dict], pad_id: int, device: str) -> dict:
    """Right padding: pad id on inputs, -100 on labels, 0 in the attention mask."""
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n] = torch.tensor(e["input_ids"])
        labels[i, :n] = torch.tensor(e["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids.to(device), "labels": labels.to(device), "attention_mask": mask.to(device)}


def pad_left(sequences: list[list[int]], pad_id: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, width - len(s):] = torch.tensor(s)
        mask[i, width - len(s):] = 1
    return ids.to(device), mask.to(device)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean token cross-entropy over the answer tokens: logits at t predict labels at t+1."""
    return F.cross_entropy(
        logits[:, :-1, :].reshape(-1, logits.size(-1)).float(),
        labels[:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="mean",
    )


def micro_batches(order: list[int], batch_size: int) -> list[list[int]]:
    return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]


def train(model, examples: list[dict], args, pad_id: int, device: str) -> dict:
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    n = len(examples)
    steps_per_epoch = math.ceil(math.ceil(n / args.batch_size) / args.grad_accum)
    total_steps = steps_per_epoch * args.epochs
    if args.max_steps is not None:
        total_steps = min(total_steps, args.max_steps)
    warmup_steps = math.ceil(args.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_with_warmup(s, warmup_steps, total_steps))
    generator = torch.Generator().manual_seed(args.seed)
    print(f"training: {n} examples, {args.epochs} epoch(s), {total_steps} optimizer steps "
          f"({warmup_steps} warmup), batch {args.batch_size} x accum {args.grad_accum}", flush=True)

    model.train()
    start = time.perf_counter()
    step = 0
    seen = answer_tokens = 0
    window_losses: list[float] = []
    history = []
    done = False
    for epoch in range(args.epochs):
        order = torch.randperm(n, generator=generator).tolist()
        batches = micro_batches(order, args.batch_size)
        optimizer.zero_grad(set_to_none=True)
        accumulated = 0
        for b, indices in enumerate(batches):
            batch = pad_right([examples[i] for i in indices], pad_id, device)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss = causal_lm_loss(logits, batch["labels"])
            (loss / args.grad_accum).backward()
            window_losses.append(loss.item())
            seen += len(indices)
            answer_tokens += int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            accumulated += 1
            if accumulated == args.grad_accum or b == len(batches) - 1:
                grad_norm = torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                accumulated = 0
                step += 1
                step_loss = sum(window_losses[-args.grad_accum:]) / len(window_losses[-args.grad_accum:])
                history.append({"step": step, "loss": step_loss, "lr": lr, "grad_norm": float(grad_norm)})
                if step % 10 == 0 or step == total_steps:
                    recent = window_losses
                    print(f"epoch {epoch + 1} step {step}/{total_steps} loss {sum(recent) / len(recent):.4f} "
                          f"lr {lr:.3e} grad_norm {float(grad_norm):.3f} "
                          f"elapsed {time.perf_counter() - start:.1f}s", flush=True)
                    window_losses = []
                if step >= total_steps:
                    done = True
                    break
        if done:
            break
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {
        "train_seconds": seconds,
        "train_examples_seen": seen,
        "train_examples_per_s": seen / seconds if seconds else 0.0,
        "train_answer_tokens_per_s": answer_tokens / seconds if seconds else 0.0,
        "optimizer_steps": step,
        "warmup_steps": warmup_steps,
        "final_loss": history[-1]["loss"] if history else None,
        "loss_history": history,
    }


@torch.no_grad()
def generate(model, prompts: list[list[int]], eos_id: int, pad_id: int, max_new_tokens: int, device: str):
    """Greedy generation (left-padded batch); returns the new token ids of each prompt."""
    ids, mask = pad_left(prompts, pad_id, device)
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                         eos_token_id=eos_id, pad_token_id=pad_id, num_beams=1,
                         temperature=None, top_p=None, top_k=None)
    return [row[ids.size(1):].tolist() for row in out]


def evaluate_keywords(model, tokenizer, rows: list[dict], args, eos_id: int, pad_id: int, device: str) -> dict:
    model.eval()
    prompts = [prompt_ids(tokenizer, user_content("keywords", r), args.max_len - args.max_new_tokens) for r in rows]
    predictions, golds, samples = [], [], []
    start = time.perf_counter()
    for i in range(0, len(rows), args.eval_batch_size):
        new_ids = generate(model, prompts[i: i + args.eval_batch_size], eos_id, pad_id, args.max_new_tokens, device)
        for j, ids in enumerate(new_ids):
            row = rows[i + j]
            text = tokenizer.decode(ids, skip_special_tokens=True)
            predictions.append(parse_predicted_keywords(text))
            golds.append(parse_gold_keywords(row.get("Keywords") or ""))
            if len(samples) < 3:
                samples.append({"uuid": row.get("uuid"), "generated": text})
        print(f"eval {min(i + args.eval_batch_size, len(rows))}/{len(rows)} "
              f"elapsed {time.perf_counter() - start:.1f}s", flush=True)
    metrics = keyword_metrics(predictions, golds)
    metrics["eval_seconds"] = time.perf_counter() - start
    metrics["samples"] = samples
    return metrics


@torch.no_grad()
def evaluate_classify(model, tokenizer, rows: list[dict], args, pad_id: int, device: str) -> dict:
    """p1 = softmax([logit("0"), logit("1")])[1] at the last prompt position; predict 1 if p1 >= 0.5."""
    model.eval()
    zero = tokenizer("0", add_special_tokens=False).input_ids
    one = tokenizer("1", add_special_tokens=False).input_ids
    assert len(zero) == 1 and len(one) == 1, f"'0' and '1' must be single tokens, got {zero} {one}"
    prompts = [prompt_ids(tokenizer, user_content("classify", r), args.max_len) for r in rows]
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    predicted, probabilities = [], []
    start = time.perf_counter()
    for i in range(0, len(rows), args.eval_batch_size):
        chunk = prompts[i: i + args.eval_batch_size]
        batch = pad_right([{"input_ids": p, "labels": p} for p in chunk], pad_id, device)
        # Right padding + the backbone's hidden state at each prompt's last real position,
        # projected by lm_head: the same numbers as the full logits at that position.
        hidden = base.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        last = batch["attention_mask"].sum(dim=1) - 1
        logits = base.lm_head(hidden[torch.arange(hidden.size(0), device=hidden.device), last])
        pair = torch.stack([logits[:, zero[0]], logits[:, one[0]]], dim=-1).float()
        p1 = torch.softmax(pair, dim=-1)[:, 1]
        probabilities += p1.tolist()
        predicted += [1 if p >= 0.5 else 0 for p in p1.tolist()]
        print(f"eval {min(i + args.eval_batch_size, len(rows))}/{len(rows)} "
              f"elapsed {time.perf_counter() - start:.1f}s", flush=True)
    gold = [int(str(r["label"]).strip()) for r in rows]
    metrics = binary_metrics(predicted, gold)
    metrics["mean_p1"] = sum(probabilities) / len(probabilities) if probabilities else 0.0
    metrics["eval_seconds"] = time.perf_counter() - start
    return metrics


def benchmark(model, tokenizer, train_examples, valid_rows, args, eos_id, pad_id, device) -> dict:
    """Time one training step (one micro-batch of batch_size rows, each exactly max_len tokens,
    forward + backward + clip + AdamW step) twice (the first includes warm-up), and one greedy
    generation of the first validation row (keywords) / one prompt scoring (classify)."""
    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    rows = []
    for e in train_examples[: args.batch_size]:
        ids = (e["input_ids"] * math.ceil(args.max_len / len(e["input_ids"])))[: args.max_len]
        answer = min(args.max_target_len, args.max_len - 1)
        rows.append({"input_ids": ids, "labels": [IGNORE_INDEX] * (args.max_len - answer) + ids[-answer:]})
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    model.train()
    step_seconds = []
    for _ in range(2):
        sync()
        t = time.perf_counter()
        batch = pad_right(rows, pad_id, device)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = causal_lm_loss(logits, batch["labels"])
        (loss / args.grad_accum).backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        step_seconds.append(time.perf_counter() - t)
    result = {"train_step_shape": [len(rows), args.max_len], "train_step_seconds": step_seconds}
    model.eval()
    row = valid_rows[0]
    if args.task == "keywords":
        prompt = prompt_ids(tokenizer, user_content("keywords", row), args.max_len - args.max_new_tokens)
        sync()
        t = time.perf_counter()
        new_ids = generate(model, [prompt], eos_id, pad_id, args.max_new_tokens, device)[0]
        sync()
        seconds = time.perf_counter() - t
        result.update({"generate_prompt_tokens": len(prompt), "generate_new_tokens": len(new_ids),
                       "generate_seconds": seconds,
                       "generate_tokens_per_s": len(new_ids) / seconds if seconds else 0.0,
                       "generated": tokenizer.decode(new_ids, skip_special_tokens=True)})
    return result


def adapter_bytes(directory: str) -> int:
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(directory) for f in files)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gguf", default=default_gguf(),
                   help="SmolLM2-135M-Instruct Q4_1 GGUF (default: $PAPERTUNE_CACHE or ~/.cache/papertune, + "
                        "models/smollm2-135m-instruct-q4_1/ or models/smollm2-135m/, whichever holds "
                        "SmolLM2-135M-Instruct.Q4_1.gguf)")
    p.add_argument("--task", choices=["keywords", "classify"], required=True)
    p.add_argument("--train", help="training CSV (not needed with --no-train)")
    p.add_argument("--valid", required=True, help="evaluation CSV")
    p.add_argument("--out", required=True, help="output folder (metrics.json, adapter/)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-rows-train", type=int, default=None)
    p.add_argument("--max-rows-valid", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    p.add_argument("--smoke", action="store_true",
                   help="tiny run: 8 training rows, 3 validation rows, at most 2 optimizer steps "
                        "(explicit --max-rows-*/--max-steps win)")
    p.add_argument("--no-train", action="store_true", help="evaluate the base model zero-shot only")
    p.add_argument("--benchmark", action="store_true",
                   help="time one training step and one generation, then exit (writes OUT/benchmark.json)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cuda, cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=4)
    p.add_argument("--eval-batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16)
    p.add_argument("--dropout", type=float, default=0.05)
    p.add_argument("--target-modules", default="q_proj,v_proj")
    p.add_argument("--max-len", type=int, default=512)
    p.add_argument("--max-target-len", type=int, default=96)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--warmup-ratio", type=float, default=0.03)
    args = p.parse_args(argv)
    if args.smoke:
        args.max_rows_train = 8 if args.max_rows_train is None else args.max_rows_train
        args.max_rows_valid = 3 if args.max_rows_valid is None else args.max_rows_valid
        args.max_steps = 2 if args.max_steps is None else args.max_steps
    if not args.no_train and not args.train:
        p.error("--train is required unless --no-train")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    device = args.device

    t0 = time.perf_counter()
    tokenizer, model = load_model(args.gguf, device)
    eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    assert eos_id == 2, f"expected {EOS_TOKEN} to be id 2, got {eos_id}"
    pad_id = eos_id
    load_seconds = time.perf_counter() - t0

    valid_rows = read_rows(args.valid, args.max_rows_valid)
    train_rows = read_rows(args.train, args.max_rows_train) if args.train else []
    train_examples = [encode_example(tokenizer, args.task, r, eos_id, args.max_len, args.max_target_len)
                      for r in train_rows]

    result: dict = {"task": args.task, "model": os.path.basename(args.gguf), "device": device,
                    "torch": torch.__version__, "load_seconds": load_seconds}
    import transformers
    result["transformers"] = transformers.__version__

    if not args.no_train or args.benchmark:
        from peft import LoraConfig, get_peft_model
        import peft
        result["peft"] = peft.__version__
        torch.manual_seed(args.seed)  # LoRA A init (kaiming uniform); B starts at zero
        config = LoraConfig(r=args.r, lora_alpha=args.alpha, lora_dropout=args.dropout,
                            target_modules=[m.strip() for m in args.target_modules.split(",") if m.strip()],
                            bias="none", task_type="CAUSAL_LM")
        model = get_peft_model(model, config)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        result.update({"trainable_params": trainable, "total_params": total})
        print(f"LoRA: {trainable} trainable of {total} parameters", flush=True)

    if args.benchmark:
        result["benchmark"] = benchmark(model, tokenizer, train_examples, valid_rows, args, eos_id, pad_id, device)
        result["args"] = vars(args)
        with open(os.path.join(args.out, "benchmark.json"), "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
        print(json.dumps(result, indent=2))
        return

    if not args.no_train:
        lengths = [len(e["input_ids"]) for e in train_examples]
        result["train_rows"] = len(train_examples)
        result["train_mean_len"] = sum(lengths) / len(lengths) if lengths else 0
        result.update(train(model, train_examples, args, pad_id, device))
        adapter_dir = os.path.join(args.out, "adapter")
        model.save_pretrained(adapter_dir)
        result["adapter_dir"] = adapter_dir
        result["adapter_bytes"] = adapter_bytes(adapter_dir)
    else:
        result.update({"train_seconds": 0.0, "train_examples_per_s": None, "adapter_bytes": None})

    if args.task == "keywords":
        result["eval"] = evaluate_keywords(model, tokenizer, valid_rows, args, eos_id, pad_id, device)
    else:
        result["eval"] = evaluate_classify(model, tokenizer, valid_rows, args, pad_id, device)
    result["args"] = vars(args)
    with open(os.path.join(args.out, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
