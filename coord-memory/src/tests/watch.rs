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

/// The default bound keeps history flat however many operations run: after 200,000 lock-like
/// put/delete operations with no watcher, the store keeps no more revisions (and no more
/// bytes of events) than after the first 20,000.
#[tokio::test(start_paused = true)]
async fn history_stays_flat_by_default_with_no_watcher() {
    let b = MemoryBackend::new();
    assert_eq!(
        b.history_retention(),
        Some(crate::DEFAULT_HISTORY_REVISIONS)
    );
    let lease = b
        .lease_grant(std::time::Duration::from_secs(3600))
        .await
        .unwrap()
        .id;
    let cycle = |i: u64| {
        let b = b.clone();
        async move {
            let key = format!("locks/job/{:x}", i % 8);
            b.put(key.as_bytes(), b"holder", lease).await.unwrap();
            b.delete(coord_core::KeyRange::key(key)).await.unwrap();
        }
    };
    for i in 0..10_000 {
        cycle(i).await;
    }
    let (len, bytes) = (b.history_len(), b.history_bytes());
    let cap = usize::try_from(crate::DEFAULT_HISTORY_REVISIONS).unwrap();
    assert_eq!(len, cap, "20,000 revisions written, the cap kept");
    for i in 10_000..100_000 {
        cycle(i).await;
    }
    assert_eq!(b.revision(), 1 + 200_000);
    assert_eq!(b.history_len(), len);
    assert!(
        b.history_bytes() <= bytes,
        "{} bytes after 200,000 operations, {bytes} after 20,000",
        b.history_bytes()
    );
    assert_eq!(b.compact_revision(), b.revision() - cap as i64 + 1);
    assert_eq!(b.key_count(), 0);
}

/// Trimming never costs a live watcher an event: one that reads nothing while far more
/// revisions than the bound are written still gets every one of its revisions, in order,
/// and a watch that starts within the bound replays it. Older starts get `Compacted`.
#[tokio::test(start_paused = true)]
async fn a_live_watcher_gets_every_event_though_history_is_trimmed() {
    let b = MemoryBackend::new();
    b.set_history_retention(Some(100));
    for i in 0..50 {
        b.put(b"w/k", format!("{i}").as_bytes(), NO_LEASE)
            .await
            .unwrap(); // 2..=51
    }
    // Starts in the past (a replay), then goes live.
    let mut replayed = b
        .watch(WatchRequest::prefix("w/").from_revision(2))
        .await
        .unwrap();
    let mut live = b.watch(WatchRequest::key("w/k")).await.unwrap();
    let other = b.new_client();
    for i in 50..5_000 {
        other
            .put(b"w/k", format!("{i}").as_bytes(), NO_LEASE)
            .await
            .unwrap(); // 52..=5001
        other.put(b"x", b"unwatched", NO_LEASE).await.unwrap();
    }
    let last = b.revision();
    assert_eq!(b.history_len(), 100);
    for (watch, first_value) in [(&mut replayed, 0), (&mut live, 50)] {
        for i in first_value..5_000 {
            let response = next(watch).await;
            let expected = if i < 50 { 2 + i } else { 52 + 2 * (i - 50) };
            assert_eq!(response.revision, expected);
            assert_eq!(response.events[0].kv.value, format!("{i}").as_bytes());
        }
        assert!(super::quiet(watch, std::time::Duration::from_secs(1)).await);
    }
    let floor = last - 99;
    assert_eq!(b.compact_revision(), floor);
    let mut too_old = b
        .watch(WatchRequest::key("w/k").from_revision(floor - 1))
        .await
        .unwrap();
    assert!(matches!(
        too_old.next().await,
        Some(Err(Error::Compacted { compact_revision: Some(r) })) if r == floor
    ));
    let mut oldest = b
        .watch(WatchRequest::prefix("").from_revision(floor))
        .await
        .unwrap();
    assert_eq!(next(&mut oldest).await.revision, floor);
    // An explicit compaction below what the bound already dropped is refused, as a repeat.
    assert!(matches!(
        b.compact(floor - 1).await,
        Err(Error::Compacted { .. })
    ));
    b.compact(last).await.unwrap();
    assert_eq!((b.compact_revision(), b.history_len()), (last, 1));
}

#[tokio::test(start_paused = true)]
async fn an_unbounded_store_keeps_everything_until_compacted() {
    let b = MemoryBackend::new();
    b.set_history_retention(None);
    let writes = crate::DEFAULT_HISTORY_REVISIONS as i64 + 10;
    for _ in 0..writes {
        b.put(b"k", b"v", NO_LEASE).await.unwrap();
    }
    assert_eq!(b.compact_revision(), 0);
    let mut all = b
        .watch(WatchRequest::key("k").from_revision(1))
        .await
        .unwrap();
    assert_eq!(next(&mut all).await.revision, 2);
    // Bounding it later trims at the next write.
    b.set_history_retention(Some(10));
    b.put(b"k", b"v", NO_LEASE).await.unwrap();
    assert_eq!(b.history_len(), 10);
    assert_eq!(b.compact_revision(), b.revision() - 9);
}
