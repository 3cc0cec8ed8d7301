"""The llama.cpp side of papertune's exports: greedy text of llama.cpp with the exported adapter
against papertune's greedy text with the run's adapter, on the same prompts.

1. llama.cpp is built from the sdist of PyPI's `llama-cpp-python` (which vendors llama.cpp):
   `pip download --no-binary llama-cpp-python`, then CMake builds `llama-completion` (a few
   minutes on two cores; needs cmake, ninja and a C++ compiler; kept in --build-dir).
2. `cargo xtask export --format gguf-lora` writes the run's adapter as llama.cpp's LoRA GGUF, and
   `--format gguf --type q8_0` the merged model.
3. For each prompt, 20 greedy tokens from: papertune (`cargo xtask generate --adapter`, weights
   decoded to f32 and from the blocks), llama.cpp with the base GGUF and `--lora`, and
   llama.cpp with the merged Q8_0 GGUF. The texts are printed side by side, with whether
   llama.cpp's adapter text equals papertune's.

llama.cpp quantises the activations to 8 bits in its products, as papertune's quantised path
does, with its own rounding, so texts can part where two tokens are nearly tied.

Usage:
    python3 scripts/llama_cpp_roundtrip.py --run RUN [--checkpoint best|last] [--xtask PATH]
        [--build-dir DIR] [--prompt TEXT ...]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["The capital of France is", "Deep learning for medical image segmentation", "Keywords: heart failure,"]
NEW_TOKENS = 20


def build_llama_cpp(build_dir: Path) -> Path:
    """`llama-completion` built from the llama-cpp-python sdist, once."""
    binary = build_dir / "llama.cpp/build/bin/llama-completion"
    if binary.exists():
        return binary
    build_dir.mkdir(parents=True, exist_ok=True)
    download = build_dir / "sdist"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "llama-cpp-python", "llama-cpp-python", "-d", str(download)],
        check=True,
    )
    archive = next(download.glob("llama_cpp_python-*.tar.gz"))
    with tarfile.open(archive) as tar:
        tar.extractall(build_dir, filter="data")
    vendored = next(build_dir.glob("llama_cpp_python-*/vendor/llama.cpp"))
    source = build_dir / "llama.cpp"
    if source.exists():
        shutil.rmtree(source)
    vendored.rename(source)
    flags = ["-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF", "-DGGML_NATIVE=ON", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF"]
    subprocess.run(["cmake", "-S", str(source), "-B", str(source / "build"), "-G", "Ninja", *flags], check=True)
    subprocess.run(["cmake", "--build", str(source / "build"), "-j", str(os.cpu_count() or 2), "--target", "llama-completion", "llama-bench"], check=True)
    return binary


def llama_cpp_text(binary: Path, model: Path, prompt: str, lora: Path | None) -> str:
    command = [str(binary), "-m", str(model), "-p", prompt, "-n", str(NEW_TOKENS), "--temp", "0", "--top-k", "1", "-s", "0",
               "--no-display-prompt", "--no-warmup", "-t", str(os.cpu_count() or 2), "-no-cnv"]
    if lora is not None:
        command += ["--lora", str(lora)]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    # llama-completion ends its output with a blank line of its own.
    return out.stdout.removesuffix("\n\n")


def papertune_text(xtask: str, base: str, adapter: Path, prompt: str, dequantize: bool) -> str:
    command = [xtask, "generate", "--model", base, "--adapter", str(adapter), "--prompt", prompt, "--max-new-tokens", str(NEW_TOKENS)]
    if dequantize:
        command.append("--dequantize")
    out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO_ROOT)
    return out.stdout.rstrip("\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--checkpoint", default="best", choices=["best", "last"])
    parser.add_argument("--xtask", default=os.environ.get("XTASK", "target/debug/xtask"))
    parser.add_argument("--build-dir", type=Path, default=Path.home() / ".cache/papertune/llama.cpp")
    parser.add_argument("--prompt", action="append", dest="prompts")
    args = parser.parse_args()
    prompts = args.prompts or PROMPTS

    binary = build_llama_cpp(args.build_dir)
    config = tomllib.loads((args.run / "config.toml").read_text())
    source = config["model"]["source"]
    # A preset's GGUF lies in papertune's cache (fetched by the training run).
    cache = Path(os.environ.get("PAPERTUNE_CACHE") or Path.home() / ".cache/papertune") / "models" / source
    base = Path(source) if source.endswith(".gguf") else next(cache.glob("*.gguf"))
    adapter = args.run / args.checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        lora = Path(tmp) / "adapter.gguf"
        merged = Path(tmp) / "merged-q8_0.gguf"
        for fmt, out in [(["--format", "gguf-lora"], lora), (["--format", "gguf", "--type", "q8_0"], merged)]:
            subprocess.run([args.xtask, "export", "--run", str(args.run), "--checkpoint", args.checkpoint, *fmt, "--out", str(out)],
                           check=True, capture_output=True, cwd=REPO_ROOT)
        same = 0
        for prompt in prompts:
            texts = {
                "papertune f32": papertune_text(args.xtask, source, adapter, prompt, True),
                "papertune blocks": papertune_text(args.xtask, source, adapter, prompt, False),
                "llama.cpp --lora": llama_cpp_text(binary, base, prompt, lora),
                "llama.cpp merged q8_0": llama_cpp_text(binary, merged, prompt, None),
            }
            print(f"prompt: {prompt!r}")
            for name, text in texts.items():
                print(f"  {name:<22} {text!r}")
            equal = texts["llama.cpp --lora"] in (texts["papertune f32"], texts["papertune blocks"])
            same += equal
            print(f"  llama.cpp --lora equals papertune: {equal}")
        print(f"{same} of {len(prompts)} prompts: llama.cpp with the exported adapter gives papertune's greedy text")


if __name__ == "__main__":
    main()
