//! The fault injector: at random gaps, a random fault on a random client, the store or
//! the servers, each undone after a random while; faults on different clients overlap.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use coord_core::faults::{LateApply, Partition, WatchBreak};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::Slot;
use super::workload::Ctx;

/// Faults injected, by kind.
pub(crate) type FaultCounts = BTreeMap<String, u64>;

/// Kinds of fault on one client.
#[derive(Debug, Clone, Copy)]
enum ClientFault {
    FailNext,
    Latency,
    PartitionFail,
    PartitionHang,
    LateApplyFail,
    LateApplyHang,
    BreakWatches,
    ProxyBlackhole,
    ProxyLatency,
    ExpireLease,
    PauseClient,
}

impl ClientFault {
    fn label(self) -> &'static str {
        match self {
            ClientFault::FailNext => "client calls fail",
            ClientFault::Latency => "client latency",
            ClientFault::PartitionFail => "client partition (fail)",
            ClientFault::PartitionHang => "client partition (hang)",
            ClientFault::LateApplyFail => "late apply (answer fails)",
            ClientFault::LateApplyHang => "late apply (answer hangs)",
            ClientFault::BreakWatches => "watches broken",
            ClientFault::ProxyBlackhole => "proxy blackhole",
            ClientFault::ProxyLatency => "proxy latency",
            ClientFault::ExpireLease => "lease expired",
            ClientFault::PauseClient => "client paused",
        }
    }
}

const CLIENT_FAULTS: [ClientFault; 11] = [
    ClientFault::FailNext,
    ClientFault::Latency,
    ClientFault::PartitionFail,
    ClientFault::PartitionHang,
    ClientFault::LateApplyFail,
    ClientFault::LateApplyHang,
    ClientFault::BreakWatches,
    ClientFault::ProxyBlackhole,
    ClientFault::ProxyLatency,
    ClientFault::ExpireLease,
    ClientFault::PauseClient,
];

/// Injects faults until the run ends, undoes them all, then tells the clients (their
/// final round) and returns the counts.
pub(crate) async fn inject(ctx: &Ctx<'_>, slots: &[Arc<Slot>]) -> FaultCounts {
    let mut rng = StdRng::seed_from_u64(ctx.config.seed.rotate_left(17) ^ 0xfa17);
    let mut counts = FaultCounts::new();
    let server_faults = ctx.target.server_faults();
    let mut active: FuturesUnordered<BoxFuture<'_, ()>> = FuturesUnordered::new();
    let server_busy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gap_ms = ctx.scales.fault_gap.as_millis() as u64;
    let max_fault_ms = ctx.scales.max_fault.as_millis() as u64;
    // Faults end well before the run does, so the last ones are undone in time.
    let stop = ctx.end;
    loop {
        let next = Instant::now() + Duration::from_millis(rng.random_range(gap_ms / 4..=gap_ms));
        if next >= stop {
            break;
        }
        // Drive the faults in progress while waiting for the next.
        let sleep = tokio::time::sleep_until(next);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                Some(()) = active.next(), if !active.is_empty() => {}
            }
        }
        let use_server = !server_faults.is_empty()
            && rng.random_bool(0.12)
            && !server_busy.load(std::sync::atomic::Ordering::SeqCst);
        if use_server {
            let fault = server_faults[rng.random_range(0..server_faults.len())];
            let pick = rng.random_range(0..64);
            let hold = Duration::from_millis(rng.random_range(max_fault_ms / 8..=max_fault_ms / 2));
            *counts.entry(fault.label().to_owned()).or_default() += 1;
            server_busy.store(true, std::sync::atomic::Ordering::SeqCst);
            let busy = server_busy.clone();
            let ledger = ctx.ledger.clone();
            let target = ctx.target;
            ledger.event(format!(
                "fault: {} for {hold:?} (pick {pick})",
                fault.label()
            ));
            active.push(Box::pin(async move {
                match target.inject(fault, pick, hold).await {
                    Ok(did) => ledger.event(format!("fault undone: {did}")),
                    Err(e) => ledger.event(format!("fault {} failed: {e}", fault.label())),
                }
                busy.store(false, std::sync::atomic::Ordering::SeqCst);
            }));
            continue;
        }
        let i = rng.random_range(0..slots.len());
        let slot = slots[i].clone();
        let fault = CLIENT_FAULTS[rng.random_range(0..CLIENT_FAULTS.len())];
        let (faults, proxy) = slot.handles();
        if matches!(
            fault,
            ClientFault::ProxyBlackhole | ClientFault::ProxyLatency
        ) && proxy.is_none()
        {
            continue;
        }
        if fault_needs_idle(fault) && !slot.claim() {
            continue;
        }
        let dur = Duration::from_millis(rng.random_range(max_fault_ms / 20..=max_fault_ms));
        let small = Duration::from_millis(rng.random_range(1..=(max_fault_ms / 40).max(2)));
        let ledger = ctx.ledger.clone();
        let label = fault.label();
        *counts.entry(label.to_owned()).or_default() += 1;
        ledger.event(format!("fault: {label} on client-{i} for {dur:?}"));
        let undo: BoxFuture<'_, ()> = match fault {
            ClientFault::FailNext => {
                faults.fail_next(rng.random_range(1..4));
                Box::pin(async {})
            }
            ClientFault::Latency => {
                faults.set_latency(small);
                Box::pin(async move {
                    tokio::time::sleep(dur).await;
                    faults.set_latency(Duration::ZERO);
                    slot.unclaim();
                })
            }
            ClientFault::PartitionFail | ClientFault::PartitionHang => {
                faults.partition(match fault {
                    ClientFault::PartitionFail => Partition::Fail,
                    _ => Partition::Hang,
                });
                Box::pin(async move {
                    tokio::time::sleep(dur).await;
                    faults.heal();
                    slot.unclaim();
                })
            }
            ClientFault::LateApplyFail | ClientFault::LateApplyHang => {
                faults.delay_next(
                    1,
                    match fault {
                        ClientFault::LateApplyFail => LateApply::Fail,
                        _ => LateApply::Hang,
                    },
                );
                Box::pin(async move {
                    tokio::time::sleep(dur).await;
                    // If none was held back yet, stop holding the next one back.
                    faults.delay_next(0, LateApply::Fail);
                    let n = faults.apply_late().await;
                    ledger.event(format!("client-{i}: {n} held-back txns applied late"));
                    slot.unclaim();
                })
            }
            ClientFault::BreakWatches => {
                faults.break_watches(if rng.random_bool(0.5) {
                    WatchBreak::Unavailable
                } else {
                    WatchBreak::Compacted
                });
                Box::pin(async {})
            }
            ClientFault::ProxyBlackhole | ClientFault::ProxyLatency => {
                let proxy = proxy.expect("checked above");
                if matches!(fault, ClientFault::ProxyBlackhole) {
                    proxy.blackhole();
                } else {
                    proxy.set_latency(small);
                }
                Box::pin(async move {
                    tokio::time::sleep(dur).await;
                    proxy.heal();
                    proxy.set_latency(Duration::ZERO);
                    slot.unclaim();
                })
            }
            ClientFault::ExpireLease => {
                let backend = ctx.target.backend();
                match slot.lease() {
                    Some(lease) => Box::pin(async move {
                        ledger.expire(lease);
                        if let Some(f) = backend.faults() {
                            f.expire_lease_now(lease).await;
                        }
                    }),
                    None => Box::pin(async {}),
                }
            }
            ClientFault::PauseClient => {
                // The worker pauses itself at its next operation (it owns its guard), and
                // claims the slot meanwhile.
                slot.request_pause();
                Box::pin(async {})
            }
        };
        active.push(undo);
    }
    while active.next().await.is_some() {}
    for slot in slots {
        let (faults, proxy) = slot.handles();
        faults.heal();
        faults.set_latency(Duration::ZERO);
        faults.fail_next(0);
        faults.delay_next(0, LateApply::Fail);
        faults.apply_late().await;
        if let Some(p) = proxy {
            p.heal();
            p.set_latency(Duration::ZERO);
        }
    }
    ctx.faults_over.cancel();
    counts
}

/// Faults that change a client's state until undone, so two must not overlap on one.
fn fault_needs_idle(fault: ClientFault) -> bool {
    !matches!(
        fault,
        ClientFault::FailNext
            | ClientFault::BreakWatches
            | ClientFault::ExpireLease
            | ClientFault::PauseClient
    )
}
