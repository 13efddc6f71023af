//! The coord-testkit conformance suite on the in-memory backend, on a paused clock: once on
//! `MemoryBackend` directly, and once each through an `Arc<dyn CoordinationBackend>` and a
//! `Box<dyn CoordinationBackend>` wrapper (every call then goes through dynamic dispatch
//! twice, as it does for applications that store the backend as a trait object).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use coord_core::{
    BackendInfo, CoordinationBackend, LeaseGrant, LeaseId, LeaseStatus, RangeRequest,
    RangeResponse, Result, Revision, TxnRequest, TxnResponse, WatchRequest, WatchStream,
};
use coord_memory::MemoryBackend;
use coord_testkit::FaultyBackend;
use coord_testkit::conformance::{ClientFaults, Clock, Faults, TestBackend};

/// How clients are handed to the suite.
#[derive(Debug, Clone, Copy)]
enum Wrap {
    Direct,
    ViaArc,
    ViaBox,
}

/// One store per test; every `client()` is a new client of it.
struct Memory {
    faults: MemoryFaults,
}

struct MemoryFaults {
    store: MemoryBackend,
    wrap: Wrap,
}

impl Memory {
    fn new(wrap: Wrap) -> Self {
        Memory {
            faults: MemoryFaults {
                store: MemoryBackend::new(),
                wrap,
            },
        }
    }
}

impl MemoryFaults {
    fn wrap(&self, client: MemoryBackend) -> Arc<dyn CoordinationBackend> {
        match self.wrap {
            Wrap::Direct => Arc::new(client),
            Wrap::ViaArc => Arc::new(ViaArc(Arc::new(client))),
            Wrap::ViaBox => Arc::new(ViaBox(Box::new(client))),
        }
    }
}

#[async_trait]
impl TestBackend for Memory {
    async fn client(&self) -> Arc<dyn CoordinationBackend> {
        self.faults.wrap(self.faults.store.new_client())
    }
    fn clock(&self) -> Clock {
        Clock::Paused
    }
    fn short_ttl(&self) -> Duration {
        Duration::from_secs(10)
    }
    fn faults(&self) -> Option<&dyn Faults> {
        Some(&self.faults)
    }
}

#[async_trait]
impl Faults for MemoryFaults {
    /// The generic client-side fault wrapper every backend's suite uses, around a new
    /// client of the store (coord-memory's own per-client hooks are tested in its unit
    /// tests).
    async fn faulty_client(&self) -> (Arc<dyn CoordinationBackend>, Arc<dyn ClientFaults>) {
        let (client, controls) = FaultyBackend::new(self.wrap(self.store.new_client()));
        (Arc::new(client), controls)
    }
    async fn expire_lease_now(&self, lease: LeaseId) {
        // Already gone is fine: the point is that it is gone now.
        let _ = self.store.expire_lease_now(lease);
    }
}

/// Implements `CoordinationBackend` for a newtype by forwarding every call to `self.0`.
macro_rules! forward {
    ($wrapper:ident) => {
        #[async_trait]
        impl CoordinationBackend for $wrapper {
            fn info(&self) -> BackendInfo {
                self.0.info()
            }
            async fn lease_grant(&self, ttl: Duration) -> Result<LeaseGrant> {
                self.0.lease_grant(ttl).await
            }
            async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration> {
                self.0.lease_keep_alive(lease).await
            }
            async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
                self.0.lease_revoke(lease).await
            }
            async fn lease_time_to_live(&self, lease: LeaseId) -> Result<LeaseStatus> {
                self.0.lease_time_to_live(lease).await
            }
            async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
                self.0.range(request).await
            }
            async fn txn(&self, request: TxnRequest) -> Result<TxnResponse> {
                self.0.txn(request).await
            }
            async fn watch(&self, request: WatchRequest) -> Result<WatchStream> {
                self.0.watch(request).await
            }
            async fn current_revision(&self) -> Result<Revision> {
                self.0.current_revision().await
            }
            async fn compact(&self, revision: Revision) -> Result<()> {
                self.0.compact(revision).await
            }
        }
    };
}

/// The backend as an `Arc<dyn CoordinationBackend>`.
#[derive(Debug)]
struct ViaArc(Arc<dyn CoordinationBackend>);
forward!(ViaArc);

/// The backend as a `Box<dyn CoordinationBackend>`.
#[derive(Debug)]
struct ViaBox(Box<dyn CoordinationBackend>);
forward!(ViaBox);

coord_testkit::conformance_tests! {
    backend: Memory::new(Wrap::Direct),
    clock: paused,
}

/// The suite through `Arc<dyn CoordinationBackend>`.
mod via_arc {
    use super::*;

    coord_testkit::conformance_tests! {
        backend: Memory::new(Wrap::ViaArc),
        clock: paused,
    }
}

/// The suite through `Box<dyn CoordinationBackend>`.
mod via_box {
    use super::*;

    coord_testkit::conformance_tests! {
        backend: Memory::new(Wrap::ViaBox),
        clock: paused,
    }
}
