//! Reading a run config: TOML file, `--set key=value` overrides, `dataset:` references.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use papertune_tasks::classify::ClassifyConfig;
use papertune_tasks::keywords::KeywordsConfig;
use papertune_tasks::llm::LlmConfig;
use toml::{Table, Value};

/// Parses `value` as a TOML value (number, bool, array, quoted string), else takes it as text.
fn parse_value(value: &str) -> Value {
    toml::from_str::<Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(value.to_owned()))
}

/// Applies `a.b.c=value` to a TOML table, creating tables on the way.
pub fn apply_override(table: &mut Table, assignment: &str) -> Result<()> {
    let (key, value) = assignment.split_once('=').with_context(|| {
        format!("--set {assignment:?}: expected key=value, e.g. train.epochs=2")
    })?;
    let parts: Vec<&str> = key.trim().split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        bail!("--set {assignment:?}: empty key component");
    }
    let mut current = table;
    for part in &parts[..parts.len() - 1] {
        let entry = current.entry(part.to_string()).or_insert_with(|| Value::Table(Table::new()));
        current = entry
            .as_table_mut()
            .with_context(|| format!("--set {assignment:?}: {part} is not a section"))?;
    }
    current.insert(parts[parts.len() - 1].to_owned(), parse_value(value.trim()));
    Ok(())
}

/// A run configuration: an encoder classifier, LoRA tuning of a causal LM (a config with a
/// `[lora]` section), or a keyword method (a config with a `[method]` section).
pub enum RunConfig {
    Classify(ClassifyConfig),
    Llm(LlmConfig),
    Keywords(KeywordsConfig),
}

impl RunConfig {
    /// The `[train]` section.
    pub fn train(&self) -> &papertune_train::TrainConfig {
        match self {
            Self::Classify(c) => &c.train,
            Self::Llm(c) => &c.train,
            Self::Keywords(c) => &c.train,
        }
    }

    /// The resolved config as TOML.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        match self {
            Self::Classify(c) => toml::to_string_pretty(c),
            Self::Llm(c) => toml::to_string_pretty(c),
            Self::Keywords(c) => toml::to_string_pretty(c),
        }
    }
}

/// Reads `path`, applies overrides, and checks every key against the config's fields.
pub fn load_run_config(path: &Path, overrides: &[String]) -> Result<RunConfig> {
    let table = read_table(path, overrides)?;
    if table.contains_key("method") {
        let mut config: KeywordsConfig = typed(path, table)?;
        resolve_datasets(&mut config.data.train, &mut config.data.valid)?;
        config.validate().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        return Ok(RunConfig::Keywords(config));
    }
    if !table.contains_key("lora") {
        return load_table(path, table).map(RunConfig::Classify);
    }
    let mut config: LlmConfig = typed(path, table)?;
    resolve_datasets(&mut config.data.train, &mut config.data.valid)?;
    config.validate().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(RunConfig::Llm(config))
}

fn typed<T: serde::de::DeserializeOwned>(path: &Path, table: Table) -> Result<T> {
    let hint_table = table.clone();
    Value::Table(table).try_into().map_err(|e: toml::de::Error| {
        let message = e.to_string();
        let message = message.trim_end();
        let told = match unknown_key_hint(message, &hint_table) {
            Some(lead) => format!("{lead} ({message})"),
            None => message.to_owned(),
        };
        anyhow::anyhow!("{}: invalid configuration (after --set overrides): {told}", path.display())
    })
}

/// Names other tools (and habit) give to papertune's config keys.
const KEY_ALIASES: &[(&str, &str)] = &[
    ("learning_rate", "lr"),
    ("num_epochs", "epochs"),
    ("num_train_epochs", "epochs"),
    ("n_epochs", "epochs"),
    ("epoch", "epochs"),
    ("per_device_train_batch_size", "batch_size"),
    ("train_batch_size", "batch_size"),
    ("bs", "batch_size"),
    ("per_device_eval_batch_size", "eval_batch_size"),
    ("max_length", "max_len"),
    ("max_seq_length", "max_len"),
    ("max_seq_len", "max_len"),
    ("model_name", "source"),
    ("model_name_or_path", "source"),
    ("grad_accum", "gradient_accumulation_steps"),
    ("gradient_accumulation", "gradient_accumulation_steps"),
    ("warmup", "warmup_steps"),
    ("lr_scheduler_type", "schedule"),
    ("scheduler", "schedule"),
    ("weight_decay_rate", "weight_decay"),
    ("lora_r", "r"),
    ("rank", "r"),
    ("lora_alpha", "alpha"),
    ("lora_dropout", "dropout"),
];

/// For serde's "unknown field `x`, expected one of `a`, `b`": the key with its section
/// (`train.x`) and the key meant, from [`KEY_ALIASES`] or the nearest expected name by edit
/// distance, as the lead of the message.
fn unknown_key_hint(message: &str, table: &Table) -> Option<String> {
    let rest = message.split("unknown field `").nth(1)?;
    let (key, rest) = rest.split_once('`')?;
    let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let section = sections_holding(table, key, "");
    let (place, prefix) = match section.as_slice() {
        [one] if !one.is_empty() => (format!("unknown key {one}.{key}"), format!("{one}.")),
        _ => (format!("unknown key {key}"), String::new()),
    };
    let alias = KEY_ALIASES
        .iter()
        .find(|(from, to)| from.eq_ignore_ascii_case(key) && expected.contains(to))
        .map(|(_, to)| *to);
    let near = || {
        let lower = key.to_ascii_lowercase();
        expected
            .iter()
            .map(|name| (edit_distance(&lower, name), *name))
            .filter(|(d, name)| *d <= (name.len().max(key.len()) / 3).max(1))
            .min()
            .map(|(_, name)| name)
    };
    Some(match alias.or_else(near) {
        Some(meant) => format!("{place}: did you mean {prefix}{meant}?"),
        None => place,
    })
}

/// The dotted names of the sections of `table` that hold `key` (`""` for the top level).
fn sections_holding(table: &Table, key: &str, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (name, value) in table {
        if name == key {
            found.push(prefix.to_owned());
        }
        if let Value::Table(inner) = value {
            let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
            found.extend(sections_holding(inner, key, &path));
        }
    }
    found
}

/// Levenshtein distance between two short names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

fn read_table(path: &Path, overrides: &[String]) -> Result<Table> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{}: no such config file", path.display())
        }
        Err(e) => return Err(e).with_context(|| format!("reading config {}", path.display())),
    };
    let mut table: Table =
        toml::from_str(&text).with_context(|| format!("{}: not valid TOML", path.display()))?;
    for assignment in overrides {
        apply_override(&mut table, assignment)?;
    }
    Ok(table)
}

fn load_table(path: &Path, table: Table) -> Result<ClassifyConfig> {
    let mut config: ClassifyConfig = typed(path, table)?;
    resolve_datasets(&mut config.data.train, &mut config.data.valid)?;
    config.validate().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(config)
}

/// The data files of a `[data]` section with their `dataset:` references built and resolved.
fn resolve_datasets(train: &mut Option<PathBuf>, valid: &mut Option<PathBuf>) -> Result<()> {
    *train = train.take().map(crate::dev::dataset::resolve).transpose()?;
    *valid = valid.take().map(crate::dev::dataset::resolve).transpose()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ready-made configs, mutated character by character (quotes, brackets, `=`, newlines
    /// and digits put in, taken out or cut short), then parsed, typed and validated as
    /// `cargo xtask train` does (the data sets are not built): `Ok` or `Err`, never a panic.
    /// `PAPERTUNE_FUZZ_ITERATIONS` sets the mutations (default 2,000).
    #[test]
    fn mutated_configs_never_panic() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let mut seeds: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        seeds.sort();
        let n: usize = std::env::var("PAPERTUNE_FUZZ_ITERATIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2_000);
        let mut state =
            std::env::var("PAPERTUNE_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(11u64);
        let picks = ['"', '[', ']', '=', '\n', '.', '-', '9', 'e', '{', '}', ','];
        for i in 0..n {
            let mut chars: Vec<char> = seeds[i % seeds.len()].chars().collect();
            for _ in 0..1 + i % 4 {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let at = (state >> 33) as usize % chars.len().max(1);
                let pick = picks[(state >> 20) as usize % picks.len()];
                match (state >> 8) % 4 {
                    0 if !chars.is_empty() => chars[at] = pick,
                    1 => chars.insert(at.min(chars.len()), pick),
                    2 if !chars.is_empty() => {
                        chars.remove(at.min(chars.len() - 1));
                    }
                    _ => chars.truncate(at),
                }
            }
            let text: String = chars.into_iter().collect();
            let outcome = std::panic::catch_unwind(|| {
                let Ok(mut table) = toml::from_str::<Table>(&text) else { return };
                let _ = apply_override(&mut table, "train.lr=1e-4");
                let path = Path::new("fuzz.toml");
                if table.contains_key("method") {
                    if let Ok(config) = typed::<KeywordsConfig>(path, table) {
                        let _ = config.validate();
                    }
                } else if table.contains_key("lora") {
                    if let Ok(config) = typed::<LlmConfig>(path, table) {
                        let _ = config.validate();
                    }
                } else if let Ok(config) = typed::<ClassifyConfig>(path, table) {
                    let _ = config.validate();
                }
            });
            assert!(outcome.is_ok(), "config {i} panicked:\n{text}");
        }
    }

    /// Every ready-made config loads as `cargo xtask train` loads it (typed, unknown keys
    /// refused, validated).
    #[test]
    fn every_shipped_config_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let mut loaded = 0;
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "toml") {
                load_run_config(&path, &[]).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                loaded += 1;
            }
        }
        assert!(loaded >= 9, "{loaded} configs");
    }

    #[test]
    fn overrides_set_nested_keys_with_typed_values() {
        let mut table: Table = toml::from_str("[train]\nepochs = 1\n").unwrap();
        apply_override(&mut table, "train.epochs=3").unwrap();
        apply_override(&mut table, "train.lr=2e-5").unwrap();
        apply_override(&mut table, "data.train=../x/train.csv").unwrap();
        apply_override(&mut table, "head.pooling=\"mean\"").unwrap();
        let config: ClassifyConfig = Value::Table(table).try_into().unwrap();
        assert_eq!(config.train.epochs, 3);
        assert_eq!(config.train.lr, 2e-5);
        assert_eq!(config.data.train, Some(PathBuf::from("../x/train.csv")));
        assert_eq!(config.head.pooling, papertune_tasks::classify::Pooling::Mean);
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let mut table = Table::new();
        apply_override(&mut table, "train.epoch=3").unwrap();
        let err = Value::Table(table).try_into::<ClassifyConfig>().unwrap_err().to_string();
        assert!(err.contains("epoch"), "{err}");
        assert!(apply_override(&mut Table::new(), "novalue").is_err());
    }

    /// An unknown key names its section and the key meant: an alias of another tool's name,
    /// or the nearest field by edit distance; nothing when no field is near.
    #[test]
    fn unknown_keys_suggest_the_key_meant() {
        let error = |text: &str| {
            let table: Table = toml::from_str(text).unwrap();
            format!("{:#}", typed::<ClassifyConfig>(Path::new("c.toml"), table).err().unwrap())
        };
        let message = error("[train]\nlearning_rate = 1e-4\n");
        assert!(
            message
                .contains("unknown key train.learning_rate: did you mean train.lr? (unknown field"),
            "{message}"
        );
        let message = error("[train]\nnum_epochs = 2\n");
        assert!(message.contains("did you mean train.epochs?"), "{message}");
        let message = error("[train]\nbatch_sise = 2\n");
        assert!(message.contains("did you mean train.batch_size?"), "{message}");
        let message = error("[model]\nmax_length = 64\n");
        assert!(message.contains("did you mean model.max_len?"), "{message}");
        let message = error("[train]\nzzzzzz = 2\n");
        assert!(
            message.contains("unknown key train.zzzzzz (") && !message.contains("did you mean"),
            "{message}"
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "lr"), 2);
    }

    #[test]
    fn shipped_configs_parse_and_validate() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            // `dataset:` references are resolved (and built) only when a run starts.
            let text = std::fs::read_to_string(&path).unwrap();
            let table: Table =
                toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let checked = if table.contains_key("method") {
                typed::<KeywordsConfig>(&path, table).map(|c| c.validate())
            } else if table.contains_key("lora") {
                typed::<LlmConfig>(&path, table).map(|c| c.validate())
            } else {
                typed::<ClassifyConfig>(&path, table).map(|c| c.validate())
            };
            checked
                .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
}
