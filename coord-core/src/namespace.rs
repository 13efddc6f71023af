//! `Namespaced`: key namespacing as a wrapper over any backend.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;

use crate::{
    BackendInfo, CoordinationBackend, Delete, Event, KeyRange, KeyValue, LeaseGrant, LeaseId,
    LeaseStatus, Put, RangeRequest, RangeResponse, Result, Revision, TxnOp, TxnOpResponse,
    TxnRequest, TxnResponse, WatchRequest, WatchResponse, WatchStream,
};

/// A backend whose every key is `prefix` + the key the caller names: applications (or
/// tests) that share one store stay apart, and each sees only its own keys, under the names
/// it uses (etcd's `namespace` package does the same on the client side).
///
/// Keys are prefixed in every request (ranges, compares, puts, deletes, watches) and the
/// prefix is stripped from every key that comes back. Leases, revisions and compaction are
/// the store's own and are shared.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> coord_core::Result<()> {
/// use coord_core::{BackendExt, Namespaced, NO_LEASE};
///
/// let store = coord_memory::MemoryBackend::new();
/// let app = Namespaced::new(store.clone(), "app/");
/// app.put(b"config", b"1", NO_LEASE).await?;
/// assert!(store.get(b"app/config").await?.is_some());
/// assert_eq!(app.get(b"config").await?.unwrap().key, b"config");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Namespaced<B> {
    inner: B,
    prefix: Vec<u8>,
}

impl<B> Namespaced<B> {
    /// Wraps `inner` so that every key lives under `prefix`.
    pub fn new(inner: B, prefix: impl Into<Vec<u8>>) -> Self {
        Namespaced {
            inner,
            prefix: prefix.into(),
        }
    }

    /// The prefix every key gets.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// The backend behind the namespace.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    fn key(&self, key: Vec<u8>) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.prefix.len() + key.len());
        out.extend_from_slice(&self.prefix);
        out.extend(key);
        out
    }

    fn range(&self, range: KeyRange) -> KeyRange {
        match range {
            KeyRange::Key(k) => KeyRange::Key(self.key(k)),
            KeyRange::Prefix(p) => KeyRange::Prefix(self.key(p)),
            KeyRange::Range { start, end } => KeyRange::Range {
                start: self.key(start),
                end: self.key(end),
            },
        }
    }

    fn range_request(&self, mut request: RangeRequest) -> RangeRequest {
        request.range = self.range(request.range);
        request
    }

    fn op(&self, op: TxnOp) -> TxnOp {
        match op {
            TxnOp::Put(put) => TxnOp::Put(Put {
                key: self.key(put.key),
                ..put
            }),
            TxnOp::Delete(delete) => TxnOp::Delete(Delete {
                range: self.range(delete.range),
                ..delete
            }),
            TxnOp::Range(request) => TxnOp::Range(self.range_request(request)),
        }
    }

    fn kv(prefix: &[u8], mut kv: KeyValue) -> KeyValue {
        if kv.key.starts_with(prefix) {
            kv.key.drain(..prefix.len());
        }
        kv
    }

    fn kvs(&self, kvs: Vec<KeyValue>) -> Vec<KeyValue> {
        kvs.into_iter()
            .map(|kv| Self::kv(&self.prefix, kv))
            .collect()
    }

    fn range_response(&self, mut response: RangeResponse) -> RangeResponse {
        response.kvs = self.kvs(response.kvs);
        response
    }

    fn op_response(&self, response: TxnOpResponse) -> TxnOpResponse {
        match response {
            TxnOpResponse::Put { prev_kv } => TxnOpResponse::Put {
                prev_kv: prev_kv.map(|kv| Self::kv(&self.prefix, kv)),
            },
            TxnOpResponse::Delete { deleted, prev_kvs } => TxnOpResponse::Delete {
                deleted,
                prev_kvs: self.kvs(prev_kvs),
            },
            TxnOpResponse::Range(r) => TxnOpResponse::Range(self.range_response(r)),
        }
    }
}

#[async_trait]
impl<B: CoordinationBackend> CoordinationBackend for Namespaced<B> {
    fn info(&self) -> BackendInfo {
        self.inner.info()
    }
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseGrant> {
        self.inner.lease_grant(ttl).await
    }
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        self.inner.lease_keep_alive(lease).await
    }
    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.inner.lease_revoke(lease).await
    }
    async fn lease_time_to_live(&self, lease: LeaseId) -> Result<LeaseStatus> {
        self.inner.lease_time_to_live(lease).await
    }
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        // Validate the caller's request, not the prefixed one: an empty key stays an error.
        request.validate()?;
        let response = self.inner.range(self.range_request(request)).await?;
        Ok(self.range_response(response))
    }
    async fn txn(&self, request: TxnRequest) -> Result<TxnResponse> {
        request.validate()?;
        let request = TxnRequest {
            compares: request
                .compares
                .into_iter()
                .map(|mut c| {
                    c.key = self.key(c.key);
                    c
                })
                .collect(),
            success: request.success.into_iter().map(|op| self.op(op)).collect(),
            failure: request.failure.into_iter().map(|op| self.op(op)).collect(),
        };
        let mut response = self.inner.txn(request).await?;
        response.responses = response
            .responses
            .into_iter()
            .map(|r| self.op_response(r))
            .collect();
        Ok(response)
    }
    async fn watch(&self, mut request: WatchRequest) -> Result<WatchStream> {
        request.range.validate()?;
        request.range = self.range(request.range);
        let inner = self.inner.watch(request).await?;
        let start = inner.start_revision();
        let prefix = self.prefix.clone();
        let stream = inner.map(move |item| {
            item.map(|resp| WatchResponse {
                events: resp
                    .events
                    .into_iter()
                    .map(|e| Event {
                        kv: Self::kv(&prefix, e.kv),
                        prev_kv: e.prev_kv.map(|kv| Self::kv(&prefix, kv)),
                        ..e
                    })
                    .collect(),
                ..resp
            })
        });
        Ok(WatchStream::new(start, stream.boxed()))
    }
    /// Read with a count-only range of the prefix key itself, so that a client whose
    /// permissions end at the prefix (an etcd role over `prefix`) can read it; a read of
    /// any key is served at the store's current revision.
    async fn current_revision(&self) -> Result<Revision> {
        if self.prefix.is_empty() {
            return self.inner.current_revision().await;
        }
        let request = RangeRequest::key(self.prefix.clone()).count_only();
        Ok(self.inner.range(request).await?.revision)
    }
    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision).await
    }
}
