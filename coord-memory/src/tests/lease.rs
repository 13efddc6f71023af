//! Leases on tokio time, to the millisecond: the exact moment of expiry and the reaper
//! (TTL rounding is tested in `lease.rs`). What every backend does with leases is checked
//! by the conformance suite.

use std::sync::Arc;
use std::time::Duration;

use coord_core::{BackendExt, CoordinationBackend, Error, WatchRequest};
use tokio::time::{Instant, advance, sleep};

use super::next;
use crate::MemoryBackend;

const TTL: Duration = Duration::from_secs(5);

#[tokio::test(start_paused = true)]
async fn the_reaper_expires_a_lease_exactly_at_its_deadline() {
    let b = MemoryBackend::new();
    let lease = b.lease_grant(TTL).await.unwrap().id;
    let other = b.lease_grant(TTL * 10).await.unwrap().id;
    b.put(b"l/b", b"2", lease).await.unwrap(); // rev 2
    b.put(b"l/a", b"1", lease).await.unwrap(); // rev 3
    b.put(b"l/c", b"3", other).await.unwrap(); // rev 4
    let mut watch = b.watch(WatchRequest::prefix("l/")).await.unwrap();
    let started = Instant::now();

    let resp = next(&mut watch).await;
    assert_eq!(started.elapsed(), TTL);
    assert_eq!(resp.revision, 5);
    assert_eq!(resp.events.len(), 2);
    assert_eq!(b.key_count(), 1);
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
            .lease_grant(Duration::from_secs(2 + i % 100))
            .await
            .unwrap()
            .id;
        b.put(format!("k/{i}").as_bytes(), b"v", id).await.unwrap();
    }
    assert_eq!(b.key_count(), 2000);
    // A hundred distinct deadlines, the last 101 s away (TTLs are whole seconds, at least 2).
    sleep(Duration::from_secs(102)).await;
    assert_eq!(b.key_count(), 0);
    assert_eq!(b.lease_count(), 0);
    assert_eq!(b.revision(), 1 + 2000 + 2000);
}
