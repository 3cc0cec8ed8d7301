//! AFL++ target: a GGUF file read as `generate` reads one (papertune_models::fuzz_targets::gguf).

fn main() {
    afl::fuzz!(|bytes: &[u8]| papertune_models::fuzz_targets::gguf(bytes));
}
