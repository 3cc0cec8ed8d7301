//! Forward and backward over micro-batches, and data parallelism on one machine: a step's
//! micro-batches computed at the same time on several devices, one thread each on a forked copy
//! of the model, their gradients brought back to the trainer's device in micro-batch order.
//!
//! Each micro-batch restarts papertune's dropout stream in the thread that runs it, from a seed
//! of (run seed, step, micro-batch), so the masks, and so the update, do not depend on how many
//! devices share a step or on thread timing.

use burn::data::dataloader::batcher::Batcher;
use burn::optim::GradientsParams;
use burn::tensor::Device;

use super::TrainModel;
use super::order::micro_batch_seed;
use crate::loss::Loss;

/// One micro-batch of a step: its index in the epoch and its items.
pub(super) struct MicroBatch<I> {
    pub index: usize,
    pub items: Vec<I>,
}

/// Forward and backward over one micro-batch on `device`: its gradients and its loss, both
/// divided by `accumulation` (the number of micro-batches whose gradients make one step).
pub(super) fn micro_batch_gradients<M, I, Batch, L, Bt>(
    model: &M,
    loss_fn: &L,
    batcher: &Bt,
    micro: MicroBatch<I>,
    device: &Device,
    seed_of_step: u64,
    accumulation: f64,
) -> (GradientsParams, f32)
where
    M: TrainModel<Batch>,
    L: Loss<M::Output, M::Target>,
    Bt: Batcher<I, Batch>,
{
    papertune_kernels::dropout::seed_thread(micro_batch_seed(seed_of_step, micro.index));
    let (output, target) = model.forward_train(batcher.batch(micro.items, device));
    let mut loss = loss_fn.forward(output, target);
    if accumulation > 1.0 {
        loss = loss.div_scalar(accumulation);
    }
    let grads = GradientsParams::from_grads(loss.backward(), model);
    (grads, loss.into_scalar::<f32>())
}

/// [`micro_batch_gradients`] of each micro-batch of `group` on its own device of `workers`,
/// in threads; the gradients come back on `main_device`, in the group's order.
#[allow(clippy::too_many_arguments)]
pub(super) fn gradients_on_workers<M, I, Batch, L, Bt>(
    model: &M,
    loss_fn: &L,
    batcher: &Bt,
    group: Vec<MicroBatch<I>>,
    workers: &[Device],
    main_device: &Device,
    seed_of_step: u64,
    accumulation: f64,
) -> Vec<(GradientsParams, f32)>
where
    M: TrainModel<Batch>,
    L: Loss<M::Output, M::Target> + Sync,
    Bt: Batcher<I, Batch>,
    I: Send,
{
    std::thread::scope(|scope| {
        let handles: Vec<_> = group
            .into_iter()
            .zip(workers)
            .map(|(micro, device)| {
                let worker = model.clone().fork(device);
                scope.spawn(move || {
                    let (grads, loss) = micro_batch_gradients(
                        &worker,
                        loss_fn,
                        batcher,
                        micro,
                        device,
                        seed_of_step,
                        accumulation,
                    );
                    (grads.to_device(main_device, &worker), loss)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    })
}
