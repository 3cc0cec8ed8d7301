//! Counting a model's trainable parameters.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;

struct CountTrainable(usize);

impl ModuleVisitor for CountTrainable {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        if value.is_require_grad() {
            self.0 += value.shape().num_elements();
        }
    }
}

/// How many of `model`'s parameters train (those that require a gradient): all of a full
/// fine-tune, the adapters of a LoRA model.
pub fn trainable_parameters<M: Module>(model: &M) -> usize {
    let mut count = CountTrainable(0);
    model.visit(&mut count);
    count.0
}
