//! The conformance suite's [`TestBackend`] on the shared redis-server: a namespace per
//! test (its own revisions, leases and history, so no test needs the server to itself),
//! every client a new connection in it.
//!
//! - **ExpireLease** is a revoke from another connection: the same deletion in one
//!   revision as an expiry, and the holder's connection learns of it only at its next
//!   keep-alive.
//! - **Faults** are injected at the client boundary (`coord_core::faults::FaultyBackend`)
//!   around a real client; the store behind is the real server.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use coord_core::faults::FaultyBackend;
use coord_core::{CoordinationBackend, Error, LeaseId};
use coord_testkit::conformance::{ClientFaults, Clock, Faults, TestBackend};

use super::Shared;

/// One test's namespace on the shared server.
pub(crate) struct Redis {
    faults: RedisFaults,
}

struct RedisFaults {
    shared: &'static Shared,
    namespace: String,
}

impl Redis {
    /// `None` when redis is unavailable (the test returns after the skip line).
    pub(crate) fn new(shared: Option<&'static Shared>) -> Option<Redis> {
        let shared = shared?;
        Some(Redis {
            faults: RedisFaults {
                shared,
                namespace: shared.fresh_namespace(),
            },
        })
    }
}

#[async_trait]
impl TestBackend for Redis {
    async fn client(&self) -> Arc<dyn CoordinationBackend> {
        Arc::new(self.faults.shared.connect(&self.faults.namespace).await)
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
}

#[async_trait]
impl Faults for RedisFaults {
    async fn faulty_client(&self) -> (Arc<dyn CoordinationBackend>, Arc<dyn ClientFaults>) {
        let client = self.shared.connect(&self.namespace).await;
        let (client, controls) = FaultyBackend::new(Arc::new(client));
        (Arc::new(client), controls)
    }

    async fn expire_lease_now(&self, lease: LeaseId) {
        let other = self.shared.connect(&self.namespace).await;
        match other.lease_revoke(lease).await {
            Ok(()) | Err(Error::LeaseNotFound { .. }) => {}
            Err(e) => panic!("expire lease {lease:x} by revoking it: {e}"),
        }
    }
}
