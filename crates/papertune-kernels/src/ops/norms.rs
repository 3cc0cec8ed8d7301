//! RMSNorm and LayerNorm over the last axis, and a linear layer's bias, a residual and
//! LayerNorm in one pass (the end of a BERT block). Half-precision inputs are normalised in f32.

use burn::backend::Dispatch;
use burn::tensor::{FloatDType, Tensor};

use super::{half_precision, product_rows, supported};
use crate::backend::FusedOps;
use crate::linear_layer;

/// RMSNorm over the last axis with weight `[d]`: one tracked operation on the CPU backends,
/// burn's operations elsewhere; in f32 for half-precision inputs.
pub fn rms_norm<const D: usize>(x: Tensor<D>, weight: Tensor<1>, eps: f64) -> Tensor<D> {
    if let Some(half) = half_precision(&x) {
        return rms_norm(x.cast(FloatDType::F32), weight.cast(FloatDType::F32), eps).cast(half);
    }
    if supported(&x.device()) && x.dims()[D - 1] == weight.dims()[0] {
        Tensor::from_dispatch(<Dispatch as FusedOps>::rms_norm(
            x.into_dispatch(),
            weight.into_dispatch(),
            eps,
        ))
    } else {
        let mean_square = x.clone().powi_scalar(2).mean_dim(D - 1); // [.., 1]
        x * mean_square.add_scalar(eps).sqrt().recip() * weight.unsqueeze()
    }
}

/// LayerNorm over the last axis with `gamma`, `beta` of shape `[d]`: one tracked operation
/// (flex's forward kernel, a written-out backward) on the CPU backends, burn's `layer_norm`
/// elsewhere; in f32 for half-precision inputs.
pub fn layer_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> Tensor<D> {
    if let Some(half) = half_precision(&x) {
        let (gamma, beta) = (gamma.cast(FloatDType::F32), beta.cast(FloatDType::F32));
        return layer_norm(x.cast(FloatDType::F32), gamma, beta, eps).cast(half);
    }
    let d = x.dims()[D - 1];
    if supported(&x.device()) && gamma.dims() == [d] && beta.dims() == [d] {
        let (x, gamma, beta) = (x.into_dispatch(), gamma.into_dispatch(), beta.into_dispatch());
        Tensor::from_dispatch(<Dispatch as FusedOps>::layer_norm_affine(x, gamma, beta, eps))
    } else {
        burn::tensor::module::layer_norm(x, gamma, Some(beta), eps)
    }
}

/// `layer_norm(x weight + bias + residual)` for burn's [`Linear`](burn::nn::Linear) layer on
/// `x [.., d_in]` and `residual [.., d_out]`, with LayerNorm's `gamma`, `beta` `[d_out]`: the
/// end of a BERT block when no dropout acts between the product and the residual.
///
/// On the CPU backends the product is computed without its bias, then one pass per row adds
/// the bias and the residual and normalises: the bias rows are not written for the product to
/// read back, and the sum is not written out for LayerNorm to read again. Under autodiff the
/// same formula is composed from tracked operations. Elsewhere, and for a layer without bias,
/// [`crate::linear_layer`], an addition and [`crate::layer_norm`].
pub fn linear_residual_layer_norm<const D: usize>(
    layer: &burn::nn::Linear,
    x: Tensor<D>,
    residual: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> Tensor<D> {
    let [d_in, d_out] = layer.weight.dims();
    let out_dims = residual.dims();
    let fits = x.dims()[D - 1] == d_in
        && out_dims[D - 1] == d_out
        && gamma.dims() == [d_out]
        && beta.dims() == [d_out];
    match &layer.bias {
        Some(bias)
            if supported(&x.device())
                && fits
                && bias.dims() == [d_out]
                && half_precision(&x).is_none() =>
        {
            let (product, _) = product_rows(layer, x);
            let residual = residual.reshape(product.dims());
            let normalised = <Dispatch as FusedOps>::bias_residual_layer_norm(
                product.into_dispatch(),
                bias.val().into_dispatch(),
                residual.into_dispatch(),
                gamma.into_dispatch(),
                beta.into_dispatch(),
                eps,
            );
            Tensor::<2>::from_dispatch(normalised).reshape(out_dims)
        }
        _ => layer_norm(linear_layer(layer, x) + residual, gamma, beta, eps),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{close, cpu_devices};
    use burn::tensor::{Distribution, Tensor};

    /// RMSNorm and LayerNorm, forward and gradients, against burn's composed operations on
    /// `device` (autodiff).
    fn check_against_burn(device: &burn::tensor::Device) {
        assert!(device.is_autodiff());
        let shape = [2, 5, 37]; // a row length that is not a multiple of the vector width
        let weights = Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), device);

        let x = Tensor::<3>::random(shape, Distribution::Normal(0.5, 2.0), device);
        let w = Tensor::<1>::random([shape[2]], Distribution::Normal(1.0, 0.3), device);
        let (fx, fw) = (x.clone().require_grad(), w.clone().require_grad());
        let (bx, bw) = (x.require_grad(), w.require_grad());
        let fused_out = rms_norm(fx.clone(), fw.clone(), 1e-5);
        let mean_square = bx.clone().powi_scalar(2).mean_dim(2);
        let burn_out =
            bx.clone() * mean_square.add_scalar(1e-5).sqrt().recip() * bw.clone().unsqueeze();
        close(fused_out.clone(), burn_out.clone(), 1e-6, "rms_norm");
        let fused_grads = (fused_out * weights.clone()).sum().backward();
        let burn_grads = (burn_out * weights.clone()).sum().backward();
        close(
            fx.grad(&fused_grads).unwrap(),
            bx.grad(&burn_grads).unwrap(),
            1e-5,
            "rms_norm x grad",
        );
        let (fwg, bwg) = (fw.grad(&fused_grads).unwrap(), bw.grad(&burn_grads).unwrap());
        close(fwg.unsqueeze(), bwg.unsqueeze(), 1e-5, "rms_norm weight grad");

        // LayerNorm against burn's (composed under autodiff); an offset mean, as hidden states have.
        let x = Tensor::<3>::random(shape, Distribution::Normal(2.0, 3.0), device);
        let gamma = Tensor::<1>::random([shape[2]], Distribution::Normal(1.0, 0.3), device);
        let beta = Tensor::<1>::random([shape[2]], Distribution::Normal(0.0, 0.3), device);
        let (fx, fgamma, fbeta) =
            (x.clone().require_grad(), gamma.clone().require_grad(), beta.clone().require_grad());
        let (bx, bgamma, bbeta) = (x.require_grad(), gamma.require_grad(), beta.require_grad());
        let fused_out = layer_norm(fx.clone(), fgamma.clone(), fbeta.clone(), 1e-12);
        let burn_out = burn::tensor::module::layer_norm(
            bx.clone(),
            bgamma.clone(),
            Some(bbeta.clone()),
            1e-12,
        );
        close(fused_out.clone(), burn_out.clone(), 1e-5, "layer_norm");
        let fused_grads = (fused_out * weights.clone()).sum().backward();
        let burn_grads = (burn_out * weights.clone()).sum().backward();
        close(
            fx.grad(&fused_grads).unwrap(),
            bx.grad(&burn_grads).unwrap(),
            1e-5,
            "layer_norm x grad",
        );
        let as_3d = |t: Tensor<1>| t.unsqueeze::<3>();
        close(
            as_3d(fgamma.grad(&fused_grads).unwrap()),
            as_3d(bgamma.grad(&burn_grads).unwrap()),
            1e-5,
            "layer_norm gamma grad",
        );
        close(
            as_3d(fbeta.grad(&fused_grads).unwrap()),
            as_3d(bbeta.grad(&burn_grads).unwrap()),
            1e-5,
            "layer_norm beta grad",
        );
    }

    #[test]
    fn fused_forward_and_backward_match_burn() {
        for device in cpu_devices() {
            check_against_burn(&device.autodiff());
        }
    }

    #[cfg(feature = "flex")]
    #[test]
    fn flex_f64_takes_the_composed_layer_norm_backward() {
        // f64 skips the f32 kernels: the backward formulas composed from backend operations
        // (what ndarray and other dtypes run) against burn's own LayerNorm under autodiff.
        let device = burn::tensor::Device::flex().autodiff();
        let f64_tensor = |shape: [usize; 3], mean: f64, std: f64| {
            Tensor::<3>::random(shape, Distribution::Normal(mean, std), &device)
                .cast(burn::tensor::FloatDType::F64)
        };
        let x = f64_tensor([2, 3, 19], 1.0, 2.0);
        let gamma = f64_tensor([1, 1, 19], 1.0, 0.3).reshape([19]);
        let beta = f64_tensor([1, 1, 19], 0.0, 0.3).reshape([19]);
        let weights = f64_tensor([2, 3, 19], 0.0, 1.0);
        let (fx, fgamma, fbeta) =
            (x.clone().require_grad(), gamma.clone().require_grad(), beta.clone().require_grad());
        let (bx, bgamma, bbeta) = (x.require_grad(), gamma.require_grad(), beta.require_grad());
        let fused_grads = (layer_norm(fx.clone(), fgamma.clone(), fbeta.clone(), 1e-5)
            * weights.clone())
        .sum()
        .backward();
        let burn_out =
            burn::tensor::module::layer_norm(bx.clone(), bgamma.clone(), Some(bbeta.clone()), 1e-5);
        let burn_grads = (burn_out * weights).sum().backward();
        let as_f32 = |t: Tensor<3>| t.cast(burn::tensor::FloatDType::F32);
        close(
            as_f32(fx.grad(&fused_grads).unwrap()),
            as_f32(bx.grad(&burn_grads).unwrap()),
            1e-6,
            "x grad",
        );
        let as_3d = |t: Tensor<1>| as_f32(t.unsqueeze::<3>());
        close(
            as_3d(fgamma.grad(&fused_grads).unwrap()),
            as_3d(bgamma.grad(&burn_grads).unwrap()),
            1e-6,
            "gamma grad",
        );
        close(
            as_3d(fbeta.grad(&fused_grads).unwrap()),
            as_3d(bbeta.grad(&burn_grads).unwrap()),
            1e-6,
            "beta grad",
        );
    }

    /// A linear layer's product, its bias and a residual, normalised, against burn's linear,
    /// addition and LayerNorm on `device`; with autodiff, the input's gradient too.
    fn check_residual_layer_norm(device: &burn::tensor::Device) {
        let (shape, d_out, eps) = ([2, 5, 37], 19, 1e-12);
        let layer = burn::nn::LinearConfig::new(shape[2], d_out).init(device);
        let gamma = Tensor::<1>::random([d_out], Distribution::Normal(1.0, 0.3), device);
        let beta = Tensor::<1>::random([d_out], Distribution::Normal(0.0, 0.3), device);
        let residual = Tensor::<3>::random(
            [shape[0], shape[1], d_out],
            Distribution::Normal(0.5, 2.0),
            device,
        );
        let mut x = Tensor::<3>::random(shape, Distribution::Normal(0.0, 2.0), device);
        if device.is_autodiff() {
            x = x.require_grad();
        }
        let fused_out = linear_residual_layer_norm(
            &layer,
            x.clone(),
            residual.clone(),
            gamma.clone(),
            beta.clone(),
            eps,
        );
        let burn_out = burn::tensor::module::layer_norm(
            layer.forward(x.clone()) + residual,
            gamma,
            Some(beta),
            eps,
        );
        close(fused_out.clone(), burn_out.clone(), 1e-5, "linear_residual_layer_norm");
        if device.is_autodiff() {
            let out_weights =
                Tensor::<3>::random(burn_out.dims(), Distribution::Normal(0.0, 1.0), device);
            let fused_grads = (fused_out * out_weights.clone()).sum().backward();
            let burn_grads = (burn_out * out_weights).sum().backward();
            close(
                x.grad(&fused_grads).unwrap(),
                x.grad(&burn_grads).unwrap(),
                1e-4,
                "linear_residual_layer_norm x grad",
            );
        }
    }

    #[test]
    fn residual_layer_norm_matches_burn() {
        for device in cpu_devices() {
            check_residual_layer_norm(&device);
            check_residual_layer_norm(&device.autodiff());
        }
    }
}
