//! Inference in f16: MiniLM and SmolLM2 on the real weights against the f32 references, on flex
//! and on wgpu where the adapter has f16 (see `half_precision/checks.rs`). A process of its own:
//! a device's float type is fixed at its first tensor.

#[path = "half_precision/checks.rs"]
mod checks;

use papertune_models::precision::Precision;

#[test]
fn minilm_in_f16_stays_close_to_f32() {
    checks::minilm_stays_close_to_f32(Precision::F16);
}

#[test]
fn smollm2_in_f16_predicts_the_f32_tokens() {
    checks::smollm2_predicts_the_f32_tokens(Precision::F16);
}
