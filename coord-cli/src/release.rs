//! Ending a hold when the server may not answer: releases bounded by the request timeout,
//! and a word on stderr when the lease outlives coord longer than asked.

use std::sync::OnceLock;
use std::time::Duration;

use super::url_args::DEFAULT_REQUEST_TIMEOUT;
use super::{CliError, Ctx, code};

/// How long releasing a lock or leadership (and closing its session) may take: the request
/// timeout, set once before any command runs. Kept here rather than passed down so that
/// every release path, however deep, is bounded the same way.
static RELEASE_BOUND: OnceLock<Duration> = OnceLock::new();

/// Sets the bound once, from the request timeout the backend URL ends up with.
pub(crate) fn set_bound(request_timeout: Duration) {
    let _ = RELEASE_BOUND.set(request_timeout);
}

fn bound() -> Duration {
    RELEASE_BOUND
        .get()
        .copied()
        .unwrap_or(DEFAULT_REQUEST_TIMEOUT)
}

/// Runs `release` (an unlock or resign, then closing the session) for at most the request
/// timeout. A server that does not answer (down, or cut off by the network) would otherwise
/// hold coord past a signal or past CMD's exit for as long as the client waits; given up,
/// the lease ends by itself within the TTL, and with it the lock or leadership.
///
/// # Errors
/// The release's own error; or, when the server did not answer (a timeout, unavailable),
/// one saying the release was given up and that the lease ends by itself.
///
/// # Cancel safety
/// Not cancel safe: a dropped release may leave the lease to expire by itself.
pub(crate) async fn release_within(
    what: &str,
    ttl: Duration,
    release: impl Future<Output = coord::Result<()>>,
) -> Result<(), CliError> {
    let bound = bound();
    let why = match tokio::time::timeout(bound, release).await {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e @ (coord::Error::Timeout { .. } | coord::Error::Unavailable { .. }))) => {
            e.to_string()
        }
        Ok(Err(e)) => {
            let e = CliError::from(e);
            return Err(CliError {
                message: format!("could not release {what}: {}", e.message),
                ..e
            });
        }
        Err(_) => format!(
            "the server did not answer within {} (the request timeout)",
            humantime::format_duration(bound)
        ),
    };
    Err(CliError::new(
        code::FAILURE,
        format!(
            "could not release {what}: {why}; the lease ends by itself within the TTL ({}), \
             and {what} with it",
            humantime::format_duration(ttl)
        ),
    ))
}

/// Warns when the backend granted a longer TTL than asked for (etcd grants whole seconds,
/// at least its minimum): the lock or leadership then outlives a dead coord by longer
/// than the user expects.
pub(crate) fn warn_if_ttl_raised(ctx: &Ctx, session: &coord::Session) {
    let (asked, granted) = (ctx.ttl(), session.ttl());
    if granted > asked {
        super::output::warn(
            ctx.out,
            format!(
                "TTL {} raised by the backend: it granted {} (its minimum or granularity), so \
                 the lease ends that long after coord dies",
                humantime::format_duration(asked),
                humantime::format_duration(granted)
            ),
        );
    }
}
