//! Mutation fuzzing of the table readers (tests only): valid CSV, TSV and JSON-lines tables of
//! papers are mutated (bytes flipped or replaced by quotes, separators and newlines, runs
//! duplicated, the file cut short), and `load_papers` and `read_alpaca` must return `Ok` or
//! `Err`, never panic. `PAPERTUNE_FUZZ_ITERATIONS` sets the mutations per table (default 300:
//! each one is a file read by polars); `PAPERTUNE_FUZZ_SECONDS` gives each format a time budget
//! instead (for a long campaign).

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::instruct::read_alpaca;
use crate::papers::{ColumnMap, EmptyTextPolicy, LoadOptions, load_papers};

/// Bytes that change a table's structure.
const STRUCTURE: [u8; 8] = [b'"', b',', b'\t', b'\n', b'\r', b'{', b'}', 0];

#[test]
fn table_readers_never_panic_on_mutated_files() {
    let csv = "uuid,title,author,abstract,Keywords,label\nq1,Heart \"failure\",\"A, B\",Cardiac outcomes,heart; failure,1\nq2,Graphs,C,Kernels on graphs,graph,0\n";
    let tsv = csv.replace(',', "\t");
    let jsonl = "{\"uuid\":\"q1\",\"title\":\"T\",\"abstract\":\"A\",\"label\":\"1\",\"instruction\":\"i\",\"input\":\"x\",\"output\":\"y\"}\n";
    let seconds = std::env::var("PAPERTUNE_FUZZ_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(std::time::Duration::from_secs);
    let default = if seconds.is_some() { usize::MAX } else { 300 };
    let n: usize = std::env::var("PAPERTUNE_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    let dir = tempfile::tempdir().unwrap();
    let columns = ColumnMap::default();
    let mut state =
        std::env::var("PAPERTUNE_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(1u64);
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for (name, seed) in [
        ("papers.csv", csv.as_bytes()),
        ("papers.tsv", tsv.as_bytes()),
        ("papers.jsonl", jsonl.as_bytes()),
    ] {
        let path = dir.path().join(name);
        let started = std::time::Instant::now();
        let mut done = 0;
        for i in 0..n {
            if i % 64 == 0 && seconds.is_some_and(|s| started.elapsed() >= s) {
                break;
            }
            done = i + 1;
            let mut bytes = seed.to_vec();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % bytes.len().max(1);
                match next() % 4 {
                    _ if bytes.is_empty() => bytes.push(b'"'),
                    0 => bytes[at] = STRUCTURE[(next() % 8) as usize],
                    1 => bytes[at] = next() as u8,
                    2 => bytes.truncate(at),
                    _ => {
                        let run =
                            bytes[at..(at + 1 + (next() as usize) % 32).min(bytes.len())].to_vec();
                        bytes.splice(at..at, run);
                    }
                }
            }
            std::fs::write(&path, &bytes).unwrap();
            let options = LoadOptions {
                columns: &columns,
                max_rows: None,
                require_label: true,
                empty_text: EmptyTextPolicy::Skip,
            };
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                let _ = load_papers(&path, &options);
                let _ = read_alpaca(&path, None);
            }));
            if outcome.is_err() {
                let saved = std::env::temp_dir().join(format!("papertune-fuzz-{name}-{i}"));
                let _ = std::fs::write(&saved, &bytes);
                panic!("{name}: input {i} (saved as {}) panicked", saved.display());
            }
        }
        eprintln!(
            "{name}: {done} mutated inputs in {:.0} s, no panic",
            started.elapsed().as_secs_f64()
        );
    }
}

#[test]
fn templates_never_panic_on_mutated_sources() {
    use crate::papers::PaperRecord;
    use crate::template::TextTemplate;
    let seeds = [
        "{title} [SEP] {author} [SEP] {abstract}",
        "title: {title}\nabstract: {abstract}",
        "{{literal}} {keywords}",
    ];
    let paper =
        PaperRecord { title: "T".into(), abstract_text: "A".into(), ..PaperRecord::default() };
    let n: usize = std::env::var("PAPERTUNE_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let mut state = 7u64;
    for i in 0..n {
        let mut chars: Vec<char> = seeds[i % seeds.len()].chars().collect();
        for _ in 0..1 + i % 3 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let at = (state >> 33) as usize % chars.len().max(1);
            let pick = ['{', '}', '\\', 'é', ' ', '\0'][(state >> 20) as usize % 6];
            match (state >> 10) % 3 {
                0 if !chars.is_empty() => chars[at] = pick,
                1 => chars.insert(at.min(chars.len()), pick),
                _ => chars.truncate(at),
            }
        }
        let source: String = chars.into_iter().collect();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            TextTemplate::parse(&source).map(|t| t.render(&paper))
        }));
        assert!(outcome.is_ok(), "template {source:?} panicked");
    }
}
