//! Regression tests for the known bugs of etcd's Go recipes (`clientv3/concurrency`), with
//! the upstream etcd issue numbers: phantom locks and leaders after the waiter's lease ended
//! (#9921, #11007), waits that outlive their own key or session (#19597), stale releases
//! (#22082, #22123), keys left behind by failed waits (#10111, #21128), a predecessor
//! re-created under the same key, and waits paced by the server's watch catch-up loop. Each
//! test's doc says how Go's `concurrency` package fails it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use coord_core::{
    BackendExt, CoordinationBackend, Election, Error, KeyRange, Mutex, RwMutex, Semaphore, Session,
    TxnOp, TxnRequest, WatchRequest, lock_key,
};
use futures::{FutureExt, StreamExt};

use super::{
    Capability, ClientFaults, Partition, Spy, SpyCall, TestBackend, assert_blocks, eventually,
    join_prompt, keys_under, new_session, no_key_of, prompt, replays_history, session_with_ttl,
    settle, skip_unless, unique,
};

/// Which recipe a shared scenario drives.
#[derive(Debug, Clone, Copy)]
enum Recipe {
    Mutex,
    Election,
}

/// A held lock or leadership, to release generically.
enum Held {
    Mutex(coord_core::MutexGuard),
    Leader(coord_core::Leadership),
}

impl Held {
    fn key(&self) -> &str {
        match self {
            Held::Mutex(g) => g.key(),
            Held::Leader(l) => l.key(),
        }
    }
    fn token(&self) -> i64 {
        match self {
            Held::Mutex(g) => g.fencing_token(),
            Held::Leader(l) => l.rev(),
        }
    }
    fn is_owner(&self) -> coord_core::Compare {
        match self {
            Held::Mutex(g) => g.is_owner(),
            Held::Leader(l) => l.is_leader(),
        }
    }
    async fn release(self) -> coord_core::Result<()> {
        match self {
            Held::Mutex(g) => g.unlock().await,
            Held::Leader(l) => l.resign().await,
        }
    }
}

async fn acquire(recipe: Recipe, s: &Session, name: &str) -> coord_core::Result<Held> {
    match recipe {
        Recipe::Mutex => Mutex::new(s, name).lock().await.map(Held::Mutex),
        Recipe::Election => Election::new(s, name)
            .campaign(format!("{:x}", s.lease()))
            .await
            .map(Held::Leader),
    }
}

fn spawn_acquire(
    recipe: Recipe,
    s: &Session,
    name: &str,
) -> tokio::task::JoinHandle<coord_core::Result<Held>> {
    let (s, name) = (s.clone(), name.to_owned());
    tokio::spawn(async move { acquire(recipe, &s, &name).await })
}

fn describe(r: &coord_core::Result<Held>) -> String {
    match r {
        Ok(h) => format!("Ok(holding {} at token {})", h.key(), h.token()),
        Err(e) => format!("Err({e})"),
    }
}

/// How a scenario ends a waiter's lease behind its session's back.
#[derive(Debug, Clone, Copy)]
enum EndLease {
    /// Another client revokes it.
    Revoke,
    /// The store expires it now ([`super::Faults::expire_lease_now`]).
    Expire,
}

async fn end_lease(backend: &dyn TestBackend, how: EndLease, lease: i64) {
    match how {
        EndLease::Revoke => backend
            .client()
            .await
            .lease_revoke(lease)
            .await
            .expect("revoke"),
        EndLease::Expire => {
            backend
                .faults()
                .expect("fault injection")
                .expire_lease_now(lease)
                .await
        }
    }
}

/// For `recipe`: the waiter's lease is ended behind its back while it waits behind a
/// holder, then the holder releases at once. The waiter must get an error, never `Ok`.
/// Then the same with the holder's key and the waiter's key deleted in one txn (the
/// predecessor's DELETE and the loss of the own key arrive in the same revision).
async fn waiter_loses_lease(backend: &dyn TestBackend, recipe: Recipe, how: EndLease) {
    let name = unique("phantom");
    let c = backend.client().await;
    let (a, b) = (new_session(backend).await, new_session(backend).await);
    let held = acquire(recipe, &a, &name).await.unwrap();
    let wait = spawn_acquire(recipe, &b, &name);
    assert_blocks(backend, &wait, "waiter behind the holder").await;
    end_lease(backend, how, b.lease()).await;
    held.release().await.unwrap();
    let r = join_prompt(backend, wait, "the waiter's call returns").await;
    assert!(
        matches!(
            r,
            Err(Error::SessionExpired { .. } | Error::LockLost { .. })
        ),
        "{recipe:?}: waiter whose lease ended ({how:?}) got {} (phantom)",
        describe(&r)
    );
    assert!(keys_under(c.as_ref(), &name).await.is_empty());

    // Same revision: the predecessor and the waiter's own key vanish in one txn.
    let (a, b) = (new_session(backend).await, new_session(backend).await);
    let held = acquire(recipe, &a, &name).await.unwrap();
    let wait = spawn_acquire(recipe, &b, &name);
    assert_blocks(backend, &wait, "waiter behind the holder").await;
    let resp = c
        .txn(TxnRequest::new().and_then([
            TxnOp::delete(held.key()),
            TxnOp::delete(lock_key(&name, b.lease())),
        ]))
        .await
        .unwrap();
    assert!(resp.succeeded);
    let r = join_prompt(backend, wait, "the waiter's call returns").await;
    assert!(
        r.is_err(),
        "{recipe:?}: waiter whose key vanished with its predecessor got {}",
        describe(&r)
    );
    drop(held);
}

/// (etcd #9921; Go `Mutex.Lock` before v3.5): a waiter whose lease is revoked while
/// it waits must get an error, never `Ok`. Go v3.4 returns nil once the older keys are gone
/// (a phantom lock); v3.5 checks only that the key exists, not its create revision.
pub async fn mutex_waiter_whose_lease_is_revoked_never_gets_the_lock(backend: &dyn TestBackend) {
    waiter_loses_lease(backend, Recipe::Mutex, EndLease::Revoke).await;
}

/// As above, with the waiter's lease *expiring* on the server (not revoked), which its session
/// only learns at the next keep-alive; the holder releases at once. Go v3.4 returns nil.
pub async fn mutex_waiter_whose_lease_expires_never_gets_the_lock(backend: &dyn TestBackend) {
    if skip_unless(
        backend,
        "mutex_waiter_whose_lease_expires_never_gets_the_lock",
        &[Capability::ExpireLease],
    ) {
        return;
    }
    waiter_loses_lease(backend, Recipe::Mutex, EndLease::Expire).await;
}

/// For elections (etcd #11007, #22387, still open in v3.7): a candidate whose lease is
/// revoked while waiting must not be told it leads. Go's `Campaign` returns nil once the
/// older candidates are gone, without checking its own key (phantom leader).
pub async fn candidate_whose_lease_is_revoked_never_leads(backend: &dyn TestBackend) {
    waiter_loses_lease(backend, Recipe::Election, EndLease::Revoke).await;
}

/// For elections with the candidate's lease expiring on the server; Go's `Campaign`
/// returns nil (phantom leader).
pub async fn candidate_whose_lease_expires_never_leads(backend: &dyn TestBackend) {
    if skip_unless(
        backend,
        "candidate_whose_lease_expires_never_leads",
        &[Capability::ExpireLease],
    ) {
        return;
    }
    waiter_loses_lease(backend, Recipe::Election, EndLease::Expire).await;
}

/// own key: the waiter's key is deleted by someone else while the holder keeps
/// holding. The wait must end promptly with `LockLost`. Go's `Lock`/`Campaign` watch only
/// the predecessor, so they keep waiting until the holder releases (#19597): here never.
async fn wait_ends_when_own_key_deleted(backend: &dyn TestBackend, recipe: Recipe) {
    let name = unique("own-key-gone");
    let c = backend.client().await;
    let (a, b) = (new_session(backend).await, new_session(backend).await);
    let held = acquire(recipe, &a, &name).await.unwrap();
    let wait = spawn_acquire(recipe, &b, &name);
    assert_blocks(backend, &wait, "waiter behind the holder").await;
    let t0 = tokio::time::Instant::now();
    super::delete_key(c.as_ref(), &lock_key(&name, b.lease())).await;
    let r = join_prompt(backend, wait, "the wait ends while the holder still holds").await;
    assert!(
        matches!(r, Err(Error::LockLost { .. })),
        "{recipe:?}: {}",
        describe(&r)
    );
    assert!(t0.elapsed() <= prompt(backend));
    assert!(
        c.txn(TxnRequest::new().when([held.is_owner()]))
            .await
            .unwrap()
            .succeeded,
        "the holder still holds"
    );
    held.release().await.unwrap();
}

/// session lost: the waiter's session is lost while the holder keeps holding: first
/// by `orphan()`, then (when the backend can partition) by its keep-alives hanging, so
/// only the client-side deadline can end the wait. It must end with `SessionExpired`
/// promptly after the session is lost. Go's waits ignore `Session.Done()` (mutex.go TODO,
/// #19597) and keep blocking.
async fn wait_ends_when_session_lost(backend: &dyn TestBackend, recipe: Recipe, test: &str) {
    let name = unique("session-gone");
    let c = backend.client().await;
    let a = new_session(backend).await;
    let held = acquire(recipe, &a, &name).await.unwrap();
    let b = new_session(backend).await;
    let wait = spawn_acquire(recipe, &b, &name);
    assert_blocks(backend, &wait, "waiter behind the holder").await;
    b.orphan();
    let r = join_prompt(backend, wait, "the wait ends when the session is orphaned").await;
    assert!(
        matches!(r, Err(Error::SessionExpired { .. })),
        "{recipe:?}: {}",
        describe(&r)
    );

    if !skip_unless(backend, test, &[Capability::PartitionHang]) {
        let faults = backend.faults().unwrap();
        let (bc, bf) = faults.faulty_client().await;
        let b = session_with_ttl(&bc, backend.short_ttl()).await;
        let wait = spawn_acquire(recipe, &b, &name);
        assert_blocks(backend, &wait, "waiter behind the holder").await;
        bf.partition(Partition::Hang);
        let t0 = tokio::time::Instant::now();
        let limit = b.ttl() + prompt(backend);
        let r = tokio::time::timeout(limit, wait)
            .await
            .unwrap_or_else(|_| {
                panic!("{recipe:?}: wait still blocked {limit:?} after the partition")
            })
            .unwrap();
        assert!(
            matches!(r, Err(Error::SessionExpired { .. })),
            "{recipe:?}: {}",
            describe(&r)
        );
        assert!(b.is_lost());
        assert!(
            t0.elapsed() < b.ttl(),
            "lost before the lease's nominal end"
        );
        bf.heal();
    }
    assert!(
        c.txn(TxnRequest::new().when([held.is_owner()]))
            .await
            .unwrap()
            .succeeded,
        "the holder held throughout"
    );
    held.release().await.unwrap();
}

/// For `Mutex::lock` (#19597): see `wait_ends_when_own_key_deleted`.
pub async fn mutex_wait_ends_when_its_own_key_is_deleted(backend: &dyn TestBackend) {
    wait_ends_when_own_key_deleted(backend, Recipe::Mutex).await;
}

/// For `Mutex::lock` (#19597, PR #22387): see `wait_ends_when_session_lost`.
pub async fn mutex_wait_ends_when_its_session_is_lost(backend: &dyn TestBackend) {
    wait_ends_when_session_lost(
        backend,
        Recipe::Mutex,
        "mutex_wait_ends_when_its_session_is_lost",
    )
    .await;
}

/// For `Election::campaign`: see `wait_ends_when_own_key_deleted`.
pub async fn campaign_ends_when_its_own_key_is_deleted(backend: &dyn TestBackend) {
    wait_ends_when_own_key_deleted(backend, Recipe::Election).await;
}

/// For `Election::campaign`: see `wait_ends_when_session_lost`.
pub async fn campaign_ends_when_its_session_is_lost(backend: &dyn TestBackend) {
    wait_ends_when_session_lost(
        backend,
        Recipe::Election,
        "campaign_ends_when_its_session_is_lost",
    )
    .await;
}

/// Runs `release` on a client with latency L and cuts the client off (partition Fail) at
/// 3L/4: the store applies the release at L/2, but its response is lost, so the call fails.
async fn release_with_lost_response(
    faults: &Arc<dyn ClientFaults>,
    held: Held,
) -> coord_core::Result<()> {
    let latency = Duration::from_millis(200);
    faults.set_latency(latency);
    let call = tokio::spawn(held.release());
    tokio::time::sleep(latency * 3 / 4).await;
    faults.partition(Partition::Fail);
    let r = call.await.unwrap();
    faults.set_latency(Duration::ZERO);
    r
}

/// stale release: session S1 (client A) holds; its release is applied by the store
/// but the response is lost, so the call fails and the release is retried in the
/// background. Meanwhile the same lease, resumed by a new session S2 on client B (a
/// restarted process), acquires again: same key, new incarnation. When client A heals,
/// S1's retry runs and must not delete S2's acquisition. Go's `Unlock` is a plain
/// `Delete(myKey)` (#22082), so a retried unlock deletes the newer key; Go's `Resign` has
/// the guard but drops its state on an RPC error (#22123), so the resignation is never
/// retried (this test then fails waiting for the retry).
async fn late_release_never_deletes_newer(backend: &dyn TestBackend, recipe: Recipe) {
    let faults = backend.faults().unwrap();
    let name = unique("stale-release");
    let (ac, af) = faults.faulty_client().await;
    let spy = Spy::new(ac);
    let s1 = session_with_ttl(
        &(Arc::new(spy.clone()) as Arc<dyn CoordinationBackend>),
        backend.short_ttl() * 10,
    )
    .await;
    let held = acquire(recipe, &s1, &name).await.unwrap();
    let (key, t1) = (held.key().to_owned(), held.token());
    let r = release_with_lost_response(&af, held).await;
    assert!(
        r.is_err(),
        "{recipe:?}: the release's response was lost, so it fails: {r:?}"
    );
    let c = backend.client().await;
    assert!(
        c.get(key.as_bytes()).await.unwrap().is_none(),
        "the store applied the release"
    );
    // A restarted process resumes the lease and acquires again: same key, new incarnation.
    let bc = backend.client().await;
    let s2 = Session::builder(bc)
        .ttl(backend.short_ttl() * 10)
        .lease(s1.lease())
        .start()
        .await
        .unwrap();
    let held2 = acquire(recipe, &s2, &name).await.unwrap();
    assert_eq!(held2.key(), key);
    assert!(held2.token() > t1);
    let retries_before = spy
        .calls()
        .iter()
        .filter(|c| matches!(c, SpyCall::Txn { ok: true, request } if deletes(request, &key)))
        .count();
    af.heal();
    eventually(
        settle(backend),
        "the failed release is retried after the heal",
        || async {
            spy.calls()
                .iter()
                .filter(
                    |c| matches!(c, SpyCall::Txn { ok: true, request } if deletes(request, &key)),
                )
                .count()
                > retries_before
        },
    )
    .await;
    let kv = c.get(key.as_bytes()).await.unwrap();
    assert_eq!(
        kv.map(|kv| kv.create_revision),
        Some(held2.token()),
        "{recipe:?}: the stale retry deleted the newer acquisition"
    );
    assert!(
        c.txn(TxnRequest::new().when([held2.is_owner()]))
            .await
            .unwrap()
            .succeeded
    );
    held2.release().await.unwrap();
    s1.orphan();
}

fn deletes(request: &TxnRequest, key: &str) -> bool {
    request
        .success
        .iter()
        .chain(&request.failure)
        .any(|op| matches!(op, TxnOp::Delete(d) if d.range == KeyRange::key(key)))
}

/// For `MutexGuard::unlock` (#22082): see `late_release_never_deletes_newer`.
pub async fn late_unlock_never_deletes_a_newer_acquisition(backend: &dyn TestBackend) {
    if skip_unless(
        backend,
        "late_unlock_never_deletes_a_newer_acquisition",
        &[Capability::Latency, Capability::PartitionFail],
    ) {
        return;
    }
    late_release_never_deletes_newer(backend, Recipe::Mutex).await;
}

/// For `Leadership::resign` (#22123): see `late_release_never_deletes_newer`.
pub async fn late_resign_never_deletes_a_newer_candidacy(backend: &dyn TestBackend) {
    if skip_unless(
        backend,
        "late_resign_never_deletes_a_newer_candidacy",
        &[Capability::Latency, Capability::PartitionFail],
    ) {
        return;
    }
    late_release_never_deletes_newer(backend, Recipe::Election).await;
}

/// failed release: the release RPC fails (`fail_next`); the state is kept and the
/// release still happens (in the background) while the session stays alive, so a waiter
/// acquires. Go's `Resign` clears its state on an RPC error (#22123) and `Unlock` leaves
/// the key to the caller: the key stays until the lease ends, and the waiter stays blocked.
async fn failed_release_still_releases(backend: &dyn TestBackend, recipe: Recipe) {
    let faults = backend.faults().unwrap();
    let name = unique("failed-release");
    let (hc, hf) = faults.faulty_client().await;
    let hs = session_with_ttl(&hc, backend.short_ttl() * 10).await;
    let held = acquire(recipe, &hs, &name).await.unwrap();
    let key = held.key().to_owned();
    let w = new_session(backend).await;
    let wait = spawn_acquire(recipe, &w, &name);
    assert_blocks(backend, &wait, "waiter behind the holder").await;
    hf.fail_next(1);
    let r = held.release().await;
    assert!(
        r.is_err(),
        "{recipe:?}: the injected failure is reported: {r:?}"
    );
    let c = backend.client().await;
    eventually(
        settle(backend),
        "the failed release still happens",
        || async { c.get(key.as_bytes()).await.unwrap().is_none() },
    )
    .await;
    assert!(
        !hs.is_lost(),
        "released by the retry, not by the lease ending"
    );
    let got = tokio::time::timeout(settle(backend), wait)
        .await
        .expect("the waiter acquires")
        .unwrap()
        .unwrap();
    got.release().await.unwrap();
}

/// For `MutexGuard::unlock`: see `failed_release_still_releases`.
pub async fn failed_unlock_still_releases(backend: &dyn TestBackend) {
    if skip_unless(
        backend,
        "failed_unlock_still_releases",
        &[Capability::FailNext],
    ) {
        return;
    }
    failed_release_still_releases(backend, Recipe::Mutex).await;
}

/// For `Leadership::resign` (#22123): see `failed_release_still_releases`.
pub async fn failed_resign_still_resigns(backend: &dyn TestBackend) {
    if skip_unless(
        backend,
        "failed_resign_still_resigns",
        &[Capability::FailNext],
    ) {
        return;
    }
    failed_release_still_releases(backend, Recipe::Election).await;
}

/// on a failed wait (timeout, session orphaned) the own key is withdrawn while the
/// lease lives on, so it blocks nobody. Go's `Campaign` resigns only when its ctx is done:
/// on other errors it leaves the key in etcd (#21128).
async fn failed_wait_withdraws(backend: &dyn TestBackend, recipe: Recipe) {
    let name = unique("withdraw");
    let c = backend.client().await;
    let a = new_session(backend).await;
    let held = acquire(recipe, &a, &name).await.unwrap();
    // Timeout.
    let b = new_session(backend).await;
    let r = match recipe {
        Recipe::Mutex => Mutex::new(&b, name.as_str())
            .lock_timeout(Duration::from_millis(100))
            .await
            .map(Held::Mutex),
        Recipe::Election => Election::new(&b, name.as_str())
            .campaign_timeout("b", Duration::from_millis(100))
            .await
            .map(Held::Leader),
    };
    assert!(matches!(r, Err(Error::Timeout { .. })), "{}", describe(&r));
    no_key_of(
        backend,
        c.as_ref(),
        &name,
        b.lease(),
        "timed-out wait withdraws its key",
    )
    .await;
    // Session orphaned (lease left to expire, but the key must go now).
    let d = new_session(backend).await;
    let wait = spawn_acquire(recipe, &d, &name);
    assert_blocks(backend, &wait, "waiter behind the holder").await;
    d.orphan();
    let r = join_prompt(backend, wait, "wait fails on orphan").await;
    assert!(r.is_err(), "{}", describe(&r));
    no_key_of(
        backend,
        c.as_ref(),
        &name,
        d.lease(),
        "failed wait withdraws its key",
    )
    .await;
    assert!(
        c.lease_time_to_live(d.lease()).await.is_ok(),
        "withdrawn, not expired: the orphaned lease still lives"
    );
    held.release().await.unwrap();
}

/// For `Mutex::lock` (#10111 fixed it in Go in 2018): see `failed_wait_withdraws`.
pub async fn failed_lock_wait_withdraws_its_key(backend: &dyn TestBackend) {
    failed_wait_withdraws(backend, Recipe::Mutex).await;
}

/// For `Election::campaign` (#21128, open): see `failed_wait_withdraws`.
pub async fn failed_campaign_withdraws_its_key(backend: &dyn TestBackend) {
    failed_wait_withdraws(backend, Recipe::Election).await;
}

/// On a backend error (#21128's case: the watch fails). A waiter whose client is cut
/// off (calls and watches fail at once) keeps its place while its session lives, as a
/// holder would, and is served once the client is back; cut off until its session is lost,
/// its wait fails and its key goes (Go's `Campaign` leaves it, and the session keeps it
/// alive forever, blocking every later candidate).
pub async fn waiter_keeps_its_place_through_a_blip_and_ends_with_its_session(
    backend: &dyn TestBackend,
) {
    if skip_unless(
        backend,
        "waiter_keeps_its_place_through_a_blip_and_ends_with_its_session",
        &[Capability::PartitionFail],
    ) {
        return;
    }
    let faults = backend.faults().unwrap();
    for recipe in [Recipe::Mutex, Recipe::Election] {
        let name = unique("watch-error");
        let c = backend.client().await;
        let a = new_session(backend).await;
        let held = acquire(recipe, &a, &name).await.unwrap();
        let (wc, wf) = faults.faulty_client().await;
        let w = session_with_ttl(&wc, backend.short_ttl()).await;
        let wait = spawn_acquire(recipe, &w, &name);
        assert_blocks(backend, &wait, "waiter behind the holder").await;
        // A blip shorter than the session's refresh period: the waiter keeps its place.
        wf.partition(Partition::Fail);
        tokio::time::sleep(backend.short_ttl() / 6).await;
        wf.heal();
        assert!(!wait.is_finished(), "{recipe:?}: a blip ended the wait");
        held.release().await.unwrap();
        let served = join_prompt(backend, wait, "the waiter is served after the blip").await;
        served
            .unwrap_or_else(|e| panic!("{recipe:?}: {e}"))
            .release()
            .await
            .unwrap();

        // Cut off for good: the wait ends with the session, and the key goes.
        let held = acquire(recipe, &a, &name).await.unwrap();
        let w = session_with_ttl(&wc, backend.short_ttl()).await;
        let wait = spawn_acquire(recipe, &w, &name);
        assert_blocks(backend, &wait, "waiter behind the holder").await;
        wf.partition(Partition::Fail);
        let r = tokio::time::timeout(backend.short_ttl() * 2, wait)
            .await
            .expect("the wait ends with the session")
            .unwrap();
        assert!(
            matches!(r, Err(Error::SessionExpired { .. })),
            "{recipe:?}: {}",
            describe(&r)
        );
        wf.heal();
        no_key_of(
            backend,
            c.as_ref(),
            &name,
            w.lease(),
            &format!("{recipe:?}: the failed wait's key is gone"),
        )
        .await;
        held.release().await.unwrap();
    }
}

/// the predecessor is deleted and re-created under the same key by the same session
/// (same lease) between the waiter's read of it and the waiter's watch on it.
///
/// H holds; P waits (key kP); W waits behind P. Exactly when W is about to watch kP (a hook
/// on W's client), P's `lock()` is cancelled (its key withdrawn) and P locks again: kP is
/// re-created, now *newer* than W's key, and P waits for W. A waiter comparing keys only
/// finds "kP still exists", waits for kP, and deadlocks with P (each waits for the other)
/// even after H unlocks. Comparing create revisions, W sees kP is a new incarnation,
/// re-reads and waits for H. Expected order: H unlocks -> W acquires -> W unlocks -> P.
pub async fn predecessor_recreated_under_the_same_key_is_noticed(backend: &dyn TestBackend) {
    let name = unique("reincarnation");
    let c = backend.client().await;
    let h = new_session(backend).await;
    let p = new_session(backend).await;
    let gh = Mutex::new(&h, name.as_str()).lock().await.unwrap();
    let p_first = {
        let m = Mutex::new(&p, name.as_str());
        tokio::spawn(async move { m.lock().await })
    };
    let kp = lock_key(&name, p.lease());
    eventually(prompt(backend), "P queued", || async {
        c.get(kp.as_bytes()).await.unwrap().is_some()
    })
    .await;
    let first_rev = c.get(kp.as_bytes()).await.unwrap().unwrap().create_revision;

    type Wait = tokio::task::JoinHandle<coord_core::Result<coord_core::MutexGuard>>;
    let p_second: Arc<std::sync::Mutex<Option<Wait>>> = Arc::default();
    let fired = Arc::new(AtomicBool::new(false));
    // Set when the hook has seen kP re-created (P's second claim landed), not merely when
    // it spawned that claim: on a real server the claim takes a round trip or two.
    let recreated = Arc::new(AtomicBool::new(false));
    let hook = {
        let (kp, c, p, name, p_second, fired, recreated) = (
            kp.clone(),
            c.clone(),
            p.clone(),
            name.clone(),
            p_second.clone(),
            fired.clone(),
            recreated.clone(),
        );
        let p_first = Arc::new(std::sync::Mutex::new(Some(p_first)));
        Arc::new(move |req: &WatchRequest| {
            // W's watch covers kP (with its own key, on one stream).
            if !req.range.contains(kp.as_bytes()) || fired.swap(true, Ordering::SeqCst) {
                return None;
            }
            let (kp, c, p, name, p_second, p_first, recreated) = (
                kp.clone(),
                c.clone(),
                p.clone(),
                name.clone(),
                p_second.clone(),
                p_first.clone(),
                recreated.clone(),
            );
            Some(
                async move {
                    if let Some(t) = p_first.lock().unwrap().take() {
                        t.abort();
                    }
                    // P's cancelled lock() withdraws its key in the background...
                    for _ in 0..2000 {
                        if c.get(kp.as_bytes()).await.unwrap().is_none() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    // ...and P locks again: a new incarnation of the same key.
                    let m = Mutex::new(&p, name);
                    *p_second.lock().unwrap() = Some(tokio::spawn(async move { m.lock().await }));
                    for _ in 0..2000 {
                        if c.get(kp.as_bytes()).await.unwrap().is_some() {
                            recreated.store(true, Ordering::SeqCst);
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                .boxed(),
            )
        }) as super::WatchHook
    };
    let wc: Arc<dyn CoordinationBackend> =
        Arc::new(Spy::new(backend.client().await).with_watch_hook(hook));
    let w = session_with_ttl(&wc, backend.short_ttl()).await;
    let mw = Mutex::new(&w, name.as_str());
    let w_wait = tokio::spawn(async move { mw.lock().await });
    eventually(
        settle(backend),
        "W reached its watch on kP and P re-created kP",
        || async { recreated.load(Ordering::SeqCst) },
    )
    .await;
    let p_wait = p_second.lock().unwrap().take().unwrap();
    let kv = c.get(kp.as_bytes()).await.unwrap().expect("kP re-created");
    let w_rev = c
        .get(lock_key(&name, w.lease()).as_bytes())
        .await
        .unwrap()
        .expect("W queued")
        .create_revision;
    assert!(
        kv.create_revision > w_rev && w_rev > first_rev,
        "setup: kP re-created after W's key ({} > {w_rev} > {first_rev})",
        kv.create_revision
    );
    assert_blocks(backend, &w_wait, "W behind H").await;
    gh.unlock().await.unwrap();
    let gw = join_prompt(
        backend,
        w_wait,
        "W acquires after H (no deadlock with P's new key)",
    )
    .await
    .unwrap();
    assert_blocks(backend, &p_wait, "P's new incarnation waits for W").await;
    gw.unlock().await.unwrap();
    join_prompt(backend, p_wait, "P acquires after W")
        .await
        .unwrap()
        .unlock()
        .await
        .unwrap();
}

/// Catch-up (structural): every watch the recipes open while waiting starts "now" (or at a
/// revision above the store's current one), never in the past. etcd serves a watch whose
/// start revision is already in the past from a catch-up loop that runs every 100 ms; Go's
/// `waitDeletes` watches from the header revision of its `Get`, which is in the past by the
/// time the watch is made, so this test fails for it. The workload (contended mutex,
/// rwmutex, election with observe, semaphore) goes through a recording client.
pub async fn waiters_watch_from_now(backend: &dyn TestBackend) {
    let name = unique("from-now");
    let spies: Vec<Spy> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(Spy::new(backend.client().await));
        }
        v
    };
    let mut sessions = Vec::new();
    for spy in &spies {
        let client: Arc<dyn CoordinationBackend> = Arc::new(spy.clone());
        sessions.push(session_with_ttl(&client, backend.short_ttl()).await);
    }
    let mut tasks = Vec::new();
    for (i, s) in sessions.iter().enumerate() {
        let (s, name) = (s.clone(), name.clone());
        tasks.push(tokio::spawn(async move {
            let mut obs = Election::new(&s, format!("{name}/election")).observe();
            for round in 0..4 {
                let g = Mutex::new(&s, format!("{name}/mutex"))
                    .lock()
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
                g.unlock().await.unwrap();
                let rw = RwMutex::new(&s, format!("{name}/rw"));
                let g = if (i + round) % 2 == 0 {
                    rw.write().await
                } else {
                    rw.read().await
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
                g.unwrap().unlock().await.unwrap();
                let l = Election::new(&s, format!("{name}/election"))
                    .campaign("x")
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
                l.resign().await.unwrap();
                let p = Semaphore::new(&s, format!("{name}/sem"), 1)
                    .unwrap()
                    .acquire()
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
                p.release().await.unwrap();
            }
            // Drain what the observer saw (it watched throughout).
            while let Some(Some(_)) = obs.next().now_or_never() {}
        }));
    }
    tokio::time::timeout(settle(backend) * 4, futures::future::join_all(tasks))
        .await
        .expect("workload finishes")
        .into_iter()
        .for_each(|r| r.unwrap());
    let observed = KeyRange::prefix(format!("{name}/election/"));
    let mut waits = 0;
    for spy in &spies {
        for call in spy.calls() {
            if let SpyCall::Watch {
                request,
                current_revision,
            } = call
            {
                // Each wait opens one watch; the observers' watches are not waits.
                if request.range != observed {
                    waits += 1;
                }
                assert!(
                    !replays_history(request.start, current_revision),
                    "a recipe watched from the past ({:?} at store revision {current_revision}): \
                     etcd serves that from its 100 ms catch-up loop",
                    request
                );
            }
        }
    }
    assert!(waits >= 2, "the workload waited (only {waits} waits)");
}

/// Catch-up (timing): 40 lock handoffs between two contending sessions take well under the
/// 100 ms per handoff that a watch served by etcd's catch-up loop costs (Go's
/// `concurrency.Mutex` manages ~20 handoffs a second with two contenders). Meaningful on
/// real servers; on paused time it takes no time at all.
pub async fn handoffs_are_not_paced_by_watch_catch_up(backend: &dyn TestBackend) {
    const ROUNDS: usize = 20;
    let name = unique("pace");
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let s = new_session(backend).await;
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            let m = Mutex::new(&s, name);
            for _ in 0..ROUNDS {
                m.lock().await.unwrap().unlock().await.unwrap();
                tokio::task::yield_now().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed();
    let budget = Duration::from_millis(50) * (2 * ROUNDS) as u32;
    assert!(elapsed < budget, "{} handoffs took {elapsed:?}", 2 * ROUNDS);
}
