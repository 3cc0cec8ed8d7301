//! `inspect`: a run's weights described as one line of JSON.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use papertune_tasks::run_dir::Which;

#[derive(Args)]
pub struct InspectArgs {
    /// Run folder.
    #[arg(long)]
    run: PathBuf,
    /// `best` or `last`.
    #[arg(long, default_value = "best")]
    checkpoint: String,
}

pub fn run(args: InspectArgs) -> Result<()> {
    let which = match args.checkpoint.as_str() {
        "best" => Which::Best,
        "last" => Which::Last,
        other => anyhow::bail!("--checkpoint {other:?}: expected best or last"),
    };
    let report = papertune_tasks::classify::inspect(&args.run, which)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
