//! Files the commands write (JSON results, data sets): whole or not at all.

use std::path::Path;

use anyhow::{Context, Result};

/// Writes `bytes` to `path`, creating its folder, so that readers see the old file or the whole
/// new one (atomic-write-file: a temporary file beside it, fsync, rename, fsync of the folder).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut file = atomic_write_file::AtomicWriteFile::open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::write_all(&mut file, bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    file.commit().with_context(|| format!("writing {}", path.display()))
}
