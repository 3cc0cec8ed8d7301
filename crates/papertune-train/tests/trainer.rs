//! The trainer's control flow on a two-feature linear model: early stopping, a non-finite loss,
//! the stop request, strategies, and an exact resume through the checkpoint files.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use papertune_train::{
    CheckpointContext, CrossEntropyLoss, Loss, Metrics, ResumePoint, SaveKind, StopReason,
    Strategy, TrainConfig, TrainError, TrainHooks, TrainModel, TrainProgress, Trainer,
};

#[derive(Module, Debug)]
struct Toy {
    linear: Linear,
}

#[derive(Debug, Clone)]
struct Batch {
    x: Tensor<2>,
    y: Tensor<1, Int>,
}

impl TrainModel<Batch> for Toy {
    type Output = Tensor<2>;
    type Target = Tensor<1, Int>;
    fn forward_train(&self, batch: Batch) -> (Tensor<2>, Tensor<1, Int>) {
        (self.linear.forward(batch.x), batch.y)
    }
}

#[derive(Clone)]
struct ToyBatcher;

impl Batcher<([f32; 2], u8), Batch> for ToyBatcher {
    fn batch(&self, items: Vec<([f32; 2], u8)>, device: &Device) -> Batch {
        let n = items.len();
        let x: Vec<f32> = items.iter().flat_map(|(p, _)| *p).collect();
        let y: Vec<i64> = items.iter().map(|(_, l)| i64::from(*l)).collect();
        Batch {
            x: Tensor::from_data(TensorData::new(x, [n, 2]), device),
            y: Tensor::from_data(TensorData::new(y, [n]), device),
        }
    }
}

fn points() -> Vec<([f32; 2], u8)> {
    (0..40)
        .map(|i| ([(i % 8) as f32 / 4.0 - 1.0, (i / 8) as f32 / 2.0 - 1.0], u8::from(i % 3 == 0)))
        .collect()
}

fn device() -> Device {
    Device::flex().autodiff()
}

fn toy(device: &Device) -> Toy {
    Toy { linear: LinearConfig::new(2, 2).init(device) }
}

fn config() -> TrainConfig {
    TrainConfig {
        epochs: 3,
        batch_size: 8,
        lr: 0.05,
        warmup_ratio: 0.0,
        metric_for_best: "score".into(),
        ..TrainConfig::default()
    }
}

/// Scripted evaluation results, and a record of what was saved at which step.
#[derive(Default)]
struct Script {
    scores: Vec<f64>,
    evals: Vec<usize>,
    saves: Vec<(SaveKind, usize)>,
    /// Writes the resume files of `last` saves here.
    resume_dir: Option<PathBuf>,
}

impl TrainHooks<Toy> for Script {
    fn evaluate(&mut self, _: &Toy, progress: &TrainProgress) -> Result<Metrics, TrainError> {
        let score = self.scores.get(self.evals.len()).copied().unwrap_or(0.0);
        self.evals.push(progress.step);
        Ok(Metrics::from([("score".to_owned(), score)]))
    }
    fn save(
        &mut self,
        model: &Toy,
        kind: SaveKind,
        context: &CheckpointContext<'_>,
    ) -> Result<(), TrainError> {
        self.saves.push((kind, context.progress.step));
        if let (Some(dir), SaveKind::Last) = (&self.resume_dir, kind) {
            context.write_resume_files(model, dir)?;
            let bytes = serde_json::to_vec(&weights(model)).unwrap();
            std::fs::write(dir.join("weights.json"), bytes).unwrap();
        }
        Ok(())
    }
}

fn weights(model: &Toy) -> Vec<f32> {
    let mut values = model.linear.weight.val().into_data().try_to_vec::<f32>().unwrap();
    values
        .extend(model.linear.bias.as_ref().unwrap().val().into_data().try_to_vec::<f32>().unwrap());
    values
}

#[test]
fn early_stopping_stops_after_patience_evaluations_without_improvement() {
    // 5 steps per epoch; evaluation every 2 steps: at steps 2, 4, 6, 8, ...
    let config = TrainConfig {
        epochs: 10,
        eval_strategy: Strategy::Steps,
        eval_every_steps: Some(2),
        early_stopping_patience: Some(2),
        early_stopping_threshold: 0.05,
        ..config()
    };
    // 0.5 best; 0.52 beats it but not by more than the threshold (bad 1); 0.6 is significant
    // (reset); 0.6 and 0.58 are bad 1, 2 -> stop at the 5th evaluation, step 10.
    let mut hooks = Script { scores: vec![0.5, 0.52, 0.6, 0.6, 0.58, 0.9], ..Script::default() };
    let device = device();
    let (_, summary) = Trainer::new(config, &device)
        .unwrap()
        .with_progress(false)
        .fit(
            toy(&device),
            &CrossEntropyLoss::new(),
            &InMemDataset::new(points()),
            &ToyBatcher,
            &mut hooks,
        )
        .unwrap();
    assert_eq!(hooks.evals, vec![2, 4, 6, 8, 10]);
    assert_eq!(summary.stop_reason, StopReason::EarlyStopping);
    assert_eq!(summary.steps, 10);
    // Best saved at 2 (first), 4 (0.52 > 0.5 is still the best so far), 6; last at the stop.
    // The last checkpoint is also saved at the end of epoch 1 (save_strategy "epoch").
    assert_eq!(
        hooks.saves,
        vec![
            (SaveKind::Best, 2),
            (SaveKind::Best, 4),
            (SaveKind::Last, 5),
            (SaveKind::Best, 6),
            (SaveKind::Last, 10)
        ]
    );
    assert_eq!(summary.best, Some((0.6, 6)));
}

/// A loss that turns NaN at its `at`-th call.
struct NanAt {
    at: usize,
    calls: AtomicUsize,
}

impl Loss<Tensor<2>, Tensor<1, Int>> for NanAt {
    fn forward(&self, logits: Tensor<2>, target: Tensor<1, Int>) -> Tensor<1> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let loss = CrossEntropyLoss::new().forward(logits, target);
        if call == self.at { loss.mul_scalar(f64::NAN) } else { loss }
    }
}

#[test]
fn a_nan_loss_stops_before_the_update_and_keeps_the_last_checkpoint() {
    let config =
        TrainConfig { save_strategy: Strategy::Steps, save_every_steps: Some(1), ..config() };
    let mut hooks = Script::default();
    let device = device();
    let error = Trainer::new(config, &device)
        .unwrap()
        .with_progress(false)
        .fit(
            toy(&device),
            &NanAt { at: 4, calls: AtomicUsize::new(0) },
            &InMemDataset::new(points()),
            &ToyBatcher,
            &mut hooks,
        )
        .unwrap_err();
    assert!(matches!(error, TrainError::NonFiniteLoss { step: 4, .. }), "{error}");
    assert!(error.to_string().contains("last saved checkpoint is kept"), "{error}");
    // Steps 1-3 were saved; nothing was saved for the NaN step.
    assert_eq!(hooks.saves, vec![(SaveKind::Last, 1), (SaveKind::Last, 2), (SaveKind::Last, 3)]);
}

#[test]
fn stop_signal_saves_a_last_checkpoint_and_returns() {
    let flag = Arc::new(AtomicBool::new(true));
    let mut hooks = Script::default();
    let device = device();
    let (_, summary) = Trainer::new(config(), &device)
        .unwrap()
        .with_progress(false)
        .with_stop_at_step(3)
        .with_stop_signal(Arc::clone(&flag))
        .fit(
            toy(&device),
            &CrossEntropyLoss::new(),
            &InMemDataset::new(points()),
            &ToyBatcher,
            &mut hooks,
        )
        .unwrap();
    // The flag was raised before the first step: nothing to save, nothing done.
    assert_eq!((summary.steps, summary.stop_reason), (0, StopReason::Interrupted));
    assert!(hooks.saves.is_empty());

    flag.store(false, std::sync::atomic::Ordering::SeqCst);
    let mut hooks = Script::default();
    let (_, summary) = Trainer::new(config(), &device)
        .unwrap()
        .with_progress(false)
        .with_stop_at_step(3)
        .with_stop_signal(flag)
        .fit(
            toy(&device),
            &CrossEntropyLoss::new(),
            &InMemDataset::new(points()),
            &ToyBatcher,
            &mut hooks,
        )
        .unwrap();
    assert_eq!((summary.steps, summary.stop_reason), (3, StopReason::Interrupted));
    assert_eq!(hooks.saves, vec![(SaveKind::Last, 3)]);
}

/// A run stopped before its first log point (every 10 steps, stopped after 3) logs its last
/// steps: its final loss is a real figure, not NaN, and the log says it at the stop step.
#[test]
fn a_run_stopped_between_log_points_logs_its_last_steps() {
    let device = device();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("metrics.jsonl");
    let config = TrainConfig { log_every_steps: 10, ..config() };
    let (_, summary) = Trainer::new(config, &device)
        .unwrap()
        .with_progress(false)
        .with_stop_at_step(3)
        .with_metrics_log(&log)
        .fit(
            toy(&device),
            &CrossEntropyLoss::new(),
            &InMemDataset::new(points()),
            &ToyBatcher,
            &mut Script::default(),
        )
        .unwrap();
    assert_eq!((summary.steps, summary.stop_reason), (3, StopReason::Interrupted));
    assert!(summary.final_loss.is_finite() && summary.final_loss > 0.0, "{}", summary.final_loss);
    let text = std::fs::read_to_string(&log).unwrap();
    let train: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|event| event["event"] == "train")
        .collect();
    assert_eq!(train.len(), 1, "{text}");
    assert_eq!(train[0]["step"], 3, "{text}");
}

#[test]
fn contradictions_are_refused_before_training_naming_the_keys() {
    let device = device();
    let data = InMemDataset::new(points());
    let fit = |config: TrainConfig| {
        Trainer::new(config, &device)?.with_progress(false).fit(
            toy(&device),
            &CrossEntropyLoss::new(),
            &data,
            &ToyBatcher,
            &mut Script::default(),
        )
    };
    // 40 points / batch 8 = 5 micro-batches per epoch.
    let error =
        fit(TrainConfig { gradient_accumulation_steps: 6, ..config() }).unwrap_err().to_string();
    assert!(error.contains("train.gradient_accumulation_steps (6)"), "{error}");
    let error = fit(TrainConfig { warmup_steps: Some(15), ..config() }).unwrap_err().to_string();
    assert!(error.contains("train.warmup_steps (15)") && error.contains("15 steps"), "{error}");
    let error =
        fit(TrainConfig { eval_strategy: Strategy::Steps, ..config() }).unwrap_err().to_string();
    assert!(error.contains("train.eval_every_steps"), "{error}");
    let error = fit(TrainConfig {
        early_stopping_patience: Some(2),
        eval_strategy: Strategy::No,
        ..config()
    })
    .unwrap_err()
    .to_string();
    assert!(error.contains("train.early_stopping_patience"), "{error}");
}

#[test]
fn resume_from_checkpoint_files_continues_exactly() {
    let base = TrainConfig {
        epochs: 4,
        gradient_accumulation_steps: 2,
        warmup_ratio: 0.2,
        schedule: papertune_train::ScheduleKind::Cosine,
        // The weights handed back are the last ones, not the best evaluated.
        load_best_model_at_end: false,
        ..config()
    };
    let device = device();
    let data = InMemDataset::new(points());
    let run = |trainer: Trainer, model: Toy, hooks: &mut Script| {
        trainer
            .with_progress(false)
            .fit(model, &CrossEntropyLoss::new(), &data, &ToyBatcher, hooks)
            .unwrap()
    };
    let initial = toy(&device);
    // One run of all 12 steps (3 per epoch).
    let (whole, summary) =
        run(Trainer::new(base.clone(), &device).unwrap(), initial.clone(), &mut Script::default());
    assert_eq!(summary.steps, 12);

    // The same run stopped after 5 steps, then resumed from the files in a fresh model.
    let dir = tempfile::tempdir().unwrap();
    let mut hooks = Script { resume_dir: Some(dir.path().to_path_buf()), ..Script::default() };
    let (_, first) =
        run(Trainer::new(base.clone(), &device).unwrap().with_stop_at_step(5), initial, &mut hooks);
    assert_eq!(first.steps, 5);
    let saved: Vec<f32> =
        serde_json::from_slice(&std::fs::read(dir.path().join("weights.json")).unwrap()).unwrap();
    let mut fresh = toy(&device);
    fresh.linear.weight = fresh.linear.weight.map(|w| {
        Tensor::from_data(TensorData::new(saved[..4].to_vec(), [2, 2]), &w.device()).require_grad()
    });
    fresh.linear.bias = fresh.linear.bias.map(|b| {
        b.map(|b| {
            Tensor::from_data(TensorData::new(saved[4..].to_vec(), [2]), &b.device()).require_grad()
        })
    });
    let point = ResumePoint::read(dir.path()).unwrap();
    assert_eq!(point.state.step, 5);
    let (resumed, second) =
        run(Trainer::new(base, &device).unwrap().with_resume(point), fresh, &mut Script::default());
    assert_eq!((second.steps, second.resumed_from), (12, Some(5)));
    assert_eq!(
        weights(&resumed),
        weights(&whole),
        "a resumed run must end with the weights of one run"
    );
}

/// Data parallelism on the CPU backends (each "device" a thread of its own): two devices sharing
/// each step's two micro-batches make the updates of one device accumulating them in turn.
#[test]
#[allow(deprecated)] // Device::ndarray: burn steers users to flex, which papertune also tests
fn two_devices_make_the_updates_of_accumulation_on_one() {
    for cpu in [Device::flex(), Device::ndarray()] {
        let device = cpu.clone().autodiff();
        // 40 points, micro-batches of 4, two per step: 5 steps per epoch, 15 in all.
        let config = TrainConfig {
            batch_size: 4,
            gradient_accumulation_steps: 2,
            eval_strategy: Strategy::No,
            save_strategy: Strategy::No,
            ..config()
        };
        let initial = toy(&device);
        let train = |workers: Vec<Device>| {
            let trainer = Trainer::new(config.clone(), &device)
                .unwrap()
                .with_progress(false)
                .with_devices(workers);
            let (model, summary) = trainer
                .fit(
                    initial.clone(),
                    &CrossEntropyLoss::new(),
                    &InMemDataset::new(points()),
                    &ToyBatcher,
                    &mut Script::default(),
                )
                .unwrap();
            assert_eq!(summary.steps, 15);
            (weights(&model), summary.final_loss)
        };
        let (one, one_loss) = train(Vec::new());
        let (two, two_loss) = train(vec![cpu.clone(), cpu.clone()]);
        let moved =
            one.iter().zip(weights(&initial)).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(moved > 1e-2, "{cpu:?}: training should move the weights (moved {moved})");
        let differ = one.iter().zip(&two).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(differ < 1e-6, "{cpu:?}: two devices end at {two:?}, one device at {one:?}");
        assert!(
            (one_loss - two_loss).abs() < 1e-6,
            "{cpu:?}: logged loss {two_loss} on two devices, {one_loss} on one"
        );
    }
}

#[test]
fn more_devices_than_micro_batches_per_step_are_refused() {
    let device = device();
    let config = TrainConfig { gradient_accumulation_steps: 2, ..config() };
    let err = Trainer::new(config, &device)
        .unwrap()
        .with_progress(false)
        .with_devices(vec![Device::flex(); 3])
        .fit(
            toy(&device),
            &CrossEntropyLoss::new(),
            &InMemDataset::new(points()),
            &ToyBatcher,
            &mut Script::default(),
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("3 data-parallel devices") && err.contains("gradient_accumulation_steps is 2"),
        "{err}"
    );
}
