//! Two runs with the same seed end with bit-identical weights. This test has a process of its
//! own: burn's random generator (dropout) is global to the process, so a test running beside it
//! would draw from the same stream.

use burn::tensor::Device;
use papertune_integration::tiny_classify_setup;
use papertune_tasks::run_dir::Which;

#[test]
fn same_seed_gives_bit_identical_weights() {
    let dir = tempfile::tempdir().unwrap();
    let (mut config, _) = tiny_classify_setup(dir.path(), 11, 16);
    config.data.valid_fraction = 0.25;
    config.train.max_steps = Some(5);
    config.train.batch_size = 4;
    config.train.lr = 1e-3;

    let device = Device::flex();
    let digests: Vec<String> = (0..2)
        .map(|i| {
            let out = dir.path().join(format!("run{i}"));
            papertune_tasks::classify::train(
                &config,
                &out,
                &device,
                &papertune_tasks::TrainOptions::default(),
            )
            .unwrap();
            papertune_tasks::classify::inspect(&out, Which::Last).unwrap().weights_digest
        })
        .collect();
    assert_eq!(digests[0], digests[1]);
}
