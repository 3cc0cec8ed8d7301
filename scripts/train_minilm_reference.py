"""The MiniLM classification recipe in Python (transformers + PyTorch), to compare with
`cargo xtask train --config configs/classify-minilm.toml`.

Same recipe: all-MiniLM-L6-v2 as BertForSequenceClassification (pooler head, 2 logits,
cross-entropy), input "{title} [SEP] {author} [SEP] {abstract}" truncated to 128 tokens with
dynamic padding, AdamW lr 5e-5, weight decay 0.01 (not on biases and LayerNorm), 10% linear
warmup then linear decay, max grad norm 1.0, batch 16, 1 epoch, seed 42, evaluation on the
validation file at the end of the epoch, then the test file.

Needs: pip install torch transformers accelerate numpy

Usage:
  python3 scripts/train_minilm_reference.py MODEL_DIR TRAIN.csv VALID.csv TEST.csv [OUT_DIR]
MODEL_DIR: the checkpoint folder (e.g. the one papertune caches for `minilm`).
Prints one JSON line with valid and test F1/precision/recall/accuracy and the training time.
"""

import json
import sys
import time

import csv

import numpy as np
import torch
from transformers import (
    AutoTokenizer,
    BertForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    set_seed,
)


def read_rows(path: str) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def texts(rows: list[dict]) -> list[str]:
    return [f"{r['title']} [SEP] {r['author']} [SEP] {r['abstract']}" for r in rows]


class Rows(torch.utils.data.Dataset):
    def __init__(self, encodings, labels):
        self.encodings, self.labels = encodings, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        item = {k: v[i] for k, v in self.encodings.items()}
        item["labels"] = int(self.labels[i])
        return item


def binary_metrics(predicted: np.ndarray, gold: np.ndarray) -> dict:
    tp = int(((predicted == 1) & (gold == 1)).sum())
    fp = int(((predicted == 1) & (gold == 0)).sum())
    fn = int(((predicted == 0) & (gold == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f1": f1, "precision": precision, "recall": recall, "accuracy": float((predicted == gold).mean()), "n": len(gold)}


def main() -> None:
    model_dir, train_csv, valid_csv, test_csv = sys.argv[1:5]
    out_dir = sys.argv[5] if len(sys.argv) > 5 else "runs/python-minilm"
    set_seed(42)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tables = {name: read_rows(path) for name, path in [("train", train_csv), ("valid", valid_csv), ("test", test_csv)]}
    datasets = {
        name: Rows(tokenizer(texts(rows), truncation=True, max_length=128), [int(r["label"]) for r in rows])
        for name, rows in tables.items()
    }
    model = BertForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    args = TrainingArguments(
        output_dir=out_dir,
        num_train_epochs=1,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=32,
        learning_rate=5e-5,
        weight_decay=0.01,
        warmup_ratio=0.1,
        lr_scheduler_type="linear",
        max_grad_norm=1.0,
        seed=42,
        eval_strategy="epoch",
        save_strategy="no",
        logging_steps=50,
        report_to=[],
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=datasets["train"],
        eval_dataset=datasets["valid"],
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    started = time.time()
    trainer.train()
    seconds = time.time() - started
    result = {"train_seconds": seconds, "train_rows": len(datasets["train"])}
    for name in ["valid", "test"]:
        logits = trainer.predict(datasets[name]).predictions
        result[name] = binary_metrics(logits.argmax(-1), np.array(datasets[name].labels))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
