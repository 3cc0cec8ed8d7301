"""Tiny random Llama, Llama 3.1-style, Qwen2 and Qwen3 checkpoints, a PEFT LoRA adapter, and their logits, for papertune's tests.

make [OUT_DIR]   (OUT_DIR defaults to tests/fixtures/tiny_llama)
    OUT_DIR/config.json, model.safetensors   LlamaForCausalLM: vocab 64, hidden 32, intermediate 64,
                                             2 layers, 4 heads, 2 KV heads (head_dim 8), rope_theta
                                             1e4, rms_norm_eps 1e-5, untied lm_head, 128 positions.
    OUT_DIR/adapter/adapter_config.json,     PEFT LoRA on q_proj and v_proj: r=4, alpha=8, dropout 0;
            adapter_model.safetensors        lora_B is random (N(0, 1) * 0.1), so it is not a no-op.
    OUT_DIR/expected.json                    {"input_ids", "base_logits", "adapted_logits"} for
                                             input_ids [[1, 5, 9, 13, 17, 21, 25, 29]]; base is the
                                             adapter disabled; logits are [batch][position][vocab].
    OUT_DIR/../tiny_qwen2/                   Qwen2ForCausalLM of the same size with q/k/v biases,
                                             tied embeddings, rope_theta 1e6, rms_norm_eps 1e-6, and
                                             expected.json {"input_ids", "logits"} for the same ids.
    OUT_DIR/../tiny_qwen3/                   Qwen3ForCausalLM of the same size: an RMSNorm on each
                                             query and key head, no biases, tied embeddings,
                                             rope_theta 1e6, rms_norm_eps 1e-6; expected.json as above.
    OUT_DIR/../tiny_llama3/                  LlamaForCausalLM with Llama 3.1's RoPE scaling (factor 8,
                                             low/high frequency factors 1 and 8 over 64 original
                                             positions: of head_dim 8's four frequencies one is
                                             kept, one blended, two divided); expected.json as above.

check ADAPTER_DIR LOGITS_JSON [--base BASE_DIR]   (BASE_DIR defaults to tests/fixtures/tiny_llama)
    Loads the base, applies the adapter in ADAPTER_DIR (e.g. one papertune wrote) with
    PeftModel.from_pretrained, checks that every tensor in the adapter file was loaded, computes the
    logits for the input_ids of LOGITS_JSON ({"input_ids": [[...]], "logits": [[[...]]]}), prints
    the largest absolute difference, and exits 1 if it exceeds 1e-4.

The weights are drawn with seeds 0 (Llama), 1 (adapter), 2 (Qwen2), 3 (Qwen3) and 4 (Llama 3.1). So that a parity test sees
every weight, they are larger than the default init: matrices ~ N(0, 0.2^2) (initializer_range
0.2, which makes attention far from uniform), norm weights 1 + N(0, 0.1^2), biases N(0, 0.1^2).
Floats in the JSON have 7 significant digits. Everything is float32 and runs on the CPU.

Usage:
    python3 scripts/make_tiny_llama_peft.py make
    python3 scripts/make_tiny_llama_peft.py check runs/x/adapter runs/x/logits.json
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict
from peft.utils import load_peft_weights
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO_ROOT / "tests/fixtures/tiny_llama"
INPUT_IDS = [[1, 5, 9, 13, 17, 21, 25, 29]]
TOLERANCE = 1e-4

SIZES = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    initializer_range=0.2,
)


def randomize_norms_and_biases(model: torch.nn.Module, seed: int) -> None:
    """Norm weights 1 + N(0, 0.1^2) and biases N(0, 0.1^2), instead of the init's ones and zeros."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator) * 0.1
            if "norm" in name:
                param.copy_(1.0 + noise)
            elif name.endswith(".bias"):
                param.copy_(noise)


def logits_of(model: torch.nn.Module, input_ids: list[list[int]]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor(input_ids)).logits


def rounded(tensor: torch.Tensor) -> list:
    """Nested lists of floats with 7 significant digits."""
    if tensor.dim() == 0:
        return float(f"{tensor.item():.7g}")
    return [rounded(row) for row in tensor]


def save_checkpoint(model: torch.nn.Module, out_dir: Path) -> None:
    """config.json and model.safetensors (transformers 5 always writes safetensors), nothing else."""
    model.save_pretrained(out_dir)
    (out_dir / "generation_config.json").unlink(missing_ok=True)


def write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, separators=(",", ":")) + "\n")


def make_llama(out_dir: Path) -> None:
    torch.manual_seed(0)
    config = LlamaConfig(
        **SIZES, rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False
    )
    model = LlamaForCausalLM(config).eval()
    randomize_norms_and_biases(model, seed=0)
    save_checkpoint(model, out_dir)

    torch.manual_seed(1)  # lora_A's kaiming init draws from the global generator
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    adapter_dir = out_dir / "adapter"
    peft_model.save_pretrained(adapter_dir)
    (adapter_dir / "README.md").unlink()  # PEFT's empty model card
    # target_modules is saved from a set; sort it so that reruns write the same file
    adapter_config = json.loads((adapter_dir / "adapter_config.json").read_text())
    adapter_config["target_modules"] = sorted(adapter_config["target_modules"])
    (adapter_dir / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n")

    with peft_model.disable_adapter():
        base = logits_of(peft_model, INPUT_IDS)
    adapted = logits_of(peft_model, INPUT_IDS)
    print(f"llama: max |adapted - base| = {(adapted - base).abs().max():.4f}")
    write_json(
        out_dir / "expected.json",
        {"input_ids": INPUT_IDS, "base_logits": rounded(base), "adapted_logits": rounded(adapted)},
    )


def make_base_only(out_dir: Path, seed: int, model_class, config) -> None:
    """A checkpoint without an adapter, drawn with `seed`, and its logits for INPUT_IDS."""
    torch.manual_seed(seed)
    model = model_class(config).eval()
    randomize_norms_and_biases(model, seed=seed)
    save_checkpoint(model, out_dir)
    write_json(out_dir / "expected.json", {"input_ids": INPUT_IDS, "logits": rounded(logits_of(model, INPUT_IDS))})


def make_qwen2(out_dir: Path) -> None:
    config = Qwen2Config(**SIZES, rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False)
    make_base_only(out_dir, 2, Qwen2ForCausalLM, config)


def make_qwen3(out_dir: Path) -> None:
    config = Qwen3Config(
        **SIZES, head_dim=8, rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False
    )
    make_base_only(out_dir, 3, Qwen3ForCausalLM, config)


def make_llama3(out_dir: Path) -> None:
    rope = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 8.0,
            "original_max_position_embeddings": 64}
    config = LlamaConfig(**SIZES, rope_parameters=rope, rms_norm_eps=1e-5, tie_word_embeddings=True)
    make_base_only(out_dir, 4, LlamaForCausalLM, config)


def make(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    make_llama(out_dir)
    make_qwen2(out_dir.parent / "tiny_qwen2")
    make_qwen3(out_dir.parent / "tiny_qwen3")
    make_llama3(out_dir.parent / "tiny_llama3")
    for directory in (out_dir, out_dir.parent / "tiny_qwen2", out_dir.parent / "tiny_qwen3", out_dir.parent / "tiny_llama3"):
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                print(f"{path.stat().st_size:>8}  {path}")


def check(adapter_dir: Path, logits_json: Path, base_dir: Path) -> int:
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter_dir).eval()

    # PEFT only warns about keys that do not match, and an unmatched lora_B stays zero: check them here.
    in_file = load_peft_weights(str(adapter_dir), device="cpu")
    loaded = get_peft_model_state_dict(model)
    problems = sorted(set(in_file) ^ set(loaded))
    problems += [key for key in set(in_file) & set(loaded) if not torch.equal(in_file[key].float(), loaded[key])]
    if problems:
        print(f"adapter tensors not loaded as written: {problems}")
        return 1

    expected = json.loads(logits_json.read_text())
    want = torch.tensor(expected["logits"], dtype=torch.float32)
    got = logits_of(model, expected["input_ids"])
    if got.shape != want.shape:
        print(f"shape mismatch: computed {tuple(got.shape)}, file has {tuple(want.shape)}")
        return 1
    with model.disable_adapter():
        effect = (got - logits_of(model, expected["input_ids"])).abs().max().item()
    diff = (got - want).abs().max().item()
    print(f"adapter effect on logits (max abs): {effect:.6g}")
    print(f"max abs difference: {diff:.3g} (tolerance {TOLERANCE:g})")
    return 0 if diff <= TOLERANCE else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make_parser = commands.add_parser("make", help="write the tiny checkpoints, the adapter and expected logits")
    make_parser.add_argument("out_dir", nargs="?", type=Path, default=DEFAULT_DIR)
    check_parser = commands.add_parser("check", help="compare an adapter's logits with transformers + PEFT")
    check_parser.add_argument("adapter_dir", type=Path)
    check_parser.add_argument("logits_json", type=Path)
    check_parser.add_argument("--base", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args()

    torch.set_num_threads(1)
    if args.command == "make":
        make(args.out_dir)
        return 0
    return check(args.adapter_dir, args.logits_json, args.base)


if __name__ == "__main__":
    sys.exit(main())
