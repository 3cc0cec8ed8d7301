//! The configuration of a LoRA instruction-tuning run: `[data] [model] [lora] [generation]
//! [train]`, read from TOML; every field has a default; unknown keys are rejected.

use papertune_data::{
    DEFAULT_INPUT_TEMPLATE, EmptyTextPolicy, InstructionRecord, InstructionTask, PaperRecord,
    TextTemplate, records_from_papers,
};
use papertune_models::WeightPrecision;
use papertune_models::generate::GenerationConfig;
use papertune_models::lora::LoraConfig;
use papertune_train::TrainConfig;
use serde::{Deserialize, Serialize};

use crate::data::{RowRules, data_section};
use crate::metrics::{BinaryMetrics, KeywordMetrics};

data_section! {
    /// `[data]`: where the rows come from and how records are built.
    pub struct LlmDataConfig {
        /// `classify` (answer "1"/"0") or `keywords`.
        pub task: InstructionTask = InstructionTask::Keywords,
        /// `papers` (competition layout, records built from rows) or `alpaca` (instruction,
        /// input, output columns; training only).
        pub format: LlmDataFormat = LlmDataFormat::Papers,
        /// Evaluate on at most this many validation rows (generation is slow on CPU).
        pub max_valid_rows: Option<usize> = None,
        /// The instruction; the task's default when unset.
        pub instruction: Option<String> = None,
        /// How a paper row becomes the record's input (fields `{title}`, `{author}`, `{abstract}`, ...).
        pub input_template: TextTemplate = TextTemplate::parse(DEFAULT_INPUT_TEMPLATE).expect("the default input template parses"),
        /// Rows with empty title and abstract: `error`, `skip` (the default here) or `keep`.
        pub empty_text: EmptyTextPolicy = EmptyTextPolicy::Skip,
    }
}

/// Layout of the data files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LlmDataFormat {
    Papers,
    Alpaca,
}

/// The base model and sequence lengths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmModelConfig {
    /// A preset (`smollm2-135m`), a `.gguf` file, a model folder or a hub id.
    pub source: String,
    /// Longest prompt + answer in tokens; prompts are cut (never answers) to fit.
    pub max_len: usize,
    /// Longest answer in tokens (training targets are cut to it, keeping the EOS).
    pub max_answer_len: usize,
    /// Wrap the prompt in the model's chat template (else: the user text, then "\nanswer: ").
    pub chat_template: bool,
    /// Prompts per batch at evaluation and prediction.
    pub eval_batch_size: usize,
    /// A GGUF base's weights: `quantized` keeps the linear layers in their blocks, frozen, and
    /// trains the adapters through them (QLoRA-style; the default of new configs), and
    /// `dequantized` decodes them to f32. A config without the key is read as `dequantized`,
    /// what runs written before the key existed trained on. Ignored for safetensors folders.
    #[serde(default = "weights_of_older_configs")]
    pub weights: WeightPrecision,
    /// A chat template by name, `gemma` (Gemma's turn format) or `chatml`, instead of the
    /// model's own: the file's, else its architecture's default (Gemma's turn format for a Gemma
    /// file without one). The template's closing token ends the answers.
    pub template: Option<String>,
}

/// The base weights of a config written before `model.weights` existed.
fn weights_of_older_configs() -> WeightPrecision {
    WeightPrecision::Dequantized
}

impl Default for LlmModelConfig {
    fn default() -> Self {
        Self {
            source: "smollm2-135m".into(),
            max_len: 512,
            max_answer_len: 96,
            chat_template: true,
            eval_batch_size: 8,
            weights: WeightPrecision::Quantized,
            template: None,
        }
    }
}

/// A LoRA instruction-tuning run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmConfig {
    pub data: LlmDataConfig,
    pub model: LlmModelConfig,
    pub lora: LoraConfig,
    /// Decoding for the keywords task.
    pub generation: GenerationConfig,
    pub train: TrainConfig,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            data: LlmDataConfig::default(),
            model: LlmModelConfig::default(),
            lora: LoraConfig::default(),
            generation: GenerationConfig { max_new_tokens: 96, ..Default::default() },
            train: TrainConfig {
                lr: 2e-4,
                batch_size: 4,
                gradient_accumulation_steps: 4,
                weight_decay: 0.0,
                warmup_ratio: 0.03,
                schedule: papertune_train::ScheduleKind::Cosine,
                metric_for_best: "kw_f1".into(),
                ..TrainConfig::default()
            },
        }
    }
}

impl LlmConfig {
    /// Rejects settings that cannot work, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        self.train.validate()?;
        self.lora.validate()?;
        if self.model.max_len < 16 {
            return Err(format!("model.max_len must be at least 16, found {}", self.model.max_len));
        }
        if self.model.max_answer_len == 0 || self.model.max_answer_len >= self.model.max_len {
            return Err(format!(
                "model.max_answer_len must be in [1, model.max_len), found {} (max_len {})",
                self.model.max_answer_len, self.model.max_len
            ));
        }
        if self.model.eval_batch_size == 0 {
            return Err("model.eval_batch_size must be at least 1".into());
        }
        if self.generation.max_new_tokens == 0
            || self.generation.max_new_tokens >= self.model.max_len
        {
            return Err(format!(
                "generation.max_new_tokens must be in [1, model.max_len), found {}",
                self.generation.max_new_tokens
            ));
        }
        let metrics = self.metric_names();
        if !metrics.contains(&self.train.metric_for_best.as_str()) {
            return Err(format!(
                "train.metric_for_best {:?} is not a metric of the {:?} task ({})",
                self.train.metric_for_best,
                self.data.task,
                metrics.join(", ")
            ));
        }
        if !(0.0..1.0).contains(&self.data.valid_fraction) {
            return Err(format!(
                "data.valid_fraction must be in [0, 1), found {}",
                self.data.valid_fraction
            ));
        }
        if self.data.format == LlmDataFormat::Alpaca && self.data.valid.is_none() {
            return Err(
                "data.format = \"alpaca\" needs data.valid (papers-layout validation rows)".into(),
            );
        }
        Ok(())
    }

    fn metric_names(&self) -> &'static [&'static str] {
        match self.data.task {
            InstructionTask::Keywords => &KeywordMetrics::NAMES,
            InstructionTask::Classify => &BinaryMetrics::NAMES,
        }
    }

    fn instruction(&self) -> &str {
        self.data.instruction.as_deref().unwrap_or_else(|| self.data.task.default_instruction())
    }

    /// Records for paper rows (outputs filled from the labels or keywords when present).
    pub fn records(&self, papers: &[PaperRecord]) -> Vec<InstructionRecord> {
        records_from_papers(papers, self.data.task, self.instruction(), &self.data.input_template)
    }

    /// How rows are read: labels required for the classify task, empty rows as
    /// `data.empty_text` says.
    pub(super) fn row_rules(&self) -> RowRules {
        RowRules {
            require_label: self.data.task == InstructionTask::Classify,
            empty_text: self.data.empty_text,
        }
    }
}
