//! Lease keep-alive over etcd's bidirectional `LeaseKeepAlive` stream.
//!
//! etcd has no unary keep-alive: a refresh is a request/response pair on a stream. One stream
//! is kept per lease and shared by every `lease_keep_alive` call for it (calls for the same
//! lease take turns). A stream that broke (etcd restart, connection reset) or whose round
//! trip was cancelled is dropped and the next call opens a new one, transparently.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use coord_core::{Error, LeaseId, Result};
use etcd_client::{LeaseClient, LeaseKeepAliveStream, LeaseKeeper};
use tokio::sync::Mutex;

use crate::error::{Context, map_err, retry_unsent};

/// Streams unused for this long are closed when another lease's stream is opened.
const IDLE_STREAM: Duration = Duration::from_secs(300);

struct Keeper {
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
}

struct Slot {
    keeper: Option<Keeper>,
    last_used: Instant,
}

type SharedSlot = Arc<Mutex<Slot>>;

/// The keep-alive streams of one backend, by lease.
#[derive(Default)]
pub(crate) struct Keepers {
    slots: StdMutex<HashMap<LeaseId, SharedSlot>>,
}

impl Keepers {
    fn slot(&self, lease: LeaseId) -> SharedSlot {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots.get(&lease) {
            return slot.clone();
        }
        // Close streams of leases nobody refreshes any more (orphaned or forgotten).
        slots.retain(|_, slot| match slot.try_lock() {
            Ok(s) => s.last_used.elapsed() < IDLE_STREAM,
            Err(_) => true,
        });
        let slot = Arc::new(Mutex::new(Slot {
            keeper: None,
            last_used: Instant::now(),
        }));
        slots.insert(lease, slot.clone());
        slot
    }

    /// Forgets a lease's stream (after revoke or expiry), closing it.
    pub(crate) fn forget(&self, lease: LeaseId) {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&lease);
    }

    /// One keep-alive round trip: the TTL etcd reports after the refresh.
    ///
    /// Cancel safe: the stream is taken out of its slot for the round trip and only put back
    /// when the answer has been read, so a cancelled call never leaves a half-used stream.
    pub(crate) async fn keep_alive(
        &self,
        client: &LeaseClient,
        lease: LeaseId,
        attempts: u32,
    ) -> Result<Duration> {
        let slot = self.slot(lease);
        let mut slot = slot.lock().await;
        slot.last_used = Instant::now();
        if let Some(mut k) = slot.keeper.take() {
            match round_trip(&mut k, lease).await {
                Ok(ttl) => {
                    slot.keeper = Some(k);
                    return self.finish(lease, ttl);
                }
                Err(e) => {
                    tracing::debug!(
                        lease = format_args!("{lease:x}"),
                        error = %e,
                        "etcd keep-alive stream broke; opening a new one"
                    );
                }
            }
        }
        let ctx = Context::lease("lease keep-alive", lease);
        let (keeper, stream) = retry_unsent(attempts, || {
            let mut client = client.clone();
            async move { client.keep_alive(lease).await }
        })
        .await
        .map_err(|e| map_err(ctx, e))
        .inspect_err(|e| {
            if matches!(e, Error::LeaseNotFound { .. }) {
                self.forget(lease);
            }
        })?;
        // Opening sent one refresh and checked its answer, but etcd-client keeps the TTL to
        // itself: one more round trip reports it.
        let mut k = Keeper { keeper, stream };
        let ttl = round_trip(&mut k, lease).await?;
        slot.keeper = Some(k);
        self.finish(lease, ttl)
    }

    fn finish(&self, lease: LeaseId, ttl: i64) -> Result<Duration> {
        if ttl <= 0 {
            self.forget(lease);
            return Err(Error::LeaseNotFound { lease: Some(lease) });
        }
        Ok(Duration::from_secs(ttl.unsigned_abs()))
    }
}

async fn round_trip(k: &mut Keeper, lease: LeaseId) -> Result<i64> {
    let ctx = Context::lease("lease keep-alive", lease);
    k.keeper.keep_alive().await.map_err(|e| map_err(ctx, e))?;
    match k.stream.message().await.map_err(|e| map_err(ctx, e))? {
        Some(resp) => Ok(resp.ttl()),
        None => Err(Error::unavailable(format!(
            "etcd lease keep-alive {lease:x}: stream closed by the server"
        ))),
    }
}
