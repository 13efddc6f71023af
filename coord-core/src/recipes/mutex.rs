//! `Mutex`: a distributed lock, etcd's `concurrency.Mutex` with a guard API.

use std::time::Duration;

use super::hold::{Deadline, Hold, withdraw_on_timeout};
use super::instrument::{acquisition, op_span, operation, record_hold, unobserved};
use super::name::check_name;
use super::own_key::{KeyPin, claim_pinned, try_claim_pinned};
use super::queue::Queue;
use super::wait::{Ahead, queue_read, resolve_ahead, wait_for_predecessors};
use super::{Session, lock_key};
use crate::metrics::HoldKind;
use crate::{Error, Result, TxnOp};

/// A distributed mutual-exclusion lock on a name.
///
/// The holder is the session whose key under `<name>/` has the lowest create revision (the
/// keys of deeper names, `<name>/x/<lease hex>`, do not count; a read/write lock's keys on
/// the name, `<name>/read/…` and `<name>/write/…`, do, so the two exclude each other); a
/// waiter waits for the key just older than its own (no thundering herd). Keys are
/// `<name>/<lease id in lowercase hex>`, empty, attached to the session lease, so this lock
/// excludes and is excluded by `etcdctl lock <name>`, etcd's server-side lock API and Go's
/// `concurrency.Mutex` on the same name. The name is used verbatim: `"a"` and `"a/"` are
/// different locks, as in etcd.
///
/// A `Mutex` prepares its key and keeps its session's state for it once, when made: in a
/// loop that locks one name again and again, make the `Mutex` once and reuse it (clones
/// share that state), rather than making one per acquisition.
///
/// The holder is a guard, not a session: two tasks that lock one name through one session
/// exclude each other as two sessions do, and each acquisition has its own key incarnation
/// and fencing token. (etcd's Go `concurrency.Mutex` is reentrant per session instead: a
/// second `Lock` on the same session returns at once, and both "hold".) A session resumed
/// from its lease id in a new process adopts the key its predecessor left.
///
/// # From etcd's Go API
///
/// | Go (`concurrency.Mutex` / `NewLocker`) | here |
/// |---|---|
/// | `m.Lock(ctx)` | `let guard = m.lock().await?` (cancel by dropping the future or with [`Mutex::lock_timeout`]) |
/// | `m.TryLock(ctx)`, `ErrLocked` | [`Mutex::try_lock`], [`Error::Locked`] |
/// | `m.Unlock(ctx)` | [`MutexGuard::unlock`], or drop the guard (released in the background) |
/// | `m.Key()`, `m.IsOwner()` | [`Hold::key`], [`Hold::is_owner`] (a guard dereferences to its [`Hold`]) |
/// | `m.Header().Revision` | [`Hold::fencing_token`] (the key's create revision) |
/// | `NewLocker(s, name)`: `Lock()` / `Unlock()` without a context | `lock()` returns the guard; unlocking is dropping it (or `unlock()`), so it cannot be unlocked twice or by a non-holder, and no `ErrLockReleased` exists |
/// | `Session.Done()` while holding | [`Hold::lost`], which fires *before* the server can expire the lease |
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> coord_core::Result<()> {
/// # let backend: std::sync::Arc<dyn coord_core::CoordinationBackend> =
/// #     std::sync::Arc::new(coord_memory::MemoryBackend::new());
/// use coord_core::{BackendExt, Error, Mutex, Session, TxnOp, TxnRequest};
///
/// let (a, b) = (Session::new(backend.clone()).await?, Session::new(backend.clone()).await?);
/// let guard = Mutex::new(&a, "jobs/nightly").lock().await?;
/// assert!(matches!(
///     Mutex::new(&b, "jobs/nightly").try_lock().await,
///     Err(Error::Locked { .. })
/// ));
/// // A write that lands only while the lock is still held.
/// let write = TxnRequest::new()
///     .when([guard.is_owner()])
///     .and_then([TxnOp::put("jobs/nightly-state", "running")]);
/// assert!(backend.txn(write).await?.succeeded);
/// guard.unlock().await?;
/// let next = Mutex::new(&b, "jobs/nightly").lock().await?;
/// next.unlock().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Mutex {
    session: Session,
    name: std::sync::Arc<str>,
    /// The name's queue: made once, not per acquisition.
    queue: Queue,
    /// This session's key on the name, whose per-session state it keeps while this
    /// handle lives.
    key: KeyPin,
}

impl Mutex {
    /// A lock named `name` on `session`. No I/O.
    ///
    /// A name that is empty, ends with `/` or contains a NUL byte is refused with
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) by the first operation,
    /// before any request.
    pub fn new(session: &Session, name: impl Into<String>) -> Self {
        let name: String = name.into();
        Mutex {
            key: KeyPin::new(session, &lock_key(&name, session.lease())),
            queue: Queue::name(&name),
            session: session.clone(),
            name: name.into(),
        }
    }

    /// The lock name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Who holds this lock and who waits for it, in order, with each key's lease and
    /// the time left on it; see [`crate::inspect`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a name that is empty or ends with `/`; any backend
    /// error.
    ///
    /// # Cancel safety
    /// Cancel safe: read only.
    pub async fn status(&self) -> Result<crate::NameStatus> {
        crate::inspect(
            self.session.backend().as_ref(),
            &self.name,
            Some(crate::PrimitiveKind::Lock),
        )
        .await
    }

    /// Acquires the lock, waiting as long as it takes. One round trip when uncontended.
    ///
    /// Another task holding this lock through the same session makes this call wait, as a
    /// holder of another session would (etcd's Go `Mutex` returns at once there: both
    /// "hold"). A task that already holds the lock and asks again waits for itself.
    ///
    /// # Errors
    /// [`Error::SessionExpired`] if the session is or becomes lost before the lock is
    /// granted, even if a backend call never answers (returned at the session's deadline);
    /// [`Error::LockLost`] if the waiting key is deleted by someone else; any backend error.
    /// On every error the waiting key is withdrawn.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future withdraws the waiting key in the background, and
    /// the place in the queue is lost. A lock acquired by a dropped future is released.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use coord_core::{CoordinationBackend, Mutex, Session};
    /// # async fn example(backend: Arc<dyn CoordinationBackend>) -> coord_core::Result<()> {
    /// let session = Session::new(backend).await?;
    /// let mutex = Mutex::new(&session, "jobs/nightly");
    /// // Gives up after 5 s; the waiting key is withdrawn in the background.
    /// let guard = tokio::time::timeout(std::time::Duration::from_secs(5), mutex.lock()).await;
    /// # drop(guard);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn lock(&self) -> Result<MutexGuard> {
        let span = op_span!("mutex.lock", self.name, self.session.lease());
        if unobserved(&span) {
            return self.acquire(Deadline::NONE).await;
        }
        let acquire = Box::pin(self.acquire(Deadline::NONE));
        acquisition(span, HoldKind::Lock, &self.name, acquire).await
    }

    /// Acquires the lock if nobody else (no other session, and no other task of this
    /// session) holds it, in one round trip (plus a background withdrawal when it is held).
    ///
    /// # Errors
    /// [`Error::Locked`] naming the holder's key when another session holds the lock; the
    /// errors of [`Mutex::lock`] otherwise. No key is left behind.
    ///
    /// # Cancel safety
    /// Cancel safe: a key created by a dropped call is withdrawn in the background.
    pub async fn try_lock(&self) -> Result<MutexGuard> {
        check_name("lock", &self.name)?;
        let span = op_span!("mutex.try_lock", self.name, self.session.lease());
        if unobserved(&span) {
            return self.try_acquire().await;
        }
        let acquire = Box::pin(self.try_acquire());
        acquisition(span, HoldKind::Lock, &self.name, acquire).await
    }

    async fn acquire(&self, deadline: Deadline) -> Result<MutexGuard> {
        check_name("lock", &self.name)?;
        let queue = &self.queue;
        let what = || format!("lock {:?}", self.name);
        // The claim also reads the queue, so that waiting starts without a read.
        let extra = vec![TxnOp::range(queue_read(queue))];
        let claim = claim_pinned(&self.session, &self.key, b"", extra, deadline).await?;
        let Some(mut claim) = claim else {
            return Err(deadline.elapsed(what()));
        };
        let read = claim.take_read(0)?;
        let known = Ahead::after_claim(&claim, &read, queue);
        let own = claim.key;
        // Waiting is boxed: its futures are large, and would otherwise be moved around in
        // every uncontended acquisition's future too.
        let known = match known {
            Some(known) => Some(known),
            None => Box::pin(resolve_ahead(&own, queue, None)).await?,
        };
        if !known.as_ref().is_some_and(Ahead::is_clear)
            && deadline
                .bound(Box::pin(wait_for_predecessors(&own, queue, known)))
                .await?
                .is_none()
        {
            Box::pin(withdraw_on_timeout(own)).await;
            return Err(deadline.elapsed(what()));
        }
        self.session.unless_lost(MutexGuard(Hold::named(
            HoldKind::Lock,
            self.name.clone(),
            own,
        )))
    }

    async fn try_acquire(&self) -> Result<MutexGuard> {
        let queue = &self.queue;
        let extra = vec![TxnOp::range(queue.first_created())];
        // Another task of this session holds or waits for it: held, as by anyone else.
        let mut claim = try_claim_pinned(&self.session, &self.key, b"", extra)
            .await?
            .ok_or_else(|| Error::Locked {
                name: self.name.to_string(),
                holder: Some(self.key.key().to_owned()),
            })?;
        let read = claim.take_read(0)?;
        let own = claim.key;
        let holder = match queue.oldest(self.session.backend().as_ref(), &read).await {
            Ok(holder) => holder,
            Err(e) => {
                let _ = own.release().await;
                return Err(e);
            }
        };
        if let Some(h) = holder
            && h.create_revision != own.create_revision()
        {
            let holder = h.key_str().into_owned();
            if let Err(e) = own.release().await {
                tracing::debug!(error = %e, "withdrawing after try_lock failed; retrying in the background");
            }
            return Err(Error::Locked {
                name: self.name.to_string(),
                holder: Some(holder),
            });
        }
        self.session.unless_lost(MutexGuard(Hold::named(
            HoldKind::Lock,
            self.name.clone(),
            own,
        )))
    }

    /// [`Mutex::lock`] with a time limit on *waiting for others*: the claim request itself
    /// always completes (its own bound is the connection's request timeout), then `limit`
    /// applies to waiting for older holders and waiters (and for other tasks of this
    /// session at the same lock). So `lock_timeout(Duration::ZERO)` means "try once", on
    /// every backend: a free lock is acquired, a held one answers [`Error::Timeout`].
    ///
    /// # Errors
    /// [`Error::Timeout`] when `limit` passes while waiting (the waiting key is withdrawn
    /// before the error is returned); the errors of [`Mutex::lock`] otherwise.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`Mutex::lock`].
    pub async fn lock_timeout(&self, limit: Duration) -> Result<MutexGuard> {
        let span = op_span!("mutex.lock_timeout", self.name, self.session.lease());
        if unobserved(&span) {
            return self.acquire(Deadline::after(limit)).await;
        }
        let acquire = Box::pin(self.acquire(Deadline::after(limit)));
        acquisition(span, HoldKind::Lock, &self.name, acquire).await
    }
}

/// Proof of holding a [`Mutex`]: a [`Hold`] (key, fencing token, `is_owner`, `lost`).
/// Dropping it releases the lock in the background; prefer [`MutexGuard::unlock`] to learn
/// whether the release reached the backend.
#[must_use = "if unused the lock is released at once"]
#[clippy::has_significant_drop]
#[derive(Debug)]
pub struct MutexGuard(Hold);

impl MutexGuard {
    /// Releases the lock now: see [`Hold`]'s release rules.
    ///
    /// # Errors
    /// [`Error::LockLost`] when the lock had already been lost (the key was gone or
    /// re-created): nothing is deleted, and the caller learns that its critical section was
    /// not fully covered. Any backend error: the release is then retried in the background
    /// until it succeeds or the session ends, so the lock is never left behind.
    ///
    /// # Cancel safety
    /// Cancel safe: the delete runs in the calling task; if the call is dropped before it
    /// is answered, the release finishes in a spawned task, so the lock is never left behind.
    pub async fn unlock(self) -> Result<()> {
        let span = op_span!("mutex.unlock", self.0.name(), self.0.session().lease());
        if unobserved(&span) {
            return self.0.release().await;
        }
        record_hold(&span, &self.0);
        operation(span, Box::pin(self.0.release())).await
    }
}

impl std::ops::Deref for MutexGuard {
    type Target = Hold;

    fn deref(&self) -> &Hold {
        &self.0
    }
}
