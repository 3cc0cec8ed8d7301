//! Exact resume and crash safety of a real run folder, on the ndarray backend with a tiny
//! random encoder (dropout on): a run stopped after N steps and resumed ends with the weights
//! of one run of all its steps, bit for bit; a training process killed with SIGKILL leaves a
//! loadable checkpoint from which the run completes; changed models, data or batch sizes are
//! refused; a damaged checkpoint is detected.
//!
//! These tests have a process of their own and run one at a time: burn's random generator
//! (dropout) is global to the process.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use burn::tensor::Device;
use papertune_integration::{synthetic_words, write_synthetic_rows, write_tiny_bert};
use papertune_tasks::TrainOptions;
use papertune_tasks::classify::{ClassifyConfig, LoadedRun};
use papertune_tasks::run_dir::Which;
use papertune_train::StopReason;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Set in the child process of the kill test: the run folder to train into.
const CHILD_ENV: &str = "PAPERTUNE_KILL_TEST_RUN";

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    config: ClassifyConfig,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let model_dir = root.join("tiny-bert");
    write_tiny_bert(&model_dir, &synthetic_words(), 5);
    let data = root.join("rows.csv");
    write_synthetic_rows(&data);
    Fixture { config: config_for(&model_dir, &data), _dir: dir, root }
}

/// 24 training rows, batch 4 with 2 micro-batches per step: 3 steps per epoch.
fn config_for(model_dir: &Path, data: &Path) -> ClassifyConfig {
    let mut config = ClassifyConfig::default();
    config.data.train = Some(data.to_path_buf());
    config.data.valid_fraction = 0.25;
    config.model.source = model_dir.to_string_lossy().into_owned();
    config.model.max_len = 16;
    config.head.dropout = Some(0.2);
    config.train.epochs = 4;
    config.train.batch_size = 4;
    config.train.gradient_accumulation_steps = 2;
    config.train.lr = 2e-3;
    config.train.warmup_ratio = 0.2;
    config.train.eval_every_steps = Some(2);
    config.train.log_every_steps = 1;
    config
}

/// ndarray, the backend whose results are bit-reproducible here (burn marks it deprecated in
/// favour of flex, which the other tests use).
#[allow(deprecated)]
fn device() -> Device {
    Device::ndarray()
}

fn options() -> TrainOptions {
    TrainOptions { backend: Some("ndarray".into()), ..TrainOptions::default() }
}

fn digest(run: &Path) -> String {
    papertune_tasks::classify::inspect(run, Which::Last).unwrap().weights_digest
}

#[test]
fn stopped_and_resumed_run_equals_one_run_bit_for_bit() {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let device = device();
    let whole = f.root.join("whole");
    let report = papertune_tasks::classify::train(&f.config, &whole, &device, &options()).unwrap();
    assert_eq!(report.steps, 12);

    // The same run, stopped after 5 steps (mid-epoch, mid-schedule), then resumed.
    let split = f.root.join("split");
    let stopped = papertune_tasks::classify::train(
        &f.config,
        &split,
        &device,
        &TrainOptions { stop_at_step: Some(5), ..options() },
    )
    .unwrap();
    assert_eq!((stopped.steps, stopped.stop_reason), (5, StopReason::Interrupted));
    assert_eq!(papertune_tasks::classify::inspect(&split, Which::Last).unwrap().step, 5);
    let resumed = papertune_tasks::classify::train(
        &f.config,
        &split,
        &device,
        &TrainOptions { resume: true, ..options() },
    )
    .unwrap();
    assert_eq!(
        (resumed.steps, resumed.resumed_from, resumed.stop_reason),
        (12, Some(5), StopReason::Completed)
    );
    assert_eq!(digest(&split), digest(&whole), "resumed weights differ from one run's");
    assert_eq!(resumed.best_step, report.best_step);
    assert_eq!(resumed.best_metrics, report.best_metrics);

    // The log reads as one run: the same training losses at the same steps, plus the resume.
    let losses = |run: &Path| -> Vec<(u64, f64)> {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|e| e["event"] == "train")
            .map(|e| (e["step"].as_u64().unwrap(), e["loss"].as_f64().unwrap()))
            .collect()
    };
    assert_eq!(losses(&split), losses(&whole));
    let html = std::fs::read_to_string(split.join("report.html")).unwrap();
    assert!(
        html.contains("Resumed") && html.contains("<svg"),
        "report lacks the resume or the plots"
    );

    // A finished run cannot be resumed further without a larger budget; with one it can, and the
    // change is recorded.
    let error = papertune_tasks::classify::train(
        &f.config,
        &split,
        &device,
        &TrainOptions { resume: true, ..options() },
    )
    .unwrap_err();
    assert!(error.to_string().contains("raise train.max_steps"), "{error}");
    let mut longer = f.config.clone();
    longer.train.epochs = 5;
    longer.train.lr = 1e-3;
    let extended = papertune_tasks::classify::train(
        &longer,
        &split,
        &device,
        &TrainOptions { resume: true, ..options() },
    )
    .unwrap();
    assert_eq!(extended.steps, 15);
    let log = std::fs::read_to_string(split.join("metrics.jsonl")).unwrap();
    let last_resume = log.lines().rfind(|l| l.contains("\"resume\"")).unwrap().to_owned();
    assert!(
        last_resume.contains("train.lr: 0.002 -> 0.001")
            && last_resume.contains("train.epochs: 4 -> 5"),
        "{last_resume}"
    );
}

#[test]
fn resuming_with_another_model_data_or_batch_size_is_refused() {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let device = device();
    let run = f.root.join("run");
    papertune_tasks::classify::train(
        &f.config,
        &run,
        &device,
        &TrainOptions { stop_at_step: Some(2), ..options() },
    )
    .unwrap();
    let resume = TrainOptions { resume: true, ..options() };
    // Every refusal below leaves the run folder's files as they were.
    let files = |run: &Path| {
        ["config.toml", "metrics.jsonl", "last/trainer_state.json"]
            .map(|name| std::fs::read(run.join(name)).unwrap())
    };
    let before = files(&run);

    let mut changed = f.config.clone();
    changed.model.max_len = 12;
    let error =
        papertune_tasks::classify::train(&changed, &run, &device, &resume).unwrap_err().to_string();
    assert!(
        error.contains("model.max_len: 16 -> 12") && error.contains("cannot resume"),
        "{error}"
    );

    let mut changed = f.config.clone();
    changed.train.batch_size = 8;
    let error =
        papertune_tasks::classify::train(&changed, &run, &device, &resume).unwrap_err().to_string();
    assert!(error.contains("train.batch_size was 4, now 8"), "{error}");
    assert!(files(&run) == before, "a refused resume changed the run folder");

    let mut changed = f.config.clone();
    changed.train.seed = 7;
    let error =
        papertune_tasks::classify::train(&changed, &run, &device, &resume).unwrap_err().to_string();
    assert!(error.contains("train.seed was 42, now 7"), "{error}");
    assert!(files(&run) == before, "a refused resume changed the run folder");

    let mut changed = f.config.clone();
    changed.data.valid_fraction = 0.5;
    let error =
        papertune_tasks::classify::train(&changed, &run, &device, &resume).unwrap_err().to_string();
    assert!(error.contains("data.valid_fraction"), "{error}");

    // A new run into a used folder is refused and points at --resume.
    let error = papertune_tasks::classify::train(&f.config, &run, &device, &options())
        .unwrap_err()
        .to_string();
    assert!(error.contains("--resume"), "{error}");
    assert!(files(&run) == before, "a refused command changed the run folder");

    // An accepted resume with a new learning rate records it in config.toml.
    let mut changed = f.config.clone();
    changed.train.lr = 1e-3;
    papertune_tasks::classify::train(&changed, &run, &device, &resume).unwrap();
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(config.contains("lr = 0.001"), "{config}");
}

#[test]
fn a_run_refused_before_its_first_step_leaves_no_folder_behind() {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let device = device();
    let run = f.root.join("refused");
    // Three devices for two micro-batches per step: refused by the trainer's checks, after the
    // folder was made and the config and tokenizer written.
    let three = TrainOptions { devices: vec![device.clone(); 3], ..options() };
    let error =
        papertune_tasks::classify::train(&f.config, &run, &device, &three).unwrap_err().to_string();
    assert!(error.contains("3 data-parallel devices"), "{error}");
    assert!(!run.exists(), "the refused run left {}", run.display());
    // An empty folder made by the user stays, empty.
    std::fs::create_dir(&run).unwrap();
    papertune_tasks::classify::train(&f.config, &run, &device, &three).unwrap_err();
    assert!(run.exists() && std::fs::read_dir(&run).unwrap().next().is_none());
    // The same command, fixed, runs.
    let fixed = TrainOptions { stop_at_step: Some(1), ..options() };
    papertune_tasks::classify::train(&f.config, &run, &device, &fixed).unwrap();
    assert!(run.join("last").exists());
}

#[test]
fn a_damaged_checkpoint_is_detected_at_load() {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let device = device();
    let run = f.root.join("run");
    papertune_tasks::classify::train(
        &f.config,
        &run,
        &device,
        &TrainOptions { stop_at_step: Some(2), ..options() },
    )
    .unwrap();
    LoadedRun::open(&run, Which::Last, &device).unwrap();
    let weights = run.join("last/model.safetensors");
    let original = std::fs::read(&weights).unwrap();
    let mut bytes = original.clone();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&weights, bytes).unwrap();
    let error = LoadedRun::open(&run, Which::Last, &device).err().unwrap().to_string();
    assert!(error.contains("last/model.safetensors") && error.contains("damaged"), "{error}");
    let error = papertune_tasks::classify::train(
        &f.config,
        &run,
        &device,
        &TrainOptions { resume: true, ..options() },
    )
    .unwrap_err();
    assert!(error.to_string().contains("damaged"), "{error}");
    // A file missing from a checkpoint is caught the same way.
    std::fs::write(&weights, original).unwrap();
    std::fs::remove_file(run.join("last/optimizer.bpk")).unwrap();
    let error = papertune_tasks::classify::train(
        &f.config,
        &run,
        &device,
        &TrainOptions { resume: true, ..options() },
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("optimizer.bpk") && error.to_string().contains("missing"),
        "{error}"
    );
}

/// This test binary again, running only the test `name`, with `env` naming the run folder.
fn spawn_child(name: &str, env: &str, run: &Path) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--ignored", "--nocapture", "--test-threads", "1"])
        .env(env, run)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// The kill test's run under `root` (the fixture's folder): 180 steps, a checkpoint every step.
fn kill_test_config(root: &Path) -> ClassifyConfig {
    let mut config = config_for(&root.join("tiny-bert"), &root.join("rows.csv"));
    config.train.epochs = 60;
    config.train.save_strategy = papertune_train::Strategy::Steps;
    config.train.save_every_steps = Some(1);
    config
}

/// Waits until `ready` holds, failing if the child ends first or nothing happens in 2 minutes.
fn wait_for_child(child: &mut std::process::Child, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < Duration::from_secs(120), "the child made no progress");
        assert!(child.try_wait().unwrap().is_none(), "the child ended too early");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The child side of the kill test: trains the run named by the environment, saving every step.
#[test]
#[ignore = "the child process of a_run_killed_mid_training_resumes_to_the_same_weights, which starts it"]
fn kill_test_child() {
    let run =
        std::env::var(CHILD_ENV).expect("started by the kill test, which names the run folder");
    let run = PathBuf::from(run);
    let config = kill_test_config(run.parent().unwrap());
    papertune_tasks::classify::train(&config, &run, &device(), &options()).unwrap();
}

/// The child side of the Ctrl-C test: like [`kill_test_child`], with the signal handlers of
/// `cargo xtask train` installed.
#[test]
#[ignore = "the child process of ctrl_c_finishes_the_step_saves_and_exits_cleanly, which starts it"]
fn interrupt_test_child() {
    let run = std::env::var(INTERRUPT_ENV)
        .expect("started by the Ctrl-C test, which names the run folder");
    let run = PathBuf::from(run);
    let root = run.parent().unwrap();
    let mut config = config_for(&root.join("tiny-bert"), &root.join("rows.csv"));
    config.train.epochs = 200;
    let stop = papertune_train::stop_on_signals().unwrap();
    let report = papertune_tasks::classify::train(
        &config,
        &run,
        &device(),
        &TrainOptions { stop: Some(stop), ..options() },
    )
    .unwrap();
    assert_eq!(report.stop_reason, StopReason::Interrupted);
}

const INTERRUPT_ENV: &str = "PAPERTUNE_INTERRUPT_TEST_RUN";

#[test]
#[cfg(unix)]
fn ctrl_c_finishes_the_step_saves_and_exits_cleanly() {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let run = f.root.join("interrupted");
    let mut child = spawn_child("interrupt_test_child", INTERRUPT_ENV, &run);
    // Wait until training is under way (the first evaluation is logged), then SIGINT.
    wait_for_child(&mut child, || {
        std::fs::read_to_string(run.join("metrics.jsonl")).is_ok_and(|log| log.contains("\"eval\""))
    });
    // The shell's built-in kill: no procps needed.
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("kill -INT {}", child.id())])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "the interrupted run did not exit cleanly: {exit:?}");
    // The checkpoint holds the step the run stopped at, and the log says why.
    let state = papertune_tasks::run_dir::RunDir::new(&run).checkpoint_state(Which::Last).unwrap();
    assert!(state.step >= 2 && state.step < 600, "{}", state.step);
    let log = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let end = log.lines().last().unwrap();
    assert!(
        end.contains("\"interrupted\"") && end.contains(&format!("\"step\":{}", state.step)),
        "{end}"
    );
    LoadedRun::open(&run, Which::Last, &device()).unwrap();
}

#[test]
#[cfg(unix)]
fn a_run_killed_mid_training_resumes_to_the_same_weights() {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture();
    let run = f.root.join("killed");
    let mut child = spawn_child("kill_test_child", CHILD_ENV, &run);
    // Wait for a few checkpoints, then SIGKILL: no handler runs, whatever was being written
    // stays half-written.
    let step_of = |run: &Path| {
        papertune_tasks::run_dir::RunDir::new(run)
            .checkpoint_state(Which::Last)
            .map(|s| s.step)
            .unwrap_or(0)
    };
    wait_for_child(&mut child, || step_of(&run) >= 7);
    child.kill().unwrap();
    child.wait().unwrap();
    let killed_at = step_of(&run);
    assert!(killed_at < 180, "killed too late to test anything (step {killed_at})");

    // The last checkpoint loads (checksums included) and the run completes from it.
    let device = device();
    LoadedRun::open(&run, Which::Last, &device).unwrap();
    let config = kill_test_config(&f.root);
    let resumed = papertune_tasks::classify::train(
        &config,
        &run,
        &device,
        &TrainOptions { resume: true, ..options() },
    )
    .unwrap();
    assert_eq!(resumed.steps, 180);
    assert!(resumed.resumed_from.is_some_and(|s| s >= killed_at));

    // And it ends where an uninterrupted run ends.
    let whole = f.root.join("whole");
    papertune_tasks::classify::train(&config, &whole, &device, &options()).unwrap();
    assert_eq!(digest(&run), digest(&whole));
}
