//! `train`: a run from a TOML config (a classifier or LoRA adapters, by the config's sections),
//! k folds of it, or the continuation of an interrupted run.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Result;
use clap::Args;
use papertune_models::precision::Precision;
use papertune_tasks::{TrainOptions, TrainReport, classify, keywords, llm};
use papertune_train::StopReason;

use super::device_for;
use crate::Globals;
use crate::backend;
use crate::config::{RunConfig, load_run_config};
use crate::ranks::Ranks;

#[derive(Args)]
pub struct TrainArgs {
    /// The run config (default: configs/default.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Backend: flex (CPU), ndarray (CPU), wgpu or cuda, if compiled in.
    #[arg(long)]
    backend: Option<String>,
    /// Override a config key, e.g. --set train.epochs=2 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Run folder (default: runs/<config name>, numbered if taken).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this folder from its last checkpoint, with its own config
    /// (training options may be changed with --set).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "out", "folds"])]
    resume: Option<PathBuf>,
    /// Train K runs on stratified folds of data.train (out/fold-1 ... fold-K); eval and
    /// predict take the parent folder as the ensemble of the folds. Classification only.
    #[arg(long, value_name = "K")]
    folds: Option<usize>,
    /// Stop after this optimizer step with a resumable checkpoint (train in sessions).
    #[arg(long, value_name = "N")]
    stop_at_step: Option<usize>,
    /// Data parallelism over N devices of the backend (GPUs 0..N-1; on a CPU backend, N
    /// threads sharing the cores): each step's micro-batches are shared among them, so
    /// train.gradient_accumulation_steps must be at least N.
    #[arg(long, value_name = "N", default_value_t = 1)]
    devices: usize,
    /// Where the trainer's events go besides metrics.jsonl: `tensorboard` (event files in
    /// RUN/tensorboard/ for `tensorboard --logdir`), or `none`; overrides train.log_to.
    #[arg(long = "log-to", value_name = "TARGET", value_delimiter = ',', value_parser = ["tensorboard", "none"])]
    log_to: Vec<String>,
    /// Print the resolved config (the file, defaults and --set overrides) as TOML and exit
    /// without training, e.g. `cargo xtask train --config configs/classify-minilm.toml --print-config`.
    #[arg(long)]
    print_config: bool,
}

pub fn run(args: TrainArgs, globals: &Globals) -> Result<()> {
    match crate::ranks::join()? {
        None => train(args, globals, None),
        Some(ranks) => match train(args, globals, Some(&ranks)) {
            // Every rank stopped after the same step; rank 0 saved.
            Err(error) if error.is::<Interrupted>() => Err(error),
            Err(error) => ranks.fail(error),
            Ok(()) => Ok(()),
        },
    }
}

/// The run, as one process or as one rank of a job over several (`ranks`).
fn train(args: TrainArgs, globals: &Globals, ranks: Option<&Ranks>) -> Result<()> {
    // Training runs in f32: pure half-precision updates round away AdamW's small steps, and
    // mixed precision is not implemented (`--precision` belongs to the inference commands).
    let precision = Precision::F32;
    let resuming = args.resume.is_some();
    // A run stops after a step it has taken: at 0 it would save nothing, and the resume hint
    // would name a folder that was never written.
    anyhow::ensure!(
        args.stop_at_step != Some(0),
        "--stop-at-step 0: a run stops after one of its steps; give 1 or more"
    );
    let (config, out) = match args.resume {
        Some(dir) => {
            anyhow::ensure!(
                dir.join("config.toml").is_file(),
                "no run folder at {} (expected config.toml inside); --resume continues a run that train wrote",
                dir.display()
            );
            (dir.join("config.toml"), dir)
        }
        None => {
            let config = args.config.unwrap_or_else(|| PathBuf::from("configs/default.toml"));
            let out = args.out.unwrap_or_else(|| default_run_dir(&config));
            (config, out)
        }
    };
    let overrides = with_log_to(args.overrides.clone(), &args.log_to)?;
    let resolved = load_run_config(&config, &overrides)?;
    if args.print_config {
        print!(
            "{}",
            resolved
                .to_toml()
                .map_err(|e| anyhow::anyhow!("the resolved config does not serialise: {e}"))?
        );
        return Ok(());
    }
    if let Some(ranks) = ranks {
        // Refused before the run folder is touched (the trainer checks it again).
        let train = resolved.train();
        anyhow::ensure!(
            train.gradient_accumulation_steps >= ranks.size(),
            "{} ranks share each step's micro-batches, but train.gradient_accumulation_steps is {}: set it to at least {} \
             (e.g. --set train.gradient_accumulation_steps={} --set train.batch_size={} keeps {} examples per step)",
            ranks.size(),
            train.gradient_accumulation_steps,
            ranks.size(),
            ranks.size() * train.gradient_accumulation_steps,
            (train.batch_size / ranks.size()).max(1),
            train.batch_size * train.gradient_accumulation_steps,
        );
        anyhow::ensure!(
            args.devices == 1,
            "--devices {} with {} ranks: a job over several processes takes one device per rank",
            args.devices,
            ranks.size()
        );
    }
    let backend_name = args.backend.clone().unwrap_or_else(|| backend::default_name().to_owned());
    let device = match ranks {
        Some(ranks) => backend::rank_device(&backend_name, ranks.local_rank(), precision)?,
        None => device_for(Some(&backend_name), precision)?,
    };
    let stop = papertune_train::stop_on_signals()?;
    let options = TrainOptions {
        show_progress: globals.show_progress(),
        resume: resuming,
        stop: Some(Arc::clone(&stop)),
        stop_at_step: args.stop_at_step,
        devices: backend::devices(&backend_name, args.devices, precision)?,
        backend: Some(backend_name),
        collective: ranks.map(Ranks::collective),
    };
    tracing::info!("run folder: {}{}", out.display(), if resuming { " (resuming)" } else { "" });
    let reports = match (&resolved, args.folds) {
        (RunConfig::Classify(c), Some(k)) => classify::train_folds(c, &out, k, &device, &options)?,
        (RunConfig::Classify(c), None) => vec![classify::train(c, &out, &device, &options)?],
        (RunConfig::Llm(_), Some(_)) => {
            anyhow::bail!("--folds applies to classification configs only")
        }
        (RunConfig::Llm(c), None) => vec![llm::train(c, &out, &device, &options)?],
        (RunConfig::Keywords(_), Some(_)) => {
            anyhow::bail!("--folds applies to classification configs only")
        }
        (RunConfig::Keywords(c), None) => vec![keywords::train(c, &out, &device, &options)?],
    };
    // Repeated in the resume hint of an interrupted run: a resume takes them from the command
    // line, not from the run folder (the device count does not change the result).
    let mut resume_flags = String::new();
    if let Some(name) = &args.backend {
        resume_flags.push_str(&format!(" --backend {name}"));
    }
    if args.devices > 1 {
        resume_flags.push_str(&format!(" --devices {}", args.devices));
    }
    let interrupted = stop.load(Ordering::SeqCst)
        && reports.iter().any(|r| r.stop_reason == StopReason::Interrupted);
    if ranks.is_none_or(|r| r.rank() == 0) {
        // Rank 0 tells.
        let extractor = matches!(&resolved, RunConfig::Keywords(c) if !c.method.name.trains());
        for report in &reports {
            print_train_report(report, &resume_flags, extractor);
        }
        if args.folds.is_some() && !interrupted {
            let metric = &resolved.train().metric_for_best;
            if let Some(summary) = classify::FoldsSummary::new(&reports, metric) {
                summary.lines().iter().for_each(|line| println!("{line}"));
                let file = out.join(papertune_tasks::run_dir::FOLDS_SUMMARY_FILE);
                if file.is_file() {
                    println!("summary: {}", file.display());
                }
            }
        }
        if !interrupted {
            let shown = if args.folds.is_some() { out.clone() } else { reports[0].run.clone() };
            println!("next: cargo xtask eval --run {} --data FILE", shown.display());
        }
    }
    if interrupted {
        // Saved and resumable, yet not finished: scripts must not take it for success.
        return Err(Interrupted.into());
    }
    Ok(())
}

/// `--log-to` as the last `--set` override of `train.log_to`, so that it wins.
fn with_log_to(mut overrides: Vec<String>, log_to: &[String]) -> Result<Vec<String>> {
    if log_to.is_empty() {
        return Ok(overrides);
    }
    let targets: Vec<&String> = log_to.iter().filter(|t| *t != "none").collect();
    anyhow::ensure!(
        targets.len() == log_to.len() || targets.is_empty(),
        "--log-to none cannot go with other targets"
    );
    let list: Vec<String> = targets.iter().map(|t| format!("{t:?}")).collect();
    overrides.push(format!("train.log_to=[{}]", list.join(", ")));
    Ok(overrides)
}

/// A run stopped by a signal after saving its last checkpoint: the process exits with status
/// 130 (as a shell reports a command ended by Ctrl-C), with nothing more to say.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

fn print_train_report(report: &TrainReport, resume_flags: &str, extractor: bool) {
    for line in train_report_lines(report, resume_flags, extractor) {
        println!("{line}");
    }
}

/// What `train` tells of a finished (or stopped) run. An extractor's run (tfidf, yake,
/// embed-rank) trains nothing: no loss, no steps, no report, only the files it wrote.
fn train_report_lines(report: &TrainReport, resume_flags: &str, extractor: bool) -> Vec<String> {
    let mut lines = vec![format!("run: {}", report.run.display())];
    let best = match (report.best_step, &report.best_metrics) {
        (Some(step), Some(metrics)) => {
            let figures: Vec<String> = metrics.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
            Some((step, figures.join(", ")))
        }
        _ => None,
    };
    if extractor {
        lines.push(format!(
            "prepared the {} extractor on {} examples ({} validation) in {:.1} s; it trains nothing",
            report.model, report.train_examples, report.valid_examples, report.train_seconds,
        ));
        if let Some((_, figures)) = best {
            lines.push(format!("validation: {figures}"));
        }
        lines.push(format!("wrote: {}", written_files(&report.run).join(", ")));
        return lines;
    }
    let final_loss = if report.final_loss.is_finite() {
        format!(", final loss {:.4}", report.final_loss)
    } else {
        String::new()
    };
    lines.push(format!(
        "trained {} on {} examples ({} validation): {} steps in {:.0} s ({:.2} examples/s, {:.0} tokens/s){final_loss}{}",
        report.model,
        report.train_examples,
        report.valid_examples,
        report.steps,
        report.train_seconds,
        report.examples_per_second,
        report.tokens_per_second,
        match report.stop_reason {
            StopReason::Completed => String::new(),
            StopReason::EarlyStopping => ", stopped early".into(),
            StopReason::Interrupted => format!(
                " -- interrupted; continue with: cargo xtask train --resume {}{resume_flags}",
                report.run.display()
            ),
        }
    ));
    if let Some((step, figures)) = best {
        lines.push(format!("best checkpoint at step {step}: valid {figures}"));
    }
    let html = report.run.join("report.html");
    if html.is_file() {
        lines.push(format!("report: {}", html.display()));
    }
    lines
}

/// The files and folders at the top of a run folder, sorted (folders with a trailing `/`).
fn written_files(run: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(run)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let folder = entry.file_type().ok()?.is_dir();
            (!name.starts_with('.')).then(|| if folder { format!("{name}/") } else { name })
        })
        .collect();
    names.sort();
    names
}

/// `runs/<config stem>`, or `runs/<stem>-2`, `-3`, ... when taken.
fn default_run_dir(config: &Path) -> PathBuf {
    let stem = config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    let base = Path::new("runs").join(&stem);
    let taken = |p: &Path| {
        p.exists() && std::fs::read_dir(p).map(|mut d| d.next().is_some()).unwrap_or(true)
    };
    if !taken(&base) {
        return base;
    }
    (2..)
        .map(|i| Path::new("runs").join(format!("{stem}-{i}")))
        .find(|p| !taken(p))
        .expect("some numbered folder is free")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(run: &Path) -> TrainReport {
        TrainReport {
            run: run.to_path_buf(),
            model: "yake".into(),
            train_examples: 10,
            valid_examples: 2,
            parameters: 0,
            trainable_parameters: 0,
            steps: 0,
            train_seconds: 0.25,
            examples_per_second: 48.0,
            final_loss: 0.0,
            best_step: Some(0),
            best_metrics: Some(papertune_train::Metrics::from([("kw_f1".to_owned(), 0.5)])),
            tokens_per_second: 0.0,
            stop_reason: StopReason::Completed,
            resumed_from: None,
            timings: Default::default(),
            backend: None,
        }
    }

    /// An extractor's run writes no report and no loss: the summary says what it did write.
    #[test]
    fn an_extractor_run_tells_what_it_wrote_and_no_loss_or_report() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["config.toml", "summary.json", "idf.json"] {
            std::fs::write(dir.path().join(name), "{}").unwrap();
        }
        let text = train_report_lines(&report(dir.path()), "", true).join("\n");
        assert!(!text.contains("report:") && !text.contains("loss"), "{text}");
        assert!(text.contains("wrote: config.toml, idf.json, summary.json"), "{text}");
        assert!(text.contains("kw_f1 0.5000"), "{text}");
        // A trained run stopped before any loss was logged shows no "final loss NaN".
        let mut stopped = report(dir.path());
        (stopped.steps, stopped.final_loss) = (1, f64::NAN);
        let text = train_report_lines(&stopped, "", false).join("\n");
        assert!(!text.contains("NaN") && !text.contains("report:"), "{text}");
        std::fs::write(dir.path().join("report.html"), "").unwrap();
        stopped.final_loss = 0.25;
        let text = train_report_lines(&stopped, "", false).join("\n");
        assert!(text.contains("final loss 0.2500") && text.contains("report: "), "{text}");
    }
}
