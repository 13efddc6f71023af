//! `Semaphore` scenarios (no etcd counterpart: etcd has no semaphore recipe).

use std::sync::Arc;
use std::time::Duration;

use coord_core::{Error, Semaphore};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{
    TestBackend, assert_blocks, join_prompt, keys_under, new_session, no_key_of, prompt, quiet,
    unique,
};

/// N permits: N sessions acquire at once, the N+1th waits (and `try_acquire` gives
/// `Locked`); a released permit admits the waiter. All tokens are distinct.
pub async fn semaphore_permits_admit_next_and_tokens_are_unique(backend: &dyn TestBackend) {
    const N: usize = 3;
    let name = unique("sem");
    let mut sessions = Vec::new();
    for _ in 0..=N + 1 {
        sessions.push(new_session(backend).await);
    }
    assert!(
        Semaphore::new(&sessions[0], name.as_str(), 0).is_err(),
        "zero permits refused"
    );
    let mut permits = Vec::new();
    for s in &sessions[..N] {
        let sem = Semaphore::new(s, name.as_str(), N).unwrap();
        let p = tokio::time::timeout(prompt(backend), sem.acquire())
            .await
            .expect("a free permit is taken at once")
            .unwrap();
        permits.push(p);
    }
    let last = Semaphore::new(&sessions[N], name.as_str(), N).unwrap();
    assert!(matches!(
        last.try_acquire().await,
        Err(Error::Locked { .. })
    ));
    let waiter = tokio::spawn(async move { last.acquire().await });
    assert_blocks(backend, &waiter, "N+1th waits").await;
    let extra = Semaphore::new(&sessions[N + 1], name.as_str(), N).unwrap();
    let extra_wait = tokio::spawn(async move { extra.acquire().await });
    assert_blocks(backend, &extra_wait, "N+2th waits").await;
    let released = permits.remove(1);
    released.release().await.unwrap();
    let p = join_prompt(backend, waiter, "the N+1th gets the released permit")
        .await
        .unwrap();
    assert_blocks(backend, &extra_wait, "N+2th still waits (FIFO)").await;
    permits.push(p);
    let mut tokens: Vec<_> = permits.iter().map(|p| p.fencing_token()).collect();
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), N, "tokens are unique");
    permits.remove(0).release().await.unwrap();
    join_prompt(backend, extra_wait, "N+2th after another release")
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    for p in permits {
        p.release().await.unwrap();
    }
    let c = backend.client().await;
    assert!(keys_under(c.as_ref(), &name).await.is_empty());
}

/// Eight sessions contend for 3 permits at random; at no moment do more than 3 hold, and
/// every holder's token is distinct.
pub async fn semaphore_never_exceeds_permits_under_contention(backend: &dyn TestBackend) {
    const N: usize = 3;
    const SESSIONS: u64 = 8;
    let name = unique("sem-contention");
    let held = Arc::new(std::sync::Mutex::new((0usize, 0usize, Vec::new())));
    let mut tasks = Vec::new();
    for i in 0..SESSIONS {
        let s = new_session(backend).await;
        let (name, held) = (name.clone(), held.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(0x5e4a_0000 + i);
            let sem = Semaphore::new(&s, name, N).unwrap();
            for _ in 0..10 {
                let p = sem.acquire().await.unwrap();
                {
                    let mut h = held.lock().unwrap();
                    h.0 += 1;
                    assert!(h.0 <= N, "{} holders of {N} permits", h.0);
                    h.1 = h.1.max(h.0);
                    h.2.push(p.fencing_token());
                }
                tokio::time::sleep(Duration::from_millis(rng.random_range(1..15))).await;
                held.lock().unwrap().0 -= 1;
                p.release().await.unwrap();
            }
        }));
    }
    tokio::time::timeout(prompt(backend) * 20, futures::future::join_all(tasks))
        .await
        .expect("all finish")
        .into_iter()
        .for_each(|r| r.unwrap());
    let h = held.lock().unwrap();
    assert_eq!(h.1, N, "the permits were used in parallel");
    let mut tokens = h.2.clone();
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), h.2.len(), "tokens are unique");
}

/// Cancel safety: dropping an `acquire()` future mid-wait withdraws its key: no key is left
/// and the next live waiter gets the released permit.
pub async fn semaphore_dropped_acquire_leaves_no_key(backend: &dyn TestBackend) {
    let name = unique("sem-drop");
    let (a, b, d) = (
        new_session(backend).await,
        new_session(backend).await,
        new_session(backend).await,
    );
    let c = backend.client().await;
    let pa = Semaphore::new(&a, name.as_str(), 1)
        .unwrap()
        .acquire()
        .await
        .unwrap();
    let sb = Semaphore::new(&b, name.as_str(), 1).unwrap();
    assert!(
        tokio::time::timeout(quiet(backend), sb.acquire())
            .await
            .is_err()
    );
    no_key_of(
        backend,
        c.as_ref(),
        &name,
        b.lease(),
        "dropped acquire leaves no key",
    )
    .await;
    let r = sb.acquire_timeout(Duration::from_millis(100)).await;
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    no_key_of(
        backend,
        c.as_ref(),
        &name,
        b.lease(),
        "timed-out acquire leaves no key",
    )
    .await;
    let sd = Semaphore::new(&d, name.as_str(), 1).unwrap();
    let wait = tokio::spawn(async move { sd.acquire().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    pa.release().await.unwrap();
    join_prompt(backend, wait, "next live waiter")
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
}
