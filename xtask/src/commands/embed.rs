//! `embed`: the sentence embedding of each text (mean-pooled, L2-normalised) as a JSON array,
//! one line per `--text`, in order.

use anyhow::Result;
use clap::Args;
use papertune_data::TextTokenizer;
use papertune_models::PretrainedEncoder;
use papertune_models::source;

use super::{PrecisionArg, device_for};

#[derive(Args)]
pub struct EmbedArgs {
    /// Preset, Hugging Face id or checkpoint folder.
    #[arg(long)]
    model: String,
    /// A text to embed; repeat it for several (one JSON array per line, in order).
    #[arg(long, required = true)]
    text: Vec<String>,
    /// Longest input in tokens (sentence-transformers uses 256 for MiniLM).
    #[arg(long, default_value_t = 256)]
    max_len: usize,
    /// Backend: flex (CPU), ndarray (CPU), wgpu or cuda, if compiled in.
    #[arg(long)]
    backend: Option<String>,
    #[command(flatten)]
    precision: PrecisionArg,
}

pub fn run(args: EmbedArgs) -> Result<()> {
    let device = device_for(args.backend.as_deref(), args.precision.precision)?;
    let files = source::resolve(&args.model)?;
    let encoder = PretrainedEncoder::load(&files, &device)?;
    let max_len = args.max_len.min(encoder.config.max_sequence_len());
    let tokenizer = TextTokenizer::from_file(&files.tokenizer, max_len)?;
    let embeddings =
        papertune_tasks::embed::sentence_embeddings(&encoder, &tokenizer, &args.text, &device)?;
    for embedding in embeddings {
        println!("{}", serde_json::to_string(&embedding)?);
    }
    Ok(())
}
