//! Micro benchmarks of the memory store itself: txn, range and watch fan-out.
//!
//! Each sample runs a batch of [`BATCH`] operations inside one `block_on`, so the runtime's
//! entry cost is spread out; divan's `items/s` column is operations per second.
//! `cargo bench -p coord-memory --bench store`.

use coord_core::{
    BackendExt, Compare, CompareOp, CoordinationBackend, NO_LEASE, RangeRequest, TxnOp, TxnRequest,
    WatchRequest,
};
use coord_memory::MemoryBackend;
use divan::counter::ItemsCount;
use futures::StreamExt;
use tokio::runtime::{Builder, Runtime};

/// Operations per sample.
const BATCH: usize = 100;

fn main() {
    divan::main();
}

fn runtime() -> Runtime {
    Builder::new_current_thread().enable_time().build().unwrap()
}

/// A store holding `n` keys `k/00000..` (so ranges and compares search a real tree).
fn store_with(rt: &Runtime, n: usize) -> MemoryBackend {
    let b = MemoryBackend::new();
    rt.block_on(async {
        for i in 0..n {
            b.put(format!("k/{i:05}").as_bytes(), b"value", NO_LEASE)
                .await
                .unwrap();
        }
    });
    b
}

/// A plain put, as a one-operation txn.
#[divan::bench]
fn txn_put(bencher: divan::Bencher<'_, '_>) {
    let rt = runtime();
    let b = store_with(&rt, 1000);
    bencher.counter(ItemsCount::new(BATCH)).bench_local(|| {
        rt.block_on(async {
            for _ in 0..BATCH {
                b.txn(TxnRequest::new().and_then([TxnOp::put("k/00500", "v")]))
                    .await
                    .unwrap();
            }
        })
    });
}

/// A compare-and-swap on the mod revision with a first-created read of a 1,000-key prefix
/// (which scans the prefix's create revisions, as etcd does).
#[divan::bench]
fn txn_compare_put_range(bencher: divan::Bencher<'_, '_>) {
    let rt = runtime();
    let b = store_with(&rt, 1000);
    bencher.counter(ItemsCount::new(BATCH)).bench_local(|| {
        rt.block_on(async {
            for _ in 0..BATCH {
                let rev = b.current_revision().await.unwrap();
                let resp = b
                    .txn(
                        TxnRequest::new()
                            .when([Compare::mod_revision("k/00500", CompareOp::Less, rev + 1)])
                            .and_then([
                                TxnOp::put("k/00500", "v"),
                                TxnOp::range(RangeRequest::first_created("k/")),
                            ]),
                    )
                    .await
                    .unwrap();
                assert!(resp.succeeded);
            }
        })
    });
}

/// A lock's life on the store alone: create a key on a lease if absent (with the
/// first-created read of its prefix), then delete that incarnation.
#[divan::bench]
fn txn_claim_release(bencher: divan::Bencher<'_, '_>) {
    let rt = runtime();
    let b = store_with(&rt, 1000);
    let lease = rt
        .block_on(b.lease_grant(std::time::Duration::from_secs(3600)))
        .unwrap()
        .id;
    bencher.counter(ItemsCount::new(BATCH)).bench_local(|| {
        rt.block_on(async {
            for _ in 0..BATCH {
                let claim = b
                    .txn(
                        TxnRequest::new()
                            .when([Compare::create_revision("lock/1", CompareOp::Equal, 0)])
                            .and_then([
                                TxnOp::put_with_lease("lock/1", "", lease),
                                TxnOp::range(RangeRequest::first_created("lock/")),
                            ]),
                    )
                    .await
                    .unwrap();
                let release = b
                    .txn(
                        TxnRequest::new()
                            .when([Compare::create_revision(
                                "lock/1",
                                CompareOp::Equal,
                                claim.revision,
                            )])
                            .and_then([TxnOp::delete("lock/1")]),
                    )
                    .await
                    .unwrap();
                assert!(release.succeeded);
            }
        })
    });
}

/// Reading one key, among `keys`.
#[divan::bench(args = [10, 10_000])]
fn range_key(bencher: divan::Bencher<'_, '_>, keys: usize) {
    let rt = runtime();
    let b = store_with(&rt, keys);
    let key = format!("k/{:05}", keys / 2);
    bencher.counter(ItemsCount::new(BATCH)).bench_local(|| {
        rt.block_on(async {
            for _ in 0..BATCH {
                assert!(b.get(key.as_bytes()).await.unwrap().is_some());
            }
        })
    });
}

/// Reading a prefix of 100 keys (values included), among 10,000.
#[divan::bench]
fn range_prefix_100(bencher: divan::Bencher<'_, '_>) {
    let rt = runtime();
    let b = store_with(&rt, 10_000);
    bencher.counter(ItemsCount::new(BATCH)).bench_local(|| {
        rt.block_on(async {
            for _ in 0..BATCH {
                let r = b.range(RangeRequest::prefix("k/050")).await.unwrap();
                assert_eq!(r.kvs.len(), 100);
            }
        })
    });
}

/// One put seen by `watchers` watchers of its key: the put, and every watcher receiving it.
#[divan::bench(args = [1, 10, 100])]
fn watch_fan_out(bencher: divan::Bencher<'_, '_>, watchers: usize) {
    let rt = runtime();
    let b = store_with(&rt, 1000);
    let mut streams: Vec<_> = rt.block_on(async {
        let mut streams = Vec::new();
        for _ in 0..watchers {
            streams.push(b.watch(WatchRequest::key("k/00500")).await.unwrap());
        }
        streams
    });
    bencher.counter(ItemsCount::new(BATCH)).bench_local(|| {
        rt.block_on(async {
            for _ in 0..BATCH {
                b.put(b"k/00500", b"v", NO_LEASE).await.unwrap();
                for stream in &mut streams {
                    let response = stream.next().await.unwrap().unwrap();
                    assert_eq!(response.events.len(), 1);
                }
            }
        })
    });
}
