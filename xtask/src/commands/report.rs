//! `report`: rebuild a run folder's `report.html` from its files.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct ReportArgs {
    /// Run folder whose report.html to rebuild.
    #[arg(long)]
    run: PathBuf,
}

pub fn run(args: ReportArgs) -> Result<()> {
    // Refused at once while another command (a training) writes the folder.
    let _lock = papertune_tasks::run_dir::RunDir::new(&args.run).lock()?;
    let path = papertune_tasks::report::write_report(&args.run)?;
    println!("{}", path.display());
    Ok(())
}
