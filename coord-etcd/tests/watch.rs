//! Watches against a real etcd, including compaction and etcd restarts.

use std::time::{Duration, Instant};

use coord_core::{
    BackendExt, CoordinationBackend, Error, EventKind, KeyRange, NO_LEASE, TxnOp, TxnRequest,
    WatchRequest, WatchResponse, WatchStream,
};
use coord_etcd::EtcdBackend;
use futures::StreamExt;

mod support;
use support::own_server::{backend, backend_ns, local_etcd};

async fn next(w: &mut WatchStream) -> WatchResponse {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("a watch response within 10 s")
        .expect("stream not ended")
        .expect("no error")
}

#[tokio::test]
async fn watch_from_now_knows_its_start_revision() {
    let Some(server) = local_etcd().await else {
        return;
    };
    let b = backend(&server).await;
    let r = b.put(b"k", b"0", NO_LEASE).await.unwrap();
    let mut w = b.watch(WatchRequest::key("k")).await.unwrap();
    assert_eq!(w.start_revision(), r + 1);
    // Established on return: the very next write is seen.
    let r1 = b.put(b"k", b"1", NO_LEASE).await.unwrap();
    b.put(b"other", b"x", NO_LEASE).await.unwrap();
    let r2 = b.put(b"k", b"2", NO_LEASE).await.unwrap();
    let e1 = next(&mut w).await;
    assert_eq!(e1.revision, r1);
    assert_eq!(e1.events[0].kind, EventKind::Put);
    assert_eq!(e1.events[0].kv.value, b"1");
    assert!(e1.events[0].prev_kv.is_none());
    let e2 = next(&mut w).await;
    assert_eq!(e2.revision, r2);
    b.delete(KeyRange::key("k")).await.unwrap();
    let d = next(&mut w).await;
    assert_eq!(d.events[0].kind, EventKind::Delete);
    assert_eq!(d.events[0].kv.key, b"k");
    assert_eq!(d.events[0].kv.mod_revision, d.revision);
}

#[tokio::test]
async fn watch_from_the_past_splits_revisions_and_groups_txns() {
    let Some(server) = local_etcd().await else {
        return;
    };
    let b = backend_ns(&server, "w/").await;
    let r1 = b.put(b"p/a", b"1", NO_LEASE).await.unwrap();
    let r2 = b.put(b"p/b", b"2", NO_LEASE).await.unwrap();
    b.put(b"q", b"not watched", NO_LEASE).await.unwrap();
    let r3 = b
        .txn(TxnRequest::new().and_then([
            TxnOp::put("p/c", "3"),
            TxnOp::put("p/a", "1b"),
            TxnOp::put("q2", "not watched"),
        ]))
        .await
        .unwrap()
        .revision;
    // etcd sends these catch-up events in one response; coord hands them out per revision.
    let mut w = b
        .watch(WatchRequest::prefix("p/").from_revision(r1).with_prev_kv())
        .await
        .unwrap();
    assert_eq!(w.start_revision(), r1);
    let a = next(&mut w).await;
    assert_eq!((a.revision, a.events.len()), (r1, 1));
    assert_eq!(a.events[0].kv.key, b"p/a");
    let bb = next(&mut w).await;
    assert_eq!((bb.revision, bb.events.len()), (r2, 1));
    let t = next(&mut w).await;
    assert_eq!(t.revision, r3);
    let keys: Vec<_> = t.events.iter().map(|e| e.kv.key.clone()).collect();
    assert_eq!(keys, [b"p/c".to_vec(), b"p/a".to_vec()]);
    assert_eq!(t.events[1].prev_kv.as_ref().unwrap().value, b"1");
    assert_eq!(t.events[1].prev_kv.as_ref().unwrap().key, b"p/a");

    // A key range watch, starting in the future.
    let now = b.current_revision().await.unwrap();
    let mut rw = b
        .watch(WatchRequest::new(KeyRange::range("m", "o")).from_revision(now + 2))
        .await
        .unwrap();
    b.put(b"n", b"skipped: before the start", NO_LEASE)
        .await
        .unwrap();
    b.put(b"o", b"outside", NO_LEASE).await.unwrap();
    let rn = b.put(b"n", b"seen", NO_LEASE).await.unwrap();
    let got = next(&mut rw).await;
    assert_eq!(got.revision, rn);
    assert_eq!(got.events[0].kv.value, b"seen");

    let err = b
        .watch(WatchRequest::key("k").from_revision(-1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
}

#[tokio::test]
async fn watch_from_a_compacted_revision_ends_with_compacted() {
    let Some(server) = local_etcd().await else {
        return;
    };
    let b = backend(&server).await;
    let first = b.put(b"c", b"0", NO_LEASE).await.unwrap();
    for i in 1..5 {
        b.put(b"c", format!("{i}").as_bytes(), NO_LEASE)
            .await
            .unwrap();
    }
    let compact_at = b.current_revision().await.unwrap() - 1;
    b.compact(compact_at).await.unwrap();
    // Reported on the stream, not by watch().
    let mut w = b
        .watch(WatchRequest::key("c").from_revision(first))
        .await
        .unwrap();
    let item = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .unwrap()
        .unwrap();
    match item {
        Err(Error::Compacted { compact_revision }) => {
            assert_eq!(compact_revision, Some(compact_at))
        }
        other => panic!("{other:?}"),
    }
    assert!(w.next().await.is_none(), "the stream ends after Compacted");
    // From the compaction revision on, the watch works.
    let mut w = b
        .watch(WatchRequest::key("c").from_revision(compact_at))
        .await
        .unwrap();
    assert_eq!(next(&mut w).await.revision, compact_at);
}

/// Writes `count` versions of one key, retrying through outages; returns the last revision.
async fn writer(b: EtcdBackend, count: usize) -> i64 {
    let mut last = 0;
    let mut written = 0;
    while written < count {
        match b.put(b"w", format!("{written}").as_bytes(), NO_LEASE).await {
            Ok(rev) => {
                last = rev;
                written += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => {
                assert!(e.is_retryable(), "{e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_after_kill_and_restart_without_losing_events() {
    let Some(server) = local_etcd().await else {
        return;
    };
    let b = backend(&server).await;
    let mut w = b.watch(WatchRequest::key("w")).await.unwrap();
    let start = w.start_revision();
    let reader = tokio::spawn(async move {
        let mut versions = Vec::new();
        let mut revisions = Vec::new();
        while let Some(item) = w.next().await {
            let resp = item.expect("no error: the watch resumes by itself");
            revisions.push(resp.revision);
            for ev in resp.events {
                versions.push(ev.kv.version);
            }
            if versions.len() >= 150 {
                break;
            }
        }
        (versions, revisions)
    });
    let write = tokio::spawn(writer(b.clone(), 150));
    tokio::time::sleep(Duration::from_millis(400)).await;
    server.kill().await.expect("kill etcd");
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart().await.expect("restart etcd");
    let last = write.await.unwrap();
    let (versions, revisions) = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("watcher sees every write")
        .unwrap();
    // Every version of the key, in order, none missing, none twice. (A put whose answer
    // was lost in the crash may have been applied and then retried: both are versions.)
    assert_eq!(versions.len(), 150);
    let expected: Vec<i64> = (1..=150).collect();
    assert_eq!(versions, expected);
    assert!(revisions.windows(2).all(|p| p[0] < p[1]), "{revisions:?}");
    assert!(revisions[0] >= start);
    assert!(*revisions.last().unwrap() <= last);
}

#[tokio::test]
async fn resuming_into_a_compacted_revision_yields_compacted() {
    let Some(server) = local_etcd().await else {
        return;
    };
    let b = backend(&server).await;
    let mut w = b.watch(WatchRequest::key("x")).await.unwrap();
    let r1 = b.put(b"x", b"1", NO_LEASE).await.unwrap();
    assert_eq!(next(&mut w).await.revision, r1);
    // While the watch is not polled: etcd dies, comes back, history moves on and is
    // compacted past what the watch has delivered.
    server.kill().await.expect("kill etcd");
    server.restart().await.expect("restart etcd");
    let deadline = Instant::now() + Duration::from_secs(10);
    let r2 = loop {
        match b.put(b"x", b"2", NO_LEASE).await {
            Ok(r) => break r,
            Err(e) if Instant::now() < deadline => {
                assert!(e.is_retryable(), "{e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    };
    b.put(b"x", b"3", NO_LEASE).await.unwrap();
    b.compact(r2 + 1).await.unwrap();
    let item = tokio::time::timeout(Duration::from_secs(15), w.next())
        .await
        .unwrap()
        .unwrap();
    match item {
        Err(Error::Compacted { compact_revision }) => assert_eq!(compact_revision, Some(r2 + 1)),
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(w.next().await.is_none());
}
