//! `Hold`: what every granted lock, read/write lock, permit and leadership is.

use std::sync::Arc;

use super::Session;
use super::instrument::{HoldState, loss_cause};
use super::own_key::OwnedKey;
use crate::metrics::HoldKind;
use crate::{Compare, Result, Revision};

/// One granted hold of a name: a [`MutexGuard`](crate::MutexGuard),
/// [`RwMutexGuard`](crate::RwMutexGuard), [`SemaphorePermit`](crate::SemaphorePermit) and
/// [`Leadership`](crate::Leadership) are each a `Hold` (they dereference to it) with the
/// recipe's own name for letting go (`unlock`, `release`, `resign`).
///
/// A hold is a key `<name>/.../<lease hex>` on its session's lease. Its fencing token is the
/// key's create revision: strictly greater for every later holder of the name, so a
/// resource that remembers the highest token it has seen can refuse a stale holder.
/// Dropping the recipe's handle lets go in the background.
pub struct Hold {
    tracked: Tracked,
    own: OwnedKey,
}

/// A hold's shared state, ended (quietly: let go) when the hold is dropped.
struct Tracked(Arc<HoldState>);

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.end(None);
    }
}

impl Hold {
    pub(crate) fn new(kind: HoldKind, name: &str, own: OwnedKey) -> Self {
        Self::named(kind, name.into(), own)
    }

    /// [`Hold::new`] with a name the caller already shares: nothing copied per hold.
    pub(crate) fn named(kind: HoldKind, name: Arc<str>, own: OwnedKey) -> Self {
        Hold {
            tracked: Tracked(HoldState::granted(kind, name)),
            own,
        }
    }

    /// The name of the lock, semaphore or election.
    pub fn name(&self) -> &str {
        &self.tracked.0.name
    }

    /// The key this hold is: `<name>/<lease hex>` (`<name>/read/…` and `<name>/write/…` for
    /// read/write locks), what `etcdctl lock` prints.
    pub fn key(&self) -> &str {
        self.own.key()
    }

    /// The fencing token: the key's create revision. Strictly greater for every later
    /// holder of the name (for a read lock: above every writer before it and below every
    /// writer after it; for a permit: above every permit released before it was asked for).
    pub fn fencing_token(&self) -> Revision {
        self.own.create_revision()
    }

    /// A compare that holds only while this hold lasts (its key exists with the same create
    /// revision). Put it in your own txn so that a write happens only while you still hold.
    pub fn is_owner(&self) -> Compare {
        self.own.is_owner()
    }

    /// Resolves when the hold is lost: the session is lost (which fires before the server
    /// can expire the lease) or the key was deleted by someone else. Never because the
    /// holder let go: after the recipe's `unlock` / `release` / `resign`, or a drop, it
    /// stays pending and keeps nothing of the session alive, so a monitor task can tell a
    /// release from a loss. The future owns what it needs.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let lost = self.own.lost();
        // What the loss is logged and counted with, once, by whichever future sees it first.
        let state = self.tracked.0.clone();
        let session = self.session().lost_signal();
        let (key, token) = (self.key().to_owned(), self.fencing_token());
        async move {
            lost.await;
            state.end(Some((loss_cause(&session), &key, token)));
        }
    }

    /// The session the hold is on.
    pub fn session(&self) -> &Session {
        self.own.session()
    }

    /// Lets go now: deletes the key if it is still this incarnation (and no other reader of
    /// the session shares it).
    ///
    /// # Errors
    /// [`Error::LockLost`](crate::Error::LockLost) when the hold had already been lost (the
    /// key was gone or re-created): nothing is deleted, and the caller learns that its
    /// critical section was not fully covered. Any backend error: the release is then
    /// retried in the background until it succeeds or the session ends.
    ///
    /// # Cancel safety
    /// Cancel safe: the delete runs in the calling task; a call dropped before it is
    /// answered still lets go, in a spawned task.
    pub(crate) async fn release(self) -> Result<()> {
        let Hold { tracked, own } = self;
        let session = own.session().lost_signal();
        let token = own.create_revision();
        let outcome = own.release().await;
        if let Err(crate::Error::LockLost { key }) = &outcome {
            tracked.0.end(Some((loss_cause(&session), key, token)));
        }
        outcome
    }

    pub(crate) fn own(&self) -> &OwnedKey {
        &self.own
    }
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hold")
            .field("key", &self.key())
            .field("fencing_token", &self.fencing_token())
            .finish()
    }
}

/// The time limit of a `*_timeout` acquisition. It bounds *waiting for others* (other
/// tasks of the session at the same key, older holders and waiters), never the claim
/// request itself, whose own bound is the connection's request timeout: so a zero limit
/// means "try once", the same on every backend (a free lock is acquired, a held one answers
/// [`Error::Timeout`](crate::Error::Timeout) and leaves no key).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    /// `None`: no limit (also a limit too far away to represent).
    at: Option<(tokio::time::Instant, std::time::Duration)>,
}

impl Deadline {
    /// No limit.
    pub(crate) const NONE: Deadline = Deadline { at: None };

    /// `limit` from now.
    pub(crate) fn after(limit: std::time::Duration) -> Deadline {
        Deadline {
            at: tokio::time::Instant::now()
                .checked_add(limit)
                .map(|at| (at, limit)),
        }
    }

    /// Runs `wait`, or gives `Ok(None)` once the deadline has passed. `wait` is polled at
    /// least once, so what needs no waiting completes even with a zero limit.
    pub(crate) async fn bound<T>(
        &self,
        wait: impl Future<Output = Result<T>>,
    ) -> Result<Option<T>> {
        match self.at {
            None => wait.await.map(Some),
            // Boxed: a timer is large, and most acquisitions have no limit.
            Some((at, _)) => match Box::pin(tokio::time::timeout_at(at, wait)).await {
                Ok(outcome) => outcome.map(Some),
                Err(_) => Ok(None),
            },
        }
    }

    /// The error once the limit passed: [`Error::Timeout`](crate::Error::Timeout) naming
    /// what did not finish.
    pub(crate) fn elapsed(&self, what: impl std::fmt::Display) -> crate::Error {
        let limit = self.at.map(|(_, limit)| limit).unwrap_or_default();
        crate::Error::Timeout {
            operation: format!("{what} within {limit:?}"),
        }
    }
}

/// Withdraws a waiting key whose time limit passed, before the caller hears: so that a
/// `Timeout` leaves no key behind.
pub(crate) async fn withdraw_on_timeout(own: OwnedKey) {
    if let Err(e) = own.release().await {
        tracing::debug!(error = %e, "withdrawing after a time limit failed; retrying in the background");
    }
}
