//! Runs on every backend compiled in and usable here (`test_backends`): the tiny encoder
//! learns its 32 synthetic rows through the whole task pipeline (trainer, checkpoints,
//! evaluation), a tiny decoder's KV cache gives the logits of a full pass, and a linear layer kept
//! in quantised blocks gives its decoded weight's product and gradient. CI runs them on wgpu
//! through Mesa's Vulkan driver (lavapipe).

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
        let report = papertune_tasks::classify::train(
            &config,
            &out,
            &backend.device,
            &papertune_tasks::TrainOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{}: training failed: {e}", backend.name));
        let f1 = report.best_metrics.as_ref().map(|m| m["f1"]).unwrap_or(0.0);
        eprintln!(
            "{}: {} steps, final loss {:.4}, best f1 {f1:.3}, {:.1} examples/s",
            backend.name, report.steps, report.final_loss, report.examples_per_second
        );
        assert!(report.final_loss.is_finite(), "{}: loss {}", backend.name, report.final_loss);
        assert!(
            f1 >= 0.9,
            "{}: the tiny encoder did not learn its rows (best f1 {f1})",
            backend.name
        );
        let metrics = papertune_tasks::classify::evaluate(
            std::slice::from_ref(&out),
            &data,
            &Default::default(),
            &backend.device,
        )
        .unwrap();
        assert!(metrics.f1 >= 0.9, "{}: eval f1 {}", backend.name, metrics.f1);
    }
}

/// The KV cache on every backend: decoding one token at a time (attention over the cache) gives
/// the logits of one pass over the whole sequence (the fused causal attention), whether the
/// cache's buffers start large enough (written in place) or grow (capacity 0 starts at the
/// prompt's length and doubles), for a Llama and a Gemma 3 (sliding window of 4 in two of its
/// layers). The second row is left-padded by two positions; padding positions have no defined
/// output and are not compared.
#[test]
fn cached_decoding_matches_the_full_pass_on_every_backend() {
    let ids: Vec<Vec<u32>> = vec![vec![5, 9, 14, 3, 8, 21, 2, 11], vec![0, 0, 7, 4, 19, 6, 10, 13]];
    let mask: Vec<Vec<u8>> = vec![vec![1; 8], vec![0, 0, 1, 1, 1, 1, 1, 1]];
    let prompt = 3;
    let configs = [
        papertune_models::llama::LlamaConfig::tiny(),
        papertune_models::llama::LlamaConfig::tiny_gemma3(),
    ];
    for (backend, config) in
        test_backends().iter().flat_map(|b| configs.iter().map(move |c| (b, c)))
    {
        let model =
            papertune_models::init::random_llama(config, 7, &backend.device).expect("tiny decoder");
        let full = model.forward(model.input(&ids, &mask), None).narrow(1, 2, 6); // [2, 6, vocab]
        for capacity in [0, 8] {
            let mut cache =
                papertune_models::llama::KvCache::with_capacity(model.num_layers(), capacity);
            let head: Vec<Vec<u32>> = ids.iter().map(|row| row[..prompt].to_vec()).collect();
            let head_mask: Vec<Vec<u8>> = mask.iter().map(|row| row[..prompt].to_vec()).collect();
            let mut logits = vec![model.forward(model.input(&head, &head_mask), Some(&mut cache))];
            for position in prompt..ids[0].len() {
                let step: Vec<Vec<u32>> = ids.iter().map(|row| vec![row[position]]).collect();
                let step_mask: Vec<Vec<u8>> =
                    mask.iter().map(|row| row[..=position].to_vec()).collect();
                logits.push(model.forward(model.input(&step, &step_mask), Some(&mut cache)));
            }
            assert_eq!(cache.len(), ids[0].len(), "{}: cached positions", backend.name);
            let cached = burn::tensor::Tensor::cat(logits, 1).narrow(1, 2, 6);
            let difference: f32 = (cached - full.clone()).abs().max().into_scalar();
            assert!(
                difference < backend.tolerance,
                "{} {} capacity {capacity}: cached logits differ by {difference}",
                backend.name,
                config.model_type
            );
        }
    }
}

/// A weight kept in Q8_0 blocks on every backend, forward and backward to the input, against
/// the decoded weight's exact product: within the bound that the activations' 8-bit rounding
/// explains (one row without gradient takes the 8-bit integer products on the host on every
/// backend; 40 rows, and rows that need a gradient, take decoded bands on the CPU backends and
/// the weight decoded for the one product on the GPU backends), and `dx = dy W` within f32
/// rounding.
#[test]
fn quantised_linear_on_every_backend() {
    use papertune_kernels::quant::{QuantMatrix, QuantType, q8_error_bound};
    let (d_out, d_in) = (24, 96);
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut bytes = Vec::new();
    for block in 0..d_out * d_in / 32 {
        let scale = 1.0 / (64.0 + block as f32);
        bytes.extend_from_slice(&half::f16::from_f32(scale).to_le_bytes());
        bytes.extend((0..32).map(|_| next() as u8));
    }
    let weight =
        std::sync::Arc::new(QuantMatrix::new(QuantType::Q8_0, d_out, d_in, bytes).unwrap());
    let decoded = weight.dequantize();
    for backend in test_backends() {
        let device = backend.device.clone().autodiff();
        for rows in [1, 40] {
            let x: Vec<f32> =
                (0..rows * d_in).map(|_| (next() % 2001) as f32 / 1000.0 - 1.0).collect();
            let dy: Vec<f32> =
                (0..rows * d_out).map(|_| (next() % 2001) as f32 / 1000.0 - 1.0).collect();
            let input = burn::tensor::Tensor::<2>::from_data(
                burn::tensor::TensorData::new(x.clone(), [rows, d_in]),
                &device,
            )
            .require_grad();
            let output = papertune_kernels::quantized_linear(input.clone(), &weight, None);
            let upstream = burn::tensor::Tensor::<2>::from_data(
                burn::tensor::TensorData::new(dy.clone(), [rows, d_out]),
                &device,
            );
            let grads = (output.clone() * upstream).sum().backward();
            let y = output.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
            let dx = input
                .grad(&grads)
                .unwrap()
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap();
            // Without autodiff (generation): on the GPU backends one row takes the host's 8-bit path.
            let plain = burn::tensor::Tensor::<2>::from_data(
                burn::tensor::TensorData::new(x.clone(), [rows, d_in]),
                &backend.device,
            );
            let y_plain = papertune_kernels::quantized_linear(plain, &weight, None)
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap();
            for i in 0..rows {
                let x_row = &x[i * d_in..][..d_in];
                for r in 0..d_out {
                    let w_row = &decoded[r * d_in..][..d_in];
                    let exact: f64 =
                        w_row.iter().zip(x_row).map(|(&w, &v)| f64::from(w) * f64::from(v)).sum();
                    let size: f64 =
                        w_row.iter().zip(x_row).map(|(&w, &v)| f64::from(w * v).abs()).sum();
                    let bound = q8_error_bound(QuantType::Q8_0, w_row, x_row) + 1e-5 * size;
                    for (what, y) in [("tracked", &y), ("untracked", &y_plain)] {
                        let got = f64::from(y[i * d_out + r]);
                        assert!(
                            (got - exact).abs() <= bound,
                            "{} rows {rows} {what}: y[{i}, {r}] = {got}, decoded weight gives {exact} (bound {bound})",
                            backend.name
                        );
                    }
                }
                for c in 0..d_in {
                    let exact: f64 = (0..d_out)
                        .map(|r| f64::from(dy[i * d_out + r]) * f64::from(decoded[r * d_in + c]))
                        .sum();
                    let size: f64 = (0..d_out)
                        .map(|r| f64::from(dy[i * d_out + r] * decoded[r * d_in + c]).abs())
                        .sum();
                    let got = f64::from(dx[i * d_in + c]);
                    assert!(
                        (got - exact).abs() <= 1e-5 * size + 1e-7,
                        "{} rows {rows}: dx[{i}, {c}] = {got}, decoded weight gives {exact}",
                        backend.name
                    );
                }
            }
        }
    }
}
