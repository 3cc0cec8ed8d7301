//! Reads a paper table, validates it, splits it and shows the model input of the first rows.
//!
//! cargo run -p papertune-data --example read_papers -- [FILE.csv|.parquet|.jsonl]
//!
//! Without a file it writes a small CSV of its own to a temporary folder.

use std::path::PathBuf;

use papertune_data::{
    ColumnMap, DEFAULT_TEMPLATE, EmptyTextPolicy, LoadOptions, TextTemplate, load_papers,
    stratified_split,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = match std::env::args().nth(1) {
        Some(path) => PathBuf::from(path),
        None => {
            let path = std::env::temp_dir().join("papertune-example-papers.csv");
            let mut csv = String::from("uuid,title,author,abstract,Keywords,label,extra\n");
            for i in 0..20 {
                let (label, topic) = if i % 2 == 0 {
                    (1, "clinical outcomes of a drug")
                } else {
                    (0, "a faster sorting algorithm")
                };
                csv.push_str(&format!(
                    "p{i},Paper {i},\"Doe, J.\",We study {topic}.,kw{i},{label},ignored\n"
                ));
            }
            std::fs::write(&path, csv)?;
            path
        }
    };
    let columns = ColumnMap::default();
    let options = LoadOptions {
        columns: &columns,
        max_rows: None,
        require_label: true,
        empty_text: EmptyTextPolicy::Skip,
    };
    let (papers, report) = load_papers(&path, &options)?;
    println!("{}: {} rows read, {} kept", path.display(), report.rows_read, papers.len());

    let labels: Vec<u8> = papers.iter().map(|p| p.label.unwrap_or(0)).collect();
    let (train, valid) = stratified_split(&labels, 0.2, 42)?;
    println!("stratified split: {} train, {} valid", train.len(), valid.len());

    let template = TextTemplate::parse(DEFAULT_TEMPLATE)?;
    for paper in papers.iter().take(3) {
        println!("label {:?}: {}", paper.label, template.render(paper));
    }
    Ok(())
}
