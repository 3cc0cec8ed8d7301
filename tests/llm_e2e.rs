//! LoRA instruction tuning end to end on a tiny random Llama with a word-level chat tokenizer:
//! the adapter mechanics (a fresh adapter changes nothing, merging equals the separate adapter,
//! a step moves only adapter parameters), and both tasks overfitting a few records through
//! `papertune_tasks::llm::train`, then evaluation, prediction and the zero-shot switch.

use std::path::Path;

use burn::module::Param;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};
use papertune_data::InstructionTask;
use papertune_integration::{MEDICAL, TECHNICAL, write_synthetic_rows, write_tiny_llm};
use papertune_models::llama::LlamaModel;
use papertune_models::lora::{LoraConfig, LoraModel, load_peft_adapter, save_peft_adapter};
use papertune_models::source::LlmFiles;
use papertune_models::{PretrainedCausalLm, source};
use papertune_tasks::TrainOptions;
use papertune_tasks::llm::{self, CausalLmTrainer, LlmConfig};
use papertune_train::{CausalLmLoss, Loss, TrainModel};

fn tiny_lm(dir: &Path, device: &Device) -> PretrainedCausalLm {
    let words: Vec<&str> = MEDICAL
        .iter()
        .chain(&TECHNICAL)
        .chain(&["study", "results", "method", "k1", "k2", "a", "b"])
        .copied()
        .collect();
    write_tiny_llm(dir, &words, 7);
    PretrainedCausalLm::load(&source::resolve_llm(dir.to_str().unwrap()).unwrap(), device).unwrap()
}

fn logits(model: &LlamaModel, ids: &[u32]) -> Vec<f32> {
    let input = model.input(&[ids.to_vec()], &[vec![1; ids.len()]]);
    model.forward(input, None).into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn lora_adapters_start_neutral_merge_exactly_and_train_alone() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let lm = tiny_lm(dir.path(), &device);
    let ids = [4, 9, 12, 3, 17, 21];
    let base = logits(&lm.model, &ids);
    let config = LoraConfig {
        r: 4,
        alpha: 8.0,
        dropout: 0.0,
        target_modules: vec!["all-linear".into()],
        ..Default::default()
    };

    // B = 0: the fresh adapter leaves every output unchanged.
    let mut adapted = lm.model.clone().attach_lora(&config).unwrap();
    assert_eq!(max_diff(&logits(&adapted, &ids), &base), 0.0);

    // With B set, merging the update into the weights gives the same outputs.
    for (_, _, linear) in adapted.lora_linears_mut() {
        let lora = linear.lora.as_mut().unwrap();
        let [r, out] = lora.b.val().dims();
        let values: Vec<f32> =
            (0..r * out).map(|i| ((i * 7919 % 97) as f32 / 97.0 - 0.5) * 0.2).collect();
        lora.b = Param::from_tensor(Tensor::from_data(TensorData::new(values, [r, out]), &device));
    }
    let unmerged = logits(&adapted, &ids);
    assert!(max_diff(&unmerged, &base) > 1e-3, "the adapter changes the outputs");
    let merged = logits(&adapted.clone().merge_lora(), &ids);
    assert!(max_diff(&merged, &unmerged) < 1e-4, "merged {}", max_diff(&merged, &unmerged));

    // PEFT files written and read back give the same outputs.
    let out = tempfile::tempdir().unwrap();
    save_peft_adapter(&adapted, &config, "tiny", out.path()).unwrap();
    let (reloaded, read_config) = load_peft_adapter(lm.model.clone(), out.path()).unwrap();
    assert_eq!(read_config.target_modules, vec!["all-linear".to_owned()]);
    assert_eq!(max_diff(&logits(&reloaded, &ids), &unmerged), 0.0);

    // An adapter made for another model shape is refused, naming the tensor.
    let mut wider = papertune_models::llama::LlamaConfig::tiny();
    wider.vocab_size = lm.config.vocab_size;
    wider.hidden_size = 48;
    wider.head_dim = 12;
    let other = papertune_models::init::random_llama(&wider, 1, &device).unwrap();
    let err = load_peft_adapter(other, out.path()).unwrap_err().to_string();
    assert!(err.contains("lora_A.weight") && err.contains("48"), "{err}");

    // A pattern that matches nothing is refused, naming it.
    let bad = LoraConfig { target_modules: vec!["query_key_value".into()], ..config.clone() };
    let err = lm.model.clone().attach_lora(&bad).unwrap_err().to_string();
    assert!(err.contains("query_key_value") && err.contains("q_proj"), "{err}");

    // One optimizer step changes adapter parameters only.
    let train_device = device.clone().autodiff();
    let trainable = PretrainedCausalLm::load(
        &source::resolve_llm(dir.path().to_str().unwrap()).unwrap(),
        &train_device,
    )
    .unwrap()
    .model
    .attach_lora(&LoraConfig { dropout: 0.0, ..config.clone() })
    .unwrap();
    let model = CausalLmTrainer { lm: trainable };
    let example = papertune_data::CausalLmExample::new(&[4, 9, 12], &[3], &[17, 2], 16, 8);
    let batch = burn::data::dataloader::batcher::Batcher::batch(
        &papertune_data::CausalLmBatcher { pad_id: 2 },
        vec![example],
        &train_device,
    );
    let (output, target) = model.forward_train(batch);
    let loss = CausalLmLoss::default().forward(output, target);
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let adapters = model.lm.lora_linears().len();
    assert_eq!(grads.len(), 2 * adapters, "gradients for A and B of every adapter, nothing else");
    let before =
        model.lm.layers[0].self_attn.q_proj.base.as_ref().unwrap().weight.val().into_data();
    let b_before = model.lm.layers[0].self_attn.q_proj.lora.as_ref().unwrap().b.val().into_data();
    let mut optimizer = AdamWConfig::new().init();
    let model = optimizer.step(1e-2, model, grads);
    assert_eq!(
        model.lm.layers[0].self_attn.q_proj.base.as_ref().unwrap().weight.val().into_data(),
        before
    );
    assert_ne!(
        model.lm.layers[0].self_attn.q_proj.lora.as_ref().unwrap().b.val().into_data(),
        b_before
    );
}

/// Rows whose keywords name their field: medical rows "clinical; therapy", technical rows
/// "graph; network" (answers a tiny random model can learn in a few hundred steps).
fn write_keyword_rows(path: &Path) {
    let mut csv = String::from("uuid,title,author,abstract,Keywords\n");
    for i in 0..8 {
        let (words, keywords) = if i % 2 == 0 {
            (&MEDICAL, "clinical; therapy.")
        } else {
            (&TECHNICAL, "graph; network")
        };
        let (a, b) = (words[i % 8], words[(i + 3) % 8]);
        csv.push_str(&format!("kw{i},{a} study,a,{a} {b} results method,{keywords}\n"));
    }
    std::fs::write(path, csv).unwrap();
}

fn tiny_config(model_dir: &Path, data: &Path, task: InstructionTask) -> LlmConfig {
    let mut config = LlmConfig::default();
    config.model.source = model_dir.to_str().unwrap().to_owned();
    config.model.max_len = 96;
    config.model.max_answer_len = 12;
    config.model.eval_batch_size = 4;
    config.data.task = task;
    config.data.train = Some(data.to_path_buf());
    config.data.valid = Some(data.to_path_buf());
    config.lora = LoraConfig {
        r: 8,
        alpha: 16.0,
        dropout: 0.0,
        target_modules: vec!["all-linear".into()],
        ..Default::default()
    };
    config.generation.max_new_tokens = 8;
    config.train.max_steps = Some(300);
    config.train.batch_size = 4;
    config.train.gradient_accumulation_steps = 1;
    config.train.lr = 3e-3;
    config.train.warmup_ratio = 0.0;
    config.train.schedule = papertune_train::ScheduleKind::Constant;
    config.train.eval_every_steps = Some(300);
    config.train.metric_for_best =
        if task == InstructionTask::Keywords { "kw_f1" } else { "f1" }.into();
    config
}

#[test]
fn tiny_llama_learns_both_tasks_from_instruction_records() {
    let device = Device::flex();
    let work = tempfile::tempdir().unwrap();
    let model_dir = work.path().join("model");
    tiny_lm(&model_dir, &device);

    // Task 2: keywords.
    let keywords = work.path().join("keywords.csv");
    write_keyword_rows(&keywords);
    let config = tiny_config(&model_dir, &keywords, InstructionTask::Keywords);
    let run = work.path().join("kw");
    let report = llm::train(&config, &run, &device, &TrainOptions::default()).unwrap();
    let best = report.best_metrics.unwrap();
    assert!(best["kw_f1"] >= 0.9, "keyword F1 after overfitting: {best:?}");
    let metrics = llm::evaluate(&run, &keywords, &llm::EvalOptions::default(), &device).unwrap();
    assert!(metrics["kw_f1"].as_f64().unwrap() >= 0.9, "{metrics}");
    assert_eq!(metrics["n"], 8);
    // The literature's metric beside ours: the same predictions, stemmed and split by presence.
    let both = llm::evaluate(
        &run,
        &keywords,
        &llm::EvalOptions { literature: true, ..Default::default() },
        &device,
    )
    .unwrap();
    assert_eq!(both["kw_f1"], metrics["kw_f1"]);
    assert!(both["literature"]["all"]["f1_at_m"].as_f64().unwrap() >= 0.9, "{both}");
    let zero_shot = llm::evaluate(
        &run,
        &keywords,
        &llm::EvalOptions { with_adapter: false, ..Default::default() },
        &device,
    )
    .unwrap();
    assert!(
        zero_shot["kw_f1"].as_f64().unwrap() < 0.5,
        "the random base model knows nothing: {zero_shot}"
    );
    let submission = work.path().join("kw.csv");
    assert_eq!(llm::predict(&run, &keywords, &submission, &device).unwrap().rows, 8);
    let text = std::fs::read_to_string(&submission).unwrap();
    assert!(text.starts_with("uuid,Keywords,label\nkw0,"), "{text}");
    // A row with an empty text still gets its line in the submission.
    let with_empty = work.path().join("with-empty.csv");
    std::fs::write(
        &with_empty,
        format!("{}kw-empty,,,,\n", std::fs::read_to_string(&keywords).unwrap()),
    )
    .unwrap();
    assert_eq!(llm::predict(&run, &with_empty, &submission, &device).unwrap().rows, 9);
    assert!(std::fs::read_to_string(&submission).unwrap().contains("\nkw-empty,"));
    assert!(
        run.join("best/adapter_config.json").exists()
            && run.join("best/adapter_model.safetensors").exists()
    );
    assert!(matches!(
        source::resolve_llm(model_dir.to_str().unwrap()).unwrap(),
        LlmFiles::Folder { .. }
    ));

    // Without validation data nothing is evaluated during training and the last checkpoint
    // serves evaluation.
    let mut no_valid = tiny_config(&model_dir, &keywords, InstructionTask::Keywords);
    no_valid.data.valid = None;
    no_valid.data.valid_fraction = 0.0;
    no_valid.train.max_steps = Some(4);
    let run = work.path().join("kw-no-valid");
    let report = llm::train(&no_valid, &run, &device, &TrainOptions::default()).unwrap();
    assert_eq!((report.steps, report.best_step), (4, None));
    assert!(run.join("last/adapter_model.safetensors").exists() && !run.join("best").exists());
    assert_eq!(
        llm::evaluate(
            &run,
            &keywords,
            &llm::EvalOptions { max_rows: Some(2), ..Default::default() },
            &device
        )
        .unwrap()["n"],
        2
    );

    // The long CPU runs go in sessions: stopped after 2 steps and resumed, the adapter ends as
    // the one of the 4-step run above (no adapter dropout here, so no random stream involved).
    let split = work.path().join("kw-split");
    let options = TrainOptions { stop_at_step: Some(2), ..Default::default() };
    assert_eq!(llm::train(&no_valid, &split, &device, &options).unwrap().steps, 2);
    let options = TrainOptions { resume: true, ..Default::default() };
    let resumed = llm::train(&no_valid, &split, &device, &options).unwrap();
    assert_eq!((resumed.steps, resumed.resumed_from), (4, Some(2)));
    let adapter = |run: &Path| std::fs::read(run.join("last/adapter_model.safetensors")).unwrap();
    assert!(adapter(&split) == adapter(&run), "the resumed adapter differs from one run's");

    // With adapter dropout the masks come from a stream seeded per micro-batch: one device and
    // two devices sharing each step (`--devices 2`) end with the same adapter, and the dropout
    // does act (the adapter differs from the same run without it).
    let mut dropped = no_valid.clone();
    dropped.lora.dropout = 0.1;
    dropped.train.batch_size = 2;
    dropped.train.gradient_accumulation_steps = 2;
    let one_device = work.path().join("kw-dropout-1");
    llm::train(&dropped, &one_device, &device, &TrainOptions::default()).unwrap();
    let two_devices = work.path().join("kw-dropout-2");
    let options =
        TrainOptions { devices: vec![device.clone(), device.clone()], ..Default::default() };
    llm::train(&dropped, &two_devices, &device, &options).unwrap();
    assert!(
        adapter(&one_device) == adapter(&two_devices),
        "two devices and one made different adapters with dropout"
    );
    let undropped = work.path().join("kw-dropout-0");
    llm::train(
        &LlmConfig { lora: LoraConfig { dropout: 0.0, ..dropped.lora.clone() }, ..dropped.clone() },
        &undropped,
        &device,
        &TrainOptions::default(),
    )
    .unwrap();
    assert!(adapter(&one_device) != adapter(&undropped), "adapter dropout changed nothing");

    // Task 1: "1" / "0" read from the logits.
    let papers = work.path().join("papers.csv");
    write_synthetic_rows(&papers);
    let mut config = tiny_config(&model_dir, &papers, InstructionTask::Classify);
    config.model.max_answer_len = 4;
    config.train.max_steps = Some(200);
    config.train.eval_every_steps = Some(200);
    let run = work.path().join("cls");
    let report = llm::train(&config, &run, &device, &TrainOptions::default()).unwrap();
    let best = report.best_metrics.unwrap();
    assert!(best["f1"] >= 0.95, "classification F1 after overfitting: {best:?}");
}

#[test]
fn a_tokenizer_larger_than_the_embedding_table_is_refused_at_load() {
    let work = tempfile::tempdir().unwrap();
    let words: Vec<&str> = MEDICAL.iter().chain(&TECHNICAL).copied().collect();
    write_tiny_llm(work.path(), &words, 7);
    let config = work.path().join("config.json");
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    value["vocab_size"] = 4.into();
    std::fs::write(&config, value.to_string()).unwrap();
    let files = source::resolve_llm(work.path().to_str().unwrap()).unwrap();
    let Err(error) = PretrainedCausalLm::load(&files, &Device::flex()) else {
        panic!("a tokenizer larger than the embedding table was accepted")
    };
    let error = error.to_string();
    assert!(
        error.contains("tokenizer.json") && error.contains("embedding table has 4 rows"),
        "{error}"
    );
}

/// The run's summary counts a tied head once (it is the embedding, transposed), and a run
/// stopped before its first log point still ends with a real loss, logged at its last step.
#[test]
fn a_short_run_counts_a_tied_head_once_and_logs_its_last_step() {
    let device = Device::flex();
    let work = tempfile::tempdir().unwrap();
    let model_dir = work.path().join("model");
    tiny_lm(&model_dir, &device);
    let papers = work.path().join("papers.csv");
    write_synthetic_rows(&papers);
    let mut config = tiny_config(&model_dir, &papers, InstructionTask::Classify);
    config.train.log_every_steps = 10;
    let run = work.path().join("short");
    let options = TrainOptions { stop_at_step: Some(2), ..Default::default() };
    let report = llm::train(&config, &run, &device, &options).unwrap();
    let weights =
        papertune_models::checkpoint::Checkpoint::read(&model_dir.join("model.safetensors"))
            .unwrap();
    let base: usize =
        weights.names().map(|name| weights.get(name).unwrap().data.len()).sum::<usize>();
    assert!(weights.get("lm_head.weight").is_none(), "the tiny model's head is tied");
    assert_eq!(report.parameters, base + report.trainable_parameters, "{report:?}");
    assert_eq!(report.steps, 2);
    assert!(report.final_loss.is_finite(), "final loss {}", report.final_loss);
    let log = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let logged_at_step_2 = log.lines().any(|line| {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        event["event"] == "train" && event["step"] == 2
    });
    assert!(logged_at_step_2, "{log}");
}
