//! `presets`: the model names papertune resolves by itself and the ready-made run configs.

use std::path::Path;

use anyhow::Result;
use papertune_models::source::{LLM_PRESETS, PRESETS};

/// Prints one line per model preset (name, kind, hub id at its pinned commit, registry package)
/// and per config file in `configs/` (name and its first comment line).
pub fn run() -> Result<()> {
    println!("models (model.source, or --model):");
    for preset in PRESETS {
        let package = preset
            .package
            .as_ref()
            .map_or("hub only".to_owned(), |p| format!("package {}", p.requirement));
        let hub = format!("{}@{}", preset.hub_id, &preset.revision[..12]);
        println!("  {:<22} {:<10} {:<52} {package}", preset.name, "encoder", hub);
    }
    for preset in LLM_PRESETS {
        let package = preset.package.as_ref().map_or("hub only".to_owned(), |p| {
            match p.requirements().as_slice() {
                [one] => format!("package {one}"),
                parts => format!("packages {} (+{} more)", parts[0], parts.len() - 1),
            }
        });
        println!("  {:<22} {:<10} {:<52} {package}", preset.name, "causal LM", preset.hub_id);
    }
    let dir = Path::new("configs");
    let mut configs: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect()
        })
        .unwrap_or_default();
    configs.sort();
    if !configs.is_empty() {
        println!("configs (--config):");
    }
    for path in configs {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let about = text.lines().find_map(|l| l.strip_prefix("# ")).unwrap_or("");
        println!("  {:<36} {about}", path.display());
    }
    Ok(())
}
