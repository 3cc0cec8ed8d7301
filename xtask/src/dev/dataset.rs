//! `dataset`: build a data set papertune makes itself and print its files.

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct DatasetArgs {
    /// The data set to build (medline-2021).
    #[arg(default_value = "medline-2021")]
    name: String,
}

pub fn run(args: DatasetArgs) -> Result<()> {
    anyhow::ensure!(
        args.name == "medline-2021",
        "unknown data set {:?}; known: medline-2021",
        args.name
    );
    let files = super::medline::build()?;
    for path in [files.train, files.valid, files.test] {
        println!("{}", path.display());
    }
    Ok(())
}

/// `dataset:medline-2021/train` names a split of a data set papertune builds itself.
pub fn resolve(path: std::path::PathBuf) -> Result<std::path::PathBuf> {
    let text = path.to_string_lossy();
    let Some(reference) = text.strip_prefix("dataset:") else {
        return Ok(path);
    };
    match reference.split_once('/') {
        Some(("medline-2021", split)) => super::medline::ensure(split),
        _ => anyhow::bail!(
            "unknown data set reference {text:?}; known: dataset:medline-2021/{{train,valid,test}}"
        ),
    }
}
