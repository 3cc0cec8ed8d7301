//! The classification pipeline end to end on a tiny random encoder written to disk: train on 32
//! examples until they are learnt, then evaluate, predict and inspect the run folder.

use burn::tensor::Device;
use papertune_integration::tiny_classify_setup;
use papertune_tasks::run_dir::Which;

#[test]
fn tiny_encoder_learns_32_examples_and_the_run_folder_serves_eval_predict_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let (mut config, data) = tiny_classify_setup(dir.path(), 7, 32);
    config.data.valid = Some(data.clone());
    config.train.epochs = 20;
    config.train.batch_size = 8;
    config.train.lr = 5e-3;
    config.train.warmup_ratio = 0.0;
    config.train.log_every_steps = 4;
    config.train.seed = 3;

    let device = Device::flex();
    let out = dir.path().join("run");
    let report = papertune_tasks::classify::train(
        &config,
        &out,
        &device,
        &papertune_tasks::TrainOptions::default(),
    )
    .unwrap();
    assert_eq!(report.steps, 80);
    assert_eq!(report.best_metrics.as_ref().unwrap()["f1"], 1.0, "{report:?}");

    // The loss fell: compare the first and the last logged training loss.
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let losses: Vec<f64> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"] == "train")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect();
    assert!(losses.len() >= 10);
    assert!(losses.last().unwrap() < &(losses[0] * 0.5), "loss did not fall: {losses:?}");

    for file in [
        "config.toml",
        "metrics.jsonl",
        "tokenizer.json",
        "summary.json",
        "best/model.safetensors",
        "last/model.safetensors",
        "best/config.json",
        "best/trainer_state.json",
    ] {
        assert!(out.join(file).exists(), "{file} missing from the run folder");
    }

    let metrics = papertune_tasks::classify::evaluate(
        std::slice::from_ref(&out),
        &data,
        &Default::default(),
        &device,
    )
    .unwrap();
    let first = papertune_tasks::classify::EvalOptions { max_rows: Some(5) };
    assert_eq!(
        papertune_tasks::classify::evaluate(std::slice::from_ref(&out), &data, &first, &device)
            .unwrap()
            .n,
        5
    );
    assert_eq!((metrics.f1, metrics.accuracy, metrics.n), (1.0, 1.0, 32));

    let submission = dir.path().join("submission.csv");
    let predicted =
        papertune_tasks::classify::predict(std::slice::from_ref(&out), &data, &submission, &device)
            .unwrap();
    assert_eq!((predicted.rows, predicted.label_1), (32, 16));
    let text = std::fs::read_to_string(&submission).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("uuid,Keywords,label"));
    assert_eq!(lines.next(), Some("id0,,0"));
    assert_eq!(lines.next(), Some("id1,,1"));

    let best = papertune_tasks::classify::inspect(&out, Which::Best).unwrap();
    let last = papertune_tasks::classify::inspect(&out, Which::Last).unwrap();
    assert_eq!(last.step, 80);
    assert_eq!(best.params, last.params);
    assert_eq!(best.weights_digest.len(), 64);
    // A second run into the same folder is refused, nothing overwritten.
    let err = papertune_tasks::classify::train(
        &config,
        &out,
        &device,
        &papertune_tasks::TrainOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("already exists"), "{err}");

    // The digest is a function of the weights alone: the same tensors written again without
    // the file's metadata keep it, and one changed value changes it.
    let weights = out.join("last/model.safetensors");
    let mut checkpoint = papertune_models::checkpoint::Checkpoint::read(&weights).unwrap();
    checkpoint.write(&weights, None).unwrap();
    assert_eq!(
        papertune_tasks::classify::inspect(&out, Which::Last).unwrap().weights_digest,
        last.weights_digest
    );
    let name = checkpoint.names().next().unwrap().to_owned();
    let mut tensors: std::collections::BTreeMap<String, papertune_models::checkpoint::HostTensor> =
        checkpoint.names().map(|n| (n.to_owned(), checkpoint.get(n).unwrap().clone())).collect();
    tensors.get_mut(&name).unwrap().data[0] += 1.0;
    checkpoint = papertune_models::checkpoint::Checkpoint::from_tensors(&weights, tensors);
    checkpoint.write(&weights, None).unwrap();
    assert_ne!(
        papertune_tasks::classify::inspect(&out, Which::Last).unwrap().weights_digest,
        last.weights_digest
    );
}

#[test]
fn k_fold_training_and_ensembles_average_the_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (mut config, data) = tiny_classify_setup(dir.path(), 9, 16);
    config.head.tune_threshold = true;
    config.train.max_steps = Some(6);
    config.train.batch_size = 8;
    config.train.lr = 5e-3;
    config.train.warmup_ratio = 0.0;

    let device = Device::flex();
    let out = dir.path().join("folds");
    let options = papertune_tasks::TrainOptions::default();
    let reports =
        papertune_tasks::classify::train_folds(&config, &out, 3, &device, &options).unwrap();
    assert_eq!(reports.len(), 3);
    // 32 rows in 3 stratified folds: each run validates on its own 10 or 11 rows.
    let valid: Vec<usize> = reports.iter().map(|r| r.valid_examples).collect();
    assert_eq!(valid.iter().sum::<usize>(), 32, "{valid:?}");
    assert!(reports.iter().all(|r| r.train_examples + r.valid_examples == 32));
    let tuned = out.join("fold-1/best/threshold.json");
    assert!(tuned.exists(), "the tuned threshold is stored with the best checkpoint");
    assert!(
        out.join("fold-1/eval_predictions.json").exists()
            && out.join("fold-1/report.html").exists()
    );
    // folds_summary.json: each validation metric of the best checkpoints, mean and sample
    // standard deviation over the folds.
    let summary = papertune_integration::read_json(&out.join("folds_summary.json"));
    assert_eq!(summary["folds"], serde_json::json!(["fold-1", "fold-2", "fold-3"]));
    assert_eq!(summary["metric_for_best"], "f1");
    let best: Vec<&papertune_train::Metrics> =
        reports.iter().map(|r| r.best_metrics.as_ref().unwrap()).collect();
    for metric in ["f1", "precision", "recall", "accuracy", "tuned_f1", "tuned_threshold"] {
        let values: Vec<f64> = best.iter().map(|m| m[metric]).collect();
        let mean = values.iter().sum::<f64>() / 3.0;
        let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
        let spread = &summary["metrics"][metric];
        let written: Vec<f64> =
            spread["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(written.len(), 3, "{metric}: {spread}");
        assert!(written.iter().zip(&values).all(|(a, b)| (a - b).abs() < 1e-12), "{spread}");
        assert!((spread["mean"].as_f64().unwrap() - mean).abs() < 1e-12, "{metric}: {spread}");
        assert!((spread["std"].as_f64().unwrap() - std).abs() < 1e-12, "{metric}: {spread}");
    }

    // The parent folder is the ensemble of its folds: the mean of their probabilities.
    let runs = papertune_tasks::run_dir::expand_runs(std::slice::from_ref(&out)).unwrap();
    assert_eq!(runs, (1..=3).map(|i| out.join(format!("fold-{i}"))).collect::<Vec<_>>());
    let ensemble =
        papertune_tasks::classify::Ensemble::open(std::slice::from_ref(&out), &device).unwrap();
    let options = papertune_data::LoadOptions {
        columns: &config.data.columns,
        max_rows: None,
        require_label: true,
        empty_text: papertune_data::EmptyTextPolicy::Error,
    };
    let (papers, _) = papertune_data::load_papers(&data, &options).unwrap();
    let mean = ensemble.probabilities(&papers, &device).unwrap();
    let each: Vec<Vec<f32>> =
        ensemble.runs.iter().map(|r| r.probabilities(&papers, &device).unwrap()).collect();
    for (i, p) in mean.iter().enumerate() {
        let expected = (each[0][i] + each[1][i] + each[2][i]) / 3.0;
        assert!((p - expected).abs() < 1e-6, "row {i}: {p} vs {expected}");
    }
    let thresholds: Vec<f64> = ensemble.runs.iter().map(|r| r.threshold).collect();
    assert!((ensemble.threshold() - thresholds.iter().sum::<f64>() / 3.0).abs() < 1e-12);
    let metrics = papertune_tasks::classify::evaluate(
        std::slice::from_ref(&out),
        &data,
        &Default::default(),
        &device,
    )
    .unwrap();
    assert_eq!(metrics.n, 32);
    let submission = dir.path().join("submission.csv");
    let predicted = papertune_tasks::classify::predict(&runs, &data, &submission, &device).unwrap();
    assert_eq!(predicted.rows, 32);
}

#[test]
fn a_max_len_or_a_tokenizer_the_encoder_cannot_take_is_refused_before_the_run_folder() {
    let work = tempfile::tempdir().unwrap();
    let (config, _) = tiny_classify_setup(work.path(), 3, 16);
    let device = Device::flex();
    let run = work.path().join("run");
    let options = papertune_tasks::TrainOptions::default();
    let mut long = config.clone();
    long.model.max_len = 100_000;
    let error =
        papertune_tasks::classify::train(&long, &run, &device, &options).unwrap_err().to_string();
    assert!(
        error.contains("model.max_len is 100000") && error.contains("set model.max_len to"),
        "{error}"
    );
    // An embedding table smaller than the tokenizer's vocabulary.
    let model_config = work.path().join("tiny-bert/config.json");
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&model_config).unwrap()).unwrap();
    value["vocab_size"] = 6.into();
    std::fs::write(&model_config, value.to_string()).unwrap();
    let error =
        papertune_tasks::classify::train(&config, &run, &device, &options).unwrap_err().to_string();
    assert!(
        error.contains("tokenizer.json") && error.contains("embedding table has 6 rows"),
        "{error}"
    );
    assert!(!run.exists());
}

/// Whether python3 imports `modules` (e.g. "torch, transformers"): the checks against Python's
/// readers run only then.
fn python_has(modules: &str) -> bool {
    std::process::Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_classifier_run_leaves_as_a_transformers_folder_with_its_logits() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts/check_classifier_export.py");
    for loss in [papertune_train::LossName::CrossEntropy, papertune_train::LossName::Bce] {
        let work = dir.path().join(format!("{loss:?}"));
        let (mut config, data) = tiny_classify_setup(&work, 11, 32);
        config.loss.name = loss;
        config.train.max_steps = Some(3);
        config.train.batch_size = 8;
        config.train.lr = 5e-3;
        config.train.warmup_ratio = 0.0;
        let run = work.join("run");
        papertune_tasks::classify::train(
            &config,
            &run,
            &device,
            &papertune_tasks::TrainOptions::default(),
        )
        .unwrap();

        // Scores by uuid: the submission's probabilities and logits, eval's rows.
        let mut rows =
            papertune_tasks::classify::submission_rows(std::slice::from_ref(&run), &data, &device)
                .unwrap();
        for row in &rows {
            let [p0, p1] = row.probabilities.unwrap();
            let [l0, l1] = row.logits.unwrap();
            assert!((p0 + p1 - 1.0).abs() < 1e-6, "{row:?}");
            let softmax = 1.0 / (1.0 + (l0 - l1).exp());
            assert!((softmax - p1).abs() < 1e-5, "{row:?}");
            assert_eq!(row.label, Some(u8::from(p1 > 0.5)));
        }
        let (metrics, scored) = papertune_tasks::classify::evaluate_rows(
            std::slice::from_ref(&run),
            &data,
            &Default::default(),
            &device,
        )
        .unwrap();
        assert_eq!((metrics.n, scored.len(), scored[1].uuid.as_str()), (32, 32, "id1"));
        assert_eq!(scored[1].probability, rows[1].probabilities.unwrap()[1]);

        let out = work.join("hf");
        papertune_tasks::classify::export_hf(&run, Which::Best, &out).unwrap();
        for file in [
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ] {
            assert!(out.join(file).exists(), "{file} missing from the export");
        }
        let hf_config = papertune_integration::read_json(&out.join("config.json"));
        assert_eq!(hf_config["architectures"][0], "BertForSequenceClassification");
        assert_eq!(hf_config["id2label"]["1"], "1");
        // A second export onto the folder is refused.
        let err = papertune_tasks::classify::export_hf(&run, Which::Best, &out).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");

        if !python_has("torch, transformers") {
            println!(
                "note: python3 lacks torch or transformers; the transformers check is skipped"
            );
            continue;
        }
        papertune_tasks::submission::keep_scores(&mut rows, false, true);
        let scores = work.join("scores.csv");
        std::fs::write(&scores, papertune_tasks::submission::submission_csv(&rows)).unwrap();
        let output = std::process::Command::new("python3")
            .arg(&script)
            .args(["--model".as_ref(), out.as_os_str()])
            .args(["--data".as_ref(), data.as_os_str()])
            .args(["--scores".as_ref(), scores.as_os_str()])
            .args(["--rows", "32"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        println!("{loss:?}: {stdout}");
        assert!(
            output.status.success(),
            "{loss:?}: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn train_log_to_tensorboard_writes_event_files_tensorboard_reads_at_the_logged_steps() {
    let dir = tempfile::tempdir().unwrap();
    let (mut config, _) = tiny_classify_setup(dir.path(), 13, 16);
    config.train.max_steps = Some(8);
    config.train.batch_size = 8;
    config.train.lr = 5e-3;
    config.train.warmup_ratio = 0.25;
    config.train.log_every_steps = 2;
    config.train.eval_every_steps = Some(3);
    config.train.log_to = vec![papertune_train::LogTarget::Tensorboard];
    let device = Device::flex();
    let out = dir.path().join("run");
    // Two sessions: stopped after step 4, then resumed; each writes an event file of its own.
    let options = papertune_tasks::TrainOptions { stop_at_step: Some(4), ..Default::default() };
    papertune_tasks::classify::train(&config, &out, &device, &options).unwrap();
    let options = papertune_tasks::TrainOptions { resume: true, ..Default::default() };
    let report = papertune_tasks::classify::train(&config, &out, &device, &options).unwrap();
    assert_eq!((report.steps, report.resumed_from), (8, Some(4)));
    let files: Vec<String> = std::fs::read_dir(out.join("tensorboard"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.iter().all(|f| f.starts_with("events.out.tfevents.")), "{files:?}");

    // What metrics.jsonl says: the steps of the training figures and of the evaluations.
    let events: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |kind: &str| -> Vec<&serde_json::Value> {
        events.iter().filter(|e| e["event"] == kind).collect()
    };
    let train_steps: Vec<u64> = of("train").iter().map(|e| e["step"].as_u64().unwrap()).collect();
    let eval_steps: Vec<u64> = of("eval").iter().map(|e| e["step"].as_u64().unwrap()).collect();
    assert_eq!(train_steps, [2, 4, 6, 8]);
    assert!(eval_steps.len() >= 3, "{eval_steps:?}");

    if !python_has("tensorboard") {
        println!("note: python3 lacks tensorboard; TensorBoard's reading of the files is skipped");
        return;
    }
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/read_tensorboard.py");
    let output = std::process::Command::new("python3")
        .arg(&script)
        .arg(out.join("tensorboard"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    println!("tensorboard read: {stdout}");
    let scalars: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let steps = |tag: &str| -> Vec<u64> {
        let series = scalars[tag].as_array().unwrap_or_else(|| panic!("no {tag}: {scalars}"));
        series.iter().map(|p| p[0].as_u64().unwrap()).collect()
    };
    for tag in ["train/loss", "train/lr", "train/grad_norm", "train/examples_per_second"] {
        assert_eq!(steps(tag), train_steps, "{tag}");
    }
    for metric in ["f1", "precision", "recall", "accuracy"] {
        assert_eq!(steps(&format!("eval/{metric}")), eval_steps, "eval/{metric}");
    }
    // The values are metrics.jsonl's, as f32.
    for (point, event) in scalars["train/loss"].as_array().unwrap().iter().zip(of("train")) {
        let (read, logged) = (point[1].as_f64().unwrap(), event["loss"].as_f64().unwrap());
        assert!((read - logged).abs() <= 1e-6 * logged.abs().max(1.0), "{read} vs {logged}");
    }
    for (point, event) in scalars["eval/f1"].as_array().unwrap().iter().zip(of("eval")) {
        let logged = event["metrics"]["f1"].as_f64().unwrap();
        assert!((point[1].as_f64().unwrap() - logged).abs() < 1e-6, "{point} vs {logged}");
    }
}
