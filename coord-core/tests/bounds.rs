//! Auto-trait bounds of the recipes' public futures and types, pinned at compile time (in
//! the style of tokio's `tests/async_send_sync.rs`). A recipe future that stopped being
//! `Send` could no longer be spawned on a multi-threaded runtime or held across an `.await`
//! in a spawned task; a guard that stopped being `Send + Sync` could no longer be shared or
//! moved between tasks. These break at compile time, so the checks below never need to run
//! the futures (and no backend is ever called).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use coord_core::{
    BackendInfo, CoordinationBackend, Election, Error, LeaderUpdate, Leadership, LeaseGrant,
    LeaseId, LeaseStatus, Mutex, MutexGuard, RangeRequest, RangeResponse, Result, Revision, RwMode,
    RwMutex, RwMutexGuard, Semaphore, SemaphorePermit, Session, SessionBuilder, TxnRequest,
    TxnResponse, WatchRequest, WatchStream,
};

fn assert_send<T: Send>(_: &T) {}
fn assert_send_static<T: Send + 'static>(_: &T) {}
fn assert_send_sync<T: Send + Sync>() {}

/// A backend that is never called: it only gives the futures below a value to borrow.
#[derive(Debug)]
struct Unreachable;

#[async_trait]
impl CoordinationBackend for Unreachable {
    fn info(&self) -> BackendInfo {
        unimplemented!()
    }
    async fn lease_grant(&self, _: Duration) -> Result<LeaseGrant> {
        unimplemented!()
    }
    async fn lease_keep_alive(&self, _: LeaseId) -> Result<Duration> {
        unimplemented!()
    }
    async fn lease_revoke(&self, _: LeaseId) -> Result<()> {
        unimplemented!()
    }
    async fn lease_time_to_live(&self, _: LeaseId) -> Result<LeaseStatus> {
        unimplemented!()
    }
    async fn range(&self, _: RangeRequest) -> Result<RangeResponse> {
        unimplemented!()
    }
    async fn txn(&self, _: TxnRequest) -> Result<TxnResponse> {
        unimplemented!()
    }
    async fn watch(&self, _: WatchRequest) -> Result<WatchStream> {
        unimplemented!()
    }
    async fn current_revision(&self) -> Result<Revision> {
        unimplemented!()
    }
    async fn compact(&self, _: Revision) -> Result<()> {
        unimplemented!()
    }
}

/// Every public future of the recipes is `Send`; the `lost()` futures (documented to own
/// what they need) and the observe streams are also `'static`. Type-checked, never called.
#[allow(dead_code, clippy::too_many_arguments)]
fn recipe_futures_are_send(
    backend: Arc<dyn CoordinationBackend>,
    session: Session,
    mutex: Mutex,
    guard: MutexGuard,
    rw: RwMutex,
    rw_guard: RwMutexGuard,
    election: Election,
    leadership: Leadership,
    semaphore: Semaphore,
    permit: SemaphorePermit,
) {
    // Session.
    assert_send(&Session::builder(backend.clone()).start());
    assert_send(
        &Session::builder(backend.clone())
            .ttl(Duration::from_secs(5))
            .lease(1)
            .start(),
    );
    assert_send(&Session::new(backend.clone()));
    assert_send(&session.close());
    assert_send_static(&session.lost());

    // Mutex.
    assert_send(&mutex.lock());
    assert_send(&mutex.try_lock());
    assert_send(&mutex.lock_timeout(Duration::from_secs(1)));
    assert_send_static(&guard.lost());
    assert_send(&guard.unlock());

    // RwMutex.
    assert_send(&rw.read());
    assert_send(&rw.write());
    assert_send(&rw.try_read());
    assert_send(&rw.try_write());
    assert_send(&rw.lock_timeout(RwMode::Write, Duration::from_secs(1)));
    assert_send_static(&rw_guard.lost());
    assert_send(&rw_guard.unlock());

    // Election.
    assert_send(&election.campaign("v"));
    assert_send(&election.campaign_timeout(b"v".to_vec(), Duration::from_secs(1)));
    assert_send(&election.leader());
    assert_send_static(&election.observe());
    assert_send(&coord_core::leader(backend.as_ref(), "name"));
    assert_send_static(&coord_core::observe(backend.clone(), "name".to_owned()));
    assert_send(&leadership.proclaim("w"));
    assert_send(&leadership.current());
    assert_send_static(&leadership.lost());
    assert_send(&leadership.resign());

    // Semaphore.
    assert_send(&semaphore.acquire());
    assert_send(&semaphore.try_acquire());
    assert_send(&semaphore.acquire_timeout(Duration::from_secs(1)));
    assert_send_static(&permit.lost());
    assert_send(&permit.release());
}

#[test]
fn recipe_types_are_send_and_sync() {
    assert_send_sync::<Session>();
    assert_send_sync::<SessionBuilder>();
    assert_send_sync::<Mutex>();
    assert_send_sync::<MutexGuard>();
    assert_send_sync::<RwMutex>();
    assert_send_sync::<RwMutexGuard>();
    assert_send_sync::<Election>();
    assert_send_sync::<Leadership>();
    assert_send_sync::<LeaderUpdate>();
    assert_send_sync::<Semaphore>();
    assert_send_sync::<SemaphorePermit>();
    assert_send_sync::<Error>();
    assert_send_sync::<Arc<dyn CoordinationBackend>>();
}

#[test]
fn session_start_future_is_send_without_running_it() {
    // Built, checked and dropped unpolled: the backend is never called.
    let start = Session::builder(Arc::new(Unreachable)).start();
    assert_send(&start);
    drop(start);
    let _ = recipe_futures_are_send;
}
