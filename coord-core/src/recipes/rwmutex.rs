//! `RwMutex`: readers share, a writer is exclusive, FIFO by revision.

use std::time::Duration;

use super::Session;
use super::hold::{Deadline, Hold, withdraw_on_timeout};
use super::instrument::{acquisition, op_span, operation, record_hold};
use super::name::check_name;
use super::own_key::{OwnedKey, ReadClaim, claim, claim_read, try_claim};
use super::queue::Queue;
use super::wait::{Ahead, queue_read, resolve_ahead, wait_for_predecessors};
use crate::metrics::HoldKind;
use crate::{Error, RangeRequest, Result, TxnOp};

/// The metrics' `kind` of a hold in `mode`.
fn hold_kind(mode: RwMode) -> HoldKind {
    match mode {
        RwMode::Read => HoldKind::RwRead,
        RwMode::Write => HoldKind::RwWrite,
    }
}

/// Whether a guard reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RwMode {
    /// Shared with other readers.
    Read,
    /// Exclusive.
    Write,
}

/// A distributed read/write lock on a name.
///
/// Keys are `<name>/read/<lease hex>` and `<name>/write/<lease hex>`, attached to the
/// session lease, as in etcd's recipe `RWMutex` (which uses the same prefixes and the same
/// order), so a coord reader or writer and a Go one on the same name exclude each other.
/// Order is FIFO by create revision: a reader waits only for older writers, a writer waits
/// for every older key, so a steady stream of readers cannot starve a writer.
///
/// On a name that a [`crate::Mutex`], [`crate::Election`] or [`crate::Semaphore`] uses
/// (keys `<name>/<lease hex>`), a writer waits for their keys and they wait for readers and
/// writers; a reader, which waits only for writers, refuses the name with
/// [`Error::InvalidArgument`] naming the key instead. Keys of deeper names
/// (`<name>/x/…`) never count.
///
/// Tasks sharing a session exclude each other as separate sessions do: a second writer
/// waits for the first, and readers of one session share a read key only while no writer
/// (of any session) is queued behind it, so one session's overlapping readers cannot starve
/// another session's writer. There is no upgrade or downgrade, as in etcd's recipe: a write
/// holder that asks for a read lock on the same name, or a reader that asks for the write
/// lock, waits for itself. So may a task that holds a read lock and asks for another one
/// on the same session and name while a writer is queued: it may not join its own read key
/// then, and waits for it to end.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> coord_core::Result<()> {
/// # let backend: std::sync::Arc<dyn coord_core::CoordinationBackend> =
/// #     std::sync::Arc::new(coord_memory::MemoryBackend::new());
/// use coord_core::{RwMutex, Session};
///
/// let (a, b) = (Session::new(backend.clone()).await?, Session::new(backend.clone()).await?);
/// // Readers share...
/// let r1 = RwMutex::new(&a, "catalog").read().await?;
/// let r2 = RwMutex::new(&b, "catalog").read().await?;
/// // ...and a writer waits for both.
/// let writer = tokio::spawn({
///     let rw = RwMutex::new(&b, "catalog");
///     async move { rw.write().await }
/// });
/// let reader_token = r2.fencing_token();
/// r1.unlock().await?;
/// r2.unlock().await?;
/// let w = writer.await.unwrap()?;
/// assert!(w.fencing_token() > reader_token);
/// w.unlock().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RwMutex {
    session: Session,
    name: String,
}

impl RwMutex {
    /// A read/write lock named `name` on `session`. No I/O.
    ///
    /// A name that is empty, ends with `/` or contains a NUL byte is refused with
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) by the first operation,
    /// before any request.
    pub fn new(session: &Session, name: impl Into<String>) -> Self {
        RwMutex {
            session: session.clone(),
            name: name.into(),
        }
    }

    /// The lock name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Who holds this read/write lock (readers and writers, held and queued) and who waits for it, in order, with each key's lease and
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
            Some(crate::PrimitiveKind::RwLock),
        )
        .await
    }

    /// Takes a shared read lock, waiting for older writers.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the key when a mutex, election or semaphore uses
    /// the name (nothing is left behind); as [`crate::Mutex::lock`] otherwise.
    ///
    /// # Cancel safety
    /// Cancel safe: the waiting key is withdrawn in the background.
    pub async fn read(&self) -> Result<RwMutexGuard> {
        let span = op_span!("rwmutex.read", self.name, self.session.lease());
        self.observed(span, RwMode::Read, Some(Deadline::NONE))
            .await
    }

    /// Takes the exclusive write lock, waiting for every older reader and writer.
    ///
    /// # Errors
    /// As [`crate::Mutex::lock`].
    ///
    /// # Cancel safety
    /// Cancel safe: the waiting key is withdrawn in the background.
    pub async fn write(&self) -> Result<RwMutexGuard> {
        let span = op_span!("rwmutex.write", self.name, self.session.lease());
        self.observed(span, RwMode::Write, Some(Deadline::NONE))
            .await
    }

    /// Takes a read lock if no older writer exists.
    ///
    /// # Errors
    /// [`Error::Locked`] when it would have to wait; as [`crate::Mutex::lock`] otherwise.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn try_read(&self) -> Result<RwMutexGuard> {
        let span = op_span!("rwmutex.try_read", self.name, self.session.lease());
        self.observed(span, RwMode::Read, None).await
    }

    /// Takes the write lock if no other key exists.
    ///
    /// # Errors
    /// [`Error::Locked`] when it would have to wait; as [`crate::Mutex::lock`] otherwise.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn try_write(&self) -> Result<RwMutexGuard> {
        let span = op_span!("rwmutex.try_write", self.name, self.session.lease());
        self.observed(span, RwMode::Write, None).await
    }

    /// [`RwMutex::read`] or [`RwMutex::write`] with a time limit on *waiting for others*,
    /// as [`crate::Mutex::lock_timeout`]: the claim request always completes, then `limit`
    /// applies to waiting for older blockers. A zero limit means "try once": granted when
    /// nothing blocks, [`Error::Timeout`] otherwise.
    ///
    /// # Errors
    /// [`Error::Timeout`] when `limit` passes while waiting (the waiting key is withdrawn
    /// before the error is returned); as [`crate::Mutex::lock`] otherwise.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn lock_timeout(&self, mode: RwMode, limit: Duration) -> Result<RwMutexGuard> {
        let span = op_span!("rwmutex.lock_timeout", self.name, self.session.lease(), mode = ?mode);
        self.observed(span, mode, Some(Deadline::after(limit)))
            .await
    }

    /// [`Self::acquire`] in `span`, with its metrics.
    async fn observed(
        &self,
        span: tracing::Span,
        mode: RwMode,
        deadline: Option<Deadline>,
    ) -> Result<RwMutexGuard> {
        let acquire = self.acquire(mode, deadline);
        acquisition(span, hold_kind(mode), &self.name, acquire).await
    }

    /// The keys whose older ones block `mode`.
    fn blockers(&self, mode: RwMode) -> Queue {
        match mode {
            RwMode::Read => Queue::writers(&self.name),
            RwMode::Write => Queue::name(&self.name),
        }
    }

    /// A reader refuses a name that a mutex, election or semaphore holds or waits for
    /// (`NAME/<lease hex>`): it waits only for writers, so it would not exclude them. (A
    /// writer waits for them, and they wait for readers and writers, so those exclude.)
    /// `read` is the claim's answer to [`Self::mutex_keys`].
    async fn refuse_mutex_keys(
        &self,
        read: &crate::RangeResponse,
        own: OwnedKey,
    ) -> Result<OwnedKey> {
        let children = Queue::children(&self.name);
        let found = match children.members(read) {
            Some(members) => members.into_iter().next(),
            None => match self
                .session
                .backend()
                .range(Queue::unlimited(Self::mutex_keys(&self.name)))
                .await
            {
                Ok(all) => all.kvs.into_iter().find(|kv| children.contains(&kv.key)),
                Err(e) => {
                    let _ = own.release().await;
                    return Err(e);
                }
            },
        };
        let Some(other) = found else {
            return Ok(own);
        };
        let _ = own.release().await;
        Err(Error::invalid_argument(format!(
            "name {:?} is in use by a mutex, election or semaphore (key {:?}); a read lock \
             cannot share it: use another name, or a write lock, which waits for it",
            self.name,
            other.key_str()
        )))
    }

    /// Where a mutex's, election's or semaphore's keys on the name would be: lease ids in
    /// lowercase hex sort between `NAME/0` and `NAME/g`, apart from `read/` and `write/`.
    fn mutex_keys(name: &str) -> RangeRequest {
        RangeRequest::new(crate::KeyRange::range(
            format!("{name}/0"),
            format!("{name}/g"),
        ))
        .keys_only()
        .limit(16)
    }

    /// `deadline`: `None` tries once ([`Error::Locked`]), `Some` waits until then.
    async fn acquire(&self, mode: RwMode, deadline: Option<Deadline>) -> Result<RwMutexGuard> {
        check_name("rw lock", &self.name)?;
        let wait = deadline.is_some();
        let deadline = deadline.unwrap_or(Deadline::NONE);
        let timed_out = || deadline.elapsed(format_args!("{mode:?} lock {:?}", self.name));
        let dir = match mode {
            RwMode::Read => "read",
            RwMode::Write => "write",
        };
        let key = format!("{}/{dir}/{:x}", self.name, self.session.lease());
        let blockers = self.blockers(mode);
        // Waiting, the claim also reads the queue so that the wait starts without a read;
        // trying, it reads the oldest blocker (if that is absent or is our own key, nothing
        // older blocks us).
        let mut extra = vec![TxnOp::range(if wait {
            queue_read(&blockers)
        } else {
            blockers.first_created()
        })];
        if mode == RwMode::Read {
            extra.push(TxnOp::range(Self::mutex_keys(&self.name)));
        }
        let locked = || Error::Locked {
            name: self.name.clone(),
            holder: None,
        };
        let claim = match mode {
            RwMode::Read => {
                let writers = self.blockers(RwMode::Read).prefix;
                match claim_read(&self.session, key, &writers, extra, wait, deadline).await? {
                    Some(ReadClaim::Joined(own)) => return self.guard(mode, own),
                    Some(ReadClaim::Claimed(mut claim)) => {
                        let read = claim.read(1)?;
                        claim.key = self.refuse_mutex_keys(&read, claim.key).await?;
                        claim
                    }
                    None if wait => return Err(timed_out()),
                    None => return Err(locked()),
                }
            }
            RwMode::Write if wait => claim(&self.session, key, b"", extra, deadline)
                .await?
                .ok_or_else(timed_out)?,
            RwMode::Write => try_claim(&self.session, key, b"", extra)
                .await?
                .ok_or_else(locked)?,
        };
        if wait {
            let known = Ahead::after_claim(&claim, &claim.read(0)?, &blockers);
            let own = claim.key;
            let known = resolve_ahead(&own, &blockers, known).await?;
            if !known.as_ref().is_some_and(Ahead::is_clear)
                && deadline
                    .bound(wait_for_predecessors(&own, &blockers, known))
                    .await?
                    .is_none()
            {
                withdraw_on_timeout(own).await;
                return Err(timed_out());
            }
            return self.granted(mode, own);
        }
        let read = claim.read(0)?;
        let own = claim.key;
        let oldest = match blockers
            .oldest(self.session.backend().as_ref(), &read)
            .await
        {
            Ok(oldest) => oldest,
            Err(e) => {
                let _ = own.release().await;
                return Err(e);
            }
        };
        if let Some(o) = oldest
            && o.create_revision < own.create_revision()
        {
            let holder = o.key_str().into_owned();
            let _ = own.release().await;
            return Err(Error::Locked {
                name: self.name.clone(),
                holder: Some(holder),
            });
        }
        self.granted(mode, own)
    }

    fn granted(&self, mode: RwMode, own: OwnedKey) -> Result<RwMutexGuard> {
        if mode == RwMode::Read {
            own.publish_read();
        }
        self.guard(mode, own)
    }

    fn guard(&self, mode: RwMode, own: OwnedKey) -> Result<RwMutexGuard> {
        self.session.unless_lost(RwMutexGuard {
            hold: Hold::new(hold_kind(mode), &self.name, own),
            mode,
        })
    }
}

/// Proof of holding an [`RwMutex`] in some [`RwMode`]: a [`Hold`] (key, fencing token,
/// `is_owner`, `lost`). Dropping it releases in the background.
#[must_use = "if unused the lock is released at once"]
#[clippy::has_significant_drop]
#[derive(Debug)]
pub struct RwMutexGuard {
    hold: Hold,
    mode: RwMode,
}

impl RwMutexGuard {
    /// Read or write.
    pub fn mode(&self) -> RwMode {
        self.mode
    }

    /// Releases now: see [`crate::MutexGuard::unlock`]. A read key shared with other
    /// readers of the session stays until the last of them lets go.
    ///
    /// # Errors
    /// [`Error::LockLost`] when it had already been lost (the key was gone or re-created):
    /// nothing is deleted. Any backend error; the release is then retried in the background.
    ///
    /// # Cancel safety
    /// Cancel safe: the delete runs in the calling task; if the call is dropped before it
    /// is answered, the release finishes in a spawned task, so the lock is never left behind.
    pub async fn unlock(self) -> Result<()> {
        let span = op_span!(
            "rwmutex.unlock",
            self.hold.name(),
            self.hold.session().lease()
        );
        record_hold(&span, &self.hold);
        operation(span, self.hold.release()).await
    }
}

impl std::ops::Deref for RwMutexGuard {
    type Target = Hold;

    fn deref(&self) -> &Hold {
        &self.hold
    }
}
