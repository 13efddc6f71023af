//! Watches across etcd restarts: resumed without losing events, or ended with `Compacted`
//! when history moved on. What every backend's watches do is checked by the conformance
//! suite.

use std::time::{Duration, Instant};

use coord_core::{
    BackendExt, CoordinationBackend, Error, NO_LEASE, WatchRequest, WatchResponse, WatchStream,
};
use coord_etcd::EtcdBackend;
use futures::StreamExt;

mod support;
use support::own_server::{backend, local_etcd};

async fn next(w: &mut WatchStream) -> WatchResponse {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("a watch response within 10 s")
        .expect("stream not ended")
        .expect("no error")
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
