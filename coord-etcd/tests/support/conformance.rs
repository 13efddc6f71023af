//! The conformance suite's [`TestBackend`] on a shared etcd ([`super::shared`]), a single
//! server or a cluster; every client connects to all its members.
//!
//! - **One etcd per test binary**: each test gets a namespace of its own on it, and every
//!   client of a test is a new connection in that namespace.
//! - **Short TTLs.** The suite uses 2 s: etcd's minimum (`ceil(1.5 × election timeout)`)
//!   is 1 s for the single server's 250 ms election timeout and 2 s for the cluster's
//!   default 1 s, and 2 s leaves a refresh (every TTL/3) two chances to land on a loaded
//!   two-core machine.
//! - **ExpireLease** is a revoke from another connection. It is the same thing on the
//!   server: etcd expires a lease by having the leader propose a `LeaseRevoke`, which
//!   deletes its keys in one revision; and the session's own connection is not told until
//!   its next keep-alive fails, as with a real expiry.
//! - **FailNext, Latency, PartitionFail, PartitionHang** are injected at the client
//!   boundary around a real etcd client (`coord_core::faults::FaultyBackend`), where the suite defines
//!   them; the store behind is the real etcd.
//! - **Compaction** on an etcd other tests share: compacting at the current revision
//!   cannot break the recipes (they only watch "from now"), but it does break a test that
//!   wrote at revision r and then watches or reads from r, if another test compacts in
//!   between. So a test that compacts first waits until it runs alone (a read/write gate
//!   every test holds for reading), and holds the etcd to itself until it ends. The same
//!   gate serves [`TestBackend::exclusive`], for scenarios that assert on store-wide
//!   revisions. On an external server (`COORD_TEST_ETCD`), which other processes may
//!   share, compaction is declared lacking (the gate only orders the tests of this
//!   binary, so the revision asserts of [`TestBackend::exclusive`] scenarios assume
//!   nobody else writes there).

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use coord_core::faults::FaultyBackend;
use coord_core::{
    BackendInfo, CoordinationBackend, Error, LeaseGrant, LeaseId, LeaseStatus, RangeRequest,
    RangeResponse, Result, Revision, TxnRequest, TxnResponse, WatchRequest, WatchStream,
};
use coord_etcd::{EtcdBackend, EtcdOptions};
use coord_testkit::ServerMode;
use coord_testkit::conformance::{Capability, ClientFaults, Clock, Faults, TestBackend};
use tokio::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::shared::Shared;

/// Every test holds this for reading; a test that compacts holds it for writing.
static COMPACTION_GATE: RwLock<()> = RwLock::const_new(());

/// A test's hold on [`COMPACTION_GATE`].
#[derive(Debug)]
enum Hold {
    Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    Exclusive(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
    Released,
}

/// Turns a test's shared hold into an exclusive one (once), waiting for every other test
/// to end; later tests wait for this one.
async fn hold_exclusively(hold: &Mutex<Hold>) {
    let mut hold = hold.lock().await;
    if !matches!(*hold, Hold::Exclusive(_)) {
        // Give up the shared hold first, or the write would wait for itself.
        *hold = Hold::Released;
        *hold = Hold::Exclusive(COMPACTION_GATE.write().await);
    }
}

/// One test's view of the shared etcd.
pub struct Etcd {
    faults: EtcdFaults,
}

struct EtcdFaults {
    shared: &'static Shared,
    namespace: String,
    /// Owned by the test alone (clients only point at it), so it ends with the test even
    /// if a client outlives it.
    hold: Arc<Mutex<Hold>>,
}

impl Etcd {
    /// A test's view of `shared` (from [`super::shared::shared_etcd`] or
    /// [`super::shared::shared_cluster`]); `None` when etcd is unavailable (the test then
    /// returns after its skip line).
    pub async fn new(shared: Option<&'static Shared>) -> Option<Etcd> {
        let shared = shared?;
        let hold = Hold::Shared(COMPACTION_GATE.read().await);
        Some(Etcd {
            faults: EtcdFaults {
                shared,
                namespace: shared.fresh_namespace(),
                hold: Arc::new(Mutex::new(hold)),
            },
        })
    }
}

impl EtcdFaults {
    async fn connect(&self, namespace: &str) -> EtcdBackend {
        let options = EtcdOptions::new(self.shared.urls()).namespace(namespace.as_bytes());
        EtcdBackend::connect(options)
            .await
            .expect("connect to the shared etcd")
    }

    async fn gated_client(&self) -> Arc<dyn CoordinationBackend> {
        Arc::new(Gated {
            inner: self.connect(&self.namespace).await,
            hold: Arc::downgrade(&self.hold),
        })
    }
}

#[async_trait]
impl TestBackend for Etcd {
    async fn client(&self) -> Arc<dyn CoordinationBackend> {
        self.faults.gated_client().await
    }
    fn clock(&self) -> Clock {
        Clock::Real
    }
    fn short_ttl(&self) -> Duration {
        Duration::from_secs(2)
    }
    fn faults(&self) -> Option<&dyn Faults> {
        Some(&self.faults)
    }
    async fn exclusive(&self) {
        hold_exclusively(&self.faults.hold).await;
    }
    fn lacks(&self, capability: Capability) -> Option<&'static str> {
        (capability == Capability::Compaction && self.faults.shared.mode() != ServerMode::Local)
            .then_some(
                "the etcd named by COORD_TEST_ETCD may be shared with other processes, \
                 whose watches from past revisions a compaction would break",
            )
    }
}

#[async_trait]
impl Faults for EtcdFaults {
    async fn faulty_client(&self) -> (Arc<dyn CoordinationBackend>, Arc<dyn ClientFaults>) {
        let (client, controls) = FaultyBackend::new(self.gated_client().await);
        (Arc::new(client), controls)
    }

    async fn expire_lease_now(&self, lease: LeaseId) {
        // A connection of its own, so no keep-alive stream of the lease's holder learns of
        // it before its next refresh.
        let other = self.connect("").await;
        match other.lease_revoke(lease).await {
            Ok(()) | Err(Error::LeaseNotFound { .. }) => {}
            Err(e) => panic!("expire lease {lease:x} by revoking it: {e}"),
        }
    }
}

/// A client whose `compact` first waits until its test has the server to itself.
#[derive(Debug)]
struct Gated {
    inner: EtcdBackend,
    hold: Weak<Mutex<Hold>>,
}

#[async_trait]
impl CoordinationBackend for Gated {
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
        self.inner.range(request).await
    }
    async fn txn(&self, request: TxnRequest) -> Result<TxnResponse> {
        self.inner.txn(request).await
    }
    async fn watch(&self, request: WatchRequest) -> Result<WatchStream> {
        self.inner.watch(request).await
    }
    async fn current_revision(&self) -> Result<Revision> {
        self.inner.current_revision().await
    }
    async fn compact(&self, revision: Revision) -> Result<()> {
        if let Some(hold) = self.hold.upgrade() {
            hold_exclusively(&hold).await;
        }
        self.inner.compact(revision).await
    }
}
