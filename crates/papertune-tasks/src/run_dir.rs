//! A run folder: `config.toml` (resolved), `metrics.jsonl`, `tokenizer.json`, `summary.json`,
//! `report.html`, `eval_predictions.json`, and the `best/` and `last/` checkpoints, each written
//! whole or not at all. Every file name of a run folder is here, and only here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{TaskError, io_error};

/// The marker file of a complete checkpoint folder.
pub const STATE_FILE: &str = "trainer_state.json";
/// A classifier checkpoint's weights (Hugging Face names) and its encoder's `config.json`.
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const ENCODER_CONFIG_FILE: &str = "config.json";
/// In a best checkpoint of a classifier: the threshold tuned on validation data.
pub const THRESHOLD_FILE: &str = "threshold.json";
/// In the parent folder of a k-fold training: the names of the fold runs.
pub const FOLDS_FILE: &str = "folds.json";
/// In the parent folder of a k-fold training: the folds' validation metrics summarised.
pub const FOLDS_SUMMARY_FILE: &str = "folds_summary.json";

/// In every run folder: the file whose advisory lock the command writing the folder holds.
pub const LOCK_FILE: &str = ".lock";

/// A run folder held for writing by this process (see [`RunDir::lock`]); the lock is released
/// when this is dropped, or when the process ends, however it ends.
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

/// What a checkpoint folder records about training when it was written.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Optimizer steps done.
    pub step: usize,
    pub epoch: usize,
    pub total_steps: usize,
    /// Name and best value of the metric that picks the best checkpoint.
    pub metric_for_best: String,
    pub best_metric: Option<f64>,
    pub best_step: Option<usize>,
    /// sha256 of every other file of the checkpoint folder, checked when it is loaded: a
    /// partial or damaged checkpoint is refused, naming the file.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
}

impl CheckpointState {
    /// The state at `progress`, with the metric that picks the best checkpoint.
    pub fn at(progress: &papertune_train::TrainProgress, metric_for_best: &str) -> Self {
        Self {
            step: progress.step,
            epoch: progress.epoch,
            total_steps: progress.total_steps,
            metric_for_best: metric_for_best.to_owned(),
            best_metric: progress.best.map(|b| b.0),
            best_step: progress.best.map(|b| b.1),
            files: BTreeMap::new(),
        }
    }

    /// Records the sha256 of every file in `dir` (but this state's own file), then writes this
    /// state as `dir/trainer_state.json`: the last file of a checkpoint, marking it complete.
    pub fn seal(mut self, dir: &Path) -> Result<(), TaskError> {
        self.files.clear();
        for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
            let entry = entry.map_err(io_error(dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == STATE_FILE || name.starts_with('.') || !entry.path().is_file() {
                continue;
            }
            self.files.insert(name, file_sha256(&entry.path())?);
        }
        write_json(&dir.join(STATE_FILE), &self)
    }

    /// Checks the files of checkpoint folder `dir` against the recorded checksums.
    pub fn verify(&self, dir: &Path) -> Result<(), TaskError> {
        for (name, expected) in &self.files {
            let path = dir.join(name);
            if !path.exists() {
                return Err(TaskError::Run {
                    path,
                    message: "missing from its checkpoint (partial copy?)".into(),
                });
            }
            let found = file_sha256(&path)?;
            if &found != expected {
                return Err(TaskError::Run {
                    path,
                    message: format!(
                        "damaged: its sha256 is {found}, the checkpoint recorded {expected}"
                    ),
                });
            }
        }
        Ok(())
    }
}

/// sha256 of a file, as lowercase hex.
fn file_sha256(path: &Path) -> Result<String, TaskError> {
    let mut hasher = Sha256::new();
    let mut file = std::fs::File::open(path).map_err(io_error(path))?;
    std::io::copy(&mut file, &mut hasher).map_err(io_error(path))?;
    Ok(format!("{:x}", hasher.finalize()))
}

/// Which checkpoint of a run to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Which {
    #[default]
    Best,
    Last,
}

impl Which {
    fn dir_name(self) -> &'static str {
        match self {
            Self::Best => "best",
            Self::Last => "last",
        }
    }
}

/// Paths of a run folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }
    pub fn tokenizer(&self) -> PathBuf {
        self.root.join("tokenizer.json")
    }
    pub fn summary(&self) -> PathBuf {
        self.root.join("summary.json")
    }
    pub fn report(&self) -> PathBuf {
        self.root.join("report.html")
    }
    /// Validation predictions of a classifier's best checkpoint (for the report's curves).
    pub fn eval_predictions(&self) -> PathBuf {
        self.root.join("eval_predictions.json")
    }
    /// The fold runs' names, in the parent folder of a k-fold training.
    pub fn folds(&self) -> PathBuf {
        self.root.join(FOLDS_FILE)
    }

    /// Takes the run folder for writing, with an advisory lock on its [`LOCK_FILE`]: every
    /// command that writes a run folder (train, a resume, k-fold training, report) holds it,
    /// and a second one is refused at once, naming the folder. The lock file stays in the
    /// folder (removing it would let two commands lock two different files).
    pub fn lock(&self) -> Result<RunLock, TaskError> {
        if !self.root.is_dir() {
            return Err(TaskError::Run {
                path: self.root.clone(),
                message: "no such run folder".into(),
            });
        }
        let path = self.root.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error(&path))?;
        match file.try_lock() {
            Ok(()) => Ok(RunLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(TaskError::Run {
                path: self.root.clone(),
                message: format!(
                    "another papertune command (train, a resume, report) is writing this run \
                     folder (it holds {LOCK_FILE}); wait for it to end"
                ),
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(io_error(&path)(e)),
        }
    }

    /// Folder of a checkpoint, falling back to the previous copy if a swap was interrupted.
    pub fn checkpoint(&self, which: Which) -> Result<PathBuf, TaskError> {
        let dir = self.root.join(which.dir_name());
        // A checkpoint folder is renamed into place whole, with its state file in it.
        if dir.join(STATE_FILE).exists() {
            return Ok(dir);
        }
        let previous = self.root.join(format!("{}.old", which.dir_name()));
        if previous.join(STATE_FILE).exists() {
            return Ok(previous);
        }
        if which == Which::Best {
            // A run stopped before its first evaluation has only `last/`.
            if let Ok(last) = self.checkpoint(Which::Last) {
                return Ok(last);
            }
        }
        Err(TaskError::Run {
            path: self.root.clone(),
            message: format!(
                "no {} checkpoint (is this a papertune run folder?)",
                which.dir_name()
            ),
        })
    }

    /// Writes a checkpoint folder: files go to `<name>.tmp`, which then replaces `<name>`;
    /// the old copy stays as `<name>.old` until the new one is in place.
    pub fn write_checkpoint(
        &self,
        which: Which,
        write_files: impl FnOnce(&Path) -> Result<(), TaskError>,
    ) -> Result<(), TaskError> {
        self.write_checkpoint_keeping(which, 1, write_files)
    }

    /// [`RunDir::write_checkpoint`], keeping up to `keep - 1` earlier `last/` checkpoints as
    /// `checkpoint-<step>/` (the oldest are removed).
    pub fn write_checkpoint_keeping(
        &self,
        which: Which,
        keep: usize,
        write_files: impl FnOnce(&Path) -> Result<(), TaskError>,
    ) -> Result<(), TaskError> {
        let name = which.dir_name();
        let target = self.root.join(name);
        let staging = self.root.join(format!("{name}.tmp"));
        let previous = self.root.join(format!("{name}.old"));
        if !target.exists() && previous.exists() {
            // An earlier swap was interrupted between its renames: the previous copy goes back
            // in place first, so that a complete checkpoint stays on disk at every moment.
            std::fs::rename(&previous, &target).map_err(io_error(&previous))?;
        }
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(io_error(&staging))?;
        }
        std::fs::create_dir_all(&staging).map_err(io_error(&staging))?;
        if let Err(error) = write_files(&staging) {
            // A half-written checkpoint is of no use; the complete one stays in place.
            let _ = std::fs::remove_dir_all(&staging);
            return Err(error);
        }
        if previous.exists() {
            std::fs::remove_dir_all(&previous).map_err(io_error(&previous))?;
        }
        if target.exists() {
            std::fs::rename(&target, &previous).map_err(io_error(&target))?;
        }
        std::fs::rename(&staging, &target).map_err(io_error(&target))?;
        if previous.exists() {
            let kept = (keep > 1 && which == Which::Last)
                .then(|| read_json::<CheckpointState>(&previous.join(STATE_FILE)).ok())
                .flatten();
            match kept {
                Some(state) => {
                    let archived = self.root.join(format!("checkpoint-{}", state.step));
                    if archived.exists() {
                        std::fs::remove_dir_all(&archived).map_err(io_error(&archived))?;
                    }
                    std::fs::rename(&previous, &archived).map_err(io_error(&previous))?;
                    self.prune_checkpoints(keep - 1)?;
                }
                None => std::fs::remove_dir_all(&previous).map_err(io_error(&previous))?,
            }
        }
        Ok(())
    }

    /// Earlier `last/` checkpoints kept by `train.save_total_limit`, oldest first.
    pub fn archived_checkpoints(&self) -> Result<Vec<(usize, PathBuf)>, TaskError> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(io_error(&self.root))? {
            let entry = entry.map_err(io_error(&self.root))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(step) =
                name.strip_prefix("checkpoint-").and_then(|s| s.parse::<usize>().ok())
            {
                found.push((step, entry.path()));
            }
        }
        found.sort();
        Ok(found)
    }

    fn prune_checkpoints(&self, keep: usize) -> Result<(), TaskError> {
        let archived = self.archived_checkpoints()?;
        for (_, path) in archived.iter().take(archived.len().saturating_sub(keep)) {
            std::fs::remove_dir_all(path).map_err(io_error(path))?;
        }
        Ok(())
    }

    /// The folder of a checkpoint after checking its files against their checksums.
    pub fn verified_checkpoint(&self, which: Which) -> Result<PathBuf, TaskError> {
        let dir = self.checkpoint(which)?;
        let state: CheckpointState = read_json(&dir.join(STATE_FILE))?;
        state.verify(&dir)?;
        Ok(dir)
    }

    /// Reads a checkpoint's `trainer_state.json`.
    pub fn checkpoint_state(&self, which: Which) -> Result<CheckpointState, TaskError> {
        let path = self.checkpoint(which)?.join(STATE_FILE);
        read_json(&path)
    }
}

/// Run folders named by the user, with a k-fold parent (holding `folds.json`) standing for its
/// fold runs.
pub fn expand_runs(runs: &[PathBuf]) -> Result<Vec<PathBuf>, TaskError> {
    let mut expanded = Vec::new();
    for run in runs {
        let folds = RunDir::new(run).folds();
        if folds.exists() {
            let names: Vec<String> = read_json(&folds)?;
            for name in &names {
                // Fold runs sit in the k-fold folder: a path elsewhere is not followed.
                let mut parts = Path::new(name).components();
                if !matches!(
                    (parts.next(), parts.next()),
                    (Some(std::path::Component::Normal(_)), None)
                ) {
                    return Err(TaskError::Run {
                        path: folds,
                        message: format!(
                            "names the fold run {name:?}; expected a folder name inside {}",
                            run.display()
                        ),
                    });
                }
                expanded.push(run.join(name));
            }
        } else {
            expanded.push(run.clone());
        }
    }
    if expanded.is_empty() {
        return Err(TaskError::Config("no run folder given".into()));
    }
    Ok(expanded)
}

/// Writes `bytes` to `path` so that readers see the old file or the whole new one, never a
/// part (atomic-write-file: a temporary file beside it, fsync, rename, fsync of the folder).
/// Only a regular file is replaced: a symbolic link, a folder, a FIFO or a device at `path` is
/// refused (a new file has the mode `0666` less the umask; a replaced one keeps its mode).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TaskError> {
    if !matches!(output_target(path)?, Target::New | Target::File) {
        return Err(TaskError::Run {
            path: path.to_path_buf(),
            message: "is not a regular file; papertune writes this file itself: remove what is \
                      there"
                .into(),
        });
    }
    let mut file = atomic_write_file::AtomicWriteFile::open(path).map_err(io_error(path))?;
    std::io::Write::write_all(&mut file, bytes).map_err(io_error(path))?;
    file.commit().map_err(io_error(path))
}

/// What is at a path a command was asked to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// `-`: standard output.
    Stdout,
    /// Nothing yet: a new file.
    New,
    /// A regular file.
    File,
    /// A FIFO, a character or block device or a socket (or a symbolic link to one, such as
    /// `/dev/stdout`): written to in place, as a shell's `>` does.
    Stream,
}

/// What `path` is, refusing a folder and a symbolic link to a file (or to nothing): replacing
/// the link would turn it into a file, and writing through it would write somewhere the
/// command line does not name.
fn output_target(path: &Path) -> Result<Target, TaskError> {
    if path == Path::new("-") {
        return Ok(Target::Stdout);
    }
    let refuse = |message: String| Err(TaskError::Run { path: path.to_path_buf(), message });
    let kind = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta.file_type(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Target::New),
        Err(e) => return Err(io_error(path)(e)),
    };
    if kind.is_symlink() {
        return match std::fs::metadata(path) {
            Ok(target) if is_stream(target.file_type()) => Ok(Target::Stream),
            _ => {
                let to = std::fs::read_link(path)
                    .map(|t| format!(" (to {})", t.display()))
                    .unwrap_or_default();
                refuse(format!(
                    "is a symbolic link{to}; papertune writes no file through a link: name the \
                     file itself"
                ))
            }
        };
    }
    if is_stream(kind) {
        Ok(Target::Stream)
    } else if kind.is_dir() {
        refuse("is a folder; expected the name of a file to write".into())
    } else {
        Ok(Target::File)
    }
}

/// A FIFO, a device or a socket: what is written to in place, never replaced.
#[cfg(unix)]
fn is_stream(kind: std::fs::FileType) -> bool {
    use std::os::unix::fs::FileTypeExt;
    kind.is_fifo() || kind.is_char_device() || kind.is_block_device() || kind.is_socket()
}

#[cfg(not(unix))]
fn is_stream(_kind: std::fs::FileType) -> bool {
    false
}

/// Checks, before any work, that a command may write the file `path` it was given (`--output`,
/// `--predictions`): a new file, `-`, a FIFO or a device may be written; an existing file only
/// with `force` (the command's `--force`); a folder or a symbolic link to a file never.
pub fn check_output(path: &Path, force: bool) -> Result<(), TaskError> {
    match output_target(path)? {
        Target::File if !force => Err(TaskError::Run {
            path: path.to_path_buf(),
            message: "already exists; pass --force to replace it".into(),
        }),
        _ => Ok(()),
    }
}

/// Writes a file the user named: `-` is standard output; a FIFO or a device (or a link to one)
/// is written to in place, and a failed write (a full disk, `/dev/full`) is an error; otherwise
/// the file is written atomically ([`write_atomic`]), its folder created if needed. Whether an
/// existing file may be replaced is [`check_output`]'s question, asked before the work.
pub fn write_output(path: &Path, bytes: &[u8]) -> Result<(), TaskError> {
    use std::io::Write;
    match output_target(path)? {
        Target::Stdout => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(bytes)
                .and_then(|()| stdout.flush())
                .map_err(io_error(Path::new("standard output")))
        }
        Target::Stream => {
            let mut file =
                std::fs::OpenOptions::new().write(true).open(path).map_err(io_error(path))?;
            file.write_all(bytes).and_then(|()| file.flush()).map_err(io_error(path))
        }
        Target::New | Target::File => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(io_error(dir))?;
            }
            write_atomic(path, bytes)
        }
    }
}

/// Serialises `value` as pretty JSON and writes it atomically.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), TaskError> {
    let text = serde_json::to_string_pretty(value).expect("serialisable value");
    write_atomic(path, text.as_bytes())
}

/// Reads a TOML file (a run's `config.toml`), naming it in any error.
pub(crate) fn read_toml<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, TaskError> {
    let text = std::fs::read_to_string(path).map_err(|e| match path.parent() {
        // No config: no run folder (said so, rather than the system's "No such file").
        Some(root) if e.kind() == std::io::ErrorKind::NotFound => crate::error::no_run_folder(root),
        _ => io_error(path)(e),
    })?;
    toml::from_str(&text)
        .map_err(|e| TaskError::Run { path: path.to_path_buf(), message: e.to_string() })
}

/// Reads a JSON file, naming it in any error.
pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, TaskError> {
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    serde_json::from_str(&text)
        .map_err(|e| TaskError::Run { path: path.to_path_buf(), message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(run: &RunDir, step: usize, keep: usize) {
        run.write_checkpoint_keeping(Which::Last, keep, |dir| {
            std::fs::write(dir.join("weights.bin"), step.to_le_bytes()).unwrap();
            CheckpointState { step, ..CheckpointState::default() }.seal(dir)
        })
        .unwrap();
    }

    #[test]
    fn keeps_the_newest_checkpoints_and_removes_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        for step in [10, 20, 30, 40] {
            write(&run, step, 3);
        }
        assert_eq!(run.checkpoint_state(Which::Last).unwrap().step, 40);
        let kept: Vec<usize> =
            run.archived_checkpoints().unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(kept, vec![20, 30]);
        // With the default limit of 1 nothing is archived.
        let other = tempfile::tempdir().unwrap();
        let run = RunDir::new(other.path());
        write(&run, 1, 1);
        write(&run, 2, 1);
        assert!(run.archived_checkpoints().unwrap().is_empty());
        assert!(!other.path().join("last.old").exists() && !other.path().join("last.tmp").exists());
    }

    #[test]
    fn a_swap_interrupted_twice_never_leaves_the_run_without_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        write(&run, 1, 1);
        // A crash between the swap's renames: `last/` gone, `last.old/` complete, staging left.
        std::fs::rename(dir.path().join("last"), dir.path().join("last.old")).unwrap();
        std::fs::create_dir(dir.path().join("last.tmp")).unwrap();
        assert_eq!(run.checkpoint_state(Which::Last).unwrap().step, 1);
        // The next save fails while writing its files: the step-1 checkpoint is still there.
        let failed =
            run.write_checkpoint(Which::Last, |_| Err(TaskError::Config("disk full".into())));
        assert!(failed.is_err());
        assert!(!dir.path().join("last.tmp").exists(), "the failed save left its staging folder");
        assert_eq!(run.verified_checkpoint(Which::Last).unwrap(), dir.path().join("last"));
        assert_eq!(run.checkpoint_state(Which::Last).unwrap().step, 1);
        write(&run, 2, 1);
        assert_eq!(run.checkpoint_state(Which::Last).unwrap().step, 2);
        assert!(!dir.path().join("last.old").exists() && !dir.path().join("last.tmp").exists());
    }

    /// A FIFO made with `mkfifo`, and a thread reading it whole.
    #[cfg(unix)]
    fn fifo_with_reader(path: &Path) -> std::thread::JoinHandle<String> {
        let made = std::process::Command::new("mkfifo").arg(path).status().unwrap();
        assert!(made.success(), "mkfifo failed");
        let path = path.to_path_buf();
        std::thread::spawn(move || std::fs::read_to_string(path).unwrap())
    }

    #[cfg(unix)]
    #[test]
    fn named_outputs_write_through_fifos_and_devices_and_never_replace_links() {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        // A new file: the mode a shell's `>` gives (0666 less the umask), not 0600 or 0777.
        let reference = dir.path().join("reference");
        std::fs::File::create(&reference).unwrap();
        let new = dir.path().join("sub/new.csv");
        check_output(&new, false).unwrap();
        write_output(&new, b"a\n").unwrap();
        assert_eq!(std::fs::read(&new).unwrap(), b"a\n");
        assert_eq!(mode(&new), mode(&reference));
        // An existing file: only with force.
        let error = check_output(&new, false).unwrap_err().to_string();
        assert!(error.contains("new.csv") && error.contains("--force"), "{error}");
        check_output(&new, true).unwrap();
        check_output(Path::new("-"), false).unwrap();
        let error = check_output(dir.path(), true).unwrap_err().to_string();
        assert!(error.contains("is a folder"), "{error}");
        // A symbolic link, to a file or to nothing, is refused, with or without force.
        for (name, target) in [("link.csv", new.clone()), ("dangling.csv", dir.path().join("no"))] {
            let link = dir.path().join(name);
            std::os::unix::fs::symlink(&target, &link).unwrap();
            for error in [
                check_output(&link, true).unwrap_err(),
                write_output(&link, b"b\n").unwrap_err(),
                write_atomic(&link, b"b\n").unwrap_err(),
            ] {
                let error = error.to_string();
                assert!(error.contains(name) && error.contains("symbolic link"), "{error}");
            }
            assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        }
        assert_eq!(std::fs::read(&new).unwrap(), b"a\n");
        // A FIFO is written to, and stays a FIFO.
        let fifo = dir.path().join("fifo.csv");
        let reader = fifo_with_reader(&fifo);
        check_output(&fifo, false).unwrap();
        write_output(&fifo, b"through\n").unwrap();
        assert_eq!(reader.join().unwrap(), "through\n");
        assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
        // A run folder's own files are never FIFOs.
        let error = write_atomic(&fifo, b"x").unwrap_err().to_string();
        assert!(error.contains("not a regular file"), "{error}");
        // A device that fails the write (ENOSPC) fails the command, and stays a device.
        let full = Path::new("/dev/full");
        if std::fs::metadata(full).is_ok_and(|m| m.file_type().is_char_device()) {
            let error = write_output(full, b"x").unwrap_err().to_string();
            assert!(error.contains("/dev/full"), "{error}");
            assert!(std::fs::metadata(full).unwrap().file_type().is_char_device());
        }
    }

    #[test]
    fn a_second_lock_on_a_run_folder_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        let held = run.lock().unwrap();
        let error = run.lock().unwrap_err().to_string();
        assert!(
            error.contains(&dir.path().display().to_string())
                && error.contains("another papertune command"),
            "{error}"
        );
        drop(held);
        let _again = run.lock().unwrap();
        let error = RunDir::new(dir.path().join("none")).lock().unwrap_err().to_string();
        assert!(error.contains("no such run folder"), "{error}");
    }

    #[test]
    fn fold_names_outside_the_k_fold_folder_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FOLDS_FILE), r#"["fold-1", "fold-2"]"#).unwrap();
        let runs = expand_runs(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(runs, vec![dir.path().join("fold-1"), dir.path().join("fold-2")]);
        for name in ["../elsewhere", "/etc", "a/b"] {
            std::fs::write(dir.path().join(FOLDS_FILE), format!(r#"["{name}"]"#)).unwrap();
            let error = expand_runs(&[dir.path().to_path_buf()]).unwrap_err().to_string();
            assert!(error.contains(FOLDS_FILE) && error.contains(name), "{error}");
        }
    }

    #[test]
    fn sealed_checkpoints_detect_damaged_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        write(&run, 5, 1);
        let last = run.verified_checkpoint(Which::Last).unwrap();
        let state: CheckpointState = read_json(&last.join(STATE_FILE)).unwrap();
        assert_eq!(state.files.keys().collect::<Vec<_>>(), vec!["weights.bin"]);
        std::fs::write(last.join("weights.bin"), b"garbage").unwrap();
        let error = run.verified_checkpoint(Which::Last).unwrap_err().to_string();
        assert!(error.contains("weights.bin") && error.contains("damaged"), "{error}");
        std::fs::remove_file(last.join("weights.bin")).unwrap();
        let error = run.verified_checkpoint(Which::Last).unwrap_err().to_string();
        assert!(error.contains("weights.bin") && error.contains("missing"), "{error}");
    }
}
