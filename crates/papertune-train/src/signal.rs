//! Ctrl-C, SIGTERM and SIGUSR1 as a stop request: the trainer finishes its step, saves, and
//! returns.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// A flag that becomes true on SIGINT (Ctrl-C) or SIGTERM, for
/// [`crate::Trainer::with_stop_signal`]. A second signal while the flag is already set ends the
/// process at once (exit status 130), for a user who does not want to wait for the checkpoint.
/// SIGUSR1 sets the flag too, and only that: MPI launchers (Open MPI's `mpirun`) forward it to
/// every rank, where they answer Ctrl-C by ending the ranks within a second.
pub fn stop_on_signals() -> std::io::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    #[cfg(unix)]
    {
        use signal_hook::consts::{SIGINT, SIGTERM};
        for signal in [SIGINT, SIGTERM] {
            // Registered first, so it sees the flag before the second handler sets it.
            signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&flag))?;
            signal_hook::flag::register(signal, Arc::clone(&flag))?;
        }
        signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&flag))?;
    }
    Ok(flag)
}
