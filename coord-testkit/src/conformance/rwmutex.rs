//! `RwMutex` scenarios (etcd's `testRWMutex` and stronger FIFO variants).

use std::sync::Arc;
use std::time::Duration;

use coord_core::{Error, RwMode, RwMutex};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{TestBackend, assert_blocks, join_prompt, new_session, prompt, unique};

#[derive(Default)]
struct Occupancy {
    readers: usize,
    writers: usize,
    max_readers: usize,
}

/// From etcd's own tests (testRWMutex): five sessions take random read and write locks; a
/// writer never coexists with a reader or another writer, and all finish in time.
pub async fn random_readers_and_writers_never_overlap(backend: &dyn TestBackend) {
    const SESSIONS: u64 = 5;
    const ROUNDS: usize = 12;
    let name = unique("rw-random");
    let occ = Arc::new(std::sync::Mutex::new(Occupancy::default()));
    let mut tasks = Vec::new();
    for i in 0..SESSIONS {
        let s = new_session(backend).await;
        let (name, occ) = (name.clone(), occ.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(0x5eed_0011 + i);
            let rw = RwMutex::new(&s, name);
            for _ in 0..ROUNDS {
                let write = rng.random_bool(0.4);
                let g = if write {
                    rw.write().await
                } else {
                    rw.read().await
                }
                .unwrap();
                {
                    let mut o = occ.lock().unwrap();
                    if write {
                        assert_eq!((o.readers, o.writers), (0, 0), "writer overlaps");
                        o.writers += 1;
                    } else {
                        assert_eq!(o.writers, 0, "reader overlaps a writer");
                        o.readers += 1;
                        o.max_readers = o.max_readers.max(o.readers);
                    }
                }
                tokio::time::sleep(Duration::from_millis(rng.random_range(1..20))).await;
                {
                    let mut o = occ.lock().unwrap();
                    if write {
                        o.writers -= 1;
                    } else {
                        o.readers -= 1;
                    }
                }
                g.unlock().await.unwrap();
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..5))).await;
            }
        }));
    }
    tokio::time::timeout(prompt(backend) * 20, futures::future::join_all(tasks))
        .await
        .expect("all readers and writers finish")
        .into_iter()
        .for_each(|r| r.unwrap());
}

/// Readers share: a second reader acquires at once while the first holds.
pub async fn rwmutex_readers_share(backend: &dyn TestBackend) {
    let name = unique("rw-share");
    let (a, b, w) = (
        new_session(backend).await,
        new_session(backend).await,
        new_session(backend).await,
    );
    let ra = RwMutex::new(&a, name.as_str()).read().await.unwrap();
    let rb = tokio::time::timeout(prompt(backend), RwMutex::new(&b, name.as_str()).read())
        .await
        .expect("a second reader does not wait")
        .unwrap();
    assert_eq!(rb.mode(), RwMode::Read);
    assert!(matches!(
        RwMutex::new(&w, name.as_str()).try_write().await,
        Err(Error::Locked { .. })
    ));
    ra.unlock().await.unwrap();
    rb.unlock().await.unwrap();
    let gw = RwMutex::new(&w, name.as_str()).try_write().await.unwrap();
    assert_eq!(gw.key(), format!("{name}/write/{:x}", w.lease()));
    gw.unlock().await.unwrap();
}

/// FIFO (no writer starvation): reader R1 holds; writer W queues; a newer reader R2 must
/// wait behind the older writer W, although only a reader holds. When R1 unlocks W gets
/// the lock; when W unlocks R2 gets it.
pub async fn rwmutex_reader_waits_behind_older_writer(backend: &dyn TestBackend) {
    let name = unique("rw-fifo");
    let (r1s, ws, r2s) = (
        new_session(backend).await,
        new_session(backend).await,
        new_session(backend).await,
    );
    let r1 = RwMutex::new(&r1s, name.as_str()).read().await.unwrap();
    let rw = RwMutex::new(&ws, name.as_str());
    let w = tokio::spawn(async move { rw.write().await });
    assert_blocks(backend, &w, "writer behind reader").await;
    let rr = RwMutex::new(&r2s, name.as_str());
    assert!(matches!(rr.try_read().await, Err(Error::Locked { .. })));
    let r2 = tokio::spawn(async move { rr.read().await });
    assert_blocks(backend, &r2, "reader behind an older writer").await;
    r1.unlock().await.unwrap();
    let gw = join_prompt(backend, w, "writer after the reader")
        .await
        .unwrap();
    assert_blocks(backend, &r2, "reader while the writer holds").await;
    assert!(gw.fencing_token() > 0);
    gw.unlock().await.unwrap();
    join_prompt(backend, r2, "reader after the writer")
        .await
        .unwrap()
        .unlock()
        .await
        .unwrap();
}

/// A writer waits for every older reader; readers queued after it wait for it.
pub async fn rwmutex_writer_waits_for_readers(backend: &dyn TestBackend) {
    let name = unique("rw-writer");
    let (a, b, w) = (
        new_session(backend).await,
        new_session(backend).await,
        new_session(backend).await,
    );
    let ra = RwMutex::new(&a, name.as_str()).read().await.unwrap();
    let rb = RwMutex::new(&b, name.as_str()).read().await.unwrap();
    let rw = RwMutex::new(&w, name.as_str());
    let wt = tokio::spawn(async move {
        rw.lock_timeout(RwMode::Write, Duration::from_secs(3600))
            .await
    });
    assert_blocks(backend, &wt, "writer behind two readers").await;
    ra.unlock().await.unwrap();
    assert_blocks(backend, &wt, "writer behind one reader").await;
    rb.unlock().await.unwrap();
    let g = join_prompt(backend, wt, "writer after both readers")
        .await
        .unwrap();
    assert_eq!(g.mode(), RwMode::Write);
    g.unlock().await.unwrap();
}
