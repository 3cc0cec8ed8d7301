//! The keyword task end to end on a tiny random encoder: the tagger learns the keyphrases of 32
//! synthetic documents; its run folder serves eval (both metrics) and predict (the Keywords
//! column, beside a classifier's labels); the extractors' run folders do the same without
//! training.

use std::path::Path;

use burn::tensor::Device;
use papertune_integration::{MEDICAL, TECHNICAL, write_tiny_bert};
use papertune_tasks::TrainOptions;
use papertune_tasks::keywords::{self, KeywordsConfig, MethodName};

/// 32 documents of medical and technical words; the keyphrases are the runs of medical words
/// ("cardiac surgery", "dose"), the technical words are never keyphrases.
fn write_keyword_rows(path: &Path) {
    let mut csv = String::from("uuid,title,author,abstract,Keywords\n");
    for i in 0..32 {
        let m = |k: usize| MEDICAL[(i + k) % 8];
        let t = |k: usize| TECHNICAL[(i * 3 + k) % 8];
        let title = format!("{} {} {}", t(0), m(0), m(1));
        let abstract_text = format!("{} {} {} {}. {} {}", t(1), m(2), t(2), t(3), m(0), m(1));
        let keywords = format!("{} {}; {}", m(0), m(1), m(2));
        csv.push_str(&format!("id{i},{title},,{abstract_text},{keywords}\n"));
    }
    std::fs::write(path, csv).unwrap();
}

fn setup(dir: &Path) -> (KeywordsConfig, std::path::PathBuf) {
    let words: Vec<&str> = MEDICAL.iter().chain(&TECHNICAL).copied().collect();
    let model_dir = dir.join("tiny-bert");
    write_tiny_bert(&model_dir, &words, 5);
    let data = dir.join("rows.csv");
    write_keyword_rows(&data);
    let mut config = KeywordsConfig::default();
    config.data.train = Some(data.clone());
    config.data.valid = Some(data.clone());
    config.model.source = model_dir.to_string_lossy().into_owned();
    config.model.max_len = 32;
    (config, data)
}

#[test]
fn tiny_tagger_learns_32_documents_and_its_run_serves_eval_and_predict() {
    let dir = tempfile::tempdir().unwrap();
    let (mut config, data) = setup(dir.path());
    config.train.epochs = 30;
    config.train.batch_size = 8;
    config.train.lr = 5e-3;
    config.train.warmup_ratio = 0.0;
    config.train.seed = 3;
    config.decode.min_score = 0.5;
    config.decode.min_keywords = 0;
    let device = Device::flex();
    let out = dir.path().join("tagger");
    let report = keywords::train(&config, &out, &device, &TrainOptions::default()).unwrap();
    assert_eq!(report.steps, 120);
    let best = report.best_metrics.unwrap();
    assert!(best["kw_f1"] >= 0.95, "the tagger did not learn the keyphrases: {best:?}");

    let options = keywords::EvalOptions { max_rows: None, literature: true };
    let (scored, rows) = keywords::evaluate(&out, &data, &options, &device).unwrap();
    assert!(
        rows.iter().all(|r| r.scores.windows(2).all(|w| w[0] >= w[1])),
        "scores fall along each list"
    );
    assert_eq!(scored.metrics.n, 32);
    assert!(scored.metrics.kw_f1 >= 0.95, "{scored:?}");
    // Every gold keyphrase is in its text: nothing is absent.
    let literature = scored.literature.unwrap();
    assert_eq!((literature.present.documents, literature.absent.documents), (32, 0));
    assert!(literature.present.f1_at_m >= 0.95, "{literature:?}");

    let predicted = keywords::predict_keywords(&out, &data, &device).unwrap();
    assert_eq!(predicted.len(), 32);
    let (paper, first) = &predicted[0];
    assert_eq!(paper.uuid, "id0");
    let mut first = first.clone();
    first.sort();
    assert_eq!(first, vec!["patient clinical".to_owned(), "therapy".to_owned()]);

    // Both columns of the submission: a classifier's labels, the tagger's keywords.
    let (mut classify, _) =
        papertune_integration::tiny_classify_setup(&dir.path().join("classifier"), 7, 32);
    classify.train.max_steps = Some(1);
    let classifier = dir.path().join("classifier-run");
    papertune_tasks::classify::train(&classify, &classifier, &device, &TrainOptions::default())
        .unwrap();
    let mut rows =
        papertune_tasks::classify::submission_rows(&[classifier], &data, &device).unwrap();
    keywords::fill_keywords(&mut rows, predicted.clone(), &data).unwrap();
    assert_eq!((rows.len(), rows[0].uuid.as_str()), (32, "id0"));
    assert!(rows.iter().all(|r| !r.keywords.is_empty()));
    // Rows of another file are refused.
    let err = keywords::fill_keywords(&mut rows[1..], predicted[..31].to_vec(), &data)
        .unwrap_err()
        .to_string();
    assert!(err.contains("uuid"), "{err}");
}

#[test]
fn extractor_runs_need_no_training_and_store_what_they_read() {
    let dir = tempfile::tempdir().unwrap();
    let (mut config, data) = setup(dir.path());
    config.method.name = MethodName::Tfidf;
    config.method.top_k = 3;
    let device = Device::flex();
    let out = dir.path().join("tfidf");
    let report = keywords::train(&config, &out, &device, &TrainOptions::default()).unwrap();
    assert_eq!((report.steps, report.train_examples), (0, 32));
    assert!(
        out.join(keywords::IDF_FILE).exists()
            && out.join("config.toml").exists()
            && out.join("summary.json").exists()
    );
    let (scored, _) =
        keywords::evaluate(&out, &data, &keywords::EvalOptions::default(), &device).unwrap();
    assert_eq!((scored.metrics.n, scored.metrics.mean_predicted), (32, 3.0));
    // The same folder is not written twice.
    let err =
        keywords::train(&config, &out, &device, &TrainOptions::default()).unwrap_err().to_string();
    assert!(err.contains("already exists"), "{err}");

    config.method.name = MethodName::Yake;
    let yake = keywords::Keyphraser::prepare(&config, &[], None, &device).unwrap();
    let (scored, rows) =
        keywords::evaluate_with(&config, &yake, &data, &keywords::EvalOptions::default(), &device)
            .unwrap();
    assert_eq!(
        (scored.metrics.n, rows.len(), rows[0].row, rows[0].uuid.as_str()),
        (32, 32, 1, "id0")
    );
    assert!(rows.iter().all(|r| !r.keywords.is_empty() && r.keywords.len() <= 3));

    // embed-rank on the tiny encoder (fewer positions than the 256 it asks for: it takes them).
    config.method.name = MethodName::EmbedRank;
    config.method.diversity = 0.5;
    let ranker = keywords::Keyphraser::prepare(&config, &[], None, &device).unwrap();
    let (scored, rows) = keywords::evaluate_with(
        &config,
        &ranker,
        &data,
        &keywords::EvalOptions::default(),
        &device,
    )
    .unwrap();
    assert_eq!(scored.metrics.n, 32);
    assert!(rows.iter().all(|r| !r.keywords.is_empty() && r.keywords.len() <= 3), "{rows:?}");

    // The tagger is trained, not prepared.
    config.method.name = MethodName::Tagger;
    assert!(keywords::Keyphraser::prepare(&config, &[], None, &device).is_err());
}

#[test]
fn keyword_lists_in_json_lines_are_gold_keywords() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = setup(dir.path());
    let data = dir.path().join("docs.jsonl");
    std::fs::write(
        &data,
        "{\"id\": \"a\", \"title\": \"graph kernels\", \"abstract\": \"cache parser study\", \"keywords\": [\"graph kernels\", \"Parser\"]}\n\
         {\"id\": \"b\", \"title\": \"\", \"abstract\": \"compiler protocol\", \"keywords\": [\"compiler\"]}\n",
    )
    .unwrap();
    let mut config = config;
    config.method.name = MethodName::Yake;
    let device = Device::flex();
    let yake = keywords::Keyphraser::prepare(&config, &[], None, &device).unwrap();
    let (scored, _) =
        keywords::evaluate_with(&config, &yake, &data, &keywords::EvalOptions::default(), &device)
            .unwrap();
    assert_eq!(scored.metrics.n, 2);
    assert!(scored.metrics.kw_recall > 0.0, "{scored:?}");
}

#[test]
fn a_file_without_gold_keywords_gets_keyphrases_by_uuid() {
    let dir = tempfile::tempdir().unwrap();
    let (mut config, _) = setup(dir.path());
    let data = dir.path().join("papers.csv");
    std::fs::write(
        &data,
        "uuid,title,abstract,label\nq1,graph kernels,cache parser study of graph kernels,0\nq2,,,1\nq3,cardiac surgery,dose and cardiac surgery,1\n",
    )
    .unwrap();
    config.method.name = MethodName::Yake;
    let device = Device::flex();
    assert!(!keywords::has_gold_keywords(&config, &data, None).unwrap());
    let yake = keywords::Keyphraser::prepare(&config, &[], None, &device).unwrap();
    let rows = keywords::extract_with(&config, &yake, &data, None, &device).unwrap();
    // The row without text has nothing to extract from: it is left out.
    let ids: Vec<(&str, usize)> = rows.iter().map(|r| (r.uuid.as_str(), r.row)).collect();
    assert_eq!(ids, vec![("q1", 1), ("q3", 3)]);
    assert!(rows.iter().all(|r| !r.keywords.is_empty() && r.keywords.len() == r.scores.len()));
    let text = keywords::predictions_text(&rows);
    assert!(text.starts_with("{\"uuid\":\"q1\",\"row\":1,\"keywords\":[\""), "{text}");
    assert_eq!(text.lines().count(), 2);
}
