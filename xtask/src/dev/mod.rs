//! Commands for papertune's own development: benchmarks, the GPU check, and the data set it
//! builds for its main job.

pub mod bench;
pub mod dataset;
pub mod gpu_check;
mod medline;
