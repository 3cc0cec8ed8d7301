//! `report.html`: one self-contained page per run folder (inline SVG plots drawn with
//! plotters, no script, no network) with the loss and learning rate per step, the validation
//! metrics per evaluation, the confusion matrix and precision-recall curve of the best
//! checkpoint, the resolved config, timings and the backend.
//!
//! It reads what a run folder holds: `metrics.jsonl` (the trainer's events), `config.toml`,
//! `summary.json` and, for classifiers, `eval_predictions.json`
//! (`{"probabilities": [...], "labels": [...], "threshold": 0.5}`). Missing files leave their
//! section out, so a report can be drawn at any time during training.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{TaskError, io_error};
use crate::metrics::precision_recall_curve;
use crate::run_dir::{RunDir, write_atomic};

mod plots;

/// Probabilities of class 1 and gold labels on the validation set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalPredictions {
    pub probabilities: Vec<f32>,
    pub labels: Vec<u8>,
    pub threshold: f64,
    /// Step of the checkpoint that made them.
    pub step: Option<usize>,
}

/// Everything a report shows, read from a run folder.
#[derive(Debug, Clone, Default)]
pub struct ReportInput {
    pub title: String,
    pub events: Vec<Value>,
    pub config_toml: Option<String>,
    pub summary: Option<Value>,
    pub predictions: Option<EvalPredictions>,
}

impl ReportInput {
    /// Reads the files of a run folder; only `metrics.jsonl` is required.
    pub fn read(run: &Path) -> Result<Self, TaskError> {
        let dir = RunDir::new(run);
        let metrics = dir.metrics();
        let text = std::fs::read_to_string(&metrics).map_err(io_error(&metrics))?;
        // A line torn by a crash is skipped, not fatal.
        let events = text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
        let read_optional = |path: PathBuf| std::fs::read_to_string(path).ok();
        let summary = read_optional(dir.summary()).and_then(|t| serde_json::from_str(&t).ok());
        let predictions =
            read_optional(dir.eval_predictions()).and_then(|t| serde_json::from_str(&t).ok());
        let title = run
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into());
        Ok(Self { title, events, config_toml: read_optional(dir.config()), summary, predictions })
    }
}

/// Reads the run folder `run` and writes its `report.html` (atomically); returns its path.
pub fn write_report(run: &Path) -> Result<PathBuf, TaskError> {
    let input = ReportInput::read(run)?;
    let path = RunDir::new(run).report();
    write_atomic(&path, render(&input).as_bytes())?;
    Ok(path)
}

fn events<'a>(input: &'a ReportInput, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    input.events.iter().filter(move |e| e.get("event").and_then(Value::as_str) == Some(kind))
}

fn number(event: &Value, key: &str) -> Option<f64> {
    event.get(key).and_then(Value::as_f64)
}

/// The page as a string.
pub fn render(input: &ReportInput) -> String {
    let train: Vec<&Value> = events(input, "train").collect();
    let evals: Vec<&Value> = events(input, "eval").collect();
    let loss: Vec<(f64, f64)> =
        train.iter().filter_map(|e| Some((number(e, "step")?, number(e, "loss")?))).collect();
    let lr: Vec<(f64, f64)> =
        train.iter().filter_map(|e| Some((number(e, "step")?, number(e, "lr")?))).collect();
    let eval_loss: Vec<(f64, f64)> = evals
        .iter()
        .filter_map(|e| {
            let metrics = e.get("metrics")?;
            let loss = EVAL_LOSS_KEYS.iter().find_map(|k| metrics.get(*k)?.as_f64())?;
            Some((number(e, "step")?, loss))
        })
        .collect();
    let mut metric_names: Vec<String> = evals
        .iter()
        .filter_map(|e| e.get("metrics").and_then(Value::as_object))
        .flat_map(|m| m.keys().cloned())
        .filter(|name| !EVAL_LOSS_KEYS.contains(&name.as_str()))
        .collect();
    metric_names.sort();
    metric_names.dedup();
    let metric_series: Vec<(String, Vec<(f64, f64)>)> = metric_names
        .into_iter()
        .map(|name| {
            let points = evals
                .iter()
                .filter_map(|e| Some((number(e, "step")?, e.get("metrics")?.get(&name)?.as_f64()?)))
                .collect();
            (name, points)
        })
        // Counts such as `n` or `tp` would flatten the scale of the rates.
        .filter(|(_, points): &(String, Vec<(f64, f64)>)| {
            points.iter().all(|(_, v)| (0.0..=1.0).contains(v))
        })
        .collect();

    let mut html = String::new();
    let title = escape(&input.title);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>papertune run {title}</title>\n<style>{STYLE}</style></head><body>\n<h1>papertune run <code>{title}</code></h1>\n"
    );
    html.push_str(&overview(input));
    html.push_str("<section class=\"plots\">\n");
    if !loss.is_empty() || !eval_loss.is_empty() {
        let caption = if eval_loss.is_empty() {
            "Training loss per step"
        } else {
            "Training and validation loss per step"
        };
        let mut series = Vec::new();
        if !loss.is_empty() {
            series.push(("training loss".to_owned(), loss));
        }
        if !eval_loss.is_empty() {
            series.push(("validation loss".to_owned(), eval_loss));
        }
        figure(&mut html, caption, &plots::line_chart("loss", &series, "step", "loss", None));
    }
    if !lr.is_empty() {
        figure(
            &mut html,
            "Learning rate per step",
            &plots::line_chart(
                "lr",
                &[("learning rate".into(), lr)],
                "step",
                "learning rate",
                None,
            ),
        );
    }
    if !metric_series.is_empty() {
        figure(
            &mut html,
            "Validation metrics per evaluation",
            &plots::line_chart(
                "metrics",
                &metric_series,
                "step",
                "value",
                Some(rate_range(&metric_series)),
            ),
        );
    }
    if let Some(p) = &input.predictions {
        if let Some(curve) = precision_recall_curve(&p.probabilities, &p.labels) {
            let (tp, fp, _, fn_) = counts(p);
            let operating = (tp + fp > 0 && tp + fn_ > 0).then(|| {
                ((tp as f64 / (tp + fn_) as f64, tp as f64 / (tp + fp) as f64), p.threshold)
            });
            figure(
                &mut html,
                "Precision-recall curve (validation, best checkpoint)",
                &plots::pr_chart(&curve, operating),
            );
        }
        html.push_str(&confusion_matrix(p));
    }
    html.push_str("</section>\n");
    let timings = events(input, "end").last().and_then(|end| end.get("timings"));
    if let Some(summary) = &input.summary {
        // What the overview above shows already is not repeated (nor the timings, which have
        // their own table when the run has ended).
        let mut shown: Vec<&str> = SHOWN_IN_OVERVIEW.to_vec();
        if timings.is_some() {
            shown.push("timings");
        }
        let rest = summary.as_object().map(|fields| {
            fields
                .iter()
                .filter(|(k, v)| !shown.contains(&k.as_str()) && !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<serde_json::Map<_, _>>()
        });
        if let Some(rest) = rest.filter(|r| !r.is_empty()) {
            html.push_str("<h2>Summary</h2>\n");
            html.push_str(&key_value_table(&Value::Object(rest)));
        }
    }
    if let Some(timings) = timings {
        html.push_str("<h2>Time per phase (last session, seconds)</h2>\n");
        html.push_str(&key_value_table(timings));
    }
    let resumes: Vec<&Value> = events(input, "resume").collect();
    if !resumes.is_empty() {
        html.push_str("<h2>Resumed</h2>\n<ul>\n");
        for r in resumes {
            let changes = r.get("changes").and_then(Value::as_array).map(|c| {
                c.iter().filter_map(Value::as_str).map(escape).collect::<Vec<_>>().join("; ")
            });
            let _ = writeln!(
                html,
                "<li>at step {}{}</li>",
                number(r, "step").unwrap_or(0.0),
                changes
                    .filter(|c| !c.is_empty())
                    .map(|c| format!(", changed: {c}"))
                    .unwrap_or_default()
            );
        }
        html.push_str("</ul>\n");
    }
    if let Some(config) = &input.config_toml {
        let _ = write!(html, "<h2>Resolved config</h2>\n<pre>{}</pre>\n", escape(config));
    }
    html.push_str(
        "<footer>Written by papertune from the run folder's files.</footer>\n</body></html>\n",
    );
    html
}

/// Names under which an evaluation reports its loss (plotted with the training loss, not with
/// the rates).
const EVAL_LOSS_KEYS: &[&str] = &["loss", "eval_loss", "valid_loss"];

/// Fields of `summary.json` that the overview table shows already.
const SHOWN_IN_OVERVIEW: &[&str] = &[
    "run",
    "model",
    "backend",
    "parameters",
    "trainable_parameters",
    "train_seconds",
    "examples_per_second",
    "stop_reason",
    "best_step",
];

/// The validation plot's value range: the rates' own, with a margin, within [0, 1] padded a
/// little so that a point at 0 or 1 is not cut by the frame.
fn rate_range(series: &[(String, Vec<(f64, f64)>)]) -> (f64, f64) {
    let values = series.iter().flat_map(|(_, points)| points.iter().map(|&(_, v)| v));
    let lo = values.clone().fold(f64::INFINITY, f64::min);
    let hi = values.fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let margin = ((hi - lo) * 0.1).max(0.02);
    ((lo - margin).max(-0.02), (hi + margin).min(1.02))
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:1100px;color:#222}\
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.5em}\
.plots{display:flex;flex-wrap:wrap;gap:.8em}figure{margin:0;border:1px solid #ddd;padding:.5em}\
figcaption{font-size:.9em;color:#555;margin-bottom:.3em}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}\
th{background:#f4f4f4}td.k{text-align:left}td{max-width:640px;overflow-wrap:anywhere}pre{background:#f7f7f7;padding:1em;overflow:auto}\
footer{margin-top:2em;font-size:.8em;color:#777}";

fn figure(html: &mut String, caption: &str, svg: &str) {
    let _ =
        write!(html, "<figure><figcaption>{}</figcaption>\n{svg}\n</figure>\n", escape(caption));
}

fn overview(input: &ReportInput) -> String {
    let train_events = events(input, "train").count();
    let last_step = input.events.iter().filter_map(|e| number(e, "step")).fold(0.0f64, f64::max);
    let end = events(input, "end").last();
    let mut rows = vec![
        ("written".to_owned(), utc_now()),
        ("steps logged".to_owned(), format!("{last_step}")),
    ];
    if let Some(data) = config_value(input, "data", "train") {
        rows.push(("training data".into(), data));
    }
    if let Some(model) = config_value(input, "model", "source") {
        rows.push(("model".into(), model));
    }
    rows.push(("log points".into(), train_events.to_string()));
    let backend = input.summary.as_ref().and_then(|s| s.get("backend")).and_then(Value::as_str);
    if let Some(backend) = backend {
        rows.push(("backend".into(), backend.to_owned()));
    }
    let count = |key: &str| input.summary.as_ref().and_then(|s| s.get(key)).and_then(Value::as_u64);
    if let (Some(all), Some(trainable)) = (count("parameters"), count("trainable_parameters")) {
        rows.push((
            "parameters".into(),
            format!("{} ({} trained)", thousands(all), thousands(trainable)),
        ));
    }
    if let Some(end) = end {
        for key in [
            "stop_reason",
            "train_seconds",
            "examples_per_second",
            "best_metric",
            "best_step",
            "device",
        ] {
            // burn's device description only where the summary does not name the backend.
            if key == "device" && backend.is_some() {
                continue;
            }
            if let Some(v) = end.get(key).filter(|v| !v.is_null()) {
                // The best metric under its own name (e.g. "best f1").
                let name = match key {
                    "best_metric" => format!(
                        "best {}",
                        metric_for_best(input).unwrap_or_else(|| "metric".into())
                    ),
                    _ => key.replace('_', " "),
                };
                rows.push((name, display_value(v)));
            }
        }
    } else {
        rows.push(("status".into(), "running (no end event yet)".into()));
    }
    let mut html = String::from("<table class=\"overview\">\n");
    for (k, v) in rows {
        let _ =
            writeln!(html, "<tr><td class=\"k\">{}</td><td>{}</td></tr>", escape(&k), escape(&v));
    }
    html.push_str("</table>\n");
    html
}

/// `n` with commas between groups of three digits.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `train.metric_for_best` of the run's config.
fn metric_for_best(input: &ReportInput) -> Option<String> {
    config_value(input, "train", "metric_for_best")
}

/// A text value of the run's config, `[section] key`.
fn config_value(input: &ReportInput, section: &str, key: &str) -> Option<String> {
    let config: toml::Table = input.config_toml.as_deref()?.parse().ok()?;
    Some(config.get(section)?.get(key)?.as_str()?.to_owned())
}

/// The current time as `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    utc(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()))
}

/// `seconds` since 1970 as `YYYY-MM-DD HH:MM UTC`.
fn utc(seconds: u64) -> String {
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    // Days since 1970-01-01 to a civil date (the proleptic Gregorian calendar, in 400-year eras).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rest / 3_600, rest % 3_600 / 60)
}

fn display_value(v: &Value) -> String {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() != 0.0 => format!("{f:.4}"),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        // Nested figures (timings, metrics) as "name value" pairs, numbers rounded as above.
        Value::Object(fields) => fields
            .iter()
            .map(|(k, v)| format!("{} {}", k.replace('_', " "), display_value(v)))
            .collect::<Vec<_>>()
            .join(", "),
        Value::Array(items) => items.iter().map(display_value).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// A table of an object's fields, one row each; a nested object (metrics, timings) is a small
/// table in its cell rather than a run-on line.
fn key_value_table(value: &Value) -> String {
    let mut html = String::from("<table>\n");
    if let Some(object) = value.as_object() {
        for (k, v) in object {
            let shown = match v {
                Value::Object(fields) if !fields.is_empty() => key_value_table(v),
                _ => escape(&display_value(v)),
            };
            let _ = writeln!(
                html,
                "<tr><td class=\"k\">{}</td><td>{shown}</td></tr>",
                escape(&k.replace('_', " "))
            );
        }
    }
    html.push_str("</table>\n");
    html
}

/// (tp, fp, tn, fn) at the stored threshold.
fn counts(p: &EvalPredictions) -> (usize, usize, usize, usize) {
    let mut c = (0, 0, 0, 0);
    for (&prob, &label) in p.probabilities.iter().zip(&p.labels) {
        match (f64::from(prob) > p.threshold, label == 1) {
            (true, true) => c.0 += 1,
            (true, false) => c.1 += 1,
            (false, false) => c.2 += 1,
            (false, true) => c.3 += 1,
        }
    }
    c
}

fn confusion_matrix(p: &EvalPredictions) -> String {
    let (tp, fp, tn, fn_) = counts(p);
    format!(
        "<figure><figcaption>Confusion matrix (validation, threshold {:.3}{})</figcaption>\n<table class=\"confusion\">\
<tr><th></th><th>predicted 0</th><th>predicted 1</th></tr>\
<tr><th>label 0</th><td>{tn}</td><td>{fp}</td></tr>\
<tr><th>label 1</th><td>{fn_}</td><td>{tp}</td></tr></table></figure>\n",
        p.threshold,
        p.step.map(|s| format!(", step {s}")).unwrap_or_default()
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_796_456_340), "2026-12-05 07:39 UTC");
        assert_eq!(utc(4_102_444_799), "2099-12-31 23:59 UTC");
    }

    #[test]
    fn counts_read_in_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(22_713_986), "22,713,986");
    }

    #[test]
    fn nested_figures_are_rounded_and_named() {
        let timings = serde_json::json!({"data": 0.0020142000000000003, "evaluation": 2.5});
        assert_eq!(display_value(&timings), "data 0.0020, evaluation 2.5000");
    }
    use serde_json::json;

    #[test]
    fn report_has_svg_plots_and_no_external_urls() {
        let mut events = Vec::new();
        for step in 1..=20 {
            events.push(json!({"event": "train", "step": step, "loss": 1.0 / step as f64, "lr": 1e-4 * step as f64 / 20.0}));
            if step % 5 == 0 {
                events.push(json!({"event": "eval", "step": step, "metrics": {"f1": 0.5 + step as f64 / 50.0, "accuracy": 0.6, "n": 40.0}}));
            }
        }
        events.push(json!({"event": "end", "step": 20, "train_seconds": 3.5, "stop_reason": "completed", "timings": {"data": 0.1}}));
        let input = ReportInput {
            title: "r<1>".into(),
            events,
            config_toml: Some("[train]\nlr = 1e-4\n".into()),
            summary: Some(json!({"backend": "flex", "examples_per_second": 10.0})),
            predictions: Some(EvalPredictions {
                probabilities: vec![0.9, 0.8, 0.3, 0.1],
                labels: vec![1, 0, 1, 0],
                threshold: 0.5,
                step: Some(20),
            }),
        };
        let html = render(&input);
        assert_eq!(html.matches("<svg").count(), 4, "loss, lr, metrics, PR");
        assert!(html.contains("<polyline") || html.contains("<path"), "lines drawn");
        assert!(html.contains("r&lt;1&gt;"));
        assert!(html.contains("<td>1</td><td>1</td>"), "confusion row of label 0: tn 1, fp 1");
        // Self-contained: the only URL-like text allowed is the SVG namespace.
        let without_namespace = html.replace("http://www.w3.org/2000/svg", "");
        assert!(
            !without_namespace.contains("http://") && !without_namespace.contains("https://"),
            "external URL in report"
        );
        assert!(!html.contains("<script"), "no script");
    }

    /// The validation plot fits its rates (not 0-1), the evaluation loss is drawn with the
    /// training loss, the summary repeats nothing of the overview, and nested figures are small
    /// tables rather than run-on lines.
    #[test]
    fn report_fits_its_plots_and_repeats_nothing() {
        let events = vec![
            json!({"event": "train", "step": 3, "loss": 0.7, "lr": 1e-4}),
            json!({"event": "eval", "step": 3, "metrics": {"f1": 0.81, "accuracy": 0.84, "loss": 2.5}}),
            json!({"event": "eval", "step": 6, "metrics": {"f1": 0.86, "accuracy": 0.88, "loss": 1.5}}),
            json!({"event": "end", "step": 6, "train_seconds": 3.5, "stop_reason": "completed", "timings": {"data": 0.1, "forward_backward": 3.0}}),
        ];
        let summary = json!({
            "model": "minilm", "backend": "flex", "train_seconds": 3.5, "steps": 6,
            "final_loss": 0.7, "best_metrics": {"f1": 0.86, "accuracy": 0.88},
            "timings": {"data": 0.1}, "resumed_from": null,
        });
        let input = ReportInput {
            title: "r".into(),
            events,
            config_toml: None,
            summary: Some(summary),
            predictions: None,
        };
        let html = render(&input);
        assert!(html.contains("Training and validation loss per step"), "no eval loss plot");
        assert!(html.contains("validation loss"), "eval loss series unnamed");
        let (lo, hi) = rate_range(&[("f1".into(), vec![(3.0, 0.81), (6.0, 0.86)])]);
        assert!(lo > 0.7 && lo < 0.81 && hi > 0.88 - 0.03 && hi < 0.95, "{lo} {hi}");
        let (lo, hi) = rate_range(&[("f1".into(), vec![(1.0, 1.0)])]);
        assert!((lo - 0.98).abs() < 1e-9 && (hi - 1.02).abs() < 1e-9, "{lo} {hi}");
        let summary_part = &html[html.find("<h2>Summary</h2>").unwrap()..];
        let summary_part = &summary_part[..summary_part.find("<h2>Time").unwrap()];
        for repeated in ["minilm", "flex", "train seconds", "timings", "resumed from"] {
            assert!(!summary_part.contains(repeated), "summary repeats {repeated}: {summary_part}");
        }
        assert!(summary_part.contains("best metrics</td><td><table>"), "{summary_part}");
        assert!(!html.contains("data 0.1000, forward"), "timings as a run-on line");
        assert_eq!(html.matches("<h2>Summary</h2>").count(), 1);
    }
}
