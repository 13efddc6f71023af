//! The scripts' shortcuts keep the stored state exact: a key is read once per script run
//! (later reads in the run see the run's own writes), a key written again on the same
//! lease is not added to the index or the lease's key set again, and log entries carry
//! the fields as they were stored. Real redis-server (the binary's shared one), real time.

// Only the shared server is used here; the conformance factory beside it is not.
#[allow(dead_code)]
mod support;

use std::time::Duration;

use coord_core::{
    BackendExt as _, CoordinationBackend, EventKind, KeyValue, RangeRequest, TxnOp, TxnRequest,
    WatchRequest, WatchResponse,
};
use futures::StreamExt as _;
use support::shared_redis;

/// Generous bound on a watch event that is already in the log; not a speed assertion.
const BOUND: Duration = Duration::from_secs(30);

async fn next(watch: &mut coord_core::WatchStream) -> WatchResponse {
    tokio::time::timeout(BOUND, watch.next())
        .await
        .expect("an event within the bound")
        .expect("the watch goes on")
        .expect("no watch error")
}

/// What a script stores of a key, as a watch event's previous value reports it.
fn stored(kv: &KeyValue) -> (&[u8], i64, i64, i64, coord_core::LeaseId) {
    (
        kv.value.as_slice(),
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        kv.lease,
    )
}

fn keys(kvs: &[KeyValue]) -> Vec<&[u8]> {
    kvs.iter().map(|kv| kv.key.as_slice()).collect()
}

#[tokio::test]
async fn a_key_written_again_on_its_lease_stays_indexed_and_goes_with_the_lease() {
    let Some(shared) = shared_redis().await else {
        return;
    };
    let c = shared.connect(&shared.fresh_namespace()).await;
    let lease = c.lease_grant(Duration::from_secs(600)).await.unwrap().id;
    let other = c.lease_grant(Duration::from_secs(600)).await.unwrap().id;
    let first = c.put(b"p/k", b"1", lease).await.unwrap();
    let mut watch = c
        .watch(
            WatchRequest::prefix("p/")
                .from_revision(first + 1)
                .with_prev_kv(),
        )
        .await
        .unwrap();
    let second = c.put(b"p/k", b"2", lease).await.unwrap();
    c.put(b"p/other", b"x", other).await.unwrap();

    let listed = c.range(RangeRequest::prefix("p/")).await.unwrap();
    assert_eq!(keys(&listed.kvs), [&b"p/k"[..], b"p/other"]);
    let kv = &listed.kvs[0];
    assert_eq!(
        (
            kv.value.as_slice(),
            kv.create_revision,
            kv.mod_revision,
            kv.version,
            kv.lease
        ),
        (&b"2"[..], first, second, 2, lease)
    );

    let put = next(&mut watch).await;
    let event = &put.events[0];
    assert_eq!(event.kind, EventKind::Put);
    let prev = event.prev_kv.as_ref().expect("the second put has a prev");
    assert_eq!(stored(prev), (&b"1"[..], first, first, 1, lease));
    next(&mut watch).await;

    c.lease_revoke(lease).await.unwrap();
    let gone = next(&mut watch).await;
    let event = &gone.events[0];
    assert_eq!(
        (event.kind, event.kv.key.as_slice()),
        (EventKind::Delete, &b"p/k"[..])
    );
    let prev = event.prev_kv.as_ref().expect("a delete has a prev");
    assert_eq!(stored(prev), (&b"2"[..], first, second, 2, lease));
    let left = c.range(RangeRequest::prefix("p/")).await.unwrap();
    assert_eq!(keys(&left.kvs), [&b"p/other"[..]]);
}

#[tokio::test]
async fn reads_in_a_txn_see_the_writes_before_them_in_that_txn() {
    let Some(shared) = shared_redis().await else {
        return;
    };
    let c = shared.connect(&shared.fresh_namespace()).await;
    let created = c.put(b"q/a", b"old", 0).await.unwrap();

    // Compared (read), written, then read back by key and by prefix: one run.
    let write = c
        .txn(
            TxnRequest::new()
                .when([coord_core::Compare::create_revision(
                    "q/a",
                    coord_core::CompareOp::Equal,
                    created,
                )])
                .and_then([
                    TxnOp::put("q/a", "new"),
                    TxnOp::put("q/b", "b"),
                    TxnOp::range(RangeRequest::key("q/a")),
                    TxnOp::range(RangeRequest::prefix("q/")),
                ]),
        )
        .await
        .unwrap();
    assert!(write.succeeded);
    let by_key = write.range(2).unwrap();
    assert_eq!(by_key.kvs.len(), 1);
    let a = &by_key.kvs[0];
    assert_eq!(
        (
            a.value.as_slice(),
            a.create_revision,
            a.mod_revision,
            a.version
        ),
        (&b"new"[..], created, write.revision, 2)
    );
    assert_eq!(keys(&write.range(3).unwrap().kvs), [&b"q/a"[..], b"q/b"]);

    // Deleted, then read in the same run: gone from the key read and the prefix read.
    let delete = c
        .txn(TxnRequest::new().and_then([
            TxnOp::delete("q/a"),
            TxnOp::range(RangeRequest::key("q/a")),
            TxnOp::range(RangeRequest::prefix("q/")),
        ]))
        .await
        .unwrap();
    assert!(delete.range(1).unwrap().kvs.is_empty());
    assert_eq!(keys(&delete.range(2).unwrap().kvs), [&b"q/b"[..]]);
    assert!(c.get(b"q/a").await.unwrap().is_none());
}
