//! A client of several etcd members whose test decides which member each call goes to.
//!
//! etcd-client balances the calls of a multi-endpoint client at random, so whether an
//! unanswered call went through a slow member is luck. This client holds one
//! single-endpoint client per member and sends every call (and every watch and keep-alive
//! it opens) to the member the test [steers](Steering::to) it to at that moment: the
//! interleavings a real multi-endpoint client reaches by chance, on demand.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use coord_core::{
    BackendInfo, CoordinationBackend, LeaseGrant, LeaseId, LeaseStatus, RangeRequest,
    RangeResponse, Result, Revision, TxnRequest, TxnResponse, WatchRequest, WatchStream,
};
use coord_etcd::EtcdBackend;

/// See the [module docs](self).
#[derive(Debug)]
pub struct Steered {
    members: Vec<EtcdBackend>,
    current: Arc<AtomicUsize>,
}

/// Where a [`Steered`] client sends its next calls.
#[derive(Debug, Clone)]
pub struct Steering {
    current: Arc<AtomicUsize>,
}

impl Steering {
    /// Sends every later call to the client's member `i` (an index into the clients it was
    /// made with).
    pub fn to(&self, i: usize) {
        self.current.store(i, Ordering::SeqCst);
    }
}

impl Steered {
    /// A client over `members`, steered to the first one.
    pub fn new(members: Vec<EtcdBackend>) -> (Steered, Steering) {
        assert!(!members.is_empty());
        let current = Arc::new(AtomicUsize::new(0));
        (
            Steered {
                members,
                current: current.clone(),
            },
            Steering { current },
        )
    }

    fn now(&self) -> &EtcdBackend {
        &self.members[self.current.load(Ordering::SeqCst) % self.members.len()]
    }
}

#[async_trait]
impl CoordinationBackend for Steered {
    fn info(&self) -> BackendInfo {
        self.members[0].info()
    }
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseGrant> {
        self.now().lease_grant(ttl).await
    }
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        self.now().lease_keep_alive(lease).await
    }
    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.now().lease_revoke(lease).await
    }
    async fn lease_time_to_live(&self, lease: LeaseId) -> Result<LeaseStatus> {
        self.now().lease_time_to_live(lease).await
    }
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        self.now().range(request).await
    }
    async fn txn(&self, request: TxnRequest) -> Result<TxnResponse> {
        self.now().txn(request).await
    }
    async fn watch(&self, request: WatchRequest) -> Result<WatchStream> {
        self.now().watch(request).await
    }
    async fn current_revision(&self) -> Result<Revision> {
        self.now().current_revision().await
    }
    async fn compact(&self, revision: Revision) -> Result<()> {
        self.now().compact(revision).await
    }
}
