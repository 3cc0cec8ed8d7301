"""Reference token ids and loss of the LoRA instruction recipe, for papertune's parity test.

Builds training examples for a few hand-written paper rows with the recipe of
`scripts/train_lora_reference.py` (chat template, challenge instructions, prompt masked out,
prompt cut to fit, answer kept), for both tasks and with a short `max_len` that forces
truncation, and computes the base model's mean answer-token loss over one right-padded batch
of them (SmolLM2-135M-Instruct from its GGUF, dequantised to f32). Writes
tests/fixtures/instruction_reference.json.

    python3 scripts/make_instruction_reference.py [--gguf PATH]
"""

import argparse
import importlib.util
import json
import os

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("recipe", os.path.join(HERE, "train_lora_reference.py"))
recipe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recipe)

ROWS = [
    {"uuid": "r1", "title": "Low-dose aspirin after minor stroke: a randomised trial",
     "author": "A. Writer,B. Author", "label": "1",
     "abstract": "We randomly assigned 412 adults with a minor ischaemic stroke to aspirin or placebo "
                 "and followed them for 90 days. Recurrent stroke occurred in 4.1% and 6.8% of patients.",
     "Keywords": "aspirin; stroke prevention; randomised trial."},
    {"uuid": "r2", "title": "Cache-aware scheduling for  graph   analytics",
     "author": "", "label": "0",
     "abstract": "  Graph workloads touch memory irregularly. We present a scheduler that groups vertices "
                 "by cache line and cuts misses by 37 % on five benchmark graphs.  ",
     "Keywords": "graph processing ; cache locality; scheduling"},
    {"uuid": "r3", "title": "", "author": "C. Person", "label": "0",
     "abstract": "Soil moisture sensors were calibrated in three fields over two seasons (2019-2020); "
                 "errors fell below 2 vol-% after site-specific fitting.",
     "Keywords": "soil moisture;calibration;;sensors ."},
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", default=recipe.default_gguf())
    args = parser.parse_args()
    torch.manual_seed(0)
    tokenizer, model = recipe.load_model(args.gguf, "cpu")
    model.eval()
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    cases = []
    for task, max_len, max_target_len in [("keywords", 512, 96), ("classify", 512, 4), ("keywords", 96, 8)]:
        examples = [recipe.encode_example(tokenizer, task, row, eos_id, max_len, max_target_len) for row in ROWS]
        batch = recipe.pad_right(examples, eos_id, "cpu")
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = recipe.causal_lm_loss(logits, batch["labels"]).item()
        cases.append({
            "task": task, "max_len": max_len, "max_target_len": max_target_len,
            "examples": [{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples],
            "batch_loss": loss,
        })
        print(task, max_len, [len(e["input_ids"]) for e in examples], f"loss {loss:.6f}")
    out = os.path.join(HERE, "..", "tests", "fixtures", "instruction_reference.json")
    with open(out, "w") as f:
        json.dump({"rows": ROWS, "cases": cases}, f)
    print("wrote", os.path.normpath(out))


if __name__ == "__main__":
    main()
