//! One optimizer step: the step's micro-batches read and batched, forward and backward over
//! each (on several devices at once with data parallelism, or this rank's share of them over
//! several processes), their gradients accumulated (and summed over the ranks), then clipping
//! and the AdamW update.

use std::time::Instant;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::Device;

use super::order::step_seed;
use super::parallel::{MicroBatch, micro_batch_gradients};
use super::{PhaseTimings, TrainModel};
use crate::clip::{clip_grad_norm, clip_grad_value};
use crate::config::TrainConfig;
use crate::distributed::{self, Collective};
use crate::error::TrainError;
use crate::loss::Loss;

/// What a step needs besides the model: the options, the devices, the data and the loss.
pub(super) struct Stepper<'a, I, Bt, L> {
    pub config: &'a TrainConfig,
    /// The trainer's device, which holds the weights and the optimizer state.
    pub device: &'a Device,
    /// Devices that share each step's micro-batches; empty: `device` alone.
    pub workers: &'a [Device],
    /// The ranks of a job over several processes; this one computes its share of each step.
    pub collective: Option<&'a dyn Collective>,
    pub data: &'a dyn Dataset<I>,
    pub batcher: &'a Bt,
    pub loss_fn: &'a L,
}

/// A step's accumulated gradients, before the update.
pub(super) struct StepGradients {
    grads: GradientsParams,
    /// Mean loss of the step's micro-batches.
    pub loss: f32,
    pub examples: usize,
}

impl<I: Send, Bt, L> Stepper<'_, I, Bt, L> {
    /// Forward and backward over the micro-batches of step `step`, which sits at `position` in
    /// its epoch whose order is `order`: `accumulation` batches of `batch_size`, the last step
    /// of an epoch taking what is left.
    pub fn gradients<M, Batch>(
        &self,
        model: &M,
        step: usize,
        position: usize,
        order: &[usize],
        timings: &mut PhaseTimings,
    ) -> Result<StepGradients, TrainError>
    where
        M: TrainModel<Batch>,
        Bt: Batcher<I, Batch>,
        L: Loss<M::Output, M::Target> + Sync,
    {
        let c = self.config;
        let n = self.data.len();
        self.device.seed(step_seed(c.seed, step));
        let accumulation = c.gradient_accumulation_steps;
        let first_batch = position * accumulation;
        let last_batch = (first_batch + accumulation).min(c.batches_per_epoch(n));
        let mut accumulator = GradientsAccumulator::<M>::new();
        let (mut loss, mut examples) = (0.0f32, 0usize);
        let devices = self.workers.len().max(1);
        let batch_indices = |index: usize| {
            let start = index * c.batch_size;
            &order[start..(start + c.batch_size).min(n)]
        };
        examples +=
            (first_batch..last_batch).map(|index| batch_indices(index).len()).sum::<usize>();
        // Over several processes, this rank's micro-batches; else all of them.
        let mine: Vec<usize> = (first_batch..last_batch)
            .filter(|&index| distributed::owns(self.collective, first_batch, index))
            .collect();
        for group in mine.chunks(devices) {
            let started = Instant::now();
            let group = {
                let _span = tracing::debug_span!("data", step = step + 1).entered();
                group
                    .iter()
                    .map(|&index| {
                        let indices = batch_indices(index);
                        let items = indices
                            .iter()
                            .map(|&i| {
                                self.data.get(i).map_err(|e| TrainError::Data {
                                    index: i,
                                    message: e.to_string(),
                                })
                            })
                            .collect::<Result<Vec<I>, _>>()?;
                        Ok(MicroBatch { index, items })
                    })
                    .collect::<Result<Vec<_>, TrainError>>()?
            };
            timings.data += started.elapsed().as_secs_f64();
            let started = Instant::now();
            let _span = tracing::debug_span!("forward_backward", step = step + 1).entered();
            for (grads, micro_loss) in self.group_gradients(model, group, step_seed(c.seed, step)) {
                accumulator.accumulate(model, grads);
                loss += micro_loss;
            }
            timings.forward_backward += started.elapsed().as_secs_f64();
        }
        let mut grads = accumulator.grads();
        if let Some(collective) = self.collective {
            let started = Instant::now();
            let _span = tracing::debug_span!("all_reduce", step = step + 1).entered();
            let mut figures = [loss];
            distributed::sum_gradients(collective, model, &mut grads, &mut figures, self.device)?;
            loss = figures[0];
            timings.all_reduce += started.elapsed().as_secs_f64();
        }
        if accumulation > 1 {
            // The mean micro-batch loss, comparable across accumulation settings.
            loss *= accumulation as f32 / (last_batch - first_batch) as f32;
        }
        Ok(StepGradients { grads, loss, examples })
    }

    /// The gradients of one group of micro-batches: on the trainer's device when it is one,
    /// else on the worker devices at once (see [`super::parallel`]).
    fn group_gradients<M, Batch>(
        &self,
        model: &M,
        mut group: Vec<MicroBatch<I>>,
        seed_of_step: u64,
    ) -> Vec<(GradientsParams, f32)>
    where
        M: TrainModel<Batch>,
        Bt: Batcher<I, Batch>,
        L: Loss<M::Output, M::Target> + Sync,
    {
        let scale = self.config.gradient_accumulation_steps as f64;
        if group.len() == 1 {
            let micro = group.pop().expect("one micro-batch");
            vec![micro_batch_gradients(
                model,
                self.loss_fn,
                self.batcher,
                micro,
                self.device,
                seed_of_step,
                scale,
            )]
        } else {
            super::parallel::gradients_on_workers(
                model,
                self.loss_fn,
                self.batcher,
                group,
                self.workers,
                self.device,
                seed_of_step,
                scale,
            )
        }
    }

    /// Clipping (by value, then by global norm) and the optimizer update at learning rate
    /// `lr`; returns the new weights and the gradients' norm before clipping by norm.
    pub fn apply<M: burn::module::Module>(
        &self,
        model: M,
        optimizer: &mut ModuleOptimizer,
        gradients: StepGradients,
        lr: f64,
        timings: &mut PhaseTimings,
    ) -> (M, Option<f64>) {
        let started = Instant::now();
        let _span = tracing::debug_span!("optimizer_step").entered();
        let mut grads = gradients.grads;
        if let Some(max) = self.config.max_grad_value {
            clip_grad_value(&model, &mut grads, max);
        }
        let norm = self.config.max_grad_norm.map(|max| clip_grad_norm(&model, &mut grads, max));
        let model = optimizer.step(lr, model, grads);
        timings.optimizer += started.elapsed().as_secs_f64();
        (model, norm)
    }
}
