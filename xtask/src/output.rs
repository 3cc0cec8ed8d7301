//! Files the commands write (JSON results, data sets): whole or not at all.

use std::path::Path;

use anyhow::{Context, Result};

/// Writes `bytes` to `path`, creating its folder, so that readers see the old file or the whole
/// new one (atomic-write-file: a temporary file beside it, fsync, rename, fsync of the folder);
/// `-` is standard output, and a FIFO or a device is written to in place (see
/// [`papertune_tasks::run_dir::write_output`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    papertune_tasks::run_dir::write_output(path, bytes)
        .with_context(|| format!("writing {}", path.display()))
}
