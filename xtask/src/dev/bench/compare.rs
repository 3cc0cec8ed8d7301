//! `bench --compare`: each workload against transformers + PEFT (`bench/torch_reference.py`) on
//! the same weights, shapes and thread count, both sides in processes of their own.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use papertune_models::source;
use serde_json::{Value, json};

use super::{BenchOptions, median, read_json_file};

/// Where the PyTorch side finds the same weights.
fn reference_weights() -> Result<(PathBuf, PathBuf)> {
    let minilm = source::resolve("minilm")?;
    let minilm_dir = minilm.config.parent().map(Path::to_path_buf).unwrap_or_default();
    let gguf = match source::resolve_llm("smollm2-135m")? {
        source::LlmFiles::Gguf(path) => path,
        source::LlmFiles::Folder { .. } => bail!("the smollm2-135m preset is expected to be a GGUF file"),
    };
    Ok((minilm_dir, gguf))
}

/// `--compare`: each workload in a process of its own on both sides (so that peak memory is the
/// workload's), PyTorch through `bench/torch_reference.py`, `rounds` times each, alternating
/// which side goes first; prints the ratio table and returns papertune's results with the
/// PyTorch figures and ratios added.
///
/// This machine's speed drifts by tens of percent over minutes, which moves one side's figure
/// and not the other's. So each round pairs a papertune run with the PyTorch run next to it,
/// and the reported ratio is the median of the rounds' ratios; the throughputs are each side's
/// median and the peak memory each side's largest.
pub(super) fn compare(options: &BenchOptions) -> Result<Value> {
    if options.precision.is_half() {
        bail!("--compare measures against PyTorch in f32; drop --precision {}", options.precision);
    }
    let (minilm_dir, gguf) = reference_weights()?;
    let scratch = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let repeats = options.repeats.to_string();
    let run_ours = |name: &str, json: &Path| -> Result<Value> {
        tracing::info!("{name}: papertune ({})", options.backend);
        let status = std::process::Command::new(&exe)
            .args(["bench", "--only", name, "--repeats", &repeats, "--backend", &options.backend])
            .arg("--json")
            .arg(json)
            .stdout(std::process::Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "papertune's {name} failed ({status})");
        Ok(read_json_file(json)?[name].clone())
    };
    let run_theirs = |name: &str, json: &Path| -> Result<Value> {
        tracing::info!("{name}: PyTorch");
        let status = std::process::Command::new("python3")
            .arg("bench/torch_reference.py")
            .args(["--only", name, "--repeats", &repeats])
            .arg("--minilm")
            .arg(&minilm_dir)
            .arg("--gguf")
            .arg(&gguf)
            .arg("--json")
            .arg(json)
            .stdout(std::process::Stdio::null())
            .status()
            .map_err(|e| anyhow::anyhow!("cannot run python3 bench/torch_reference.py: {e}"))?;
        anyhow::ensure!(status.success(), "bench/torch_reference.py {name} failed ({status}); it needs torch, transformers, peft and gguf");
        Ok(read_json_file(json)?[name].clone())
    };
    let number = |v: &Value, key: &str| v[key].as_f64().unwrap_or(f64::NAN);
    let mut out = serde_json::Map::new();
    let mut table = vec![
        "| workload | unit | papertune | PyTorch | ratio | ratio by round | peak RSS papertune (MiB) | peak RSS PyTorch (MiB) |".to_owned(),
        "|---|---|---|---|---|---|---|---|".to_owned(),
    ];
    for name in &options.only {
        let (ours_json, theirs_json) = (scratch.path().join(format!("{name}.papertune.json")), scratch.path().join(format!("{name}.torch.json")));
        let mut rounds = Vec::new();
        for round in 0..options.rounds.max(1) {
            let (ours, theirs) = if round % 2 == 0 {
                let ours = run_ours(name, &ours_json)?;
                (ours, run_theirs(name, &theirs_json)?)
            } else {
                let theirs = run_theirs(name, &theirs_json)?;
                (run_ours(name, &ours_json)?, theirs)
            };
            tracing::info!(
                "{name} round {}: papertune {:.2}, PyTorch {:.2}",
                round + 1,
                number(&ours, "throughput"),
                number(&theirs, "throughput")
            );
            rounds.push((ours, theirs));
        }
        let side = |pick: fn(&(Value, Value)) -> &Value, key: &str| rounds.iter().map(|r| number(pick(r), key)).collect::<Vec<f64>>();
        let by_round: Vec<f64> = rounds.iter().map(|(o, t)| number(o, "throughput") / number(t, "throughput")).collect();
        let ratio = median(&mut by_round.clone());
        let (ours_tp, theirs_tp) = (median(&mut side(|r| &r.0, "throughput")), median(&mut side(|r| &r.1, "throughput")));
        let peak = |values: Vec<f64>| values.into_iter().fold(f64::NAN, f64::max);
        let (ours_rss, theirs_rss) = (peak(side(|r| &r.0, "peak_rss_mib")), peak(side(|r| &r.1, "peak_rss_mib")));
        let (mut ours, mut theirs) = rounds.last().cloned().expect("at least one round");
        table.push(format!(
            "| {name} | {} | {ours_tp:.2} | {theirs_tp:.2} | {ratio:.2} | {} | {ours_rss:.0} | {theirs_rss:.0} |",
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
