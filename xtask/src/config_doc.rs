//! docs/config.md against the config types: for each kind of run, the documented keys are the
//! keys of its `Default::default()` serialised, and each documented default is that value.
//!
//! The page's format (described again in a comment at its top): a line `<!-- part: NAME -->`
//! starts a part (`classify`, `llm`, `keywords`, or `shared`, which every kind includes); in a
//! part, every table row other than the header and the separator is
//! `` | `dotted.key` | type | `TOML literal` or none | meaning | ``. A kind's rows are its part's
//! and the shared part's; a key in both takes the kind's default.

use std::collections::BTreeMap;

use papertune_tasks::classify::ClassifyConfig;
use papertune_tasks::keywords::KeywordsConfig;
use papertune_tasks::llm::LlmConfig;
use serde_json::Value as Json;

/// The page, relative to the repository root.
const PAGE: &str = "docs/config.md";

/// One documented key.
#[derive(Debug, Clone)]
struct Row {
    key: String,
    /// The default cell without its backticks; `None` for `none` (an unset option).
    default: Option<String>,
    /// 1-based line of the page.
    line: usize,
}

/// The rows of each part of the page, by part name.
fn parse_page(text: &str) -> Result<BTreeMap<String, Vec<Row>>, String> {
    let mut parts: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    let mut part: Option<String> = None;
    for (at, line) in text.lines().enumerate() {
        let line_no = at + 1;
        let trimmed = line.trim();
        if let Some(name) =
            trimmed.strip_prefix("<!-- part:").and_then(|rest| rest.strip_suffix("-->"))
        {
            let name = name.trim().to_owned();
            if parts.contains_key(&name) {
                return Err(format!("{PAGE}:{line_no}: part {name:?} starts twice"));
            }
            parts.insert(name.clone(), Vec::new());
            part = Some(name);
            continue;
        }
        if !trimmed.starts_with('|') {
            continue;
        }
        let row = parse_row(trimmed).map_err(|e| format!("{PAGE}:{line_no}: {e}: {trimmed}"))?;
        let Some((key, default)) = row else { continue };
        let Some(name) = &part else {
            return Err(format!("{PAGE}:{line_no}: a key row before the first part marker"));
        };
        parts.get_mut(name).expect("inserted at its marker").push(Row {
            key,
            default,
            line: line_no,
        });
    }
    Ok(parts)
}

/// A table line as `(key, default)`; `None` for a header or separator line.
fn parse_row(line: &str) -> Result<Option<(String, Option<String>)>, String> {
    // Only the first three cells are read, so a meaning may hold anything.
    let cells: Vec<&str> = line.trim_start_matches('|').splitn(4, '|').map(str::trim).collect();
    if cells.len() < 4 {
        return Err("a row needs four cells (key, type, default, meaning)".into());
    }
    if cells[0] == "key" || cells[0].chars().all(|c| c == '-' || c == ':') {
        return Ok(None);
    }
    let key = backticked(cells[0]).ok_or("the key cell must be `a.dotted.key`")?;
    let default = match cells[2] {
        "none" => None,
        cell => Some(backticked(cell).ok_or("the default cell must be `a TOML literal` or none")?),
    };
    Ok(Some((key.to_owned(), default.map(str::to_owned))))
}

/// The text between one pair of backticks that makes up the whole cell.
fn backticked(cell: &str) -> Option<&str> {
    let inner = cell.strip_prefix('`')?.strip_suffix('`')?;
    (!inner.is_empty() && !inner.contains('`')).then_some(inner)
}

/// Every key of a config's defaults as a dotted name, with its value: nested objects are
/// walked, everything else (strings, arrays, numbers, null) is a value.
fn flatten(value: &Json, prefix: &str, out: &mut BTreeMap<String, Json>) {
    match value {
        Json::Object(map) => {
            for (name, inner) in map {
                let key = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
                flatten(inner, &key, out);
            }
        }
        leaf => {
            out.insert(prefix.to_owned(), leaf.clone());
        }
    }
}

/// Whether a documented default (a TOML value, `None` for none) is the config's value.
fn same_value(documented: Option<&toml::Value>, actual: &Json) -> bool {
    use toml::Value as Toml;
    match (documented, actual) {
        (None, Json::Null) => true,
        (Some(Toml::String(a)), Json::String(b)) => a == b,
        (Some(Toml::Boolean(a)), Json::Bool(b)) => a == b,
        (Some(Toml::Integer(a)), Json::Number(b)) if !b.is_f64() => {
            b.as_i64().map(i128::from).or(b.as_u64().map(i128::from)) == Some(i128::from(*a))
        }
        (Some(Toml::Float(a)), Json::Number(b)) if b.is_f64() => {
            let b = b.as_f64().expect("an f64");
            (a - b).abs() <= 1e-6 * a.abs().max(b.abs())
        }
        (Some(Toml::Array(a)), Json::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same_value(Some(a), b))
        }
        _ => false,
    }
}

/// A TOML literal as a value.
fn parse_literal(literal: &str) -> Result<toml::Value, String> {
    let mut table: toml::Table =
        toml::from_str(&format!("v = {literal}")).map_err(|e| e.to_string())?;
    Ok(table.remove("v").expect("the one key"))
}

/// What is wrong with the documentation of one kind: missing and extra keys, wrong defaults.
fn check_kind(
    title: &str,
    defaults: Json,
    parts: &BTreeMap<String, Vec<Row>>,
    part: &str,
) -> Vec<String> {
    let mut actual = BTreeMap::new();
    flatten(&defaults, "", &mut actual);
    let mut problems = Vec::new();
    let mut documented: BTreeMap<String, Row> = BTreeMap::new();
    for (name, own) in [("shared", false), (part, true)] {
        let mut seen = Vec::new();
        for row in parts.get(name).into_iter().flatten() {
            if seen.contains(&row.key) {
                problems.push(format!("line {}: `{}` documented twice", row.line, row.key));
            }
            seen.push(row.key.clone());
            if own || !documented.contains_key(&row.key) {
                documented.insert(row.key.clone(), row.clone());
            }
        }
    }
    let missing: Vec<&str> =
        actual.keys().filter(|k| !documented.contains_key(*k)).map(String::as_str).collect();
    let extra: Vec<&str> =
        documented.keys().filter(|k| !actual.contains_key(*k)).map(String::as_str).collect();
    if !missing.is_empty() {
        problems.push(format!("keys without a row: {}", missing.join(", ")));
    }
    if !extra.is_empty() {
        problems.push(format!("rows for keys the config does not have: {}", extra.join(", ")));
    }
    for (key, row) in &documented {
        let Some(value) = actual.get(key) else { continue };
        let literal = row.default.as_deref();
        let parsed = match literal.map(parse_literal).transpose() {
            Ok(parsed) => parsed,
            Err(e) => {
                problems.push(format!("line {}: `{key}`: default is not TOML: {e}", row.line));
                continue;
            }
        };
        if !same_value(parsed.as_ref(), value) {
            let shown = literal.map_or("none".to_owned(), |l| format!("`{l}`"));
            problems.push(format!(
                "line {}: `{key}` documented default {shown}, the config's is {value}",
                row.line
            ));
        }
    }
    problems.into_iter().map(|p| format!("{title} ({part} + shared parts): {p}")).collect()
}

/// The parts the page must have: the shared one, then one per kind of run.
const PARTS: [&str; 4] = ["shared", "classify", "llm", "keywords"];

/// Every key of every kind has a row, every row a key, and each documented default is the
/// config's.
#[test]
fn config_page_documents_every_key_and_default() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/config.md");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{PAGE}: {e}"));
    let parts = parse_page(&text).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = parts.keys().map(String::as_str).collect();
    assert!(PARTS.iter().all(|p| names.contains(p)), "{PAGE}: parts {names:?}, expected {PARTS:?}");
    assert!(names.iter().all(|p| PARTS.contains(p)), "{PAGE}: parts {names:?}, expected {PARTS:?}");
    let json = |value: Result<Json, serde_json::Error>| value.expect("a config serialises");
    let mut problems = Vec::new();
    for (title, defaults, part) in [
        ("classifier runs", json(serde_json::to_value(ClassifyConfig::default())), "classify"),
        ("LoRA runs", json(serde_json::to_value(LlmConfig::default())), "llm"),
        ("keyword runs", json(serde_json::to_value(KeywordsConfig::default())), "keywords"),
    ] {
        problems.extend(check_kind(title, defaults, &parts, part));
    }
    assert!(problems.is_empty(), "{PAGE} is out of date:\n{}", problems.join("\n"));
}

/// The page's rows are read cell by cell, and documented defaults compare as TOML values.
#[test]
fn rows_and_defaults_are_read_as_written() {
    let page = "intro\n<!-- part: shared -->\n| key | type | default | meaning |\n|---|---|---|---|\n\
                | `train.lr` | float | `5e-5` | a \\| b |\n| `train.max_steps` | integer | none | x |\n";
    let parts = parse_page(page).unwrap();
    let rows = &parts["shared"];
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0].key.as_str(), rows[0].default.as_deref(), rows[0].line),
        ("train.lr", Some("5e-5"), 5)
    );
    assert_eq!(rows[1].default, None);
    assert!(parse_page("| `a` | t | `1` | m |\n").is_err(), "a row outside a part");
    assert!(parse_page("<!-- part: x -->\n| a | t | `1` | m |\n").is_err(), "a bare key");
    let same =
        |literal: &str, value: Json| same_value(Some(&parse_literal(literal).unwrap()), &value);
    assert!(same("5e-5", serde_json::json!(5e-5)));
    assert!(same("0.05", serde_json::to_value(0.05f32).unwrap()), "an f32 widened");
    assert!(!same("1", serde_json::json!(1.0)), "an integer for a float");
    assert!(!same("1.0", serde_json::json!(1)), "a float for an integer");
    assert!(same(r#"["q_proj"]"#, serde_json::json!(["q_proj"])));
    assert!(same_value(None, &Json::Null));
    assert!(!same_value(None, &serde_json::json!(0)));
}
