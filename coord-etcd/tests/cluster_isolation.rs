//! A client connected to every member of a three-member etcd keeps working when one
//! member is cut off from the others (the testkit's peer proxies): its watches, which
//! that member can no longer feed, move to the others, and its reads do not wait for it.

mod support;

use std::sync::Arc;
use std::time::Duration;

use coord_core::{BackendExt, CoordinationBackend, Mutex, RangeRequest, Session};
use coord_etcd::{EtcdBackend, EtcdOptions};
use coord_testkit::EtcdCluster;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, timeout};

/// How long a read may take while a member is stuck: coord-etcd's read-retry window.
const READ_WINDOW: Duration = Duration::from_secs(5);

/// One cluster at a time: the scenarios measure delays of seconds on two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn proxied_cluster() -> Option<EtcdCluster> {
    EtcdCluster::builder()
        .peer_proxies(true)
        .start_or_skip()
        .await
}

async fn connect(urls: Vec<String>, namespace: &str) -> EtcdBackend {
    EtcdBackend::connect(EtcdOptions::new(urls).namespace(namespace))
        .await
        .expect("connect")
}

/// Eight sessions wait in line for a lock, on one client of all three members, so some of
/// their watches are on the member that is then isolated. That member stops receiving
/// the log, so those watches would wait forever for the deletes that free their turn:
/// etcd cancels them once the member has been leaderless for a few election timeouts
/// (the client asks it to, with `hasleader`), and coord-etcd resumes them on another
/// member. Every waiter then gets the lock soon after its predecessor lets go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_waiters_are_served_when_a_member_their_watches_used_is_isolated() {
    const WAITERS: usize = 8;
    const HANDOFF: Duration = Duration::from_secs(3);
    let _serial = SERIAL.lock().await;
    let Some(cluster) = proxied_cluster().await else {
        return;
    };
    let leader = cluster.leader().await.expect("a leader");
    let isolated = (leader + 1) % cluster.len();
    let client: Arc<dyn CoordinationBackend> =
        Arc::new(connect(cluster.urls(), cluster.namespace()).await);
    let observer = connect(vec![cluster.url(leader)], cluster.namespace()).await;
    let session = || async {
        Session::builder(client.clone())
            .ttl(Duration::from_secs(15))
            .start()
            .await
            .expect("session")
    };

    let holder_session = session().await;
    let holder = Mutex::new(&holder_session, "m").lock().await.expect("lock");
    let (served_tx, mut served) = mpsc::unbounded_channel();
    let mut sessions = Vec::new();
    for i in 0..WAITERS {
        let s = session().await;
        let m = Mutex::new(&s, "m");
        let served_tx = served_tx.clone();
        tokio::spawn(async move {
            let got = m.lock().await;
            let _ = served_tx.send((i, Instant::now(), got.is_ok()));
            if let Ok(guard) = got {
                // Hold it a moment, so that the next waiter's turn is its own handoff.
                sleep(Duration::from_millis(100)).await;
                let _ = guard.unlock().await;
            }
        });
        sessions.push(s);
        // In line one after the other.
        let deadline = Instant::now() + Duration::from_secs(10);
        while observer
            .range(RangeRequest::prefix("m/").count_only())
            .await
            .expect("count")
            .count
            < i as i64 + 2
        {
            assert!(Instant::now() < deadline, "waiter {i} never queued");
            sleep(Duration::from_millis(20)).await;
        }
    }
    // Each waiter watches its predecessor once its read found one.
    sleep(Duration::from_millis(500)).await;

    cluster.isolate_member(isolated);
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster
        .member_status(isolated)
        .await
        .is_ok_and(|s| s.has_leader)
    {
        assert!(
            Instant::now() < deadline,
            "the isolated member keeps a leader"
        );
        sleep(Duration::from_millis(50)).await;
    }
    // etcd cancels a leaderless member's `hasleader` streams after three election
    // timeouts without a leader.
    sleep(Duration::from_secs(4)).await;

    let holder_key = holder.key().to_owned();
    // An unlock whose first attempt fails is retried in the background until it lands.
    if let Err(e) = holder.unlock().await {
        eprintln!("unlock's first attempt failed: {e}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while observer
        .get(holder_key.as_bytes())
        .await
        .expect("get")
        .is_some()
    {
        assert!(
            Instant::now() < deadline,
            "the holder's unlock never landed"
        );
        sleep(Duration::from_millis(10)).await;
    }
    let mut freed = Instant::now();
    let mut order = Vec::new();
    for n in 0..WAITERS {
        let Ok(Some((i, at, ok))) = timeout(HANDOFF * 2, served.recv()).await else {
            panic!(
                "{} of {WAITERS} waiters still wait {:?} after the lock was last freed \
                 (served in order: {order:?}); keys: {:?}",
                WAITERS - n,
                freed.elapsed(),
                observer
                    .range(RangeRequest::prefix("m/").keys_only())
                    .await
                    .map(|r| r
                        .kvs
                        .iter()
                        .map(|kv| kv.key_str().into_owned())
                        .collect::<Vec<_>>())
            );
        };
        assert!(ok, "waiter {i} failed instead of getting the lock");
        let waited = at.duration_since(freed);
        assert!(
            waited < HANDOFF,
            "waiter {i} got the lock {waited:?} after it was freed (served so far: {order:?})"
        );
        order.push(i);
        // Freed by this waiter's unlock, about 100 ms after it got the lock.
        freed = at + Duration::from_millis(100);
    }
    assert_eq!(order, (0..WAITERS).collect::<Vec<_>>(), "in line order");
    cluster.rejoin_member(isolated);
    drop(sessions);
}

/// A member whose own peer link is cut still hears the leader, so it keeps accepting
/// reads, but cannot get them confirmed: etcd answers them only after its internal
/// timeout, longer than coord-etcd's read-retry window. Every read through a client of
/// that member and another one still answers within the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_answer_within_the_retry_window_when_a_member_is_stuck() {
    let _serial = SERIAL.lock().await;
    let Some(cluster) = proxied_cluster().await else {
        return;
    };
    let leader = cluster.leader().await.expect("a leader");
    let stuck = (leader + 1) % cluster.len();
    let other = (leader + 2) % cluster.len();
    let client = connect(
        vec![cluster.url(stuck), cluster.url(other)],
        cluster.namespace(),
    )
    .await;
    client
        .put(b"k", b"v", coord_core::NO_LEASE)
        .await
        .expect("put");

    cluster.peer_link(stuck).blackhole();
    assert!(
        cluster
            .member_status(stuck)
            .await
            .expect("status")
            .has_leader,
        "muted, it still hears the leader"
    );
    for n in 0..6 {
        let started = Instant::now();
        let read = timeout(READ_WINDOW + Duration::from_secs(5), client.get(b"k")).await;
        let took = started.elapsed();
        match read {
            Ok(Ok(Some(kv))) if kv.value == b"v" => {}
            other => panic!("read {n}: {other:?} after {took:?}"),
        }
        assert!(
            took < READ_WINDOW,
            "read {n} took {took:?}, past the read-retry window"
        );
    }
}
