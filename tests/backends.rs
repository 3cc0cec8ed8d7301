//! Training runs on every backend compiled in and usable here (`test_backends`): the tiny
//! encoder learns its 32 synthetic rows through the whole task pipeline (trainer, checkpoints,
//! evaluation). CI runs it on wgpu through Mesa's Vulkan driver (lavapipe).

use papertune_integration::{test_backends, tiny_classify_setup};

#[test]
fn tiny_training_run_on_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    let (mut config, data) = tiny_classify_setup(dir.path(), 7, 32);
    config.data.valid = Some(data.clone());
    config.train.epochs = 20;
    config.train.batch_size = 8;
    config.train.lr = 5e-3;
    config.train.warmup_ratio = 0.0;
    config.train.seed = 3;
    for backend in test_backends() {
        let out = dir.path().join(backend.name);
        let report = papertune_tasks::train(&config, &out, &backend.device, false)
            .unwrap_or_else(|e| panic!("{}: training failed: {e}", backend.name));
        let f1 = report.best_metrics.as_ref().map(|m| m["f1"]).unwrap_or(0.0);
        eprintln!("{}: {} steps, final loss {:.4}, best f1 {f1:.3}, {:.1} examples/s", backend.name, report.steps, report.final_loss, report.examples_per_second);
        assert!(report.final_loss.is_finite(), "{}: loss {}", backend.name, report.final_loss);
        assert!(f1 >= 0.9, "{}: the tiny encoder did not learn its rows (best f1 {f1})", backend.name);
        let metrics = papertune_tasks::evaluate(&out, &data, &backend.device).unwrap();
        assert!(metrics.f1 >= 0.9, "{}: eval f1 {}", backend.name, metrics.f1);
    }
}
