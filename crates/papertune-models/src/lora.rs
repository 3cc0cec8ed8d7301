//! LoRA (Hu et al., 2021): a frozen linear layer `W` plus a trainable low-rank update,
//! `y = x W + scaling * dropout(x) A B`, with `A [in, r]` drawn Kaiming-uniform, `B [r, out]`
//! zero (so a fresh adapter changes nothing), and `scaling = alpha / r` (`alpha / sqrt(r)` with
//! rsLoRA). Adapters are saved alone, in PEFT's layout, so they move both ways between papertune
//! and Python.
//!
//! PEFT stores `lora_A.weight` as `[r, in]` and `lora_B.weight` as `[out, r]` (torch's
//! `[out, in]` convention); papertune keeps burn's `[in, out]` and transposes at the boundary.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use papertune_kernels as kernels;
use papertune_kernels::dropout::Dropout;

use papertune_kernels::quant::QuantWeight;

use crate::checkpoint::{Checkpoint, HostTensor, write_atomic};
use crate::error::{ModelError, Result};
use crate::weights::{to_device, to_host};

/// File names of a PEFT adapter folder.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// Which layers get adapters, and how they are shaped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraConfig {
    /// Rank of the update.
    pub r: usize,
    /// Scale numerator: the update is multiplied by `alpha / r` (or `alpha / sqrt(r)`).
    pub alpha: f64,
    /// Dropout on the adapter's input.
    pub dropout: f64,
    /// Module names that get adapters: a name matches a module whose path is that name or ends
    /// with `.name` (`q_proj`, `self_attn.v_proj`), or `all-linear` for every linear layer but
    /// the LM head.
    pub target_modules: Vec<String>,
    /// rsLoRA scaling, `alpha / sqrt(r)`.
    pub use_rslora: bool,
    /// Seed of the `A` initialisation.
    pub seed: u64,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            r: 8,
            alpha: 16.0,
            dropout: 0.05,
            target_modules: vec!["q_proj".into(), "v_proj".into()],
            use_rslora: false,
            seed: 42,
        }
    }
}

impl LoraConfig {
    /// The factor the update `A B` is multiplied by.
    pub fn scaling(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }

    /// Rejects values that cannot work, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.r == 0 {
            return Err("lora.r must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("lora.dropout must be in [0, 1), found {}", self.dropout));
        }
        if self.target_modules.is_empty() {
            return Err("lora.target_modules is empty".into());
        }
        Ok(())
    }

    /// Whether the module at `path` gets an adapter. `is_head` marks the LM head, which
    /// `all-linear` leaves out (as PEFT does).
    pub fn targets(&self, path: &str, is_head: bool) -> bool {
        self.target_modules.iter().any(|pattern| {
            if pattern == "all-linear" {
                !is_head
            } else {
                path == pattern || path.ends_with(&format!(".{pattern}"))
            }
        })
    }
}

/// The trainable low-rank part of a [`LoraLinear`].
#[derive(Module, Debug)]
pub struct LoraAdapter {
    /// `[in, r]`
    pub a: Param<Tensor<2>>,
    /// `[r, out]`
    pub b: Param<Tensor<2>>,
    pub dropout: Dropout,
    pub scaling: f64,
}

impl LoraAdapter {
    /// A fresh adapter: `A` Kaiming-uniform (bound `1 / sqrt(in)`, as PEFT draws it), `B` zero.
    pub fn new(d_in: usize, d_out: usize, config: &LoraConfig, seed: u64, device: &Device) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let bound = 1.0 / (d_in as f32).sqrt();
        let a: Vec<f32> = (0..d_in * config.r).map(|_| rng.random_range(-bound..bound)).collect();
        let a = Tensor::from_data(TensorData::new(a, [d_in, config.r]), device);
        let b = Tensor::zeros([config.r, d_out], device);
        Self::from_tensors(a, b, config)
    }

    fn from_tensors(a: Tensor<2>, b: Tensor<2>, config: &LoraConfig) -> Self {
        Self {
            a: Param::from_tensor(a),
            b: Param::from_tensor(b),
            dropout: Dropout::new(config.dropout),
            scaling: config.scaling(),
        }
    }

    /// `scaling * A B`, `[in, out]`.
    pub fn delta_weight(&self) -> Tensor<2> {
        self.a.val().matmul(self.b.val()).mul_scalar(self.scaling)
    }
}

/// A frozen linear layer whose weight stays in its quantised GGUF blocks (`[out, in]`); the
/// bias, if any, is f32. Its forward pass computes from the blocks, and its backward pass
/// reaches the input through them, so LoRA trains on it without an f32 copy of the weight.
#[derive(Module, Debug)]
pub struct QuantizedLinear {
    #[module(skip)]
    pub weight: QuantWeight,
    pub bias: Option<Param<Tensor<1>>>,
}

impl QuantizedLinear {
    /// The layer in f32 (burn's layout, `[in, out]`), for merging and export.
    pub fn dequantized(&self, device: &Device) -> Linear {
        let weight =
            HostTensor::new(vec![self.weight.rows, self.weight.cols], self.weight.dequantize())
                .transposed();
        Linear {
            weight: Param::from_tensor(to_device(weight, device)).set_require_grad(false),
            bias: self.bias.clone(),
        }
    }
}

/// A linear layer with an optional LoRA adapter; its frozen base is f32 or quantised.
#[derive(Module, Debug)]
pub struct LoraLinear {
    /// The base in f32 (`None` when it is quantised).
    pub base: Option<Linear>,
    /// The base kept in its quantised blocks.
    pub quantized: Option<QuantizedLinear>,
    pub lora: Option<LoraAdapter>,
}

impl LoraLinear {
    pub fn new(base: Linear) -> Self {
        Self { base: Some(base), quantized: None, lora: None }
    }

    /// A layer over a quantised base.
    pub fn quantized(weight: QuantWeight, bias: Option<Tensor<1>>) -> Self {
        Self {
            base: None,
            quantized: Some(QuantizedLinear { weight, bias: bias.map(Param::from_tensor) }),
            lora: None,
        }
    }

    /// The frozen base's output, `[.., in]` -> `[.., out]`.
    fn base_forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match (&self.base, &self.quantized) {
            (Some(base), _) => kernels::linear_layer(base, x),
            (None, Some(q)) => {
                kernels::quantized_linear(x, &q.weight, q.bias.as_ref().map(|b| b.val()))
            }
            (None, None) => unreachable!("a LoraLinear is built with a base"),
        }
    }

    /// `[.., in]` -> `[.., out]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match &self.lora {
            None => self.base_forward(x),
            Some(lora) => {
                // The scaling goes on the narrow [.., r] product rather than on [.., out].
                let down = kernels::linear(lora.dropout.forward(x.clone()), lora.a.val(), None)
                    .mul_scalar(lora.scaling);
                self.base_forward(x) + kernels::linear(down, lora.b.val(), None)
            }
        }
    }

    /// `(in, out)`
    pub fn dims(&self) -> (usize, usize) {
        match (&self.base, &self.quantized) {
            (Some(base), _) => {
                let [d_in, d_out] = base.weight.dims();
                (d_in, d_out)
            }
            (None, Some(q)) => (q.weight.cols, q.weight.rows),
            (None, None) => (0, 0),
        }
    }

    /// The base in f32 (decoded from its blocks when quantised).
    pub fn f32_base(&self, device: &Device) -> Linear {
        match (&self.base, &self.quantized) {
            (Some(base), _) => base.clone(),
            (None, Some(q)) => q.dequantized(device),
            (None, None) => unreachable!("a LoraLinear is built with a base"),
        }
    }

    /// Folds the adapter into the base weight (`W + scaling * A B`) and drops it. A quantised
    /// base is decoded to f32 first: the sum is not a quantised matrix.
    pub fn merge(&mut self) {
        if let Some(lora) = self.lora.take() {
            let mut base = self.f32_base(&lora.a.device());
            base.weight =
                Param::from_tensor(base.weight.val() + lora.delta_weight()).set_require_grad(false);
            self.base = Some(base);
            self.quantized = None;
        }
    }
}

/// A model whose linear layers can carry adapters, listed by their Hugging Face module paths
/// (`model.layers.0.self_attn.q_proj`).
pub trait LoraModel: Module + Sized {
    /// Every adaptable linear layer with its path; `true` marks the LM head.
    fn lora_linears(&self) -> Vec<(String, bool, &LoraLinear)>;
    /// The same, mutable.
    fn lora_linears_mut(&mut self) -> Vec<(String, bool, &mut LoraLinear)>;

    /// Freezes every base parameter and attaches fresh adapters to the targeted layers.
    /// Fails, naming the patterns, when they match no layer.
    fn attach_lora(self, config: &LoraConfig) -> Result<Self> {
        config.validate().map_err(|message| ModelError::Lora { message })?;
        let mut model = self.no_grad();
        let device = model.devices().first().cloned().unwrap_or_default();
        let mut attached = 0usize;
        for (index, (path, is_head, linear)) in model.lora_linears_mut().into_iter().enumerate() {
            if config.targets(&path, is_head) {
                let (d_in, d_out) = linear.dims();
                linear.lora = Some(LoraAdapter::new(
                    d_in,
                    d_out,
                    config,
                    config.seed.wrapping_add(index as u64),
                    &device,
                ));
                attached += 1;
            }
        }
        if attached == 0 {
            let examples: Vec<String> =
                model.lora_linears().into_iter().take(8).map(|(p, _, _)| p).collect();
            return Err(ModelError::Lora {
                message: format!(
                    "lora.target_modules {:?} match no layer; layers look like {examples:?}",
                    config.target_modules
                ),
            });
        }
        Ok(model)
    }

    /// Folds every adapter into its base weight.
    fn merge_lora(mut self) -> Self {
        for (_, _, linear) in self.lora_linears_mut() {
            linear.merge();
        }
        self
    }

    /// Drops every adapter (the base model, e.g. for zero-shot evaluation).
    fn without_lora(mut self) -> Self {
        for (_, _, linear) in self.lora_linears_mut() {
            linear.lora = None;
        }
        self
    }

    /// Number of adapter parameters.
    fn lora_parameter_count(&self) -> usize {
        self.lora_linears()
            .into_iter()
            .filter_map(|(_, _, l)| l.lora.as_ref())
            .map(|l| {
                l.a.val().dims().iter().product::<usize>()
                    + l.b.val().dims().iter().product::<usize>()
            })
            .sum()
    }
}

/// `adapter_config.json`, the fields PEFT writes and reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeftAdapterConfig {
    #[serde(default = "peft_type")]
    pub peft_type: String,
    #[serde(default)]
    pub task_type: Option<String>,
    pub r: usize,
    pub lora_alpha: f64,
    #[serde(default)]
    pub lora_dropout: f64,
    pub target_modules: serde_json::Value,
    #[serde(default = "bias_none")]
    pub bias: String,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(default)]
    pub inference_mode: bool,
    #[serde(default)]
    pub rank_pattern: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub alpha_pattern: BTreeMap<String, serde_json::Value>,
}

fn peft_type() -> String {
    "LORA".into()
}
fn bias_none() -> String {
    "none".into()
}

/// Writes the model's adapters as a PEFT folder (`adapter_config.json`,
/// `adapter_model.safetensors`), each file atomically.
pub fn save_peft_adapter<M: LoraModel>(
    model: &M,
    config: &LoraConfig,
    base_model: &str,
    dir: &Path,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let mut tensors = BTreeMap::new();
    for (path, _, linear) in model.lora_linears() {
        if let Some(lora) = &linear.lora {
            tensors.insert(
                format!("base_model.model.{path}.lora_A.weight"),
                to_host(lora.a.val()).transposed(),
            );
            tensors.insert(
                format!("base_model.model.{path}.lora_B.weight"),
                to_host(lora.b.val()).transposed(),
            );
        }
    }
    if tensors.is_empty() {
        return Err(ModelError::Lora { message: "the model has no adapter to save".into() });
    }
    let peft = PeftAdapterConfig {
        peft_type: peft_type(),
        task_type: Some("CAUSAL_LM".into()),
        r: config.r,
        lora_alpha: config.alpha,
        lora_dropout: config.dropout,
        // PEFT reads `all-linear` only as a plain string (in a list it would be a module name).
        target_modules: if config.target_modules == ["all-linear"] {
            serde_json::json!("all-linear")
        } else {
            serde_json::json!(config.target_modules)
        },
        bias: bias_none(),
        use_rslora: config.use_rslora,
        fan_in_fan_out: false,
        modules_to_save: None,
        base_model_name_or_path: Some(base_model.to_owned()),
        inference_mode: true,
        rank_pattern: BTreeMap::new(),
        alpha_pattern: BTreeMap::new(),
    };
    let json = serde_json::to_string_pretty(&peft).expect("adapter config serialises");
    write_atomic(&dir.join(ADAPTER_CONFIG), json.as_bytes())?;
    let mut metadata = BTreeMap::new();
    metadata.insert("format".to_owned(), "pt".to_owned());
    Checkpoint::from_tensors(dir.join(ADAPTER_WEIGHTS), tensors)
        .write(&dir.join(ADAPTER_WEIGHTS), Some(metadata))
}

/// Why `dir` is not an adapter folder, pointing to the checkpoint of a run folder that holds one
/// (`runs/x` for `runs/x/best`).
fn no_adapter_here(dir: &Path) -> String {
    let what = if dir.is_dir() { "is not a PEFT adapter folder" } else { "no such folder" };
    let mut message = format!("{what} (expected {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS} inside)");
    let held: Vec<String> = ["best", "last"]
        .iter()
        .map(|name| dir.join(name))
        .filter(|sub| sub.join(ADAPTER_CONFIG).is_file())
        .map(|sub| sub.display().to_string())
        .collect();
    if !held.is_empty() {
        message.push_str(&format!(
            "; it is a run folder: its adapter is in {} (pass that folder)",
            held.join(" or ")
        ));
    }
    message
}

/// Reads a PEFT adapter folder and attaches its adapters to the model (replacing any), checking
/// that every tensor names a layer of the model with matching shapes. Returns the adapter's
/// settings as a [`LoraConfig`].
pub fn load_peft_adapter<M: LoraModel>(model: M, dir: &Path) -> Result<(M, LoraConfig)> {
    let config_path = dir.join(ADAPTER_CONFIG);
    if !config_path.is_file() {
        return Err(ModelError::Config { path: dir.to_path_buf(), message: no_adapter_here(dir) });
    }
    let text =
        std::fs::read_to_string(&config_path).map_err(|e| ModelError::io(&config_path, e))?;
    let bad = |message: String| ModelError::Config { path: config_path.clone(), message };
    let peft: PeftAdapterConfig =
        serde_json::from_str(&text).map_err(|e| bad(format!("not a PEFT adapter config: {e}")))?;
    if peft.peft_type != "LORA" {
        return Err(bad(format!("peft_type {:?} is not supported (only LORA)", peft.peft_type)));
    }
    if peft.bias != "none" {
        return Err(bad(format!("bias {:?} is not supported (only \"none\")", peft.bias)));
    }
    if peft.fan_in_fan_out {
        return Err(bad("fan_in_fan_out = true is not supported".into()));
    }
    if peft.modules_to_save.as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(bad(format!("modules_to_save {:?} is not supported", peft.modules_to_save)));
    }
    if !peft.rank_pattern.is_empty() || !peft.alpha_pattern.is_empty() {
        return Err(bad("rank_pattern / alpha_pattern are not supported".into()));
    }
    let target_modules = match &peft.target_modules {
        serde_json::Value::Array(items) => {
            items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()
        }
        serde_json::Value::String(s) => vec![s.clone()],
        other => return Err(bad(format!("target_modules {other} is neither a list nor a string"))),
    };
    let config = LoraConfig {
        r: peft.r,
        alpha: peft.lora_alpha,
        dropout: peft.lora_dropout,
        target_modules,
        use_rslora: peft.use_rslora,
        seed: 0,
    };
    let weights_path = dir.join(ADAPTER_WEIGHTS);
    let mut checkpoint = Checkpoint::read(&weights_path)?;
    let mut model = model.without_lora().no_grad();
    let device = model.devices().first().cloned().unwrap_or_default();
    let mut attached = 0usize;
    for (path, _, linear) in model.lora_linears_mut() {
        let name_a = format!("base_model.model.{path}.lora_A.weight");
        if checkpoint.get(&name_a).is_none() {
            continue;
        }
        let (d_in, d_out) = linear.dims();
        let a = checkpoint.take(&name_a, &[config.r, d_in])?.transposed();
        let b = checkpoint
            .take(&format!("base_model.model.{path}.lora_B.weight"), &[d_out, config.r])?
            .transposed();
        linear.lora =
            Some(LoraAdapter::from_tensors(to_device(a, &device), to_device(b, &device), &config));
        attached += 1;
    }
    checkpoint.ensure_consumed(&[])?;
    if attached == 0 {
        return Err(ModelError::Lora {
            message: format!("{}: holds no LoRA tensor", weights_path.display()),
        });
    }
    Ok((model, config))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run folder given where its adapter is expected names the checkpoint that holds it,
    /// and a path that does not exist says so (not the OS's bare "No such file").
    #[test]
    fn an_adapter_path_missing_its_checkpoint_folder_names_it() {
        let device = Device::flex();
        let config = crate::llama::LlamaConfig::tiny();
        let model = crate::init::random_llama(&config, 1, &device).unwrap();
        let run = tempfile::tempdir().unwrap();
        std::fs::create_dir(run.path().join("last")).unwrap();
        std::fs::write(run.path().join("last").join(ADAPTER_CONFIG), "{}").unwrap();
        let error = load_peft_adapter(model.clone(), run.path()).unwrap_err().to_string();
        let last = run.path().join("last").display().to_string();
        assert!(error.contains("not a PEFT adapter folder") && error.contains(&last), "{error}");
        let nowhere = run.path().join("nowhere");
        let error = load_peft_adapter(model, &nowhere).unwrap_err().to_string();
        assert!(error.contains("no such folder") && error.contains(ADAPTER_CONFIG), "{error}");
        assert!(!error.contains("os error"), "{error}");
    }
}
