//! Structure-aware fuzzing of the readers that take files from outside (tests only): valid
//! seeds (GGUF files with Llama metadata, a tokenizer and tensors of every block type read
//! today; a safetensors checkpoint and a sharded checkpoint's index; BERT and Llama
//! `config.json`) are mutated
//! (bit flips, counts and offsets overwritten with boundary values, truncations, duplicated and
//! inserted runs), and every reader that follows must return `Ok` or `Err`, never panic.
//!
//! `PAPERTUNE_FUZZ_ITERATIONS` sets the mutations per target (default 2,000, a few seconds);
//! `PAPERTUNE_FUZZ_SECONDS` gives each target a time budget instead (for a long campaign);
//! `PAPERTUNE_FUZZ_SEED` the first seed. A failing input is written to the system's temporary
//! folder and named in the panic message, so that it can join the seeds once fixed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use papertune_kernels::random::{GOLDEN_GAMMA, mix};

use crate::bert::BertConfig;
use crate::checkpoint::{Checkpoint, HostTensor};
use crate::fuzz_targets::{self, ramp};
use crate::llama::LlamaConfig;

/// Values that break size arithmetic, written over counts, lengths and offsets.
const BOUNDARY: [u64; 12] = [
    0,
    1,
    2,
    7,
    255,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1 << 32,
    1 << 40,
    i64::MAX as u64,
    u64::MAX,
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN_GAMMA);
        mix(self.0)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One to four mutations of `seed`.
fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        if bytes.is_empty() {
            bytes.push(rng.next() as u8);
            continue;
        }
        let at = rng.below(bytes.len());
        match rng.below(6) {
            0 => bytes[at] ^= 1 << rng.below(8),
            1 => bytes[at] = rng.next() as u8,
            // A little-endian u32 or u64 (GGUF's counts, lengths, types and offsets) overwritten.
            2 | 3 => {
                let value = BOUNDARY[rng.below(BOUNDARY.len())].to_le_bytes();
                let width = if rng.below(2) == 0 { 4 } else { 8 };
                let end = (at + width).min(bytes.len());
                bytes[at..end].copy_from_slice(&value[..end - at]);
            }
            4 => bytes.truncate(at),
            _ => {
                let len = 1 + rng.below(64).min(bytes.len() - at);
                let run: Vec<u8> = bytes[at..at + len.min(bytes.len() - at)].to_vec();
                let to = rng.below(bytes.len());
                bytes.splice(to..to, run);
            }
        }
    }
    bytes
}

/// How long a campaign runs: `PAPERTUNE_FUZZ_ITERATIONS` mutations (default 2,000, or no limit
/// when a time budget is set) and at most `PAPERTUNE_FUZZ_SECONDS` seconds.
fn budget() -> (usize, Option<std::time::Duration>) {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let seconds = var("PAPERTUNE_FUZZ_SECONDS").map(std::time::Duration::from_secs);
    let default = if seconds.is_some() { usize::MAX } else { 2_000 };
    (var("PAPERTUNE_FUZZ_ITERATIONS").map_or(default, |n| n as usize), seconds)
}

/// Runs `target` on `budget()` mutations of the seeds; panics, naming a saved copy of the
/// input, if `target` panics.
fn campaign(name: &str, seeds: &[Vec<u8>], target: impl Fn(&[u8])) {
    let first = std::env::var("PAPERTUNE_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let mut rng = Rng(first);
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let (limit, seconds) = budget();
    let mut failure = None;
    let started = std::time::Instant::now();
    let mut n = 0;
    for i in 0..limit {
        if i % 1024 == 0 && seconds.is_some_and(|s| started.elapsed() >= s) {
            break;
        }
        n = i + 1;
        if i > 0 && i % 1_000_000 == 0 {
            eprintln!(
                "{name}: {i} mutated inputs in {:.0} s, no panic so far",
                started.elapsed().as_secs_f64()
            );
        }
        let input = mutate(&seeds[i % seeds.len()], &mut rng);
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| target(&input))) {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
            let saved = std::env::temp_dir().join(format!("papertune-fuzz-{name}-{i}.bin"));
            let _ = std::fs::write(&saved, &input);
            failure = Some(format!(
                "{name}: input {i} (saved as {}) panicked: {}",
                saved.display(),
                message.unwrap_or_default()
            ));
            break;
        }
    }
    std::panic::set_hook(quiet);
    if let Some(failure) = failure {
        panic!("{failure}");
    }
    eprintln!(
        "{name}: {n} mutated inputs from {} seeds in {:.0} s, no panic",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn gguf_readers_never_panic_on_mutated_files() {
    campaign("gguf", &fuzz_targets::gguf_seeds(), fuzz_targets::gguf);
}

#[test]
fn safetensors_reader_never_panics_on_mutated_files() {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("model.safetensors");
    let tensors = [("a.weight", vec![3, 4]), ("a.bias", vec![4]), ("b", vec![2, 2, 2])]
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            (name.to_owned(), HostTensor::new(shape, ramp(n)))
        })
        .collect();
    Checkpoint::from_tensors("seed", tensors).write(&path, None).unwrap();
    let seed = std::fs::read(&path).unwrap();
    campaign("safetensors", &[seed], |bytes| {
        std::fs::write(&path, bytes).unwrap();
        if let Ok(mut checkpoint) = Checkpoint::read(&path) {
            let _ = checkpoint.take("a.weight", &[3, 4]);
            let _ = checkpoint.take("b", &[8]);
        }
    });
}

#[test]
fn safetensors_index_never_panics_when_mutated() {
    let dir = tempfile::tempdir().unwrap();
    for (name, tensor) in [("s1.safetensors", "x"), ("s2.safetensors", "y")] {
        let tensors =
            [(tensor.to_owned(), HostTensor::new(vec![2], vec![1.0, 2.0]))].into_iter().collect();
        Checkpoint::from_tensors(name, tensors).write(&dir.path().join(name), None).unwrap();
    }
    let index = dir.path().join("model.safetensors.index.json");
    let seed = br#"{"metadata":{"total_size":16},"weight_map":{"x":"s1.safetensors","y":"s2.safetensors"}}"#.to_vec();
    campaign("safetensors-index", &[seed], |bytes| {
        std::fs::write(&index, bytes).unwrap();
        let _ = Checkpoint::read(&index);
    });
}

#[test]
fn config_readers_never_panic_on_mutated_json() {
    let bert = serde_json::to_vec(&BertConfig::tiny(30)).unwrap();
    let llama = LlamaConfig::tiny().to_hf_json().to_string().into_bytes();
    campaign("config.json", &[bert, llama], |bytes| {
        let Ok(text) = std::str::from_utf8(bytes) else { return };
        if let Ok(config) = serde_json::from_str::<BertConfig>(text)
            && config.validate().is_ok()
        {
            let _ = config.max_sequence_len();
        }
        let _ = LlamaConfig::from_json(Path::new("config.json"), text);
    });
}
