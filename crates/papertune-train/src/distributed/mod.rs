//! Data parallelism across processes: one rank per process, each computing its share of every
//! step's micro-batches, their gradients summed by an all-reduce, and the same update applied
//! on every rank.
//!
//! The trainer needs four collective operations, the [`Collective`] trait; the `mpi` feature
//! implements it on MPI ([`MpiWorld`], launched by `mpirun` or Slurm's `srun`). This module holds
//! what the trainer does with them: the gradients of the trainable parameters packed into one
//! buffer per step, rank 0's evaluation handed to every rank, agreement on a checkpoint, a
//! digest of the weights compared across ranks, and one stop decision for all.

#[cfg(feature = "mpi")]
mod mpi;

#[cfg(feature = "mpi")]
pub use mpi::MpiWorld;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, FloatDType, Tensor, TensorData};
use papertune_kernels::random::mix;

use crate::error::TrainError;
use crate::metrics::Metrics;

/// The processes of a data-parallel run and the collective operations the trainer uses. Every
/// rank calls the same operations in the same order; an implementation that cannot complete
/// one (a rank died or hangs) ends the job with an error naming the operation, never waits
/// forever.
pub trait Collective: Send + Sync {
    /// This process's rank, `0..size()`; rank 0 writes the run folder.
    fn rank(&self) -> usize;
    /// How many ranks take part.
    fn size(&self) -> usize;
    /// Sums `values` element-wise over all ranks; every rank gets the sums in place.
    fn sum(&self, values: &mut [f32], what: &str) -> Result<(), TrainError>;
    /// Rank 0's `bytes` on every rank (the others' are ignored).
    fn broadcast(&self, bytes: Vec<u8>, what: &str) -> Result<Vec<u8>, TrainError>;
    /// Every rank's `value`, in rank order.
    fn gather(&self, value: u64, what: &str) -> Result<Vec<u64>, TrainError>;
}

impl std::fmt::Debug for dyn Collective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rank {} of {}", self.rank(), self.size())
    }
}

/// The rank of a trainer without collective: the only one.
pub(crate) fn is_leader(collective: Option<&dyn Collective>) -> bool {
    collective.is_none_or(|c| c.rank() == 0)
}

/// Whether micro-batch `index` of a step whose micro-batches start at `first` is this rank's:
/// the rule of data parallelism over devices, micro-batch `j` of the step to worker `j % N`.
pub(crate) fn owns(collective: Option<&dyn Collective>, first: usize, index: usize) -> bool {
    collective.is_none_or(|c| (index - first) % c.size() == c.rank())
}

/// A trainable parameter's id and shape.
struct ParamShape {
    id: burn::module::ParamId,
    dims: Vec<usize>,
}

/// The trainable float parameters of a module, in visiting order (the same on every rank):
/// their shapes, and with `with_values` their values as f32.
struct Trainable {
    with_values: bool,
    shapes: Vec<ParamShape>,
    values: Vec<TensorData>,
}

impl Trainable {
    fn of<M: Module>(module: &M, with_values: bool) -> Self {
        let mut visitor = Self { with_values, shapes: Vec::new(), values: Vec::new() };
        module.visit(&mut visitor);
        visitor
    }
}

impl ModuleVisitor for Trainable {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        if value.is_require_grad() {
            self.shapes.push(ParamShape { id: param.id, dims: value.dims().to_vec() });
            if self.with_values {
                self.values.push(value.cast(FloatDType::F32).into_data());
            }
        }
    }
}

/// Sums the gradients of `model`'s trainable parameters over all ranks, with `extra` figures
/// (the step's loss) in the same all-reduce: one buffer of `1 + numel` floats per parameter
/// (a presence flag, then the values), so a parameter that got no gradient on any rank stays
/// without one, as on one process.
pub(crate) fn sum_gradients<M: Module>(
    collective: &dyn Collective,
    model: &M,
    grads: &mut GradientsParams,
    extra: &mut [f32],
    device: &Device,
) -> Result<(), TrainError> {
    let shapes = Trainable::of(model, false).shapes;
    let mut buffer = Vec::new();
    for shape in &shapes {
        let numel: usize = shape.dims.iter().product();
        match take_flat(grads, shape) {
            Some(values) => {
                buffer.push(1.0);
                buffer.extend_from_slice(values.as_slice::<f32>().expect("cast to f32"));
            }
            None => {
                buffer.push(0.0);
                buffer.resize(buffer.len() + numel, 0.0);
            }
        }
    }
    buffer.extend_from_slice(extra);
    collective.sum(&mut buffer, "gradient all-reduce")?;
    // Gradients live on the backend under autodiff.
    let device = device.clone().inner();
    let mut at = 0;
    for shape in &shapes {
        let numel: usize = shape.dims.iter().product();
        let present = buffer[at] > 0.0;
        let values = &buffer[at + 1..at + 1 + numel];
        at += 1 + numel;
        if present {
            register(grads, shape, values, &device);
        }
    }
    extra.copy_from_slice(&buffer[at..]);
    Ok(())
}

/// Removes the gradient of one parameter from `grads`, as f32 values.
fn take_flat(grads: &mut GradientsParams, shape: &ParamShape) -> Option<TensorData> {
    macro_rules! take {
        ($($d:literal),*) => {
            match shape.dims.len() {
                $($d => grads.remove::<$d>(shape.id).map(|g| g.cast(FloatDType::F32).into_data()),)*
                rank => unreachable!("parameters have 1 to 6 dimensions, not {rank}"),
            }
        };
    }
    take!(1, 2, 3, 4, 5, 6)
}

/// Puts the summed gradient of one parameter back into `grads`, on `device`.
fn register(grads: &mut GradientsParams, shape: &ParamShape, values: &[f32], device: &Device) {
    let data = TensorData::new(values.to_vec(), shape.dims.clone());
    macro_rules! put {
        ($($d:literal),*) => {
            match shape.dims.len() {
                $($d => grads.register::<$d>(shape.id, Tensor::<$d>::from_data(data, device)),)*
                rank => unreachable!("parameters have 1 to 6 dimensions, not {rank}"),
            }
        };
    }
    put!(1, 2, 3, 4, 5, 6);
}

/// A digest of the trainable weights (SplitMix64 over their bits), to compare replicas.
pub(crate) fn weights_digest<M: Module>(model: &M) -> u64 {
    let mut digest = 0u64;
    for data in Trainable::of(model, true).values {
        for value in data.as_slice::<f32>().expect("cast to f32") {
            digest = mix(digest ^ u64::from(value.to_bits()));
        }
    }
    digest
}

/// Checks that every rank holds the same trainable weights after step `step`; an error names
/// the ranks that differ from rank 0.
pub(crate) fn check_replicas<M: Module>(
    collective: &dyn Collective,
    model: &M,
    step: usize,
) -> Result<(), TrainError> {
    let digests = collective.gather(weights_digest(model), "weights digest")?;
    let differing: Vec<String> = digests
        .iter()
        .enumerate()
        .filter(|(_, d)| **d != digests[0])
        .map(|(rank, d)| format!("rank {rank} {d:016x}"))
        .collect();
    if differing.is_empty() {
        return Ok(());
    }
    Err(TrainError::Distributed(format!(
        "the replicas' weights differ after step {step}: rank 0 {:016x}, {}; the ranks must run the same build, data and config",
        digests[0],
        differing.join(", ")
    )))
}

/// Rank 0's evaluation on every rank: rank 0 runs `evaluate` and sends its metrics (or its
/// error); the other ranks wait for them, so that every rank takes the same best/early-stopping
/// decisions.
pub(crate) fn shared_evaluation(
    collective: &dyn Collective,
    evaluate: impl FnOnce() -> Result<Metrics, TrainError>,
) -> Result<Metrics, TrainError> {
    // The values travel as their bits: JSON has no NaN.
    let mine = if collective.rank() == 0 {
        evaluate().map_err(|e| e.to_string())
    } else {
        Ok(Metrics::new())
    };
    let mine: Result<Vec<(String, u64)>, String> =
        mine.map(|m| m.into_iter().map(|(k, v)| (k, v.to_bits())).collect());
    let bytes = serde_json::to_vec(&mine).expect("metrics serialise");
    let shared: Result<Vec<(String, u64)>, String> =
        serde_json::from_slice(&collective.broadcast(bytes, "evaluation results")?).map_err(
            |e| TrainError::Distributed(format!("rank 0's evaluation results are unreadable: {e}")),
        )?;
    let shared = shared
        .map(|m| m.into_iter().map(|(k, bits)| (k, f64::from_bits(bits))).collect::<Metrics>());
    shared.map_err(|message| {
        if collective.rank() == 0 {
            TrainError::Hook(message)
        } else {
            TrainError::Distributed(format!("rank 0's evaluation failed: {message}"))
        }
    })
}

/// Rank 0's checkpoint outcome on every rank, so that a checkpoint counts as written only once
/// all ranks know it is, and a failed one ends every rank.
pub(crate) fn agree_on_checkpoint(
    collective: &dyn Collective,
    saved: Result<(), TrainError>,
    step: usize,
) -> Result<(), TrainError> {
    let mut failed = [if saved.is_err() { 1.0 } else { 0.0 }];
    collective.sum(&mut failed, "checkpoint barrier")?;
    saved?;
    if failed[0] > 0.0 {
        return Err(TrainError::Distributed(format!(
            "rank 0 could not write the checkpoint of step {step}; see its error"
        )));
    }
    Ok(())
}

/// Whether any rank was asked to stop: one decision for all, so that every rank stops after
/// the same step.
pub(crate) fn any_rank_stops(collective: &dyn Collective, mine: bool) -> Result<bool, TrainError> {
    let mut flag = [if mine { 1.0 } else { 0.0 }];
    collective.sum(&mut flag, "stop agreement")?;
    Ok(flag[0] > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};

    /// A job of `size` ranks seen from `rank`, whose sums multiply by the rank count (as if
    /// every rank held the same values).
    struct Uniform {
        rank: usize,
        size: usize,
    }

    impl Collective for Uniform {
        fn rank(&self) -> usize {
            self.rank
        }
        fn size(&self) -> usize {
            self.size
        }
        fn sum(&self, values: &mut [f32], _: &str) -> Result<(), TrainError> {
            values.iter_mut().for_each(|v| *v *= self.size as f32);
            Ok(())
        }
        fn broadcast(&self, bytes: Vec<u8>, _: &str) -> Result<Vec<u8>, TrainError> {
            Ok(bytes)
        }
        fn gather(&self, value: u64, _: &str) -> Result<Vec<u64>, TrainError> {
            Ok(vec![value; self.size])
        }
    }

    #[test]
    fn micro_batches_go_round_robin_from_the_steps_first() {
        let two = Uniform { rank: 1, size: 2 };
        let mine: Vec<usize> = (6..11).filter(|&i| owns(Some(&two), 6, i)).collect();
        assert_eq!(mine, [7, 9]);
        assert!((6..11).all(|i| owns(None, 6, i)));
    }

    #[test]
    fn gradients_come_back_summed_in_place_and_absent_ones_stay_absent() {
        let device = Device::flex().autodiff();
        let model: Linear = LinearConfig::new(3, 2).init(&device);
        let input = Tensor::<2>::from_data([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]], &device);
        let grads = GradientsParams::from_grads(model.forward(input).sum().backward(), &model);
        let weight = |g: &GradientsParams| {
            g.get::<2>(model.weight.id).unwrap().into_data().try_to_vec::<f32>().unwrap()
        };
        let before = weight(&grads);
        // The bias gets no gradient on this rank (as on a rank without micro-batches).
        let mut grads = grads;
        let bias = model.bias.as_ref().unwrap().id;
        grads.remove::<1>(bias);
        let mut extra = [0.25f32];
        sum_gradients(&Uniform { rank: 0, size: 2 }, &model, &mut grads, &mut extra, &device)
            .unwrap();
        let after = weight(&grads);
        assert_eq!(after, before.iter().map(|g| g * 2.0).collect::<Vec<_>>());
        assert!(grads.get::<1>(bias).is_none(), "a gradient absent on every rank appeared");
        assert_eq!(extra, [0.5]);
    }

    #[test]
    fn evaluation_results_reach_every_rank_bit_for_bit() {
        let metrics = Metrics::from([("f1".to_owned(), 0.1 + 0.2), ("loss".to_owned(), f64::NAN)]);
        let shared =
            shared_evaluation(&Uniform { rank: 0, size: 2 }, || Ok(metrics.clone())).unwrap();
        assert_eq!(shared["f1"].to_bits(), metrics["f1"].to_bits());
        assert!(shared["loss"].is_nan());
        let failed = shared_evaluation(&Uniform { rank: 0, size: 2 }, || {
            Err(TrainError::Hook("no valid rows".into()))
        });
        assert_eq!(failed.unwrap_err().to_string(), "no valid rows");
    }

    #[test]
    fn replicas_with_other_weights_are_named() {
        let device = Device::flex().autodiff();
        let model: Linear = LinearConfig::new(3, 2).init(&device);
        check_replicas(&Uniform { rank: 0, size: 2 }, &model, 4).unwrap();
        struct Differs;
        impl Collective for Differs {
            fn rank(&self) -> usize {
                0
            }
            fn size(&self) -> usize {
                2
            }
            fn sum(&self, _: &mut [f32], _: &str) -> Result<(), TrainError> {
                Ok(())
            }
            fn broadcast(&self, bytes: Vec<u8>, _: &str) -> Result<Vec<u8>, TrainError> {
                Ok(bytes)
            }
            fn gather(&self, value: u64, _: &str) -> Result<Vec<u64>, TrainError> {
                Ok(vec![value, value ^ 1])
            }
        }
        let error = check_replicas(&Differs, &model, 4).unwrap_err().to_string();
        assert!(error.contains("differ after step 4") && error.contains("rank 1"), "{error}");
    }
}
