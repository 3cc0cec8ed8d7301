"""The llama.cpp side of papertune's exports: greedy text of llama.cpp with the exported adapter
against papertune's greedy text with the run's adapter, on the same prompts.

1. llama.cpp is built from the sdist of PyPI's `llama-cpp-python` (which vendors llama.cpp):
   `pip download --no-binary llama-cpp-python`, then CMake builds `llama-completion` and
   `llama-quantize` (a few minutes on two cores; needs cmake, ninja and a C++ compiler; kept in
   --build-dir), and `llama_cpp_top_logits.cpp` (beside this script) is compiled against it.
2. `cargo xtask export --format gguf-lora` writes the run's adapter as llama.cpp's LoRA GGUF, and
   `--format gguf --type q8_0` the merged model. When the base GGUF is quantised,
   `llama-quantize --allow-requantize ... F32` writes its weights decoded to f32, the base that
   papertune's `--dequantize` path computes with.
3. For each prompt, 20 greedy tokens from papertune (`cargo xtask generate --adapter`, weights
   decoded to f32 and from the blocks) and from llama.cpp with `--lora` (on the f32 base and on
   the quantised one) and with the merged Q8_0 model, printed side by side.

Two checks:
- the adapter: llama.cpp with the adapter on the f32 base gives papertune's f32 text. Both
  compute in f32, so the texts must be equal; the script exits with 1 when one is not.
- the quantised base: llama.cpp with the adapter on the GGUF's own blocks against papertune's
  block path. Both round the activations to 8 bits for the products, each in its own way (the
  logits move by a few tenths either way), so texts can part where the best two tokens are
  that close. Where they part, both sides' most likely tokens at that step are printed with
  their logits, to show the margin.

Usage:
    python3 scripts/llama_cpp_roundtrip.py --run RUN [--checkpoint best|last] [--xtask PATH]
        [--build-dir DIR] [--prompt TEXT ...]
"""

import argparse
import os
import re
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


TOP = 3
STEP_LINE = re.compile(r"^step (\d+): (.*)$")
CANDIDATE = re.compile(r'"((?:[^"\\]|\\.)*)" (-?[0-9.]+)')


class LlamaCpp:
    """The llama.cpp programs this check uses, built once in `build_dir`."""

    def __init__(self, build_dir: Path):
        source = build_dir / "llama.cpp"
        bin_dir = source / "build/bin"
        self.completion = bin_dir / "llama-completion"
        self.quantize = bin_dir / "llama-quantize"
        self.top_logits = build_dir / "llama_cpp_top_logits"
        if not source.exists():
            build_dir.mkdir(parents=True, exist_ok=True)
            download = build_dir / "sdist"
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "llama-cpp-python", "llama-cpp-python", "-d", str(download)],
                check=True,
            )
            archive = next(download.glob("llama_cpp_python-*.tar.gz"))
            with tarfile.open(archive) as tar:
                tar.extractall(build_dir, filter="data")
            next(build_dir.glob("llama_cpp_python-*/vendor/llama.cpp")).rename(source)
        if not (self.completion.exists() and self.quantize.exists()):
            if not (source / "build/build.ninja").exists():
                flags = ["-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF", "-DGGML_NATIVE=ON", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF"]
                subprocess.run(["cmake", "-S", str(source), "-B", str(source / "build"), "-G", "Ninja", *flags], check=True)
            targets = ["llama-completion", "llama-quantize", "llama-bench"]
            subprocess.run(["cmake", "--build", str(source / "build"), "-j", str(os.cpu_count() or 2), "--target", *targets], check=True)
        if not self.top_logits.exists():
            probe = Path(__file__).resolve().with_name("llama_cpp_top_logits.cpp")
            subprocess.run(
                [os.environ.get("CXX", "c++"), "-O2", "-std=c++17", "-I", str(source / "include"), "-I", str(source / "ggml/include"), str(probe),
                 "-L", str(bin_dir), "-lllama", "-lggml", "-lggml-base", f"-Wl,-rpath,{bin_dir.resolve()}", "-o", str(self.top_logits)],
                check=True,
            )

    def text(self, model: Path, prompt: str, lora: Path | None, f32_cache: bool = False) -> str:
        command = [str(self.completion), "-m", str(model), "-p", prompt, "-n", str(NEW_TOKENS), "--temp", "0", "--top-k", "1", "-s", "0",
                   "--no-display-prompt", "--no-warmup", "-t", str(os.cpu_count() or 2), "-no-cnv"]
        if f32_cache:
            # The KV cache in f32 too (llama.cpp keeps it in f16 by default).
            command += ["--cache-type-k", "f32", "--cache-type-v", "f32"]
        if lora is not None:
            command += ["--lora", str(lora)]
        out = subprocess.run(command, check=True, capture_output=True, text=True)
        # llama-completion ends its output with a blank line of its own.
        return out.stdout.removesuffix("\n\n")

    def candidates(self, model: Path, prompt: str, lora: Path | None) -> list[str]:
        command = [str(self.top_logits), str(model), str(lora) if lora else "-", prompt, str(NEW_TOKENS), str(TOP)]
        out = subprocess.run(command, check=True, capture_output=True, text=True)
        return [line for line in out.stdout.splitlines() if STEP_LINE.match(line)]

    def f32_copy(self, model: Path, out: Path) -> None:
        subprocess.run([str(self.quantize), "--allow-requantize", str(model), str(out), "F32"], check=True, capture_output=True)


def papertune(xtask: str, base: str, adapter: Path, prompt: str, dequantize: bool) -> tuple[str, list[str]]:
    """papertune's greedy text, and its `--top-logits` lines (one a step)."""
    command = [xtask, "generate", "--model", base, "--adapter", str(adapter), "--prompt", prompt, "--max-new-tokens", str(NEW_TOKENS),
               "--top-logits", str(TOP), "--quiet"]
    if dequantize:
        command.append("--dequantize")
    out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO_ROOT)
    return out.stdout.rstrip("\n"), [line for line in out.stderr.splitlines() if STEP_LINE.match(line)]


def unescape(piece: str) -> str:
    """The text of a candidate quoted as Rust's `{:?}` quotes it."""
    piece = re.sub(r"\\u\{([0-9a-f]+)\}", lambda m: chr(int(m.group(1), 16)), piece)
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "r": "\r"}.get(m.group(1), m.group(1)), piece)


def parting_step(steps: list[str], other_text: str) -> int | None:
    """The first step whose greedy token (the first candidate) leaves `other_text`'s prefix."""
    text = ""
    for step, line in enumerate(steps):
        first = CANDIDATE.search(STEP_LINE.match(line).group(2))
        text += unescape(first.group(1)) if first else ""
        if not other_text.startswith(text):
            return step
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--checkpoint", default="best", choices=["best", "last"])
    parser.add_argument("--xtask", default=os.environ.get("XTASK", "target/debug/xtask"))
    parser.add_argument("--build-dir", type=Path, default=Path.home() / ".cache/papertune/llama.cpp")
    parser.add_argument("--prompt", action="append", dest="prompts")
    args = parser.parse_args()
    prompts = args.prompts or PROMPTS

    llama = LlamaCpp(args.build_dir)
    config = tomllib.loads((args.run / "config.toml").read_text())
    source = config["model"]["source"]
    # A preset's GGUF lies in papertune's cache (fetched by the training run).
    cache = Path(os.environ.get("PAPERTUNE_CACHE") or Path.home() / ".cache/papertune") / "models" / source
    base = Path(source) if source.endswith(".gguf") else next(cache.glob("*.gguf"))
    adapter = args.run / args.checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        lora = Path(tmp) / "adapter.gguf"
        merged = Path(tmp) / "merged-q8_0.gguf"
        base_f32 = Path(tmp) / "base-f32.gguf"
        for fmt, out in [(["--format", "gguf-lora"], lora), (["--format", "gguf", "--type", "q8_0"], merged)]:
            subprocess.run([args.xtask, "export", "--run", str(args.run), "--checkpoint", args.checkpoint, *fmt, "--out", str(out)],
                           check=True, capture_output=True, cwd=REPO_ROOT)
        llama.f32_copy(base, base_f32)
        same_f32 = same_blocks = 0
        for prompt in prompts:
            f32_text, f32_steps = papertune(args.xtask, source, adapter, prompt, True)
            blocks_text, blocks_steps = papertune(args.xtask, source, adapter, prompt, False)
            texts = {
                "papertune f32": f32_text,
                "llama.cpp --lora, f32 base": llama.text(base_f32, prompt, lora, f32_cache=True),
                "papertune blocks": blocks_text,
                "llama.cpp --lora, blocks": llama.text(base, prompt, lora),
                "llama.cpp merged q8_0": llama.text(merged, prompt, None),
            }
            print(f"prompt: {prompt!r}")
            for name, text in texts.items():
                print(f"  {name:<27} {text!r}")
            equal_f32 = texts["llama.cpp --lora, f32 base"] == f32_text
            equal_blocks = texts["llama.cpp --lora, blocks"] == blocks_text
            same_f32 += equal_f32
            same_blocks += equal_blocks
            print(f"  f32 base: llama.cpp equals papertune: {equal_f32}")
            print(f"  quantised base: llama.cpp equals papertune: {equal_blocks}")
            if not equal_blocks:
                step = parting_step(blocks_steps, texts["llama.cpp --lora, blocks"])
                if step is not None:
                    theirs = llama.candidates(base, prompt, lora)
                    print(f"  where they part, {TOP} most likely tokens and their logits:")
                    if step < len(f32_steps):
                        print(f"    papertune f32     {f32_steps[step]}")
                    print(f"    papertune blocks  {blocks_steps[step]}")
                    print(f"    llama.cpp blocks  {theirs[step] if step < len(theirs) else '(ended)'}")
        print(f"f32 base: {same_f32} of {len(prompts)} prompts give papertune's greedy text with the exported adapter in llama.cpp")
        print(f"quantised base: {same_blocks} of {len(prompts)} prompts give the same greedy text in both")
        if same_f32 != len(prompts):
            sys.exit(1)


if __name__ == "__main__":
    main()
