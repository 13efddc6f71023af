//! Client-side fault injection around a real backend client, with the semantics of the
//! conformance suite's [`ClientFaults`] (the same as `coord-memory`'s hooks).
//!
//! Why a decorator and not the network: the suite defines these faults at the client
//! boundary ("the next `n` calls fail before reaching the store", "open watches end with an
//! error"), and a network fault cannot express them against etcd: coord-etcd resumes a
//! broken watch by itself instead of ending it, and a refused connection only fails calls
//! once the channel notices. The store behind the decorator is the real etcd server: a
//! call that passes the request half really runs there (so with latency it is applied
//! while its response is still on its way back), and a client cut off by a partition
//! really stops refreshing its lease, which then really expires on the server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use coord_core::{
    BackendInfo, CoordinationBackend, Error, LeaseGrant, LeaseId, LeaseStatus, RangeRequest,
    RangeResponse, Result, Revision, TxnRequest, TxnResponse, WatchRequest, WatchResponse,
    WatchStream,
};
use coord_testkit::conformance::{ClientFaults, Partition};
use futures::StreamExt;
use tokio::sync::watch;

/// The partition, and how many `Fail` partitions have started: a call or stream that lived
/// through a `Fail` partition fails even if it was healed before the call looked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct PartitionState {
    mode: Option<Partition>,
    fail_epoch: u64,
}

/// The fault controls shared by a [`Faulty`] client and its [`ClientFaults`] handle.
#[derive(Debug)]
pub struct Controls {
    fail_next: AtomicU64,
    latency_nanos: AtomicU64,
    partition: watch::Sender<PartitionState>,
}

impl Default for Controls {
    fn default() -> Self {
        Controls {
            fail_next: AtomicU64::new(0),
            latency_nanos: AtomicU64::new(0),
            partition: watch::Sender::new(PartitionState::default()),
        }
    }
}

fn partitioned() -> Error {
    Error::unavailable("injected partition: the etcd client is cut off from the server")
}

impl Controls {
    fn latency(&self) -> Duration {
        Duration::from_nanos(self.latency_nanos.load(Ordering::SeqCst))
    }

    fn state(&self) -> PartitionState {
        *self.partition.borrow()
    }

    /// Waits out a `Hang` partition; fails for a `Fail` partition or one started since
    /// `epoch`.
    async fn pass_partition(&self, epoch: u64) -> Result<()> {
        let mut rx = self.partition.subscribe();
        loop {
            let state = *rx.borrow_and_update();
            if state.fail_epoch != epoch {
                return Err(partitioned());
            }
            match state.mode {
                None => return Ok(()),
                Some(Partition::Fail) => return Err(partitioned()),
                Some(Partition::Hang) => {
                    if rx.changed().await.is_err() {
                        return Err(partitioned());
                    }
                }
            }
        }
    }

    /// The request half: half the latency, the partition, then `fail_next`.
    async fn request(&self) -> Result<u64> {
        let epoch = self.state().fail_epoch;
        let latency = self.latency();
        if !latency.is_zero() {
            tokio::time::sleep(latency / 2).await;
        }
        self.pass_partition(epoch).await?;
        let failed = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failed {
            return Err(Error::unavailable(
                "injected failure (fail_next) before the call reached etcd",
            ));
        }
        Ok(epoch)
    }

    /// The response half: the other half of the latency, then the partition (a response
    /// that arrives while cut off is lost).
    async fn response(&self, epoch: u64) -> Result<()> {
        let latency = self.latency();
        if !latency.is_zero() {
            tokio::time::sleep(latency - latency / 2).await;
        }
        self.pass_partition(epoch).await
    }
}

impl ClientFaults for Controls {
    fn fail_next(&self, n: u64) {
        self.fail_next.store(n, Ordering::SeqCst);
    }
    fn set_latency(&self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.latency_nanos.store(nanos, Ordering::SeqCst);
    }
    fn partition(&self, mode: Partition) {
        self.partition.send_modify(|s| {
            if mode == Partition::Fail {
                s.fail_epoch += 1;
            }
            s.mode = Some(mode);
        });
    }
    fn heal(&self) {
        self.partition.send_modify(|s| s.mode = None);
    }
}

/// A backend client whose calls pass through [`Controls`].
#[derive(Debug)]
pub struct Faulty {
    inner: Arc<dyn CoordinationBackend>,
    controls: Arc<Controls>,
}

impl Faulty {
    /// Wraps `inner`; the returned controls affect this client alone.
    pub fn new(inner: Arc<dyn CoordinationBackend>) -> (Self, Arc<Controls>) {
        let controls = Arc::new(Controls::default());
        (
            Faulty {
                inner,
                controls: controls.clone(),
            },
            controls,
        )
    }

    async fn call<T>(&self, fut: impl Future<Output = Result<T>> + Send) -> Result<T> {
        let epoch = self.controls.request().await?;
        let out = fut.await;
        self.controls.response(epoch).await?;
        out
    }
}

#[async_trait]
impl CoordinationBackend for Faulty {
    fn info(&self) -> BackendInfo {
        self.inner.info()
    }
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseGrant> {
        self.call(self.inner.lease_grant(ttl)).await
    }
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        self.call(self.inner.lease_keep_alive(lease)).await
    }
    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.call(self.inner.lease_revoke(lease)).await
    }
    async fn lease_time_to_live(&self, lease: LeaseId) -> Result<LeaseStatus> {
        self.call(self.inner.lease_time_to_live(lease)).await
    }
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        self.call(self.inner.range(request)).await
    }
    async fn txn(&self, request: TxnRequest) -> Result<TxnResponse> {
        self.call(self.inner.txn(request)).await
    }
    async fn watch(&self, request: WatchRequest) -> Result<WatchStream> {
        let epoch = self.controls.request().await?;
        let inner = self.inner.watch(request).await;
        self.controls.response(epoch).await?;
        let inner = inner?;
        let start = inner.start_revision();
        let state = LiveWatch {
            inner,
            partition: self.controls.partition.subscribe(),
            fail_epoch: epoch,
            done: false,
        };
        let stream = futures::stream::unfold(state, |mut s| async move {
            let item = s.next().await?;
            Some((item, s))
        });
        Ok(WatchStream::new(start, stream.boxed()))
    }
    async fn current_revision(&self) -> Result<Revision> {
        self.call(self.inner.current_revision()).await
    }
    async fn compact(&self, revision: Revision) -> Result<()> {
        self.call(self.inner.compact(revision)).await
    }
}

/// A watch seen through the partition: held back while `Hang` (then delivered in order,
/// as etcd's stream is buffered meanwhile), ended with `Unavailable` on `Fail`.
struct LiveWatch {
    inner: WatchStream,
    partition: watch::Receiver<PartitionState>,
    fail_epoch: u64,
    done: bool,
}

impl LiveWatch {
    async fn next(&mut self) -> Option<Result<WatchResponse>> {
        if self.done {
            return None;
        }
        loop {
            let state = *self.partition.borrow_and_update();
            if state.fail_epoch != self.fail_epoch || state.mode == Some(Partition::Fail) {
                self.done = true;
                return Some(Err(partitioned()));
            }
            if state.mode == Some(Partition::Hang) {
                if self.partition.changed().await.is_err() {
                    self.done = true;
                    return Some(Err(partitioned()));
                }
                continue;
            }
            tokio::select! {
                biased;
                changed = self.partition.changed() => {
                    if changed.is_err() {
                        self.done = true;
                        return Some(Err(partitioned()));
                    }
                }
                item = self.inner.next() => {
                    if matches!(item, Some(Err(_)) | None) {
                        self.done = true;
                    }
                    return item;
                }
            }
        }
    }
}
