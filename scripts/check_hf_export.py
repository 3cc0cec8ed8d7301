"""Checks a Hugging Face folder written by `cargo xtask export --format hf` against transformers.

The folder holds papertune's merged model (base + the run's LoRA adapter). The reference is
built independently in Python: transformers loads the run's base GGUF (dequantised to f32) and
PEFT applies the run's adapter (the checkpoint's adapter_model.safetensors, PEFT's own layout).
For three prompts, the next-token logits of the two must agree within 1e-3 relative (to the
larger of |reference| and 1), and the folder's tokenizer must give the same ids as transformers'
GGUF tokenizer.

Usage:
    python3 scripts/check_hf_export.py --folder kw-hf --gguf BASE.gguf --adapter RUN/best

Needs torch, transformers (5.24), gguf, accelerate and peft. Prints one line per prompt and
exits with status 1 on a difference.
"""

import argparse
import sys
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_smollm2_reference import LOGIT_PROMPTS, load_gguf  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--gguf", type=Path, required=True)
    parser.add_argument("--adapter", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(2)

    tok, base = load_gguf(args.gguf)
    reference = PeftModel.from_pretrained(base, str(args.adapter)).eval()
    exported_tok = AutoTokenizer.from_pretrained(str(args.folder))
    exported = AutoModelForCausalLM.from_pretrained(str(args.folder), dtype=torch.float32).eval()

    failed = False
    for prompt in LOGIT_PROMPTS:
        ids = tok(prompt).input_ids
        if exported_tok(prompt).input_ids != ids:
            print(f"tokenizer ids differ for {prompt[:40]!r}")
            failed = True
        with torch.no_grad():
            want = reference(torch.tensor([ids])).logits[0, -1]
            got = exported(torch.tensor([ids])).logits[0, -1]
        excess = ((got - want).abs() - 1e-3 * want.abs().clamp(min=1.0)).max().item()
        worst = (got - want).abs().max().item()
        same_top = int(got.argmax()) == int(want.argmax())
        print(f"{len(ids)} tokens: largest logit difference {worst:.2e}, same argmax {same_top}")
        failed |= excess > 0 or not same_top
    print("FAILED" if failed else "ok: the folder matches transformers + PEFT on the GGUF base")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
