//! `generate`: continue a prompt with a causal LM (with a PEFT adapter, if given).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use papertune_models::generate::{GenerationConfig, Generator};
use papertune_models::llm_tokenizer::ChatMessage;
use papertune_models::lora::{LoraModel, load_peft_adapter};
use papertune_models::source;
use papertune_models::{PretrainedCausalLm, WeightPrecision};

use super::{PrecisionArg, device_for};

#[derive(Args)]
pub struct GenerateArgs {
    /// Preset (smollm2-135m, gemma3-270m), .gguf file, model folder or hub id.
    #[arg(long, default_value = "smollm2-135m")]
    model: String,
    /// The text to continue.
    #[arg(long)]
    prompt: String,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// Most tokens to generate (at most what the model's context leaves after the prompt).
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// 0 decodes greedily.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Sample among the k most likely tokens only (with --temperature above 0).
    #[arg(long)]
    top_k: Option<usize>,
    /// Sample among the most likely tokens whose probabilities sum to p (nucleus sampling).
    #[arg(long)]
    top_p: Option<f64>,
    /// Stop when the text contains this (repeatable).
    #[arg(long = "stop")]
    stop: Vec<String>,
    /// Seed of the sampling.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// A PEFT adapter folder to apply.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Decode a GGUF file's quantised weights to f32 on load, instead of computing from the
    /// blocks (more memory, no 8-bit rounding of the activations).
    #[arg(long)]
    dequantize: bool,
    /// Print the N most likely tokens of every step, with their logits and the margin of the
    /// first over the second, on stderr (to see how near a tie a choice was).
    #[arg(long, value_name = "N", default_value_t = 0)]
    top_logits: usize,
    /// Backend: flex (CPU), ndarray (CPU), wgpu or cuda, if compiled in.
    #[arg(long)]
    backend: Option<String>,
    #[command(flatten)]
    precision: PrecisionArg,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let device = device_for(args.backend.as_deref(), args.precision.precision)?;
    let precision =
        if args.dequantize { WeightPrecision::Dequantized } else { WeightPrecision::Quantized };
    let lm = PretrainedCausalLm::load_with(&source::resolve_llm(&args.model)?, precision, &device)?;
    let mut weights = lm.model;
    if let Some(dir) = args.adapter {
        weights = load_peft_adapter(weights, &dir)?.0.merge_lora();
    }
    let text = if args.chat {
        lm.tokenizer.apply_chat_template(&[ChatMessage::user(args.prompt)], true)?
    } else {
        args.prompt
    };
    let ids = lm.tokenizer.encode(&text, true)?;
    let context = lm.config.max_position_embeddings;
    anyhow::ensure!(
        ids.len() < context && args.max_new_tokens <= context - ids.len(),
        "--max-new-tokens {}: the prompt has {} tokens and the model's context is {context}, so at most {} new tokens fit",
        args.max_new_tokens,
        ids.len(),
        context.saturating_sub(ids.len())
    );
    let generation = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        stop_strings: args.stop,
        seed: args.seed,
    };
    let generator = Generator::new(&weights, &lm.tokenizer).with_candidates(args.top_logits);
    let out = generator.generate(&[ids], &generation)?.remove(0);
    tracing::info!("{} new tokens, finished by {:?}", out.ids.len(), out.finish_reason);
    for (step, candidates) in out.candidates.iter().enumerate() {
        let mut line = format!("step {step}:");
        for candidate in candidates {
            let piece = lm.tokenizer.decode(&[candidate.id], false)?;
            line.push_str(&format!(" {piece:?} {:.4}", candidate.logit));
        }
        if let [first, second, ..] = candidates.as_slice() {
            line.push_str(&format!(" (margin {:.4})", first.logit - second.logit));
        }
        eprintln!("{line}");
    }
    println!("{}", out.text);
    Ok(())
}
