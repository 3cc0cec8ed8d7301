//! Runs on every backend compiled in and usable here (`test_backends`): the tiny encoder
//! learns its 32 synthetic rows through the whole task pipeline (trainer, checkpoints,
//! evaluation), and a tiny decoder's KV cache gives the logits of a full pass. CI runs them on
//! wgpu through Mesa's Vulkan driver (lavapipe).

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
        let report = papertune_tasks::classify::train(&config, &out, &backend.device, &papertune_tasks::TrainOptions::default())
            .unwrap_or_else(|e| panic!("{}: training failed: {e}", backend.name));
        let f1 = report.best_metrics.as_ref().map(|m| m["f1"]).unwrap_or(0.0);
        eprintln!("{}: {} steps, final loss {:.4}, best f1 {f1:.3}, {:.1} examples/s", backend.name, report.steps, report.final_loss, report.examples_per_second);
        assert!(report.final_loss.is_finite(), "{}: loss {}", backend.name, report.final_loss);
        assert!(f1 >= 0.9, "{}: the tiny encoder did not learn its rows (best f1 {f1})", backend.name);
        let metrics = papertune_tasks::classify::evaluate(&[out.clone()], &data, &Default::default(), &backend.device).unwrap();
        assert!(metrics.f1 >= 0.9, "{}: eval f1 {}", backend.name, metrics.f1);
    }
}

/// The KV cache on every backend: decoding one token at a time gives the logits of one pass
/// over the whole sequence, whether the cache's buffers start large enough (written in place)
/// or grow (capacity 0 starts at the prompt's length and doubles). The second row is
/// left-padded by two positions; padding positions have no defined output and are not compared.
#[test]
fn cached_decoding_matches_the_full_pass_on_every_backend() {
    let config = papertune_models::llama::LlamaConfig::tiny();
    let ids: Vec<Vec<u32>> = vec![vec![5, 9, 14, 3, 8, 21, 2, 11], vec![0, 0, 7, 4, 19, 6, 10, 13]];
    let mask: Vec<Vec<u8>> = vec![vec![1; 8], vec![0, 0, 1, 1, 1, 1, 1, 1]];
    let prompt = 3;
    for backend in test_backends() {
        let model = papertune_models::init::random_llama(&config, 7, &backend.device).expect("tiny decoder");
        let full = model.forward(model.input(&ids, &mask), None).narrow(1, 2, 6); // [2, 6, vocab]
        for capacity in [0, 8] {
            let mut cache = papertune_models::llama::KvCache::with_capacity(model.num_layers(), capacity);
            let head: Vec<Vec<u32>> = ids.iter().map(|row| row[..prompt].to_vec()).collect();
            let head_mask: Vec<Vec<u8>> = mask.iter().map(|row| row[..prompt].to_vec()).collect();
            let mut logits = vec![model.forward(model.input(&head, &head_mask), Some(&mut cache))];
            for position in prompt..ids[0].len() {
                let step: Vec<Vec<u32>> = ids.iter().map(|row| vec![row[position]]).collect();
                let step_mask: Vec<Vec<u8>> = mask.iter().map(|row| row[..=position].to_vec()).collect();
                logits.push(model.forward(model.input(&step, &step_mask), Some(&mut cache)));
            }
            assert_eq!(cache.len(), ids[0].len(), "{}: cached positions", backend.name);
            let cached = burn::tensor::Tensor::cat(logits, 1).narrow(1, 2, 6);
            let difference: f32 = (cached - full.clone()).abs().max().into_scalar();
            assert!(difference < backend.tolerance, "{} capacity {capacity}: cached logits differ by {difference}", backend.name);
        }
    }
}
