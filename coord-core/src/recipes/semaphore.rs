//! `Semaphore`: at most N sessions hold a permit at once.

use std::time::Duration;

use super::hold::{Deadline, Hold, withdraw_on_timeout};
use super::instrument::{acquisition, op_span, operation, record_hold};
use super::name::check_name;
use super::own_key::{OwnedKey, claim, try_claim};
use super::queue::Queue;
use super::wait::{check_own, wait_for_deletes};
use super::{Session, lock_key};
use crate::metrics::HoldKind;
use crate::{Error, RangeRequest, Result, SortOrder, SortTarget, TxnOp, TxnRequest};

/// A distributed counting semaphore: at most `permits` sessions hold it at once.
///
/// Keys are `<name>/<lease hex>` as for [`crate::Mutex`] (a semaphore of one permit is a
/// mutex), and a session holds a permit when fewer than `permits` keys are older than its
/// own. etcd has no semaphore recipe; this one follows the mutex's pattern. Every
/// participant must use the same `permits` for one name.
///
/// One session holds at most one permit of a name at a time (its key is per lease): a
/// second `acquire` on the same session waits until the first permit is released. Use one
/// session per permit a process needs at once.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> coord_core::Result<()> {
/// # let backend: std::sync::Arc<dyn coord_core::CoordinationBackend> =
/// #     std::sync::Arc::new(coord_memory::MemoryBackend::new());
/// use coord_core::{Error, Semaphore, Session};
///
/// // Two permits: two sessions get in, a third is turned away until one leaves.
/// let (a, b, c) = (
///     Session::new(backend.clone()).await?,
///     Session::new(backend.clone()).await?,
///     Session::new(backend.clone()).await?,
/// );
/// let first = Semaphore::new(&a, "encoders", 2)?.acquire().await?;
/// let second = Semaphore::new(&b, "encoders", 2)?.acquire().await?;
/// let third = Semaphore::new(&c, "encoders", 2)?;
/// assert!(matches!(third.try_acquire().await, Err(Error::Locked { .. })));
/// first.release().await?;
/// let permit = third.acquire().await?;
/// assert!(permit.fencing_token() > second.fencing_token());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Semaphore {
    session: Session,
    name: String,
    permits: usize,
}

impl Semaphore {
    /// The most permits a semaphore may have: the largest range limit a backend accepts
    /// (etcd's is a signed 64-bit number).
    pub const MAX_PERMITS: usize = i64::MAX as usize;

    /// A semaphore of `permits` permits named `name` on `session`. No I/O.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `permits` is zero or above [`Semaphore::MAX_PERMITS`],
    /// naming the count and what is accepted.
    /// The same for a name that is empty, ends with `/` or contains a NUL byte.
    pub fn new(session: &Session, name: impl Into<String>, permits: usize) -> Result<Self> {
        let name = name.into();
        check_name("semaphore", &name)?;
        if permits == 0 || permits > Self::MAX_PERMITS {
            return Err(Error::invalid_argument(format!(
                "semaphore {name:?}: {permits} permits is not accepted; the count must be 1 to {}",
                Self::MAX_PERMITS
            )));
        }
        Ok(Semaphore {
            session: session.clone(),
            name,
            permits,
        })
    }

    /// The semaphore's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many sessions may hold a permit at once.
    pub fn permits(&self) -> usize {
        self.permits
    }

    /// Who holds this semaphore (the oldest `permits` keys hold) and who waits for it, in order, with each key's lease and
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
            Some(crate::PrimitiveKind::Semaphore {
                permits: self.permits,
            }),
        )
        .await
    }

    /// Takes a permit, waiting until fewer than `permits` older holders or waiters remain.
    ///
    /// # Errors
    /// As [`crate::Mutex::lock`].
    ///
    /// # Cancel safety
    /// Cancel safe: the waiting key is withdrawn in the background.
    pub async fn acquire(&self) -> Result<SemaphorePermit> {
        let span = op_span!("semaphore.acquire", self.name, self.session.lease());
        self.observed(span, Some(Deadline::NONE)).await
    }

    /// Takes a permit if one is free now.
    ///
    /// # Errors
    /// [`Error::Locked`] when all permits are taken; as [`crate::Mutex::lock`] otherwise.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn try_acquire(&self) -> Result<SemaphorePermit> {
        let span = op_span!("semaphore.try_acquire", self.name, self.session.lease());
        self.observed(span, None).await
    }

    /// [`Semaphore::acquire`] with a time limit on *waiting for others*, as
    /// [`crate::Mutex::lock_timeout`]: the claim request always completes, then `limit`
    /// applies to waiting for a permit to free up. A zero limit means "try once": a free
    /// permit is taken, otherwise [`Error::Timeout`].
    ///
    /// # Errors
    /// [`Error::Timeout`] when `limit` passes while waiting (the waiting key is withdrawn
    /// before the error is returned); as [`crate::Mutex::lock`] otherwise.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn acquire_timeout(&self, limit: Duration) -> Result<SemaphorePermit> {
        let span = op_span!("semaphore.acquire_timeout", self.name, self.session.lease());
        self.observed(span, Some(Deadline::after(limit))).await
    }

    /// [`Self::acquire_inner`] in `span`, with its metrics.
    async fn observed(
        &self,
        span: tracing::Span,
        deadline: Option<Deadline>,
    ) -> Result<SemaphorePermit> {
        let acquire = self.acquire_inner(deadline);
        acquisition(span, HoldKind::Semaphore, &self.name, acquire).await
    }

    /// The oldest `permits` keys: the holders, if we are among them (keys of other names
    /// under the prefix aside: see [`Semaphore::members`]).
    fn holders(&self, prefix: &str) -> RangeRequest {
        RangeRequest::prefix(prefix)
            .sort(SortTarget::CreateRevision, SortOrder::Ascend)
            .limit(self.permits as i64)
            .keys_only()
    }

    /// `deadline`: `None` tries once ([`Error::Locked`]), `Some` waits until then.
    async fn acquire_inner(&self, deadline: Option<Deadline>) -> Result<SemaphorePermit> {
        let wait = deadline.is_some();
        let deadline = deadline.unwrap_or(Deadline::NONE);
        let timed_out = || deadline.elapsed(format_args!("acquire semaphore {:?}", self.name));
        let prefix = format!("{}/", self.name);
        let key = lock_key(&self.name, self.session.lease());
        let extra = vec![TxnOp::range(self.holders(&prefix))];
        let claim = if wait {
            claim(&self.session, key, b"", extra, deadline)
                .await?
                .ok_or_else(timed_out)?
        } else {
            try_claim(&self.session, key, b"", extra)
                .await?
                .ok_or_else(|| Error::Locked {
                    name: self.name.clone(),
                    holder: None,
                })?
        };
        let holders = claim.read(0)?;
        let claim_revision = claim.revision;
        let own = claim.key;
        let mine = own.create_revision();
        let queue = Queue::name(&self.name);
        let holders = match self.members(&queue, &holders, self.holders(&prefix)).await {
            Ok(holders) => holders,
            Err(e) => {
                let _ = own.release().await;
                return Err(e);
            }
        };
        if holders
            .iter()
            .take(self.permits)
            .any(|kv| kv.create_revision == mine)
        {
            return self.permit(own);
        }
        if !wait {
            let _ = own.release().await;
            return Err(Error::Locked {
                name: self.name.clone(),
                holder: None,
            });
        }
        let backend = self.session.backend().clone();
        let older = self.holders(&prefix).max_create_revision(mine - 1);
        let permits = self.permits;
        let queue = &queue;
        // The claim's read just showed at least `permits` keys older than ours.
        let waited = deadline.bound(wait_for_deletes(
            &own,
            &prefix,
            Some(claim_revision),
            || {
                let backend = backend.clone();
                let older = older.clone();
                let own = &own;
                async move {
                    let mut read = older.clone();
                    loop {
                        let resp = backend
                            .txn(TxnRequest::new().and_then([
                                TxnOp::range(RangeRequest::key(own.key())),
                                TxnOp::range(read.clone()),
                            ]))
                            .await?;
                        check_own(own, resp.range(0)?.kvs.first())?;
                        match queue.members(resp.range(1)?) {
                            Some(ahead) => {
                                return Ok((ahead.len() < permits).then_some(resp.revision));
                            }
                            // Keys of other names crowded the read: count them all.
                            None => read = Queue::unlimited(older.clone()),
                        }
                    }
                }
            },
        ));
        if waited.await?.is_none() {
            withdraw_on_timeout(own).await;
            return Err(timed_out());
        }
        self.permit(own)
    }

    /// The contenders among the holders `read` returned (read again without its limit when
    /// keys of other names crowded it), oldest first.
    async fn members(
        &self,
        queue: &Queue,
        read: &crate::RangeResponse,
        request: RangeRequest,
    ) -> Result<Vec<crate::KeyValue>> {
        if let Some(members) = queue.members(read) {
            return Ok(members);
        }
        let all = self
            .session
            .backend()
            .range(Queue::unlimited(request))
            .await?;
        Ok(all
            .kvs
            .into_iter()
            .filter(|kv| queue.contains(&kv.key))
            .collect())
    }

    fn permit(&self, own: OwnedKey) -> Result<SemaphorePermit> {
        self.session.unless_lost(SemaphorePermit(Hold::new(
            HoldKind::Semaphore,
            &self.name,
            own,
        )))
    }
}

/// A held permit of a [`Semaphore`]: a [`Hold`] (key, fencing token, `is_owner`, `lost`).
/// Dropping it releases in the background.
#[must_use = "if unused the permit is released at once"]
#[clippy::has_significant_drop]
#[derive(Debug)]
pub struct SemaphorePermit(Hold);

impl SemaphorePermit {
    /// Releases now: see [`crate::MutexGuard::unlock`].
    ///
    /// # Errors
    /// [`Error::LockLost`] when it had already been lost (the key was gone or re-created):
    /// nothing is deleted. Any backend error; the release is then retried in the background.
    ///
    /// # Cancel safety
    /// Cancel safe: the delete runs in the calling task; if the call is dropped before it
    /// is answered, the release finishes in a spawned task, so the permit is never left
    /// behind.
    pub async fn release(self) -> Result<()> {
        let span = op_span!("semaphore.release", self.0.name(), self.0.session().lease());
        record_hold(&span, &self.0);
        operation(span, self.0.release()).await
    }
}

impl std::ops::Deref for SemaphorePermit {
    type Target = Hold;

    fn deref(&self) -> &Hold {
        &self.0
    }
}
