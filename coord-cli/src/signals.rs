//! SIGINT / SIGTERM (and SIGHUP) as an async stream, installed before anything is printed so
//! that a signal sent right after the first line is never missed.

use coord::Session;

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

/// Awaits `acquire` (a lock or a campaign) unless a termination signal comes first. On an
/// error or a signal the session is closed, revoking its lease, so that a waiting key is
/// gone at once rather than when the lease runs out.
///
/// Returns the acquired value, or `Err(exit code)` for the signal.
pub(crate) async fn acquire_unless_interrupted<T>(
    acquire: impl Future<Output = coord::Result<T>>,
    session: &Session,
    signals: &mut Signals,
) -> Result<Result<T, u8>, CliError> {
    let outcome = tokio::select! {
        r = acquire => match r {
            Ok(held) => return Ok(Ok(held)),
            Err(e) => Err(waiting_error(e)),
        },
        // Dropping `acquire` withdrew its waiting key.
        signo = signals.recv() => Ok(Err(interrupted(signo))),
    };
    if session.is_lost() {
        super::close_lost(session).await;
    } else if let Err(e) =
        super::release_within("the waiting key", session.ttl(), session.close()).await
    {
        eprintln!("coord: {}", e.message);
    }
    outcome
}

/// A failure while waiting. Exit 5 means "lost while held"; a session that ends while its
/// waiter is still queued (the server unreachable past the TTL) held nothing, so it is a
/// plain failure (exit 1) that says so.
fn waiting_error(e: coord::Error) -> CliError {
    match e {
        coord::Error::SessionExpired { .. } | coord::Error::LockLost { .. } => CliError::new(
            super::code::FAILURE,
            format!("the session ended while waiting, before anything was held: {e}"),
        ),
        e => e.into(),
    }
}
