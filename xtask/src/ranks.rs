//! The ranks of a data-parallel job over several processes: `mpirun -np N cargo xtask train ...`
//! (or Slurm's `srun`) starts N processes, and a build with the `mpi` feature makes them the
//! ranks of one run (see docs/scaling.md). A build without it refuses to be started that way,
//! rather than train N independent copies into one run folder.

use std::sync::Arc;

use anyhow::Result;
use papertune_train::Collective;

/// Variables by which MPI launchers give a process its rank and the job's size.
/// (Slurm's own variables are left out: a batch script sees them outside any launcher too.)
const RANK_VARIABLES: [&str; 3] = ["OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"];
const SIZE_VARIABLES: [&str; 2] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"];

/// Seconds a collective operation may wait for the slowest rank before the job ends; rank 0
/// evaluates while the others wait, so the default leaves room for a long evaluation.
const TIMEOUT_VARIABLE: &str = "PAPERTUNE_MPI_TIMEOUT";
const DEFAULT_TIMEOUT_SECONDS: u64 = 3600;

/// This process's rank as its launcher gives it, before MPI is initialised (0 when not
/// launched as a rank): the ranks other than 0 log warnings only.
pub fn launcher_rank() -> usize {
    RANK_VARIABLES.iter().find_map(|name| std::env::var(name).ok()?.parse().ok()).unwrap_or(0)
}

fn launcher_size() -> usize {
    SIZE_VARIABLES.iter().find_map(|name| std::env::var(name).ok()?.parse().ok()).unwrap_or(1)
}

/// The job's ranks when an MPI launcher started more than one process, else `None`.
#[cfg(feature = "mpi")]
pub fn join() -> Result<Option<Ranks>> {
    if launcher_size() < 2 && std::env::var_os("PMIX_RANK").is_none() {
        return Ok(None);
    }
    let seconds = match std::env::var(TIMEOUT_VARIABLE) {
        Ok(text) => text.parse::<u64>().ok().filter(|s| *s > 0).ok_or_else(|| {
            anyhow::anyhow!(
                "{TIMEOUT_VARIABLE}={text:?}: expected a whole number of seconds above 0"
            )
        })?,
        Err(_) => DEFAULT_TIMEOUT_SECONDS,
    };
    let world = papertune_train::MpiWorld::from_launcher(std::time::Duration::from_secs(seconds))?;
    Ok(world.filter(|w| w.size() > 1).map(|w| Ranks { world: Arc::new(w) }))
}

/// Without the `mpi` feature: an error when an MPI launcher started several processes.
#[cfg(not(feature = "mpi"))]
pub fn join() -> Result<Option<Ranks>> {
    let size = launcher_size();
    anyhow::ensure!(
        size < 2,
        "started as rank {} of {size} by an MPI launcher, but this build has no MPI support: rebuild with `--features mpi` \
         (e.g. `cargo build -p xtask --features mpi`, which needs an MPI library such as Open MPI and libclang)",
        launcher_rank()
    );
    let _ = (TIMEOUT_VARIABLE, DEFAULT_TIMEOUT_SECONDS);
    Ok(None)
}

/// The ranks of the job this process is one of.
#[cfg(feature = "mpi")]
pub struct Ranks {
    world: Arc<papertune_train::MpiWorld>,
}

/// Without the `mpi` feature there are no ranks: this type has no value.
#[cfg(not(feature = "mpi"))]
pub enum Ranks {}

#[cfg(feature = "mpi")]
impl Ranks {
    pub fn collective(&self) -> Arc<dyn Collective> {
        self.world.clone()
    }

    pub fn rank(&self) -> usize {
        self.world.rank()
    }

    pub fn size(&self) -> usize {
        self.world.size()
    }

    pub fn local_rank(&self) -> usize {
        self.world.local_rank()
    }

    /// Reports `error` as this rank's and ends every rank of the job: the others would
    /// otherwise wait for this one in their next collective operation.
    pub fn fail(&self, error: anyhow::Error) -> ! {
        eprintln!(
            "error: rank {} of {}: {}",
            self.world.rank(),
            self.world.size(),
            crate::describe(&error)
        );
        self.world.abort(1)
    }
}

#[cfg(not(feature = "mpi"))]
impl Ranks {
    pub fn collective(&self) -> Arc<dyn Collective> {
        match *self {}
    }

    pub fn rank(&self) -> usize {
        match *self {}
    }

    pub fn size(&self) -> usize {
        match *self {}
    }

    pub fn local_rank(&self) -> usize {
        match *self {}
    }

    pub fn fail(&self, _error: anyhow::Error) -> ! {
        match *self {}
    }
}
