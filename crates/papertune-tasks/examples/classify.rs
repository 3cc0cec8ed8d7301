//! Fine-tunes MiniLM (fetched once into the cache) for a few steps on a small synthetic paper
//! table, then evaluates the run and writes a submission file: the whole task-1 pipeline.
//!
//! cargo run -p papertune-tasks --example classify

use burn::tensor::Device;
use papertune_tasks::TrainOptions;
use papertune_tasks::classify::{self, ClassifyConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir =
        std::env::temp_dir().join(format!("papertune-classify-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let data = dir.join("papers.csv");
    let medical = [
        "Outcomes of cardiac surgery in elderly patients",
        "A randomized trial of a new antibiotic dose",
    ];
    let other = [
        "A lock-free hash table for multicore machines",
        "Soil moisture sensing with low-cost radios",
    ];
    let mut csv = String::from("uuid,title,author,abstract,label\n");
    for i in 0..48 {
        let (label, title) =
            if i % 2 == 0 { (1, medical[i / 2 % 2]) } else { (0, other[i / 2 % 2]) };
        csv.push_str(&format!(
            "p{i},{title},,{title}. We report results from study {i}.,{label}\n"
        ));
    }
    std::fs::write(&data, csv)?;

    let mut config = ClassifyConfig::default();
    config.data.train = Some(data.clone());
    config.model.source = "minilm".into();
    config.model.max_len = 64;
    config.data.valid_fraction = 0.25;
    config.train.max_steps = Some(12);
    config.train.batch_size = 8;
    config.train.lr = 1e-4;

    let device = Device::flex();
    let run = dir.join("run");
    let report = classify::train(&config, &run, &device, &TrainOptions::with_progress(true))?;
    println!(
        "trained {} steps in {:.1} s; best valid {:?}",
        report.steps, report.train_seconds, report.best_metrics
    );
    let metrics =
        classify::evaluate(std::slice::from_ref(&run), &data, &Default::default(), &device)?;
    println!("f1 on all rows: {:.3}", metrics.f1);
    let submission = dir.join("submission.csv");
    classify::predict(&[run], &data, &submission, &device)?;
    println!("submission: {}", submission.display());
    Ok(())
}
