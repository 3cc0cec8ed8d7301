#!/usr/bin/env bash
# Replays papertune's catalogue of crafted inputs and careless commands against the built
# binary: every case must end with the exit status it expects (0 or 1, never a panic's 101 or
# an abort's 134), and a refused command must leave the run folder it touched as it was (or,
# for a new run, leave none). Prints one Markdown row per case (docs/reliability.md holds the
# table) and exits 1 if any case broke its promise.
#
#   scripts/crafted/replay.sh [path/to/xtask]      (default: target/debug/xtask)
#
# Needs python3 and the MiniLM and SmolLM2 weights in papertune's cache (the tests fetch them).
set -uo pipefail
cd "$(dirname "$0")/../.."
bin="${1:-target/debug/xtask}"
[ -x "$bin" ] || { echo "no binary at $bin (cargo build -p xtask)" >&2; exit 2; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
crafted="$work/crafted"
python3 scripts/crafted/make.py "$crafted" || exit 2
failures=0

# A digest of every file under a folder (or "absent").
tree_digest() {
  if [ -e "$1" ]; then (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16); else echo absent; fi
}

# case NAME EXPECTED_STATUS WATCHED_FOLDER -- ARGS...: runs the binary with ARGS; WATCHED_FOLDER
# (or "-") must be the same afterwards.
case_() {
  local name="$1" expected="$2" watched="$3"
  shift 4
  local before after status message
  before="$(tree_digest "$watched")"
  NO_COLOR=1 timeout 300 "$bin" --quiet "$@" > "$work/out" 2> "$work/err"
  status=$?
  after="$(tree_digest "$watched")"
  message="$(grep -m1 '^error' "$work/err" | cut -c1-220 | sed 's/|/\\|/g')"
  [ -z "$message" ] && message="$(head -c 120 "$work/out" | tr '\n' ' ' | sed 's/|/\\|/g')"
  local verdict=ok
  if [ "$status" != "$expected" ]; then verdict="FAILED: exit $status, expected $expected"; fi
  if [ "$watched" != "-" ] && [ "$before" != "$after" ]; then verdict="FAILED: $watched changed"; fi
  [ "$verdict" = ok ] || failures=$((failures + 1))
  local shown="${*//$work/…}"
  echo "| $name | \`xtask ${shown//$crafted/…}\` | $status | ${message//$work/…} | $verdict |"
}

# Messages in papertune's words: case_, and the command's output (stdout and stderr) must match
# WANTED and must not match UNWANTED (grep -E patterns; "-" for none). A miss is a failed case
# of its own row.
says() {
  local name="$1" expected="$2" watched="$3" wanted="$4" unwanted="$5"
  shift 6
  case_ "$name" "$expected" "$watched" -- "$@"
  local said problem=""
  said="$(cat "$work/out" "$work/err")"
  if [ "$wanted" != "-" ] && ! grep -qE -- "$wanted" <<< "$said"; then problem="the output lacks /$wanted/"; fi
  if [ "$unwanted" != "-" ] && grep -qE -- "$unwanted" <<< "$said"; then problem="the output holds /$unwanted/"; fi
  if [ -n "$problem" ]; then
    failures=$((failures + 1))
    echo "| $name (message) | | | | FAILED: ${problem//|/\\|} |"
  fi
}

echo "| case | command | exit | error (first line) or output | verdict |"
echo "|---|---|---|---|---|"

# A small real run to be careless with, stopped after step 1 of 3 (resumable).
run="$work/run"
"$bin" --quiet train --config configs/classify-minilm.toml --set data.max_rows=64 --set train.max_steps=3 --stop-at-step 1 --out "$run" > /dev/null 2>&1 \
  || { echo "could not train the run the cases need" >&2; exit 2; }

# Run folders: refused commands change nothing; a refused new run leaves no folder.
case_ "resume with another seed" 1 "$run" -- train --resume "$run" --set train.seed=7
case_ "resume with another batch size" 1 "$run" -- train --resume "$run" --set train.batch_size=8
case_ "resume with another model" 1 "$run" -- train --resume "$run" --set model.max_len=64
case_ "new run into a used folder" 1 "$run" -- train --config configs/classify-minilm.toml --out "$run"
case_ "warmup longer than training" 1 "$work/warmup" -- train --config configs/classify-minilm.toml --set data.max_rows=64 --set train.max_steps=2 --set train.warmup_steps=100 --out "$work/warmup"
case_ "more devices than micro-batches" 1 "$work/devices" -- train --config configs/classify-minilm.toml --set data.max_rows=64 --devices 2 --out "$work/devices"
case_ "model.max_len above the encoder's" 1 "$work/long" -- train --config configs/classify-minilm.toml --set data.max_rows=64 --set model.max_len=100000 --out "$work/long"
case_ "max_grad_norm = nan" 1 "$work/nan" -- train --config "$crafted/config-nan-clip.toml" --out "$work/nan"
says "unknown config key" 1 "$work/unknown" 'unknown key train.learning_rate: did you mean train.lr\?' - -- train --config "$crafted/config-unknown-key.toml" --out "$work/unknown"
case_ "--set of a wrong type" 1 "$work/lr" -- train --config configs/classify-minilm.toml --set train.lr=abc --out "$work/lr"
says "missing run folder" 1 - "no run folder at .*/none \(expected config.toml inside\)" 'os error' -- eval --run "$work/none" --data "$crafted/papers-bad-label.csv"
case_ "folds.json naming a folder outside" 1 - -- eval --run "$crafted/folds-escape" --data "$crafted/papers-bad-label.csv"

# Tables.
case_ "predict with labels other than 0/1" 0 "$run" -- predict --run "$run" --data "$crafted/papers-bad-label.csv" --output -
case_ "eval with labels other than 0/1" 1 "$run" -- eval --run "$run" --data "$crafted/papers-bad-label.csv"
case_ "table without a title column" 1 "$run" -- eval --run "$run" --data "$crafted/papers-no-title.csv"
case_ "table without rows" 1 "$run" -- eval --run "$run" --data "$crafted/papers-empty.csv"
case_ "binary bytes as CSV" 1 "$run" -- eval --run "$run" --data "$crafted/papers-binary.csv"
case_ "a cell of 6 MB" 1 "$run" -- eval --run "$run" --data "$crafted/papers-6mb-cell.csv"

# Keyword runs and extractors.
case_ "keyword run: idf.json of 99-word phrases" 1 - -- eval --run "$crafted/kw-idf-ngrams" --data "$crafted/keywords.csv"
case_ "keyword run: idf.json counts at their limits" 0 - -- eval --run "$crafted/kw-idf-counts" --data "$crafted/keywords.csv"
case_ "keyword run: top_k u64::MAX" 1 - -- eval --run "$crafted/kw-top-k" --data "$crafted/keywords.csv"
case_ "keywords --top-k u64::MAX" 1 - -- keywords --method yake --top-k 18446744073709551615 --data "$crafted/keywords.csv"
case_ "keywords without gold keywords" 0 - -- keywords --method yake --data "$crafted/papers-bad-label.csv"
case_ "keyword config with decode.top_k = 0" 1 "$work/kw" -- train --config configs/keywords-best.toml --set data.train="$crafted/keywords.csv" --set decode.top_k=0 --out "$work/kw"

# GGUF files.
for file in "$crafted"/gguf-*.gguf; do
  case_ "$(basename "$file" .gguf)" 1 - -- generate --model "$file" --prompt x --max-new-tokens 2
done
# Exports: a classifier run has no adapter; an existing output is never overwritten.
case_ "export of a classifier run" 1 "$run" -- export --run "$run" --format gguf-lora --out "$work/adapter.gguf"
touch "$work/taken.gguf"
case_ "export onto an existing file" 1 "$run" -- export --run "$run" --format gguf --out "$work/taken.gguf"

# Predictions beyond the submission's three columns, and a classifier run for transformers.
case_ "predict --threshold nan" 1 "$run" -- predict --run "$run" --data "$crafted/papers-bad-label.csv" --output - --threshold nan
case_ "predict --scores --threshold 0" 0 "$run" -- predict --run "$run" --data "$crafted/papers-bad-label.csv" --output - --scores --threshold 0
case_ "predict with a keyword run alone" 0 - -- predict --run "$crafted/kw-idf-counts" --data "$crafted/keywords.csv" --output -
case_ "export of a classifier run as a transformers folder" 0 "$run" -- export --run "$run" --format hf --out "$work/classifier-hf"
case_ "--max-new-tokens 1e9" 1 - -- generate --model smollm2-135m --prompt x --max-new-tokens 1000000000
case_ "--max-new-tokens u64::MAX" 1 - -- generate --model smollm2-135m --prompt x --max-new-tokens 18446744073709551615

# Encoder folders: configs, safetensors headers, an index that points outside.
for folder in config-zero-heads config-dropout-one safetensors-header-length safetensors-offsets-outside safetensors-index-escape; do
  case_ "$folder" 1 - -- embed --model "$crafted/$folder" --text x
done
case_ "a path that does not exist" 1 - -- embed --model "$work/no/such/model" --text x

# Where papertune writes: a named output is a new file, an existing one only with --force, a
# FIFO or a device written to in place (a failed write is an error), never a symbolic link; a
# table may come from a FIFO; one command at a time writes a run folder (it holds .lock), and a
# resume that cannot save its checkpoint leaves the folder as it was.
outputs="$work/outputs"
mkdir -p "$outputs"
echo kept > "$outputs/taken.csv"
ln -s "$outputs/taken.csv" "$outputs/link.csv"
case_ "predict onto an existing file" 1 "$outputs" -- predict --run "$run" --data "$crafted/papers-bad-label.csv" --output "$outputs/taken.csv"
case_ "predict onto a symbolic link, with --force" 1 "$outputs" -- predict --run "$run" --data "$crafted/papers-bad-label.csv" --output "$outputs/link.csv" --force
case_ "eval --predictions onto an existing file" 1 "$outputs" -- eval --run "$crafted/kw-idf-counts" --data "$crafted/keywords.csv" --predictions "$outputs/taken.csv"
case_ "predict onto an existing file, with --force" 0 - -- predict --run "$run" --data "$crafted/papers-bad-label.csv" --output "$outputs/taken.csv" --force
if [ -c /dev/full ]; then
  case_ "predict to /dev/full (no space left)" 1 - -- predict --run "$run" --data "$crafted/papers-bad-label.csv" --output /dev/full
fi
mkfifo "$outputs/out.csv" "$outputs/papers.csv"
timeout 300 cat "$outputs/out.csv" > "$work/from-fifo" &
case_ "predict into a FIFO" 0 - -- predict --run "$run" --data "$crafted/papers-bad-label.csv" --output "$outputs/out.csv"
wait $!
if ! head -1 "$work/from-fifo" | grep -q '^uuid,Keywords,label'; then
  failures=$((failures + 1))
  echo "| predict into a FIFO (what came out) | | | | FAILED: no submission came out of the FIFO |"
fi
timeout 300 sh -c 'cat "$1" > "$2"' _ "$crafted/papers-bad-label.csv" "$outputs/papers.csv" &
case_ "predict reading its table from a FIFO" 0 - -- predict --run "$run" --data "$outputs/papers.csv" --output -
wait $!
case_ "train --stop-at-step 0" 1 "$work/step0" -- train --config configs/classify-minilm.toml --set data.max_rows=64 --stop-at-step 0 --out "$work/step0"
# Another command holding the run folder's lock (as a training does).
python3 -c 'import fcntl, sys, time
lock = open(sys.argv[1], "a"); fcntl.flock(lock, fcntl.LOCK_EX); open(sys.argv[2], "w").close(); time.sleep(300)' "$run/.lock" "$work/locked" &
holder=$!
for _ in $(seq 100); do [ -e "$work/locked" ] && break; sleep 0.1; done
case_ "report while another command writes the run" 1 "$run" -- report --run "$run"
case_ "resume while another command writes the run" 1 "$run" -- train --resume "$run"
kill "$holder" 2> /dev/null
wait "$holder" 2> /dev/null
# A resume whose checkpoints cannot be saved (their staging names taken by files).
touch "$run/best.tmp" "$run/last.tmp"
case_ "resume that cannot save its checkpoint" 1 "$run" -- train --resume "$run"
rm -f "$run/best.tmp" "$run/last.tmp"

# Messages that speak papertune's words: no polars advice for Python, no bare system errors, and
# a summary that says what a run wrote.
polars_advice='infer_schema_length|ignore_errors|truncate_ragged_lines|=True'
says "CSV row with more fields than its header" 1 "$run" 'papers-ragged.csv: .*row 2 \(line 3\) has 5 fields but the header has 4' "$polars_advice" -- eval --run "$run" --data "$crafted/papers-ragged.csv"
says "a checkpoint folder given as the run" 1 "$run" "is a checkpoint of the run folder .*/run: pass that folder" 'os error' -- eval --run "$run/last" --data "$crafted/papers-bad-label.csv"
says "resume of a missing run folder" 1 - "no run folder at .*/none \(expected config.toml inside\)" 'os error' -- train --resume "$work/none"
says "a causal-LM preset in a classifier config" 1 "$work/llm-preset" 'smollm2-135m.*is a causal-LM preset: it goes in a LoRA config' 'not a preset' -- train --config configs/classify-minilm.toml --set data.max_rows=64 --set model.source=smollm2-135m --out "$work/llm-preset"
says "a run folder given as the adapter" 1 - "lora-run/last \(pass that folder\)" 'os error' -- generate --model smollm2-135m --adapter "$crafted/lora-run" --prompt x --max-new-tokens 1
says "keyword extractor run" 0 - 'wrote: config.toml, summary.json' 'report:|final loss' -- train --config "$crafted/config-kw-yake.toml" --out "$work/kw-yake"

# Ctrl-C at the command line: the run finishes its step, saves last/ and exits with 130.
interrupted="$work/interrupted"
NO_COLOR=1 "$bin" --quiet train --config configs/classify-minilm.toml --set data.max_rows=64 --set train.max_steps=400 --set train.save_strategy=steps --set train.save_every_steps=1 --out "$interrupted" > /dev/null 2> "$work/err" &
pid=$!
for _ in $(seq 600); do
  [ -e "$interrupted/last/trainer_state.json" ] && break
  kill -0 "$pid" 2> /dev/null || break
  sleep 0.5
done
kill -INT "$pid" 2> /dev/null
wait "$pid"
status=$?
verdict=ok
if [ "$status" != 130 ]; then verdict="FAILED: exit $status, expected 130"; fi
if [ ! -e "$interrupted/last/trainer_state.json" ]; then verdict="FAILED: no last/ checkpoint"; fi
[ "$verdict" = ok ] || failures=$((failures + 1))
echo "| Ctrl-C during training | \`xtask train ... --out …/interrupted\` then SIGINT | $status | $(grep -m1 -i 'resume' "$work/err" | cut -c1-160 | sed 's/|/\\|/g;s#'"$work"'#…#g') | $verdict |"

if [ "$failures" -gt 0 ]; then
  echo "replay: $failures case(s) broke their promise" >&2
  exit 1
fi
echo "replay: every case ended as expected" >&2
