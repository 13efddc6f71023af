//! Leases on tokio time: grant, keep-alive, expiry, revoke, time-to-live.

use std::sync::Arc;
use std::time::Duration;

use coord_core::{
    BackendExt, CoordinationBackend, Error, EventKind, KeyValue, NO_LEASE, WatchRequest,
};
use tokio::time::{Instant, advance, sleep};

use super::{next, quiet};
use crate::MemoryBackend;

const TTL: Duration = Duration::from_secs(5);

#[tokio::test(start_paused = true)]
async fn grant_rounds_ttl_and_gives_distinct_positive_ids() {
    let b = MemoryBackend::new();
    let g1 = b.lease_grant(Duration::from_micros(1500)).await.unwrap();
    let g2 = b.lease_grant(TTL).await.unwrap();
    assert_eq!(g1.ttl, Duration::from_millis(2));
    assert_eq!(g2.ttl, TTL);
    assert!(g1.id > 0 && g2.id > 0 && g1.id != g2.id);
    assert_ne!(format!("{:x}", g1.id), format!("{:x}", g2.id));
    let err = b.lease_grant(Duration::ZERO).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }));
    assert_eq!(b.lease_count(), 2);
    assert_eq!(b.revision(), 1, "granting changes no key");
}

#[tokio::test(start_paused = true)]
async fn expiry_deletes_all_keys_in_one_revision_with_delete_events() {
    let b = MemoryBackend::new();
    let lease = b.lease_grant(TTL).await.unwrap().id;
    let other = b.lease_grant(TTL * 10).await.unwrap().id;
    b.put(b"l/b", b"2", lease).await.unwrap(); // rev 2
    b.put(b"l/a", b"1", lease).await.unwrap(); // rev 3
    b.put(b"l/c", b"3", other).await.unwrap(); // rev 4
    let mut watch = b
        .watch(WatchRequest::prefix("l/").with_prev_kv())
        .await
        .unwrap();
    let started = Instant::now();

    let resp = next(&mut watch).await; // the reaper fires at the deadline
    assert_eq!(started.elapsed(), TTL);
    assert_eq!(resp.revision, 5);
    assert_eq!(resp.events.len(), 2);
    for (event, (key, value, rev)) in resp.events.iter().zip([("l/a", "1", 3), ("l/b", "2", 2)]) {
        assert_eq!(event.kind, EventKind::Delete);
        assert_eq!(
            event.kv,
            KeyValue {
                key: key.into(),
                mod_revision: 5,
                ..KeyValue::default()
            }
        );
        let prev = event.prev_kv.as_ref().unwrap();
        assert_eq!(
            (prev.value_str(), prev.create_revision, prev.lease),
            (value.into(), rev, lease)
        );
    }
    assert_eq!(b.revision(), 5);
    assert_eq!(b.key_count(), 1);
    assert!(matches!(
        b.lease_keep_alive(lease).await,
        Err(Error::LeaseNotFound { lease: Some(l) }) if l == lease
    ));
    assert!(matches!(
        b.lease_time_to_live(lease).await,
        Err(Error::LeaseNotFound { .. })
    ));
    assert!(matches!(
        b.put(b"l/d", b"4", lease).await,
        Err(Error::LeaseNotFound { .. })
    ));
    assert_eq!(b.lease_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn expiry_is_exact_even_without_the_reaper() {
    let b = MemoryBackend::new();
    let lease = b.lease_grant(TTL).await.unwrap().id;
    b.put(b"k", b"v", lease).await.unwrap();
    // `advance` moves the clock without letting the reaper run; calls expire due leases.
    advance(TTL - Duration::from_millis(1)).await;
    assert!(b.get(b"k").await.unwrap().is_some());
    advance(Duration::from_millis(1)).await;
    assert!(b.get(b"k").await.unwrap().is_none());
    assert_eq!(b.revision(), 3);
}

#[tokio::test(start_paused = true)]
async fn keep_alive_resets_the_deadline() {
    let b = MemoryBackend::new();
    let lease = b.lease_grant(TTL).await.unwrap().id;
    b.put(b"k", b"v", lease).await.unwrap();
    for _ in 0..5 {
        sleep(TTL * 3 / 4).await;
        assert_eq!(b.lease_keep_alive(lease).await.unwrap(), TTL);
    }
    let status = b.lease_time_to_live(lease).await.unwrap();
    assert_eq!(
        (status.id, status.granted_ttl, status.remaining),
        (lease, TTL, TTL)
    );
    sleep(Duration::from_secs(2)).await;
    let status = b.lease_time_to_live(lease).await.unwrap();
    assert_eq!(status.remaining, TTL - Duration::from_secs(2));
    assert!(b.get(b"k").await.unwrap().is_some());
    sleep(TTL).await;
    assert!(b.get(b"k").await.unwrap().is_none());
    assert!(matches!(
        b.lease_keep_alive(lease).await,
        Err(Error::LeaseNotFound { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn revoke_deletes_keys_once() {
    let b = MemoryBackend::new();
    let lease = b.lease_grant(TTL).await.unwrap().id;
    let empty = b.lease_grant(TTL).await.unwrap().id;
    b.put(b"a", b"1", lease).await.unwrap();
    b.put(b"b", b"1", lease).await.unwrap();
    b.put(b"c", b"1", NO_LEASE).await.unwrap();
    let mut watch = b
        .watch(WatchRequest::prefix("").from_revision(5))
        .await
        .unwrap();
    b.lease_revoke(lease).await.unwrap();
    assert_eq!(b.revision(), 5);
    let resp = next(&mut watch).await;
    assert_eq!(resp.revision, 5);
    assert_eq!(resp.events.len(), 2);
    assert!(resp.events.iter().all(|e| e.kind == EventKind::Delete));
    assert_eq!(b.key_count(), 1);
    assert!(matches!(
        b.lease_revoke(lease).await,
        Err(Error::LeaseNotFound { .. })
    ));
    // A lease without keys is revoked without a new revision.
    b.lease_revoke(empty).await.unwrap();
    assert_eq!(b.revision(), 5);
    assert!(quiet(&mut watch, TTL * 2).await);
}

#[tokio::test(start_paused = true)]
async fn expiry_after_keys_were_deleted_changes_nothing() {
    let b = MemoryBackend::new();
    let lease = b.lease_grant(TTL).await.unwrap().id;
    b.put(b"a", b"1", lease).await.unwrap();
    b.delete(coord_core::KeyRange::key("a")).await.unwrap();
    sleep(TTL * 2).await;
    assert_eq!(b.lease_count(), 0);
    assert_eq!(b.revision(), 3);
}

#[tokio::test(start_paused = true)]
async fn leases_expire_in_deadline_order_each_in_its_own_revision() {
    let b = MemoryBackend::new();
    let mut ids = Vec::new();
    for i in 1..=3_u64 {
        let id = b.lease_grant(Duration::from_secs(4 - i)).await.unwrap().id;
        b.put(format!("k{i}").as_bytes(), b"v", id).await.unwrap();
        ids.push(id);
    }
    let mut watch = b.watch(WatchRequest::prefix("k")).await.unwrap();
    let mut order = Vec::new();
    for rev in 5..=7 {
        let resp = next(&mut watch).await;
        assert_eq!(resp.revision, rev);
        order.push(resp.events[0].kv.key_str().into_owned());
    }
    assert_eq!(order, ["k3", "k2", "k1"]);
}

#[tokio::test(start_paused = true)]
async fn the_reaper_does_not_keep_the_store_alive() {
    let b = MemoryBackend::new();
    b.lease_grant(TTL).await.unwrap();
    let weak = Arc::downgrade(&b.store.shared);
    tokio::task::yield_now().await; // let the reaper start and go to sleep
    drop(b);
    assert!(weak.upgrade().is_none());
}

#[tokio::test(start_paused = true)]
async fn many_leases_and_keys_stay_fast() {
    let b = MemoryBackend::new();
    for i in 0..2000 {
        let id = b
            .lease_grant(Duration::from_millis(10 + i % 100))
            .await
            .unwrap()
            .id;
        b.put(format!("k/{i}").as_bytes(), b"v", id).await.unwrap();
    }
    assert_eq!(b.key_count(), 2000);
    sleep(Duration::from_secs(1)).await;
    assert_eq!(b.key_count(), 0);
    assert_eq!(b.lease_count(), 0);
    assert_eq!(b.revision(), 1 + 2000 + 2000);
}
