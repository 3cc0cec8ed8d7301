"""Reference dequantisation of llama.cpp's block formats by the `gguf` Python package.

Writes two fixtures for papertune's block decoders:

- crates/papertune-kernels/fixtures/gguf_blocks.json: for each of Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
  Q2_K, Q3_K, Q4_K, Q5_K and Q6_K, four seeded random blocks (their f16 scale fields drawn in
  [-2, 2] so that every value is finite) as hex, and gguf-py's values as f32 bit patterns.
- tests/fixtures/gguf_tensor_digests.json: for every quantised tensor of the GGUF files given
  (the `gemma3-270m` and `smollm2-135m` presets by default), its type and the sha256 of the
  first 65,536 of gguf-py's dequantised values (all of them when fewer) as little-endian f32 in
  GGUF's element order. The weights
  themselves are not written anywhere; the digests let the test check bit equality on the real
  tensors.

Usage:
    python3 scripts/make_gguf_block_reference.py [GGUF ...]

Needs numpy and gguf (pip install gguf). Takes about a minute for the two presets.
"""

import hashlib
import json
import os
import sys
from importlib.metadata import version
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES

REPO_ROOT = Path(__file__).resolve().parent.parent
# Byte offsets of the f16 fields (scales, minimums) inside one block of each type.
F16_FIELDS = {
    T.Q4_0: [0],
    T.Q4_1: [0, 2],
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.Q8_0: [0],
    T.Q2_K: [80, 82],
    T.Q3_K: [108],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
}
BLOCKS = 4
# Values per tensor that the digests cover: every block format's code runs on hundreds of real
# blocks, and the test stays quick.
DIGEST_VALUES = 65536
FLOAT_TYPES = {T.F32, T.F16, T.BF16}


def default_files() -> list[Path]:
    cache = Path(os.environ.get("PAPERTUNE_CACHE") or Path.home() / ".cache" / "papertune") / "models"
    return [cache / "gemma3-270m/gemma-3-270m-q4_k_m.gguf", cache / "smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf"]


def synthetic_blocks() -> dict:
    rng = np.random.default_rng(20261206)
    out = {}
    for qtype, offsets in F16_FIELDS.items():
        elements, size = GGML_QUANT_SIZES[qtype]
        raw = rng.integers(0, 256, size=(BLOCKS, size), dtype=np.uint8)
        for offset in offsets:
            scales = rng.uniform(-2.0, 2.0, size=BLOCKS).astype(np.float16)
            raw[:, offset : offset + 2] = scales.view(np.uint8).reshape(BLOCKS, 2)
        raw = raw.reshape(-1)
        values = gguf.quants.dequantize(raw, qtype).reshape(-1).astype(np.float32)
        assert values.size == BLOCKS * elements and np.all(np.isfinite(values))
        out[qtype.name] = {"type_id": int(qtype), "raw_hex": raw.tobytes().hex(), "bits": [int(v) for v in values.view(np.uint32)]}
    return out


def tensor_digests(path: Path) -> dict:
    reader = gguf.GGUFReader(path)
    digests = {}
    for tensor in reader.tensors:
        if tensor.tensor_type in FLOAT_TYPES:
            continue
        raw = np.ascontiguousarray(tensor.data).view(np.uint8).reshape(-1)
        values = gguf.quants.dequantize(raw, tensor.tensor_type).reshape(-1).astype("<f4")[:DIGEST_VALUES]
        digests[tensor.name] = {"type": tensor.tensor_type.name, "sha256": hashlib.sha256(values.tobytes()).hexdigest()}
    return digests


def main() -> None:
    files = [Path(p) for p in sys.argv[1:]] or default_files()
    blocks_out = REPO_ROOT / "crates/papertune-kernels/fixtures/gguf_blocks.json"
    blocks_out.parent.mkdir(parents=True, exist_ok=True)
    blocks = {"gguf": version("gguf"), "types": synthetic_blocks()}
    blocks_out.write_text(json.dumps(blocks, separators=(",", ":")) + "\n")
    print(f"wrote {blocks_out}")

    digests = {"gguf": version("gguf"), "values_per_tensor": DIGEST_VALUES, "files": {}}
    for path in files:
        digests["files"][path.name] = tensor_digests(path)
        print(f"{path.name}: {len(digests['files'][path.name])} quantised tensors")
    digests_out = REPO_ROOT / "tests/fixtures/gguf_tensor_digests.json"
    digests_out.write_text(json.dumps(digests, indent=1) + "\n")
    print(f"wrote {digests_out}")


if __name__ == "__main__":
    main()
