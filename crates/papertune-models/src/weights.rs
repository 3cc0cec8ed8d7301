//! Moving tensors between a [`Checkpoint`] (Hugging Face names, `[out, in]` linear weights) and
//! burn modules (`[in, out]` linear weights), with shape checks on the way in.

use burn::module::Param;
use burn::nn::{Embedding, EmbeddingConfig, Linear};
use burn::tensor::{Device, Tensor, TensorData};

use crate::checkpoint::{Checkpoint, HostTensor};
use crate::error::Result;
use crate::layer_norm::LayerNorm;

/// Takes named tensors out of a checkpoint and builds burn layers from them on a device.
pub struct TensorReader<'a> {
    checkpoint: &'a mut Checkpoint,
    device: Device,
}

impl<'a> TensorReader<'a> {
    pub fn new(checkpoint: &'a mut Checkpoint, device: &Device) -> Self {
        Self { checkpoint, device: device.clone() }
    }

    /// The file the tensors come from.
    pub fn path(&self) -> &std::path::Path {
        &self.checkpoint.path
    }

    /// The device tensors are created on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Whether the checkpoint still holds a tensor of that name.
    pub fn contains(&self, name: &str) -> bool {
        self.checkpoint.get(name).is_some()
    }

    /// A raw tensor of the expected shape.
    pub fn tensor<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Tensor<D>> {
        let host = self.checkpoint.take(name, &shape)?;
        Ok(to_device(host, &self.device))
    }

    /// A linear layer from `{name}.weight` (`[d_out, d_in]`) and `{name}.bias` (`[d_out]`).
    pub fn linear(&mut self, name: &str, d_in: usize, d_out: usize, bias: bool) -> Result<Linear> {
        let weight = self.checkpoint.take(&format!("{name}.weight"), &[d_out, d_in])?.transposed();
        let bias = if bias { Some(self.tensor(&format!("{name}.bias"), [d_out])?) } else { None };
        Ok(Linear {
            weight: Param::from_tensor(to_device(weight, &self.device)),
            bias: bias.map(Param::from_tensor),
        })
    }

    /// An embedding table from `{name}.weight` (`[n, d]`).
    pub fn embedding(&mut self, name: &str, n: usize, d: usize) -> Result<Embedding> {
        let weight = self.tensor(&format!("{name}.weight"), [n, d])?;
        let mut embedding = EmbeddingConfig::new(n, d).init(&self.device);
        embedding.weight = Param::from_tensor(weight);
        Ok(embedding)
    }

    /// A LayerNorm from `{name}.weight`/`{name}.bias` (or the older `gamma`/`beta`).
    pub fn layer_norm(&mut self, name: &str, d: usize, epsilon: f64) -> Result<LayerNorm> {
        let (gamma_name, beta_name) = if self.contains(&format!("{name}.gamma")) {
            (format!("{name}.gamma"), format!("{name}.beta"))
        } else {
            (format!("{name}.weight"), format!("{name}.bias"))
        };
        let gamma = self.tensor(&gamma_name, [d])?;
        let beta = self.tensor(&beta_name, [d])?;
        Ok(LayerNorm::new(gamma, beta, epsilon))
    }
}

/// Collects tensors of burn layers under Hugging Face names.
#[derive(Default)]
pub struct TensorWriter {
    checkpoint: Checkpoint,
}

impl TensorWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// The collected tensors.
    pub fn into_checkpoint(self) -> Checkpoint {
        self.checkpoint
    }

    pub fn tensor<const D: usize>(&mut self, name: &str, tensor: Tensor<D>) {
        self.checkpoint.insert(name, to_host(tensor));
    }

    pub fn linear(&mut self, name: &str, linear: &Linear) {
        self.checkpoint.insert(format!("{name}.weight"), to_host(linear.weight.val()).transposed());
        if let Some(bias) = &linear.bias {
            self.tensor(&format!("{name}.bias"), bias.val());
        }
    }

    pub fn embedding(&mut self, name: &str, embedding: &Embedding) {
        self.tensor(&format!("{name}.weight"), embedding.weight.val());
    }

    pub fn layer_norm(&mut self, name: &str, norm: &LayerNorm) {
        self.tensor(&format!("{name}.weight"), norm.gamma.val());
        self.tensor(&format!("{name}.bias"), norm.beta.val());
    }
}

/// Host tensor -> device tensor (f32).
pub fn to_device<const D: usize>(host: HostTensor, device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(host.data, host.shape), device)
}

/// Device tensor -> host tensor (f32).
pub fn to_host<const D: usize>(tensor: Tensor<D>) -> HostTensor {
    let shape = tensor.dims().to_vec();
    let data = tensor.try_into_vec_as::<f32>().expect("float tensor converts to f32");
    HostTensor::new(shape, data)
}
