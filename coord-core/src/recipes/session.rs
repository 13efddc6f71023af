//! `Session`: one lease, kept alive in the background, shared by every primitive made from it.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use tracing::Instrument;

use super::backoff::Backoff;
use super::instrument::{self, Hex};
use super::own_key::OwnKeys;
use crate::{CoordinationBackend, Error, LeaseId, Result};

/// The TTL a session asks for when none is given (etcd's `defaultSessionTTL`).
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(60);

/// A lease kept alive in the background, and the liveness signal of everything attached
/// to it.
///
/// Locks, permits and election candidacies made from a session are keys attached to its
/// lease: when the lease goes, they go. A background task refreshes the lease every third
/// of its TTL. [`Session::lost`] resolves when the lease can no longer be trusted: at the
/// *client-side* deadline, measured from the moment the last successful refresh was
/// **sent**, minus a drift margin. The server cannot have expired the lease before that
/// instant unless its clock runs faster than ours by more than the margin, so a holder is
/// told before anybody else can take its lock. (etcd's Go `Session.Done()` fires after the
/// server has already expired the lease.)
///
/// One session can serve many tasks: a lock, permit or candidacy is held by the handle
/// that acquired it, not by the session, so tasks that share a session exclude each other
/// exactly as separate sessions do. Every acquisition races the session's loss: on a
/// cut-off client it ends with [`Error::SessionExpired`] at the deadline, even if a call
/// never answers, and nothing is granted to a lost session.
///
/// A lost session is never renewed: create a new one. Cloning a `Session` gives another
/// handle to the same lease. When the last handle (and every guard made from it) is
/// dropped, the keep-alive stops and the lease is revoked in the background, unless the
/// session was [orphaned](Session::orphan).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> coord_core::Result<()> {
/// # let backend: std::sync::Arc<dyn coord_core::CoordinationBackend> =
/// #     std::sync::Arc::new(coord_memory::MemoryBackend::new());
/// use std::time::Duration;
/// use coord_core::{Mutex, Session};
///
/// let session = Session::builder(backend).ttl(Duration::from_secs(10)).start().await?;
/// let guard = Mutex::new(&session, "jobs/nightly").lock().await?;
/// tokio::select! {
///     _ = guard.lost() => eprintln!("the lock is gone: stop writing"),
///     _ = async { /* the work, guarded by guard.fencing_token() */ } => {}
/// }
/// guard.unlock().await?;
/// session.close().await?; // revokes the lease: every key of the session goes at once
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Session {
    inner: Arc<SessionInner>,
}

pub(crate) struct SessionInner {
    pub(crate) backend: Arc<dyn CoordinationBackend>,
    lease: LeaseId,
    ttl: Duration,
    /// When the lease can no longer be trusted.
    lost: LostSignal,
    /// Stops the keep-alive task.
    stop: CancellationToken,
    /// Set by `orphan()`: dropping the last handle must not revoke the lease.
    orphaned: std::sync::atomic::AtomicBool,
    pub(crate) keys: Arc<OwnKeys>,
    pub(crate) kept_watches: super::kept_watch::KeptWatches,
}

/// When a session's lease can no longer be trusted: at its client-side deadline, or when
/// the session ended (closed, orphaned, dropped, the lease found gone, the keep-alive task
/// dead). Computed from the deadline itself, so it is right even when the keep-alive task
/// has not run for a while; and once lost, always lost.
///
/// One `Arc`, so that a clone (several per acquisition and release) is one atomic
/// increment: cloning a `CancellationToken` takes the lock of its tree node.
#[derive(Clone)]
pub(crate) struct LostSignal(Arc<LostState>);

struct LostState {
    ended: CancellationToken,
    deadline: std::sync::Mutex<Deadline>,
}

struct Deadline {
    at: Instant,
    /// Whether this process ended the session (close, orphan, drop) before it was lost:
    /// what a hold lost with it was lost for.
    closed: bool,
    /// Counted in the open-sessions gauge: until the session first ends.
    open: bool,
}

impl LostSignal {
    fn new(deadline: Instant) -> Self {
        crate::metrics::session_open(true);
        LostSignal(Arc::new(LostState {
            ended: CancellationToken::new(),
            deadline: std::sync::Mutex::new(Deadline {
                at: deadline,
                closed: false,
                open: true,
            }),
        }))
    }

    fn ended(&self) -> &CancellationToken {
        &self.0.ended
    }

    fn deadline(&self) -> Instant {
        self.0.deadline.lock().unwrap_or_else(|e| e.into_inner()).at
    }

    /// Whether the session ended because this process ended it, before it was lost.
    pub(crate) fn closed_by_us(&self) -> bool {
        self.0
            .deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .closed
    }

    /// Ends the session on this process's own decision (close, orphan, drop).
    fn close(&self) {
        {
            let mut current = self.0.deadline.lock().unwrap_or_else(|e| e.into_inner());
            if !self.ended().is_cancelled() && Instant::now() < current.at {
                current.closed = true;
            }
        }
        self.end();
    }

    pub(crate) fn is_lost(&self) -> bool {
        self.ended().is_cancelled() || Instant::now() >= self.deadline()
    }

    /// Moves the deadline to `deadline`, unless it has already passed: a refresh answered
    /// after the deadline cannot bring a lost session back. Returns false when it had.
    fn extend(&self, deadline: Instant) -> bool {
        let mut current = self.0.deadline.lock().unwrap_or_else(|e| e.into_inner());
        if self.ended().is_cancelled() || Instant::now() >= current.at {
            return false;
        }
        current.at = deadline;
        true
    }

    /// Ends the session now (the keep-alive task then revokes the lease).
    pub(crate) fn end(&self) {
        let was_open = std::mem::take(
            &mut self
                .0
                .deadline
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .open,
        );
        if was_open {
            crate::metrics::session_open(false);
        }
        self.ended().cancel();
    }

    /// Resolves when the session is lost.
    pub(crate) async fn wait(self) {
        loop {
            let deadline = self.deadline();
            tokio::select! {
                _ = self.ended().cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => {
                    if Instant::now() >= self.deadline() {
                        return;
                    }
                }
            }
        }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("lease", &format_args!("{:x}", self.inner.lease))
            .field("ttl", &self.inner.ttl)
            .field("lost", &self.inner.lost.is_lost())
            .finish()
    }
}

/// Builds a [`Session`]: TTL, resuming an existing lease, drift margin.
#[derive(Debug)]
#[must_use = "a builder does nothing until `start` is called"]
pub struct SessionBuilder {
    backend: Arc<dyn CoordinationBackend>,
    ttl: Duration,
    lease: Option<LeaseId>,
    drift_margin: Option<Duration>,
}

impl SessionBuilder {
    /// The lease TTL to ask for (default 60 s). The backend may grant more.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Resumes an existing lease instead of granting a new one, e.g. to reclaim locks or
    /// leadership after a process restart (etcd's `WithLease`). Keys this lease still has
    /// are adopted by the primitives that ask for them.
    pub fn lease(mut self, lease: LeaseId) -> Self {
        self.lease = Some(lease);
        self
    }

    /// How much earlier than the lease's nominal end [`Session::lost`] fires, to absorb
    /// clock drift between client and server. Default: a tenth of the TTL. Must be below
    /// two thirds of the TTL, so that refreshes (every third) land before it.
    pub fn drift_margin(mut self, margin: Duration) -> Self {
        self.drift_margin = Some(margin);
        self
    }

    /// Grants (or checks, when resuming) the lease and starts the keep-alive.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero TTL, a TTL above the backend's
    /// [`max_lease_ttl`](crate::BackendInfo::max_lease_ttl) (nothing is granted), or a margin
    /// of two thirds of the TTL or more; [`Error::LeaseNotFound`] when the lease to resume does not exist; any backend
    /// error from the grant.
    ///
    /// # Cancel safety
    /// Not cancel safe: a lease granted by a dropped call is left to expire.
    pub async fn start(self) -> Result<Session> {
        let span = tracing::debug_span!(
            "session.start",
            ttl = ?self.ttl,
            resume = self.lease.map(|l| tracing::field::display(Hex(l))),
            lease = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        let outcome = self.start_inner().instrument(span.clone()).await;
        if let Ok(session) = &outcome
            && !span.is_disabled()
        {
            span.record("lease", tracing::field::display(Hex(session.lease())));
        }
        instrument::record_outcome(&span, &outcome);
        outcome
    }

    async fn start_inner(self) -> Result<Session> {
        if self.ttl.is_zero() {
            return Err(Error::invalid_argument("session ttl must be positive"));
        }
        if self.lease.is_none() {
            // Refused before anything is granted, whatever the backend would make of it.
            crate::check_lease_ttl(self.ttl, self.backend.info().max_lease_ttl)?;
        }
        let sent = Instant::now();
        let (lease, ttl) = match self.lease {
            None => {
                let grant = self.backend.lease_grant(self.ttl).await?;
                (grant.id, grant.ttl)
            }
            Some(id) => {
                let status = self.backend.lease_time_to_live(id).await?;
                let remaining = self.backend.lease_keep_alive(id).await?;
                (id, status.granted_ttl.max(remaining))
            }
        };
        let margin = self.drift_margin.unwrap_or(ttl / 10);
        if margin * 3 >= ttl * 2 {
            return Err(Error::invalid_argument(format!(
                "session drift margin {margin:?} must be below two thirds of the ttl {ttl:?}"
            )));
        }
        let inner = Arc::new(SessionInner {
            backend: self.backend,
            lease,
            ttl,
            lost: LostSignal::new(sent + ttl.saturating_sub(margin)),
            stop: CancellationToken::new(),
            orphaned: std::sync::atomic::AtomicBool::new(false),
            keys: Arc::default(),
            kept_watches: Default::default(),
        });
        tokio::spawn(keep_alive(
            inner.backend.clone(),
            lease,
            ttl,
            margin,
            inner.lost.clone(),
            inner.stop.clone(),
        ));
        tracing::debug!(lease = format_args!("{lease:x}"), ?ttl, "session started");
        Ok(Session { inner })
    }
}

impl Session {
    /// A session with the default TTL of 60 s.
    ///
    /// # Errors
    /// As [`SessionBuilder::start`].
    ///
    /// # Cancel safety
    /// Not cancel safe: a lease granted by a dropped call is left to expire.
    pub async fn new(backend: Arc<dyn CoordinationBackend>) -> Result<Session> {
        Self::builder(backend).start().await
    }

    /// A builder, for a TTL, a lease to resume or a drift margin.
    pub fn builder(backend: Arc<dyn CoordinationBackend>) -> SessionBuilder {
        SessionBuilder {
            backend,
            ttl: DEFAULT_SESSION_TTL,
            lease: None,
            drift_margin: None,
        }
    }

    /// The session's lease.
    pub fn lease(&self) -> LeaseId {
        self.inner.lease
    }

    /// The TTL the backend granted.
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// The backend the session lives on.
    pub fn backend(&self) -> &Arc<dyn CoordinationBackend> {
        &self.inner.backend
    }

    /// Resolves when the lease can no longer be trusted (see the type docs), or the
    /// session was closed or orphaned, or its keep-alive task died. The future owns what it
    /// needs, so it can be spawned or kept after the session handle is dropped.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        self.inner.lost.clone().wait()
    }

    /// Whether the session is lost: its client-side deadline has passed (computed from the
    /// deadline itself, not from what the background task last noticed), or it ended.
    /// Once true, always true.
    pub fn is_lost(&self) -> bool {
        self.inner.lost.is_lost()
    }

    /// Stops the keep-alive without revoking the lease, which then expires after its TTL.
    /// Use it to hand the lease to another process (which resumes it with
    /// [`SessionBuilder::lease`]) or when the connection state is unknown. [`Session::lost`]
    /// fires.
    pub fn orphan(&self) {
        self.inner
            .orphaned
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.stop.cancel();
        self.inner.lost.close();
    }

    /// Stops the keep-alive and revokes the lease, deleting every key attached to it (all
    /// locks, permits and candidacies of this session are released at once).
    ///
    /// # Errors
    /// Any backend error from the revoke, except `LeaseNotFound` (already gone is fine).
    /// The lease then expires after its TTL.
    ///
    /// # Cancel safety
    /// Cancel safe: the keep-alive is stopped before the revoke is sent; a dropped call
    /// leaves the lease to expire.
    pub async fn close(&self) -> Result<()> {
        let span = tracing::debug_span!(
            "session.close",
            lease = %Hex(self.inner.lease),
            outcome = tracing::field::Empty,
        );
        instrument::operation(span, async {
            self.orphan();
            match self.inner.backend.lease_revoke(self.inner.lease).await {
                Ok(()) | Err(Error::LeaseNotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// How many lock, permit or candidacy keys the session keeps local state for (waiting,
    /// held, or being released or settled, or named by a live [`Mutex`](crate::Mutex)
    /// handle). For tests: it must not grow with the number of names ever used.
    #[doc(hidden)]
    pub fn tracked_keys(&self) -> usize {
        self.inner.keys.len()
    }

    /// The error to report when a wait ends because this session is gone.
    pub(crate) fn expired_error(&self) -> Error {
        Error::SessionExpired {
            lease: self.inner.lease,
        }
    }

    /// The session's loss signal, for background work that must not keep the session alive.
    pub(crate) fn lost_signal(&self) -> LostSignal {
        self.inner.lost.clone()
    }

    /// Runs a backend call on an acquire path, racing the session's loss: `SessionExpired`
    /// as soon as the session is lost, whether or not the call ever answers (a call to a
    /// cut-off server may hang far longer). The call's own `LeaseNotFound` for this lease
    /// means the same.
    pub(crate) async fn race<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        // First what the select below does on its first poll (the loss checked, then the
        // call polled), without arming a timer for the session's deadline: a call that
        // answers at once (the in-memory backend's always do) needs none.
        if self.is_lost() {
            return Err(self.expired_error());
        }
        let mut call = std::pin::pin!(call);
        let first = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match call.as_mut().poll(cx) {
                std::task::Poll::Ready(outcome) => Some(outcome),
                std::task::Poll::Pending => None,
            })
        })
        .await;
        if let Some(outcome) = first {
            return self.answered(outcome);
        }
        // Boxed: the loss's future is large, and is needed only by calls that wait.
        let lost = Box::pin(self.lost());
        tokio::select! {
            biased;
            _ = lost => Err(self.expired_error()),
            outcome = call => self.answered(outcome),
        }
    }

    /// A raced call's outcome: its own `LeaseNotFound` for this lease ends the session.
    fn answered<T>(&self, outcome: Result<T>) -> Result<T> {
        match outcome {
            Err(Error::LeaseNotFound { lease: Some(lease) }) if lease == self.inner.lease => {
                // The server says the lease is gone: the session is, at once.
                self.inner.lost.end();
                Err(self.expired_error())
            }
            other => other,
        }
    }

    /// `Ok(value)` unless the session is lost at this moment: what every acquisition returns
    /// through, so that nothing is granted to a lost session.
    pub(crate) fn unless_lost<T>(&self, value: T) -> Result<T> {
        if self.is_lost() {
            Err(self.expired_error())
        } else {
            Ok(value)
        }
    }

    pub(crate) fn inner(&self) -> &SessionInner {
        &self.inner
    }
}

impl Drop for SessionInner {
    fn drop(&mut self) {
        self.stop.cancel();
        self.lost.close();
        if self.orphaned.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        // Nobody can use the lease any more: revoke it so its keys go now, not after a TTL.
        let backend = self.backend.clone();
        let lease = self.lease;
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = backend.lease_revoke(lease).await {
                    tracing::debug!(lease = format_args!("{lease:x}"), error = %e, "revoke on drop failed; the lease will expire");
                }
            });
        }
    }
}

/// Ends the session when the keep-alive task ends, however it ends (a panic included):
/// nobody refreshes the lease any more.
struct EndOnExit(LostSignal);

impl Drop for EndOnExit {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// Refreshes the lease every `ttl / 3` until stopped; ends the session at the client-side
/// deadline if refreshes stop succeeding, or at once when the backend says the lease is gone.
async fn keep_alive(
    backend: Arc<dyn CoordinationBackend>,
    lease: LeaseId,
    ttl: Duration,
    margin: Duration,
    lost: LostSignal,
    stop: CancellationToken,
) {
    let _end = EndOnExit(lost.clone());
    let period = ttl / 3;
    let retry = (ttl / 20).clamp(Duration::from_millis(1), Duration::from_millis(500));
    let mut next = Instant::now() + period;
    loop {
        let deadline = lost.deadline();
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = lost.ended().cancelled() => break,
            _ = tokio::time::sleep_until(deadline) => break,
            _ = tokio::time::sleep_until(next) => {}
        }
        let sent = Instant::now();
        let result = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = lost.ended().cancelled() => break,
            _ = tokio::time::sleep_until(deadline) => break,
            r = backend.lease_keep_alive(lease) => r,
        };
        match result {
            Ok(remaining) => {
                crate::metrics::keep_alive(sent.elapsed());
                if !lost.extend(sent + remaining.saturating_sub(margin)) {
                    break;
                }
                next = sent + period;
            }
            Err(Error::LeaseNotFound { .. }) => {
                tracing::info!(
                    lease = %Hex(lease),
                    cause = "the server says the lease is gone",
                    "session expired"
                );
                crate::metrics::session_expired();
                return;
            }
            Err(e) => {
                tracing::warn!(lease = format_args!("{lease:x}"), error = %e, "session keep-alive failed; retrying");
                next = Instant::now() + retry;
            }
        }
    }
    // Ended elsewhere: an acquisition was told the lease is gone, or the session gave up
    // on keys of unknown outcome. Otherwise refreshes failed until the deadline.
    let cause = if lost.ended().is_cancelled() {
        "ended: the lease was found gone, or too many keys had claims of unknown outcome"
    } else {
        "no successful keep-alive before the deadline"
    };
    tracing::info!(lease = %Hex(lease), cause, "session expired");
    crate::metrics::session_expired();
    lost.end();
    revoke_after_loss(backend.as_ref(), lease, ttl, &stop).await;
}

/// The lease may still live on the server (for up to the drift margin, or for a whole new
/// TTL if the server restarted or elected a new leader meanwhile, as etcd does): revoking
/// frees its keys for the next holder now. Retried until the server answers, for as long as
/// the lease could live on without us.
async fn revoke_after_loss(
    backend: &dyn CoordinationBackend,
    lease: LeaseId,
    ttl: Duration,
    stop: &CancellationToken,
) {
    let give_up = Instant::now() + ttl * 2;
    let mut backoff = Backoff::up_to(Duration::from_millis(250));
    loop {
        let outcome = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            r = backend.lease_revoke(lease) => r,
        };
        match outcome {
            Ok(()) | Err(Error::LeaseNotFound { .. }) => return,
            Err(e) if Instant::now() >= give_up => {
                tracing::debug!(lease = format_args!("{lease:x}"), error = %e, "revoking the lost lease failed; it will expire");
                return;
            }
            Err(e) => {
                tracing::debug!(lease = format_args!("{lease:x}"), error = %e, "revoking the lost lease failed; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff.pause()) => {}
                }
            }
        }
    }
}
