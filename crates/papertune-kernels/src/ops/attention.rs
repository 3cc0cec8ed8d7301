//! Attention on the projections' layout, for inference and for training with dropout on the
//! probabilities, and the rotary embedding of queries and keys.

use burn::backend::Dispatch;
use burn::tensor::{Tensor, activation};

use super::supported;
use crate::backend::FusedOps;

/// Attention for inference, `softmax(q k^T * scale + bias) v` per head, with the tensors in the
/// layout the projections produce: `q [batch, seq_q, heads, d]`, `k`, `v [batch, seq_k, heads, d]`,
/// `bias [batch, seq_k]` added to every query's scores (0 for real tokens, a large negative
/// number for padding); returns `[batch, seq_q, heads, d]`.
///
/// On the CPU backends without autodiff this is papertune's kernel: per batch element and head,
/// the two products through gemm on strided views (no transposes) and the softmax in vectorised
/// passes. Elsewhere, burn's `attention` on transposed views.
pub fn attention_key_bias(
    query: Tensor<4>,
    key: Tensor<4>,
    value: Tensor<4>,
    bias: Tensor<2>,
    scale: f64,
) -> Tensor<4> {
    let [batch, seq_q, heads, d] = query.dims();
    let seq_k = key.dims()[1];
    let fits = key.dims() == [batch, seq_k, heads, d]
        && value.dims() == key.dims()
        && bias.dims() == [batch, seq_k];
    let device = query.device();
    if supported(&device) && !device.is_autodiff() && fits {
        let (q, k, v, bias) = (
            query.into_dispatch(),
            key.into_dispatch(),
            value.into_dispatch(),
            bias.into_dispatch(),
        );
        Tensor::from_dispatch(<Dispatch as FusedOps>::attention_key_bias(q, k, v, bias, scale))
    } else {
        let mask_bias = bias.reshape([batch, 1, 1, seq_k]).expand([batch, 1, seq_q, seq_k]); // shared by the heads
        let options = burn::tensor::ops::AttentionModuleOptions {
            scale: Some(scale),
            softcap: None,
            is_causal: false,
        };
        let heads_first = |t: Tensor<4>| t.swap_dims(1, 2); // [batch, heads, seq, d]
        burn::tensor::module::attention(
            heads_first(query),
            heads_first(key),
            heads_first(value),
            None,
            Some(mask_bias),
            options,
        )
        .swap_dims(1, 2)
    }
}

/// Attention for training, `(softmax(q k^T * scale + bias) * mask) v` per head, in the layout of
/// [`crate::attention_key_bias`], with dropout of probability `dropout` on the attention
/// probabilities, its mask drawn from `seed` (as [`crate::dropout::Dropout::next_mask`] gives
/// it); `dropout = 0` applies none. Every tensor may be tracked but `bias`.
///
/// On the CPU backends this is one tracked operation: the forward pass is the inference kernel
/// with the mask drawn and applied per head in cache, and the backward pass computes the
/// probabilities and the mask again per head instead of keeping `[batch, heads, seq_q, seq_k]`
/// tensors from the forward pass, reading and writing `q`, `k`, `v` and their gradients in the
/// projections' layout (no transposes). Elsewhere, burn's operations on transposed views with
/// the same mask.
pub fn attention_dropout(
    query: Tensor<4>,
    key: Tensor<4>,
    value: Tensor<4>,
    bias: Tensor<2>,
    scale: f64,
    dropout: f64,
    seed: u64,
) -> Tensor<4> {
    assert!(
        (0.0..1.0).contains(&dropout),
        "attention dropout probability must be in [0, 1), found {dropout}"
    );
    let [batch, _, heads, d] = query.dims();
    let seq_k = key.dims()[1];
    let fits = key.dims() == [batch, seq_k, heads, d]
        && value.dims() == key.dims()
        && bias.dims() == [batch, seq_k];
    let keep = 1.0 - dropout;
    if supported(&query.device()) && fits && !bias.is_require_grad() {
        let (q, k, v, bias) = (
            query.into_dispatch(),
            key.into_dispatch(),
            value.into_dispatch(),
            bias.into_dispatch(),
        );
        return Tensor::from_dispatch(<Dispatch as FusedOps>::attention_dropout(
            q, k, v, bias, scale, keep, seed,
        ));
    }
    attention_dropout_unfused(query, key, value, bias, scale, keep, seed)
}

/// [`attention_dropout`] in burn's tensor operations (the path of the backends without
/// papertune's kernels, and the tests' reference): the same mask, drawn for the whole
/// `[batch, heads, seq_q, seq_k]` probabilities on the host.
fn attention_dropout_unfused(
    query: Tensor<4>,
    key: Tensor<4>,
    value: Tensor<4>,
    bias: Tensor<2>,
    scale: f64,
    keep: f64,
    seed: u64,
) -> Tensor<4> {
    let [batch, seq_q, heads, _] = query.dims();
    let seq_k = key.dims()[1];
    let device = query.device();
    let heads_first = |t: Tensor<4>| t.swap_dims(1, 2); // [batch, heads, seq, d]
    let scores = heads_first(query).matmul(heads_first(key).swap_dims(2, 3)).mul_scalar(scale)
        + bias.reshape([batch, 1, 1, seq_k]);
    let mut probs = activation::softmax(scores, 3); // [batch, heads, seq_q, seq_k]
    if keep < 1.0 {
        let shape = [batch, heads, seq_q, seq_k];
        let mask = crate::dropout::mask_values(shape.iter().product(), keep, seed);
        let mask = burn::tensor::TensorData::new(mask, shape).convert_dtype(probs.dtype());
        probs = probs * Tensor::<4>::from_data(mask, &device);
    }
    probs.matmul(heads_first(value)).swap_dims(1, 2)
}

/// A decoder's causal self-attention, `softmax(q k^T * scale + bias + causal) v` per head, in
/// the projections' layout: `q [batch, seq_q, heads, d]`, `k`, `v [batch, seq_k, kv_heads, d]`
/// (grouped key/value heads: query head `h` reads head `h / (heads / kv_heads)`, none repeated
/// in memory) and `bias [batch, seq_k]` added to every query's scores (0 for real tokens, a
/// large negative number for padding). Query `i` sits at position `seq_k - seq_q + i` and sees
/// the keys at or before it, the last `window` of them with a sliding window. Returns
/// `[batch, seq_q, heads, d]`. Every tensor may be tracked but `bias`.
///
/// On the CPU backends this is one tracked operation whose kernel takes the queries in blocks
/// and multiplies each block only with the keys it can see (about half the products of full
/// scores), and whose backward pass computes the probabilities again instead of keeping
/// `[batch, heads, seq_q, seq_k]` tensors. Elsewhere, burn's operations with the mask built
/// on the host.
pub fn causal_attention(
    query: Tensor<4>,
    key: Tensor<4>,
    value: Tensor<4>,
    bias: Tensor<2>,
    scale: f64,
    window: Option<usize>,
) -> Tensor<4> {
    let [batch, seq_q, heads, d] = query.dims();
    let [_, seq_k, kv_heads, _] = key.dims();
    assert!(
        kv_heads > 0 && heads % kv_heads == 0 && seq_q <= seq_k,
        "causal attention: {heads} query heads over {kv_heads} key/value heads, {seq_q} queries over {seq_k} keys"
    );
    let fits = key.dims() == [batch, seq_k, kv_heads, d]
        && value.dims() == key.dims()
        && bias.dims() == [batch, seq_k];
    let window = window.unwrap_or(0);
    if supported(&query.device()) && fits && !bias.is_require_grad() {
        let (q, k, v, bias) = (
            query.into_dispatch(),
            key.into_dispatch(),
            value.into_dispatch(),
            bias.into_dispatch(),
        );
        return Tensor::from_dispatch(<Dispatch as FusedOps>::causal_attention(
            q, k, v, bias, scale, window,
        ));
    }
    causal_attention_unfused(query, key, value, bias, scale, window)
}

/// [`causal_attention`] in burn's tensor operations (the path of the backends without
/// papertune's kernels, and the tests' reference): the key/value heads repeated, the causal
/// mask built on the host.
fn causal_attention_unfused(
    query: Tensor<4>,
    key: Tensor<4>,
    value: Tensor<4>,
    bias: Tensor<2>,
    scale: f64,
    window: usize,
) -> Tensor<4> {
    let [batch, seq_q, heads, d] = query.dims();
    let [_, seq_k, kv_heads, _] = key.dims();
    let group = heads / kv_heads;
    let repeat = |t: Tensor<4>| {
        t.reshape([batch, seq_k, kv_heads, 1, d])
            .repeat_dim(3, group)
            .reshape([batch, seq_k, heads, d])
    };
    let heads_first = |t: Tensor<4>| t.swap_dims(1, 2); // [batch, heads, seq, d]
    let causal = Tensor::<4>::from_data(
        crate::composed::causal_mask_data(seq_q, seq_k, window, query.dtype()),
        &query.device(),
    );
    let scores =
        heads_first(query).matmul(heads_first(repeat(key)).swap_dims(2, 3)).mul_scalar(scale)
            + bias.reshape([batch, 1, 1, seq_k])
            + causal;
    activation::softmax(scores, 3).matmul(heads_first(repeat(value))).swap_dims(1, 2)
}

/// Rotary embedding of `x [batch, heads, seq, d]` with `cos`, `sin` of `[batch, 1, seq, d]`
/// (constants: no gradient flows to them): one tracked operation on the CPU backends, burn's
/// operations elsewhere.
pub fn rotary(x: Tensor<4>, cos: Tensor<4>, sin: Tensor<4>) -> Tensor<4> {
    let [batch, _, seq, d] = x.dims();
    let tables_fit =
        cos.dims() == [batch, 1, seq, d] && sin.dims() == [batch, 1, seq, d] && d % 2 == 0;
    if supported(&x.device()) && tables_fit && !cos.is_require_grad() && !sin.is_require_grad() {
        Tensor::from_dispatch(<Dispatch as FusedOps>::rotary(
            x.into_dispatch(),
            cos.into_dispatch(),
            sin.into_dispatch(),
        ))
    } else {
        let half = d / 2;
        let first = x.clone().narrow(3, 0, half);
        let second = x.clone().narrow(3, half, half);
        let rotated = Tensor::cat(vec![second.neg(), first], 3);
        x * cos + rotated * sin
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{close, cpu_devices};
    use burn::tensor::{Distribution, Tensor, activation};

    #[test]
    fn rotary_matches_burn_forward_and_backward() {
        for device in cpu_devices() {
            let device = &device.autodiff();
            // Rotary: x [2, 3, 5, 8] with tables [2, 1, 5, 8]; x as the decoder makes it (swapped axes).
            let x = Tensor::<4>::random([2, 5, 3, 8], Distribution::Normal(0.0, 1.0), device)
                .swap_dims(1, 2);
            let cos = Tensor::<4>::random([2, 1, 5, 8], Distribution::Uniform(-1.0, 1.0), device);
            let sin = Tensor::<4>::random([2, 1, 5, 8], Distribution::Uniform(-1.0, 1.0), device);
            let w4 = Tensor::<4>::random([2, 3, 5, 8], Distribution::Normal(0.0, 1.0), device);
            let (fx, bx) = (x.clone().require_grad(), x.require_grad());
            let fused_out = rotary(fx.clone(), cos.clone(), sin.clone());
            let first = bx.clone().narrow(3, 0, 4);
            let second = bx.clone().narrow(3, 4, 4);
            let burn_out = bx.clone() * cos + Tensor::cat(vec![second.neg(), first], 3) * sin;
            let flat = |t: Tensor<4>| t.reshape([2, 3, 40]);
            close(flat(fused_out.clone()), flat(burn_out.clone()), 1e-6, "rotary");
            let fused_grads = (fused_out * w4.clone()).sum().backward();
            let burn_grads = (burn_out * w4).sum().backward();
            close(
                flat(fx.grad(&fused_grads).unwrap()),
                flat(bx.grad(&burn_grads).unwrap()),
                1e-6,
                "rotary grad",
            );
        }
    }

    /// The attention operation against matmul + softmax + matmul, with padded keys, on `device`
    /// (no autodiff), for self-attention and for fewer queries than keys.
    fn check_attention(device: &burn::tensor::Device) {
        for (seq_q, seq_k) in [(5, 5), (3, 7)] {
            let (batch, heads, d) = (2, 3, 8);
            let q = Tensor::<4>::random(
                [batch, seq_q, heads, d],
                Distribution::Normal(0.0, 1.0),
                device,
            );
            let k = Tensor::<4>::random(
                [batch, seq_k, heads, d],
                Distribution::Normal(0.0, 1.0),
                device,
            );
            let v = Tensor::<4>::random(
                [batch, seq_k, heads, d],
                Distribution::Normal(0.0, 1.0),
                device,
            );
            // The second sequence has its last two keys padded.
            let mut mask = vec![0.0f32; batch * seq_k];
            mask[2 * seq_k - 2..].iter_mut().for_each(|m| *m = -1.0e9);
            let bias =
                Tensor::<2>::from_data(burn::tensor::TensorData::new(mask, [batch, seq_k]), device);
            let scale = 1.0 / (d as f64).sqrt();

            let got = attention_key_bias(q.clone(), k.clone(), v.clone(), bias.clone(), scale);
            let heads_first = |t: Tensor<4>| t.swap_dims(1, 2);
            let scores = heads_first(q).matmul(heads_first(k).swap_dims(2, 3)).mul_scalar(scale)
                + bias.reshape([batch, 1, 1, seq_k]);
            let expected = activation::softmax(scores, 3).matmul(heads_first(v)).swap_dims(1, 2);
            let flat = |t: Tensor<4>| t.reshape([batch, seq_q, heads * d]);
            close(flat(got), flat(expected), 1e-5, "attention");
        }
    }

    /// The training attention against matmul + softmax + mask + matmul in burn's operations
    /// under autodiff (the path of the other backends), forward and the gradients of `q`, `k`
    /// and `v`, with padded keys, with and without dropout, on `device`.
    fn check_attention_dropout(device: &burn::tensor::Device) {
        let device = device.clone().autodiff();
        for ((seq_q, seq_k), dropout) in [((5, 5), 0.0), ((6, 6), 0.3), ((3, 7), 0.5)] {
            let (batch, heads, d) = (2, 3, 8);
            let random = |seq: usize| {
                Tensor::<4>::random([batch, seq, heads, d], Distribution::Normal(0.0, 1.0), &device)
            };
            let (q, k, v) = (
                random(seq_q).require_grad(),
                random(seq_k).require_grad(),
                random(seq_k).require_grad(),
            );
            let weights = random(seq_q); // the loss is sum(output * weights)
            let mut mask = vec![0.0f32; batch * seq_k];
            mask[2 * seq_k - 2..].iter_mut().for_each(|m| *m = -1.0e9);
            let bias = Tensor::<2>::from_data(
                burn::tensor::TensorData::new(mask, [batch, seq_k]),
                &device,
            );
            let (scale, seed) = (1.0 / (d as f64).sqrt(), 1234);

            let got = attention_dropout(
                q.clone(),
                k.clone(),
                v.clone(),
                bias.clone(),
                scale,
                dropout,
                seed,
            );
            let expected = attention_dropout_unfused(
                q.clone(),
                k.clone(),
                v.clone(),
                bias,
                scale,
                1.0 - dropout,
                seed,
            );
            let what = format!("attention with dropout {dropout}, {seq_q} queries, {seq_k} keys");
            check_output_and_gradients(got, expected, weights, [&q, &k, &v], &what);
        }
    }

    /// `got` against `expected`, and the gradients of `q`, `k`, `v` through each for the loss
    /// `sum(output * weights)`, within 1e-5.
    fn check_output_and_gradients(
        got: Tensor<4>,
        expected: Tensor<4>,
        weights: Tensor<4>,
        inputs: [&Tensor<4>; 3],
        what: &str,
    ) {
        let flat = |t: Tensor<4>| {
            let [b, s, h, d] = t.dims();
            t.reshape([b, s, h * d])
        };
        close(flat(got.clone()), flat(expected.clone()), 1e-5, what);
        let grads_got = (got * weights.clone()).sum().backward();
        let grads_expected = (expected * weights).sum().backward();
        for (name, t) in ["dq", "dk", "dv"].into_iter().zip(inputs) {
            let (got, expected) = (t.grad(&grads_got).unwrap(), t.grad(&grads_expected).unwrap());
            close(flat(got), flat(expected), 1e-5, &format!("{what}: {name}"));
        }
    }

    /// The causal attention against burn's operations under autodiff, forward and the gradients
    /// of `q`, `k` and `v`: self-attention and fewer queries than keys (a cache), with padded
    /// keys, grouped key/value heads, a sliding window, and more queries than a block.
    #[test]
    fn causal_attention_matches_composed_operations() {
        for device in cpu_devices() {
            let device = device.autodiff();
            let cases = [
                (5, 5, 3, 3, None),
                (6, 6, 4, 2, None),
                (3, 7, 4, 1, None),
                (9, 9, 2, 1, Some(4)),
                (70, 70, 2, 1, None),
                (70, 90, 4, 2, Some(50)),
            ];
            for (seq_q, seq_k, heads, kv_heads, window) in cases {
                let (batch, d) = (2, 8);
                let random = |seq: usize, heads: usize| {
                    Tensor::<4>::random(
                        [batch, seq, heads, d],
                        Distribution::Normal(0.0, 1.0),
                        &device,
                    )
                };
                let (q, k, v) = (
                    random(seq_q, heads).require_grad(),
                    random(seq_k, kv_heads).require_grad(),
                    random(seq_k, kv_heads).require_grad(),
                );
                let weights = random(seq_q, heads); // the loss is sum(output * weights)
                // The second sequence is left-padded by two keys.
                let mut mask = vec![0.0f32; batch * seq_k];
                mask[seq_k..seq_k + 2].iter_mut().for_each(|m| *m = -1.0e9);
                let bias = Tensor::<2>::from_data(
                    burn::tensor::TensorData::new(mask, [batch, seq_k]),
                    &device,
                );
                let scale = 1.0 / (d as f64).sqrt();

                let got =
                    causal_attention(q.clone(), k.clone(), v.clone(), bias.clone(), scale, window);
                let expected = causal_attention_unfused(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    bias,
                    scale,
                    window.unwrap_or(0),
                );
                let what = format!(
                    "causal attention, {seq_q} queries, {seq_k} keys, {heads}/{kv_heads} heads, window {window:?}"
                );
                check_output_and_gradients(got, expected, weights, [&q, &k, &v], &what);
            }
        }
    }

    #[test]
    fn attention_matches_matmul_softmax_matmul() {
        for device in cpu_devices() {
            check_attention(&device);
        }
    }

    #[test]
    fn training_attention_matches_composed_operations() {
        for device in cpu_devices() {
            check_attention_dropout(&device);
        }
    }
}
