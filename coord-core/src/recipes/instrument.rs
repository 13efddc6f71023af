//! The tracing spans and metrics of recipe operations.
//!
//! Every operation runs in a `debug` span named for it (`mutex.lock`, `election.resign`,
//! ...) with the fields `name`, `lease` (hex), and, recorded when known, `key`, `token`
//! (the fencing token), `wait` and `outcome` (`ok` or the error kind). Nothing is
//! formatted unless a subscriber enables the span: field values are recorded as
//! `Display`/`Debug` wrappers and only rendered by the subscriber.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::{Instrument, Span};

use super::Hold;
use super::session::LostSignal;
use crate::metrics::{self, HoldKind, LossCause};
use crate::{Error, LeaseId, Result};

/// A lease id as logs and etcd write it: lowercase hex.
#[derive(Clone, Copy)]
pub(crate) struct Hex(pub(crate) LeaseId);

impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// The span of one recipe operation on a name: `op_span!("mutex.lock", name, lease)`, with
/// more fields after the lease if the operation has them.
macro_rules! op_span {
    ($op:literal, $name:expr, $lease:expr $(, $($extra:tt)+)?) => {
        tracing::debug_span!(
            $op,
            name = %$name,
            lease = %$crate::recipes::instrument::Hex($lease),
            $($($extra)+,)?
            key = tracing::field::Empty,
            token = tracing::field::Empty,
            wait = tracing::field::Empty,
            outcome = tracing::field::Empty,
        )
    };
}
pub(crate) use op_span;

tokio::task_local! {
    /// Set while an acquisition runs: whether it had to wait.
    static WAITED: Cell<bool>;
}

/// Notes that the running acquisition has to wait (for another holder, or another task of
/// the session). Does nothing outside an acquisition.
pub(crate) fn waiting() {
    let _ = WAITED.try_with(|w| w.set(true));
}

/// The name of an error's kind, for the `outcome` field.
pub(crate) fn error_kind(e: &Error) -> &'static str {
    match e {
        Error::Unavailable { .. } => "unavailable",
        Error::Timeout { .. } => "timeout",
        Error::LeaseNotFound { .. } => "lease_not_found",
        Error::Compacted { .. } => "compacted",
        Error::InvalidArgument { .. } => "invalid_argument",
        Error::Unauthenticated { .. } => "unauthenticated",
        Error::PermissionDenied { .. } => "permission_denied",
        Error::SessionExpired { .. } => "session_expired",
        Error::LockLost { .. } => "lock_lost",
        Error::NotLeader { .. } => "not_leader",
        Error::NoLeader { .. } => "no_leader",
        Error::Locked { .. } => "locked",
        Error::Contract { .. } => "contract",
        Error::Backend { .. } => "backend",
    }
}

/// Records `outcome` on `span`.
pub(crate) fn record_outcome<T>(span: &Span, outcome: &Result<T>) {
    if span.is_disabled() {
        return;
    }
    match outcome {
        Ok(_) => span.record("outcome", tracing::field::display("ok")),
        Err(e) => span.record("outcome", tracing::field::display(error_kind(e))),
    };
}

/// Records the hold's key and fencing token on `span`.
pub(crate) fn record_hold(span: &Span, hold: &Hold) {
    if span.is_disabled() {
        return;
    }
    span.record("key", tracing::field::display(hold.key()));
    span.record("token", hold.fencing_token());
}

/// Whether nobody listens to `span` and no metrics are recorded: an operation then runs
/// without [`acquisition`] or [`operation`] (no clock reads, no task-local, no span entered
/// on every poll, and a smaller future).
pub(crate) fn unobserved(span: &Span) -> bool {
    span.is_disabled() && !cfg!(feature = "metrics")
}

/// Runs an acquisition of a `kind` hold on `name` in `span`, recording the key, token, wait
/// time and outcome on the span and in the metrics.
pub(crate) async fn acquisition<G>(
    span: Span,
    kind: HoldKind,
    name: &str,
    acquire: impl Future<Output = Result<G>>,
) -> Result<G>
where
    G: std::ops::Deref<Target = Hold>,
{
    let started = tokio::time::Instant::now();
    let (outcome, waited) = WAITED
        .scope(Cell::new(false), async {
            let outcome = acquire.await;
            (outcome, WAITED.with(Cell::get))
        })
        .instrument(span.clone())
        .await;
    let wait = started.elapsed();
    match &outcome {
        Ok(guard) => {
            record_hold(&span, guard);
            metrics::acquired(kind, name, waited, wait);
        }
        Err(Error::Timeout { .. }) => metrics::timed_out(kind, name),
        Err(_) => {}
    }
    if !span.is_disabled() {
        span.record("wait", tracing::field::debug(wait));
    }
    record_outcome(&span, &outcome);
    outcome
}

/// Runs `op` (a release, proclamation, ...) in `span`, recording its outcome.
pub(crate) async fn operation<T>(span: Span, op: impl Future<Output = Result<T>>) -> Result<T> {
    let outcome = op.instrument(span.clone()).await;
    record_outcome(&span, &outcome);
    outcome
}

/// What a [`Hold`] shares with its `lost()` futures: so that a loss is logged and counted
/// once, and a leadership's gauge goes down once, whoever notices the end first.
pub(crate) struct HoldState {
    pub(crate) kind: HoldKind,
    pub(crate) name: Arc<str>,
    over: AtomicBool,
}

impl HoldState {
    /// The state of a hold just granted.
    pub(crate) fn granted(kind: HoldKind, name: Arc<str>) -> Arc<HoldState> {
        if kind == HoldKind::Election {
            metrics::leader(&name, true);
        }
        Arc::new(HoldState {
            kind,
            name,
            over: AtomicBool::new(false),
        })
    }

    /// The hold ended: lost (`cause`, key, token) or let go (`None`). Only the first call
    /// counts.
    pub(crate) fn end(&self, lost: Option<(LossCause, &str, crate::Revision)>) {
        if self.over.swap(true, Ordering::SeqCst) {
            return;
        }
        if self.kind == HoldKind::Election {
            metrics::leader(&self.name, false);
        }
        if let Some((cause, key, token)) = lost {
            tracing::info!(
                kind = self.kind.as_str(),
                name = %self.name,
                key,
                token,
                cause = cause.as_str(),
                "hold lost"
            );
            metrics::lost(self.kind, &self.name, cause);
        }
    }
}

/// Why a hold on a session with this loss signal was lost: the session's fate, or else its
/// key was deleted.
pub(crate) fn loss_cause(session: &LostSignal) -> LossCause {
    if !session.is_lost() {
        LossCause::KeyDeleted
    } else if session.closed_by_us() {
        LossCause::Released
    } else {
        LossCause::SessionExpired
    }
}
