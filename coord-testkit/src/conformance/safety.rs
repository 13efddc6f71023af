//! Safety under uncertainty: writes whose answer was lost (and that land later, after writes
//! sent after them), sessions lost in the middle of an acquisition, tasks that share one
//! session, holds released on purpose, and watches that break while waiting.
//!
//! A write whose answer was lost may still be applied later, after writes sent after it: an
//! etcd client that sent it to a follower whose link to the leader is slow sees exactly
//! that. The recipes must stay safe whatever order such writes land in.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use coord_core::{
    BackendExt, BackendInfo, CoordinationBackend, Election, Error, LeaseGrant, LeaseId,
    LeaseStatus, Mutex, RangeRequest, RangeResponse, Result, Revision, RwMode, RwMutex, Semaphore,
    Session, TxnOp, TxnRequest, TxnResponse, WatchRequest, WatchStream, lock_key,
};
use futures::FutureExt;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    Capability, LateApply, Partition, Spy, TestBackend, WatchBreak, assert_blocks, eventually,
    join_prompt, keys_under, new_session, prompt, quiet, session_with_ttl, settle, skip_unless,
    unique,
};

/// The backend's fault injection if it has every capability in `needs`; otherwise prints
/// the skip line for `test` and gives `None`.
fn faults_for<'a>(
    backend: &'a dyn TestBackend,
    test: &str,
    needs: &[Capability],
) -> Option<&'a dyn super::Faults> {
    if skip_unless(backend, test, needs) {
        return None;
    }
    backend.faults()
}

/// Whether any key under `prefix` is attached to `lease`.
async fn has_key_of(client: &dyn CoordinationBackend, prefix: &str, lease: LeaseId) -> bool {
    keys_under(client, prefix)
        .await
        .iter()
        .any(|kv| kv.lease == lease)
}

/// A claim whose answer is lost fails; its key is withdrawn in the background, and the first
/// attempt of that withdrawal is lost too and lands only after the session has locked the
/// name again. The late writes must not touch the new acquisition: deletes name the
/// incarnation they mean (its create revision), never the lease alone.
pub async fn stale_withdrawal_never_deletes_a_later_acquisition(backend: &dyn TestBackend) {
    let Some(faults) = faults_for(
        backend,
        "stale_withdrawal_never_deletes_a_later_acquisition",
        &[Capability::LateApply],
    ) else {
        return;
    };
    let name = unique("stale-withdrawal");
    let (client, controls) = faults.faulty_client().await;
    let session = session_with_ttl(&client, backend.short_ttl()).await;
    let mutex = Mutex::new(&session, name.as_str());

    // The claim and the first attempt to withdraw it: answers lost, both land later.
    controls.delay_next(2, LateApply::Fail);
    let first = mutex.lock().await;
    assert!(
        matches!(first, Err(ref e) if e.is_retryable()),
        "a claim whose answer was lost reports a retryable error, got {first:?}"
    );
    // Give the background withdrawal time to run (its first attempt is held back, a retry
    // gets through) before locking again; whatever the order, nothing below may break.
    tokio::time::sleep(prompt(backend)).await;
    // Lock again as an application would: retrying what may succeed if tried again.
    let guard = tokio::time::timeout(settle(backend), async {
        loop {
            match mutex.lock().await {
                Err(e) if e.is_retryable() => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the session locks again once the withdrawal is settled")
    .expect("lock again");
    let applied = controls.apply_late().await;
    assert!(applied >= 1, "the lost claim was held back to land late");

    let observer = backend.client().await;
    let current = observer.get(guard.key().as_bytes()).await.unwrap();
    assert_eq!(
        current.map(|kv| kv.create_revision),
        Some(guard.fencing_token()),
        "late writes of an earlier attempt deleted or replaced the held key"
    );
    let lost = guard.lost();
    assert!(
        tokio::time::timeout(quiet(backend), lost).await.is_err(),
        "lost() fired for a hold nobody took away"
    );
    let other = new_session(backend).await;
    let taken = Mutex::new(&other, name.as_str()).try_lock().await;
    assert!(
        matches!(taken, Err(Error::Locked { .. })),
        "another session got a lock that is held: {taken:?}"
    );
    guard.unlock().await.expect("unlock");
}

/// A lock or campaign given up while its claim was in flight: the claim lands after the
/// withdrawal. No key may stay on the live lease with no handle holding it, or every other
/// session waits until this one ends (and, for an election, `leader()` names a leader that
/// nobody is).
pub async fn cancelled_claim_landing_late_leaves_no_key_on_a_live_lease(backend: &dyn TestBackend) {
    let Some(faults) = faults_for(
        backend,
        "cancelled_claim_landing_late_leaves_no_key_on_a_live_lease",
        &[Capability::LateApply],
    ) else {
        return;
    };
    let observer = backend.client().await;
    for election in [false, true] {
        let name = unique("late-claim");
        let prefix = format!("{name}/");
        let (client, controls) = faults.faulty_client().await;
        let session = session_with_ttl(&client, backend.short_ttl()).await;
        controls.delay_next(1, LateApply::Hang);
        let limit = prompt(backend);
        // The caller gives up by dropping the future: a `*_timeout` limit bounds waiting
        // for others, not the claim request (whose bound is the connection's).
        let election_of = Election::new(&session, name.as_str());
        let mutex = Mutex::new(&session, name.as_str());
        let given_up = if election {
            tokio::time::timeout(limit, election_of.campaign("phantom"))
                .await
                .map(|r| r.map(drop))
        } else {
            tokio::time::timeout(limit, mutex.lock())
                .await
                .map(|r| r.map(drop))
        };
        assert!(
            given_up.is_err(),
            "the claim stayed unanswered until the caller gave up: {given_up:?}"
        );
        // Let the withdrawal of the unanswered claim run first, then the claim lands.
        tokio::time::sleep(prompt(backend)).await;
        assert_eq!(controls.apply_late().await, 1, "the claim was held back");

        // The bound: the late claim's creation is seen and withdrawn at once (one event and
        // two round trips; twice "prompt" for a loaded machine and a cluster).
        eventually(
            prompt(backend) * 2,
            "no key stays on the live lease without a handle",
            || has_key_of(observer.as_ref(), &prefix, session.lease()).map(|has| !has),
        )
        .await;
        assert!(!session.is_lost(), "the session stays usable");
        let other = new_session(backend).await;
        if election {
            let leader = Election::new(&other, name.as_str())
                .campaign_timeout("real", prompt(backend))
                .await
                .expect("another candidate is elected at once");
            let seen = coord_core::leader(observer.as_ref(), &name).await.unwrap();
            assert_eq!(seen.value, b"real", "leader() names the real leader");
            leader.resign().await.unwrap();
        } else {
            let guard = Mutex::new(&other, name.as_str())
                .lock_timeout(prompt(backend))
                .await
                .expect("another session locks at once");
            guard.unlock().await.unwrap();
        }
    }
}

/// Every acquisition started on a client that is cut off (its calls hang) ends with
/// `SessionExpired` at the session's client-side deadline: a claim, a read or a watch set-up
/// that never answers cannot keep a caller waiting past it. Five candidates of one election,
/// and a lock, a read lock, a write lock and a semaphore permit.
pub async fn acquisitions_cut_off_mid_setup_end_at_the_session_deadline(backend: &dyn TestBackend) {
    let Some(faults) = faults_for(
        backend,
        "acquisitions_cut_off_mid_setup_end_at_the_session_deadline",
        &[Capability::PartitionHang],
    ) else {
        return;
    };
    let name = unique("cut-off");
    // Holders elsewhere, so every acquisition below would have to wait.
    let holder = new_session(backend).await;
    let leader = Election::new(&holder, format!("{name}-e"))
        .campaign("leader")
        .await
        .unwrap();
    let lock = Mutex::new(&holder, format!("{name}-m"))
        .lock()
        .await
        .unwrap();
    let write = RwMutex::new(&holder, format!("{name}-rw"))
        .write()
        .await
        .unwrap();
    let permit = Semaphore::new(&holder, format!("{name}-s"), 1)
        .unwrap()
        .acquire()
        .await
        .unwrap();

    let (client, controls) = faults.faulty_client().await;
    let mut sessions = Vec::new();
    for _ in 0..9 {
        sessions.push(session_with_ttl(&client, backend.short_ttl()).await);
    }
    controls.partition(Partition::Hang);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, s) in sessions.iter().enumerate() {
        let s = s.clone();
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            let outcome = match i {
                0..5 => Election::new(&s, format!("{name}-e"))
                    .campaign(format!("candidate {i}"))
                    .await
                    .map(drop),
                5 => Mutex::new(&s, format!("{name}-m")).lock().await.map(drop),
                6 => RwMutex::new(&s, format!("{name}-rw"))
                    .read()
                    .await
                    .map(drop),
                7 => RwMutex::new(&s, format!("{name}-rw"))
                    .write()
                    .await
                    .map(drop),
                _ => Semaphore::new(&s, format!("{name}-s"), 1)
                    .unwrap()
                    .acquire()
                    .await
                    .map(drop),
            };
            (i, outcome)
        }));
    }
    let limit = backend.short_ttl() + prompt(backend);
    for task in tasks {
        let (i, outcome) = tokio::time::timeout(limit.saturating_sub(started.elapsed()), task)
            .await
            .expect("an acquisition on a cut-off client ends by the session deadline")
            .unwrap();
        assert!(
            matches!(outcome, Err(Error::SessionExpired { .. })),
            "acquisition {i} on a cut-off client: {outcome:?}"
        );
    }
    controls.heal();
    leader.resign().await.unwrap();
    lock.unlock().await.unwrap();
    write.unlock().await.unwrap();
    permit.release().await.unwrap();
}

/// A waiter's last read is answered only after its session was lost and another session
/// took the lock: `lock()` must not return `Ok` on the strength of that stale answer. (Two
/// keys are ahead of the waiter, so it reads once they are gone; with one key ahead it is
/// granted on that key's DELETE event instead, which
/// [`lock_never_grants_on_a_delete_seen_after_the_session_is_lost`] covers.)
pub async fn lock_never_returns_ok_once_the_session_is_lost(backend: &dyn TestBackend) {
    let Some(faults) = faults_for(
        backend,
        "lock_never_returns_ok_once_the_session_is_lost",
        &[Capability::PartitionHang, Capability::ExpireLease],
    ) else {
        return;
    };
    let name = unique("ok-after-lost");
    let prefix = format!("{name}/");
    let holder = new_session(backend).await;
    let held = Mutex::new(&holder, name.as_str()).lock().await.unwrap();
    let second = new_session(backend).await;
    let second_waits = tokio::spawn({
        let mutex = Mutex::new(&second, name.as_str());
        async move { mutex.lock().await }
    });
    let observer = backend.client().await;
    eventually(settle(backend), "the second session queues", || async {
        keys_under(observer.as_ref(), &prefix).await.len() == 2
    })
    .await;

    // The waiter's read-only txns can be held back after the store answered them.
    let armed = Arc::new(AtomicBool::new(false));
    let reached = Arc::new(Notify::new());
    let open = Arc::new(Notify::new());
    let (client, controls) = faults.faulty_client().await;
    let spy = Spy::new(client).with_txn_hook(Arc::new({
        let (armed, reached, open) = (armed.clone(), reached.clone(), open.clone());
        move |request: &TxnRequest, _: &Result<TxnResponse>| {
            let read_only = request.compares.is_empty()
                && request
                    .success
                    .iter()
                    .all(|op| matches!(op, TxnOp::Range(_)));
            if !(read_only && armed.swap(false, Ordering::SeqCst)) {
                return None;
            }
            reached.notify_one();
            let open = open.clone();
            Some(async move { open.notified().await }.boxed())
        }
    }));
    let spy: Arc<dyn CoordinationBackend> = Arc::new(spy);
    let waiter = session_with_ttl(&spy, backend.short_ttl()).await;
    let lease = waiter.lease();
    let waiting = tokio::spawn({
        let mutex = Mutex::new(&waiter, name.as_str());
        async move { mutex.lock().await }
    });
    eventually(settle(backend), "the waiter queues", || async {
        keys_under(observer.as_ref(), &prefix).await.len() == 3
    })
    .await;
    armed.store(true, Ordering::SeqCst);
    held.unlock().await.unwrap();
    tokio::time::timeout(settle(backend), second_waits)
        .await
        .expect("the second session takes the lock")
        .unwrap()
        .unwrap()
        .unlock()
        .await
        .unwrap();
    // Its read after the last key ahead went says "your turn"; the answer is held back.
    tokio::time::timeout(settle(backend), reached.notified())
        .await
        .expect("the waiter reads after the holder let go");
    controls.partition(Partition::Hang);
    tokio::time::timeout(backend.short_ttl() * 2, waiter.lost())
        .await
        .expect("the cut-off waiter's session is lost");
    faults.expire_lease_now(lease).await;
    let other = new_session(backend).await;
    let taken = Mutex::new(&other, name.as_str())
        .lock_timeout(settle(backend))
        .await
        .expect("another session takes the lock");
    open.notify_one();
    let outcome = tokio::time::timeout(settle(backend), waiting)
        .await
        .expect("the waiter ends")
        .unwrap();
    assert!(
        matches!(outcome, Err(Error::SessionExpired { .. })),
        "lock() after the session was lost and another took the lock: {outcome:?}"
    );
    controls.heal();
    taken.unlock().await.unwrap();
}

/// A waiter with one key ahead is granted on that key's DELETE event, without a read. Here
/// the event reaches the waiter only after its session was lost (its client is cut off,
/// then heals) and another session took the lock: `lock()` must not return `Ok` on the
/// strength of that late event.
pub async fn lock_never_grants_on_a_delete_seen_after_the_session_is_lost(
    backend: &dyn TestBackend,
) {
    let Some(faults) = faults_for(
        backend,
        "lock_never_grants_on_a_delete_seen_after_the_session_is_lost",
        &[Capability::PartitionHang, Capability::ExpireLease],
    ) else {
        return;
    };
    let name = unique("event-after-lost");
    let prefix = format!("{name}/");
    let holder = new_session(backend).await;
    let held = Mutex::new(&holder, name.as_str()).lock().await.unwrap();
    let (client, controls) = faults.faulty_client().await;
    let waiter = session_with_ttl(&client, backend.short_ttl()).await;
    let lease = waiter.lease();
    let waiting = tokio::spawn({
        let mutex = Mutex::new(&waiter, name.as_str());
        async move { mutex.lock().await }
    });
    let observer = backend.client().await;
    eventually(settle(backend), "the waiter queues", || async {
        keys_under(observer.as_ref(), &prefix).await.len() == 2
    })
    .await;
    // Let the waiter open its watch before it is cut off.
    tokio::time::sleep(prompt(backend)).await;
    assert!(!waiting.is_finished(), "the waiter waits for the holder");
    controls.partition(Partition::Hang);
    // The holder's delete is held back from the waiter's watch until the heal.
    held.unlock().await.unwrap();
    tokio::time::timeout(backend.short_ttl() * 2, waiter.lost())
        .await
        .expect("the cut-off waiter's session is lost");
    faults.expire_lease_now(lease).await;
    let other = new_session(backend).await;
    let taken = Mutex::new(&other, name.as_str())
        .lock_timeout(settle(backend))
        .await
        .expect("another session takes the lock");
    controls.heal();
    let outcome = tokio::time::timeout(settle(backend), waiting)
        .await
        .expect("the waiter ends")
        .unwrap();
    assert!(
        matches!(outcome, Err(Error::SessionExpired { .. })),
        "lock() after the session was lost and another took the lock: {outcome:?}"
    );
    taken.unlock().await.unwrap();
}

/// Two tasks that lock one name through one session exclude each other exactly as two
/// sessions would, and each hold has its own fencing token. The same for a second
/// campaign, a second write lock, a read lock asked for by a write holder, and a second
/// permit of a semaphore.
pub async fn tasks_sharing_a_session_exclude_each_other(backend: &dyn TestBackend) {
    let session = new_session(backend).await;
    let name = unique("shared-session");

    let mutex = Mutex::new(&session, name.as_str());
    let first = mutex.lock().await.unwrap();
    let second = tokio::spawn({
        let mutex = mutex.clone();
        async move { mutex.lock().await }
    });
    assert_blocks(backend, &second, "a second lock() on the same session").await;
    assert!(
        matches!(mutex.try_lock().await, Err(Error::Locked { .. })),
        "try_lock on the same session while held"
    );
    let first_token = first.fencing_token();
    first.unlock().await.unwrap();
    let second = join_prompt(backend, second, "second lock after unlock")
        .await
        .unwrap();
    assert!(
        second.fencing_token() > first_token,
        "each hold has its own, rising token"
    );
    second.unlock().await.unwrap();

    let election = Election::new(&session, format!("{name}-e"));
    let leader = election.campaign("first").await.unwrap();
    let again = tokio::spawn({
        let election = election.clone();
        async move { election.campaign("second").await }
    });
    assert_blocks(backend, &again, "a second campaign on the same session").await;
    assert_eq!(election.leader().await.unwrap().value, b"first");
    leader.resign().await.unwrap();
    let again = join_prompt(backend, again, "second campaign after resign")
        .await
        .unwrap();
    assert_eq!(election.leader().await.unwrap().value, b"second");
    again.resign().await.unwrap();

    let rw = RwMutex::new(&session, format!("{name}-rw"));
    let writer = rw.write().await.unwrap();
    for mode in [RwMode::Write, RwMode::Read] {
        let other = tokio::spawn({
            let rw = rw.clone();
            async move { rw.lock_timeout(mode, Duration::from_secs(3600)).await }
        });
        assert_blocks(backend, &other, "a write holder's own second lock").await;
        other.abort();
    }
    writer.unlock().await.unwrap();

    let semaphore = Semaphore::new(&session, format!("{name}-s"), 2).unwrap();
    let permit = semaphore.acquire().await.unwrap();
    let more = tokio::spawn({
        let semaphore = semaphore.clone();
        async move { semaphore.acquire().await }
    });
    assert_blocks(backend, &more, "a second permit on the same session").await;
    let token = permit.fencing_token();
    permit.release().await.unwrap();
    let more = join_prompt(backend, more, "second permit after release")
        .await
        .unwrap();
    assert!(more.fencing_token() > token);
    more.release().await.unwrap();
}

/// Readers of one session that overlap without pause (a new one every period, each holding
/// for more than two periods) must not keep another session's writer out: once the writer
/// queues, new readers line up behind it.
pub async fn one_sessions_overlapping_readers_never_starve_another_sessions_writer(
    backend: &dyn TestBackend,
) {
    let readers = new_session(backend).await;
    let name = unique("reader-stream");
    let period = Duration::from_millis(50);
    let stop = Arc::new(AtomicBool::new(false));
    let stream = tokio::spawn({
        let rw = RwMutex::new(&readers, name.as_str());
        let stop = stop.clone();
        async move {
            let mut tasks = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let rw = rw.clone();
                tasks.push(tokio::spawn(async move {
                    let guard = rw.read().await?;
                    tokio::time::sleep(period * 12 / 5).await;
                    guard.unlock().await
                }));
                tokio::time::sleep(period).await;
            }
            for task in tasks {
                task.await.unwrap().expect("a reader of the stream");
            }
        }
    });
    tokio::time::sleep(period * 5).await;
    let writer = new_session(backend).await;
    let started = Instant::now();
    let guard = RwMutex::new(&writer, name.as_str())
        .lock_timeout(RwMode::Write, settle(backend))
        .await
        .expect("the writer gets in while the reader stream goes on");
    let waited = started.elapsed();
    guard.unlock().await.unwrap();
    stop.store(true, Ordering::SeqCst);
    tokio::time::timeout(settle(backend), stream)
        .await
        .expect("the reader stream ends")
        .unwrap();
    assert!(
        waited < settle(backend),
        "writer waited {waited:?} behind one session's readers"
    );
}

/// Every key with a claim of unknown outcome is watched for the rest of the session, up
/// to a bound; one more ends the session (its lease revoked, so whatever lands late goes
/// with it) rather than leaving a key that could land unwatched.
pub async fn too_many_unsettled_claims_end_the_session(backend: &dyn TestBackend) {
    let Some(faults) = faults_for(
        backend,
        "too_many_unsettled_claims_end_the_session",
        &[Capability::LateApply],
    ) else {
        return;
    };
    let name = unique("unsettled");
    let (client, controls) = faults.faulty_client().await;
    let session = session_with_ttl(&client, backend.short_ttl() * 10).await;
    for i in 0..coord_core::MAX_SETTLED_KEYS {
        controls.delay_next(1, LateApply::Fail);
        let lost_answer = Mutex::new(&session, format!("{name}-{i}")).lock().await;
        assert!(lost_answer.is_err());
    }
    eventually(
        settle(backend),
        "every unsettled key is watched",
        || async { session.tracked_keys() == coord_core::MAX_SETTLED_KEYS },
    )
    .await;
    assert!(!session.is_lost(), "within the bound the session lives on");
    controls.delay_next(1, LateApply::Fail);
    let one_more = Mutex::new(&session, format!("{name}-last")).lock().await;
    assert!(one_more.is_err());
    tokio::time::timeout(prompt(backend), session.lost())
        .await
        .expect("one more unsettled key ends the session");
    let observer = backend.client().await;
    eventually(
        settle(backend),
        "the ended session's lease is revoked",
        || async {
            matches!(
                observer.lease_time_to_live(session.lease()).await,
                Err(Error::LeaseNotFound { .. })
            )
        },
    )
    .await;
    controls.apply_late().await;
    eventually(
        settle(backend),
        "late claims land on no live lease",
        || async { keys_under(observer.as_ref(), &name).await.is_empty() },
    )
    .await;
}

/// A session keeps no state for names it no longer uses.
pub async fn session_forgets_names_it_no_longer_uses(backend: &dyn TestBackend) {
    let session = new_session(backend).await;
    let name = unique("forget");
    for i in 0..50 {
        let guard = Mutex::new(&session, format!("{name}-{i}"))
            .lock()
            .await
            .unwrap();
        guard.unlock().await.unwrap();
    }
    // A refused claim (the key belongs to another lease) leaves nothing behind either.
    let foreign = new_session(backend).await;
    let client = backend.client().await;
    let taken = format!("{name}-foreign");
    client
        .put(
            lock_key(&taken, session.lease()).as_bytes(),
            b"",
            foreign.lease(),
        )
        .await
        .unwrap();
    let refused = Mutex::new(&session, taken.as_str()).lock().await;
    assert!(
        matches!(refused, Err(Error::InvalidArgument { .. })),
        "{refused:?}"
    );
    assert_eq!(
        session.tracked_keys(),
        0,
        "per-name state outlives the holds"
    );
}

/// `try_lock` that finds the lock held, on a client cut off right after its claim answered:
/// its withdrawal cannot get through, and it still returns by the session's deadline.
pub async fn try_lock_cut_off_after_its_claim_returns_by_the_deadline(backend: &dyn TestBackend) {
    let Some(faults) = faults_for(
        backend,
        "try_lock_cut_off_after_its_claim_returns_by_the_deadline",
        &[Capability::PartitionHang],
    ) else {
        return;
    };
    let name = unique("try-cut-off");
    let holder = new_session(backend).await;
    let held = Mutex::new(&holder, name.as_str()).lock().await.unwrap();
    let (client, controls) = faults.faulty_client().await;
    let armed = Arc::new(AtomicBool::new(false));
    let spy = Spy::new(client).with_txn_hook(Arc::new({
        let (armed, controls) = (armed.clone(), controls.clone());
        move |request: &TxnRequest, _: &Result<TxnResponse>| {
            // The claim (the only txn with a compare) answered: cut the client off now.
            if !request.compares.is_empty() && armed.swap(false, Ordering::SeqCst) {
                controls.partition(Partition::Hang);
            }
            None
        }
    }));
    let spy: Arc<dyn CoordinationBackend> = Arc::new(spy);
    let session = session_with_ttl(&spy, backend.short_ttl()).await;
    armed.store(true, Ordering::SeqCst);
    let outcome = tokio::time::timeout(
        backend.short_ttl() + prompt(backend),
        Mutex::new(&session, name.as_str()).try_lock(),
    )
    .await
    .expect("try_lock returns by the session's deadline");
    assert!(outcome.is_err(), "{outcome:?}");
    controls.heal();
    held.unlock().await.unwrap();
}

/// `lost()` resolves only when a hold is lost, never because its holder let go: a monitor
/// task spawned on it stays pending after `unlock()`, `resign()` or `release()`.
pub async fn lost_stays_pending_after_a_voluntary_release(backend: &dyn TestBackend) {
    let session = new_session(backend).await;
    let name = unique("voluntary");
    let mut monitors = Vec::new();

    let guard = Mutex::new(&session, format!("{name}-m"))
        .lock()
        .await
        .unwrap();
    monitors.push(("mutex", tokio::spawn(guard.lost())));
    guard.unlock().await.unwrap();

    let guard = RwMutex::new(&session, format!("{name}-rw"))
        .read()
        .await
        .unwrap();
    monitors.push(("read lock", tokio::spawn(guard.lost())));
    guard.unlock().await.unwrap();

    let leader = Election::new(&session, format!("{name}-e"))
        .campaign("x")
        .await
        .unwrap();
    monitors.push(("leadership", tokio::spawn(leader.lost())));
    leader.resign().await.unwrap();

    let permit = Semaphore::new(&session, format!("{name}-s"), 2)
        .unwrap()
        .acquire()
        .await
        .unwrap();
    monitors.push(("permit", tokio::spawn(permit.lost())));
    permit.release().await.unwrap();

    let dropped = Mutex::new(&session, format!("{name}-d"))
        .lock()
        .await
        .unwrap();
    monitors.push(("dropped guard", tokio::spawn(dropped.lost())));
    drop(dropped);

    tokio::time::sleep(quiet(backend)).await;
    for (what, monitor) in monitors {
        assert!(
            !monitor.is_finished(),
            "{what}: lost() fired after a voluntary release"
        );
        monitor.abort();
    }
}

/// A waiter whose watch breaks (with `Compacted`, as after a restart past a compaction, or
/// with `Unavailable`) watches again from now and re-reads; it is served when its turn
/// comes, like the holder it waits for, who is unaffected.
pub async fn waiters_watch_again_when_their_watch_breaks(backend: &dyn TestBackend) {
    let Some(faults) = faults_for(
        backend,
        "waiters_watch_again_when_their_watch_breaks",
        &[Capability::BreakWatches],
    ) else {
        return;
    };
    for how in [WatchBreak::Compacted, WatchBreak::Unavailable] {
        let name = unique("watch-break");
        let holder = new_session(backend).await;
        let lock = Mutex::new(&holder, format!("{name}-m"))
            .lock()
            .await
            .unwrap();
        let leader = Election::new(&holder, format!("{name}-e"))
            .campaign("a")
            .await
            .unwrap();
        let permit = Semaphore::new(&holder, format!("{name}-s"), 1)
            .unwrap()
            .acquire()
            .await
            .unwrap();

        let (client, controls) = faults.faulty_client().await;
        let waiter = session_with_ttl(&client, backend.short_ttl()).await;
        let observer = backend.client().await;
        let locker = tokio::spawn({
            let m = Mutex::new(&waiter, format!("{name}-m"));
            async move { m.lock().await.map(drop) }
        });
        let candidate = tokio::spawn({
            let e = Election::new(&waiter, format!("{name}-e"));
            async move { e.campaign("b").await.map(drop) }
        });
        let acquirer = tokio::spawn({
            let s = Semaphore::new(&waiter, format!("{name}-s"), 1).unwrap();
            async move { s.acquire().await.map(drop) }
        });
        for suffix in ["m", "e", "s"] {
            let prefix = format!("{name}-{suffix}/");
            eventually(settle(backend), "the waiters queue", || async {
                keys_under(observer.as_ref(), &prefix).await.len() == 2
            })
            .await;
        }
        // Let every waiter reach its watch, then break them all; the first call after that
        // fails too, as it would in the same network blip.
        tokio::time::sleep(prompt(backend)).await;
        controls.fail_next(1);
        controls.break_watches(how);
        tokio::time::sleep(prompt(backend)).await;
        lock.unlock().await.unwrap();
        leader.resign().await.unwrap();
        permit.release().await.unwrap();
        for (what, task) in [
            ("lock", locker),
            ("campaign", candidate),
            ("semaphore", acquirer),
        ] {
            let outcome = join_prompt(backend, task, what).await;
            assert!(
                outcome.is_ok(),
                "{how:?}: {what} waiter failed instead of watching again: {outcome:?}"
            );
        }
    }
}

/// A client whose keep-alive panics: the session's background task dies.
#[derive(Debug)]
struct PanickingKeepAlive(Arc<dyn CoordinationBackend>);

#[async_trait]
impl CoordinationBackend for PanickingKeepAlive {
    fn info(&self) -> BackendInfo {
        self.0.info()
    }
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseGrant> {
        self.0.lease_grant(ttl).await
    }
    async fn lease_keep_alive(&self, _lease: LeaseId) -> Result<Duration> {
        panic!("injected: the keep-alive task dies");
    }
    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.0.lease_revoke(lease).await
    }
    async fn lease_time_to_live(&self, lease: LeaseId) -> Result<LeaseStatus> {
        self.0.lease_time_to_live(lease).await
    }
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        self.0.range(request).await
    }
    async fn txn(&self, request: TxnRequest) -> Result<TxnResponse> {
        self.0.txn(request).await
    }
    async fn watch(&self, request: WatchRequest) -> Result<WatchStream> {
        self.0.watch(request).await
    }
    async fn current_revision(&self) -> Result<Revision> {
        self.0.current_revision().await
    }
    async fn compact(&self, revision: Revision) -> Result<()> {
        self.0.compact(revision).await
    }
}

/// If the session's keep-alive task dies, the session is lost (nobody refreshes the lease
/// any more): `lost()` fires and `is_lost()` says so.
pub async fn session_is_lost_when_its_keep_alive_task_dies(backend: &dyn TestBackend) {
    let client: Arc<dyn CoordinationBackend> = Arc::new(PanickingKeepAlive(backend.client().await));
    let session = session_with_ttl(&client, backend.short_ttl()).await;
    tokio::time::timeout(backend.short_ttl(), session.lost())
        .await
        .expect("lost() fires when the keep-alive task dies");
    assert!(session.is_lost());
}

/// After a session is lost, its lease is revoked, retried until the server answers: a
/// revoke that fails while cut off does not leave the lease (and the locks on it) to live
/// on for another TTL once the connection is back (etcd restores a lease for a full TTL
/// when it restarts or elects a new leader).
pub async fn lost_session_keeps_revoking_until_the_lease_is_gone(backend: &dyn TestBackend) {
    let Some(faults) = faults_for(
        backend,
        "lost_session_keeps_revoking_until_the_lease_is_gone",
        &[Capability::PartitionFail],
    ) else {
        return;
    };
    let name = unique("revoke-retry");
    let (client, controls) = faults.faulty_client().await;
    // A wide drift margin: the session gives up half a TTL before the server would, which
    // leaves this test the time to refresh the lease from another client (below) before
    // the server expires it, even on a loaded machine.
    let session = Session::builder(client.clone())
        .ttl(backend.short_ttl())
        .drift_margin(backend.short_ttl() / 2)
        .start()
        .await
        .unwrap();
    let lease = session.lease();
    let guard = Mutex::new(&session, name.as_str()).lock().await.unwrap();
    let other = backend.client().await;
    controls.partition(Partition::Fail);
    tokio::time::timeout(backend.short_ttl() * 2, guard.lost())
        .await
        .expect("the cut-off holder is told");
    // What a restarted server does: the lease lives a full TTL again.
    other
        .lease_keep_alive(lease)
        .await
        .expect("the lease still lives on the server");
    controls.heal();
    let observer = backend.client().await;
    eventually(
        prompt(backend) * 2,
        "the lost session's lease is revoked once the server answers",
        || async {
            matches!(
                observer.lease_time_to_live(lease).await,
                Err(Error::LeaseNotFound { .. })
            )
        },
    )
    .await;
    drop(guard);
}

/// A proclamation whose answer was lost lands after a later one: the later value must stay.
pub async fn proclaim_with_a_lost_answer_never_overwrites_a_later_one(backend: &dyn TestBackend) {
    let Some(faults) = faults_for(
        backend,
        "proclaim_with_a_lost_answer_never_overwrites_a_later_one",
        &[Capability::LateApply],
    ) else {
        return;
    };
    let name = unique("late-proclaim");
    let (client, controls) = faults.faulty_client().await;
    let session = session_with_ttl(&client, backend.short_ttl()).await;
    let election = Election::new(&session, name.as_str());
    let leader = election.campaign("v0").await.unwrap();
    controls.delay_next(1, LateApply::Fail);
    assert!(leader.proclaim("v1").await.is_err(), "the answer was lost");
    leader.proclaim("v2").await.expect("a later proclamation");
    assert_eq!(controls.apply_late().await, 1);
    let observer = backend.client().await;
    let seen = coord_core::leader(observer.as_ref(), &name).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&seen.value),
        "v2",
        "an older proclamation landed over a newer one"
    );
    leader.resign().await.unwrap();
}
