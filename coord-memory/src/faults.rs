//! Per-client fault state: injected failures, latency and partitions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use coord_core::{Error, Result};
use tokio::sync::watch;

/// How a partitioned client is cut off from the store; see
/// [`MemoryBackend::partition`](crate::MemoryBackend::partition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PartitionMode {
    /// Calls fail at once with [`Error::Unavailable`], and the client's open watch streams
    /// end with [`Error::Unavailable`] (like a connection that is refused or reset).
    Fail,
    /// Calls hang until [`MemoryBackend::heal`](crate::MemoryBackend::heal), and the client's
    /// watch streams deliver nothing until then; after the heal they deliver everything they
    /// missed, in order (like a network that drops packets, then recovers).
    Hang,
}

/// How the caller of a txn held back by
/// [`MemoryBackend::delay_next`](crate::MemoryBackend::delay_next) loses its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LateApply {
    /// The call fails at once with [`Error::Unavailable`] (a request timeout while the
    /// request is still on its way).
    Fail,
    /// The call waits until the txn is applied: its caller gives up first (a timeout or a
    /// dropped future around it), or gets the real answer from
    /// [`MemoryBackend::apply_late`](crate::MemoryBackend::apply_late).
    Hang,
}

/// A txn held back by `delay_next`, with the way back to its caller (who may have given up).
pub(crate) type HeldTxn = (
    coord_core::TxnRequest,
    tokio::sync::oneshot::Sender<Result<coord_core::TxnResponse>>,
);

/// What a client's watch channel carries: the partition, and how many `Fail` partitions
/// have started so far (so that a call or stream that lived through a `Fail` partition
/// fails even if the partition was healed before it looked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct PartitionState {
    pub(crate) mode: Option<PartitionMode>,
    pub(crate) fail_epoch: u64,
}

/// The fault state of one client: shared by all clones of one
/// [`MemoryBackend`](crate::MemoryBackend) handle.
#[derive(Debug)]
pub(crate) struct ClientFaults {
    /// A number identifying the client, for `Debug` and logs.
    pub(crate) id: u64,
    /// Calls left to fail with `Unavailable`.
    fail_next: AtomicU64,
    /// Round-trip latency in nanoseconds.
    latency_nanos: AtomicU64,
    /// The current partition.
    partition: watch::Sender<PartitionState>,
    /// Txns left to hold back, and how their callers lose the answer.
    late: std::sync::Mutex<(u64, Option<LateApply>)>,
    /// Txns held back, oldest first.
    pub(crate) held: std::sync::Mutex<std::collections::VecDeque<HeldTxn>>,
}

impl ClientFaults {
    pub(crate) fn new(id: u64) -> Self {
        ClientFaults {
            id,
            fail_next: AtomicU64::new(0),
            latency_nanos: AtomicU64::new(0),
            partition: watch::Sender::new(PartitionState::default()),
            late: std::sync::Mutex::new((0, None)),
            held: std::sync::Mutex::default(),
        }
    }

    pub(crate) fn set_delay_next(&self, n: u64, mode: LateApply) {
        *self.late.lock().unwrap_or_else(|e| e.into_inner()) = (n, (n > 0).then_some(mode));
    }

    /// Takes one of the txns `delay_next` asked to hold back, if any are left.
    pub(crate) fn take_late(&self) -> Option<LateApply> {
        let mut late = self.late.lock().unwrap_or_else(|e| e.into_inner());
        let mode = late.1?;
        late.0 -= 1;
        if late.0 == 0 {
            late.1 = None;
        }
        Some(mode)
    }

    pub(crate) fn pop_held(&self) -> Option<HeldTxn> {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    pub(crate) fn set_fail_next(&self, n: u64) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    pub(crate) fn set_latency(&self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.latency_nanos.store(nanos, Ordering::SeqCst);
    }

    pub(crate) fn latency(&self) -> Duration {
        Duration::from_nanos(self.latency_nanos.load(Ordering::SeqCst))
    }

    pub(crate) fn set_partition(&self, mode: Option<PartitionMode>) {
        self.partition.send_modify(|state| {
            if mode == Some(PartitionMode::Fail) {
                state.fail_epoch += 1;
            }
            state.mode = mode;
        });
    }

    pub(crate) fn partition(&self) -> PartitionState {
        *self.partition.borrow()
    }

    /// A receiver that sees partition changes (for watch streams).
    pub(crate) fn subscribe(&self) -> watch::Receiver<PartitionState> {
        self.partition.subscribe()
    }

    /// Consumes one injected failure, if any is left.
    fn take_failure(&self) -> bool {
        self.fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Waits out a `Hang` partition; fails for a `Fail` partition, or if one started since
    /// `epoch`.
    async fn pass_partition(&self, epoch: u64) -> Result<()> {
        if self.partition()
            == (PartitionState {
                mode: None,
                fail_epoch: epoch,
            })
        {
            return Ok(());
        }
        let mut rx = self.subscribe();
        loop {
            let state = *rx.borrow_and_update();
            if state.fail_epoch != epoch {
                return Err(partitioned(self.id));
            }
            match state.mode {
                None => return Ok(()),
                Some(PartitionMode::Fail) => return Err(partitioned(self.id)),
                Some(PartitionMode::Hang) => {
                    // The sender lives in `self`, so `changed` cannot fail while we wait.
                    if rx.changed().await.is_err() {
                        return Err(partitioned(self.id));
                    }
                }
            }
        }
    }

    /// The request half of a call: half the latency, the partition, then `fail_next`.
    /// Returns the token to pass to [`response`](Self::response).
    pub(crate) async fn request(&self) -> Result<u64> {
        let epoch = self.partition().fail_epoch;
        let latency = self.latency();
        if !latency.is_zero() {
            tokio::time::sleep(latency / 2).await;
        }
        self.pass_partition(epoch).await?;
        if self.take_failure() {
            tracing::debug!(client = self.id, "memory backend: injected failure");
            return Err(Error::unavailable(format!(
                "injected failure on memory client {} (fail_next)",
                self.id
            )));
        }
        Ok(epoch)
    }

    /// The response half of a call: the other half of the latency, then the partition.
    pub(crate) async fn response(&self, epoch: u64) -> Result<()> {
        let latency = self.latency();
        if !latency.is_zero() {
            tokio::time::sleep(latency - latency / 2).await;
        }
        self.pass_partition(epoch).await
    }
}

pub(crate) fn partitioned(client: u64) -> Error {
    Error::unavailable(format!(
        "memory client {client} is partitioned from the store"
    ))
}
