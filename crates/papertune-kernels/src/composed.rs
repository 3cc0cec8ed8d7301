//! The fused operations' formulas composed from a backend's own operations: the trait's
//! default bodies (the path of the GPU backends, where burn's fusion does the kernels' work),
//! the fallback of the CPU kernels for inputs they do not take (other dtypes, shapes), and the
//! reference the tests hold the kernels against.

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, TensorMetadata};

/// `w` of shape `[d]` as `[1, .., 1, d]`, to broadcast against a rank-`rank` tensor.
pub(crate) fn broadcastable_weight<B: Backend>(
    weight: FloatTensor<B>,
    rank: usize,
) -> FloatTensor<B> {
    let d = weight.shape().num_elements();
    let mut dims = vec![1usize; rank];
    dims[rank - 1] = d;
    B::float_reshape(weight, burn::tensor::Shape::from(dims))
}

/// `1 / sqrt(mean(x^2) + eps)` over the last axis, `[.., 1]`.
pub(crate) fn inv_rms<B: Backend>(x: FloatTensor<B>, eps: f64) -> FloatTensor<B> {
    let last = x.shape().num_dims() - 1;
    let mean_square = B::float_mean_dim(B::float_mul(x.clone(), x), last);
    B::float_recip(B::float_sqrt(B::float_add_scalar(mean_square, eps.into())))
}

pub(crate) fn rms_norm<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    eps: f64,
) -> FloatTensor<B> {
    let rank = x.shape().num_dims();
    let r = inv_rms::<B>(x.clone(), eps);
    B::float_mul(B::float_mul(x, r), broadcastable_weight::<B>(weight, rank))
}

pub(crate) fn rms_norm_backward_x<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    grad: FloatTensor<B>,
    eps: f64,
) -> FloatTensor<B> {
    let rank = x.shape().num_dims();
    let r = inv_rms::<B>(x.clone(), eps);
    let wg = B::float_mul(grad, broadcastable_weight::<B>(weight, rank));
    let mean = B::float_mean_dim(B::float_mul(wg.clone(), x.clone()), rank - 1);
    let coef = B::float_mul(B::float_mul(r.clone(), r.clone()), mean);
    B::float_mul(r, B::float_sub(wg, B::float_mul(x, coef)))
}

pub(crate) fn rms_norm_backward_weight<B: Backend>(
    x: FloatTensor<B>,
    grad: FloatTensor<B>,
    eps: f64,
) -> FloatTensor<B> {
    let r = inv_rms::<B>(x.clone(), eps);
    sum_over_rows::<B>(B::float_mul(B::float_mul(grad, x), r))
}

/// `x [rows, d]` with `bias [d]` added to every row.
pub(crate) fn add_row_bias<B: Backend>(x: FloatTensor<B>, bias: FloatTensor<B>) -> FloatTensor<B> {
    let d = bias.shape().num_elements();
    B::float_add(x, B::float_reshape(bias, burn::tensor::Shape::new([1, d])))
}

/// `x + bias + residual` for `x`, `residual [rows, d]` and `bias [d]`: what LayerNorm
/// normalises at the end of a BERT block.
pub(crate) fn bias_residual<B: Backend>(
    x: FloatTensor<B>,
    bias: FloatTensor<B>,
    residual: FloatTensor<B>,
) -> FloatTensor<B> {
    B::float_add(add_row_bias::<B>(x, bias), residual)
}

/// `[.., d]` summed over every axis but the last, `[d]`.
pub(crate) fn sum_over_rows<B: Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
    let d = t.shape().as_slice().last().copied().unwrap_or(0);
    let rows = t.shape().num_elements() / d.max(1);
    let flat = B::float_reshape(t, burn::tensor::Shape::new([rows, d]));
    B::float_reshape(B::float_sum_dim(flat, 0), burn::tensor::Shape::new([d]))
}

/// `xhat = (x - mean(x)) * r` and `r = 1 / sqrt(var(x) + eps)` over the last axis.
pub(crate) fn normalized<B: Backend>(
    x: FloatTensor<B>,
    eps: f64,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let last = x.shape().num_dims() - 1;
    let centered = B::float_sub(x.clone(), B::float_mean_dim(x, last));
    let var = B::float_mean_dim(B::float_mul(centered.clone(), centered.clone()), last);
    let r = B::float_recip(B::float_sqrt(B::float_add_scalar(var, eps.into())));
    (B::float_mul(centered, r.clone()), r)
}

pub(crate) fn layer_norm_backward_x<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    grad: FloatTensor<B>,
    eps: f64,
) -> FloatTensor<B> {
    let rank = x.shape().num_dims();
    let (xhat, r) = normalized::<B>(x, eps);
    let scaled = B::float_mul(grad, broadcastable_weight::<B>(gamma, rank)); // gamma dy
    let mean = B::float_mean_dim(scaled.clone(), rank - 1);
    let mean_with_xhat = B::float_mean_dim(B::float_mul(scaled.clone(), xhat.clone()), rank - 1);
    let inner = B::float_sub(B::float_sub(scaled, mean), B::float_mul(xhat, mean_with_xhat));
    B::float_mul(r, inner)
}

pub(crate) fn layer_norm_backward_gamma<B: Backend>(
    x: FloatTensor<B>,
    grad: FloatTensor<B>,
    eps: f64,
) -> FloatTensor<B> {
    let (xhat, _) = normalized::<B>(x, eps);
    sum_over_rows::<B>(B::float_mul(grad, xhat))
}

/// The two halves of the last axis of a rank-4 tensor.
pub(crate) fn halves<B: Backend>(x: FloatTensor<B>) -> (FloatTensor<B>, FloatTensor<B>) {
    let dims = x.shape().as_slice().to_vec();
    let half = dims[3] / 2;
    let range = |start: usize, end: usize| {
        let mut slices: Vec<burn::tensor::Slice> =
            dims.iter().map(|&n| burn::tensor::Slice::from(0..n)).collect();
        slices[3] = burn::tensor::Slice::from(start..end);
        slices
    };
    (B::float_slice(x.clone(), &range(0, half)), B::float_slice(x, &range(half, 2 * half)))
}

pub(crate) fn rotary<B: Backend>(
    x: FloatTensor<B>,
    cos: FloatTensor<B>,
    sin: FloatTensor<B>,
) -> FloatTensor<B> {
    let (first, second) = halves::<B>(x.clone());
    let rotated = B::float_cat(vec![B::float_neg(second), first], 3);
    B::float_add(B::float_mul(x, cos), B::float_mul(rotated, sin))
}

pub(crate) fn rotary_backward<B: Backend>(
    grad: FloatTensor<B>,
    cos: FloatTensor<B>,
    sin: FloatTensor<B>,
) -> FloatTensor<B> {
    let (first, second) = halves::<B>(B::float_mul(grad.clone(), sin));
    let swapped = B::float_cat(vec![second, B::float_neg(first)], 3);
    B::float_add(B::float_mul(grad, cos), swapped)
}

/// `softmax(q k^T * scale + bias)` per head, `[batch, heads, seq_q, seq_k]`, for the layout of
/// [`crate::FusedOps::attention_key_bias`].
pub(crate) fn attention_probs<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    bias: FloatTensor<B>,
    scale: f64,
) -> FloatTensor<B> {
    let batch = q.shape().as_slice()[0];
    let seq_k = k.shape().as_slice()[1];
    let keys_t = B::float_swap_dims(heads_first::<B>(k), 2, 3); // [batch, heads, d, seq_k]
    let scores = B::float_matmul(B::float_mul_scalar(heads_first::<B>(q), scale.into()), keys_t); // [batch, heads, seq_q, seq_k]
    let bias = B::float_reshape(bias, burn::tensor::Shape::new([batch, 1, 1, seq_k]));
    B::softmax(B::float_add(scores, bias), 3)
}

/// `[batch, seq, heads, d]` -> `[batch, heads, seq, d]` and back (a view).
pub(crate) fn heads_first<B: Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
    B::float_swap_dims(t, 1, 2)
}

/// The dropout mask of [`crate::FusedOps::attention_dropout`] for probabilities shaped as `like`, or
/// `None` when `keep` is 1.
pub(crate) fn attention_mask<B: Backend>(
    like: &FloatTensor<B>,
    keep: f64,
    seed: u64,
) -> Option<FloatTensor<B>> {
    (keep < 1.0).then(|| {
        let shape = like.shape();
        let mask = crate::dropout::mask_values(shape.num_elements(), keep, seed);
        let mask = burn::tensor::TensorData::new(mask, shape).convert_dtype(like.dtype());
        B::float_from_data(mask, &like.device())
    })
}

pub(crate) fn attention_key_bias<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    bias: FloatTensor<B>,
    scale: f64,
) -> FloatTensor<B> {
    attention_dropout::<B>(q, k, v, bias, scale, 1.0, 0)
}

pub(crate) fn attention_dropout<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    bias: FloatTensor<B>,
    scale: f64,
    keep: f64,
    seed: u64,
) -> FloatTensor<B> {
    let mut probs = attention_probs::<B>(q, k, bias, scale);
    if let Some(mask) = attention_mask::<B>(&probs, keep, seed) {
        probs = B::float_mul(probs, mask);
    }
    heads_first::<B>(B::float_matmul(probs, heads_first::<B>(v))) // [batch, seq_q, heads, d]
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_dropout_backward<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    bias: FloatTensor<B>,
    grad: FloatTensor<B>,
    scale: f64,
    keep: f64,
    seed: u64,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let probs = attention_probs::<B>(q.clone(), k.clone(), bias, scale); // [batch, heads, seq_q, seq_k]
    let mask = attention_mask::<B>(&probs, keep, seed);
    attention_grads::<B>(probs, mask, [q, k, v], grad, scale)
}

/// The gradients of `(probs * mask) v` with respect to `q`, `k` and `v` (`[batch, seq, heads, d]`
/// each, as returned) through `probs = softmax(q k^T * scale + ..)` (`[batch, heads, seq_q,
/// seq_k]`), from the output's gradient `grad [batch, seq_q, heads, d]`.
fn attention_grads<B: Backend>(
    probs: FloatTensor<B>,
    mask: Option<FloatTensor<B>>,
    [q, k, v]: [FloatTensor<B>; 3],
    grad: FloatTensor<B>,
    scale: f64,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let dropped = match &mask {
        Some(mask) => B::float_mul(probs.clone(), mask.clone()),
        None => probs.clone(),
    };
    let grad = heads_first::<B>(grad); // [batch, heads, seq_q, d]
    let transposed = |t: FloatTensor<B>| B::float_swap_dims(t, 2, 3);
    let dv = B::float_matmul(transposed(dropped), grad.clone()); // [batch, heads, seq_k, d]
    let mut d_dropped = B::float_matmul(grad, transposed(heads_first::<B>(v))); // [batch, heads, seq_q, seq_k]
    if let Some(mask) = mask {
        d_dropped = B::float_mul(d_dropped, mask);
    }
    let d_scores = B::float_mul_scalar(softmax_backward::<B>(probs, d_dropped), scale.into());
    let dq = B::float_matmul(d_scores.clone(), heads_first::<B>(k));
    let dk = B::float_matmul(transposed(d_scores), heads_first::<B>(q));
    (heads_first::<B>(dq), heads_first::<B>(dk), heads_first::<B>(dv))
}

/// The causal (and sliding-window) part of a decoder's attention mask, `[1, 1, seq_q, seq_k]`:
/// 0 where query `i` (at position `seq_k - seq_q + i`) sees key `j`, minus infinity elsewhere
/// (every query sees its own key, so no row is all minus infinity). `window = 0` is no window.
pub(crate) fn causal_mask<B: Backend>(
    like: &FloatTensor<B>,
    seq_q: usize,
    seq_k: usize,
    window: usize,
) -> FloatTensor<B> {
    B::float_from_data(causal_mask_data(seq_q, seq_k, window, like.dtype()), &like.device())
}

/// The values of [`causal_mask`] on the host, in `dtype`.
pub(crate) fn causal_mask_data(
    seq_q: usize,
    seq_k: usize,
    window: usize,
    dtype: burn::tensor::DType,
) -> burn::tensor::TensorData {
    let past = seq_k - seq_q;
    let values: Vec<f32> = (0..seq_q)
        .flat_map(|i| {
            let position = past + i;
            (0..seq_k).map(move |j| {
                if j <= position && (window == 0 || position - j < window) {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    burn::tensor::TensorData::new(values, [1, 1, seq_q, seq_k]).convert_dtype(dtype)
}

/// Key/value heads `[batch, seq, kv_heads, d]` repeated for the `heads` query heads that share
/// them (head `h` reads key/value head `h / (heads / kv_heads)`): `[batch, seq, heads, d]`.
fn repeat_kv<B: Backend>(t: FloatTensor<B>, heads: usize) -> FloatTensor<B> {
    let &[batch, seq, kv_heads, d] = t.shape().as_slice() else { unreachable!("4-d keys") };
    if kv_heads == heads {
        return t;
    }
    let grouped = B::float_reshape(t, burn::tensor::Shape::new([batch, seq, kv_heads, 1, d]));
    B::float_reshape(
        B::float_repeat_dim(grouped, 3, heads / kv_heads),
        burn::tensor::Shape::new([batch, seq, heads, d]),
    )
}

/// The gradient of [`repeat_kv`]: the query heads' gradients summed per key/value head.
fn sum_kv<B: Backend>(t: FloatTensor<B>, kv_heads: usize) -> FloatTensor<B> {
    let &[batch, seq, heads, d] = t.shape().as_slice() else { unreachable!("4-d keys") };
    if kv_heads == heads {
        return t;
    }
    let grouped =
        B::float_reshape(t, burn::tensor::Shape::new([batch, seq, kv_heads, heads / kv_heads, d]));
    B::float_reshape(
        B::float_sum_dim(grouped, 3),
        burn::tensor::Shape::new([batch, seq, kv_heads, d]),
    )
}

/// `softmax(q k^T * scale + bias + causal mask)` per head, `[batch, heads, seq_q, seq_k]`, with
/// `k` already repeated to the query heads.
fn causal_probs<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    bias: FloatTensor<B>,
    scale: f64,
    window: usize,
) -> FloatTensor<B> {
    let &[batch, seq_q, _, _] = q.shape().as_slice() else { unreachable!("4-d queries") };
    let seq_k = k.shape().as_slice()[1];
    let causal = causal_mask::<B>(&q, seq_q, seq_k, window);
    let keys_t = B::float_swap_dims(heads_first::<B>(k), 2, 3); // [batch, heads, d, seq_k]
    let scores = B::float_matmul(B::float_mul_scalar(heads_first::<B>(q), scale.into()), keys_t); // [batch, heads, seq_q, seq_k]
    let bias = B::float_reshape(bias, burn::tensor::Shape::new([batch, 1, 1, seq_k]));
    B::softmax(B::float_add(B::float_add(scores, bias), causal), 3)
}

pub(crate) fn causal_attention<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    bias: FloatTensor<B>,
    scale: f64,
    window: usize,
) -> FloatTensor<B> {
    let heads = q.shape().as_slice()[2];
    let probs = causal_probs::<B>(q, repeat_kv::<B>(k, heads), bias, scale, window);
    heads_first::<B>(B::float_matmul(probs, heads_first::<B>(repeat_kv::<B>(v, heads)))) // [batch, seq_q, heads, d]
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn causal_attention_backward<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    bias: FloatTensor<B>,
    grad: FloatTensor<B>,
    scale: f64,
    window: usize,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let (heads, kv_heads) = (q.shape().as_slice()[2], k.shape().as_slice()[2]);
    let (k, v) = (repeat_kv::<B>(k, heads), repeat_kv::<B>(v, heads));
    let probs = causal_probs::<B>(q.clone(), k.clone(), bias, scale, window); // [batch, heads, seq_q, seq_k]
    let (dq, dk, dv) = attention_grads::<B>(probs, None, [q, k, v], grad, scale);
    (dq, sum_kv::<B>(dk, kv_heads), sum_kv::<B>(dv, kv_heads))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn adamw_packed<B: Backend>(
    param: FloatTensor<B>,
    grad: FloatTensor<B>,
    moment_1: FloatTensor<B>,
    moment_2: FloatTensor<B>,
    lr: f64,
    beta_1: f64,
    beta_2: f64,
    epsilon: f64,
    weight_decay: f64,
    correction_1: f64,
    correction_2: f64,
) -> FloatTensor<B> {
    let n = param.shape().num_elements();
    let flat = |t: FloatTensor<B>| B::float_reshape(t, burn::tensor::Shape::new([1, n]));
    let (p, g, m, v) = (flat(param), flat(grad), flat(moment_1), flat(moment_2));
    let m = B::float_add(
        B::float_mul_scalar(m, beta_1.into()),
        B::float_mul_scalar(g.clone(), (1.0 - beta_1).into()),
    );
    let g2 = B::float_mul(g.clone(), g);
    let v = B::float_add(
        B::float_mul_scalar(v, beta_2.into()),
        B::float_mul_scalar(g2, (1.0 - beta_2).into()),
    );
    let denominator = B::float_add_scalar(
        B::float_sqrt(B::float_div_scalar(v.clone(), correction_2.into())),
        epsilon.into(),
    );
    let delta = B::float_div(B::float_div_scalar(m.clone(), correction_1.into()), denominator);
    let p = B::float_sub(
        B::float_mul_scalar(p, (1.0 - lr * weight_decay).into()),
        B::float_mul_scalar(delta, lr.into()),
    );
    B::float_cat(vec![p, m, v], 0) // [3, n]
}

/// `[rows, 1]`: `logsumexp` of each row of `[rows, classes]` logits.
pub(crate) fn row_logsumexp<B: Backend>(logits: FloatTensor<B>) -> FloatTensor<B> {
    let max = B::float_max_dim(logits.clone(), 1); // [rows, 1]
    let sum = B::float_sum_dim(B::float_exp(B::float_sub(logits, max.clone())), 1);
    B::float_add(B::float_log(sum), max)
}

/// `[rows, 1]` integer class ids from float ids `[rows]`.
pub(crate) fn class_ids<B: Backend>(
    targets: FloatTensor<B>,
) -> burn::backend::tensor::IntTensor<B> {
    let rows = targets.shape().num_elements();
    B::float_into_int(
        B::float_reshape(targets, burn::tensor::Shape::new([rows, 1])),
        burn::tensor::IntDType::I64,
    )
}

pub(crate) fn token_nll<B: Backend>(
    logits: FloatTensor<B>,
    targets: FloatTensor<B>,
) -> FloatTensor<B> {
    let rows = logits.shape()[0];
    let picked = B::float_gather(1, logits.clone(), class_ids::<B>(targets)); // [rows, 1]
    let nll = B::float_sub(row_logsumexp::<B>(logits), picked);
    B::float_reshape(nll, burn::tensor::Shape::new([rows]))
}

pub(crate) fn token_nll_backward<B: Backend>(
    logits: FloatTensor<B>,
    targets: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> FloatTensor<B> {
    let rows = logits.shape()[0];
    let grad = B::float_reshape(grad, burn::tensor::Shape::new([rows, 1]));
    let probs = B::float_exp(B::float_sub(logits.clone(), row_logsumexp::<B>(logits)));
    let scaled = B::float_mul(probs, grad.clone()); // [rows, classes]
    B::float_scatter(
        1,
        scaled,
        class_ids::<B>(targets),
        B::float_neg(grad),
        burn::tensor::IndexingUpdateOp::Add,
    )
}

pub(crate) fn matmul<B: Backend>(lhs: FloatTensor<B>, rhs: FloatTensor<B>) -> FloatTensor<B> {
    B::float_matmul(lhs, rhs)
}

/// `x Wᵀ` from W's blocks, on the host: `x [rows, d_in]` is read, multiplied, and the result
/// written back to `x`'s device.
/// `x Wᵀ` for `x [rows, d_in]` on a backend without papertune's kernels (the GPU backends):
/// with `to_host`, the rows cross to the host for [`quantized_linear_on_host`]; otherwise the
/// weight is decoded to f32 on the host, uploaded for this product alone and multiplied on the
/// device, a product that the backend's autodiff tracks like any other.
pub(crate) fn quantized_linear_on_device<B: Backend>(
    x: FloatTensor<B>,
    weight: crate::quant::QuantWeight,
    to_host: bool,
) -> FloatTensor<B> {
    if to_host {
        return quantized_linear_on_host::<B>(x, weight);
    }
    let w = decoded_on::<B>(&weight, &x.device(), x.dtype()); // [d_out, d_in]
    B::float_matmul(x, B::float_transpose(w))
}

/// `x Wᵀ` from W's blocks, on the host.
pub(crate) fn quantized_linear_on_host<B: Backend>(
    x: FloatTensor<B>,
    weight: crate::quant::QuantWeight,
) -> FloatTensor<B> {
    on_host::<B>(x, weight.cols, weight.rows, |x, rows, y| {
        crate::quant::matmul_xwt(x, rows, &weight, y)
    })
}

/// `dy W` from W's blocks, on the host.
pub(crate) fn quantized_linear_backward_on_host<B: Backend>(
    grad: FloatTensor<B>,
    weight: crate::quant::QuantWeight,
) -> FloatTensor<B> {
    on_host::<B>(grad, weight.rows, weight.cols, |dy, rows, dx| {
        crate::quant::matmul_dyw(dy, rows, &weight, dx)
    })
}

/// The weight decoded to f32 on the host and uploaded, `[d_out, d_in]` in `dtype`: it lives for
/// one product (the blocks stay the only lasting copy).
fn decoded_on<B: Backend>(
    weight: &crate::quant::QuantMatrix,
    device: &B::Device,
    dtype: burn::tensor::DType,
) -> FloatTensor<B> {
    let data = burn::tensor::TensorData::new(weight.dequantize(), [weight.rows, weight.cols]);
    B::float_from_data(data.convert_dtype(dtype), device)
}

/// `product(input, rows, output)` on the host: `input` (`[rows, width_in]`) read as f32, the
/// `[rows, width_out]` output written back to its device in its dtype.
fn on_host<B: Backend>(
    input: FloatTensor<B>,
    width_in: usize,
    width_out: usize,
    product: impl FnOnce(&[f32], usize, &mut [f32]),
) -> FloatTensor<B> {
    let (device, dtype) = (input.device(), input.dtype());
    let rows = input.shape().num_elements() / width_in;
    let data = burn::backend::try_read_sync(B::float_into_data(input))
        .expect("reading a tensor back is synchronous on every backend papertune runs")
        .expect("a tensor's data can be read back");
    let values = data.convert::<f32>().try_into_vec::<f32>().expect("converted to f32");
    let mut out = vec![0.0f32; rows * width_out];
    product(&values, rows, &mut out);
    B::float_from_data(
        burn::tensor::TensorData::new(out, [rows, width_out]).convert_dtype(dtype),
        &device,
    )
}

pub(crate) fn linear_bias<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
) -> FloatTensor<B> {
    let d_out = bias.shape().num_elements();
    let product = B::float_matmul(x, weight); // [rows, d_out]
    B::float_add(product, B::float_reshape(bias, burn::tensor::Shape::new([1, d_out])))
}

pub(crate) fn softmax_backward<B: Backend>(
    probs: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> FloatTensor<B> {
    let last = probs.shape().num_dims() - 1;
    let dot = B::float_sum_dim(B::float_mul(grad.clone(), probs.clone()), last);
    B::float_mul(probs, B::float_sub(grad, dot))
}

pub(crate) fn swiglu<B: Backend>(gate: FloatTensor<B>, up: FloatTensor<B>) -> FloatTensor<B> {
    B::float_mul(B::float_mul(gate.clone(), B::sigmoid(gate)), up)
}

pub(crate) fn swiglu_backward_gate<B: Backend>(
    gate: FloatTensor<B>,
    up: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> FloatTensor<B> {
    let s = B::sigmoid(gate.clone());
    let g_s = B::float_mul(gate.clone(), s.clone());
    let inner = B::float_add_scalar(B::float_sub(gate, g_s), 1.0.into());
    B::float_mul(B::float_mul(grad, up), B::float_mul(s, inner))
}

pub(crate) fn swiglu_backward_up<B: Backend>(
    gate: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> FloatTensor<B> {
    B::float_mul(grad, B::float_mul(gate.clone(), B::sigmoid(gate)))
}

/// `sqrt(2 / pi)` and the cubic coefficient of GELU's tanh approximation.
pub(crate) const GELU_TANH_C: f64 = 0.797_884_560_802_865_4;
pub(crate) const GELU_TANH_A: f64 = 0.044_715;

/// `s = sigmoid(2 u)` with `u = c (x + a x^3)`: GELU's tanh form is
/// `0.5 x (1 + tanh(u)) = x s`.
fn gelu_tanh_sigmoid<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let cube = B::float_mul(B::float_mul(x.clone(), x.clone()), x.clone());
    let u = B::float_add(x, B::float_mul_scalar(cube, GELU_TANH_A.into()));
    B::sigmoid(B::float_mul_scalar(u, (2.0 * GELU_TANH_C).into()))
}

pub(crate) fn geglu_tanh<B: Backend>(gate: FloatTensor<B>, up: FloatTensor<B>) -> FloatTensor<B> {
    B::float_mul(B::float_mul(gate.clone(), gelu_tanh_sigmoid::<B>(gate)), up)
}

/// `dy * up * (s + x s (1 - s) 2 c (1 + 3 a x^2))`, the derivative of `x s` times `up`.
pub(crate) fn geglu_tanh_backward_gate<B: Backend>(
    gate: FloatTensor<B>,
    up: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> FloatTensor<B> {
    let s = gelu_tanh_sigmoid::<B>(gate.clone());
    let one_minus_s = B::float_add_scalar(B::float_neg(s.clone()), 1.0.into());
    let du = B::float_add_scalar(
        B::float_mul_scalar(
            B::float_mul(gate.clone(), gate.clone()),
            (6.0 * GELU_TANH_C * GELU_TANH_A).into(),
        ),
        (2.0 * GELU_TANH_C).into(),
    );
    let slope =
        B::float_add(s.clone(), B::float_mul(B::float_mul(gate, s), B::float_mul(one_minus_s, du)));
    B::float_mul(B::float_mul(grad, up), slope)
}

pub(crate) fn geglu_tanh_backward_up<B: Backend>(
    gate: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> FloatTensor<B> {
    B::float_mul(grad, B::float_mul(gate.clone(), gelu_tanh_sigmoid::<B>(gate)))
}
