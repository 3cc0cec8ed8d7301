//! Times one decoding step's quantised products alone: every linear layer of a decoder plus
//! its tied head, each `y = x Wᵀ` for one row of `x`, with the weights in their GGUF blocks.
//! This is the part of a generated token that reads the weights; the rest of the step
//! (attention, norms) is not in it.
//!
//! ```sh
//! cargo run --example quant_gemv -p papertune-kernels -- smollm2 q4_1 q8_0
//! cargo run --example quant_gemv -p papertune-kernels -- gemma3 q4_k_m q8_0
//! RAYON_NUM_THREADS=1 cargo run --example quant_gemv -p papertune-kernels -- smollm2 q4_1 q8_0
//! ```
//!
//! Arguments: the shapes (`smollm2` or `gemma3`), the type of the layers' weights (or
//! `q4_k_m`, Gemma 3's mix of types) and the type of the head. The blocks are random but well formed (finite scales), so the figures are the
//! kernels' speed, not the models' numbers. Prints the median time per step over 40 steps and
//! the bytes of weights read per second.

use std::time::Instant;

use papertune_kernels::quant::{QuantMatrix, QuantType, matmul_xwt};

/// `(rows, cols)` of one layer's seven projections, the layer count and the head.
struct Shapes {
    layer: Vec<(usize, usize)>,
    layers: usize,
    head: (usize, usize),
}

fn shapes(name: &str) -> Shapes {
    match name {
        // hidden 576, 9 heads / 3 kv heads of 64, intermediate 1536, 30 layers, vocab 49152
        "smollm2" => Shapes {
            layer: vec![
                (576, 576),
                (192, 576),
                (192, 576),
                (576, 576),
                (1536, 576),
                (1536, 576),
                (576, 1536),
            ],
            layers: 30,
            head: (49152, 576),
        },
        // hidden 640, 4 heads / 1 kv head of 256, intermediate 2048, 18 layers, vocab 262144
        "gemma3" => Shapes {
            layer: vec![
                (1024, 640),
                (256, 640),
                (256, 640),
                (640, 1024),
                (2048, 640),
                (2048, 640),
                (640, 2048),
            ],
            layers: 18,
            head: (262144, 640),
        },
        other => panic!("unknown shapes {other:?}: smollm2 or gemma3"),
    }
}

fn quant_type(name: &str) -> QuantType {
    QuantType::ALL
        .into_iter()
        .find(|t| t.name().eq_ignore_ascii_case(name))
        .unwrap_or_else(|| panic!("unknown type {name:?}"))
}

/// Random block bytes with every 16-bit field that can hold a scale set to a small finite
/// `f16` (the quants themselves random).
fn random_matrix(ty: QuantType, rows: usize, cols: usize, seed: &mut u64) -> QuantMatrix {
    let row_bytes = ty.row_bytes(cols).expect("whole blocks");
    let mut next = || {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    };
    let mut bytes: Vec<u8> = (0..rows * row_bytes).map(|_| next() as u8).collect();
    // 0x1c00 is 2^-8 as f16: finite and small wherever a scale happens to sit.
    let scale = half::f16::from_f32(1.0 / 256.0).to_le_bytes();
    for block in bytes.chunks_exact_mut(ty.block_bytes()) {
        let fields: &[usize] = match ty {
            QuantType::Q2K => &[80, 82],
            QuantType::Q3K => &[108],
            QuantType::Q6K => &[208],
            QuantType::Q4_1 | QuantType::Q5_1 | QuantType::Q4K | QuantType::Q5K => &[0, 2],
            _ => &[0],
        };
        for &at in fields {
            block[at..at + 2].copy_from_slice(&scale);
        }
    }
    QuantMatrix::new(ty, rows, cols, bytes).expect("consistent sizes")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let shapes = shapes(args.first().map_or("smollm2", String::as_str));
    let layer_arg = args.get(1).map_or("q4_1", String::as_str);
    let head_type = quant_type(args.get(2).map_or("q8_0", String::as_str));
    let mut seed = 0x9e37_79b9_7f4a_7c15;
    let mut weights: Vec<QuantMatrix> = Vec::new();
    for layer in 0..shapes.layers {
        for (i, &(rows, cols)) in shapes.layer.iter().enumerate() {
            let ty = match layer_arg {
                // Gemma 3 270M's Q4_K_M file: q, k, gate, up in Q5_0, the output projection in
                // Q4_K, v in Q8_0 and down in Q6_K on every other layer (Q5_0 and Q4_K between).
                "q4_k_m" => match (i, layer % 2) {
                    (3, _) => QuantType::Q4K,
                    (2, 0) => QuantType::Q8_0,
                    (6, 0) => QuantType::Q6K,
                    (6, _) => QuantType::Q4K,
                    _ => QuantType::Q5_0,
                },
                name => quant_type(name),
            };
            weights.push(random_matrix(ty, rows, cols, &mut seed));
        }
    }
    let head = random_matrix(head_type, shapes.head.0, shapes.head.1, &mut seed);
    let bytes: usize = weights.iter().map(|w| w.bytes.len()).sum::<usize>() + head.bytes.len();
    let widest = weights.iter().chain([&head]).map(|w| w.rows.max(w.cols)).max().unwrap_or(0);
    let x: Vec<f32> = (0..widest).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
    let mut y = vec![0.0f32; widest];
    let mut step = || {
        let start = Instant::now();
        for w in weights.iter().chain([&head]) {
            matmul_xwt(&x[..w.cols], 1, w, &mut y[..w.rows]);
        }
        start.elapsed().as_secs_f64()
    };
    // Inside the pool, as generation runs: each product's tasks go to workers that are awake.
    let pool = rayon::ThreadPoolBuilder::new().build().expect("a thread pool");
    let mut times: Vec<f64> = pool.install(|| {
        step();
        (0..40).map(|_| step()).collect()
    });
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{} layers {} + head {}: {:.1} MB of blocks, {} threads: {:.2} ms per step (min {:.2}), {:.1} GB/s",
        args.first().map_or("smollm2", String::as_str),
        layer_arg,
        head_type.name(),
        bytes as f64 / 1e6,
        pool.current_num_threads(),
        median * 1e3,
        times[0] * 1e3,
        bytes as f64 / median / 1e9
    );
}
