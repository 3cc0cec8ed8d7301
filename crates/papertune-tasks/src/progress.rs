//! Progress of inference over many items (evaluation, prediction, generation).

use std::sync::atomic::{AtomicBool, Ordering};

static SHOWN: AtomicBool = AtomicBool::new(true);

/// Whether inference draws progress bars (on a terminal; default yes). A command-line tool
/// turns them off for `--quiet` or machine-readable logs; training has its own option
/// ([`crate::TrainOptions::show_progress`]).
pub fn show_progress(show: bool) {
    SHOWN.store(show, Ordering::Relaxed);
}

/// Progress over `total` items (papers, prompts): a bar with its ETA on a terminal, else a log
/// line at every tenth.
pub(crate) struct Progress {
    bar: indicatif::ProgressBar,
    what: &'static str,
    total: usize,
    done: usize,
}

impl Progress {
    pub fn new(total: usize, what: &'static str) -> Self {
        let bar = if SHOWN.load(Ordering::Relaxed) {
            indicatif::ProgressBar::new(total as u64)
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{elapsed_precise} < {eta_precise}] {bar:30} {pos}/{len}",
            )
            .expect("valid template"),
        );
        bar.set_message(what);
        Self { bar, what, total, done: 0 }
    }

    pub fn advance(&mut self, n: usize) {
        let before = self.done * 10 / self.total.max(1);
        self.done += n;
        self.bar.inc(n as u64);
        if self.bar.is_hidden() && self.done * 10 / self.total.max(1) > before {
            tracing::info!("{}: {}/{}", self.what, self.done, self.total);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
