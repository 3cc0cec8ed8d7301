//! [`Collective`] on MPI (the `mpi` crate over the system's MPI library, e.g. Open MPI): the
//! world communicator of a job started by `mpirun` or `srun`, every operation non-blocking and
//! waited for with a deadline, so that a rank that died or hangs ends the job instead of
//! leaving the others waiting.

use std::time::{Duration, Instant};

use mpi::Threading;
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::request::{Request, Scope};
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use super::Collective;
use crate::error::TrainError;

/// Environment variables by which MPI launchers (Open MPI's `mpirun`, MPICH's Hydra, Slurm's
/// `srun` with PMI or PMIx) tell a process that it is one rank of a job.
const LAUNCHER_VARIABLES: [&str; 4] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK"];

/// Environment variables that give the rank among the processes of one node.
const LOCAL_RANK_VARIABLES: [&str; 3] =
    ["OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"];

/// The MPI job this process belongs to. MPI stays initialised while it lives and is finalised
/// when it is dropped.
pub struct MpiWorld {
    world: SimpleCommunicator,
    timeout: Duration,
    // Last, so that the communicator is released before MPI is finalised.
    _universe: Universe,
}

// The trainer calls MPI from one thread at a time, which `Threading::Serialized` (asked for at
// initialisation) allows from any thread.
unsafe impl Send for MpiWorld {}
unsafe impl Sync for MpiWorld {}

impl MpiWorld {
    /// The job's world when an MPI launcher started this process; `None` for a process started
    /// on its own. A collective operation that does not complete within `timeout` ends the job.
    pub fn from_launcher(timeout: Duration) -> Result<Option<Self>, TrainError> {
        if !LAUNCHER_VARIABLES.iter().any(|name| std::env::var_os(name).is_some()) {
            return Ok(None);
        }
        let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| {
                TrainError::Distributed("MPI was already initialised in this process".into())
            })?;
        if threading < Threading::Serialized {
            tracing::warn!(
                "the MPI library offers {threading:?} threading only; papertune calls it from one thread at a time"
            );
        }
        let world = universe.world();
        Ok(Some(Self { world, timeout, _universe: universe }))
    }

    /// This rank's index among the ranks of its node (for choosing a GPU), from the launcher's
    /// environment; the global rank when the launcher does not say.
    pub fn local_rank(&self) -> usize {
        LOCAL_RANK_VARIABLES
            .iter()
            .find_map(|name| std::env::var(name).ok()?.parse().ok())
            .unwrap_or_else(|| self.rank())
    }

    /// Ends every rank of the job with exit code `code` (`MPI_Abort`). After an error on one
    /// rank, the others would otherwise wait in their next collective operation.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }

    /// Waits for `request` until the deadline; past it, says which operation stalled and ends
    /// the job.
    fn wait<'a, D: ?Sized, S: Scope<'a>>(&self, mut request: Request<'a, D, S>, what: &str) {
        let started = Instant::now();
        loop {
            request = match request.test() {
                Ok(_) => return,
                Err(pending) => pending,
            };
            let waited = started.elapsed();
            if waited > self.timeout {
                eprintln!(
                    "error: rank {} of {}: the {what} did not complete within {} s: another rank died, hangs or fell behind; ending every rank (the last complete checkpoint is kept)",
                    self.rank(),
                    self.size(),
                    self.timeout.as_secs()
                );
                self.world.abort(1);
            }
            if waited < Duration::from_millis(2) {
                std::hint::spin_loop();
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
}

impl Collective for MpiWorld {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn sum(&self, values: &mut [f32], what: &str) -> Result<(), TrainError> {
        let send = values.to_vec();
        mpi::request::scope(|scope| {
            let request = self.world.immediate_all_reduce_into(
                scope,
                &send[..],
                values,
                SystemOperation::sum(),
            );
            self.wait(request, what);
        });
        Ok(())
    }

    fn broadcast(&self, mut bytes: Vec<u8>, what: &str) -> Result<Vec<u8>, TrainError> {
        let root = self.world.process_at_rank(0);
        let mut length = [bytes.len() as u64];
        mpi::request::scope(|scope| {
            self.wait(root.immediate_broadcast_into(scope, &mut length[..]), what)
        });
        let length = usize::try_from(length[0]).map_err(|_| {
            TrainError::Distributed(format!("rank 0 sent {} bytes for the {what}", length[0]))
        })?;
        bytes.resize(length, 0);
        mpi::request::scope(|scope| {
            self.wait(root.immediate_broadcast_into(scope, &mut bytes[..]), what)
        });
        Ok(bytes)
    }

    fn gather(&self, value: u64, what: &str) -> Result<Vec<u64>, TrainError> {
        let mut all = vec![0u64; self.size()];
        mpi::request::scope(|scope| {
            self.wait(self.world.immediate_all_gather_into(scope, &value, &mut all[..]), what)
        });
        Ok(all)
    }
}
