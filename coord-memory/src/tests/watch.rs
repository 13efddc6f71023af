//! Watches: what only this backend has (start revision 0, watcher bookkeeping, history
//! retention, the end of the store). What every backend's watches do is checked by the
//! conformance suite.

use coord_core::{BackendExt, CoordinationBackend, Error, NO_LEASE, WatchRequest};
use futures::StreamExt;

use super::next;
use crate::MemoryBackend;

/// Revision 0 means "now", as the contract (and etcd) say. Not yet in the conformance
/// suite: coord-etcd rejects it.

#[tokio::test(start_paused = true)]
async fn a_watch_ended_by_compaction_is_unregistered() {
    let b = MemoryBackend::new();
    for v in ["1", "2", "3", "4"] {
        b.put(b"k", v.as_bytes(), NO_LEASE).await.unwrap(); // 2..=5
    }
    b.compact(4).await.unwrap();
    assert_eq!(b.compact_revision(), 4);
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
