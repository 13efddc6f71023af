//! The Redis backend on a 3-master Redis Cluster (shared by every test of this binary, a
//! namespace per test), on real time: the whole conformance suite, and namespaces served by
//! different masters side by side.

mod cluster_support;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use cluster_support::shared_cluster;
use coord_core::{
    BackendExt as _, CoordinationBackend, Error, EventKind, Mutex, NO_LEASE, Session, WatchRequest,
    WatchStream,
};
use coord_redis::{RedisBackend, RedisOptions};
use futures::StreamExt as _;

mod conformance_suite {
    use crate::cluster_support::conformance::Redis;
    use crate::cluster_support::shared_cluster;

    coord_testkit::conformance_tests! {
        backend: match Redis::new(shared_cluster().await) {
            Some(redis) => redis,
            None => return,
        },
        clock: real,
    }
}

/// Bounds every wait on the cluster, so a hang fails instead of stalling the run.
const PATIENCE: Duration = Duration::from_secs(20);

/// Namespaces of this run, one per master, until `n` masters are covered: the test needs
/// namespaces whose hash tags land in slots of different masters.
async fn namespaces_on_distinct_masters(n: usize) -> Option<Vec<(String, String)>> {
    let shared = shared_cluster().await?;
    let mut by_master = BTreeMap::new();
    for _ in 0..64 {
        let ns = shared.fresh_namespace();
        let master = shared
            .cluster()
            .master_of_namespace(&ns)
            .await
            .expect("the fixture names the master of a namespace");
        by_master.entry(master).or_insert(ns);
        if by_master.len() == n {
            break;
        }
    }
    assert_eq!(
        by_master.len(),
        n,
        "64 namespaces all hashed to fewer than {n} masters: {by_master:?}"
    );
    Some(by_master.into_iter().map(|(m, ns)| (ns, m)).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn namespaces_on_different_masters_each_lock_unlock_and_watch() {
    let Some(namespaces) = namespaces_on_distinct_masters(2).await else {
        return;
    };
    assert_ne!(namespaces[0].1, namespaces[1].1);
    let shared = shared_cluster().await.expect("started above");
    for (ns, master) in &namespaces {
        let owner: Arc<dyn CoordinationBackend> = Arc::new(shared.connect(ns).await);
        let other: Arc<dyn CoordinationBackend> = Arc::new(shared.connect(ns).await);
        let mut watch = other
            .watch(WatchRequest::prefix(b"lock/".to_vec()))
            .await
            .unwrap_or_else(|e| panic!("watch {ns} on {master}: {e}"));

        let mut events = Events {
            watch: &mut watch,
            queued: VecDeque::new(),
            ns,
        };

        let session = Session::new(owner.clone()).await.unwrap();
        let contender = Session::new(other.clone()).await.unwrap();
        let guard = Mutex::new(&session, "lock").lock().await.unwrap();
        let key = guard.key().to_owned();
        assert_eq!(events.next().await, (EventKind::Put, key.clone()));

        // A try while held puts the contender's key, finds it is not first, withdraws it.
        match Mutex::new(&contender, "lock").try_lock().await {
            Err(Error::Locked { .. }) => {}
            other => panic!("{ns} on {master}: a held lock was taken: {other:?}"),
        }
        let (kind, contender_key) = events.next().await;
        assert_eq!(kind, EventKind::Put);
        assert_ne!(contender_key, key);
        assert_eq!(
            events.next().await,
            (EventKind::Delete, contender_key.clone())
        );

        guard.unlock().await.unwrap();
        assert_eq!(events.next().await, (EventKind::Delete, key));
        let again = Mutex::new(&contender, "lock").try_lock().await;
        let again = again.unwrap_or_else(|e| panic!("{ns} after unlock: {e}"));
        assert_eq!(again.key(), contender_key);
        assert_eq!(events.next().await, (EventKind::Put, contender_key.clone()));
        again.unlock().await.unwrap();
        assert_eq!(events.next().await, (EventKind::Delete, contender_key));

        // The namespace's stream is on the master the fixture named, and only there.
        let cluster = shared.cluster();
        for (i, endpoint) in cluster.endpoints().iter().enumerate() {
            let log_key = format!("{{{ns}}}:log");
            let answer = cluster.cli(i, &["EXISTS", &log_key]).await;
            let here = matches!(&answer, Ok(out) if out.trim() == "1");
            assert_eq!(here, endpoint == master, "{ns} on {endpoint}: {answer:?}");
        }
    }
}

/// A watch's events one by one, as (kind, key).
struct Events<'a> {
    watch: &'a mut WatchStream,
    queued: VecDeque<(EventKind, String)>,
    ns: &'a str,
}

impl Events<'_> {
    async fn next(&mut self) -> (EventKind, String) {
        while self.queued.is_empty() {
            let response = tokio::time::timeout(PATIENCE, self.watch.next())
                .await
                .unwrap_or_else(|_| panic!("{}: no watch event within {PATIENCE:?}", self.ns))
                .expect("the watch goes on")
                .unwrap_or_else(|e| panic!("{}: watch failed: {e}", self.ns));
            for event in response.events {
                let key = String::from_utf8(event.kv.key).expect("UTF-8 keys");
                self.queued.push_back((event.kind, key));
            }
        }
        self.queued.pop_front().expect("queued above")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn namespaces_on_different_masters_keep_their_own_revisions() {
    let Some(namespaces) = namespaces_on_distinct_masters(3).await else {
        return;
    };
    let shared = shared_cluster().await.expect("started above");
    let mut clients = Vec::new();
    for (ns, _) in &namespaces {
        clients.push(shared.connect(ns).await);
    }
    // Writes to the first namespace move its revision only.
    let before: Vec<_> =
        futures::future::try_join_all(clients.iter().map(|c| c.current_revision()))
            .await
            .unwrap();
    let mut last = before[0];
    for i in 0..3 {
        let revision = clients[0]
            .put(format!("k{i}").as_bytes(), b"v", NO_LEASE)
            .await
            .unwrap();
        assert!(revision > last, "{revision} after {last}");
        last = revision;
    }
    let after: Vec<_> = futures::future::try_join_all(clients.iter().map(|c| c.current_revision()))
        .await
        .unwrap();
    // Revisions may be sparse (time-floored), so the first namespace's is its last put's.
    assert_eq!(after[0], last, "{namespaces:?}");
    assert_eq!(after[1..], before[1..], "{namespaces:?}");
    assert!(clients[1].get(b"k0").await.unwrap().is_none());
    assert_eq!(clients[0].get(b"k2").await.unwrap().unwrap().value, b"v");
}

/// A watch's blocking read is on a cluster connection without a response timeout: a watch
/// that sees nothing for longer than one `XREAD BLOCK` (5 s) keeps going, even when the
/// request timeout is shorter than that.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_outlives_a_quiet_spell_longer_than_one_blocking_read() {
    let Some(shared) = shared_cluster().await else {
        return;
    };
    let ns = shared.fresh_namespace();
    let options = RedisOptions::parse_url(&format!("{}?request_timeout=1s", shared.url()))
        .and_then(|o| o.namespace(&ns))
        .unwrap();
    let client = RedisBackend::connect(options).await.unwrap();
    let mut watch = client
        .watch(WatchRequest::key(b"k".to_vec()))
        .await
        .unwrap();
    // Polled from now on, so the blocking read is in flight through the quiet spell.
    let next = tokio::spawn(async move { watch.next().await });
    tokio::time::sleep(Duration::from_secs(7)).await;
    let revision = client.put(b"k", b"late", NO_LEASE).await.unwrap();
    let response = tokio::time::timeout(PATIENCE, next)
        .await
        .expect("the watch answers after the quiet spell")
        .expect("the watch task does not panic")
        .expect("the watch goes on")
        .unwrap_or_else(|e| panic!("{ns}: watch failed after the quiet spell: {e}"));
    assert_eq!(response.revision, revision);
    assert_eq!(response.events.len(), 1, "{response:?}");
    assert_eq!(response.events[0].kv.value, b"late");
}
