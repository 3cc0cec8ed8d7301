//! papertune-kernels on its own: the fused attention of a BERT-base-sized layer on the CPU,
//! against the same formula in burn's tensor operations (values and time), then the training
//! form with dropout on the probabilities and its backward pass.
//!
//! cargo run -p papertune-kernels --example attention

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor, TensorData, activation};

fn main() {
    let device = Device::flex();
    let (batch, seq, heads, d) = (8, 128, 12, 64);
    let scale = 1.0 / (d as f64).sqrt();
    let random = |device: &Device| {
        Tensor::<4>::random([batch, seq, heads, d], Distribution::Normal(0.0, 1.0), device)
    };
    let (q, k, v) = (random(&device), random(&device), random(&device));
    // The last 28 positions of every sequence are padding.
    let mut mask = vec![0.0f32; batch * seq];
    mask.chunks_mut(seq).for_each(|row| row[100..].iter_mut().for_each(|m| *m = -1.0e9));
    let bias = Tensor::<2>::from_data(TensorData::new(mask, [batch, seq]), &device);

    let started = Instant::now();
    let fused =
        papertune_kernels::attention_key_bias(q.clone(), k.clone(), v.clone(), bias.clone(), scale);
    let fused: Vec<f32> = fused.into_data().try_to_vec::<f32>().expect("f32");
    let fused_seconds = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let heads_first = |t: Tensor<4>| t.swap_dims(1, 2); // [batch, heads, seq, d]
    let scores = heads_first(q).matmul(heads_first(k).swap_dims(2, 3)).mul_scalar(scale)
        + bias.reshape([batch, 1, 1, seq]);
    let composed = activation::softmax(scores, 3).matmul(heads_first(v)).swap_dims(1, 2);
    let composed: Vec<f32> = composed.into_data().try_to_vec::<f32>().expect("f32");
    let composed_seconds = started.elapsed().as_secs_f64();

    let largest = fused.iter().zip(&composed).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    println!(
        "attention [{batch}, {seq}, {heads}, {d}]: fused {:.1} ms, burn's operations {:.1} ms, largest difference {largest:.2e}",
        fused_seconds * 1e3,
        composed_seconds * 1e3
    );

    // Training: dropout 0.1 on the probabilities, its mask drawn inside the kernel from a seed;
    // the backward pass computes the probabilities and the mask again instead of keeping them.
    let train = device.autodiff();
    let (q, k, v) = (
        random(&train).require_grad(),
        random(&train).require_grad(),
        random(&train).require_grad(),
    );
    let bias = Tensor::<2>::zeros([batch, seq], &train);
    let started = Instant::now();
    let output =
        papertune_kernels::attention_dropout(q.clone(), k.clone(), v.clone(), bias, scale, 0.1, 42);
    let grads = output.sum().backward();
    let [dq, dk, dv] =
        [&q, &k, &v].map(|t| t.grad(&grads).expect("a tracked input has a gradient"));
    println!(
        "training attention with dropout, forward and backward: {:.1} ms; gradient norms q {:.3}, k {:.3}, v {:.3}",
        started.elapsed().as_secs_f64() * 1e3,
        dq.powi_scalar(2).sum().sqrt().into_scalar::<f32>(),
        dk.powi_scalar(2).sum().sqrt().into_scalar::<f32>(),
        dv.powi_scalar(2).sum().sqrt().into_scalar::<f32>(),
    );
}
