//! `Mutex` scenarios: those of etcd's own mutex tests (each names its model), fencing,
//! cancellation and the lost-before-anyone-else-acquires rule.
//!
//! etcd's tests of its server-side `v3lock` gRPC API and of `etcdctl lock` test etcd's own
//! server and command-line tool; they are coord-etcd's interop tests, not part of a
//! backend-agnostic suite.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use coord_core::{
    BackendExt, Compare, CompareOp, Error, Mutex, NO_LEASE, Revision, TxnOp, TxnRequest, lock_key,
};
use futures::future::join_all;

use super::{
    Capability, Partition, TestBackend, assert_blocks, delete_key, join_prompt, keys_under,
    new_session, no_key_of, prompt, quiet, session_with_ttl, settle, skip_unless, unique,
};

/// From etcd's own tests (ExampleMutex_Lock): A locks; B's lock blocks; A unlocks; B acquires,
/// with a higher fencing token.
pub async fn mutex_handoff_waits_for_unlock(backend: &dyn TestBackend) {
    let name = unique("handoff");
    let (a, b) = (new_session(backend).await, new_session(backend).await);
    let ga = Mutex::new(&a, name.as_str()).lock().await.unwrap();
    let mb = Mutex::new(&b, name.as_str());
    let wait = tokio::spawn(async move { mb.lock().await });
    assert_blocks(backend, &wait, "B while A holds").await;
    let token_a = ga.fencing_token();
    ga.unlock().await.unwrap();
    let gb = join_prompt(backend, wait, "B acquires after A unlocks")
        .await
        .unwrap();
    assert!(gb.fencing_token() > token_a);
    assert_eq!(gb.key(), lock_key(&name, b.lease()));
    gb.unlock().await.unwrap();
}

/// From etcd's own tests (ExampleMutex_TryLock): while A holds, B's try_lock gives `Locked`
/// naming A's key and leaves no key of B behind; after A unlocks, B's try_lock succeeds.
pub async fn try_lock_leaves_no_key_and_succeeds_after_unlock(backend: &dyn TestBackend) {
    let name = unique("trylock");
    let (a, b) = (new_session(backend).await, new_session(backend).await);
    let c = backend.client().await;
    let ga = Mutex::new(&a, name.as_str()).lock().await.unwrap();
    let mb = Mutex::new(&b, name.as_str());
    match mb.try_lock().await {
        Err(Error::Locked { holder, .. }) => assert_eq!(holder.as_deref(), Some(ga.key())),
        other => panic!("expected Locked, got {other:?}"),
    }
    no_key_of(
        backend,
        c.as_ref(),
        &name,
        b.lease(),
        "failed try_lock leaves no key",
    )
    .await;
    ga.unlock().await.unwrap();
    let gb = mb.try_lock().await.expect("try_lock after unlock");
    assert_eq!(keys_under(c.as_ref(), &name).await.len(), 1);
    gb.unlock().await.unwrap();
    assert!(keys_under(c.as_ref(), &name).await.is_empty());
}

/// From etcd's own tests (testMutexLock): five sessions on five clients lock concurrently; at no
/// moment do two hold; unlocking in turn lets all five acquire.
pub async fn five_sessions_lock_exclusively(backend: &dyn TestBackend) {
    let name = unique("five");
    let holders = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let s = new_session(backend).await;
        let name = name.clone();
        let holders = holders.clone();
        tasks.push(tokio::spawn(async move {
            let g = Mutex::new(&s, name).lock().await.unwrap();
            assert_eq!(
                holders.fetch_add(1, Ordering::SeqCst),
                0,
                "two holders at once"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
            holders.fetch_sub(1, Ordering::SeqCst);
            let token = g.fencing_token();
            g.unlock().await.unwrap();
            token
        }));
    }
    let tokens = tokio::time::timeout(prompt(backend) * 5, join_all(tasks))
        .await
        .expect("all five acquire in turn");
    let mut tokens: Vec<Revision> = tokens.into_iter().map(|t| t.unwrap()).collect();
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), 5, "five distinct fencing tokens");
}

/// From etcd's own tests (testMutexTryLock): of five concurrent try_locks exactly one succeeds and
/// four get `Locked`.
pub async fn concurrent_try_locks_exactly_one_wins(backend: &dyn TestBackend) {
    let name = unique("try5");
    let mut sessions = Vec::new();
    for _ in 0..5 {
        sessions.push(new_session(backend).await);
    }
    let results = join_all(
        sessions
            .iter()
            .map(|s| async { Mutex::new(s, name.as_str()).try_lock().await }),
    )
    .await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    let locked = results
        .iter()
        .filter(|r| matches!(r, Err(Error::Locked { .. })))
        .count();
    assert_eq!((won, locked), (1, 4), "{results:?}");
    let c = backend.client().await;
    super::eventually(settle(backend), "losers leave no keys", || async {
        keys_under(c.as_ref(), &name).await.len() == 1
    })
    .await;
}

/// Two `Mutex` values on one session and name: the second `lock()` waits until the first
/// guard is released, as it would for another session (etcd's Go `Mutex` returns at once
/// there), and then holds a new incarnation of the key with a higher fencing token.
pub async fn same_session_relock_waits_for_the_first_guard(backend: &dyn TestBackend) {
    let name = unique("relock");
    let s = new_session(backend).await;
    let c = backend.client().await;
    let g1 = Mutex::new(&s, name.as_str()).lock().await.unwrap();
    let second = tokio::spawn({
        let m = Mutex::new(&s, name.as_str());
        async move { m.lock().await }
    });
    assert_blocks(backend, &second, "relock on the same session").await;
    assert_eq!(
        keys_under(c.as_ref(), &name).await.len(),
        1,
        "one key per session and name"
    );
    let first_token = g1.fencing_token();
    g1.unlock().await.unwrap();
    let g2 = join_prompt(backend, second, "relock after the first guard let go")
        .await
        .unwrap();
    assert!(g2.fencing_token() > first_token, "a new incarnation");
    assert!(
        c.txn(TxnRequest::new().when([g2.is_owner()]))
            .await
            .unwrap()
            .succeeded
    );
    g2.unlock().await.unwrap();
    assert!(
        keys_under(c.as_ref(), &name).await.is_empty(),
        "the last guard deletes the key"
    );
}

/// From etcd's own tests (TestMutexWaitsOnCurrentHolder): owner holds; a victim waits; a new
/// waiter waits behind the victim. The victim's session is closed (its key deleted): the
/// new waiter must still not acquire while the owner holds, and acquires promptly once the
/// owner unlocks; the victim's lock returns (an error) promptly.
pub async fn waiter_waits_for_the_holder_not_only_its_predecessor(backend: &dyn TestBackend) {
    let name = unique("current-holder");
    let (owner, victim, waiter) = (
        new_session(backend).await,
        new_session(backend).await,
        new_session(backend).await,
    );
    let g = Mutex::new(&owner, name.as_str()).lock().await.unwrap();
    let mv = Mutex::new(&victim, name.as_str());
    let victim_wait = tokio::spawn(async move { mv.lock().await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mw = Mutex::new(&waiter, name.as_str());
    let waiter_wait = tokio::spawn(async move { mw.lock().await });
    assert_blocks(backend, &waiter_wait, "waiter behind owner and victim").await;
    victim.close().await.unwrap();
    let r = join_prompt(backend, victim_wait, "victim's lock returns").await;
    assert!(matches!(r, Err(Error::SessionExpired { .. })), "{r:?}");
    assert_blocks(backend, &waiter_wait, "waiter still behind the owner").await;
    g.unlock().await.unwrap();
    let gw = join_prompt(backend, waiter_wait, "waiter acquires after owner unlocks")
        .await
        .unwrap();
    gw.unlock().await.unwrap();
}

/// From etcd's own tests (TestMutexLockSessionExpired, and issue #19597): A holds; B waits; B's
/// session is closed. B's lock returns `SessionExpired`, not success, and does so at once,
/// while A still holds (Go returns only after A unlocks).
pub async fn waiter_whose_session_ends_gets_session_expired(backend: &dyn TestBackend) {
    let name = unique("waiter-expiry");
    let (a, b) = (new_session(backend).await, new_session(backend).await);
    let ga = Mutex::new(&a, name.as_str()).lock().await.unwrap();
    let mb = Mutex::new(&b, name.as_str());
    let wait = tokio::spawn(async move { mb.lock().await });
    assert_blocks(backend, &wait, "B behind A").await;
    b.close().await.unwrap();
    let r = join_prompt(backend, wait, "B's lock returns while A still holds").await;
    assert!(matches!(r, Err(Error::SessionExpired { .. })), "{r:?}");
    ga.unlock().await.unwrap();
}

/// From etcd's own tests (TestMutexUnlock, and issue #22082): unlocking releases; Go's
/// "unlock before lock" and "second unlock" (`ErrLockReleased`) cannot be written with the
/// guard API (unlock consumes the guard). The stale-unlock rule is tested through the
/// guard's create-revision compare: after unlock and a relock by the same session (same
/// key, new incarnation) the old acquisition's `is_owner()` no longer holds, the new one's
/// does, and a write guarded by the old one is refused.
/// (The retried-unlock race itself is `bugs::late_unlock_never_deletes_a_newer_acquisition`.)
pub async fn unlock_releases_and_the_old_guard_is_not_owner(backend: &dyn TestBackend) {
    let name = unique("unlock");
    let s = new_session(backend).await;
    let c = backend.client().await;
    let m = Mutex::new(&s, name.as_str());
    let g1 = m.lock().await.unwrap();
    let old_owner = g1.is_owner();
    let old_token = g1.fencing_token();
    g1.unlock().await.unwrap();
    assert!(keys_under(c.as_ref(), &name).await.is_empty());
    let g2 = m.lock().await.unwrap();
    assert!(g2.fencing_token() > old_token);
    let fenced = format!("{name}-data");
    let write = |cmp: Compare| {
        TxnRequest::new()
            .when([cmp])
            .and_then([TxnOp::put(fenced.as_str(), "x")])
    };
    assert!(
        !c.txn(write(old_owner)).await.unwrap().succeeded,
        "stale guard is not owner"
    );
    assert!(c.txn(write(g2.is_owner())).await.unwrap().succeeded);
    g2.unlock().await.unwrap();
}

/// From etcd's own tests (TestElectionOnPrefixOfExistingKey, same rule for locks): a lock on
/// `<name>a` (and a plain key `<name>a`) does not block the lock `<name>`: the prefix is
/// `<name>/`.
pub async fn lock_name_is_a_prefix_with_a_slash(backend: &dyn TestBackend) {
    let name = unique("test");
    let (a, b) = (new_session(backend).await, new_session(backend).await);
    let c = backend.client().await;
    c.put(format!("{name}a").as_bytes(), b"v", NO_LEASE)
        .await
        .unwrap();
    let _ga = Mutex::new(&a, format!("{name}a")).lock().await.unwrap();
    let gb = tokio::time::timeout(prompt(backend), Mutex::new(&b, name.as_str()).lock())
        .await
        .expect("lock `<name>` is not blocked by `<name>a`")
        .unwrap();
    assert!(Mutex::new(&a, name.as_str()).try_lock().await.is_err());
    gb.unlock().await.unwrap();
    assert!(Mutex::new(&a, name.as_str()).try_lock().await.is_ok());
}

/// Interop: the lock key is etcd's `<name>/<lease hex>`, empty, attached to the lease, so
/// `etcdctl lock` and Go's `concurrency.Mutex` see and respect it.
pub async fn mutex_key_layout_is_etcds(backend: &dyn TestBackend) {
    let name = unique("layout");
    let s = new_session(backend).await;
    let c = backend.client().await;
    let g = Mutex::new(&s, name.as_str()).lock().await.unwrap();
    assert_eq!(g.key(), format!("{name}/{:x}", s.lease()));
    let kv = c.get(g.key().as_bytes()).await.unwrap().unwrap();
    assert_eq!((kv.value.len(), kv.lease), (0, s.lease()));
    assert_eq!(kv.create_revision, g.fencing_token());
    // A foreign holder (a Go client writing the same layout) excludes us.
    g.unlock().await.unwrap();
    let foreign = c.lease_grant(Duration::from_secs(600)).await.unwrap().id;
    c.put(lock_key(&name, foreign).as_bytes(), b"", foreign)
        .await
        .unwrap();
    assert!(matches!(
        Mutex::new(&s, name.as_str()).try_lock().await,
        Err(Error::Locked { .. })
    ));
    c.lease_revoke(foreign).await.unwrap();
}

/// Fencing: over 1,000 handoffs among 16 sessions every holder's
/// token is strictly above the previous holder's, and a counter written with the holder's
/// `is_owner()` compare in a txn loses no update.
pub async fn fencing_tokens_rise_over_1000_handoffs_among_16_sessions(backend: &dyn TestBackend) {
    const SESSIONS: usize = 16;
    const HANDOFFS: usize = 1_000;
    let name = unique("fencing");
    let counter = format!("{name}-counter");
    let c = backend.client().await;
    c.put(counter.as_bytes(), b"0", NO_LEASE).await.unwrap();
    let last = Arc::new(std::sync::Mutex::new(0 as Revision));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..SESSIONS {
        let client = backend.client().await;
        let s = session_with_ttl(&client, backend.short_ttl() * 10).await;
        let (name, counter, last, done) =
            (name.clone(), counter.clone(), last.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let m = Mutex::new(&s, name);
            let mut mine = 0;
            while done.fetch_add(1, Ordering::SeqCst) < HANDOFFS {
                let g = m.lock().await.unwrap();
                {
                    let mut last = last.lock().unwrap();
                    assert!(
                        g.fencing_token() > *last,
                        "token {} after {}",
                        g.fencing_token(),
                        *last
                    );
                    *last = g.fencing_token();
                }
                // Hold across a timer tick so that the others queue up behind us (without
                // it, an in-process backend runs each task's lock/write/unlock in one go).
                tokio::time::sleep(Duration::from_millis(1)).await;
                let kv = client.get(counter.as_bytes()).await.unwrap().unwrap();
                let n: u64 = kv.value_str().parse().unwrap();
                tokio::task::yield_now().await;
                let resp = client
                    .txn(
                        TxnRequest::new()
                            .when([
                                g.is_owner(),
                                Compare::mod_revision(
                                    counter.as_str(),
                                    CompareOp::Equal,
                                    kv.mod_revision,
                                ),
                            ])
                            .and_then([TxnOp::put(counter.as_str(), (n + 1).to_string())]),
                    )
                    .await
                    .unwrap();
                assert!(
                    resp.succeeded,
                    "holder's guarded write refused: lost update"
                );
                mine += 1;
                g.unlock().await.unwrap();
            }
            mine
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, HANDOFFS);
    let kv = c.get(counter.as_bytes()).await.unwrap().unwrap();
    assert_eq!(kv.value_str(), HANDOFFS.to_string(), "no lost update");
}

/// Two sessions taking turns: each releases and at once queues again behind the other, so
/// every wait after the first may reuse the watch of its session's previous wait, whose
/// stream still holds that session's own release and claim. Those must never read as the
/// waiting key being deleted: 100 acquisitions, never two holders, tokens rising.
pub async fn two_sessions_taking_turns_never_mistake_their_own_release_for_a_loss(
    backend: &dyn TestBackend,
) {
    const ROUNDS: usize = 50;
    let name = unique("turns");
    let holding = Arc::new(AtomicUsize::new(0));
    let last = Arc::new(std::sync::Mutex::new(0 as Revision));
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let s = new_session(backend).await;
        let (name, holding, last) = (name.clone(), holding.clone(), last.clone());
        tasks.push(tokio::spawn(async move {
            let m = Mutex::new(&s, name);
            for _ in 0..ROUNDS {
                let g = m.lock().await.unwrap();
                assert_eq!(holding.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                {
                    let mut last = last.lock().unwrap();
                    assert!(g.fencing_token() > *last, "token did not rise");
                    *last = g.fencing_token();
                }
                // Long enough for the other session to queue behind this hold.
                tokio::time::sleep(Duration::from_millis(2)).await;
                holding.fetch_sub(1, Ordering::SeqCst);
                g.unlock().await.unwrap();
            }
            s.close().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// A queue longer than a few keys (waiters then watch their predecessor's key and their own
/// apart, and confirm their turn with a read): a waiter deep in the queue whose key someone
/// deletes ends its wait promptly with `LockLost` while the holder still holds; the others
/// are then served one at a time, in the order they queued, each with a higher token.
pub async fn a_long_queue_is_served_in_order_and_a_deleted_waiters_key_ends_its_wait(
    backend: &dyn TestBackend,
) {
    const WAITERS: usize = 12;
    const VICTIM: usize = 7;
    let name = unique("long-queue");
    let c = backend.client().await;
    let owner = new_session(backend).await;
    let mut held = Mutex::new(&owner, name.as_str()).lock().await.unwrap();
    let mut sessions = Vec::new();
    let mut waits = Vec::new();
    for i in 0..WAITERS {
        let s = new_session(backend).await;
        let m = Mutex::new(&s, name.as_str());
        let wait = tokio::spawn(async move { m.lock().await });
        // Each queues before the next asks: the queue order is the order of `i`.
        assert_blocks(backend, &wait, &format!("waiter {i} behind the holder")).await;
        sessions.push(s);
        waits.push(Some(wait));
    }
    let t0 = tokio::time::Instant::now();
    delete_key(c.as_ref(), &lock_key(&name, sessions[VICTIM].lease())).await;
    let victim = waits[VICTIM].take().unwrap();
    let r = join_prompt(backend, victim, "the deleted waiter's wait ends").await;
    assert!(matches!(r, Err(Error::LockLost { .. })), "{r:?}");
    assert!(t0.elapsed() <= prompt(backend));
    let mut token = held.fencing_token();
    let queue: Vec<(usize, _)> = waits
        .into_iter()
        .enumerate()
        .filter_map(|(i, w)| w.map(|w| (i, w)))
        .collect();
    let mut queue = queue.into_iter().peekable();
    while let Some((i, wait)) = queue.next() {
        held.unlock().await.unwrap();
        let g = join_prompt(backend, wait, &format!("waiter {i} acquires next"))
            .await
            .unwrap();
        assert!(g.fencing_token() > token, "waiter {i}: token did not rise");
        token = g.fencing_token();
        if let Some((j, next)) = queue.peek() {
            assert_blocks(backend, next, &format!("waiter {j} while waiter {i} holds")).await;
        }
        held = g;
    }
    held.unlock().await.unwrap();
    assert!(
        keys_under(c.as_ref(), &name).await.is_empty(),
        "no key left"
    );
}

/// Cancel safety: dropping a `lock()` future mid-wait withdraws its key in the background:
/// no key is left behind, and the holder's unlock goes to the next live waiter.
pub async fn mutex_dropped_lock_future_leaves_no_key(backend: &dyn TestBackend) {
    let name = unique("drop-lock");
    let (a, b, d) = (
        new_session(backend).await,
        new_session(backend).await,
        new_session(backend).await,
    );
    let c = backend.client().await;
    let ga = Mutex::new(&a, name.as_str()).lock().await.unwrap();
    let r = tokio::time::timeout(quiet(backend), Mutex::new(&b, name.as_str()).lock()).await;
    assert!(r.is_err(), "B waits while A holds");
    no_key_of(
        backend,
        c.as_ref(),
        &name,
        b.lease(),
        "dropped lock() leaves no key",
    )
    .await;
    // The same through task abort.
    let mb = Mutex::new(&b, name.as_str());
    let task = tokio::spawn(async move { mb.lock().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    task.abort();
    no_key_of(
        backend,
        c.as_ref(),
        &name,
        b.lease(),
        "aborted lock() leaves no key",
    )
    .await;
    let md = Mutex::new(&d, name.as_str());
    let wait = tokio::spawn(async move { md.lock().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    ga.unlock().await.unwrap();
    join_prompt(backend, wait, "the next live waiter acquires")
        .await
        .unwrap()
        .unlock()
        .await
        .unwrap();
}

/// Cancel safety of `lock()` at every point, including while its claim txn is in flight
/// (applied by the store, response not yet back): dropping the future at any moment must
/// leave no key. With latency L (half before the store applies a call, half after), the
/// waiter's `lock()` is dropped at L/8, 2L/8, ... 24L/8; after each drop no key of the
/// waiter's lease may remain. A key created by an applied-but-unanswered claim is otherwise
/// left on the session's lease, blocking every other session until the session ends.
pub async fn mutex_dropped_lock_future_during_round_trip_leaves_no_key(backend: &dyn TestBackend) {
    if skip_unless(
        backend,
        "mutex_dropped_lock_future_during_round_trip_leaves_no_key",
        &[Capability::Latency],
    ) {
        return;
    }
    let faults = backend.faults().unwrap();
    let latency = Duration::from_millis(80);
    let name = unique("drop-rtt");
    let holder = new_session(backend).await;
    let c = backend.client().await;
    let ga = Mutex::new(&holder, name.as_str()).lock().await.unwrap();
    let (wc, wf) = faults.faulty_client().await;
    let ws = session_with_ttl(&wc, backend.short_ttl() * 10).await;
    let mut leaked = Vec::new();
    for eighth in 1..=24u32 {
        wf.set_latency(latency);
        let at = latency * eighth / 8;
        let r = tokio::time::timeout(at, Mutex::new(&ws, name.as_str()).lock()).await;
        assert!(r.is_err(), "cannot acquire while the holder holds");
        wf.set_latency(Duration::ZERO);
        // A claim in flight at the drop lands within the latency; only after that does an
        // absent key mean "withdrawn" rather than "not created yet".
        tokio::time::sleep(latency).await;
        let withdrawn = tokio::time::timeout(settle(backend), async {
            while keys_under(c.as_ref(), &name)
                .await
                .iter()
                .any(|kv| kv.lease == ws.lease())
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .is_ok();
        if !withdrawn {
            leaked.push(at);
            // Clean up so the next point starts from a clean state.
            delete_key(c.as_ref(), &lock_key(&name, ws.lease())).await;
        }
    }
    ga.unlock().await.unwrap();
    assert!(
        leaked.is_empty(),
        "lock() dropped after {leaked:?} (latency {latency:?}) left its key behind"
    );
}

/// Cancel safety of `unlock()`: its docs promise "a dropped call releases in the
/// background". The unlock future is dropped at L/4 (before the store applied the delete)
/// and at 3L/4 (applied, response not back); either way the key must be gone soon and
/// another session must be able to lock.
pub async fn mutex_dropped_unlock_future_still_releases(backend: &dyn TestBackend) {
    if skip_unless(
        backend,
        "mutex_dropped_unlock_future_still_releases",
        &[Capability::Latency],
    ) {
        return;
    }
    let faults = backend.faults().unwrap();
    let latency = Duration::from_millis(80);
    let name = unique("drop-unlock");
    let other = new_session(backend).await;
    let (hc, hf) = faults.faulty_client().await;
    let hs = session_with_ttl(&hc, backend.short_ttl() * 10).await;
    let c = backend.client().await;
    for quarter in [3u32, 1] {
        let g = Mutex::new(&hs, name.as_str()).lock().await.unwrap();
        hf.set_latency(latency);
        let at = latency * quarter / 4;
        let r = tokio::time::timeout(at, g.unlock()).await;
        assert!(r.is_err(), "the unlock was dropped in flight");
        hf.set_latency(Duration::ZERO);
        no_key_of(
            backend,
            c.as_ref(),
            &name,
            hs.lease(),
            &format!("unlock dropped after {at:?} of {latency:?} still releases"),
        )
        .await;
        let go = tokio::time::timeout(prompt(backend), Mutex::new(&other, name.as_str()).lock())
            .await
            .expect("another session locks after the dropped unlock")
            .unwrap();
        go.unlock().await.unwrap();
    }
}

/// The lost-lock signal: when the holder's keep-alives stop reaching the store
/// (its client is partitioned), its guard's `lost()` fires strictly before the next waiter
/// acquires. etcd's `Session.Done()` fires only after the server expired the lease, i.e.
/// after the next waiter could already have acquired.
pub async fn mutex_lost_fires_before_next_holder_acquires(backend: &dyn TestBackend) {
    for mode in [Partition::Fail, Partition::Hang] {
        let cap = match mode {
            Partition::Fail => Capability::PartitionFail,
            Partition::Hang => Capability::PartitionHang,
        };
        if skip_unless(
            backend,
            "mutex_lost_fires_before_next_holder_acquires",
            &[cap],
        ) {
            continue;
        }
        let faults = backend.faults().unwrap();
        let name = unique("lost-first");
        let (hc, hf) = faults.faulty_client().await;
        let holder = session_with_ttl(&hc, backend.short_ttl()).await;
        let g = Mutex::new(&holder, name.as_str()).lock().await.unwrap();
        let lost = g.lost();
        let lost_at = tokio::spawn(async move {
            lost.await;
            tokio::time::Instant::now()
        });
        let waiter = new_session(backend).await;
        let mw = Mutex::new(&waiter, name.as_str());
        let acquired_at = tokio::spawn(async move {
            let g = mw.lock().await;
            (tokio::time::Instant::now(), g)
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        hf.partition(mode);
        let limit = holder.ttl() * 3;
        let lost_at = tokio::time::timeout(limit, lost_at)
            .await
            .expect("holder told of the loss")
            .unwrap();
        let (acquired_at, gw) = tokio::time::timeout(limit, acquired_at)
            .await
            .expect("waiter acquires after the holder's lease ran out")
            .unwrap();
        let gw = gw.unwrap();
        assert!(
            lost_at < acquired_at,
            "{mode:?}: lost() fired {:?} after the next holder acquired",
            lost_at.saturating_duration_since(acquired_at)
        );
        hf.heal();
        gw.unlock().await.unwrap();
        drop(g);
        drop(holder);
    }
}
