//! A decoder's causal attention with grouped key/value heads, forward and backward as in a LoRA
//! step (SmolLM2-135M's shape by default: 4 sequences of 256 tokens, 9 query heads over 3
//! key/value heads of 64), two ways, alternating: the fused `causal_attention` and the same
//! formula from products, a softmax and the causal mask built on the host (the query heads of a
//! group stacked along the sequence axis). Prints the median time of each and the largest
//! differences of the output and the gradients.
//!
//! cargo run -p papertune-kernels --example causal_attention [-- BATCH SEQ HEADS KV_HEADS D [WINDOW]]

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor, TensorData};

fn main() {
    let args: Vec<usize> =
        std::env::args().skip(1).map(|a| a.parse().expect("sizes are whole numbers")).collect();
    let [batch, seq, heads, kv_heads, d] = match args.get(..5) {
        Some(&[b, s, h, kv, d]) => [b, s, h, kv, d],
        _ => [4, 256, 9, 3, 64],
    };
    let window = args.get(5).copied();
    assert!(
        kv_heads > 0 && heads % kv_heads == 0,
        "{heads} query heads do not share {kv_heads} key/value heads evenly"
    );
    let group = heads / kv_heads;
    let scale = 1.0 / (d as f64).sqrt();
    let device = Device::flex().autodiff();
    let random = |heads: usize| {
        Tensor::<4>::random([batch, seq, heads, d], Distribution::Normal(0.0, 1.0), &device)
    };
    let (q, k, v, upstream) = (random(heads), random(kv_heads), random(kv_heads), random(heads));
    let key_bias = Tensor::<2>::zeros([batch, seq], &device);
    let causal: Vec<f32> = (0..batch * group * seq)
        .flat_map(|row| {
            let i = row % seq;
            (0..seq)
                .map(move |j| if j <= i && window.is_none_or(|w| i - j < w) { 0.0 } else { -1.0e9 })
        })
        .collect();
    let mask =
        Tensor::<4>::from_data(TensorData::new(causal, [batch, 1, group * seq, seq]), &device);

    // One forward and backward pass; returns the output and the three gradients.
    let fused = || {
        let (q, k, v) =
            (q.clone().require_grad(), k.clone().require_grad(), v.clone().require_grad());
        let out = papertune_kernels::causal_attention(
            q.clone(),
            k.clone(),
            v.clone(),
            key_bias.clone(),
            scale,
            window,
        );
        let grads = (out.clone() * upstream.clone()).sum().backward();
        [out, q.grad(&grads).unwrap(), k.grad(&grads).unwrap(), v.grad(&grads).unwrap()]
            .map(|t| t.into_data().try_to_vec::<f32>().unwrap())
    };
    let composed = || {
        let (q, k, v) =
            (q.clone().require_grad(), k.clone().require_grad(), v.clone().require_grad());
        let heads_first = |t: Tensor<4>| t.swap_dims(1, 2); // [batch, heads, seq, d]
        let query = heads_first(q.clone()).reshape([batch, kv_heads, group * seq, d]);
        let scores = papertune_kernels::batched_matmul(
            query.mul_scalar(scale),
            heads_first(k.clone()).swap_dims(2, 3),
        ) + mask.clone();
        let probs = papertune_kernels::softmax_last(scores);
        let context = papertune_kernels::batched_matmul(probs, heads_first(v.clone())); // [batch, kv_heads, group * seq, d]
        let out = context.reshape([batch, heads, seq, d]).swap_dims(1, 2);
        let grads = (out.clone() * upstream.clone()).sum().backward();
        [out, q.grad(&grads).unwrap(), k.grad(&grads).unwrap(), v.grad(&grads).unwrap()]
            .map(|t| t.into_data().try_to_vec::<f32>().unwrap())
    };

    let (mut fused_times, mut composed_times) = (Vec::new(), Vec::new());
    let (mut a, mut b) = (fused(), composed()); // warm-up
    for _ in 0..5 {
        let started = Instant::now();
        a = fused();
        fused_times.push(started.elapsed().as_secs_f64());
        let started = Instant::now();
        b = composed();
        composed_times.push(started.elapsed().as_secs_f64());
    }
    let median = |mut t: Vec<f64>| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2] * 1e3
    };
    let largest =
        |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    println!(
        "causal attention [{batch}, {seq}, {heads}/{kv_heads} heads, {d}], window {window:?}, forward + backward: fused {:.1} ms, composed {:.1} ms (medians of 5)",
        median(fused_times),
        median(composed_times)
    );
    println!(
        "largest differences: output {:.1e}, dq {:.1e}, dk {:.1e}, dv {:.1e}",
        largest(&a[0], &b[0]),
        largest(&a[1], &b[1]),
        largest(&a[2], &b[2]),
        largest(&a[3], &b[3])
    );
}
