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
//!   boundary around a real etcd client (`coord_core::faults::FaultyBackend`), where the
//!   suite defines them; the store behind is the real etcd.
//! - **Compaction** on an etcd other tests share: compacting at the current revision
//!   cannot break the recipes (they only watch "from now"), but it does break a test that
//!   wrote at revision r and then watches or reads from r, if another test compacts in
//!   between. So a test that compacts first waits until it runs alone (the testkit's
//!   `StoreGate`, which every test holds shared), and holds the etcd to itself until it
//!   ends. The same gate serves [`TestBackend::exclusive`], for scenarios that assert on store-wide
//!   revisions. On an external server (`COORD_TEST_ETCD`), which other processes may
//!   share, compaction is declared lacking (the gate only orders the tests of this
//!   binary, so the revision asserts of [`TestBackend::exclusive`] scenarios assume
//!   nobody else writes there).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use coord_core::faults::FaultyBackend;
use coord_core::{CoordinationBackend, Error, LeaseId};
use coord_etcd::{EtcdBackend, EtcdOptions};
use coord_testkit::ServerMode;
use coord_testkit::conformance::{
    Capability, ClientFaults, Clock, Faults, GateHold, StoreGate, TestBackend,
};

use super::shared::Shared;

/// The gate every test of this binary passes; a test that compacts, or asserts on
/// store-wide revisions, holds the server to itself.
static GATE: StoreGate = StoreGate::new();

/// One test's view of the shared etcd.
pub struct Etcd {
    faults: EtcdFaults,
}

struct EtcdFaults {
    shared: &'static Shared,
    namespace: String,
    hold: GateHold,
}

impl Etcd {
    /// A test's view of `shared` (from [`super::shared::shared_etcd`] or
    /// [`super::shared::shared_cluster`]); `None` when etcd is unavailable (the test then
    /// returns after its skip line).
    pub async fn new(shared: Option<&'static Shared>) -> Option<Etcd> {
        let shared = shared?;
        Some(Etcd {
            faults: EtcdFaults {
                shared,
                namespace: shared.fresh_namespace(),
                hold: GATE.enter().await,
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
        Arc::new(self.hold.gated(self.connect(&self.namespace).await))
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
        self.faults.hold.exclusive().await;
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
