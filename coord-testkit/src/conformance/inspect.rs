//! A look inside each primitive ([`coord_core::inspect`]): every backend shows the same
//! holders and waiters, in order, with their fencing tokens and leases.

use std::time::Duration;

use coord_core::{
    BackendExt, Election, Error, LeaseState, Mutex, NameStatus, Participant, PrimitiveKind, RwMode,
    RwMutex, Semaphore, Session, inspect,
};

use super::{TestBackend, assert_blocks, eventually, new_session, prompt, unique};

fn keys(ps: &[Participant]) -> Vec<String> {
    ps.iter().map(Participant::key).collect()
}

/// Waits until `status()` shows `waiters` waiters (the spawned acquisitions have queued).
async fn until_waiters<F, Fut>(backend: &dyn TestBackend, waiters: usize, mut status: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = NameStatus>,
{
    eventually(prompt(backend) * 4, "the waiters queued", || {
        let s = status();
        async move { s.await.waiters.len() == waiters }
    })
    .await;
}

/// The same kind, holders and waiters (the revision and the time left on leases move on
/// between two reads).
fn assert_same_view(a: &NameStatus, b: &NameStatus, what: &str) {
    assert_eq!(a.kind, b.kind, "{what}");
    assert_eq!(keys(&a.holders), keys(&b.holders), "{what}");
    assert_eq!(keys(&a.waiters), keys(&b.waiters), "{what}");
}

/// The participant's lease is `session`'s, alive, with some but no more than the granted
/// TTL left.
fn assert_lease_of(p: &Participant, session: &Session) {
    assert_eq!(p.lease_id(), Some(session.lease()), "{}: lease", p.key());
    match p.lease {
        LeaseState::Live { granted, remaining } => {
            assert_eq!(granted, session.ttl(), "{}: granted TTL", p.key());
            assert!(
                remaining <= granted && remaining > Duration::ZERO,
                "{}: {remaining:?} left of {granted:?}",
                p.key()
            );
        }
        other => panic!("{}: lease {other:?}, not live", p.key()),
    }
}

/// A lock: the holder with its key, token and lease, then the waiters in the order they
/// queued; after the holder unlocks, the first waiter holds and the second still waits.
pub async fn inspect_lock_shows_holder_then_waiters_in_order(backend: &dyn TestBackend) {
    let name = unique("inspect-lock");
    let (a, b, c) = (
        new_session(backend).await,
        new_session(backend).await,
        new_session(backend).await,
    );
    let view = Mutex::new(&a, name.as_str());
    assert!(view.status().await.unwrap().is_free(), "free before");
    let held = view.lock().await.unwrap();
    let b_lock = Mutex::new(&b, name.as_str());
    let b_wait = tokio::spawn(async move { b_lock.lock().await });
    until_waiters(backend, 1, || async { view.status().await.unwrap() }).await;
    let c_lock = Mutex::new(&c, name.as_str());
    let c_wait = tokio::spawn(async move { c_lock.lock().await });
    until_waiters(backend, 2, || async { view.status().await.unwrap() }).await;

    let s = view.status().await.unwrap();
    assert_eq!(s.kind, PrimitiveKind::Lock);
    assert_eq!(keys(&s.holders), [held.key()]);
    assert_eq!(s.holders[0].fencing_token(), held.fencing_token());
    assert_lease_of(&s.holders[0], &a);
    let expected = [
        coord_core::lock_key(&name, b.lease()),
        coord_core::lock_key(&name, c.lease()),
    ];
    assert_eq!(
        keys(&s.waiters),
        expected,
        "waiters in the order they queued"
    );
    assert_lease_of(&s.waiters[0], &b);
    assert_lease_of(&s.waiters[1], &c);
    assert!(s.waiters[0].fencing_token() < s.waiters[1].fencing_token());
    assert!(s.revision >= s.waiters[1].fencing_token());
    let guessed = inspect(a.backend().as_ref(), &name, None).await.unwrap();
    assert_same_view(&guessed, &s, "an empty-valued key reads as a lock");

    held.unlock().await.unwrap();
    let b_guard = tokio::time::timeout(prompt(backend), b_wait)
        .await
        .expect("b is served after the unlock")
        .unwrap()
        .unwrap();
    let s = view.status().await.unwrap();
    assert_eq!(keys(&s.holders), [b_guard.key()]);
    assert_eq!(s.holders[0].fencing_token(), b_guard.fencing_token());
    assert_eq!(keys(&s.waiters), [expected[1].clone()]);
    b_guard.unlock().await.unwrap();
    tokio::time::timeout(prompt(backend), c_wait)
        .await
        .expect("c is served")
        .unwrap()
        .unwrap()
        .unlock()
        .await
        .unwrap();
    assert!(view.status().await.unwrap().is_free(), "free after");
}

/// A read/write lock by the recipe's rules: readers hold while no older writer exists, a
/// writer only as the oldest key; a reader behind a queued writer waits behind it.
pub async fn inspect_rw_lock_shows_readers_and_writers_held_and_queued(backend: &dyn TestBackend) {
    let name = unique("inspect-rw");
    let (a, b, c, d) = (
        new_session(backend).await,
        new_session(backend).await,
        new_session(backend).await,
        new_session(backend).await,
    );
    let view = RwMutex::new(&a, name.as_str());
    let r1 = view.read().await.unwrap();
    let r2 = RwMutex::new(&b, name.as_str()).read().await.unwrap();
    let writer = RwMutex::new(&c, name.as_str());
    let w_wait = tokio::spawn(async move { writer.write().await });
    until_waiters(backend, 1, || async { view.status().await.unwrap() }).await;
    let reader = RwMutex::new(&d, name.as_str());
    let r3_wait = tokio::spawn(async move { reader.read().await });
    until_waiters(backend, 2, || async { view.status().await.unwrap() }).await;

    let s = view.status().await.unwrap();
    assert_eq!(s.kind, PrimitiveKind::RwLock);
    assert_eq!(keys(&s.holders), [r1.key(), r2.key()]);
    assert!(s.holders.iter().all(|p| p.mode == Some(RwMode::Read)));
    let modes: Vec<_> = s.waiters.iter().map(|p| p.mode).collect();
    assert_eq!(modes, [Some(RwMode::Write), Some(RwMode::Read)]);
    assert_lease_of(&s.waiters[0], &c);
    assert_lease_of(&s.waiters[1], &d);
    let guessed = inspect(a.backend().as_ref(), &name, None).await.unwrap();
    assert_same_view(
        &guessed,
        &s,
        "read/ and write/ keys read as a read/write lock",
    );

    r1.unlock().await.unwrap();
    assert_blocks(backend, &w_wait, "the writer waits for the second reader").await;
    r2.unlock().await.unwrap();
    let w = tokio::time::timeout(prompt(backend), w_wait)
        .await
        .expect("the writer is served")
        .unwrap()
        .unwrap();
    let s = view.status().await.unwrap();
    assert_eq!(keys(&s.holders), [w.key()]);
    assert_eq!(s.holders[0].mode, Some(RwMode::Write));
    assert_eq!(
        s.waiters.len(),
        1,
        "the reader still waits behind the writer"
    );
    w.unlock().await.unwrap();
    let r3 = tokio::time::timeout(prompt(backend), r3_wait)
        .await
        .expect("the last reader is served")
        .unwrap()
        .unwrap();
    let s = view.status().await.unwrap();
    assert_eq!(keys(&s.holders), [r3.key()]);
    assert!(s.waiters.is_empty());
    r3.unlock().await.unwrap();
}

/// A semaphore of two permits: the two oldest hold, the third waits; a release lets it in.
pub async fn inspect_semaphore_shows_the_oldest_permits_as_holders(backend: &dyn TestBackend) {
    let name = unique("inspect-sem");
    let (a, b, c) = (
        new_session(backend).await,
        new_session(backend).await,
        new_session(backend).await,
    );
    let view = Semaphore::new(&a, name.as_str(), 2).unwrap();
    let pa = view.acquire().await.unwrap();
    let pb = Semaphore::new(&b, name.as_str(), 2)
        .unwrap()
        .acquire()
        .await
        .unwrap();
    let third = Semaphore::new(&c, name.as_str(), 2).unwrap();
    let c_wait = tokio::spawn(async move { third.acquire().await });
    until_waiters(backend, 1, || async { view.status().await.unwrap() }).await;

    let s = view.status().await.unwrap();
    assert_eq!(s.kind, PrimitiveKind::Semaphore { permits: 2 });
    assert_eq!(keys(&s.holders), [pa.key(), pb.key()]);
    assert_eq!(keys(&s.waiters), [coord_core::lock_key(&name, c.lease())]);
    assert_lease_of(&s.waiters[0], &c);

    pa.release().await.unwrap();
    let pc = tokio::time::timeout(prompt(backend), c_wait)
        .await
        .expect("the waiter gets the released permit")
        .unwrap()
        .unwrap();
    let s = view.status().await.unwrap();
    assert_eq!(keys(&s.holders), [pb.key(), pc.key()]);
    assert!(s.waiters.is_empty());
    pb.release().await.unwrap();
    pc.release().await.unwrap();
}

/// An election's participants: the leader with its proposal, then the candidates in the
/// order they would lead, each with theirs; after the leader resigns the next one leads.
pub async fn election_participants_show_leader_then_candidates(backend: &dyn TestBackend) {
    let name = unique("inspect-elect");
    let (a, b, c) = (
        new_session(backend).await,
        new_session(backend).await,
        new_session(backend).await,
    );
    let view = Election::new(&a, name.as_str());
    let leading = view.campaign("node-a").await.unwrap();
    let eb = Election::new(&b, name.as_str());
    let b_wait = tokio::spawn(async move { eb.campaign("node-b").await });
    until_waiters(backend, 1, || async { view.participants().await.unwrap() }).await;
    let ec = Election::new(&c, name.as_str());
    let c_wait = tokio::spawn(async move { ec.campaign("node-c").await });
    until_waiters(backend, 2, || async { view.participants().await.unwrap() }).await;

    let s = view.participants().await.unwrap();
    assert_eq!(s.kind, PrimitiveKind::Election);
    let leader = s.leader().expect("a leader");
    assert_eq!(leader.key(), leading.key());
    assert_eq!(leader.value(), b"node-a");
    assert_eq!(leader.fencing_token(), leading.rev());
    assert_lease_of(leader, &a);
    let proposals: Vec<_> = s.waiters.iter().map(|p| p.value().to_vec()).collect();
    assert_eq!(proposals, [b"node-b".to_vec(), b"node-c".to_vec()]);
    let guessed = inspect(a.backend().as_ref(), &name, None).await.unwrap();
    assert_same_view(&guessed, &s, "proposals read as an election");

    leading.resign().await.unwrap();
    let next = tokio::time::timeout(prompt(backend), b_wait)
        .await
        .expect("b leads after the resignation")
        .unwrap()
        .unwrap();
    let s = view.participants().await.unwrap();
    assert_eq!(
        s.leader().map(Participant::key),
        Some(next.key().to_owned())
    );
    assert_eq!(s.waiters.len(), 1);
    next.resign().await.unwrap();
    tokio::time::timeout(prompt(backend), c_wait)
        .await
        .expect("c leads")
        .unwrap()
        .unwrap()
        .resign()
        .await
        .unwrap();
}

/// Only a name's own keys count (not those of a deeper name), a key without a lease says
/// so, and a name that is empty or ends with `/` is refused.
pub async fn inspect_counts_only_direct_children_and_refuses_bad_names(backend: &dyn TestBackend) {
    let name = unique("inspect-edges");
    let a = new_session(backend).await;
    let client = a.backend().clone();
    let deeper = Mutex::new(&a, format!("{name}/sub")).lock().await.unwrap();
    let s = inspect(client.as_ref(), &name, None).await.unwrap();
    assert!(
        s.is_free(),
        "a deeper name's holder is not this name's: {s:?}"
    );

    let bare = format!("{name}/no-lease");
    client
        .put(bare.as_bytes(), b"", coord_core::NO_LEASE)
        .await
        .unwrap();
    let s = inspect(client.as_ref(), &name, None).await.unwrap();
    assert_eq!(keys(&s.holders), [bare.as_str()]);
    assert_eq!(s.holders[0].lease, LeaseState::NoLease);
    assert_eq!(s.holders[0].lease_id(), None);
    client
        .delete(coord_core::KeyRange::key(bare.as_str()))
        .await
        .unwrap();

    for bad in [String::new(), format!("{name}/")] {
        let e = inspect(client.as_ref(), &bad, None).await.unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{bad:?}: {e}");
    }
    deeper.unlock().await.unwrap();
}
