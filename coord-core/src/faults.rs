//! Client-side fault injection around any backend client: failures, latency, partitions,
//! late apply of a write whose answer was lost, broken watches. The in-memory backend's
//! fault hooks are this wrapper around its store, and the conformance suite (coord-testkit)
//! injects the same faults into every backend with it.
//!
//! Why a decorator and not the network: the faults are defined at the client
//! boundary ("the next `n` calls fail before reaching the store", "open watches end with an
//! error", "this write's answer is lost and it is applied later"), and a network fault cannot
//! express them deterministically: a backend resumes a broken watch by itself instead of
//! ending it, and a refused connection only fails calls once the channel notices. The store
//! behind the decorator is the real one: a call that passes the request half really runs
//! there (so with latency it is applied while its response is still on its way back), and a
//! client cut off by a partition really stops refreshing its lease, which then really
//! expires on the server.
//!
//! Late apply models what a slow etcd follower does: a txn sent to it is forwarded to the
//! leader late, so it is applied after writes the client sent afterwards (to another
//! member), while its caller has long given up on it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::{oneshot, watch};

use crate::{
    BackendInfo, CoordinationBackend, Error, LeaseGrant, LeaseId, LeaseStatus, RangeRequest,
    RangeResponse, Result, Revision, TxnRequest, TxnResponse, WatchRequest, WatchResponse,
    WatchStream,
};

/// How a [partition](FaultControls::partition) cuts a client off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Partition {
    /// Calls fail at once with [`Error::Unavailable`], and the client's open watch streams
    /// end with [`Error::Unavailable`] (like a connection that is refused or reset).
    Fail,
    /// Calls hang until [`heal`](FaultControls::heal), and the client's watch streams deliver
    /// nothing until then; after the heal they deliver everything they missed, in order
    /// (like a network that drops packets, then recovers).
    Hang,
}

/// How the caller of a txn held back by [`FaultControls::delay_next`] loses its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LateApply {
    /// The call fails at once with [`Error::Unavailable`] (a request timeout while the
    /// request is still on its way).
    Fail,
    /// The call waits until the txn is applied: its caller gives up first (a timeout or a
    /// dropped future around it), or gets the real answer from
    /// [`apply_late`](FaultControls::apply_late).
    Hang,
}

/// The error [`FaultControls::break_watches`] ends a watch with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchBreak {
    /// `Compacted`: the watch resumed (after a restart, say) from a revision compacted away.
    Compacted,
    /// `Unavailable`: the stream broke.
    Unavailable,
}

/// The partition, and counters of the events a call or stream must notice even if they are
/// over by the time it looks: `Fail` partitions started, and watch breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct State {
    mode: Option<Partition>,
    fail_epoch: u64,
    break_epoch: u64,
    last_break: Option<WatchBreak>,
}

fn partitioned() -> Error {
    Error::unavailable("injected partition: the client is cut off from the store")
}

/// A txn held back by [`FaultControls::delay_next`], with the way back to its caller (who
/// may have given up).
type Held = (TxnRequest, oneshot::Sender<Result<TxnResponse>>);

/// The fault controls of one [`FaultyBackend`] client (and of every clone of it).
pub struct FaultControls {
    inner: Arc<dyn CoordinationBackend>,
    fail_next: AtomicU64,
    latency_nanos: AtomicU64,
    late: Mutex<(u64, Option<LateApply>)>,
    held: Mutex<VecDeque<Held>>,
    state: watch::Sender<State>,
}

impl std::fmt::Debug for FaultControls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultControls")
            .field("state", &*self.state.borrow())
            .finish_non_exhaustive()
    }
}

impl FaultControls {
    fn latency(&self) -> Duration {
        Duration::from_nanos(self.latency_nanos.load(Ordering::SeqCst))
    }

    fn state(&self) -> State {
        *self.state.borrow()
    }

    /// Waits out a `Hang` partition; fails for a `Fail` partition or one started since
    /// `epoch`.
    async fn pass_partition(&self, epoch: u64) -> Result<()> {
        let mut rx = self.state.subscribe();
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
                "injected failure (fail_next) before the call reached the store",
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

    /// Takes one of the txns [`delay_next`](Self::delay_next) asked to hold, if any are left.
    fn take_late(&self) -> Option<LateApply> {
        let mut late = self.late.lock().unwrap_or_else(|e| e.into_inner());
        let mode = late.1?;
        late.0 -= 1;
        if late.0 == 0 {
            late.1 = None;
        }
        Some(mode)
    }
}

/// The controls. Each acts on this client alone.
impl FaultControls {
    /// The next `n` calls fail with [`Error::Unavailable`] without reaching the store
    /// (replacing any count left over). Watch streams already open are not affected.
    pub fn fail_next(&self, n: u64) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Adds a round-trip latency to each call: half before the call reaches the store, half
    /// before its result is returned (a call dropped in the second half has been applied).
    /// Uses tokio time, so a paused clock skips it. `Duration::ZERO` removes it.
    pub fn set_latency(&self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.latency_nanos.store(nanos, Ordering::SeqCst);
    }

    /// Cuts the client off the store until [`heal`](Self::heal); see [`Partition`]. A call
    /// is checked when it reaches the store and again before it returns, so a call in
    /// flight when the partition starts may fail or hang after it has been applied.
    pub fn partition(&self, mode: Partition) {
        self.state.send_modify(|s| {
            if mode == Partition::Fail {
                s.fail_epoch += 1;
            }
            s.mode = Some(mode);
        });
    }

    /// Ends the partition: hanging calls go on, and watch streams of a [`Partition::Hang`]
    /// deliver what they missed. Streams ended by a [`Partition::Fail`] stay ended.
    pub fn heal(&self) {
        self.state.send_modify(|s| s.mode = None);
    }

    /// The current partition, if any.
    pub fn partitioned(&self) -> Option<Partition> {
        self.state().mode
    }

    /// Whether no fault is armed for calls: no failures, latency, partition or txns to hold
    /// back, so a call made now goes straight to the store and back. A client whose store
    /// answers without awaiting (the in-memory one) may then skip the wrapper on its fast
    /// path. (Watch streams still need the wrapper: faults may come later.)
    pub fn is_clear(&self) -> bool {
        self.fail_next.load(Ordering::SeqCst) == 0
            && self.latency_nanos.load(Ordering::SeqCst) == 0
            && self.state().mode.is_none()
            && self
                .late
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .1
                .is_none()
    }

    /// Holds back the next `n` txns instead of applying them: their answer is lost
    /// ([`LateApply`] says how the caller notices), and they are applied only by
    /// [`apply_late`](Self::apply_late), after every write sent meanwhile. This is what an
    /// etcd follower whose link to the leader is slow does to a write sent through it.
    pub fn delay_next(&self, n: u64, mode: LateApply) {
        *self.late.lock().unwrap_or_else(|e| e.into_inner()) = (n, (n > 0).then_some(mode));
    }

    /// Applies the txns held back by [`delay_next`](Self::delay_next), oldest first, and
    /// returns how many there were. A caller still waiting gets the real answer.
    pub async fn apply_late(&self) -> usize {
        let mut applied = 0;
        loop {
            let next = self
                .held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front();
            let Some((request, answer)) = next else {
                return applied;
            };
            tracing::debug!("fault injection: applying a held txn late");
            // The caller may be gone (it gave up); the write lands all the same.
            let _ = answer.send(self.inner.txn(request).await);
            applied += 1;
        }
    }

    /// Ends every watch stream of the client that is open now with an error: what a watch
    /// that broke and could not resume reports.
    pub fn break_watches(&self, how: WatchBreak) {
        self.state.send_modify(|s| {
            s.break_epoch += 1;
            s.last_break = Some(how);
        });
    }
}

/// A backend client whose calls pass through [`FaultControls`]; see the [module](self) docs.
#[derive(Debug, Clone)]
pub struct FaultyBackend {
    inner: Arc<dyn CoordinationBackend>,
    controls: Arc<FaultControls>,
}

impl FaultyBackend {
    /// Wraps `inner`; the returned controls affect this client alone.
    pub fn new(inner: Arc<dyn CoordinationBackend>) -> (Self, Arc<FaultControls>) {
        let controls = Arc::new(FaultControls {
            inner: inner.clone(),
            fail_next: AtomicU64::new(0),
            latency_nanos: AtomicU64::new(0),
            late: Mutex::new((0, None)),
            held: Mutex::new(VecDeque::new()),
            state: watch::Sender::new(State::default()),
        });
        (
            FaultyBackend {
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
impl CoordinationBackend for FaultyBackend {
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
        if let Some(mode) = self.controls.take_late() {
            let (answer, outcome) = oneshot::channel();
            self.controls
                .held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back((request, answer));
            return match mode {
                LateApply::Fail => Err(Error::unavailable(
                    "injected lost answer (delay_next): the txn may still be applied later",
                )),
                LateApply::Hang => outcome
                    .await
                    .unwrap_or_else(|_| Err(Error::unavailable("held txn was discarded"))),
            };
        }
        self.call(self.inner.txn(request)).await
    }
    async fn watch(&self, request: WatchRequest) -> Result<WatchStream> {
        let epoch = self.controls.request().await?;
        let break_epoch = self.controls.state().break_epoch;
        let inner = self.inner.watch(request).await;
        self.controls.response(epoch).await?;
        let inner = inner?;
        let start = inner.start_revision();
        let state = LiveWatch {
            inner,
            state: self.controls.state.subscribe(),
            fail_epoch: epoch,
            break_epoch,
            next_revision: start,
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

/// A watch seen through the faults: held back while `Hang` (then delivered in order, as a
/// server buffers the stream meanwhile), ended with `Unavailable` on `Fail`, ended with the
/// chosen error by [`FaultControls::break_watches`].
struct LiveWatch {
    inner: WatchStream,
    state: watch::Receiver<State>,
    fail_epoch: u64,
    break_epoch: u64,
    /// One past the last revision delivered: where a resumed watch would have to start.
    next_revision: Revision,
    done: bool,
}

impl LiveWatch {
    fn end(&mut self, error: Error) -> Option<Result<WatchResponse>> {
        self.done = true;
        Some(Err(error))
    }

    async fn next(&mut self) -> Option<Result<WatchResponse>> {
        if self.done {
            return None;
        }
        loop {
            let state = *self.state.borrow_and_update();
            if state.break_epoch != self.break_epoch {
                let error = match state.last_break {
                    Some(WatchBreak::Compacted) => Error::Compacted {
                        compact_revision: Some(self.next_revision + 1),
                    },
                    _ => Error::unavailable("injected watch break: the stream was cut"),
                };
                return self.end(error);
            }
            if state.fail_epoch != self.fail_epoch || state.mode == Some(Partition::Fail) {
                return self.end(partitioned());
            }
            if state.mode == Some(Partition::Hang) {
                if self.state.changed().await.is_err() {
                    return self.end(partitioned());
                }
                continue;
            }
            tokio::select! {
                biased;
                changed = self.state.changed() => {
                    if changed.is_err() {
                        return self.end(partitioned());
                    }
                }
                item = self.inner.next() => {
                    match &item {
                        Some(Ok(resp)) => self.next_revision = resp.revision + 1,
                        Some(Err(_)) | None => self.done = true,
                    }
                    return item;
                }
            }
        }
    }
}
