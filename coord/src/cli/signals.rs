//! SIGINT / SIGTERM (and SIGHUP) as an async stream, installed before anything is printed so
//! that a signal sent right after the first line is never missed.

use super::{CliError, code};

/// The termination signals coord reacts to.
pub(crate) struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn install() -> Result<Self, CliError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let install = |kind| {
                signal(kind).map_err(|e| {
                    CliError::new(code::FAILURE, format!("cannot install signal handler: {e}"))
                })
            };
            Ok(Signals {
                int: install(SignalKind::interrupt())?,
                term: install(SignalKind::terminate())?,
                hup: install(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals {})
        }
    }

    /// The next termination signal's number (2 SIGINT, 15 SIGTERM, 1 SIGHUP).
    pub(crate) async fn recv(&mut self) -> i32 {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.int.recv() => 2,
                _ = self.term.recv() => 15,
                _ = self.hup.recv() => 1,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            2
        }
    }
}

/// The exit code for "interrupted by signal `signo`" (shell convention).
pub(crate) fn interrupted(signo: i32) -> u8 {
    (128 + signo).clamp(0, 255) as u8
}
