//! The backend contract every store implements.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::{
    Error, LeaseGrant, LeaseId, LeaseStatus, RangeRequest, RangeResponse, Result, Revision, TxnOp,
    TxnRequest, TxnResponse, WatchRequest, WatchStream,
};

/// etcd's largest lease TTL (`MaxLeaseTTL` in etcd's lease package: 9,000,000,000 s). Every
/// backend refuses a longer one, so that a TTL accepted on one backend is accepted on all.
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(9_000_000_000);

/// The largest request etcd accepts with default settings (`--max-request-bytes`,
/// 1,572,864 bytes = 1.5 MiB; larger ones fail with "etcdserver: request is too large").
/// The other backends refuse a txn whose keys and values add up to more, so that a request
/// accepted on one backend is accepted on all.
pub const MAX_REQUEST_BYTES: usize = 1_572_864;

/// Refuses a TTL above `max` with [`Error::InvalidArgument`] naming both.
///
/// # Errors
/// [`Error::InvalidArgument`] when `ttl > max`.
pub fn check_lease_ttl(ttl: Duration, max: Duration) -> Result<()> {
    if ttl > max {
        return Err(Error::invalid_argument(format!(
            "lease TTL {ttl:?} is above the maximum of {max:?} ({} s)",
            max.as_secs()
        )));
    }
    Ok(())
}

/// The bytes of keys, range ends and values a txn carries: what [`MAX_REQUEST_BYTES`]
/// bounds.
pub fn request_bytes(request: &TxnRequest) -> usize {
    let compares: usize = request
        .compares
        .iter()
        .map(|c| {
            c.key.len()
                + match &c.target {
                    crate::CompareTarget::Value(v) => v.len(),
                    _ => 0,
                }
        })
        .sum();
    let ops = |ops: &[TxnOp]| -> usize {
        ops.iter()
            .map(|op| match op {
                TxnOp::Put(p) => p.key.len() + p.value.len(),
                TxnOp::Delete(d) => range_bytes(&d.range),
                TxnOp::Range(r) => range_bytes(&r.range),
            })
            .sum()
    };
    compares + ops(&request.success) + ops(&request.failure)
}

/// The bytes of [`KeyRange::to_etcd_bounds`](crate::KeyRange::to_etcd_bounds), counted
/// without building them: every txn is measured.
fn range_bytes(range: &crate::KeyRange) -> usize {
    match range {
        crate::KeyRange::Key(k) => k.len(),
        crate::KeyRange::Prefix(p) if p.is_empty() => 2,
        // The end is the prefix up to its last byte below 0xff, or `[0]`.
        crate::KeyRange::Prefix(p) => {
            p.len() + p.iter().rposition(|b| *b < 0xff).map_or(1, |i| i + 1)
        }
        crate::KeyRange::Range { start, end } => start.len() + end.len(),
    }
}

/// Refuses a txn larger than `limit` bytes ([`request_bytes`]) with
/// [`Error::InvalidArgument`] naming its size and the limit, in the words etcd uses.
///
/// # Errors
/// [`Error::InvalidArgument`] when the request is too large.
pub fn check_request_size(request: &TxnRequest, limit: usize) -> Result<()> {
    let size = request_bytes(request);
    if size > limit {
        return Err(request_too_large(Some(size), limit));
    }
    Ok(())
}

/// The error for a request over `limit` bytes (`size` when known): the same kind and
/// message on every backend.
pub fn request_too_large(size: Option<usize>, limit: usize) -> Error {
    let size = size.map_or_else(String::new, |s| format!(" ({s} bytes of keys and values)"));
    Error::invalid_argument(format!(
        "request is too large{size}: the limit is {limit} bytes"
    ))
}

/// What a backend is and what it can do, for diagnostics and for the conformance suite.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackendInfo {
    /// Short name: `"memory"`, `"etcd"`, `"redis"`.
    pub name: &'static str,
    /// Lease TTLs are rounded up to a multiple of this.
    pub lease_granularity: Duration,
    /// The shortest TTL the backend grants; shorter requests are raised to it.
    pub min_lease_ttl: Duration,
    /// The longest TTL the backend grants; longer requests are refused with
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument). [`MAX_LEASE_TTL`] unless
    /// [`with_max_lease_ttl`](Self::with_max_lease_ttl) says otherwise.
    pub max_lease_ttl: Duration,
    /// The largest request accepted, in bytes of keys and values ([`request_bytes`]);
    /// larger ones are refused with [`Error::InvalidArgument`](crate::Error::InvalidArgument).
    /// [`MAX_REQUEST_BYTES`] unless [`with_max_request_bytes`](Self::with_max_request_bytes)
    /// says otherwise.
    pub max_request_bytes: usize,
    /// Whether every write raises the revision by exactly one (etcd, memory): true unless
    /// [`with_sparse_revisions`](Self::with_sparse_revisions) says otherwise.
    pub dense_revisions: bool,
}

impl BackendInfo {
    /// Describes a backend.
    pub fn new(name: &'static str, lease_granularity: Duration, min_lease_ttl: Duration) -> Self {
        BackendInfo {
            name,
            lease_granularity,
            min_lease_ttl,
            max_lease_ttl: MAX_LEASE_TTL,
            max_request_bytes: MAX_REQUEST_BYTES,
            dense_revisions: true,
        }
    }

    /// Says the longest TTL granted is `max`.
    #[must_use]
    pub fn with_max_lease_ttl(mut self, max: Duration) -> Self {
        self.max_lease_ttl = max;
        self
    }

    /// Says the largest request accepted is `max` bytes of keys and values.
    #[must_use]
    pub fn with_max_request_bytes(mut self, max: usize) -> Self {
        self.max_request_bytes = max;
        self
    }

    /// Says that a write raises the revision by one *or more*: revisions still rise
    /// strictly with every write, in the order of the writes, but skip numbers (say, a
    /// backend that keeps revisions at or above its clock so they never repeat after the
    /// store lost data). Recipes only compare revisions, so they work the same.
    #[must_use]
    pub fn with_sparse_revisions(mut self) -> Self {
        self.dense_revisions = false;
        self
    }
}

/// A linearizable, revisioned key-value store with leases and watches: etcd's data model,
/// reduced to what coordination recipes need.
///
/// The recipes in this crate ([`crate::Session`], [`crate::Mutex`], [`crate::Election`], ...)
/// are written once against this trait. It is object safe: recipes hold an
/// `Arc<dyn CoordinationBackend>`.
///
/// # Contract
///
/// - **Revisions.** The store has one revision counter. Every [`txn`](Self::txn) that
///   changes anything, and every lease expiry or revoke that deletes keys, raises it by
///   exactly one (by one or more where [`BackendInfo::dense_revisions`] is false), and all
///   of its changes carry the new revision. A txn that changes nothing (only reads, or a
///   failed compare with a read-only branch) leaves it alone.
/// - **Keys** carry `create_revision` (the revision that created them since they were last
///   absent), `mod_revision`, `version` (1 after creation, +1 per write) and `lease`.
/// - **Txn** is atomic and linearizable. Compares are evaluated on the state before the txn;
///   the operations of the chosen branch run in order, each seeing the writes of the earlier
///   ones. A compare on an absent key sees 0 for every numeric field and is false for a value
///   compare.
/// - **Range** applies key range, then revision filters, then sort, then limit; `more` tells
///   whether the limit cut keys off; `count` is taken before the filters and the limit.
/// - **Leases.** A key put with a lease is deleted when the lease expires or is revoked. All
///   of a lease's keys are deleted in one new revision, and watchers see one DELETE event for
///   each. A lease expires when `ttl` has passed since it was granted or last kept alive.
/// - **Watch** returns once the watch is established. From then on it delivers every change
///   to the watched keys at or after its start revision, in revision order, grouped by
///   revision, with nothing skipped. A start revision older than the oldest kept revision
///   ends the stream with [`Error::Compacted`](crate::Error::Compacted). A backend that loses
///   its connection resumes the watch from the next revision by itself or ends the stream
///   with an error.
///
/// # Errors
///
/// Every method may fail with [`Error::Unavailable`](crate::Error::Unavailable) (retryable;
/// a write may or may not have been applied), [`Error::Timeout`](crate::Error::Timeout),
/// [`Error::Unauthenticated`](crate::Error::Unauthenticated),
/// [`Error::PermissionDenied`](crate::Error::PermissionDenied) or
/// [`Error::Backend`](crate::Error::Backend). Bad input gives
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument). Method docs list the rest.
/// An answer these rules forbid (say, a txn answer with fewer responses than the branch
/// has operations) is a backend bug; the recipes report it as
/// [`Error::Contract`](crate::Error::Contract) instead of guessing.
///
/// # Cancel safety
///
/// Dropping a call's future before it completes leaves the store as if the call either
/// happened entirely or not at all (a txn is never half-applied), but the caller cannot tell
/// which. Recipes therefore guard every write with a compare so that a retry is harmless.
#[async_trait]
pub trait CoordinationBackend: Send + Sync + std::fmt::Debug + 'static {
    /// Name and capabilities.
    fn info(&self) -> BackendInfo;

    /// Grants a lease of at least `ttl`: raised to [`BackendInfo::min_lease_ttl`] and
    /// rounded up to a multiple of [`BackendInfo::lease_granularity`]. The answer carries
    /// the TTL granted.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a zero TTL or one above
    /// [`BackendInfo::max_lease_ttl`] (naming both); nothing is granted then.
    ///
    /// # Cancel safety
    /// Not cancel safe: a lease granted by a dropped call is never reported and expires
    /// after its TTL.
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseGrant>;

    /// Refreshes a lease, returning its TTL (time left after the refresh).
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`](crate::Error::LeaseNotFound) once the lease has expired or
    /// been revoked.
    ///
    /// # Cancel safety
    /// Cancel safe: a refresh is idempotent.
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration>;

    /// Revokes a lease, deleting its keys in one revision.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`](crate::Error::LeaseNotFound) when it does not exist.
    ///
    /// # Cancel safety
    /// Cancel safe: revoking is idempotent (a repeat gives `LeaseNotFound`).
    async fn lease_revoke(&self, lease: LeaseId) -> Result<()>;

    /// The lease's granted and remaining TTL.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`](crate::Error::LeaseNotFound) when it does not exist.
    ///
    /// # Cancel safety
    /// Cancel safe: read only.
    async fn lease_time_to_live(&self, lease: LeaseId) -> Result<LeaseStatus>;

    /// Reads keys.
    ///
    /// # Cancel safety
    /// Cancel safe: read only.
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse>;

    /// Runs a transaction.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`](crate::Error::LeaseNotFound) when a put names a lease that does
    /// not exist (the whole txn is rejected);
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) naming the size and the
    /// limit when the request is larger than [`BackendInfo::max_request_bytes`] (nothing is
    /// written).
    ///
    /// # Cancel safety
    /// See the trait docs: atomic, but a dropped call may or may not have been applied.
    async fn txn(&self, request: TxnRequest) -> Result<TxnResponse>;

    /// Establishes a watch; see [`WatchStream`].
    ///
    /// # Errors
    /// A start revision that is already compacted is reported on the stream, not here.
    ///
    /// # Cancel safety
    /// Cancel safe: a watch dropped while being established is cancelled.
    async fn watch(&self, request: WatchRequest) -> Result<WatchStream>;

    /// The store's current revision.
    ///
    /// # Cancel safety
    /// Cancel safe: read only.
    async fn current_revision(&self) -> Result<Revision>;

    /// Discards history before `revision`: watches can no longer start below it.
    ///
    /// # Errors
    /// [`Error::Compacted`](crate::Error::Compacted) when already compacted at or past
    /// `revision`; [`Error::InvalidArgument`](crate::Error::InvalidArgument) when `revision`
    /// is not positive or is in the future.
    ///
    /// # Cancel safety
    /// Cancel safe: compaction is idempotent.
    async fn compact(&self, revision: Revision) -> Result<()>;
}

/// Forwards every call to the backend behind a smart pointer, so `Arc<B>`, `Box<B>`,
/// `Arc<dyn CoordinationBackend>` and `Box<dyn CoordinationBackend>` are backends too (and
/// can be wrapped again).
macro_rules! forward_through {
    ($($pointer:ident),*) => {$(
        #[async_trait]
        impl<B: CoordinationBackend + ?Sized> CoordinationBackend for $pointer<B> {
            fn info(&self) -> BackendInfo {
                (**self).info()
            }
            async fn lease_grant(&self, ttl: Duration) -> Result<LeaseGrant> {
                (**self).lease_grant(ttl).await
            }
            async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration> {
                (**self).lease_keep_alive(lease).await
            }
            async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
                (**self).lease_revoke(lease).await
            }
            async fn lease_time_to_live(&self, lease: LeaseId) -> Result<LeaseStatus> {
                (**self).lease_time_to_live(lease).await
            }
            async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
                (**self).range(request).await
            }
            async fn txn(&self, request: TxnRequest) -> Result<TxnResponse> {
                (**self).txn(request).await
            }
            async fn watch(&self, request: WatchRequest) -> Result<WatchStream> {
                (**self).watch(request).await
            }
            async fn current_revision(&self) -> Result<Revision> {
                (**self).current_revision().await
            }
            async fn compact(&self, revision: Revision) -> Result<()> {
                (**self).compact(revision).await
            }
        }
    )*};
}

forward_through!(Arc, Box);

#[cfg(test)]
mod tests {
    use crate::KeyRange;

    #[test]
    fn range_bytes_counts_what_etcd_bounds_hold() {
        for range in [
            KeyRange::key("a/b"),
            KeyRange::prefix(""),
            KeyRange::prefix("a/"),
            KeyRange::prefix(vec![b'a', 0xff]),
            KeyRange::prefix(vec![0xff, 0xff]),
            KeyRange::range("a", "c"),
        ] {
            let (start, end) = range.to_etcd_bounds();
            assert_eq!(
                super::range_bytes(&range),
                start.len() + end.len(),
                "{range:?}"
            );
        }
    }
}
