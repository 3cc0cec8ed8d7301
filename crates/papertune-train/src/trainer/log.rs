//! What the trainer tells: events (to `metrics.jsonl`, to TensorBoard event files when asked
//! for, and to the task's hooks, which render them as they like), the progress bar, and log
//! lines where there is no terminal.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::Value;

use super::tensorboard::TensorBoardLog;
use super::{PhaseTimings, StopReason, TrainHooks};
use crate::error::{TrainError, io_error, write_atomic};
use crate::metrics::Metrics;

/// What happens during a run, in the order it happens. Each is one line of `metrics.jsonl`
/// (`{"event": "train", ...}`) and is handed to [`crate::TrainHooks::on_event`].
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TrainEvent<'a> {
    /// The run continues from a checkpoint; `changes` lists the options that differ from it.
    Resume { step: usize, from: &'a Path, changes: &'a [String] },
    /// Training figures every `train.log_every_steps` steps and at the last: the mean loss
    /// and examples per second since the previous one.
    Train {
        step: usize,
        epoch: usize,
        loss: f64,
        lr: f64,
        grad_norm: Option<f64>,
        examples_per_second: f64,
    },
    /// An evaluation; `best` when it improved `train.metric_for_best`.
    Eval { step: usize, epoch: usize, metrics: &'a Metrics, best: bool, seconds: f64 },
    /// Training stopped on an error at `step`, before its update.
    Error { step: usize, message: String },
    /// The end of the run (or of this session of it).
    End {
        step: usize,
        train_seconds: f64,
        examples_per_second: f64,
        best_metric: Option<f64>,
        best_step: Option<usize>,
        stop_reason: StopReason,
        timings: PhaseTimings,
        device: String,
    },
}

/// Where the run's events go: to the metrics log, if there is one, to TensorBoard event files
/// when asked for, and to the hooks; nowhere on a rank other than 0 of a job over several
/// processes, which writes nothing.
pub(super) struct EventSink {
    pub file: Option<MetricsLog>,
    pub tensorboard: Option<TensorBoardLog>,
    pub to_hooks: bool,
}

impl EventSink {
    /// Writes a resumed run's log (see [`MetricsLog::commit`]) and event file, if there are.
    pub fn commit(&mut self) -> Result<(), TrainError> {
        if let Some(tensorboard) = &mut self.tensorboard {
            tensorboard.commit()?;
        }
        match &mut self.file {
            Some(file) => file.commit(),
            None => Ok(()),
        }
    }

    /// Writes `event` to the metrics log, if there is one, then hands it to the hooks.
    pub fn emit<M, H: TrainHooks<M>>(
        &mut self,
        hooks: &mut H,
        event: TrainEvent<'_>,
    ) -> Result<(), TrainError> {
        if !self.to_hooks {
            return Ok(());
        }
        if let Some(file) = &mut self.file {
            file.write(&event)?;
        }
        if let Some(tensorboard) = &mut self.tensorboard {
            tensorboard.write(&event)?;
        }
        hooks.on_event(&event);
        Ok(())
    }
}

/// `metrics.jsonl`: one JSON object per line, flushed as it goes, so that a crash loses nothing
/// already written. A resumed run's log is kept in memory until the session's first checkpoint
/// is saved ([`MetricsLog::commit`]): a resume that fails before leaves the log as it was.
pub(super) struct MetricsLog {
    path: PathBuf,
    to: LogTo,
}

/// Where the metrics log's lines go.
enum LogTo {
    /// The file, opened to append.
    File(File),
    /// Memory: a resumed run's log up to its checkpoint, with this session's events.
    Pending(String),
}

impl MetricsLog {
    /// Opens the log to append to it; for a run resumed at step `resumed_at`, events after
    /// that step (written by the interrupted session after its checkpoint) are dropped, so that
    /// the log reads as one run, and the log stays in memory until [`MetricsLog::commit`].
    pub fn open(path: &Path, resumed_at: Option<usize>) -> Result<Self, TrainError> {
        if let Some(step) = resumed_at {
            let mut kept = String::new();
            let text = if path.exists() {
                std::fs::read_to_string(path).map_err(io_error(path))?
            } else {
                String::new()
            };
            for line in text.lines() {
                // A torn last line (a crash mid-write) is dropped too.
                let Ok(event) = serde_json::from_str::<Value>(line) else { continue };
                let at = event.get("step").and_then(Value::as_u64).unwrap_or(0) as usize;
                if at <= step && event.get("event").and_then(Value::as_str) != Some("end") {
                    kept.push_str(line);
                    kept.push('\n');
                }
            }
            return Ok(Self { path: path.to_path_buf(), to: LogTo::Pending(kept) });
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        }
        let file =
            OpenOptions::new().create(true).append(true).open(path).map_err(io_error(path))?;
        Ok(Self { path: path.to_path_buf(), to: LogTo::File(file) })
    }

    /// Writes a resumed run's log held in memory (atomically) and goes on appending to it; a
    /// log already on disk is left alone.
    pub fn commit(&mut self) -> Result<(), TrainError> {
        let LogTo::Pending(text) = &self.to else { return Ok(()) };
        write_atomic(&self.path, text.as_bytes())?;
        let file =
            OpenOptions::new().append(true).open(&self.path).map_err(io_error(&self.path))?;
        self.to = LogTo::File(file);
        Ok(())
    }

    pub fn write(&mut self, event: &TrainEvent<'_>) -> Result<(), TrainError> {
        let mut line = serde_json::to_value(event).expect("events serialise").to_string();
        line.push('\n');
        match &mut self.to {
            LogTo::Pending(text) => {
                text.push_str(&line);
                Ok(())
            }
            LogTo::File(file) => file
                .write_all(line.as_bytes())
                .and_then(|_| file.flush())
                .map_err(io_error(&self.path)),
        }
    }
}

/// The progress bar of the run's steps; hidden when not asked for or when stderr is not a
/// terminal, and then its messages go to the log as lines.
pub(super) struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub fn new(show: bool, total_steps: usize, done: usize) -> Self {
        if !show {
            return Self { bar: ProgressBar::hidden() };
        }
        let bar = ProgressBar::new(total_steps as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise} < {eta_precise}] {bar:30} {pos}/{len} {msg}",
            )
            .expect("the progress template is valid"),
        );
        bar.set_position(done as u64);
        bar.reset_eta();
        Self { bar }
    }

    /// The figures of a training log event, beside the bar (or as a log line).
    pub fn train_figures(
        &self,
        step: usize,
        total_steps: usize,
        loss: f64,
        lr: f64,
        throughput: f64,
    ) {
        let message = format!("loss {loss:.4} lr {lr:.2e} {throughput:.1} ex/s");
        if self.bar.is_hidden() {
            // No terminal (a log file, CI): the same figures as log lines.
            tracing::info!("step {step}/{total_steps}: {message}");
        }
        self.bar.set_message(message);
    }

    /// A line above the bar (or a log line).
    pub fn line(&self, line: String) {
        if self.bar.is_hidden() {
            tracing::info!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    pub fn step_done(&self) {
        self.bar.inc(1);
    }

    /// Leaves the bar where it stopped, with a message, or clears it after a complete run.
    pub fn finish(&self, stop_reason: StopReason, step: usize) {
        match stop_reason {
            StopReason::Interrupted => self.bar.abandon_with_message(format!(
                "interrupted at step {step}; the last checkpoint holds it"
            )),
            _ => self.bar.finish_and_clear(),
        }
    }

    pub fn abandon(&self) {
        self.bar.abandon();
    }
}

/// Running loss and throughput between two log lines.
pub(super) struct LossWindow {
    loss: f64,
    steps: usize,
    examples: usize,
    start: Instant,
}

impl LossWindow {
    pub fn new() -> Self {
        Self { loss: 0.0, steps: 0, examples: 0, start: Instant::now() }
    }

    pub fn add(&mut self, loss: f64, examples: usize) {
        self.loss += loss;
        self.steps += 1;
        self.examples += examples;
    }

    /// Mean loss and examples per second since the last call; starts a new window.
    pub fn take(&mut self) -> (f64, f64) {
        let elapsed = self.start.elapsed().as_secs_f64().max(1e-9);
        let result = (self.loss / self.steps.max(1) as f64, self.examples as f64 / elapsed);
        *self = Self::new();
        result
    }

    /// Whether steps were added since the last [`LossWindow::take`].
    pub fn is_pending(&self) -> bool {
        self.steps > 0
    }

    /// Evaluation time does not count towards training throughput.
    pub fn restart_clock(&mut self) {
        self.start = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_log_is_left_as_it_was_until_the_first_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let before = concat!(
            r#"{"event":"train","step":1}"#,
            "\n",
            r#"{"event":"train","step":2}"#,
            "\n",
            r#"{"event":"end","step":2}"#,
            "\n"
        );
        std::fs::write(&path, before).unwrap();
        let mut log = MetricsLog::open(&path, Some(1)).unwrap();
        let error = TrainEvent::Error { step: 2, message: "disk full".into() };
        log.write(&error).unwrap();
        // A resume that fails here (no checkpoint saved) leaves the log, end event included.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
        drop(log);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
        // Once a checkpoint is saved: the log up to the resumed step, then this session's.
        let mut log = MetricsLog::open(&path, Some(1)).unwrap();
        log.write(&error).unwrap();
        log.commit().unwrap();
        log.write(&error).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let events: Vec<(String, u64)> = text
            .lines()
            .map(|line| {
                let event: Value = serde_json::from_str(line).unwrap();
                (event["event"].as_str().unwrap().to_owned(), event["step"].as_u64().unwrap())
            })
            .collect();
        let expected = [("train", 1), ("error", 2), ("error", 2)];
        assert_eq!(events, expected.map(|(e, s)| (e.to_owned(), s)));
    }
}
