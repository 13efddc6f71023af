//! How many backend calls an acquisition costs, counted on the memory backend: the claim
//! txn reads the queue, so an uncontended lock is one txn, and a contended one adds a single
//! watch and no read when its only predecessor goes (granted on that DELETE event).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use coord_core::{
    BackendInfo, CoordinationBackend, Error, LeaseGrant, LeaseId, LeaseStatus, Mutex, RangeRequest,
    RangeResponse, Result, Revision, RwMutex, Session, TxnOp, TxnRequest, TxnResponse,
    WatchRequest, WatchStream,
};
use coord_memory::MemoryBackend;

#[derive(Debug, Default)]
struct Counts {
    txns: AtomicU64,
    ranges: AtomicU64,
    watches: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Calls {
    txns: u64,
    ranges: u64,
    watches: u64,
}

impl Counts {
    fn get(&self) -> Calls {
        Calls {
            txns: self.txns.load(Ordering::SeqCst),
            ranges: self.ranges.load(Ordering::SeqCst),
            watches: self.watches.load(Ordering::SeqCst),
        }
    }
}

/// Counts the reads, writes and watches that go through it (lease calls are not counted:
/// the keep-alive runs on its own clock).
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn CoordinationBackend>,
    counts: Arc<Counts>,
}

fn counting(inner: &Arc<dyn CoordinationBackend>) -> (Arc<dyn CoordinationBackend>, Arc<Counts>) {
    let counts = Arc::new(Counts::default());
    let backend = Counting {
        inner: inner.clone(),
        counts: counts.clone(),
    };
    (Arc::new(backend), counts)
}

#[async_trait]
impl CoordinationBackend for Counting {
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
        self.counts.ranges.fetch_add(1, Ordering::SeqCst);
        self.inner.range(request).await
    }
    async fn txn(&self, request: TxnRequest) -> Result<TxnResponse> {
        self.counts.txns.fetch_add(1, Ordering::SeqCst);
        self.inner.txn(request).await
    }
    async fn watch(&self, request: WatchRequest) -> Result<WatchStream> {
        self.counts.watches.fetch_add(1, Ordering::SeqCst);
        self.inner.watch(request).await
    }
    async fn current_revision(&self) -> Result<Revision> {
        self.counts.ranges.fetch_add(1, Ordering::SeqCst);
        self.inner.current_revision().await
    }
    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision).await
    }
}

fn memory() -> Arc<dyn CoordinationBackend> {
    Arc::new(MemoryBackend::new())
}

async fn session(backend: &Arc<dyn CoordinationBackend>) -> (Session, Arc<Counts>) {
    let (backend, counts) = counting(backend);
    (Session::new(backend).await.expect("session"), counts)
}

/// Lets the other tasks run until `done` holds (the clock is paused: this takes no time).
async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("timed out waiting until {what}");
}

const fn calls(txns: u64, ranges: u64, watches: u64) -> Calls {
    Calls {
        txns,
        ranges,
        watches,
    }
}

#[tokio::test(start_paused = true)]
async fn uncontended_lock_is_one_txn_and_unlock_another() {
    let store = memory();
    let (a, counts) = session(&store).await;
    let guard = Mutex::new(&a, "job").lock().await.expect("lock");
    assert_eq!(counts.get(), calls(1, 0, 0));
    guard.unlock().await.expect("unlock");
    assert_eq!(counts.get(), calls(2, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn waiter_behind_one_holder_is_granted_on_its_delete_without_a_read() {
    let store = memory();
    let (a, _) = session(&store).await;
    let (b, b_counts) = session(&store).await;
    let held = Mutex::new(&a, "job").lock().await.expect("lock a");
    let waiter = tokio::spawn(async move { Mutex::new(&b, "job").lock().await });
    until("b watches", || b_counts.get().watches == 1).await;
    // The claim txn and one watch; the claim's own read told b who is ahead.
    assert_eq!(b_counts.get(), calls(1, 0, 1));
    assert!(!waiter.is_finished());
    held.unlock().await.expect("unlock a");
    let granted = waiter.await.expect("join").expect("lock b");
    assert!(granted.fencing_token() > 0);
    assert_eq!(b_counts.get(), calls(1, 0, 1));
    granted.unlock().await.expect("unlock b");
    assert_eq!(b_counts.get(), calls(2, 0, 1));
}

#[tokio::test(start_paused = true)]
async fn waiter_with_several_keys_ahead_reads_again_before_it_is_granted() {
    let store = memory();
    let (a, _) = session(&store).await;
    let (b, b_counts) = session(&store).await;
    let (c, c_counts) = session(&store).await;
    let held = Mutex::new(&a, "job").lock().await.expect("lock a");
    let b_waits = tokio::spawn(async move { Mutex::new(&b, "job").lock().await });
    until("b watches", || b_counts.get().watches == 1).await;
    let c_waits = tokio::spawn(async move { Mutex::new(&c, "job").lock().await });
    until("c watches", || c_counts.get().watches == 1).await;
    assert_eq!(c_counts.get(), calls(1, 0, 1));

    held.unlock().await.expect("unlock a");
    let b_guard = b_waits.await.expect("join").expect("lock b");
    // c waits for b only: a's release does not wake it.
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!c_waits.is_finished());
    assert_eq!(c_counts.get(), calls(1, 0, 1));

    b_guard.unlock().await.expect("unlock b");
    let c_guard = c_waits.await.expect("join").expect("lock c");
    // b's delete ended c's wait, but a was ahead of c too when c claimed: one read
    // confirms nothing is ahead any more.
    assert_eq!(c_counts.get(), calls(2, 0, 1));
    c_guard.unlock().await.expect("unlock c");
}

#[tokio::test(start_paused = true)]
async fn waiter_whose_key_goes_with_its_predecessor_is_not_granted() {
    let store = memory();
    let (a, _) = session(&store).await;
    let (b, b_counts) = session(&store).await;
    let held = Mutex::new(&a, "job").lock().await.expect("lock a");
    let b_key = coord_core::lock_key("job", b.lease());
    let waiter = tokio::spawn(async move { Mutex::new(&b, "job").lock().await });
    until("b watches", || b_counts.get().watches == 1).await;
    // One revision deletes both the holder's key and the waiter's.
    let both = TxnRequest::new().and_then([TxnOp::delete(held.key()), TxnOp::delete(b_key)]);
    assert!(store.txn(both).await.expect("delete both").succeeded);
    let outcome = waiter.await.expect("join");
    assert!(
        matches!(outcome, Err(Error::LockLost { .. })),
        "a waiter whose key is gone must not be granted: {outcome:?}"
    );
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn reader_behind_one_writer_is_granted_on_its_delete_without_a_read() {
    let store = memory();
    let (a, _) = session(&store).await;
    let (b, b_counts) = session(&store).await;
    let writing = RwMutex::new(&a, "doc").write().await.expect("write a");
    let reader = tokio::spawn(async move { RwMutex::new(&b, "doc").read().await });
    until("b watches", || b_counts.get().watches == 1).await;
    assert_eq!(b_counts.get(), calls(1, 0, 1));
    writing.unlock().await.expect("unlock a");
    let read = reader.await.expect("join").expect("read b");
    assert_eq!(b_counts.get(), calls(1, 0, 1));
    read.unlock().await.expect("unlock b");
}
