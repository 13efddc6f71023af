//! The edges a user meets, where every backend must answer as etcd does: a zero time limit
//! means "try once", TTLs past etcd's maximum are refused, requests past etcd's size limit
//! are refused, and leases are granted in etcd's whole seconds with its minimum.

use std::time::Duration;

use coord_core::{
    BackendExt, Election, Error, MAX_LEASE_TTL, MAX_REQUEST_BYTES, Mutex, RwMode, RwMutex,
    Semaphore, Session,
};

use super::{TestBackend, keys_under, new_session, unique};

/// Panics unless `outcome` is a `Timeout`.
fn assert_timeout<T: std::fmt::Debug>(outcome: coord_core::Result<T>, what: &str) {
    match outcome {
        Err(Error::Timeout { .. }) => {}
        other => panic!("{what}: expected Timeout, got {other:?}"),
    }
}

/// Panics unless the only keys under `prefix` are `expected` (checked at once: a `Timeout`
/// withdraws its key before it is returned).
async fn assert_keys(backend: &dyn TestBackend, prefix: &str, expected: &[&str], what: &str) {
    let client = backend.client().await;
    let keys: Vec<String> = keys_under(client.as_ref(), prefix)
        .await
        .iter()
        .map(|kv| kv.key_str().into_owned())
        .collect();
    assert_eq!(keys, expected, "{what}");
}

/// `Mutex::lock_timeout(0)` tries once: it acquires a free lock, and on a held one answers
/// `Timeout` and leaves no key (the claim request is never cut short by the limit).
pub async fn zero_limit_lock_acquires_a_free_mutex_and_times_out_on_a_held_one(
    backend: &dyn TestBackend,
) {
    let name = unique("zero-mutex");
    let (a, b) = (new_session(backend).await, new_session(backend).await);
    let held = Mutex::new(&a, name.as_str())
        .lock_timeout(Duration::ZERO)
        .await
        .expect("a zero limit acquires a free lock");
    let mb = Mutex::new(&b, name.as_str());
    assert_timeout(
        mb.lock_timeout(Duration::ZERO).await,
        "zero limit on a held lock",
    );
    assert_keys(
        backend,
        &name,
        &[held.key()],
        "the timed-out waiter left no key",
    )
    .await;
    held.unlock().await.unwrap();
    let next = mb.lock_timeout(Duration::ZERO).await.expect("free again");
    next.unlock().await.unwrap();
}

/// `RwMutex::lock_timeout(mode, 0)` tries once, for readers and writers.
pub async fn zero_limit_rw_lock_acquires_when_free_and_times_out_when_blocked(
    backend: &dyn TestBackend,
) {
    let name = unique("zero-rw");
    let (a, b) = (new_session(backend).await, new_session(backend).await);
    let (ra, rb) = (
        RwMutex::new(&a, name.as_str()),
        RwMutex::new(&b, name.as_str()),
    );
    let writer = ra
        .lock_timeout(RwMode::Write, Duration::ZERO)
        .await
        .expect("a zero limit takes a free write lock");
    for mode in [RwMode::Read, RwMode::Write] {
        assert_timeout(
            rb.lock_timeout(mode, Duration::ZERO).await,
            &format!("zero-limit {mode:?} lock behind a writer"),
        );
    }
    assert_keys(
        backend,
        &name,
        &[writer.key()],
        "timed-out waiters left no key",
    )
    .await;
    writer.unlock().await.unwrap();
    let reader = ra
        .lock_timeout(RwMode::Read, Duration::ZERO)
        .await
        .expect("a zero limit takes a free read lock");
    let second = rb
        .lock_timeout(RwMode::Read, Duration::ZERO)
        .await
        .expect("readers share at once");
    second.unlock().await.unwrap();
    assert_timeout(
        rb.lock_timeout(RwMode::Write, Duration::ZERO).await,
        "zero-limit write lock behind a reader",
    );
    assert_keys(
        backend,
        &name,
        &[reader.key()],
        "the timed-out writer left no key",
    )
    .await;
    reader.unlock().await.unwrap();
}

/// `Semaphore::acquire_timeout(0)` tries once: a free permit is taken, none free is `Timeout`
/// with no key left.
pub async fn zero_limit_acquire_takes_a_free_permit_and_times_out_when_none_is_free(
    backend: &dyn TestBackend,
) {
    let name = unique("zero-sem");
    let (a, b, c) = (
        new_session(backend).await,
        new_session(backend).await,
        new_session(backend).await,
    );
    let first = Semaphore::new(&a, name.as_str(), 2)
        .unwrap()
        .acquire_timeout(Duration::ZERO)
        .await
        .expect("first permit");
    let second = Semaphore::new(&b, name.as_str(), 2)
        .unwrap()
        .acquire_timeout(Duration::ZERO)
        .await
        .expect("second permit");
    let third = Semaphore::new(&c, name.as_str(), 2).unwrap();
    assert_timeout(
        third.acquire_timeout(Duration::ZERO).await,
        "no permit free",
    );
    let mut expected = [first.key().to_owned(), second.key().to_owned()];
    expected.sort();
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    assert_keys(
        backend,
        &name,
        &expected,
        "the timed-out waiter left no key",
    )
    .await;
    first.release().await.unwrap();
    let permit = third.acquire_timeout(Duration::ZERO).await.expect("freed");
    permit.release().await.unwrap();
    second.release().await.unwrap();
}

/// `Election::campaign_timeout(0)` tries once: elected when nobody else campaigns,
/// `Timeout` with the candidacy withdrawn otherwise.
pub async fn zero_limit_campaign_leads_an_empty_election_and_times_out_behind_a_leader(
    backend: &dyn TestBackend,
) {
    let name = unique("zero-elect");
    let (a, b) = (new_session(backend).await, new_session(backend).await);
    let leader = Election::new(&a, name.as_str())
        .campaign_timeout("a", Duration::ZERO)
        .await
        .expect("a zero limit leads an empty election");
    let eb = Election::new(&b, name.as_str());
    assert_timeout(
        eb.campaign_timeout("b", Duration::ZERO).await,
        "behind a leader",
    );
    assert_keys(
        backend,
        &name,
        &[leader.key()],
        "the timed-out candidate left no key",
    )
    .await;
    leader.resign().await.unwrap();
    let next = eb
        .campaign_timeout("b", Duration::ZERO)
        .await
        .expect("empty again");
    next.resign().await.unwrap();
}

/// A TTL past etcd's maximum (9,000,000,000 s) is refused on every backend, with an error
/// naming the maximum, and so is a session with it; the maximum itself is granted.
pub async fn lease_ttls_above_the_maximum_are_refused(backend: &dyn TestBackend) {
    let c = backend.client().await;
    assert_eq!(c.info().max_lease_ttl, MAX_LEASE_TTL);
    for ttl in [Duration::MAX, MAX_LEASE_TTL + Duration::from_secs(1)] {
        match c.lease_grant(ttl).await {
            Err(Error::InvalidArgument { message, .. }) => {
                assert!(message.contains("9000000000"), "{message}");
            }
            other => panic!("grant({ttl:?}): expected InvalidArgument, got {other:?}"),
        }
        let session = Session::builder(c.clone()).ttl(ttl).start().await;
        assert!(
            matches!(session, Err(Error::InvalidArgument { .. })),
            "session with ttl {ttl:?}: {session:?}"
        );
    }
    let longest = c.lease_grant(MAX_LEASE_TTL).await.expect("the maximum");
    assert_eq!(longest.ttl, MAX_LEASE_TTL);
    c.lease_revoke(longest.id).await.unwrap();
}

/// A request past etcd's default size limit (1.5 MiB of keys and values) is refused with
/// `InvalidArgument` naming the limit, and writes nothing; 1 MiB is accepted.
pub async fn requests_over_the_size_limit_are_refused_and_write_nothing(backend: &dyn TestBackend) {
    let c = backend.client().await;
    assert_eq!(c.info().max_request_bytes, MAX_REQUEST_BYTES);
    let key = unique("too-large");
    let huge = vec![b'x'; 2 << 20];
    match c.put(key.as_bytes(), &huge, 0).await {
        Err(Error::InvalidArgument { message, .. }) => {
            assert!(message.contains("too large"), "{message}");
            assert!(
                message.contains(&MAX_REQUEST_BYTES.to_string()),
                "{message}"
            );
        }
        other => panic!("a 2 MiB put: expected InvalidArgument, got {other:?}"),
    }
    assert!(
        c.get(key.as_bytes()).await.unwrap().is_none(),
        "nothing written"
    );
    let big = vec![b'y'; 1 << 20];
    c.put(key.as_bytes(), &big, 0)
        .await
        .expect("1 MiB is accepted");
    assert_eq!(c.get(key.as_bytes()).await.unwrap().unwrap().value, big);
    c.delete(coord_core::KeyRange::key(key.as_str()))
        .await
        .unwrap();
}

/// Leases are granted as etcd grants them: in whole seconds, rounded up, and at least the
/// minimum (2 s with etcd's default settings, which every other backend follows); the
/// caller sees the granted TTL in the answer, in the lease's status and in `BackendInfo`.
pub async fn lease_ttls_are_whole_seconds_of_at_least_the_minimum(backend: &dyn TestBackend) {
    let c = backend.client().await;
    let tiny = c.lease_grant(Duration::from_millis(1)).await.unwrap();
    let info = c.info();
    assert_eq!(info.lease_granularity, Duration::from_secs(1), "{info:?}");
    assert_eq!(
        tiny.ttl, info.min_lease_ttl,
        "a 1 ms request gets the minimum"
    );
    if info.name != "etcd" {
        // etcd's own minimum follows its election timeout; the others follow etcd's default.
        assert_eq!(info.min_lease_ttl, Duration::from_secs(2), "{info:?}");
    }
    let odd = c.lease_grant(Duration::from_millis(2500)).await.unwrap();
    let expected = Duration::from_secs(3).max(info.min_lease_ttl);
    assert_eq!(odd.ttl, expected, "2.5 s is rounded up to whole seconds");
    let status = c.lease_time_to_live(odd.id).await.unwrap();
    assert_eq!(status.granted_ttl, expected);
    for id in [tiny.id, odd.id] {
        c.lease_revoke(id).await.unwrap();
    }
}

/// A lock on `NAME` is not held by the holders of deeper names (`NAME/b` has keys
/// `NAME/b/<lease hex>` under the prefix `NAME/`), even when their keys crowd the reads,
/// while a holder of `NAME` itself still excludes behind them.
pub async fn a_lock_ignores_holders_of_deeper_names(backend: &dyn TestBackend) {
    let name = unique("deeper");
    let c = backend.client().await;
    let (a, b, d) = (
        new_session(backend).await,
        new_session(backend).await,
        new_session(backend).await,
    );
    let deeper = Mutex::new(&d, format!("{name}/b")).lock().await.unwrap();
    for attempt in ["free with a deeper holder", "again"] {
        let guard = Mutex::new(&a, name.as_str())
            .lock_timeout(Duration::ZERO)
            .await
            .unwrap_or_else(|e| panic!("{attempt}: {e}"));
        guard.unlock().await.unwrap();
    }
    Mutex::new(&a, name.as_str())
        .try_lock()
        .await
        .expect("try_lock with a deeper holder")
        .unlock()
        .await
        .unwrap();
    let sem = Semaphore::new(&a, name.as_str(), 1).unwrap();
    sem.acquire_timeout(Duration::ZERO)
        .await
        .expect("a permit with a deeper holder")
        .release()
        .await
        .unwrap();
    RwMutex::new(&a, name.as_str())
        .lock_timeout(RwMode::Write, Duration::ZERO)
        .await
        .expect("a write lock with a deeper holder")
        .unlock()
        .await
        .unwrap();

    // A holder of the name itself, then deeper keys that fill the limited reads: the
    // waiter must still find the holder behind them.
    let held = Mutex::new(&a, name.as_str()).lock().await.unwrap();
    let crowd: Vec<String> = (0..6).map(|i| format!("{name}/c{i}/1")).collect();
    for key in &crowd {
        c.put(key.as_bytes(), b"", 0).await.unwrap();
    }
    let mb = Mutex::new(&b, name.as_str());
    assert_timeout(
        mb.lock_timeout(Duration::ZERO).await,
        "held, behind a crowd",
    );
    assert!(
        matches!(mb.try_lock().await, Err(Error::Locked { .. })),
        "try_lock held, behind a crowd"
    );
    let waiter = tokio::spawn(async move { mb.lock().await });
    super::assert_blocks(backend, &waiter, "a waiter behind the holder and the crowd").await;
    held.unlock().await.unwrap();
    let got = super::join_prompt(backend, waiter, "the waiter after the unlock")
        .await
        .expect("acquired after the holder left");
    got.unlock().await.unwrap();
    for key in &crowd {
        c.delete(coord_core::KeyRange::key(key.as_str()))
            .await
            .unwrap();
    }
    deeper.unlock().await.unwrap();
}

/// The leader of `NAME` is never a candidate of a deeper name (`NAME/x`).
pub async fn leader_of_a_name_ignores_candidates_of_deeper_names(backend: &dyn TestBackend) {
    let name = unique("deeper-elect");
    let c = backend.client().await;
    let (a, b) = (new_session(backend).await, new_session(backend).await);
    let deeper = Election::new(&a, format!("{name}/x"))
        .campaign("deeper")
        .await
        .unwrap();
    match coord_core::leader(c.as_ref(), &name).await {
        Err(Error::NoLeader { .. }) => {}
        other => panic!("only a deeper name has a leader: {other:?}"),
    }
    let leader = Election::new(&b, name.as_str())
        .campaign_timeout("mine", Duration::ZERO)
        .await
        .expect("a candidate of a deeper name is not ahead");
    let seen = coord_core::leader(c.as_ref(), &name).await.unwrap();
    assert_eq!(seen.value, b"mine");
    leader.resign().await.unwrap();
    deeper.resign().await.unwrap();
}

/// A mutex and a read/write lock on one name exclude each other: a mutex waits for readers
/// and writers; a writer waits for a mutex; a reader (which waits only for writers) refuses
/// a name a mutex holds, naming the key, and leaves no key.
pub async fn a_mutex_and_a_read_write_lock_on_one_name_exclude_each_other(
    backend: &dyn TestBackend,
) {
    let name = unique("mix");
    let (a, b) = (new_session(backend).await, new_session(backend).await);
    let held = Mutex::new(&a, name.as_str()).lock().await.unwrap();
    let rw = RwMutex::new(&b, name.as_str());
    for outcome in [
        rw.try_read().await,
        rw.lock_timeout(RwMode::Read, Duration::ZERO).await,
    ] {
        match outcome {
            Err(Error::InvalidArgument { message, .. }) => {
                assert!(message.contains(held.key()), "{message}");
            }
            other => panic!("a read lock on a mutex's name: {other:?}"),
        }
    }
    assert_timeout(
        rw.lock_timeout(RwMode::Write, Duration::ZERO).await,
        "a writer waits for a mutex",
    );
    assert_keys(
        backend,
        &name,
        &[held.key()],
        "the refused locks left no key",
    )
    .await;
    held.unlock().await.unwrap();

    let reader = rw.read().await.unwrap();
    assert_timeout(
        Mutex::new(&a, name.as_str())
            .lock_timeout(Duration::ZERO)
            .await,
        "a mutex waits for a reader",
    );
    assert_keys(
        backend,
        &name,
        &[reader.key()],
        "the timed-out mutex left no key",
    )
    .await;
    reader.unlock().await.unwrap();
}

/// Keys in the layouts of etcd's Go recipes and `etcdctl lock` (written raw here, as another
/// program would) exclude coord's locks on the same name: `NAME/<lease hex>` (the mutex,
/// election and server-side lock API) and `NAME/write/<unix nanos>` (Go's RWMutex writer).
pub async fn keys_in_etcds_layouts_exclude_coord_locks(backend: &dyn TestBackend) {
    let c = backend.client().await;
    let a = new_session(backend).await;
    for layout in ["694d82254d5fa305", "write/1700000000000000000"] {
        let name = unique("go-layout");
        let key = format!("{name}/{layout}");
        c.put(key.as_bytes(), b"", 0).await.unwrap();
        assert_timeout(
            Mutex::new(&a, name.as_str())
                .lock_timeout(Duration::ZERO)
                .await,
            &format!("a mutex behind {key}"),
        );
        assert_timeout(
            RwMutex::new(&a, name.as_str())
                .lock_timeout(RwMode::Write, Duration::ZERO)
                .await,
            &format!("a writer behind {key}"),
        );
        assert_keys(
            backend,
            &name,
            &[key.as_str()],
            "timed-out locks left no key",
        )
        .await;
        c.delete(coord_core::KeyRange::key(key.as_str()))
            .await
            .unwrap();
        Mutex::new(&a, name.as_str())
            .lock_timeout(Duration::ZERO)
            .await
            .expect("free once the foreign key is gone")
            .unlock()
            .await
            .unwrap();
    }
}

/// `Locked` names the holder's key as text (never `Some("…")`), and a semaphore refuses a
/// permit count of 0 or past what a range limit holds, naming the count and the bounds.
pub async fn locked_names_the_holder_key_and_bad_permit_counts_are_refused(
    backend: &dyn TestBackend,
) {
    let name = unique("small-edges");
    let (a, b) = (new_session(backend).await, new_session(backend).await);
    let held = Mutex::new(&a, name.as_str()).lock().await.unwrap();
    let err = Mutex::new(&b, name.as_str()).try_lock().await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&format!("{:?}", held.key())), "{text}");
    assert!(!text.contains("Some("), "{text}");
    held.unlock().await.unwrap();
    for permits in [0, usize::MAX] {
        match Semaphore::new(&a, name.as_str(), permits) {
            Err(Error::InvalidArgument { message, .. }) => {
                assert!(message.contains(&permits.to_string()), "{message}");
                assert!(
                    message.contains(&Semaphore::MAX_PERMITS.to_string()),
                    "{message}"
                );
            }
            other => panic!("{permits} permits: {other:?}"),
        }
    }
    let most = Semaphore::new(&a, name.as_str(), Semaphore::MAX_PERMITS).unwrap();
    most.acquire_timeout(Duration::ZERO)
        .await
        .expect("the largest count works")
        .release()
        .await
        .unwrap();
}
