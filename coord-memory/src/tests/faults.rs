//! Fault hooks: expire a lease now, fail the next calls, latency, partitions.

use std::time::Duration;

use coord_core::{BackendExt, CoordinationBackend, Error, EventKind, NO_LEASE, WatchRequest};
use futures::StreamExt;
use tokio::time::{Instant, sleep, timeout};

use super::{next, quiet};
use coord_core::faults::{LateApply, Partition};

use crate::MemoryBackend;

const TTL: Duration = Duration::from_secs(5);

fn unavailable<T: std::fmt::Debug>(result: coord_core::Result<T>) -> bool {
    matches!(result, Err(Error::Unavailable { .. }))
}

#[tokio::test(start_paused = true)]
async fn expire_lease_now_acts_as_if_the_ttl_ran_out() {
    let b = MemoryBackend::new();
    let lease = b.lease_grant(Duration::from_secs(3600)).await.unwrap().id;
    b.put(b"a", b"1", lease).await.unwrap();
    b.put(b"b", b"1", lease).await.unwrap();
    let mut watch = b.watch(WatchRequest::prefix("")).await.unwrap();
    b.expire_lease_now(lease).unwrap();
    let resp = next(&mut watch).await;
    assert_eq!(resp.revision, 4);
    assert_eq!(resp.events.len(), 2);
    assert!(resp.events.iter().all(|e| e.kind == EventKind::Delete));
    assert!(matches!(
        b.lease_keep_alive(lease).await,
        Err(Error::LeaseNotFound { .. })
    ));
    assert!(matches!(
        b.expire_lease_now(lease),
        Err(Error::LeaseNotFound { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn fail_next_fails_exactly_n_calls_of_this_client() {
    let b = MemoryBackend::new();
    let same = b.clone();
    let other = b.new_client();
    same.fail_next(2); // the fault state is shared by clones
    assert!(unavailable(b.put(b"k", b"1", NO_LEASE).await));
    assert!(other.put(b"k", b"other", NO_LEASE).await.is_ok());
    assert!(unavailable(b.current_revision().await));
    assert_eq!(b.put(b"k", b"2", NO_LEASE).await.unwrap(), 3);
    assert_eq!(b.get(b"k").await.unwrap().unwrap().value, b"2");
    // Failed calls never reached the store.
    assert_eq!(b.get(b"k").await.unwrap().unwrap().version, 2);
    assert!(Error::unavailable("x").is_retryable());
}

#[tokio::test(start_paused = true)]
async fn latency_delays_each_call_on_tokio_time() {
    let b = MemoryBackend::new();
    let other = b.new_client();
    b.set_latency(Duration::from_millis(40));
    let start = Instant::now();
    b.put(b"k", b"1", NO_LEASE).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(40));
    let start = Instant::now();
    other.get(b"k").await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);

    // A call dropped in its response half has been applied.
    let dropped = timeout(Duration::from_millis(30), b.put(b"k", b"2", NO_LEASE)).await;
    assert!(dropped.is_err());
    assert_eq!(other.get(b"k").await.unwrap().unwrap().value, b"2");

    b.clear_faults();
    let start = Instant::now();
    b.get(b"k").await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn fail_partition_cuts_calls_and_ends_watches() {
    let b = MemoryBackend::new();
    let other = b.new_client();
    let mut watch = b.watch(WatchRequest::prefix("")).await.unwrap();
    let mut other_watch = other.watch(WatchRequest::prefix("")).await.unwrap();
    b.partition(Partition::Fail);
    assert_eq!(b.partitioned(), Some(Partition::Fail));
    assert!(unavailable(b.put(b"k", b"1", NO_LEASE).await));
    assert!(unavailable(
        b.watch(WatchRequest::key("k")).await.map(|_| ())
    ));
    assert!(matches!(
        watch.next().await,
        Some(Err(Error::Unavailable { .. }))
    ));
    assert!(watch.next().await.is_none());

    other.put(b"k", b"1", NO_LEASE).await.unwrap();
    assert_eq!(next(&mut other_watch).await.revision, 2);

    b.heal();
    assert_eq!(b.partitioned(), None);
    assert_eq!(b.get(b"k").await.unwrap().unwrap().value, b"1");
}

#[tokio::test(start_paused = true)]
async fn hang_partition_holds_calls_and_watches_until_heal() {
    let b = MemoryBackend::new();
    let other = b.new_client();
    let mut watch = b.watch(WatchRequest::prefix("")).await.unwrap();
    b.partition(Partition::Hang);

    let hanging = tokio::spawn({
        let b = b.clone();
        async move { b.put(b"mine", b"1", NO_LEASE).await }
    });
    for i in 0..3 {
        other
            .put(b"theirs", format!("{i}").as_bytes(), NO_LEASE)
            .await
            .unwrap();
    }
    assert!(quiet(&mut watch, Duration::from_secs(60)).await);
    assert!(!hanging.is_finished());
    assert_eq!(
        other.revision(),
        4,
        "the hanging put has not reached the store"
    );

    b.heal();
    assert_eq!(hanging.await.unwrap().unwrap(), 5);
    let revisions: Vec<i64> = [
        next(&mut watch).await,
        next(&mut watch).await,
        next(&mut watch).await,
        next(&mut watch).await,
    ]
    .iter()
    .map(|r| r.revision)
    .collect();
    assert_eq!(revisions, [2, 3, 4, 5]);
}

#[tokio::test(start_paused = true)]
async fn a_partitioned_client_loses_its_lease_while_others_see_it_go() {
    let b = MemoryBackend::new();
    let other = b.new_client();
    let lease = b.lease_grant(TTL).await.unwrap().id;
    b.put(b"lock/holder", b"", lease).await.unwrap();
    let mut watch = other.watch(WatchRequest::key("lock/holder")).await.unwrap();

    b.partition(Partition::Fail);
    sleep(TTL / 2).await;
    assert!(unavailable(b.lease_keep_alive(lease).await));
    let resp = next(&mut watch).await;
    assert_eq!(resp.events[0].kind, EventKind::Delete);
    b.heal();
    assert!(matches!(
        b.lease_keep_alive(lease).await,
        Err(Error::LeaseNotFound { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_fail_partition_is_noticed_even_if_healed_before_anyone_looked() {
    let b = MemoryBackend::new();
    let mut watch = b.watch(WatchRequest::prefix("")).await.unwrap();
    b.partition(Partition::Hang);
    let hanging = tokio::spawn({
        let b = b.clone();
        async move { b.put(b"k", b"1", NO_LEASE).await }
    });
    tokio::task::yield_now().await;
    b.partition(Partition::Fail);
    b.heal();
    assert!(unavailable(hanging.await.unwrap()));
    assert!(matches!(
        watch.next().await,
        Some(Err(Error::Unavailable { .. }))
    ));
    assert!(watch.next().await.is_none());
    assert_eq!(b.watcher_count(), 0);
    // New calls and watches work again.
    let mut watch = b.watch(WatchRequest::prefix("")).await.unwrap();
    b.put(b"k", b"2", NO_LEASE).await.unwrap();
    assert_eq!(next(&mut watch).await.revision, 2);
}

#[tokio::test(start_paused = true)]
async fn delay_next_lands_a_lost_write_after_later_ones() {
    let b = MemoryBackend::new();
    let other = b.new_client();
    b.delay_next(1, LateApply::Fail);
    assert!(unavailable(b.put(b"k", b"late", NO_LEASE).await));
    assert!(b.get(b"k").await.unwrap().is_none(), "not applied yet");
    b.put(b"k", b"later", NO_LEASE).await.unwrap();
    assert!(other.get(b"k").await.unwrap().is_some());
    // Only this client's next txn was held; the rest went through.
    assert_eq!(b.apply_late().await, 1);
    let kv = other.get(b"k").await.unwrap().unwrap();
    assert_eq!(
        kv.value, b"late",
        "the lost write landed after the later one"
    );
    assert_eq!(kv.version, 2);
    assert_eq!(b.apply_late().await, 0);
}

#[tokio::test(start_paused = true)]
async fn delay_next_hang_answers_a_waiting_caller_and_applies_for_one_that_gave_up() {
    let b = MemoryBackend::new();
    b.delay_next(2, LateApply::Hang);
    let gave_up = timeout(Duration::from_secs(1), b.put(b"a", b"1", NO_LEASE)).await;
    assert!(gave_up.is_err(), "the call hangs");
    let waiting = tokio::spawn({
        let b = b.clone();
        async move { b.put(b"b", b"1", NO_LEASE).await }
    });
    sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished());
    assert_eq!(b.apply_late().await, 2);
    let rev = waiting
        .await
        .unwrap()
        .expect("the waiting caller gets the real answer");
    assert_eq!(rev, 3, "applied in the order sent");
    assert!(
        b.get(b"a").await.unwrap().is_some(),
        "applied though its caller gave up"
    );
}
