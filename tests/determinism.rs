//! Two runs with the same seed end with bit-identical weights; the weights did move from the
//! pretrained ones, and a run with another seed (another data order and dropout) ends
//! elsewhere, so the equality is not that of two runs that changed nothing. This test has a
//! process of its own: burn's random generator (dropout) is global to the process, so a test
//! running beside it would draw from the same stream.

use burn::tensor::Device;
use papertune_integration::tiny_classify_setup;
use papertune_models::checkpoint::Checkpoint;
use papertune_tasks::run_dir::Which;

#[test]
fn same_seed_gives_bit_identical_weights() {
    let dir = tempfile::tempdir().unwrap();
    let (mut config, _) = tiny_classify_setup(dir.path(), 11, 16);
    config.data.valid_fraction = 0.25;
    config.train.max_steps = Some(5);
    config.train.batch_size = 4;
    config.train.lr = 1e-3;
    config.head.dropout = Some(0.2);

    let device = Device::flex();
    let train = |name: &str, seed: u64| {
        let mut config = config.clone();
        config.train.seed = seed;
        let out = dir.path().join(name);
        papertune_tasks::classify::train(
            &config,
            &out,
            &device,
            &papertune_tasks::TrainOptions::default(),
        )
        .unwrap();
        out
    };
    let digest = |out: &std::path::Path| {
        papertune_tasks::classify::inspect(out, Which::Last).unwrap().weights_digest
    };
    let first = train("run0", 42);
    let second = train("run1", 42);
    let other_seed = train("run2", 7);
    assert_eq!(digest(&first), digest(&second), "same seed, different weights");
    assert_ne!(digest(&first), digest(&other_seed), "another seed gave the same weights");

    // Every tensor the encoder shares with the pretrained checkpoint: at least most of them
    // moved in five steps at lr 1e-3.
    let pretrained = Checkpoint::read(&dir.path().join("tiny-bert/model.safetensors")).unwrap();
    let trained = Checkpoint::read(&first.join("last/model.safetensors")).unwrap();
    let (mut shared, mut moved) = (0, 0);
    for name in pretrained.names() {
        let Some(after) = trained.get(name) else { continue };
        let before = pretrained.get(name).unwrap();
        assert_eq!(before.shape, after.shape, "{name}: shape changed");
        shared += 1;
        if before.data.iter().zip(&after.data).any(|(a, b)| a != b) {
            moved += 1;
        }
    }
    assert!(shared > 0, "the trained checkpoint shares no tensor name with the pretrained one");
    assert!(moved * 2 > shared, "training moved only {moved} of the {shared} pretrained tensors");
}
