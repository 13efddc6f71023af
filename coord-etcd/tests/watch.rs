//! Watches across etcd restarts: resumed without losing events. (Resuming into a
//! compacted revision, and the shared stream, are in `watch_multiplex.rs`.) What every
//! backend's watches do is checked by the conformance suite.

use std::time::Duration;

use coord_core::{BackendExt, CoordinationBackend, NO_LEASE, WatchRequest};
use coord_etcd::EtcdBackend;
use futures::StreamExt;

mod support;
use support::own_server::{backend, local_etcd};

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
