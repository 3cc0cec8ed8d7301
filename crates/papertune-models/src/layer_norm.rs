//! Layer normalisation (Ba et al., 2016) over the last axis, with scale and shift:
//! `y = (x - mean(x)) / sqrt(var(x) + eps) * gamma + beta`.
//!
//! The same parameters as burn's `LayerNorm` (named `gamma` and `beta`, so that optimizer
//! groups such as "no weight decay on `gamma`/`beta`" find them), but the forward pass goes
//! through [`papertune_kernels::layer_norm`]: under autodiff on the CPU backends that is one tracked
//! operation with a written-out backward pass instead of nine.

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};

/// LayerNorm with scale `gamma [d]` and shift `beta [d]`.
#[derive(Module, Debug)]
pub struct LayerNorm {
    pub gamma: Param<Tensor<1>>,
    pub beta: Param<Tensor<1>>,
    /// Added to the variance before the square root.
    pub epsilon: f64,
}

impl LayerNorm {
    /// From trained parameters.
    pub fn new(gamma: Tensor<1>, beta: Tensor<1>, epsilon: f64) -> Self {
        Self { gamma: Param::from_tensor(gamma), beta: Param::from_tensor(beta), epsilon }
    }

    /// The identity initialisation: `gamma = 1`, `beta = 0`.
    pub fn identity(d: usize, epsilon: f64, device: &Device) -> Self {
        Self::new(Tensor::ones([d], device), Tensor::zeros([d], device), epsilon)
    }

    /// `[.., d]` -> `[.., d]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        papertune_kernels::layer_norm(x, self.gamma.val(), self.beta.val(), self.epsilon)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn identity_initialisation_standardises_rows() {
        let device = Device::default();
        let x = Tensor::<2>::random([3, 64], Distribution::Normal(5.0, 2.0), &device);
        let y = LayerNorm::identity(64, 1e-12, &device).forward(x);
        let means: Vec<f32> = y.clone().mean_dim(1).into_data().try_to_vec().unwrap();
        let vars: Vec<f32> = y.var_bias(1).into_data().try_to_vec().unwrap();
        assert!(means.iter().all(|m| m.abs() < 1e-5), "{means:?}");
        assert!(vars.iter().all(|v| (v - 1.0).abs() < 1e-4), "{vars:?}");
    }
}
