//! `StoreGate`: tests that share one store (a server per test binary) run side by side, and
//! a test that needs the store to itself waits for the others.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use coord_core::{
    BackendInfo, CoordinationBackend, LeaseGrant, LeaseId, LeaseStatus, RangeRequest,
    RangeResponse, Result, Revision, TxnRequest, TxnResponse, WatchRequest, WatchStream,
};
use tokio::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A gate every test of a shared store passes: each test holds it shared, and a test that
/// must run alone (it compacts the store, which breaks other tests' watches from past
/// revisions, or it asserts on store-wide revisions, which any write moves) holds it
/// exclusively from then until it ends. One `static` per test binary:
///
/// ```ignore
/// static GATE: StoreGate = StoreGate::new();
/// let hold = GATE.enter().await;          // at the start of each test
/// let client = hold.gated(connect().await); // compact() on it waits to run alone
/// ```
#[derive(Debug, Default)]
pub struct StoreGate {
    lock: RwLock<()>,
}

impl StoreGate {
    /// A gate nobody holds.
    pub const fn new() -> Self {
        StoreGate {
            lock: RwLock::const_new(()),
        }
    }

    /// Enters the gate for one test (shared with the other tests).
    pub async fn enter(&'static self) -> GateHold {
        GateHold {
            gate: self,
            hold: Arc::new(Mutex::new(Hold::Shared(self.lock.read().await))),
        }
    }
}

/// One test's hold on a [`StoreGate`]; released when the test drops it.
#[derive(Debug)]
pub struct GateHold {
    gate: &'static StoreGate,
    hold: Arc<Mutex<Hold>>,
}

#[derive(Debug)]
enum Hold {
    Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    Exclusive(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
    Released,
}

impl GateHold {
    /// Waits until every other test has ended, and keeps the store to this test until it
    /// ends (later tests wait for it).
    pub async fn exclusive(&self) {
        exclusive(self.gate, &self.hold).await;
    }

    /// `backend` with a `compact` that first takes the store exclusively for this test. It
    /// only points at the hold, so a client that outlives its test cannot keep others out.
    pub fn gated<B: CoordinationBackend>(&self, backend: B) -> Gated<B> {
        Gated {
            inner: backend,
            gate: self.gate,
            hold: Arc::downgrade(&self.hold),
        }
    }
}

async fn exclusive(gate: &'static StoreGate, hold: &Mutex<Hold>) {
    let mut hold = hold.lock().await;
    if !matches!(*hold, Hold::Exclusive(_)) {
        // Give up the shared hold first, or the write would wait for itself.
        *hold = Hold::Released;
        *hold = Hold::Exclusive(gate.lock.write().await);
    }
}

/// A backend whose `compact` waits until its test has the store to itself; see
/// [`GateHold::gated`].
#[derive(Debug)]
pub struct Gated<B> {
    inner: B,
    gate: &'static StoreGate,
    hold: Weak<Mutex<Hold>>,
}

#[async_trait]
impl<B: CoordinationBackend> CoordinationBackend for Gated<B> {
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
            exclusive(self.gate, &hold).await;
        }
        self.inner.compact(revision).await
    }
}
