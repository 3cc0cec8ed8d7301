//! Linear layers and batched products: gemm on the operands' own strides on the CPU
//! backends, one tracked operation whose backward pass is the same product on transposed views.

use burn::backend::Dispatch;
use burn::tensor::Tensor;

use super::supported;
use crate::backend::FusedOps;

/// Batched matrix product `a b` of `a [b0, b1, m, k]` and `b [b0, b1, k, n]` (the same batch
/// axes, no broadcasting), `[b0, b1, m, n]`: the attention products.
///
/// On the CPU backends one tracked operation: each product is a gemm call on the operands'
/// own strides (a transposed key is read as it is, not copied), the products in parallel, the
/// output allocated once; the backward pass is the same operation on transposed views. burn's
/// `matmul` elsewhere.
pub fn batched_matmul(a: Tensor<4>, b: Tensor<4>) -> Tensor<4> {
    let ([b0, b1, _, k], [c0, c1, k2, _]) = (a.dims(), b.dims());
    if supported(&a.device()) && [b0, b1, k] == [c0, c1, k2] {
        Tensor::from_dispatch(<Dispatch as FusedOps>::batched_matmul(
            a.into_dispatch(),
            b.into_dispatch(),
        ))
    } else {
        a.matmul(b)
    }
}

/// `x Wᵀ + bias` for `x [.., d_in]` and a weight `W [d_out, d_in]` kept in its quantised
/// blocks (in host memory); the output is `[.., d_out]`. The weight is frozen; the backward pass
/// reaches `x` (`dx = dy W`).
///
/// On the CPU backends this is one tracked operation computed from the blocks
/// ([`crate::quant::matmul_xwt`], [`crate::quant::matmul_dyw`]). The GPU backends split by
/// rows as those kernels do: up to [`crate::quant::q8_path_max_m`] rows that need no gradient
/// (decoding) cross to the host for the 8-bit integer products; more rows (prefill, training),
/// or rows that need a gradient, get the weight decoded to f32 on the host and uploaded for
/// this one product, which runs on the device (burn's quantised tensors do not hold GGUF's
/// block formats, so the weight is decoded per layer).
pub fn quantized_linear<const D: usize>(
    x: Tensor<D>,
    weight: &crate::quant::QuantWeight,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    let dims = x.dims();
    assert_eq!(
        dims[D - 1],
        weight.cols,
        "quantized_linear: the input's last axis is {}, the weight takes {}",
        dims[D - 1],
        weight.cols
    );
    let rows = dims[..D - 1].iter().product();
    let x = x.reshape([rows, weight.cols]);
    let y = if supported(&x.device()) {
        Tensor::<2>::from_dispatch(<Dispatch as FusedOps>::quantized_linear(
            x.into_dispatch(),
            weight.clone(),
        ))
    } else {
        let to_host = rows <= crate::quant::q8_path_max_m(weight.ty) && !x.is_tracked();
        Tensor::<2>::from_dispatch(crate::composed::quantized_linear_on_device::<Dispatch>(
            x.into_dispatch(),
            weight.clone(),
            to_host,
        ))
    };
    let y = match bias {
        Some(bias) => y + bias.unsqueeze_dim(0),
        None => y,
    };
    let mut out = dims;
    out[D - 1] = weight.rows;
    y.reshape(out)
}

/// burn's [`Linear`](burn::nn::Linear) layer on `x [.., d_in]`: [`linear`] with the layer's
/// weight and bias.
pub fn linear_layer<const D: usize>(layer: &burn::nn::Linear, x: Tensor<D>) -> Tensor<D> {
    linear(x, layer.weight.val(), layer.bias.as_ref().map(|b| b.val()))
}

/// `x weight + bias` for `x [.., d_in]`, `weight [d_in, d_out]` and `bias [d_out]`; the output
/// is `[.., d_out]`.
///
/// On the CPU backends this is one tracked operation that calls gemm directly: the bias rows
/// are the product's starting values, the output is allocated once, and the backward pass
/// computes `dx = dy weight^T` and `dweight = x^T dy` over all rows at once from strided views,
/// with no transposed copies. Elsewhere, burn's `linear`.
pub fn linear<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    let dims = x.dims();
    let [d_in, d_out] = weight.dims();
    let bias_fits = bias.as_ref().is_none_or(|b| b.dims() == [d_out]);
    if !supported(&x.device()) || dims[D - 1] != d_in || !bias_fits {
        return burn::tensor::module::linear(x, weight, bias);
    }
    let rows = dims[..D - 1].iter().product::<usize>();
    let (x, weight) = (x.reshape([rows, d_in]).into_dispatch(), weight.into_dispatch());
    let output = match bias {
        Some(bias) => <Dispatch as FusedOps>::linear_layer_bias(x, weight, bias.into_dispatch()),
        None => <Dispatch as FusedOps>::linear_layer(x, weight),
    };
    let mut out_dims = dims;
    out_dims[D - 1] = d_out;
    Tensor::<2>::from_dispatch(output).reshape(out_dims) // [rows, d_out] -> [.., d_out]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{close, cpu_devices};
    use burn::tensor::{Distribution, Tensor};

    /// Products and their gradients against burn's `matmul` and `linear` on `device` (autodiff).
    fn check_against_burn(device: &burn::tensor::Device) {
        assert!(device.is_autodiff());
        let shape = [2, 5, 37];
        // Batched products as attention uses them (a transposed key view), against matmul.
        let q = Tensor::<4>::random([2, 3, 5, 8], Distribution::Normal(0.0, 1.0), device);
        let k = Tensor::<4>::random([2, 3, 7, 8], Distribution::Normal(0.0, 1.0), device);
        let w_scores = Tensor::<4>::random([2, 3, 5, 7], Distribution::Normal(0.0, 1.0), device);
        let (fq, fk, bq, bk) = (
            q.clone().require_grad(),
            k.clone().require_grad(),
            q.require_grad(),
            k.require_grad(),
        );
        let fused_out = batched_matmul(fq.clone(), fk.clone().swap_dims(2, 3));
        let burn_out = bq.clone().matmul(bk.clone().swap_dims(2, 3));
        let flat = |t: Tensor<4>| {
            let [a, b, c, d] = t.dims();
            t.reshape([a, b, c * d])
        };
        close(flat(fused_out.clone()), flat(burn_out.clone()), 1e-5, "batched_matmul");
        let fused_grads = (fused_out * w_scores.clone()).sum().backward();
        let burn_grads = (burn_out * w_scores).sum().backward();
        close(
            flat(fq.grad(&fused_grads).unwrap()),
            flat(bq.grad(&burn_grads).unwrap()),
            1e-5,
            "batched_matmul a grad",
        );
        close(
            flat(fk.grad(&fused_grads).unwrap()),
            flat(bk.grad(&burn_grads).unwrap()),
            1e-5,
            "batched_matmul b grad",
        );

        // Linear layers: with a bias, without one, with a frozen weight read through a
        // transposed view (as a tied or merged weight may be), against burn's `linear`.
        let (d_in, d_out) = (shape[2], 11);
        let x = Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), device);
        let weight = Tensor::<2>::random([d_in, d_out], Distribution::Normal(0.0, 0.2), device);
        let bias = Tensor::<1>::random([d_out], Distribution::Normal(0.0, 1.0), device);
        let w_out = Tensor::<3>::random(
            [shape[0], shape[1], d_out],
            Distribution::Normal(0.0, 1.0),
            device,
        );
        let frozen_t = Tensor::<2>::random([d_out, d_in], Distribution::Normal(0.0, 0.2), device);
        let cases: [(&str, Tensor<2>, Option<Tensor<1>>, bool); 3] = [
            ("linear with bias", weight.clone(), Some(bias), true),
            ("linear without bias", weight, None, true),
            ("linear, frozen transposed weight", frozen_t.transpose(), None, false),
        ];
        for (what, weight, bias, trained) in cases {
            let track = |t: Tensor<2>| if trained { t.require_grad() } else { t };
            let (fx, fw, fb) = (
                x.clone().require_grad(),
                track(weight.clone()),
                bias.clone().map(|b| b.require_grad()),
            );
            let (bx, bw, bb) =
                (x.clone().require_grad(), track(weight), bias.map(|b| b.require_grad()));
            let fused_out = linear(fx.clone(), fw.clone(), fb.clone());
            let burn_out = burn::tensor::module::linear(bx.clone(), bw.clone(), bb.clone());
            close(fused_out.clone(), burn_out.clone(), 1e-5, what);
            let fused_grads = (fused_out * w_out.clone()).sum().backward();
            let burn_grads = (burn_out * w_out.clone()).sum().backward();
            close(
                fx.grad(&fused_grads).unwrap(),
                bx.grad(&burn_grads).unwrap(),
                1e-5,
                &format!("{what}: x grad"),
            );
            if trained {
                let (fwg, bwg) = (fw.grad(&fused_grads).unwrap(), bw.grad(&burn_grads).unwrap());
                close(fwg.unsqueeze(), bwg.unsqueeze(), 1e-5, &format!("{what}: weight grad"));
            } else {
                assert!(fw.grad(&fused_grads).is_none(), "{what}: a frozen weight got a gradient");
            }
            if let (Some(fb), Some(bb)) = (fb, bb) {
                let (fbg, bbg) = (fb.grad(&fused_grads).unwrap(), bb.grad(&burn_grads).unwrap());
                close(fbg.unsqueeze(), bbg.unsqueeze(), 1e-5, &format!("{what}: bias grad"));
            }
        }
    }

    #[test]
    fn fused_forward_and_backward_match_burn() {
        for device in cpu_devices() {
            check_against_burn(&device.autodiff());
        }
    }
}
