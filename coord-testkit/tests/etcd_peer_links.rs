//! The three-member etcd cluster whose peer (raft) links run through fault proxies: a
//! slow follower applies the proposals it forwards late, after writes sent to the leader
//! meanwhile; a muted member keeps its leader but stops serving linearizable reads; an
//! isolated member loses its leader. Real time, real etcd; skipped without the binary.

use std::time::Duration;

use coord_testkit::EtcdCluster;
use etcd_client::{Client, GetOptions};
use tokio::time::{Instant, timeout};

const SLOW: Duration = Duration::from_secs(3);

async fn proxied_cluster() -> Option<EtcdCluster> {
    EtcdCluster::builder()
        .peer_proxies(true)
        .start_or_skip()
        .await
}

async fn client(url: String) -> Client {
    Client::connect([url], None).await.expect("connect")
}

async fn value(c: &mut Client, key: &str) -> Option<(String, i64)> {
    let resp = c.get(key, None).await.expect("get");
    resp.kvs()
        .first()
        .map(|kv| (kv.value_str().unwrap().to_owned(), kv.mod_revision()))
}

/// Polls `pred` on member `i`'s status every 50 ms for up to `within`.
async fn member_becomes(
    cluster: &EtcdCluster,
    i: usize,
    within: Duration,
    pred: impl Fn(&coord_testkit::MemberStatus) -> bool,
) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cluster.member_status(i).await.is_ok_and(|s| pred(&s)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_advertise_their_peer_proxies_and_report_one_leader() {
    let Some(cluster) = proxied_cluster().await else {
        return;
    };
    assert!(cluster.has_peer_proxies());
    let list = cluster.etcdctl(&["member", "list"]).await.unwrap();
    for i in 0..cluster.len() {
        let advertised = format!("http://{}", cluster.peer_link(i).addr());
        assert!(list.contains(&advertised), "{advertised} in {list}");
        assert!(
            list.contains(cluster.member_id(i)),
            "{} in {list}",
            cluster.member_id(i)
        );
    }
    let leader = cluster.leader().await.unwrap();
    for i in 0..cluster.len() {
        let status = cluster.member_status(i).await.unwrap();
        assert_eq!(status.id, cluster.member_id(i));
        assert!(status.has_leader);
        assert_eq!(status.is_leader, i == leader);
    }
    // Raft traffic really passes the proxies.
    assert!((0..cluster.len()).all(|i| cluster.peer_link(i).active_connections() > 0));
}

/// The fault the recipes must survive: a txn sent to a follower whose peer link is slow
/// times out at the client, yet the follower has forwarded it to the leader, which applies
/// it seconds later, after a write the client sent to the leader meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_through_a_slow_follower_times_out_and_lands_after_a_later_put() {
    let Some(cluster) = proxied_cluster().await else {
        return;
    };
    let leader = cluster.leader().await.unwrap();
    let follower = (leader + 1) % cluster.len();
    let key = format!("{}k", cluster.namespace());
    let mut via_follower = client(cluster.url(follower)).await;
    let mut via_leader = client(cluster.url(leader)).await;
    via_follower.put(key.as_str(), "warm", None).await.unwrap();

    cluster.peer_link(follower).set_latency(SLOW);
    let sent = Instant::now();
    let lost = timeout(
        Duration::from_secs(1),
        via_follower.put(key.as_str(), "slow", None),
    )
    .await;
    assert!(lost.is_err(), "the follower's put is not answered in time");
    let fast = via_leader.put(key.as_str(), "fast", None).await.unwrap();
    let fast_rev = fast.header().unwrap().revision();
    assert!(sent.elapsed() < SLOW, "the leader answers at once");
    assert_eq!(
        value(&mut via_leader, &key).await,
        Some(("fast".into(), fast_rev))
    );

    let landed = loop {
        let now = value(&mut via_leader, &key).await.unwrap();
        if now.0 == "slow" {
            break now;
        }
        assert!(
            sent.elapsed() < SLOW * 3,
            "the unanswered put never landed: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let after = sent.elapsed();
    assert!(landed.1 > fast_rev, "applied after the later put");
    assert!(
        after >= SLOW - Duration::from_millis(500) && after < SLOW * 2,
        "landed {after:?} after it was sent, about the peer latency"
    );
    // Healed, the follower is a normal member again.
    cluster.peer_link(follower).set_latency(Duration::ZERO);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = Instant::now();
        via_follower
            .put(key.as_str(), "healed", None)
            .await
            .unwrap();
        if t.elapsed() < Duration::from_millis(500) {
            break;
        }
        assert!(Instant::now() < deadline, "the follower stays slow");
    }
}

/// A muted member (its own peer link blackholed) still hears the leader, so it keeps
/// reporting one, but it cannot get a read index: linearizable reads hang while
/// serializable ones are served. Isolated both ways it loses its leader too. Rejoined, it
/// serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_muted_member_hangs_linearizable_reads_and_an_isolated_one_loses_its_leader() {
    let Some(cluster) = proxied_cluster().await else {
        return;
    };
    let leader = cluster.leader().await.unwrap();
    let member = (leader + 1) % cluster.len();
    let key = format!("{}k", cluster.namespace());
    let mut via_member = client(cluster.url(member)).await;
    let mut via_leader = client(cluster.url(leader)).await;
    via_leader.put(key.as_str(), "v1", None).await.unwrap();
    assert!(value(&mut via_member, &key).await.is_some());

    cluster.peer_link(member).blackhole();
    let read = timeout(Duration::from_secs(2), via_member.get(key.as_str(), None)).await;
    assert!(
        !matches!(read, Ok(Ok(_))),
        "a muted member serves no linearizable read"
    );
    let status = cluster.member_status(member).await.unwrap();
    assert!(status.has_leader, "muted, it still hears the leader");
    let serializable = via_member
        .get(key.as_str(), Some(GetOptions::new().with_serializable()))
        .await
        .expect("serializable reads need no leader");
    assert_eq!(serializable.kvs().len(), 1);

    cluster.isolate_member(member);
    assert!(
        member_becomes(&cluster, member, Duration::from_secs(10), |s| !s.has_leader).await,
        "an isolated member loses its leader"
    );
    assert!(cluster.member_status(leader).await.unwrap().is_leader);
    via_leader
        .put(key.as_str(), "v2", None)
        .await
        .expect("the two others keep a quorum");

    cluster.rejoin_member(member);
    assert!(!cluster.peer_link(member).is_blackholed());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match timeout(Duration::from_secs(2), via_member.get(key.as_str(), None)).await {
            Ok(Ok(resp)) if resp.kvs()[0].value() == b"v2" => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "rejoined, still not serving: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
