//! coord's recipes across etcd outages, with the testkit's server fixtures: a single
//! server killed with SIGKILL and restarted on the same data dir and ports, and a
//! three-member cluster that loses its leader.
//!
//! Real time throughout: an outage is a real process being dead for a while, and leases
//! run out on the server's clock.

use std::sync::Arc;
use std::time::Duration;

use coord_core::{
    BackendExt, CoordinationBackend, Election, Error, EventKind, Mutex, NO_LEASE, Session,
    TxnRequest, WatchRequest, WatchResponse, WatchStream,
};
use coord_etcd::{EtcdBackend, EtcdOptions};
use coord_testkit::{EtcdCluster, EtcdServer};
use futures::StreamExt;
use tokio::time::{Instant, timeout};

/// A local server this test may kill and restart.
async fn local_etcd() -> Option<EtcdServer> {
    EtcdServer::builder().local_only().start_or_skip().await
}

async fn connect(urls: Vec<String>, namespace: &str) -> Arc<dyn CoordinationBackend> {
    Arc::new(
        EtcdBackend::connect(EtcdOptions::new(urls).namespace(namespace))
            .await
            .expect("connect"),
    )
}

async fn session(client: &Arc<dyn CoordinationBackend>, ttl: Duration) -> Session {
    Session::builder(client.clone())
        .ttl(ttl)
        .start()
        .await
        .expect("start a session")
}

/// Retries `op` while it fails with a retryable error (the server is still coming back),
/// for at most `within`.
async fn retrying<T, F, Fut>(within: Duration, what: &str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = coord_core::Result<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

async fn next(w: &mut WatchStream) -> WatchResponse {
    timeout(Duration::from_secs(10), w.next())
        .await
        .expect("a watch response within 10 s")
        .expect("the watch did not end")
        .expect("the watch did not fail")
}

/// (a) A session whose lease outlives the outage carries on: its keep-alive stream is
/// opened again after the restart, so the lease lives on well past the TTL that etcd
/// granted it anew when its leader came back, and its lock stays held throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_outlives_a_short_outage_and_keeps_its_lock() {
    let Some(etcd) = local_etcd().await else {
        return;
    };
    let ttl = Duration::from_secs(5);
    let client = connect(etcd.urls(), etcd.namespace()).await;
    let s = session(&client, ttl).await;
    let guard = Mutex::new(&s, "lock").lock().await.expect("lock");
    let token = guard.fencing_token();

    etcd.kill().await.expect("kill -9 etcd");
    etcd.restart().await.expect("restart etcd");
    let restarted = Instant::now();

    // etcd renews every lease by its TTL when a leader is elected after a restart: only
    // refreshes sent after the restart keep it alive for two TTLs more.
    tokio::select! {
        _ = s.lost() => panic!(
            "session lost {:?} after the restart",
            restarted.elapsed()
        ),
        _ = guard.lost() => panic!("lock lost {:?} after the restart", restarted.elapsed()),
        _ = tokio::time::sleep(ttl * 2) => {}
    }
    let other = connect(etcd.urls(), etcd.namespace()).await;
    let status = other
        .lease_time_to_live(s.lease())
        .await
        .expect("the lease still exists");
    assert!(
        status.remaining > Duration::ZERO,
        "lease refreshed: {status:?}"
    );
    let kv = other
        .get(guard.key().as_bytes())
        .await
        .expect("get")
        .expect("the lock key is still there");
    assert_eq!(kv.create_revision, token, "the same acquisition");
    assert!(
        other
            .txn(TxnRequest::new().when([guard.is_owner()]))
            .await
            .expect("txn")
            .succeeded,
        "the guard's ownership compare still holds"
    );
    let contender = session(&other, ttl).await;
    assert!(
        matches!(
            Mutex::new(&contender, "lock").try_lock().await,
            Err(Error::Locked { .. })
        ),
        "nobody else can take the lock"
    );
    guard.unlock().await.expect("unlock after the outage");
    let next_holder = Mutex::new(&contender, "lock")
        .try_lock()
        .await
        .expect("free after unlock");
    assert!(next_holder.fencing_token() > token);
    next_holder.unlock().await.unwrap();
    s.close().await.unwrap();
    contender.close().await.unwrap();
}

/// (b) An open watch resumes from its next revision: events written right after the
/// restart, before the watch could have been opened again, all arrive, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_watch_resumes_without_losing_events_written_after_restart() {
    let Some(etcd) = local_etcd().await else {
        return;
    };
    let watcher = connect(etcd.urls(), etcd.namespace()).await;
    let writer = connect(etcd.urls(), etcd.namespace()).await;
    let mut w = watcher
        .watch(WatchRequest::prefix("w/"))
        .await
        .expect("watch");
    let r0 = writer.put(b"w/0", b"before", NO_LEASE).await.unwrap();
    assert_eq!(next(&mut w).await.revision, r0);

    etcd.kill().await.expect("kill -9 etcd");
    // While it is down, calls fail at once with the retryable kind, reads and writes alike.
    for err in [
        timeout(
            Duration::from_secs(5),
            writer.put(b"w/x", b"down", NO_LEASE),
        )
        .await
        .expect("a write to a dead server fails at once")
        .expect_err("etcd is down"),
        timeout(Duration::from_secs(5), writer.current_revision())
            .await
            .expect("a read from a dead server fails at once")
            .expect_err("etcd is down"),
    ] {
        assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    }
    etcd.restart().await.expect("restart etcd");
    // Written as soon as the server takes writes, while the watcher's stream is broken.
    let mut written = Vec::new();
    for i in 1..=5 {
        let key = format!("w/{i}");
        let rev = retrying(Duration::from_secs(10), "put after restart", || {
            writer.put(key.as_bytes(), b"after", NO_LEASE)
        })
        .await;
        written.push((key, rev));
    }
    assert_eq!(written[0].1, r0 + 1, "no other write happened in between");
    for (key, rev) in &written {
        let resp = next(&mut w).await;
        assert_eq!(resp.revision, *rev, "in order, none lost, none repeated");
        assert_eq!(resp.events.len(), 1);
        assert_eq!(resp.events[0].kind, EventKind::Put);
        assert_eq!(resp.events[0].kv.key, key.as_bytes());
    }
    // The resumed watch is live, not a replay that stops.
    let r6 = writer.put(b"w/6", b"live", NO_LEASE).await.unwrap();
    assert_eq!(next(&mut w).await.revision, r6);
}

/// (c) A session whose lease runs out during a longer outage fires `lost()` at its
/// client-side deadline, within the TTL of the last refresh; after the restart its lock is
/// gone and another session acquires it with a higher fencing token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_lost_during_a_long_outage() {
    let Some(etcd) = local_etcd().await else {
        return;
    };
    let ttl = Duration::from_secs(2);
    let client = connect(etcd.urls(), etcd.namespace()).await;
    let s = session(&client, ttl).await;
    let guard = Mutex::new(&s, "lock").lock().await.expect("lock");
    let token = guard.fencing_token();

    etcd.kill().await.expect("kill -9 etcd");
    let killed = Instant::now();
    timeout(ttl, guard.lost())
        .await
        .expect("the guard's lost() fires within one TTL of the last refresh");
    assert!(s.is_lost());
    // Keep the server down past the lease's nominal end.
    tokio::time::sleep((ttl * 2).saturating_sub(killed.elapsed())).await;
    etcd.restart().await.expect("restart etcd");

    // etcd grants every lease one more TTL when its leader comes back; nobody refreshes
    // this one any more, so it ends then and a waiter takes the lock.
    let other = connect(etcd.urls(), etcd.namespace()).await;
    let waiter = retrying(Duration::from_secs(10), "session after restart", || {
        Session::builder(other.clone()).ttl(ttl).start()
    })
    .await;
    let next_holder = timeout(ttl * 3, Mutex::new(&waiter, "lock").lock())
        .await
        .expect("the lost session's lock is released by the server")
        .expect("lock");
    assert!(next_holder.fencing_token() > token);
    assert!(
        !other
            .txn(TxnRequest::new().when([guard.is_owner()]))
            .await
            .unwrap()
            .succeeded,
        "the lost guard no longer owns the lock"
    );
    assert!(matches!(
        other.lease_time_to_live(s.lease()).await,
        Err(Error::LeaseNotFound { .. })
    ));
    next_holder.unlock().await.unwrap();
    waiter.close().await.unwrap();
}

/// The index of the member that leads the cluster, as the members themselves report.
async fn leader_index(cluster: &EtcdCluster) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for i in 0..cluster.len() {
            let Ok(mut c) = etcd_client::Client::connect([cluster.url(i)], None).await else {
                continue;
            };
            if let Ok(status) = c.status().await {
                let me = status.header().map(|h| h.member_id());
                if status.leader() != 0 && Some(status.leader()) == me {
                    return i;
                }
            }
        }
        assert!(Instant::now() < deadline, "no member reports being leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Which member of the cluster a test kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    Leader,
    Follower,
}

/// (d) A client connected with every member's endpoint keeps its mutex, election and
/// sessions when the leader member is killed: the two others elect a new leader and
/// carry on, the holder keeps its lock, and handoffs to waiters blocked across the
/// failover work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_survives_losing_its_leader() {
    cluster_survives_losing(Victim::Leader).await;
}

/// (d) The same when a follower dies: whatever streams and calls the client had on it
/// move to the two others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_survives_losing_a_follower() {
    cluster_survives_losing(Victim::Follower).await;
}

async fn cluster_survives_losing(victim: Victim) {
    let Some(cluster) = EtcdCluster::start_or_skip().await else {
        return;
    };
    let ttl = Duration::from_secs(5);
    let urls = cluster.urls();
    let ns = cluster.namespace().to_owned();
    let (ca, cb) = (
        connect(urls.clone(), &ns).await,
        connect(urls.clone(), &ns).await,
    );
    let (sa, sb) = (session(&ca, ttl).await, session(&cb, ttl).await);
    let (sc, sd) = (session(&ca, ttl).await, session(&cb, ttl).await);

    let held = Mutex::new(&sa, "m").lock().await.expect("lock");
    let lead = Election::new(&sb, "e")
        .campaign("b")
        .await
        .expect("campaign");
    let waiting_lock = tokio::spawn({
        let m = Mutex::new(&sc, "m");
        async move { m.lock().await }
    });
    let waiting_campaign = tokio::spawn({
        let e = Election::new(&sd, "e");
        async move { e.campaign("d").await }
    });
    let mut observe = Election::new(&sa, "e").observe();
    let first = timeout(Duration::from_secs(5), observe.next())
        .await
        .expect("observe reports the leader")
        .unwrap()
        .unwrap();
    assert_eq!(first.leader.unwrap().value, b"b");

    let leader = leader_index(&cluster).await;
    let killed_member = match victim {
        Victim::Leader => leader,
        Victim::Follower => (leader + 1) % cluster.len(),
    };
    cluster
        .kill_member(killed_member)
        .await
        .expect("kill a member");
    let killed = Instant::now();
    // A write through the survivors works (once they have elected a new leader).
    retrying(Duration::from_secs(15), "write after the failover", || {
        ca.put(b"probe", b"x", NO_LEASE)
    })
    .await;
    let now_leading = leader_index(&cluster).await;
    assert_ne!(now_leading, killed_member, "{victim:?}");
    if victim == Victim::Follower {
        assert_eq!(now_leading, leader, "losing a follower keeps the leader");
    }

    // Nothing was lost over more than a TTL across the failover.
    tokio::select! {
        _ = sa.lost() => panic!("holder's session lost"),
        _ = sb.lost() => panic!("leader's session lost"),
        _ = sc.lost() => panic!("lock waiter's session lost"),
        _ = sd.lost() => panic!("candidate's session lost"),
        _ = tokio::time::sleep((ttl + Duration::from_secs(1)).saturating_sub(killed.elapsed())) => {}
    }
    if waiting_lock.is_finished() {
        let r = waiting_lock.await.unwrap().map(|g| g.key().to_owned());
        panic!("the lock waiter should still wait: {r:?}");
    }
    if waiting_campaign.is_finished() {
        let r = waiting_campaign.await.unwrap().map(|l| l.key().to_owned());
        panic!("the candidate should still wait: {r:?}");
    }
    assert!(
        ca.txn(TxnRequest::new().when([held.is_owner(), lead.is_leader()]))
            .await
            .expect("txn")
            .succeeded,
        "the holder and the leader kept their keys"
    );

    let token = held.fencing_token();
    held.unlock().await.expect("unlock through the survivors");
    let next_holder = timeout(Duration::from_secs(5), waiting_lock)
        .await
        .expect("the waiter acquires after the unlock")
        .unwrap()
        .expect("lock");
    assert!(next_holder.fencing_token() > token);

    lead.proclaim("b2")
        .await
        .expect("proclaim through the survivors");
    lead.resign().await.expect("resign through the survivors");
    let next_leader = timeout(Duration::from_secs(5), waiting_campaign)
        .await
        .expect("the candidate is elected after the resignation")
        .unwrap()
        .expect("campaign");
    let mut seen = Vec::new();
    while seen.last().map(Vec::as_slice) != Some(b"d".as_slice()) {
        let update = timeout(Duration::from_secs(5), observe.next())
            .await
            .expect("observe keeps reporting across the failover")
            .unwrap()
            .unwrap();
        if let Some(kv) = update.leader {
            seen.push(kv.value);
        }
    }
    assert!(
        seen.iter().any(|v| v == b"b2"),
        "the proclamation was observed: {seen:?}"
    );
    next_leader.resign().await.unwrap();
    next_holder.unlock().await.unwrap();
    for s in [sa, sb, sc, sd] {
        s.close().await.unwrap();
    }
}
