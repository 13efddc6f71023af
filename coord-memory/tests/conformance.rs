//! The coord-testkit conformance suite on the in-memory backend, on a paused clock: once on
//! `MemoryBackend` directly, and once each through an `Arc<dyn CoordinationBackend>` and a
//! `Box<dyn CoordinationBackend>` (the blanket impls for smart pointers: every call then
//! goes through dynamic dispatch twice, as it does for applications that store the backend
//! as a trait object).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use coord_core::{CoordinationBackend, LeaseId};
use coord_memory::MemoryBackend;
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
            Wrap::ViaArc => Arc::new(Arc::new(client) as Arc<dyn CoordinationBackend>),
            Wrap::ViaBox => Arc::new(Box::new(client) as Box<dyn CoordinationBackend>),
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
    /// A new client and its own fault hooks (the same fault wrapper every backend's suite
    /// puts around its clients).
    async fn faulty_client(&self) -> (Arc<dyn CoordinationBackend>, Arc<dyn ClientFaults>) {
        let client = self.store.new_client();
        let controls = client.faults().clone();
        (self.wrap(client), controls)
    }
    async fn expire_lease_now(&self, lease: LeaseId) {
        // Already gone is fine: the point is that it is gone now.
        let _ = self.store.expire_lease_now(lease);
    }
}

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
