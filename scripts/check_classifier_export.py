#!/usr/bin/env python3
"""Checks a classifier run exported as a transformers folder against papertune's own logits.

    cargo xtask export --run runs/minilm --format hf --out /tmp/minilm-hf
    cargo xtask predict --run runs/minilm --data test.csv --output /tmp/scored.csv --logits
    python3 scripts/check_classifier_export.py --model /tmp/minilm-hf --data test.csv \\
        --scores /tmp/scored.csv [--rows 32] [--tolerance 1e-4]

Loads the folder with AutoTokenizer and AutoModelForSequenceClassification, builds each row's
input text with the template papertune trained on (config.json's "papertune" block), runs the
first N rows of the data file through the tokenizer and the model, and compares the logits with
the `logit_0,logit_1` columns of papertune's predictions (matched by uuid). Prints one line of
JSON (`rows`, `max_abs_diff`, `tolerance`, `argmax_agree`) and exits 1 when the largest
difference reaches the tolerance.

The data file is CSV (or JSON lines: .jsonl / .ndjson) with the columns papertune's defaults
name: uuid, title, author, abstract (`--column role=name` maps others, as data.columns does).
"""

import argparse
import csv
import json
import sys
from pathlib import Path

FIELDS = ("uuid", "title", "author", "abstract", "keywords")


def parse_template(source):
    """papertune's template: literals and {field} placeholders, '{{' and '}}' for braces."""
    pieces, literal, i = [], "", 0
    while i < len(source):
        c = source[i]
        if c in "{}" and source[i : i + 2] == c * 2:
            literal += c
            i += 2
        elif c == "{":
            end = source.index("}", i)
            name = source[i + 1 : end]
            if name not in FIELDS:
                raise SystemExit(f"template {source!r}: unknown placeholder {{{name}}}")
            if literal:
                pieces.append(("text", literal))
                literal = ""
            pieces.append(("field", name))
            i = end + 1
        else:
            literal += c
            i += 1
    if literal:
        pieces.append(("text", literal))
    return pieces


def render(pieces, row, columns):
    return "".join(
        value if kind == "text" else str(row.get(columns.get(value, value)) or "")
        for kind, value in pieces
    )


def read_rows(path):
    if path.suffix in (".jsonl", ".ndjson"):
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_logits(path):
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"uuid", "logit_0", "logit_1"} - set(reader.fieldnames or [])
        if missing:
            raise SystemExit(
                f"{path}: no column {', '.join(sorted(missing))}; write it with predict --logits"
            )
        return {r["uuid"]: [float(r["logit_0"]), float(r["logit_1"])] for r in reader}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="the exported folder")
    parser.add_argument("--data", required=True, type=Path, help="the rows (CSV or JSON lines)")
    parser.add_argument("--scores", required=True, type=Path, help="predict --logits output")
    parser.add_argument("--rows", type=int, default=32, help="compare the first N rows")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--column", action="append", default=[], metavar="ROLE=NAME")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    config = json.loads((args.model / "config.json").read_text(encoding="utf-8"))
    recipe = config.get("papertune", {})
    template = parse_template(recipe.get("template", "{title} [SEP] {author} [SEP] {abstract}"))
    pair = recipe.get("text_pair_template")
    pair = parse_template(pair) if pair else None
    max_len = int(recipe.get("max_len", 512))
    columns = dict(c.split("=", 1) for c in args.column)

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model).eval()
    expected = read_logits(args.scores)
    rows = read_rows(args.data)[: args.rows]
    if not rows:
        raise SystemExit(f"{args.data}: no rows")

    worst, agree = 0.0, 0
    for start in range(0, len(rows), 16):
        batch = rows[start : start + 16]
        texts = [render(template, r, columns) for r in batch]
        pairs = [render(pair, r, columns) for r in batch] if pair else None
        encoded = tokenizer(
            texts,
            pairs,
            truncation=True,
            max_length=max_len,
            padding=True,
            return_tensors="pt",
        )
        with torch.no_grad():
            logits = model(**encoded).logits.tolist()
        for row, got in zip(batch, logits):
            uuid = str(row.get(columns.get("uuid", "uuid")))
            if uuid not in expected:
                raise SystemExit(f"{args.scores}: no row for uuid {uuid!r}")
            want = expected[uuid]
            worst = max(worst, max(abs(a - b) for a, b in zip(got, want)))
            agree += (got[1] > got[0]) == (want[1] > want[0])

    print(
        json.dumps(
            {
                "rows": len(rows),
                "max_abs_diff": worst,
                "tolerance": args.tolerance,
                "argmax_agree": agree,
                "architecture": config.get("architectures", ["?"])[0],
            }
        )
    )
    return 0 if worst < args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
