#!/usr/bin/env python3
"""The PyTorch side of `cargo xtask bench`: the same four workloads with transformers + PEFT,
on the same machine, thread count, shapes and weights.

  W1  MiniLM-L6 sequence classification train step, batch 16 x 128, AdamW   -> examples/s
  W2  MiniLM-L6 classification inference, batch 32 x 256                     -> examples/s
  W3  SmolLM2-135M LoRA train step (r 8, alpha 16, q_proj+v_proj), 4 x 256   -> tokens/s
  W4  SmolLM2-135M greedy generation, 128-token prompt, 32 new tokens        -> tokens/s

Token ids are fixed random ids; timings are medians over --repeats after one warm-up. Each
workload should run in a process of its own (peak_rss_mib is the process's peak resident
memory), which is what `cargo xtask bench --compare` does:

  python3 bench/torch_reference.py --only W1 --minilm DIR --gguf FILE --json out.json
"""

import argparse
import json
import os
import resource
import statistics
import time

import torch


def peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def random_ids(generator: torch.Generator, shape, low: int, high: int) -> torch.Tensor:
    return torch.randint(low, high, shape, generator=generator)


def timed(repeats: int, fn) -> list[float]:
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        fn()
        seconds = time.perf_counter() - start
        if i > 0:
            times.append(seconds)
    return times


def minilm_inputs(vocab_size: int, batch: int, seq: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random word-piece ids between [CLS] and [SEP], no padding: (input_ids, attention_mask)."""
    g = torch.Generator().manual_seed(seed)
    ids = random_ids(g, (batch, seq), 999, vocab_size)
    ids[:, 0], ids[:, -1] = 101, 102
    return ids, torch.ones_like(ids)


def w1(args) -> dict:
    from transformers import AutoModelForSequenceClassification

    batch, seq = 16, 128
    model = AutoModelForSequenceClassification.from_pretrained(args.minilm, num_labels=2)
    model.train()
    ids, mask = minilm_inputs(model.config.vocab_size, batch, seq, seed=2)
    labels = torch.arange(batch) % 2
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=5e-5)

    def step():
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = statistics.median(timed(args.repeats, step))
    return {"throughput": batch / seconds, "unit": "examples/s", "seconds_per_step": seconds, "shape": [batch, seq]}


def w2(args) -> dict:
    from transformers import AutoModelForSequenceClassification

    batch, seq = 32, 256
    model = AutoModelForSequenceClassification.from_pretrained(args.minilm, num_labels=2)
    model.eval()
    ids, mask = minilm_inputs(model.config.vocab_size, batch, seq, seed=3)

    def infer():
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask).logits
            torch.softmax(logits, dim=-1)[:, 1].tolist()

    seconds = statistics.median(timed(args.repeats, infer))
    return {"throughput": batch / seconds, "unit": "examples/s", "seconds_per_batch": seconds, "shape": [batch, seq]}


def load_smollm(args):
    from transformers import AutoModelForCausalLM

    folder, name = os.path.split(os.path.abspath(args.gguf))
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32)
    return model


def w3(args) -> dict:
    from peft import LoraConfig, get_peft_model

    batch, seq = 4, 256
    model = load_smollm(args)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    model.train()
    g = torch.Generator().manual_seed(0)
    ids = random_ids(g, (batch, seq), 32, model.config.vocab_size)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.0)

    def step():
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = statistics.median(timed(args.repeats, step))
    return {"throughput": batch * seq / seconds, "unit": "tokens/s", "seconds_per_step": seconds, "shape": [batch, seq]}


def w4(args) -> dict:
    prompt_len, new_tokens = 128, 32
    model = load_smollm(args)
    model.eval()
    g = torch.Generator().manual_seed(1)
    ids = random_ids(g, (1, prompt_len), 32, model.config.vocab_size)

    def generate():
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, use_cache=True)
        assert out.shape[1] == prompt_len + new_tokens

    seconds = statistics.median(timed(args.repeats, generate))
    return {"throughput": new_tokens / seconds, "unit": "tokens/s", "seconds": seconds, "shape": [prompt_len, new_tokens]}


WORKLOADS = {"W1": w1, "W2": w2, "W3": w3, "W4": w4}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="W1,W2,W3,W4", help="comma-separated workloads")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--minilm", help="folder of the MiniLM checkpoint (config.json, model.safetensors)")
    p.add_argument("--gguf", help="the LLM's GGUF file (SmolLM2-135M, Gemma 3 270M)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads (default: all cores)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = {}
    for name in [w.strip() for w in args.only.split(",") if w.strip()]:
        if name not in WORKLOADS:
            raise SystemExit(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}")
        if name in ("W1", "W2") and not args.minilm:
            raise SystemExit(f"{name} needs --minilm DIR")
        if name in ("W3", "W4") and not args.gguf:
            raise SystemExit(f"{name} needs --gguf FILE")
        result = WORKLOADS[name](args)
        result.update({"peak_rss_mib": peak_rss_mib(), "backend": f"pytorch-{torch.__version__}-cpu", "threads": args.threads})
        results[name] = result
    text = json.dumps(results, indent=2)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
