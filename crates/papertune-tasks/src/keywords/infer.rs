//! A keyword method at work: built from a config (the extractors) or loaded from a run folder,
//! keyphrases for documents, evaluation on a file with gold keywords (papertune's metric and
//! the literature's), and the `Keywords` column of a submission.

use std::path::Path;
use std::time::Instant;

use burn::tensor::Device;
use papertune_data::{PaperRecord, TextTokenizer, load_papers};
use papertune_models::bert::BertModel;
use papertune_models::checkpoint::Checkpoint;
use serde::Serialize;

use super::config::{KeywordsConfig, MethodName};
use super::extract::{EmbedRanker, IdfTable, YakeOptions, tfidf_keywords, yake_keywords};
use super::literature::LiteratureMetrics;
use super::rerank::{KeywordMemory, MemoryIndex, Reranker, finish, pool_size};
use super::rows::{keyword_rows, texts, with_gold};
use super::spans::{DecodeOptions, TaggedToken, decode_keyphrases};
use super::tagger::{KeyphraseTagger, TaggingInput};
use crate::data::RowRules;
use crate::error::TaskError;
use crate::metrics::KeywordMetrics;
use crate::run_dir::{
    ENCODER_CONFIG_FILE, RunDir, WEIGHTS_FILE, Which, read_json, read_toml, write_json,
};
use crate::submission::SubmissionRow;

/// The idf table of a tfidf run, in the run folder.
pub const IDF_FILE: &str = "idf.json";
/// The training papers' texts and gold keywords, in a run folder whose config re-ranks.
pub const MEMORY_FILE: &str = "keyword_memory.json";

/// A keyword method ready to use.
pub enum Method {
    /// The trained tagger, its tokenizer, and how its probabilities are decoded.
    Tagger {
        model: Box<KeyphraseTagger>,
        tokenizer: Box<TextTokenizer>,
        decode: DecodeOptions,
        batch_size: usize,
    },
    /// TF-IDF over n-gram candidates.
    Tfidf(IdfTable),
    /// YAKE.
    Yake(YakeOptions),
    /// Candidates ranked by embedding similarity.
    EmbedRank(Box<EmbedRanker>),
}

impl Method {
    /// At most `count` scored phrases of each text, best first (higher is better): the tagger's
    /// span score, count × idf, and for YAKE and the embedding ranker `1 / (1 + rank)`.
    fn scored(
        &self,
        texts: &[String],
        count: usize,
        device: &Device,
    ) -> Result<Vec<Vec<(String, f64)>>, TaskError> {
        Ok(match self {
            Self::Tagger { model, tokenizer, decode, batch_size } => {
                let inputs = texts
                    .iter()
                    .map(|t| TaggingInput::new(tokenizer, t))
                    .collect::<Result<Vec<_>, _>>()?;
                let tagged =
                    model.tag_probabilities(&inputs, tokenizer.pad_id(), *batch_size, device);
                texts
                    .iter()
                    .zip(&tagged)
                    .map(|(text, tokens)| tagged_spans(text, tokens, decode, count))
                    .collect()
            }
            Self::Tfidf(idf) => texts.iter().map(|t| tfidf_keywords(t, idf, count)).collect(),
            Self::Yake(options) => texts
                .iter()
                .map(|t| {
                    let mut kept: Vec<(String, f64)> = Vec::new();
                    for (keyword, _) in yake_keywords(t, options, count.saturating_mul(4).max(50)) {
                        let keyword = papertune_data::normalize_keyword(&keyword);
                        if !keyword.is_empty() && !kept.iter().any(|(k, _)| *k == keyword) {
                            let rank = kept.len() as f64;
                            kept.push((keyword, 1.0 / (1.0 + rank)));
                        }
                    }
                    kept.truncate(count);
                    kept
                })
                .collect(),
            Self::EmbedRank(ranker) => ranker
                .rank(texts, count, device)?
                .into_iter()
                .map(|ranked| {
                    ranked
                        .into_iter()
                        .enumerate()
                        .map(|(i, k)| (k, 1.0 / (1.0 + i as f64)))
                        .collect()
                })
                .collect(),
        })
    }
}

/// A keyword method with what it returns: how many phrases, and the training papers' evidence
/// added to its scores when the config re-ranks.
pub struct Keyphraser {
    pub method: Method,
    /// Phrases per document.
    pub top_k: usize,
    rerank: Option<Reranker>,
}

impl Keyphraser {
    /// An extractor as `config` describes it; tfidf counts its document frequencies over
    /// `train_texts`. (The tagger is trained, then loaded with [`Keyphraser::open`].) Re-ranking,
    /// when configured, reads `memory`.
    pub fn prepare(
        config: &KeywordsConfig,
        train_texts: &[String],
        memory: Option<&KeywordMemory>,
        device: &Device,
    ) -> Result<Self, TaskError> {
        let method = &config.method;
        let chosen = match method.name {
            MethodName::Tagger => {
                return Err(TaskError::Config(
                    "the tagger is trained: cargo xtask train with [method] name = \"tagger\""
                        .into(),
                ));
            }
            MethodName::Tfidf => Method::Tfidf(IdfTable::build(
                train_texts.iter().map(String::as_str),
                method.max_ngram,
            )),
            MethodName::Yake => {
                Method::Yake(YakeOptions { max_ngram: method.max_ngram, ..YakeOptions::default() })
            }
            MethodName::EmbedRank => Method::EmbedRank(Box::new(EmbedRanker::load(
                &config.model.source,
                method.max_ngram,
                method.diversity,
                config.eval_batch_size(),
                device,
            )?)),
        };
        Self::with_rerank(config, chosen, memory)
    }

    /// `method` with the config's count and re-ranking (which needs the training papers).
    pub(super) fn with_rerank(
        config: &KeywordsConfig,
        method: Method,
        memory: Option<&KeywordMemory>,
    ) -> Result<Self, TaskError> {
        Ok(Self { method, top_k: config.top_k(), rerank: reranker(config, memory)? })
    }

    /// Writes what the method read from its training file into the run folder.
    pub(super) fn save(&self, run: &RunDir) -> Result<(), TaskError> {
        match &self.method {
            Method::Tfidf(idf) => write_json(&run.root.join(IDF_FILE), idf),
            _ => Ok(()),
        }
    }

    /// Loads a keyword run: its config, and the method with the best checkpoint (tagger) or the
    /// files `train` stored.
    pub fn open(run: &Path, device: &Device) -> Result<(KeywordsConfig, Self), TaskError> {
        let dir = RunDir::new(run);
        let config: KeywordsConfig = read_toml(&dir.config())?;
        config.validate().map_err(|message| TaskError::Run { path: dir.config(), message })?;
        let memory: Option<KeywordMemory> = if config.rerank.enabled() {
            Some(read_json(&dir.root.join(MEMORY_FILE))?)
        } else {
            None
        };
        let keyphraser = match config.method.name {
            MethodName::Tagger => {
                let checkpoint_dir = dir.verified_checkpoint(Which::Best)?;
                let encoder_config = papertune_models::bert::BertConfig::read(
                    &checkpoint_dir.join(ENCODER_CONFIG_FILE),
                )?;
                let max_len = config.model.max_len.min(encoder_config.max_sequence_len());
                let tokenizer = TextTokenizer::from_file(&dir.tokenizer(), max_len)?;
                let mut checkpoint = Checkpoint::read(&checkpoint_dir.join(WEIGHTS_FILE))?;
                let encoder = BertModel::from_checkpoint(&encoder_config, &mut checkpoint, device)?;
                let model = KeyphraseTagger::load(encoder, &mut checkpoint, 0.0, device)?;
                let method = Method::Tagger {
                    model: Box::new(model),
                    tokenizer: Box::new(tokenizer),
                    decode: config.decode.clone(),
                    batch_size: config.eval_batch_size(),
                };
                Self::with_rerank(&config, method, memory.as_ref())?
            }
            MethodName::Tfidf => {
                let path = dir.root.join(IDF_FILE);
                let idf: IdfTable = read_json(&path)?;
                idf.check().map_err(|message| TaskError::Run { path: path.clone(), message })?;
                if idf.max_ngram != config.method.max_ngram {
                    let message = format!(
                        "counts phrases of up to {} words, the config's method.max_ngram is {}",
                        idf.max_ngram, config.method.max_ngram
                    );
                    return Err(TaskError::Run { path, message });
                }
                Self::with_rerank(&config, Method::Tfidf(idf), memory.as_ref())?
            }
            _ => Self::prepare(&config, &[], memory.as_ref(), device)?,
        };
        Ok((config, keyphraser))
    }

    /// Keyphrases of each text (a document's title and abstract, see [`document_text`](super::document_text)), best
    /// first, normalised as the metrics compare them.
    pub fn keyphrases(
        &self,
        texts: &[String],
        device: &Device,
    ) -> Result<Vec<Vec<String>>, TaskError> {
        Ok(self
            .scored_keyphrases(texts, device)?
            .into_iter()
            .map(|ranked| ranked.into_iter().map(|(k, _)| k).collect())
            .collect())
    }

    /// [`Keyphraser::keyphrases`] with each phrase's score, higher is better (see
    /// [`RerankConfig`] for what re-ranking adds).
    pub fn scored_keyphrases(
        &self,
        texts: &[String],
        device: &Device,
    ) -> Result<Vec<Vec<(String, f64)>>, TaskError> {
        let rerank = self.rerank.as_ref();
        let pool = self.method.scored(texts, pool_size(rerank, self.top_k), device)?;
        Ok(texts
            .iter()
            .zip(pool)
            .map(|(text, scored)| finish(rerank, text, scored, self.top_k))
            .collect())
    }
}

/// The re-ranking `config` asks for, on the training papers (`None` when it adds nothing).
pub(super) fn reranker(
    config: &KeywordsConfig,
    memory: Option<&KeywordMemory>,
) -> Result<Option<Reranker>, TaskError> {
    match (config.rerank.enabled(), memory) {
        (false, _) => Ok(None),
        (true, Some(memory)) => Ok(Some(Reranker {
            config: config.rerank.clone(),
            index: MemoryIndex::new(memory, config.longest_phrase()),
        })),
        (true, None) => {
            Err(TaskError::Config("[rerank] needs the training papers (data.train)".into()))
        }
    }
}

/// The tagger's scored spans of one document, at most `count`.
fn tagged_spans(
    text: &str,
    tokens: &[TaggedToken],
    decode: &DecodeOptions,
    count: usize,
) -> Vec<(String, f64)> {
    let decode = DecodeOptions { top_k: count, ..decode.clone() };
    decode_keyphrases(text, tokens, &decode).into_iter().map(|(k, s)| (k, f64::from(s))).collect()
}

/// The tagger's keyphrases of one document as a run returns them: `decode.top_k` spans, or a
/// larger pool re-ranked with the training papers' evidence.
pub(super) fn rank_tagged(
    text: &str,
    tokens: &[TaggedToken],
    decode: &DecodeOptions,
    rerank: Option<&Reranker>,
) -> Vec<String> {
    let scored = tagged_spans(text, tokens, decode, pool_size(rerank, decode.top_k));
    finish(rerank, text, scored, decode.top_k).into_iter().map(|(k, _)| k).collect()
}

/// How a keyword run is evaluated.
#[derive(Debug, Clone, Copy, Default)]
pub struct EvalOptions {
    /// Score only the first N rows.
    pub max_rows: Option<usize>,
    /// Add the keyphrase literature's figures (stemmed matches, present and absent).
    pub literature: bool,
}

/// A keyword evaluation: papertune's metric, and the literature's when asked for.
#[derive(Debug, Clone, Serialize)]
pub struct KeywordEvaluation {
    #[serde(flatten)]
    pub metrics: KeywordMetrics,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub literature: Option<LiteratureMetrics>,
    pub method: String,
    /// Seconds spent extracting (loading excluded).
    pub extract_seconds: f64,
}

/// The text of every row of `path` that has some (titles and abstracts, see
/// [`document_text`](super::document_text)), read with the config's column names.
pub fn read_texts(config: &KeywordsConfig, path: &Path) -> Result<Vec<String>, TaskError> {
    let (papers, _) = load_papers(path, &config.data.source().load_options(None, keyword_rows()))?;
    Ok(texts(&papers))
}

/// Papers of `data` with gold keywords, read with the run's column names.
fn gold_papers(
    config: &KeywordsConfig,
    data: &Path,
    max_rows: Option<usize>,
    rules: RowRules,
) -> Result<(Vec<PaperRecord>, Vec<Vec<String>>), TaskError> {
    let (papers, _) = load_papers(data, &config.data.source().load_options(max_rows, rules))?;
    let (papers, gold) = with_gold(papers);
    if papers.is_empty() {
        return Err(TaskError::Run {
            path: data.to_path_buf(),
            message: "no row has gold keywords (column keywords / Keywords)".into(),
        });
    }
    Ok((papers, gold))
}

/// Scores `keyphraser` on the rows of `data` that have gold keywords; with the scored
/// keyphrases of each of those rows (by its 1-based row in the file).
pub fn evaluate_with(
    config: &KeywordsConfig,
    keyphraser: &Keyphraser,
    data: &Path,
    options: &EvalOptions,
    device: &Device,
) -> Result<(KeywordEvaluation, Vec<DocumentKeyphrases>), TaskError> {
    let (papers, gold) = gold_papers(config, data, options.max_rows, keyword_rows())?;
    let texts = texts(&papers);
    let started = Instant::now();
    let scored = keyphraser.scored_keyphrases(&texts, device)?;
    let extract_seconds = started.elapsed().as_secs_f64();
    let predicted: Vec<Vec<String>> =
        scored.iter().map(|ranked| ranked.iter().map(|(k, _)| k.clone()).collect()).collect();
    let evaluation = KeywordEvaluation {
        metrics: KeywordMetrics::compute(&predicted, &gold),
        literature: options
            .literature
            .then(|| LiteratureMetrics::compute(&predicted, &gold, &texts)),
        method: config.method.name.as_str().to_owned(),
        extract_seconds,
    };
    Ok((evaluation, DocumentKeyphrases::of(&papers, scored)))
}

/// One document's keyphrases, best first, with their scores: a line of `--predictions` (and of
/// `keywords` on a file without gold keywords), `{"uuid", "row", "keywords", "scores"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DocumentKeyphrases {
    pub uuid: String,
    /// The paper's 1-based row in its file.
    pub row: usize,
    pub keywords: Vec<String>,
    pub scores: Vec<f64>,
}

impl DocumentKeyphrases {
    fn of(papers: &[PaperRecord], scored: Vec<Vec<(String, f64)>>) -> Vec<Self> {
        papers
            .iter()
            .zip(scored)
            .map(|(paper, ranked)| {
                let (keywords, scores) = ranked.into_iter().unzip();
                Self { uuid: paper.uuid.clone(), row: paper.row, keywords, scores }
            })
            .collect()
    }
}

/// Whether some row of `data` (of its first `max_rows`) has gold keywords.
pub fn has_gold_keywords(
    config: &KeywordsConfig,
    data: &Path,
    max_rows: Option<usize>,
) -> Result<bool, TaskError> {
    let (papers, _) =
        load_papers(data, &config.data.source().load_options(max_rows, keyword_rows()))?;
    Ok(!with_gold(papers).0.is_empty())
}

/// `keyphraser`'s keyphrases for every row of `data` that has a title or an abstract (the first
/// `max_rows`), gold keywords or not.
pub fn extract_with(
    config: &KeywordsConfig,
    keyphraser: &Keyphraser,
    data: &Path,
    max_rows: Option<usize>,
    device: &Device,
) -> Result<Vec<DocumentKeyphrases>, TaskError> {
    let (papers, _) =
        load_papers(data, &config.data.source().load_options(max_rows, keyword_rows()))?;
    let scored = keyphraser.scored_keyphrases(&texts(&papers), device)?;
    Ok(DocumentKeyphrases::of(&papers, scored))
}

/// Scores a keyword run on `data`; with each scored row's keyphrases (see [`evaluate_with`]).
pub fn evaluate(
    run: &Path,
    data: &Path,
    options: &EvalOptions,
    device: &Device,
) -> Result<(KeywordEvaluation, Vec<DocumentKeyphrases>), TaskError> {
    let (config, keyphraser) = Keyphraser::open(run, device)?;
    evaluate_with(&config, &keyphraser, data, options, device)
}

/// Writes scored keyphrases as JSON lines, `{"uuid": "a", "row": 1, "keywords": [...],
/// "scores": [...]}`.
pub fn write_predictions(path: &Path, rows: &[DocumentKeyphrases]) -> Result<(), TaskError> {
    crate::run_dir::write_output(path, predictions_text(rows).as_bytes())
}

/// Scored keyphrases as JSON lines (see [`write_predictions`]).
pub fn predictions_text(rows: &[DocumentKeyphrases]) -> String {
    rows.iter().map(|row| serde_json::to_string(row).expect("serialisable") + "\n").collect()
}

/// Keyphrases for every row of `data` (rows without text get none), in row order, with the rows.
pub fn predict_keywords(
    run: &Path,
    data: &Path,
    device: &Device,
) -> Result<Vec<(PaperRecord, Vec<String>)>, TaskError> {
    let (config, keyphraser) = Keyphraser::open(run, device)?;
    let rules =
        RowRules { require_label: false, empty_text: papertune_data::EmptyTextPolicy::Keep };
    let (papers, _) = load_papers(data, &config.data.source().load_options(None, rules))?;
    let texts = texts(&papers);
    let keywords = keyphraser.keyphrases(&texts, device)?;
    Ok(papers.into_iter().zip(keywords).collect())
}

/// Puts each paper's keyphrases into the submission row of the same uuid, in the same order
/// (rows that another run read from the same file); fails naming the first row that differs.
pub fn fill_keywords(
    rows: &mut [SubmissionRow],
    predicted: Vec<(PaperRecord, Vec<String>)>,
    data: &Path,
) -> Result<(), TaskError> {
    if rows.len() != predicted.len() {
        let message = format!("the runs read {} and {} rows", rows.len(), predicted.len());
        return Err(TaskError::Run { path: data.to_path_buf(), message });
    }
    for (row, (paper, keywords)) in rows.iter_mut().zip(predicted) {
        if row.uuid != paper.uuid {
            let message = format!(
                "row {}: the runs read uuid {:?} and {:?}",
                paper.row, row.uuid, paper.uuid
            );
            return Err(TaskError::Run { path: data.to_path_buf(), message });
        }
        row.keywords = keywords;
    }
    Ok(())
}

/// Whether a run folder holds a keyword run (its config has a `[method]` section; a config
/// that does not parse counts by its section header, so that loading it reports the error).
pub fn is_keywords_run(run: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(RunDir::new(run).config()) else { return false };
    match text.parse::<toml::Table>() {
        Ok(table) => table.contains_key("method"),
        Err(_) => text.lines().any(|line| line.trim() == "[method]"),
    }
}
