//! Gradient clipping by the global L2 norm over all parameters (PyTorch's `clip_grad_norm_`).
//! burn's own clipping works per tensor, which is a different update.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    total: Option<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.get::<D>(param.id) {
            let squared = grad.powf_scalar(2.0).sum();
            self.total = Some(match self.total.take() {
                Some(total) => total + squared,
                None => squared,
            });
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.remove::<D>(param.id) {
            self.grads.register(param.id, grad.mul_scalar(self.factor));
        }
    }
}

/// The global L2 norm of all gradients of `module`'s parameters.
pub fn global_grad_norm<M: Module>(module: &M, grads: &GradientsParams) -> f64 {
    let mut visitor = SquaredNorm { grads, total: None };
    module.visit(&mut visitor);
    visitor.total.map_or(0.0, |t| f64::from(t.into_scalar::<f32>()).sqrt())
}

/// Scales all gradients so that their global norm is at most `max_norm`; returns the norm
/// before clipping.
pub fn clip_grad_norm<M: Module>(module: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    let norm = global_grad_norm(module, grads);
    let factor = max_norm / (norm + 1e-6);
    if factor < 1.0 {
        module.visit(&mut Scale { grads, factor });
    }
    norm
}

struct ClampValues<'a> {
    grads: &'a mut GradientsParams,
    max: f64,
}

impl ModuleVisitor for ClampValues<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.remove::<D>(param.id) {
            self.grads.register(param.id, grad.clamp(-self.max, self.max));
        }
    }
}

/// Clamps every gradient element into `[-max_value, max_value]` (PyTorch's
/// `clip_grad_value_`).
pub fn clip_grad_value<M: Module>(module: &M, grads: &mut GradientsParams, max_value: f64) {
    module.visit(&mut ClampValues { grads, max: max_value });
}
