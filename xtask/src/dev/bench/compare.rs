//! `bench --compare`: each workload against transformers + PEFT (`bench/torch_reference.py`) on
//! the same weights, shapes and thread count, and the generation workloads also against
//! llama.cpp's `llama-bench` on the same GGUF file where one is installed; every side in a
//! process of its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use papertune_models::source;
use serde_json::{Value, json};

use super::{BenchOptions, median, read_json_file};

/// Prompt and generated lengths of the W4 workloads (as `workloads::w4` runs them).
const W4_PROMPT: usize = 128;
const W4_NEW_TOKENS: usize = 32;

/// What the reference sides run for one of papertune's workloads.
struct Reference {
    /// The workload of `bench/torch_reference.py`.
    torch: &'static str,
    /// The LLM preset whose GGUF file both sides load (`None`: MiniLM).
    llm: Option<&'static str>,
    /// Whether llama.cpp runs it too (greedy generation).
    llama_cpp: bool,
}

fn reference(name: &str) -> Result<Reference> {
    let (torch, llm, llama_cpp) = match name {
        "W1" => ("W1", None, false),
        "W2" => ("W2", None, false),
        "W3" => ("W3", Some("smollm2-135m"), false),
        "W4" | "W4Q" => ("W4", Some("smollm2-135m"), true),
        "W4G" | "W4GF" => ("W4", Some("gemma3-270m"), true),
        // PEFT on the model decoded to f32: transformers has no LoRA through GGUF blocks.
        "W5" | "W5F" => ("W3", Some("gemma3-270m"), false),
        other => bail!("--compare knows W1, W2, W3, W4, W4Q, W4G, W4GF, W5 and W5F, not {other:?}"),
    };
    Ok(Reference { torch, llm, llama_cpp })
}

fn minilm_dir() -> Result<PathBuf> {
    let minilm = source::resolve("minilm")?;
    Ok(minilm.config.parent().map(Path::to_path_buf).unwrap_or_default())
}

fn gguf_file(preset: &str) -> Result<PathBuf> {
    match source::resolve_llm(preset)? {
        source::LlmFiles::Gguf(path) => Ok(path),
        source::LlmFiles::Folder { .. } => {
            bail!("the {preset} preset is expected to be a GGUF file")
        }
    }
}

/// llama.cpp's `llama-bench`: the file named by `PAPERTUNE_LLAMA_BENCH`, else the one on `PATH`.
fn llama_bench() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PAPERTUNE_LLAMA_BENCH") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("llama-bench"))
        .find(|candidate| candidate.is_file())
}

/// One side's result for the workload.
type Side<'a> = Box<dyn Fn() -> Result<Value> + 'a>;

/// `--compare`: each workload in a process of its own on every side (so that peak memory is the
/// workload's), `rounds` times each, rotating which side goes first; prints the ratio table and
/// returns papertune's results with the reference figures and ratios added.
///
/// This machine's speed drifts by tens of percent over minutes, which moves one side's figure
/// and not the other's. So each round pairs a papertune run with the reference runs next to
/// it, and the reported ratio is the median of the rounds' ratios; the throughputs are each
/// side's median and the peak memory each side's largest.
pub(super) fn compare(options: &BenchOptions) -> Result<Value> {
    if options.precision.is_half() {
        bail!("--compare measures against PyTorch in f32; drop --precision {}", options.precision);
    }
    let scratch = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let repeats = options.repeats.to_string();
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let llama_bench = llama_bench();
    match &llama_bench {
        Some(path) => tracing::info!("llama.cpp: {}", path.display()),
        None => tracing::info!(
            "llama.cpp: no llama-bench on PATH nor in PAPERTUNE_LLAMA_BENCH; its side is left out"
        ),
    }
    let number = |v: &Value, key: &str| v[key].as_f64().unwrap_or(f64::NAN);
    let mut out = serde_json::Map::new();
    let mut table = vec![
        "| workload | unit | papertune | PyTorch | ratio | ratio by round | llama.cpp | ratio to llama.cpp | peak RSS papertune (MiB) | peak RSS PyTorch (MiB) |".to_owned(),
        "|---|---|---|---|---|---|---|---|---|---|".to_owned(),
    ];
    for name in &options.only {
        let reference = reference(name)?;
        let weights = match reference.llm {
            Some(preset) => gguf_file(preset)?,
            None => minilm_dir()?,
        };
        let json_path = |side: &str| scratch.path().join(format!("{name}.{side}.json"));
        let ours: Side = Box::new(|| {
            tracing::info!("{name}: papertune ({})", options.backend);
            let path = json_path("papertune");
            let status = Command::new(&exe)
                .args([
                    "bench",
                    "--only",
                    name,
                    "--repeats",
                    &repeats,
                    "--backend",
                    &options.backend,
                ])
                .arg("--json")
                .arg(&path)
                .stdout(Stdio::null())
                .status()?;
            anyhow::ensure!(status.success(), "papertune's {name} failed ({status})");
            Ok(read_json_file(&path)?[name].clone())
        });
        let torch: Side = Box::new(|| {
            tracing::info!("{name}: PyTorch ({} on {})", reference.torch, weights.display());
            let path = json_path("torch");
            let status = Command::new("python3")
                .arg("bench/torch_reference.py")
                .args(["--only", reference.torch, "--repeats", &repeats])
                .arg(if reference.llm.is_some() { "--gguf" } else { "--minilm" })
                .arg(&weights)
                .arg("--json")
                .arg(&path)
                .stdout(Stdio::null())
                .status()
                .map_err(|e| anyhow::anyhow!("cannot run python3 bench/torch_reference.py: {e}"))?;
            anyhow::ensure!(
                status.success(),
                "bench/torch_reference.py {name} failed ({status}); it needs torch, transformers, peft and gguf"
            );
            Ok(read_json_file(&path)?[reference.torch].clone())
        });
        let mut sides = vec![ours, torch];
        if let (true, Some(bench)) = (reference.llama_cpp, &llama_bench) {
            let (weights, repeats) = (&weights, options.repeats);
            sides.push(Box::new(move || {
                tracing::info!("{name}: llama.cpp");
                llama_cpp_w4(bench, weights, repeats, threads)
            }));
        }
        let mut rounds: Vec<Vec<Value>> = Vec::new();
        for round in 0..options.rounds.max(1) {
            let mut results = vec![Value::Null; sides.len()];
            for k in 0..sides.len() {
                let side = (round + k) % sides.len();
                results[side] = sides[side]()?;
            }
            tracing::info!(
                "{name} round {}: {}",
                round + 1,
                results
                    .iter()
                    .map(|r| format!("{:.2}", number(r, "throughput")))
                    .collect::<Vec<_>>()
                    .join(" / ")
            );
            rounds.push(results);
        }
        let column = |side: usize, key: &str| {
            rounds.iter().map(|r| number(&r[side], key)).collect::<Vec<f64>>()
        };
        let ratios = |side: usize| {
            rounds
                .iter()
                .map(|r| number(&r[0], "throughput") / number(&r[side], "throughput"))
                .collect::<Vec<f64>>()
        };
        let peak = |values: Vec<f64>| values.into_iter().fold(f64::NAN, f64::max);
        let by_round = ratios(1);
        let ratio = median(&mut by_round.clone());
        let (ours_tp, theirs_tp) =
            (median(&mut column(0, "throughput")), median(&mut column(1, "throughput")));
        let (ours_rss, theirs_rss) =
            (peak(column(0, "peak_rss_mib")), peak(column(1, "peak_rss_mib")));
        let last = rounds.last().cloned().expect("at least one round");
        let (mut ours, mut theirs) = (last[0].clone(), last[1].clone());
        let (llama_cell, llama_ratio_cell) = match last.get(2) {
            Some(llama) => {
                let llama_tp = median(&mut column(2, "throughput"));
                let llama_ratio = median(&mut ratios(2));
                let mut llama = llama.clone();
                llama["throughput"] = json!(llama_tp);
                ours["llama_cpp"] = llama;
                ours["ratio_to_llama_cpp"] = json!(llama_ratio);
                (format!("{llama_tp:.2}"), format!("{llama_ratio:.2}"))
            }
            None => ("—".to_owned(), "—".to_owned()),
        };
        table.push(format!(
            "| {name} | {} | {ours_tp:.2} | {theirs_tp:.2} | {ratio:.2} | {} | {llama_cell} | {llama_ratio_cell} | {ours_rss:.0} | {theirs_rss:.0} |",
            ours["unit"].as_str().unwrap_or(""),
            by_round.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", "),
        ));
        theirs["throughput"] = json!(theirs_tp);
        theirs["peak_rss_mib"] = json!(theirs_rss);
        ours["throughput"] = json!(ours_tp);
        ours["peak_rss_mib"] = json!(ours_rss);
        ours["pytorch"] = theirs;
        ours["ratio"] = json!(ratio);
        ours["ratios_by_round"] = json!(by_round);
        out.insert(name.clone(), ours);
    }
    println!("{}", table.join("\n"));
    Ok(Value::Object(out))
}

/// W4 in llama.cpp: `llama-bench` times the 128-token prompt and the 32 generated tokens apart
/// (`-p 128 -n 32`); the W4 figure is 32 tokens over the sum of the two times.
fn llama_cpp_w4(bench: &Path, gguf: &Path, repeats: usize, threads: usize) -> Result<Value> {
    let output = Command::new(bench)
        .arg("-m")
        .arg(gguf)
        .args(["-p", &W4_PROMPT.to_string(), "-n", &W4_NEW_TOKENS.to_string()])
        .args(["-t", &threads.to_string(), "-r", &repeats.to_string(), "-o", "json"])
        .stderr(Stdio::null())
        .output()
        .with_context(|| format!("running {}", bench.display()))?;
    anyhow::ensure!(output.status.success(), "{} failed ({})", bench.display(), output.status);
    let runs: Value = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("{}: output is not JSON", bench.display()))?;
    let runs = runs
        .as_array()
        .with_context(|| format!("{}: expected a JSON array of tests", bench.display()))?;
    let seconds = |prompt: usize, generated: usize| -> Result<f64> {
        runs.iter()
            .find(|t| {
                t["n_prompt"].as_u64() == Some(prompt as u64)
                    && t["n_gen"].as_u64() == Some(generated as u64)
            })
            .and_then(|t| t["avg_ns"].as_f64())
            .map(|ns| ns / 1e9)
            .with_context(|| {
                format!("{}: no test with n_prompt {prompt} and n_gen {generated}", bench.display())
            })
    };
    let (prefill, decode) = (seconds(W4_PROMPT, 0)?, seconds(0, W4_NEW_TOKENS)?);
    let commit = runs.first().and_then(|t| t["build_commit"].as_str()).unwrap_or("unknown");
    Ok(json!({
        "throughput": W4_NEW_TOKENS as f64 / (prefill + decode),
        "unit": "tokens/s",
        "seconds": prefill + decode,
        "phases": { "prefill": prefill, "decode_per_token": decode / W4_NEW_TOKENS as f64 },
        "backend": format!("llama.cpp {commit} (cpu)"),
        "threads": threads,
    }))
}
