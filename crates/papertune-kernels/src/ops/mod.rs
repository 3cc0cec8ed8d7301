//! The public tensor functions, by family. Each checks that its inputs fit and that the device
//! is one of the CPU backends compiled in ([`supported`]); then it runs the fused operation
//! through [`FusedOps`](crate::FusedOps) (one tracked operation under autodiff). Otherwise it
//! composes the same formula from burn's tensor operations, which is what the GPU backends run
//! and what their own fusion optimises.

mod activations;
mod attention;
mod loss;
mod norms;
mod optimizer;
mod products;

pub use activations::{geglu_tanh, gelu, linear_gelu, softmax_last, swiglu};
pub use attention::{attention_dropout, attention_key_bias, causal_attention, rotary};
pub use loss::token_nll;
pub use norms::{layer_norm, linear_residual_layer_norm, rms_norm};
pub use optimizer::{AdamWStep, adamw_update};
pub use products::{batched_matmul, linear, linear_layer, quantized_linear};

use burn::backend::DispatchDevice;
use burn::tensor::{DType, Device, FloatDType, Tensor};

/// Whether the fused operations run on `device`: the CPU backends compiled into this crate
/// (features `flex` and `ndarray`), with or without autodiff.
pub fn supported(device: &Device) -> bool {
    match device.clone().inner().as_dispatch() {
        #[cfg(feature = "flex")]
        DispatchDevice::Flex(_) => true,
        #[cfg(feature = "ndarray")]
        DispatchDevice::NdArray(_) => true,
        _ => false,
    }
}

/// A linear layer's product without its bias, `x weight` for `x [.., d_in]`, as `[rows, d_out]`,
/// with the output's dims `[.., d_out]`: the start of the fused operations that add the bias
/// in their own pass.
fn product_rows<const D: usize>(layer: &burn::nn::Linear, x: Tensor<D>) -> (Tensor<2>, [usize; D]) {
    let product = linear(x, layer.weight.val(), None); // [.., d_out]
    let dims = product.dims();
    let rows = dims[..D - 1].iter().product::<usize>();
    (product.reshape([rows, dims[D - 1]]), dims)
}

/// The half-precision type of `x`, if it has one. The normalisations compute in f32 for these
/// and cast back, as Hugging Face's models do: squares of activations in the hundreds
/// overflow f16, and bf16's 8-bit mantissa would round the statistics.
fn half_precision<const D: usize>(x: &Tensor<D>) -> Option<FloatDType> {
    match x.dtype() {
        DType::F16 => Some(FloatDType::F16),
        DType::BF16 => Some(FloatDType::BF16),
        _ => None,
    }
}
