//! TensorBoard event files (`train.log_to = ["tensorboard"]`): the trainer's events as scalars,
//! beside `metrics.jsonl`, for `tensorboard --logdir`.
//!
//! A file is a sequence of TFRecords, each `u64` length (little-endian), the masked CRC-32C of
//! those 8 bytes, the bytes of one protobuf `Event`, and the masked CRC-32C of those bytes. The
//! first event names the format (`file_version: "brain.Event:2"`); each later one holds the
//! scalars of one trainer event at its step (`train/loss`, `train/lr`, `train/grad_norm`,
//! `train/examples_per_second`, `eval/<metric>`). Every session of a run writes a file of its
//! own; a resumed session starts with a `SessionLog` START at the step after its checkpoint, which
//! tells TensorBoard to drop what the interrupted session wrote past the checkpoint. As with
//! `metrics.jsonl`, a resumed session's file is written once its first checkpoint is saved
//! ([`TensorBoardLog::commit`]): a resume that fails before leaves the folder as it was.
//!
//! Crates: `prost` derives the three messages (and `SessionLog`) from annotated structs, so
//! there is no `.proto` file, build script or `protoc`; it is the maintained protobuf crate of
//! the Rust ecosystem (the tokio project's). `crc32c` computes CRC-32C (Castagnoli) with the
//! SSE 4.2 / ARMv8 instructions where present, a small crate with no dependencies of its own.
//! Both were already in Cargo.lock. (`tensorboard-rs` is unmaintained and brings an old protobuf
//! and image crate.)

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

use super::TrainEvent;
use crate::error::{TrainError, io_error};

/// `tensorflow.Event` (the fields papertune writes).
#[derive(Clone, PartialEq, Message)]
pub(crate) struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(oneof = "What", tags = "3, 5, 6")]
    pub what: Option<What>,
}

/// The `what` of an [`Event`]: one of these.
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum What {
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
    #[prost(message, tag = "6")]
    SessionLog(SessionLog),
}

/// `tensorflow.Summary`: tagged values.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value` with a scalar. `simple_value` is one of a oneof, so it is written
/// even when it is 0 (a plain proto3 field would leave a zero out, and the value with it).
#[derive(Clone, PartialEq, Message)]
pub(crate) struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(oneof = "Scalar", tags = "2")]
    pub value: Option<Scalar>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum Scalar {
    #[prost(float, tag = "2")]
    SimpleValue(f32),
}

/// `tensorflow.SessionLog`; `status` 1 is START.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct SessionLog {
    #[prost(int32, tag = "1")]
    pub status: i32,
}

const SESSION_START: i32 = 1;

/// The masked CRC-32C of TFRecord framing.
pub(crate) fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord around `payload`.
fn record(payload: &[u8]) -> Vec<u8> {
    let length = (payload.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(payload.len() + 16);
    out.extend_from_slice(&length);
    out.extend_from_slice(&masked_crc(&length).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&masked_crc(payload).to_le_bytes());
    out
}

/// The scalars of a trainer event, with their step; none for the events that carry no figures.
fn scalars(event: &TrainEvent<'_>) -> Option<(usize, Vec<(String, f64)>)> {
    match event {
        TrainEvent::Train { step, loss, lr, grad_norm, examples_per_second, .. } => {
            let mut values = vec![("train/loss".to_owned(), *loss), ("train/lr".to_owned(), *lr)];
            if let Some(norm) = grad_norm {
                values.push(("train/grad_norm".to_owned(), *norm));
            }
            values.push(("train/examples_per_second".to_owned(), *examples_per_second));
            Some((*step, values))
        }
        TrainEvent::Eval { step, metrics, .. } => {
            Some((*step, metrics.iter().map(|(k, v)| (format!("eval/{k}"), *v)).collect()))
        }
        _ => None,
    }
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// The machine's name for the file name (as TensorFlow's writers put it there).
fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok().or_else(|| std::env::var("COMPUTERNAME").ok()))
        .unwrap_or_default();
    let name: String = name
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    if name.is_empty() { "localhost".to_owned() } else { name }
}

/// One session's event file in a run's `tensorboard/` folder.
pub(super) struct TensorBoardLog {
    dir: PathBuf,
    to: RecordsTo,
}

/// Where the records go.
enum RecordsTo {
    /// The event file.
    File { path: PathBuf, file: File },
    /// Memory: a resumed session's records until its first checkpoint.
    Pending(Vec<u8>),
}

impl TensorBoardLog {
    /// A new event file in `dir` (`events.out.tfevents.<seconds>.<host>.<pid>.<n>`, the first
    /// `n` free) with its version record; for a session resumed at step `resumed_at`, a session
    /// START at the next step, and the records stay in memory until [`TensorBoardLog::commit`].
    pub fn create(dir: &Path, resumed_at: Option<usize>) -> Result<Self, TrainError> {
        let wall_time = now();
        let mut log = Self { dir: dir.to_path_buf(), to: RecordsTo::Pending(Vec::new()) };
        log.append(Event {
            wall_time,
            step: 0,
            what: Some(What::FileVersion("brain.Event:2".into())),
        })?;
        match resumed_at {
            Some(step) => log.append(Event {
                wall_time,
                step: step as i64 + 1,
                what: Some(What::SessionLog(SessionLog { status: SESSION_START })),
            })?,
            None => log.commit()?,
        }
        Ok(log)
    }

    /// Creates the event file of records held in memory and goes on appending to it.
    pub fn commit(&mut self) -> Result<(), TrainError> {
        let RecordsTo::Pending(records) = &self.to else { return Ok(()) };
        std::fs::create_dir_all(&self.dir).map_err(io_error(&self.dir))?;
        let stem =
            format!("events.out.tfevents.{}.{}.{}", now() as u64, host_name(), std::process::id());
        let mut n = 0;
        let (path, mut file) = loop {
            let path = self.dir.join(format!("{stem}.{n}"));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => break (path, file),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => n += 1,
                Err(e) => return Err(io_error(&path)(e)),
            }
        };
        file.write_all(records).and_then(|_| file.flush()).map_err(io_error(&path))?;
        self.to = RecordsTo::File { path, file };
        Ok(())
    }

    /// The event file, once it is written.
    #[cfg(test)]
    pub fn path(&self) -> Option<&Path> {
        match &self.to {
            RecordsTo::File { path, .. } => Some(path),
            RecordsTo::Pending(_) => None,
        }
    }

    /// Writes the scalars of `event`, if it has any.
    pub fn write(&mut self, event: &TrainEvent<'_>) -> Result<(), TrainError> {
        match scalars(event) {
            Some((step, values)) => self.write_scalars(step, &values),
            None => Ok(()),
        }
    }

    /// Writes one event of scalars at `step`.
    pub fn write_scalars(
        &mut self,
        step: usize,
        values: &[(String, f64)],
    ) -> Result<(), TrainError> {
        let value = values
            .iter()
            .map(|(tag, v)| SummaryValue {
                tag: tag.clone(),
                value: Some(Scalar::SimpleValue(*v as f32)),
            })
            .collect();
        self.append(Event {
            wall_time: now(),
            step: step as i64,
            what: Some(What::Summary(Summary { value })),
        })
    }

    /// One record, written whole and flushed, so that a running TensorBoard sees it.
    fn append(&mut self, event: Event) -> Result<(), TrainError> {
        let bytes = record(&event.encode_to_vec());
        match &mut self.to {
            RecordsTo::Pending(records) => {
                records.extend_from_slice(&bytes);
                Ok(())
            }
            RecordsTo::File { path, file } => {
                file.write_all(&bytes).and_then(|_| file.flush()).map_err(io_error(path))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits an event file into its events, checking the framing and both CRCs of each record.
    fn read_events(bytes: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let (header, tail) = rest.split_at(12);
            let length = u64::from_le_bytes(header[..8].try_into().unwrap()) as usize;
            let length_crc = u32::from_le_bytes(header[8..].try_into().unwrap());
            assert_eq!(length_crc, masked_crc(&header[..8]), "length CRC");
            let (payload, tail) = tail.split_at(length);
            let (crc, tail) = tail.split_at(4);
            assert_eq!(
                u32::from_le_bytes(crc.try_into().unwrap()),
                masked_crc(payload),
                "data CRC"
            );
            events.push(Event::decode(payload).unwrap());
            rest = tail;
        }
        events
    }

    fn scalars_of(event: &Event) -> Vec<(String, f32)> {
        let Some(What::Summary(summary)) = &event.what else { panic!("not a summary: {event:?}") };
        summary
            .value
            .iter()
            .map(|v| match v.value {
                Some(Scalar::SimpleValue(x)) => (v.tag.clone(), x),
                None => panic!("no value for {}", v.tag),
            })
            .collect()
    }

    #[test]
    fn masked_crc_matches_tensorflow() {
        // CRC-32C of "123456789" is 0xE3069283 (the check value of the Castagnoli polynomial).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        let crc: u32 = 0xe306_9283;
        assert_eq!(masked_crc(b"123456789"), crc.rotate_right(15).wrapping_add(0xa282_ead8));
    }

    #[test]
    fn scalars_read_back_with_their_tags_steps_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = TensorBoardLog::create(dir.path(), None).unwrap();
        let metrics = crate::Metrics::from([("f1".to_owned(), 0.75), ("loss".to_owned(), 0.5)]);
        log.write(&TrainEvent::Train {
            step: 10,
            epoch: 0,
            loss: 0.69,
            lr: 0.0,
            grad_norm: Some(1.5),
            examples_per_second: 12.0,
        })
        .unwrap();
        log.write(&TrainEvent::Eval {
            step: 10,
            epoch: 0,
            metrics: &metrics,
            best: true,
            seconds: 1.0,
        })
        .unwrap();
        log.write(&TrainEvent::Error { step: 11, message: "ignored".into() }).unwrap();
        let path = log.path().unwrap().to_path_buf();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("events.out.tfevents."), "{name}");

        let events = read_events(&std::fs::read(&path).unwrap());
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(events[0].what, Some(What::FileVersion("brain.Event:2".into())));
        assert!(events[0].wall_time > 1.6e9);
        assert_eq!((events[1].step, events[2].step), (10, 10));
        assert_eq!(
            scalars_of(&events[1]),
            [
                ("train/loss".to_owned(), 0.69),
                ("train/lr".to_owned(), 0.0),
                ("train/grad_norm".to_owned(), 1.5),
                ("train/examples_per_second".to_owned(), 12.0),
            ]
        );
        assert_eq!(
            scalars_of(&events[2]),
            [("eval/f1".to_owned(), 0.75), ("eval/loss".to_owned(), 0.5)]
        );

        // A resumed session: a second file, written once committed (its first checkpoint),
        // starting with a session START after the checkpoint.
        let mut resumed = TensorBoardLog::create(dir.path(), Some(10)).unwrap();
        resumed.write_scalars(12, &[("train/loss".to_owned(), 0.25)]).unwrap();
        assert_eq!((resumed.path(), std::fs::read_dir(dir.path()).unwrap().count()), (None, 1));
        resumed.commit().unwrap();
        let resumed_path = resumed.path().unwrap().to_path_buf();
        assert_ne!(resumed_path, path);
        resumed.write_scalars(14, &[("train/loss".to_owned(), 0.125)]).unwrap();
        let events = read_events(&std::fs::read(&resumed_path).unwrap());
        assert_eq!(events.iter().map(|e| e.step).collect::<Vec<_>>(), [0, 11, 12, 14]);
        assert_eq!(events[1].what, Some(What::SessionLog(SessionLog { status: SESSION_START })));
        assert_eq!(scalars_of(&events[3]), [("train/loss".to_owned(), 0.125)]);
    }
}
