//! A chaos run (coord-testkit's `chaos`) on the in-memory backend, on a paused clock: 8
//! clients doing random lock / try_lock / rw / semaphore / election operations under
//! random client faults and forced lease expiry, the history checked. Its length is
//! `COORD_CHAOS_SECONDS` virtual seconds (default 10), its seed `COORD_CHAOS_SEED`
//! (random by default; printed with the report); `scripts/chaos.sh --backend memory`
//! runs it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use coord_core::{CoordinationBackend, LeaseId};
use coord_memory::MemoryBackend;
use coord_testkit::chaos::{self, ClientFaultsOnly, Config};
use coord_testkit::conformance::{ClientFaults, Clock, Faults, TestBackend};

/// One store; every client is a new client of it with its own fault hooks.
struct Memory {
    store: MemoryBackend,
}

#[async_trait]
impl TestBackend for Memory {
    async fn client(&self) -> Arc<dyn CoordinationBackend> {
        Arc::new(self.store.new_client())
    }
    fn clock(&self) -> Clock {
        Clock::Paused
    }
    fn short_ttl(&self) -> Duration {
        Duration::from_secs(10)
    }
    fn faults(&self) -> Option<&dyn Faults> {
        Some(self)
    }
}

#[async_trait]
impl Faults for Memory {
    async fn faulty_client(&self) -> (Arc<dyn CoordinationBackend>, Arc<dyn ClientFaults>) {
        let client = self.store.new_client();
        let controls = client.faults().clone();
        (Arc::new(client), controls)
    }
    async fn expire_lease_now(&self, lease: LeaseId) {
        // Already gone is fine: the point is that it is gone now.
        let _ = self.store.expire_lease_now(lease);
    }
}

#[tokio::test(start_paused = true)]
async fn chaos_run_on_memory_keeps_every_promise() {
    let memory = Memory {
        store: MemoryBackend::new(),
    };
    let report = chaos::run(&ClientFaultsOnly(&memory), Config::from_env("memory")).await;
    report.assert_clean();
}
