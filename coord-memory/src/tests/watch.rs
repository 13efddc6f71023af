//! Watches: replay, live delivery, filtering, prev kv, compaction.

use std::time::Duration;

use coord_core::{
    BackendExt, CoordinationBackend, Error, EventKind, KeyRange, KeyValue, NO_LEASE, TxnOp,
    TxnRequest, WatchRequest,
};
use futures::StreamExt;

use super::{kv, next, quiet, summary};
use crate::MemoryBackend;

const QUIET: Duration = Duration::from_millis(100);

fn ev(kind: EventKind, key: &str, value: &str) -> (EventKind, String, String) {
    (kind, key.to_string(), value.to_string())
}

#[tokio::test(start_paused = true)]
async fn watch_from_the_past_replays_in_order_grouped_by_revision() {
    let b = MemoryBackend::new();
    b.put(b"a", b"1", NO_LEASE).await.unwrap(); // 2
    b.txn(TxnRequest::new().and_then([TxnOp::put("b", "1"), TxnOp::put("a", "2")]))
        .await
        .unwrap(); // 3
    b.delete(KeyRange::key("b")).await.unwrap(); // 4
    b.put(b"zz", b"outside", NO_LEASE).await.unwrap(); // 5

    let mut watch = b
        .watch(WatchRequest::new(KeyRange::range("a", "c")).from_revision(3))
        .await
        .unwrap();
    assert_eq!(watch.start_revision(), 3);
    let r3 = next(&mut watch).await;
    assert_eq!(r3.revision, 3);
    assert_eq!(
        summary(&r3.events),
        [ev(EventKind::Put, "b", "1"), ev(EventKind::Put, "a", "2")]
    );
    assert_eq!(r3.events[1].kv, kv("a", "2", 2, 3, 2, NO_LEASE));
    assert_eq!(r3.events[1].prev_kv, None, "not asked for");
    let r4 = next(&mut watch).await;
    assert_eq!(r4.revision, 4);
    assert_eq!(
        r4.events[0].kv,
        KeyValue {
            key: b"b".to_vec(),
            mod_revision: 4,
            ..KeyValue::default()
        }
    );
    // Then live, with no gap.
    b.put(b"a", b"3", NO_LEASE).await.unwrap(); // 6
    let r6 = next(&mut watch).await;
    assert_eq!(r6.revision, 6);
    assert_eq!(summary(&r6.events), [ev(EventKind::Put, "a", "3")]);
    assert!(quiet(&mut watch, QUIET).await);

    // From revision 1: everything.
    let mut all = b
        .watch(WatchRequest::prefix("").from_revision(1))
        .await
        .unwrap();
    let mut revs = Vec::new();
    for _ in 0..5 {
        revs.push(next(&mut all).await.revision);
    }
    assert_eq!(revs, [2, 3, 4, 5, 6]);
}

#[tokio::test(start_paused = true)]
async fn watch_from_now_sees_only_new_changes() {
    let b = MemoryBackend::new();
    b.put(b"k", b"old", NO_LEASE).await.unwrap();
    let mut watch = b.watch(WatchRequest::key("k")).await.unwrap();
    assert_eq!(watch.start_revision(), 3);
    assert!(quiet(&mut watch, QUIET).await);
    b.put(b"k", b"new", NO_LEASE).await.unwrap();
    let resp = next(&mut watch).await;
    assert_eq!((resp.revision, resp.events.len()), (3, 1));
    assert_eq!(resp.events[0].kv.value, b"new");

    // Revision 0 means "now", as in etcd.
    let zero = b
        .watch(WatchRequest::key("k").from_revision(0))
        .await
        .unwrap();
    assert_eq!(zero.start_revision(), 4);
    let err = b
        .watch(WatchRequest::key("k").from_revision(-1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }));
    assert!(matches!(
        b.watch(WatchRequest::key("")).await,
        Err(Error::InvalidArgument { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn key_watch_vs_prefix_watch() {
    let b = MemoryBackend::new();
    let mut key = b.watch(WatchRequest::key("k")).await.unwrap();
    let mut prefix = b.watch(WatchRequest::prefix("k")).await.unwrap();
    b.put(b"k2", b"1", NO_LEASE).await.unwrap();
    b.put(b"k", b"1", NO_LEASE).await.unwrap();
    b.put(b"j", b"1", NO_LEASE).await.unwrap();
    b.delete(KeyRange::prefix("")).await.unwrap();

    let r = next(&mut key).await;
    assert_eq!(
        (r.revision, summary(&r.events)),
        (3, vec![ev(EventKind::Put, "k", "1")])
    );
    let r = next(&mut key).await;
    assert_eq!(
        (r.revision, summary(&r.events)),
        (5, vec![ev(EventKind::Delete, "k", "")])
    );
    assert!(quiet(&mut key, QUIET).await);

    let mut seen = Vec::new();
    for _ in 0..3 {
        let r = next(&mut prefix).await;
        seen.push((r.revision, summary(&r.events)));
    }
    assert_eq!(
        seen,
        [
            (2, vec![ev(EventKind::Put, "k2", "1")]),
            (3, vec![ev(EventKind::Put, "k", "1")]),
            (
                5,
                vec![
                    ev(EventKind::Delete, "k", ""),
                    ev(EventKind::Delete, "k2", "")
                ]
            ),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn prev_kv_is_attached_when_asked() {
    let b = MemoryBackend::new();
    let mut with = b
        .watch(WatchRequest::key("k").with_prev_kv())
        .await
        .unwrap();
    let mut without = b.watch(WatchRequest::key("k")).await.unwrap();
    b.put(b"k", b"1", NO_LEASE).await.unwrap(); // 2
    b.put(b"k", b"2", NO_LEASE).await.unwrap(); // 3
    b.delete(KeyRange::key("k")).await.unwrap(); // 4

    let created = next(&mut with).await;
    assert_eq!(created.events[0].prev_kv, None, "the key did not exist");
    let updated = next(&mut with).await;
    assert_eq!(
        updated.events[0].prev_kv,
        Some(kv("k", "1", 2, 2, 1, NO_LEASE))
    );
    let deleted = next(&mut with).await;
    assert_eq!(deleted.events[0].kind, EventKind::Delete);
    assert_eq!(
        deleted.events[0].prev_kv,
        Some(kv("k", "2", 2, 3, 2, NO_LEASE))
    );
    for _ in 0..3 {
        assert!(next(&mut without).await.events[0].prev_kv.is_none());
    }
}

#[tokio::test(start_paused = true)]
async fn watch_starting_in_the_future_skips_earlier_revisions() {
    let b = MemoryBackend::new();
    let mut watch = b
        .watch(WatchRequest::key("k").from_revision(4))
        .await
        .unwrap();
    assert_eq!(watch.start_revision(), 4);
    for v in ["2", "3", "4", "5"] {
        b.put(b"k", v.as_bytes(), NO_LEASE).await.unwrap();
    }
    assert_eq!(next(&mut watch).await.revision, 4);
    assert_eq!(next(&mut watch).await.revision, 5);
}

#[tokio::test(start_paused = true)]
async fn compaction() {
    let b = MemoryBackend::new();
    for v in ["1", "2", "3", "4"] {
        b.put(b"k", v.as_bytes(), NO_LEASE).await.unwrap(); // 2..=5
    }
    assert!(matches!(
        b.compact(6).await,
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        b.compact(0).await,
        Err(Error::InvalidArgument { .. })
    ));
    b.compact(4).await.unwrap();
    assert_eq!(b.compact_revision(), 4);
    assert!(matches!(
        b.compact(4).await,
        Err(Error::Compacted {
            compact_revision: Some(4)
        })
    ));
    assert!(matches!(b.compact(3).await, Err(Error::Compacted { .. })));

    // Below the compaction revision: one error, then the end.
    let mut old = b
        .watch(WatchRequest::key("k").from_revision(3))
        .await
        .unwrap();
    assert!(matches!(
        old.next().await,
        Some(Err(Error::Compacted {
            compact_revision: Some(4)
        }))
    ));
    assert!(old.next().await.is_none());
    assert_eq!(b.watcher_count(), 0);

    // At the compaction revision: still fully served.
    let mut kept = b
        .watch(WatchRequest::key("k").from_revision(4))
        .await
        .unwrap();
    assert_eq!(next(&mut kept).await.revision, 4);
    assert_eq!(next(&mut kept).await.revision, 5);

    // Keys survive compaction; "now" is never compacted.
    assert_eq!(b.get(b"k").await.unwrap().unwrap().version, 4);
    b.compact(5).await.unwrap();
    let mut now = b.watch(WatchRequest::key("k")).await.unwrap();
    assert_eq!(now.start_revision(), 6);
    b.put(b"k", b"5", NO_LEASE).await.unwrap();
    assert_eq!(next(&mut now).await.revision, 6);
    assert_eq!(
        next(&mut kept).await.revision,
        6,
        "live watches are unaffected"
    );
}

#[tokio::test(start_paused = true)]
async fn history_retention_compacts_automatically() {
    let b = MemoryBackend::new();
    b.set_history_retention(Some(3));
    for i in 0..10 {
        b.put(b"k", format!("{i}").as_bytes(), NO_LEASE)
            .await
            .unwrap(); // 2..=11
    }
    assert_eq!(b.compact_revision(), 9);
    let mut watch = b
        .watch(WatchRequest::key("k").from_revision(9))
        .await
        .unwrap();
    assert_eq!(next(&mut watch).await.revision, 9);
    let mut old = b
        .watch(WatchRequest::key("k").from_revision(8))
        .await
        .unwrap();
    assert!(matches!(
        old.next().await,
        Some(Err(Error::Compacted { .. }))
    ));
}

#[tokio::test(start_paused = true)]
async fn dropped_streams_are_unregistered() {
    let b = MemoryBackend::new();
    let w1 = b.watch(WatchRequest::key("a")).await.unwrap();
    let w2 = b.watch(WatchRequest::prefix("")).await.unwrap();
    assert_eq!(b.watcher_count(), 2);
    drop(w1);
    assert_eq!(b.watcher_count(), 1);
    drop(w2);
    assert_eq!(b.watcher_count(), 0);
    b.put(b"a", b"1", NO_LEASE).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn streams_end_with_unavailable_when_the_store_is_dropped() {
    let b = MemoryBackend::new();
    let mut watch = b.watch(WatchRequest::key("a")).await.unwrap();
    drop(b);
    assert!(matches!(
        watch.next().await,
        Some(Err(Error::Unavailable { .. }))
    ));
    assert!(watch.next().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn no_event_is_lost_under_concurrent_writers() {
    let b = MemoryBackend::new();
    let mut watch = b
        .watch(WatchRequest::prefix("w/").from_revision(1))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for t in 0..4 {
        let c = b.new_client();
        tasks.push(tokio::spawn(async move {
            for i in 0..250 {
                c.put(
                    format!("w/{t}").as_bytes(),
                    format!("{i}").as_bytes(),
                    NO_LEASE,
                )
                .await
                .unwrap();
                tokio::task::yield_now().await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut expected = 2;
    while expected <= 1001 {
        let resp = next(&mut watch).await;
        assert_eq!(resp.revision, expected);
        expected += 1;
    }
    assert_eq!(b.revision(), 1001);
    assert!(matches!(
        b.watch(WatchRequest::key("w/0").from_revision(1))
            .await
            .map(|w| w.start_revision()),
        Ok(1)
    ));
}
