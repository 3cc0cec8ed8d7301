"""Compares `cargo xtask embed` with sentence-transformers on the same checkpoint folder.

Needs: pip install sentence-transformers
Usage: python3 scripts/compare_embedding.py MODEL_DIR "some text"
Prints the largest absolute difference between the two unit-length embeddings.
"""

import json
import subprocess
import sys

import numpy as np
from sentence_transformers import SentenceTransformer


def main() -> None:
    model_dir, text = sys.argv[1], sys.argv[2]
    rust = subprocess.run(
        ["cargo", "xtask", "--quiet", "embed", "--model", model_dir, "--text", text],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    ours = np.array(json.loads(rust))
    reference = SentenceTransformer(model_dir, device="cpu").encode([text], normalize_embeddings=True)[0]
    print(json.dumps({"dims": len(ours), "max_abs_diff": float(np.max(np.abs(ours - reference)))}))


if __name__ == "__main__":
    main()
