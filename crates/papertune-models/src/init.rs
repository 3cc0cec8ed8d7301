//! Random initialisation of BERT-family and Llama-family checkpoints, as Hugging Face
//! initialises a new model: weights ~ N(0, 0.02), biases 0, norm scales 1 and shifts 0. Used
//! for tiny test models and for training from scratch; the result goes through the same loader
//! as a real checkpoint.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use burn::tensor::Device;

use crate::bert::BertConfig;
use crate::checkpoint::{Checkpoint, HostTensor};
use crate::error::Result;
use crate::llama::{LlamaConfig, LlamaModel};

/// Normal samples by the Box–Muller transform.
pub(crate) fn normal(rng: &mut StdRng, n: usize, std: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
            let u2: f32 = rng.random();
            std * (-2.0f32 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
        })
        .collect()
}

/// Collects randomly initialised tensors under their names.
struct RandomTensors {
    rng: StdRng,
    tensors: BTreeMap<String, HostTensor>,
}

impl RandomTensors {
    fn normal(&mut self, name: String, shape: Vec<usize>) {
        let n = shape.iter().product();
        let data = normal(&mut self.rng, n, 0.02);
        self.tensors.insert(name, HostTensor::new(shape, data));
    }

    fn constant(&mut self, name: String, d: usize, value: f32) {
        self.tensors.insert(name, HostTensor::new(vec![d], vec![value; d]));
    }

    fn linear(&mut self, name: &str, d_in: usize, d_out: usize) {
        self.normal(format!("{name}.weight"), vec![d_out, d_in]);
        self.constant(format!("{name}.bias"), d_out, 0.0);
    }

    fn layer_norm(&mut self, name: &str, d: usize) {
        self.constant(format!("{name}.weight"), d, 1.0);
        self.constant(format!("{name}.bias"), d, 0.0);
    }
}

/// A randomly initialised BERT checkpoint (with pooler) under Hugging Face names, no prefix.
pub fn random_bert_checkpoint(config: &BertConfig, seed: u64) -> Checkpoint {
    let h = config.hidden_size;
    let mut init = RandomTensors { rng: StdRng::seed_from_u64(seed), tensors: BTreeMap::new() };
    init.normal("embeddings.word_embeddings.weight".into(), vec![config.vocab_size, h]);
    init.normal(
        "embeddings.position_embeddings.weight".into(),
        vec![config.max_position_embeddings, h],
    );
    init.normal("embeddings.token_type_embeddings.weight".into(), vec![config.type_vocab_size, h]);
    init.layer_norm("embeddings.LayerNorm", h);
    for i in 0..config.num_hidden_layers {
        let p = format!("encoder.layer.{i}");
        for part in ["query", "key", "value"] {
            init.linear(&format!("{p}.attention.self.{part}"), h, h);
        }
        init.linear(&format!("{p}.attention.output.dense"), h, h);
        init.layer_norm(&format!("{p}.attention.output.LayerNorm"), h);
        init.linear(&format!("{p}.intermediate.dense"), h, config.intermediate_size);
        init.linear(&format!("{p}.output.dense"), config.intermediate_size, h);
        init.layer_norm(&format!("{p}.output.LayerNorm"), h);
    }
    init.linear("pooler.dense", h, h);
    Checkpoint::from_tensors("<random init>", init.tensors)
}

/// A randomly initialised linear layer `{name}.weight` `[d_out, d_in]` ~ N(0, 0.02), bias 0.
pub fn random_linear(name: &str, d_in: usize, d_out: usize, seed: u64) -> Checkpoint {
    let mut init = RandomTensors { rng: StdRng::seed_from_u64(seed), tensors: BTreeMap::new() };
    init.linear(name, d_in, d_out);
    Checkpoint::from_tensors("<random init>", init.tensors)
}

/// A randomly initialised Llama-family checkpoint under Hugging Face names (weights ~ N(0, 0.02),
/// RMSNorm scales 1, biases 0).
pub fn random_llama_checkpoint(config: &LlamaConfig, seed: u64) -> Checkpoint {
    let c = config;
    let mut t = RandomTensors { rng: StdRng::seed_from_u64(seed), tensors: BTreeMap::new() };
    let (q_width, kv_width) =
        (c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim);
    // Norm scales of 1: stored as 0 where the checkpoint holds offsets from 1 (Gemma).
    let unit = if c.norm_unit_offset { 0.0 } else { 1.0 };
    t.normal("model.embed_tokens.weight".into(), vec![c.vocab_size, c.hidden_size]);
    for i in 0..c.num_hidden_layers {
        let p = format!("model.layers.{i}");
        for name in crate::llama::norm_names(c).into_iter().filter(|n| !n.is_empty()) {
            t.constant(format!("{p}.{name}.weight"), c.hidden_size, unit);
        }
        if c.qk_norm {
            t.constant(format!("{p}.self_attn.q_norm.weight"), c.head_dim, unit);
            t.constant(format!("{p}.self_attn.k_norm.weight"), c.head_dim, unit);
        }
        for (name, d_in, d_out, bias) in [
            ("self_attn.q_proj", c.hidden_size, q_width, c.qkv_bias),
            ("self_attn.k_proj", c.hidden_size, kv_width, c.qkv_bias),
            ("self_attn.v_proj", c.hidden_size, kv_width, c.qkv_bias),
            ("self_attn.o_proj", q_width, c.hidden_size, c.o_bias),
            ("mlp.gate_proj", c.hidden_size, c.intermediate_size, false),
            ("mlp.up_proj", c.hidden_size, c.intermediate_size, false),
            ("mlp.down_proj", c.intermediate_size, c.hidden_size, false),
        ] {
            t.normal(format!("{p}.{name}.weight"), vec![d_out, d_in]);
            if bias {
                t.constant(format!("{p}.{name}.bias"), d_out, 0.0);
            }
        }
    }
    t.constant("model.norm.weight".into(), c.hidden_size, unit);
    if !c.tie_word_embeddings {
        t.normal("lm_head.weight".into(), vec![c.vocab_size, c.hidden_size]);
    }
    Checkpoint::from_tensors("<random>", t.tensors)
}

/// A randomly initialised decoder of the given shape (for tests and from-scratch training).
pub fn random_llama(config: &LlamaConfig, seed: u64, device: &Device) -> Result<LlamaModel> {
    let mut checkpoint = random_llama_checkpoint(config, seed);
    LlamaModel::load(config, &mut checkpoint, device)
}
