//! Data parallelism across processes on MPI (feature `mpi`; CI runs these with Open MPI on
//! loopback). Each test starts `mpirun -np 2` on this test binary's `mpi_rank` entry, which
//! trains as one rank of the job; the parent compares the run with one trained in a single
//! process: a tiny encoder (head dropout on) and a tiny LoRA decoder (adapter dropout on), 15
//! steps of 2 micro-batches, resumed across a change of rank count both ways; a job stopped by
//! SIGUSR1 to mpirun; a job whose rank 1 is killed, which ends with an error and resumes; and
//! one whose rank 1 hangs, which ends at the collectives' deadline.

#![cfg(feature = "mpi")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::tensor::Device;
use papertune_data::InstructionTask;
use papertune_integration::{
    synthetic_words, write_synthetic_rows, write_tiny_bert, write_tiny_llm,
};
use papertune_models::checkpoint::Checkpoint;
use papertune_models::lora::LoraConfig;
use papertune_tasks::TrainOptions;
use papertune_tasks::classify::{self, ClassifyConfig};
use papertune_tasks::llm::{self, LlmConfig};
use papertune_train::MpiWorld;

/// Set for the ranks: what to train, as `task|root|out|stop_at_step|resume|max_steps`.
/// The ranks' collective operations time out after 60 s, or after [`TIMEOUT_ENV`] seconds.
const RANK_ENV: &str = "PAPERTUNE_MPI_TEST_RANK";
const TIMEOUT_ENV: &str = "PAPERTUNE_MPI_TEST_TIMEOUT";

/// The synthetic rows (24 for training), batch 2 with 2 micro-batches per step, 15 steps.
fn encoder_config(root: &Path) -> ClassifyConfig {
    let mut config = ClassifyConfig::default();
    config.data.train = Some(root.join("rows.csv"));
    config.data.valid_fraction = 0.25;
    config.model.source = root.join("tiny-bert").to_string_lossy().into_owned();
    config.model.max_len = 16;
    config.head.dropout = Some(0.2);
    config.train.max_steps = Some(15);
    config.train.batch_size = 2;
    config.train.gradient_accumulation_steps = 2;
    config.train.lr = 2e-3;
    config.train.warmup_ratio = 0.2;
    config.train.eval_every_steps = Some(5);
    config.train.log_every_steps = 1;
    config
}

/// A tiny Llama with LoRA adapters (dropout on), 15 steps of 2 micro-batches.
fn decoder_config(root: &Path) -> LlmConfig {
    let mut config = LlmConfig::default();
    config.model.source = root.join("tiny-llm").to_string_lossy().into_owned();
    config.model.max_len = 64;
    config.model.max_answer_len = 4;
    config.generation.max_new_tokens = 4;
    config.model.eval_batch_size = 4;
    config.data.task = InstructionTask::Classify;
    config.data.train = Some(root.join("rows.csv"));
    config.data.valid_fraction = 0.25;
    config.lora = LoraConfig {
        r: 4,
        alpha: 8.0,
        dropout: 0.1,
        target_modules: vec!["all-linear".into()],
        ..Default::default()
    };
    config.train.max_steps = Some(15);
    config.train.batch_size = 2;
    config.train.gradient_accumulation_steps = 2;
    config.train.lr = 3e-3;
    config.train.eval_every_steps = Some(10);
    config.train.metric_for_best = "f1".into();
    config
}

/// The scratch folder with the tiny models and the data.
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bert(&dir.path().join("tiny-bert"), &synthetic_words(), 5);
    let mut words = synthetic_words();
    words.extend(["study", "results", "method", "k1", "k2", "a", "b", "0", "1"]);
    write_tiny_llm(&dir.path().join("tiny-llm"), &words, 7);
    write_synthetic_rows(&dir.path().join("rows.csv"));
    dir
}

/// What one run does, passed to the ranks through [`RANK_ENV`].
#[derive(Clone)]
struct Job {
    task: &'static str,
    out: PathBuf,
    stop_at_step: Option<usize>,
    resume: bool,
    max_steps: Option<usize>,
}

impl Job {
    fn new(task: &'static str, out: PathBuf) -> Self {
        Self { task, out, stop_at_step: None, resume: false, max_steps: None }
    }

    fn encode(&self, root: &Path) -> String {
        let opt = |v: Option<usize>| v.map_or_else(String::new, |v| v.to_string());
        format!(
            "{}|{}|{}|{}|{}|{}",
            self.task,
            root.display(),
            self.out.display(),
            opt(self.stop_at_step),
            self.resume,
            opt(self.max_steps)
        )
    }

    /// Trains in this process, as the only process or as one rank of `collective`.
    fn train(&self, root: &Path, collective: Option<Arc<MpiWorld>>) {
        let options = TrainOptions {
            stop_at_step: self.stop_at_step,
            resume: self.resume,
            // As `cargo xtask train` does: SIGINT, SIGTERM and SIGUSR1 ask the ranks to stop.
            stop: collective.is_some().then(|| papertune_train::stop_on_signals().unwrap()),
            collective: collective.map(|c| c as Arc<dyn papertune_train::Collective>),
            ..TrainOptions::default()
        };
        let device = Device::flex();
        match self.task {
            "encoder" => {
                let mut config = encoder_config(root);
                config.train.max_steps = self.max_steps.or(config.train.max_steps);
                classify::train(&config, &self.out, &device, &options).unwrap();
            }
            "decoder" => {
                let mut config = decoder_config(root);
                config.train.max_steps = self.max_steps.or(config.train.max_steps);
                llm::train(&config, &self.out, &device, &options).unwrap();
            }
            other => panic!("unknown task {other}"),
        }
    }

    /// Starts the job on `ranks` processes under mpirun.
    fn spawn(&self, root: &Path, ranks: usize) -> std::process::Child {
        self.spawn_with(root, ranks, 60)
    }

    /// Starts the job on `ranks` processes whose collective operations time out after
    /// `timeout` seconds.
    fn spawn_with(&self, root: &Path, ranks: usize, timeout: u64) -> std::process::Child {
        Command::new("mpirun")
            .args(["--allow-run-as-root", "--oversubscribe", "-np", &ranks.to_string()])
            .arg(std::env::current_exe().unwrap())
            .args(["mpi_rank", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env(RANK_ENV, self.encode(root))
            .env(TIMEOUT_ENV, timeout.to_string())
            // Shared-memory transport without cross-process memory attach, which containers often forbid.
            .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mpirun (Open MPI) is installed")
    }

    /// Runs the job on `ranks` processes and requires success.
    fn run_ranks(&self, root: &Path, ranks: usize) {
        let output = self.spawn(root, ranks).wait_with_output().unwrap();
        assert!(output.status.success(), "mpirun -np {ranks} failed:\n{}", describe(&output));
    }
}

fn describe(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// One rank of a job: trains what [`RANK_ENV`] says. Started by the tests below, not alone.
#[test]
#[ignore = "one rank of the MPI tests' jobs: they start it under mpirun"]
fn mpi_rank() {
    let spec = std::env::var(RANK_ENV).expect("started by an MPI test, which sets the job");
    let fields: Vec<&str> = spec.split('|').collect();
    let number = |s: &str| (!s.is_empty()).then(|| s.parse().unwrap());
    let task = match fields[0] {
        "encoder" => "encoder",
        "decoder" => "decoder",
        other => panic!("unknown task {other}"),
    };
    let job = Job {
        task,
        out: fields[2].into(),
        stop_at_step: number(fields[3]),
        resume: fields[4] == "true",
        max_steps: number(fields[5]),
    };
    let timeout = std::env::var(TIMEOUT_ENV).map_or(60, |s| s.parse().unwrap());
    let world =
        MpiWorld::from_launcher(Duration::from_secs(timeout)).unwrap().expect("started by mpirun");
    let root = PathBuf::from(fields[1]);
    std::fs::write(
        root.join(format!("pid-{}", papertune_train::Collective::rank(&world))),
        std::process::id().to_string(),
    )
    .unwrap();
    job.train(&root, Some(Arc::new(world)));
}

/// The largest difference between the tensors of two safetensors files with the same names.
fn max_difference(a: &Path, b: &Path) -> f32 {
    let (a, b) = (Checkpoint::read(a).unwrap(), Checkpoint::read(b).unwrap());
    assert_eq!(a.names().collect::<Vec<_>>(), b.names().collect::<Vec<_>>());
    let mut max = 0.0f32;
    for name in a.names() {
        let (x, y) = (a.get(name).unwrap(), b.get(name).unwrap());
        assert_eq!(x.shape, y.shape, "{name}");
        max = x.data.iter().zip(&y.data).fold(max, |m, (p, q)| m.max((p - q).abs()));
    }
    max
}

fn same_weights(a: &Path, b: &Path, file: &str) {
    let difference = max_difference(&a.join("last").join(file), &b.join("last").join(file));
    eprintln!("{} vs {}: max difference {difference:e}", a.display(), b.display());
    assert!(difference <= 1e-6, "{} and {} differ by {difference}", a.display(), b.display());
}

/// Trains `task` in one process, on 2 ranks, and on 2 ranks stopped after step 7 then resumed
/// in one process, and requires the same weights (`file` of `last/`) from all three; returns
/// the scratch folder with the one-process and the 2-rank runs.
fn one_process_two_ranks_and_two_then_one(
    task: &'static str,
    file: &str,
) -> (tempfile::TempDir, Job, Job) {
    let dir = scratch();
    let root = dir.path();
    let one = Job::new(task, root.join("one"));
    one.train(root, None);
    let two = Job::new(task, root.join("two"));
    two.run_ranks(root, 2);
    same_weights(&one.out, &two.out, file);
    let split = Job { stop_at_step: Some(7), ..Job::new(task, root.join("two-then-one")) };
    split.run_ranks(root, 2);
    Job { resume: true, stop_at_step: None, ..split.clone() }.train(root, None);
    same_weights(&one.out, &split.out, file);
    (dir, one, two)
}

#[test]
fn two_ranks_train_the_encoder_as_one_process_and_resume_across_rank_counts() {
    let (dir, one, two) = one_process_two_ranks_and_two_then_one("encoder", "model.safetensors");
    // Only rank 0 wrote: one metrics log, with the events of the single process's run.
    let events = |run: &Path| -> Vec<String> {
        let log = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
        log.lines()
            .map(|line| {
                serde_json::from_str::<serde_json::Value>(line).unwrap()["event"].to_string()
            })
            .collect()
    };
    assert_eq!(events(&two.out), events(&one.out));
    // One process stopped after step 7, two ranks resume.
    let root = dir.path();
    let split = Job { stop_at_step: Some(7), ..Job::new("encoder", root.join("one-then-two")) };
    split.train(root, None);
    Job { resume: true, stop_at_step: None, ..split.clone() }.run_ranks(root, 2);
    same_weights(&one.out, &split.out, "model.safetensors");
}

#[test]
fn two_ranks_train_lora_adapters_as_one_process_and_resume_in_one() {
    one_process_two_ranks_and_two_then_one("decoder", "adapter_model.safetensors");
}

/// Starts a long job on 2 ranks whose collectives time out after `timeout` seconds, waits for
/// its first checkpoint, and sends `signal` to rank 1.
fn signal_rank_1(root: &Path, out: &Path, timeout: u64, signal: &str) -> std::process::Child {
    let long = Job { max_steps: Some(100_000), ..Job::new("encoder", out.to_path_buf()) };
    let mut child = long.spawn_with(root, 2, timeout);
    let started = Instant::now();
    let last = long.out.join("last").join("trainer_state.json");
    while !(last.exists() && root.join("pid-1").exists()) {
        assert!(started.elapsed() < Duration::from_secs(120), "no checkpoint within 2 minutes");
        assert!(child.try_wait().unwrap().is_none(), "the job ended before the signal");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = std::fs::read_to_string(root.join("pid-1")).unwrap();
    assert!(Command::new("kill").args([signal, pid.trim()]).status().unwrap().success());
    child
}

#[test]
fn sigusr1_to_mpirun_stops_every_rank_after_the_same_step_with_a_checkpoint() {
    let dir = scratch();
    let root = dir.path();
    let long = Job { max_steps: Some(100_000), ..Job::new("encoder", root.join("stopped")) };
    let child = long.spawn(root, 2);
    let last = long.out.join("last").join("trainer_state.json");
    let started = Instant::now();
    while !last.exists() {
        assert!(started.elapsed() < Duration::from_secs(120), "no checkpoint within 2 minutes");
        std::thread::sleep(Duration::from_millis(50));
    }
    // mpirun forwards SIGUSR1 to every rank, where it is a stop request like Ctrl-C on one process.
    assert!(
        Command::new("kill").args(["-USR1", &child.id().to_string()]).status().unwrap().success()
    );
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(long.out.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["stop_reason"], "interrupted");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&last).unwrap()).unwrap();
    assert_eq!(
        state["step"], summary["steps"],
        "the last checkpoint holds the step the ranks stopped after"
    );
}

#[test]
fn a_stopped_rank_makes_the_others_time_out_with_an_error() {
    let dir = scratch();
    let root = dir.path();
    let child = signal_rank_1(root, &root.join("stalled"), 3, "-STOP");
    let stopped_at = Instant::now();
    let output = child.wait_with_output().unwrap();
    let text = describe(&output);
    assert!(!output.status.success(), "the job succeeded with a stalled rank:\n{text}");
    assert!(
        stopped_at.elapsed() < Duration::from_secs(60),
        "the job took {:?} to end",
        stopped_at.elapsed()
    );
    assert!(
        text.contains("rank 0 of 2:") && text.contains("did not complete within 3 s"),
        "{text}"
    );
}

#[test]
fn a_killed_rank_ends_the_job_with_an_error_and_the_run_resumes() {
    let dir = scratch();
    let root = dir.path();
    let long = Job { max_steps: Some(100_000), ..Job::new("encoder", root.join("killed")) };
    let last = long.out.join("last").join("trainer_state.json");
    let child = signal_rank_1(root, &long.out, 60, "-9");
    let killed_at = Instant::now();
    let output = child.wait_with_output().unwrap();
    let waited = killed_at.elapsed();
    let text = describe(&output);
    assert!(!output.status.success(), "the job succeeded after a rank was killed:\n{text}");
    assert!(waited < Duration::from_secs(90), "the job took {waited:?} to end after the kill");
    assert!(text.contains("rank 1"), "the error does not name the killed rank:\n{text}");
    eprintln!("job ended {waited:?} after the kill:\n{text}");

    // The last complete checkpoint is intact: the run resumes (two more steps) in one process.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&last).unwrap()).unwrap();
    let step = state["step"].as_u64().unwrap() as usize;
    Job { resume: true, max_steps: Some(step + 2), ..long }.train(root, None);
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&last).unwrap()).unwrap();
    assert_eq!(state["step"].as_u64().unwrap() as usize, step + 2);
}
