//! Softmax over the last axis, SwiGLU, GeGLU and GELU, alone or after a linear layer's product.

use burn::backend::Dispatch;
use burn::tensor::{Tensor, activation};

use super::{product_rows, supported};
use crate::backend::FusedOps;
use crate::linear_layer;

/// Softmax over the last axis: one tracked operation on the CPU backends, burn's `softmax`
/// elsewhere.
pub fn softmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if supported(&x.device()) {
        Tensor::from_dispatch(<Dispatch as FusedOps>::softmax_last(x.into_dispatch()))
    } else {
        activation::softmax(x, D - 1)
    }
}

/// `silu(gate) * up`: one tracked operation on the CPU backends, burn's operations elsewhere.
///
/// The fused path needs `gate` and `up` of the same shape (its backward does not reduce
/// broadcast gradients); other shapes take burn's operations.
pub fn swiglu<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    if supported(&gate.device()) && gate.dims() == up.dims() {
        Tensor::from_dispatch(<Dispatch as FusedOps>::swiglu(
            gate.into_dispatch(),
            up.into_dispatch(),
        ))
    } else {
        activation::silu(gate) * up
    }
}

/// `gelu_tanh(gate) * up`, GELU in its tanh approximation (Gemma's GeGLU feed-forward): one
/// tracked operation on the CPU backends (`x sigmoid(2u)`, the same function as
/// `0.5 x (1 + tanh(u))` without a `tanh` call), burn's operations elsewhere.
///
/// As for [`swiglu`], the fused path needs `gate` and `up` of the same shape.
pub fn geglu_tanh<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    if supported(&gate.device()) && gate.dims() == up.dims() {
        Tensor::from_dispatch(<Dispatch as FusedOps>::geglu_tanh(
            gate.into_dispatch(),
            up.into_dispatch(),
        ))
    } else {
        activation::gelu_approximate(gate) * up
    }
}

/// GELU in its exact (erf) form: one tracked operation with a vectorised erf on the CPU
/// backends, burn's `gelu` elsewhere.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if supported(&x.device()) {
        Tensor::from_dispatch(<Dispatch as FusedOps>::gelu_erf(x.into_dispatch()))
    } else {
        activation::gelu(x)
    }
}

/// `gelu(x weight + bias)` (GELU in its erf form) for burn's [`Linear`](burn::nn::Linear) layer
/// on `x [.., d_in]`: the first half of a feed-forward block.
///
/// On the CPU backends the product is computed without its bias, and one tracked operation
/// adds the bias and applies GELU in a single pass (its backward pass, the gradient through
/// both); [`crate::linear_layer`] would write the bias rows first for the product to read back, and
/// GELU would then read and write the result once more. Elsewhere, and for a layer without
/// bias, [`crate::gelu`] of [`crate::linear_layer`].
pub fn linear_gelu<const D: usize>(layer: &burn::nn::Linear, x: Tensor<D>) -> Tensor<D> {
    let [d_in, d_out] = layer.weight.dims();
    match &layer.bias {
        Some(bias)
            if supported(&x.device()) && x.dims()[D - 1] == d_in && bias.dims() == [d_out] =>
        {
            let (product, dims) = product_rows(layer, x);
            let activated = <Dispatch as FusedOps>::bias_gelu(
                product.into_dispatch(),
                bias.val().into_dispatch(),
            );
            Tensor::<2>::from_dispatch(activated).reshape(dims)
        }
        _ => gelu(linear_layer(layer, x)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{close, cpu_devices};
    use burn::tensor::{Distribution, Tensor, activation};

    /// Forward passes and gradients against burn's composed operations, on `device` (autodiff).
    fn check_against_burn(device: &burn::tensor::Device) {
        assert!(device.is_autodiff());
        let shape = [2, 5, 37]; // a row length that is not a multiple of the vector width
        let x = Tensor::<3>::random(shape, Distribution::Normal(0.0, 3.0), device);
        // Masked positions as the decoder builds them (a bias of -1e9).
        let keep = Tensor::<3>::random(shape, Distribution::Uniform(0.0, 1.0), device)
            .greater_elem(0.3)
            .float();
        let x = x + (keep.ones_like() - keep) * -1.0e9;
        let weights = Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), device);

        let fused_in = x.clone().require_grad();
        let burn_in = x.require_grad();
        let fused_out = softmax_last(fused_in.clone());
        let burn_out = activation::softmax(burn_in.clone(), 2);
        close(fused_out.clone(), burn_out.clone(), 1e-6, "softmax");
        let fused_grads = (fused_out * weights.clone()).sum().backward();
        let burn_grads = (burn_out * weights.clone()).sum().backward();
        close(
            fused_in.grad(&fused_grads).unwrap(),
            burn_in.grad(&burn_grads).unwrap(),
            1e-5,
            "softmax grad",
        );

        let gate = Tensor::<3>::random(shape, Distribution::Normal(0.0, 4.0), device);
        let up = Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), device);
        let (fg, fu) = (gate.clone().require_grad(), up.clone().require_grad());
        let (bg, bu) = (gate.require_grad(), up.require_grad());
        let fused_out = swiglu(fg.clone(), fu.clone());
        let burn_out = activation::silu(bg.clone()) * bu.clone();
        close(fused_out.clone(), burn_out.clone(), 1e-6, "swiglu");
        let fused_grads = (fused_out * weights.clone()).sum().backward();
        let burn_grads = (burn_out * weights.clone()).sum().backward();
        close(
            fg.grad(&fused_grads).unwrap(),
            bg.grad(&burn_grads).unwrap(),
            1e-5,
            "swiglu gate grad",
        );
        close(
            fu.grad(&fused_grads).unwrap(),
            bu.grad(&burn_grads).unwrap(),
            1e-5,
            "swiglu up grad",
        );

        let gate = Tensor::<3>::random(shape, Distribution::Normal(0.0, 4.0), device);
        let up = Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), device);
        let (fg, fu) = (gate.clone().require_grad(), up.clone().require_grad());
        let (bg, bu) = (gate.require_grad(), up.require_grad());
        let fused_out = geglu_tanh(fg.clone(), fu.clone());
        let burn_out = activation::gelu_approximate(bg.clone()) * bu.clone();
        close(fused_out.clone(), burn_out.clone(), 1e-6, "geglu_tanh");
        let fused_grads = (fused_out * weights.clone()).sum().backward();
        let burn_grads = (burn_out * weights.clone()).sum().backward();
        close(
            fg.grad(&fused_grads).unwrap(),
            bg.grad(&burn_grads).unwrap(),
            1e-5,
            "geglu_tanh gate grad",
        );
        close(
            fu.grad(&fused_grads).unwrap(),
            bu.grad(&burn_grads).unwrap(),
            1e-5,
            "geglu_tanh up grad",
        );

        let x = Tensor::<3>::random(shape, Distribution::Normal(0.0, 3.0), device);
        let fx = x.clone().require_grad();
        let fused_out = gelu(fx.clone());
        close(fused_out.clone(), activation::gelu(x.clone()), 1e-6, "gelu");
        let fused_grads = (fused_out * weights.clone()).sum().backward();
        // The exact derivative (burn's own gelu_backward is the tanh form's on some backends).
        let x = x.inner();
        let cdf = (x.clone() * std::f64::consts::FRAC_1_SQRT_2).erf().add_scalar(1.0) * 0.5;
        let pdf =
            (x.clone().powi_scalar(2) * -0.5).exp() * (1.0 / (2.0 * std::f64::consts::PI).sqrt());
        let expected = weights.clone().inner() * (cdf + x * pdf);
        close(fx.grad(&fused_grads).unwrap(), expected, 1e-6, "gelu grad");

        // GELU of a linear layer's product plus its bias, against burn's linear and the GELU
        // checked just above (burn's own GELU backward is the tanh form's on some backends).
        let layer = burn::nn::LinearConfig::new(shape[2], 19).init(device);
        let x = Tensor::<3>::random(shape, Distribution::Normal(0.0, 2.0), device).require_grad();
        let fused_out = linear_gelu(&layer, x.clone());
        let burn_out = gelu(layer.forward(x.clone()));
        close(fused_out.clone(), burn_out.clone(), 1e-5, "linear_gelu");
        let out_weights =
            Tensor::<3>::random([shape[0], shape[1], 19], Distribution::Normal(0.0, 1.0), device);
        let fused_grads = (fused_out * out_weights.clone()).sum().backward();
        let burn_grads = (burn_out * out_weights).sum().backward();
        close(
            x.grad(&fused_grads).unwrap(),
            x.grad(&burn_grads).unwrap(),
            1e-5,
            "linear_gelu x grad",
        );
        let bias = layer.bias.as_ref().unwrap().val();
        let as_3d = |t: Tensor<1>| t.reshape([1, 1, 19]);
        close(
            as_3d(bias.grad(&fused_grads).unwrap()),
            as_3d(bias.grad(&burn_grads).unwrap()),
            1e-5,
            "linear_gelu bias grad",
        );
        let weight = layer.weight.val();
        let as_3d = |t: Tensor<2>| t.reshape([1, shape[2], 19]);
        close(
            as_3d(weight.grad(&fused_grads).unwrap()),
            as_3d(weight.grad(&burn_grads).unwrap()),
            1e-5,
            "linear_gelu weight grad",
        );
    }

    #[test]
    fn fused_forward_and_backward_match_burn() {
        for device in cpu_devices() {
            check_against_burn(&device.autodiff());
        }
    }

    #[test]
    fn untracked_forward_matches_burn() {
        // Inference: no autodiff, the plain backend operation.
        for device in cpu_devices() {
            let x = Tensor::<3>::random([3, 4, 70], Distribution::Normal(0.0, 5.0), &device);
            close(softmax_last(x.clone()), activation::softmax(x, 2), 1e-6, "softmax");
            let gate = Tensor::<3>::random([3, 4, 70], Distribution::Normal(0.0, 5.0), &device);
            let up = Tensor::<3>::random([3, 4, 70], Distribution::Normal(0.0, 1.0), &device);
            close(
                swiglu(gate.clone(), up.clone()),
                activation::silu(gate.clone()) * up.clone(),
                1e-6,
                "swiglu",
            );
            close(
                geglu_tanh(gate.clone(), up.clone()),
                activation::gelu_approximate(gate) * up,
                1e-6,
                "geglu_tanh",
            );
        }
    }
}
