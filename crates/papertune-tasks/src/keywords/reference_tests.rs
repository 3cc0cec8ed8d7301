//! The extractors against the reference script's figures (`keyword_baselines.py`, yake 0.7.3
//! and pke-style TF-IDF scored with papertune's metric): the same `kw_precision`, `kw_recall`,
//! `kw_f1`, F1@5 and F1@M at k = 5 on the competition's keywords_valid and on SemEval-2017.
//!
//! The data sets and the script's `keyword_baselines.json` are not part of the project: they are
//! read from the `shared/` folder beside the checkout when it is there (as on the project's CI
//! machines), and the test says it skipped otherwise.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use super::{EvalOptions, Keyphraser, KeywordsConfig, MethodName, evaluate_with, read_texts};

/// `shared/` beside the checkout, if present.
fn shared() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    dir.join("reference/keyword_baselines.json").is_file().then_some(dir)
}

fn check(shared: &Path, method: MethodName, reference_method: &str, dataset: &str, file: &str) {
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(shared.join("reference/keyword_baselines.json")).unwrap(),
    )
    .unwrap();
    let want = &reference["datasets"][dataset]["methods"][reference_method]["by_k"]["k=5"];
    assert!(want.is_object(), "no k=5 figures for {reference_method} on {dataset}");
    let mut config = KeywordsConfig::default();
    config.method.name = method;
    config.method.top_k = 5;
    config.method.max_ngram = 3;
    config.validate().unwrap();
    let idf_texts = match method {
        MethodName::Tfidf => {
            read_texts(&config, &shared.join("datasets/competition/keywords_train.csv")).unwrap()
        }
        _ => Vec::new(),
    };
    let device = Device::flex();
    let keyphraser = Keyphraser::prepare(&config, &idf_texts, None, &device).unwrap();
    let options = EvalOptions { max_rows: None, literature: false };
    let (evaluation, _) =
        evaluate_with(&config, &keyphraser, &shared.join(file), &options, &device).unwrap();
    let got = serde_json::to_value(evaluation.metrics).unwrap();
    assert_eq!(got["n"], want["n"], "{reference_method} on {dataset}: documents scored");
    for key in ["kw_precision", "kw_recall", "kw_f1", "kw_f1_at_5", "kw_f1_at_m"] {
        let (got, want) = (got[key].as_f64().unwrap(), want[key].as_f64().unwrap());
        assert!(
            (got - want).abs() <= 1e-9,
            "{reference_method} on {dataset}: {key} is {got}, the reference script's {want}"
        );
    }
}

#[test]
fn extractors_give_the_reference_scripts_figures() {
    let Some(shared) = shared() else {
        eprintln!("skipped: no shared/reference/keyword_baselines.json beside the checkout");
        return;
    };
    let valid = "datasets/competition/keywords_valid.csv";
    let semeval = "datasets/keyphrase/semeval2017.jsonl";
    check(&shared, MethodName::Yake, "yake", "keywords_valid", valid);
    check(&shared, MethodName::Tfidf, "tfidf", "keywords_valid", valid);
    check(&shared, MethodName::Yake, "yake", "semeval2017", semeval);
}
