//! `gpu-check`: on a machine with an NVIDIA GPU and a `--features cuda` build, the parity,
//! half-precision and backend tests with CUDA required, then the benchmark on CUDA in each
//! precision.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use papertune_models::precision::Precision;

use super::bench::read_json_file;
use crate::backend;

#[derive(Args)]
pub struct GpuCheckArgs {
    /// Also write the benchmark's JSON here.
    #[arg(long, default_value = "gpu-check.json")]
    json: PathBuf,
    /// Timed repeats of each workload.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
}

/// `gpu-check`: CUDA must be compiled in and a driver present; runs the parity, half-precision
/// and backend tests with CUDA required, then the four workloads on CUDA in f32 and the
/// inference workloads in bf16 and f16.
pub fn run(args: GpuCheckArgs) -> Result<()> {
    let (json, repeats) = (&args.json, args.repeats);
    anyhow::ensure!(
        backend::compiled_in().contains(&"cuda"),
        "gpu-check needs CUDA compiled in: cargo run --release -p xtask --features cuda -- gpu-check"
    );
    anyhow::ensure!(
        Path::new("/proc/driver/nvidia/version").exists(),
        "no NVIDIA driver here (/proc/driver/nvidia/version is missing)"
    );
    tracing::info!("parity and training tests on cuda");
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["test", "--release", "-p", "papertune-integration", "--features", "cuda"])
            .args([
                "--test",
                "encoder_parity",
                "--test",
                "backends",
                "--test",
                "half_precision_bf16",
                "--test",
                "half_precision_f16",
            ])
            .args(["--", "--nocapture"])
            .env("PAPERTUNE_REQUIRE_BACKENDS", "cuda")
            .status()?;
    anyhow::ensure!(status.success(), "the CUDA tests failed ({status})");
    // A device's float type is fixed at its first tensor, so each precision runs in a process
    // of its own: this binary again, with `bench`.
    let exe = std::env::current_exe()?;
    let scratch = tempfile::tempdir()?;
    let mut results = serde_json::Map::new();
    for precision in Precision::ALL {
        tracing::info!("benchmark on cuda in {precision}");
        let out = scratch.path().join(format!("{precision}.json"));
        let status = std::process::Command::new(&exe)
            .args([
                "bench",
                "--backend",
                "cuda",
                "--precision",
                precision.name(),
                "--repeats",
                &repeats.max(1).to_string(),
            ])
            .arg("--json")
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "the cuda benchmark in {precision} failed ({status})");
        results.insert(precision.name().to_owned(), read_json_file(&out)?);
    }
    let text = serde_json::to_string_pretty(&serde_json::Value::Object(results))?;
    crate::output::write_atomic(json, text.as_bytes())?;
    println!("{text}");
    Ok(())
}
