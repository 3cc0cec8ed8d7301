//! The workspace's dependency arrows against docs/architecture.md. Its table "Who may depend on
//! whom" is the design; `cargo metadata` reads the arrows the Cargo.tomls actually draw
//! (normal, build and dev dependencies between papertune's crates). An arrow the table does not
//! list fails the test, and so does an arrow the table lists that no Cargo.toml draws, so the
//! drawing stays true to the code both ways. The integration tests crate (this one) may depend
//! on everything and is not in the table.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// The crates papertune-kernels may depend on: it is the bottom layer.
const KERNELS_DEPENDENCIES: [&str; 5] = ["burn", "burn-flex", "gemm", "half", "rayon"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lies in the workspace root")
}

/// `cargo metadata` of the workspace's own packages: name -> (dependency name, kind).
fn declared() -> BTreeMap<String, Vec<(String, String)>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--manifest-path"])
        .arg(root().join("Cargo.toml"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let mut packages = BTreeMap::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().expect("name").to_owned();
        let dependencies = package["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .map(|d| {
                (
                    d["name"].as_str().expect("name").to_owned(),
                    d["kind"].as_str().unwrap_or("normal").to_owned(),
                )
            })
            .collect();
        packages.insert(name, dependencies);
    }
    packages
}

/// The table of docs/architecture.md: crate -> the workspace crates it may depend on.
fn drawn() -> BTreeMap<String, BTreeSet<String>> {
    let path = root().join("docs/architecture.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let table = text
        .split("## Who may depend on whom")
        .nth(1)
        .unwrap_or_else(|| panic!("{}: no section \"## Who may depend on whom\"", path.display()));
    let mut arrows = BTreeMap::new();
    for line in table.lines().skip_while(|l| !l.starts_with('|')).take_while(|l| l.starts_with('|'))
    {
        let cells: Vec<&str> =
            line.trim_matches('|').split('|').map(|c| c.trim().trim_matches('`')).collect();
        let [from, to] = cells[..] else {
            panic!("{}: a row of two cells expected, found {line:?}", path.display())
        };
        if from == "crate" || from.starts_with("---") {
            continue;
        }
        let targets = to
            .split(',')
            .map(|t| t.trim().trim_matches('`').to_owned())
            .filter(|t| !t.is_empty() && t != "—")
            .collect();
        arrows.insert(from.to_owned(), targets);
    }
    assert!(!arrows.is_empty(), "{}: the dependency table has no rows", path.display());
    arrows
}

#[test]
fn the_cargo_tomls_draw_the_arrows_of_docs_architecture() {
    let declared = declared();
    let drawn = drawn();
    let workspace: BTreeSet<&String> = declared.keys().collect();
    let mut problems = Vec::new();
    for (name, dependencies) in &declared {
        if name == "papertune-integration" {
            continue;
        }
        let Some(allowed) = drawn.get(name) else {
            problems.push(format!(
                "{name} is a workspace crate that docs/architecture.md's table does not list"
            ));
            continue;
        };
        let mut used = BTreeSet::new();
        for (dependency, kind) in dependencies.iter().filter(|(d, _)| workspace.contains(d)) {
            used.insert(dependency.clone());
            if !allowed.contains(dependency) {
                problems.push(format!(
                    "{name} depends on {dependency} ({kind}), an arrow docs/architecture.md does not draw (it allows {name} -> {})",
                    if allowed.is_empty() { "nothing of papertune".to_owned() } else { allowed.iter().cloned().collect::<Vec<_>>().join(", ") }
                ));
            }
        }
        for missing in allowed.difference(&used) {
            problems.push(format!("docs/architecture.md draws {name} -> {missing}, but {name}'s Cargo.toml has no such dependency"));
        }
    }
    for name in drawn.keys().filter(|n| !declared.contains_key(*n)) {
        problems.push(format!("docs/architecture.md lists {name}, which is not a workspace crate"));
    }
    let kernels = &declared["papertune-kernels"];
    for (dependency, kind) in kernels.iter().filter(|(_, kind)| kind == "normal") {
        if !KERNELS_DEPENDENCIES.contains(&dependency.as_str()) {
            problems.push(format!(
                "papertune-kernels depends on {dependency} ({kind}); the bottom layer depends on {} only",
                KERNELS_DEPENDENCIES.join(", ")
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "the crate graph and its drawing disagree:\n- {}",
        problems.join("\n- ")
    );
}
