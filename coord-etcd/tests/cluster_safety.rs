//! coord's recipes against writes that land late, on a real three-member etcd.
//!
//! A client that sends a txn to a follower and gives up waiting (its request timeout, or a
//! dropped future) does not stop it: the follower has forwarded the proposal to the
//! leader, which applies it whenever it arrives, possibly after writes the client sent to
//! the leader since. Here a follower's peer link is slowed by [`SLOW`] (the testkit's
//! peer proxies), so whatever the client sends through it lands that much later, and a
//! [`Steered`] client decides which member each call goes to.
//!
//! These scenarios are deterministic up to timing margins of a second or more: the late
//! writes land [`SLOW`] after they were sent, and every assertion waits until they have.

mod support;

use std::sync::Arc;
use std::time::Duration;

use coord_core::{BackendExt, CoordinationBackend, Election, Error, Mutex, RangeRequest, Session};
use coord_etcd::{EtcdBackend, EtcdOptions};
use coord_testkit::EtcdCluster;
use tokio::time::{Instant, sleep, sleep_until, timeout};

use support::steered::{Steered, Steering};

/// The delay on the follower's peer link: how late a write sent through it lands.
const SLOW: Duration = Duration::from_secs(3);
/// Every client's request timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
const TTL: Duration = Duration::from_secs(10);
/// How long another session may take to get a lock or a leadership that nobody holds.
const BOUND: Duration = Duration::from_secs(5);
/// When the (b) scenarios drop their claim: after the steering moved to the leader (500 ms),
/// and before the request timeout would end the claim with an error instead.
const CANCEL_AFTER: Duration = Duration::from_millis(800);

/// The steered client's members.
const VIA_FOLLOWER: usize = 0;
const VIA_LEADER: usize = 1;

/// The scenarios measure delays of seconds: one cluster at a time keeps the two cores
/// free enough for that.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Fixture {
    cluster: EtcdCluster,
    leader: usize,
    follower: usize,
    /// The session under test, on the steered client (steered to the leader for now).
    session: Session,
    steering: Steering,
    /// A connection of its own to the leader, for checks and for other sessions.
    observer: Arc<dyn CoordinationBackend>,
}

async fn member_client(cluster: &EtcdCluster, i: usize) -> EtcdBackend {
    EtcdBackend::connect(
        EtcdOptions::new([cluster.url(i)])
            .namespace(cluster.namespace())
            .request_timeout(REQUEST_TIMEOUT),
    )
    .await
    .expect("connect")
}

impl Fixture {
    async fn start() -> Option<Fixture> {
        let cluster = EtcdCluster::builder()
            .peer_proxies(true)
            .start_or_skip()
            .await?;
        let leader = cluster.leader().await.expect("a leader");
        let follower = (leader + 1) % cluster.len();
        let (steered, steering) = Steered::new(vec![
            member_client(&cluster, follower).await,
            member_client(&cluster, leader).await,
        ]);
        steering.to(VIA_LEADER);
        let session = Session::builder(Arc::new(steered))
            .ttl(TTL)
            .start()
            .await
            .expect("session");
        let observer = Arc::new(member_client(&cluster, leader).await);
        Some(Fixture {
            cluster,
            leader,
            follower,
            session,
            steering,
            observer,
        })
    }

    /// From now on, what the session sends through the follower lands [`SLOW`] late.
    fn slow_follower(&self) {
        self.cluster.peer_link(self.follower).set_latency(SLOW);
    }

    /// The scenarios need the leader they started with: had the slow member become
    /// leader, the late writes would land in the order they were sent.
    async fn check_same_leader(&self) {
        let now = self.cluster.leader().await.expect("a leader");
        assert_eq!(
            now, self.leader,
            "the leader changed during the scenario, which then proves nothing"
        );
    }

    async fn other_session(&self) -> Session {
        Session::builder(self.observer.clone())
            .ttl(TTL)
            .start()
            .await
            .expect("another session")
    }

    /// The keys under `prefix` and the leases they are on, for assertion messages.
    async fn keys(&self, prefix: &str) -> Vec<(String, String)> {
        self.observer
            .range(RangeRequest::prefix(prefix))
            .await
            .expect("range")
            .kvs
            .into_iter()
            .map(|kv| (kv.key_str().into_owned(), format!("{:x}", kv.lease)))
            .collect()
    }

    /// Whether a key under `prefix` is on the session's lease.
    async fn session_has_key(&self, prefix: &str) -> bool {
        let lease = format!("{:x}", self.session.lease());
        self.keys(prefix).await.iter().any(|(_, l)| *l == lease)
    }
}

/// (a) A lock claim that times out is withdrawn in the background. The withdrawal's first
/// attempt goes through the slow follower and times out too; the retry through the leader
/// answers, and the same session acquires the lock again. The first withdrawal attempt
/// is still on its way: when it lands, it must not delete the key the session holds now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_withdrawal_leaves_the_lock_its_session_took_again() {
    let _serial = SERIAL.lock().await;
    let Some(f) = Fixture::start().await else {
        return;
    };
    f.slow_follower();
    f.steering.to(VIA_FOLLOWER);
    let sent = Instant::now();
    let first = Mutex::new(&f.session, "m").lock().await;
    assert!(
        first.is_err(),
        "a claim through the slow follower is not answered in time: {first:?}"
    );
    // The background withdrawal has been sent through the follower by now.
    sleep_until(sent + REQUEST_TIMEOUT + Duration::from_millis(500)).await;
    f.steering.to(VIA_LEADER);

    let guard = timeout(BOUND * 2, Mutex::new(&f.session, "m").lock())
        .await
        .expect("the session acquires the lock again")
        .expect("lock");
    let token = guard.fencing_token();
    // Everything sent through the follower lands within SLOW of being sent.
    let landed = sent + REQUEST_TIMEOUT + SLOW + Duration::from_millis(1500);
    tokio::select! {
        _ = guard.lost() => panic!(
            "the holder's lost() fired {:?} after the first claim was sent, with a healthy \
             session: keys under m/ now {:?}",
            sent.elapsed(),
            f.keys("m/").await,
        ),
        _ = sleep_until(landed) => {}
    }
    f.check_same_leader().await;
    let kv = f.observer.get(guard.key().as_bytes()).await.expect("get");
    assert!(
        kv.as_ref().is_some_and(|kv| kv.create_revision == token),
        "the held lock key {} (create revision {token}) survives the late writes: found {kv:?}",
        guard.key()
    );
    assert!(!f.session.is_lost());
    guard.unlock().await.expect("unlock");
    f.session.close().await.expect("close");
}

/// (b) A lock claim through the slow follower, cancelled by dropping the `lock()` future
/// (a `lock_timeout` limit bounds waiting for others, not the claim request): its withdrawal
/// goes through the leader, finds nothing and ends; the claim lands afterwards. No key may
/// be left on the session's live lease with no handle behind it: another session gets the
/// free lock within a bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_claim_that_lands_after_its_withdrawal_leaves_no_key_behind() {
    let _serial = SERIAL.lock().await;
    let Some(f) = Fixture::start().await else {
        return;
    };
    f.slow_follower();
    f.steering.to(VIA_FOLLOWER);
    let sent = Instant::now();
    let mutex = Mutex::new(&f.session, "m");
    let (first, ()) = tokio::join!(tokio::time::timeout(CANCEL_AFTER, mutex.lock()), async {
        // The withdrawal, sent when the timeout drops the claim, goes to the leader.
        sleep(Duration::from_millis(500)).await;
        f.steering.to(VIA_LEADER);
    });
    assert!(
        first.is_err(),
        "the claim through the slow follower is cancelled: {first:?}"
    );
    sleep_until(sent + SLOW + Duration::from_millis(1500)).await;
    f.check_same_leader().await;

    let other = f.other_session().await;
    let keys = f.keys("m/").await;
    let got = Mutex::new(&other, "m").lock_timeout(BOUND).await;
    assert!(
        got.is_ok(),
        "another session gets the free lock within {BOUND:?}: {got:?}; keys under m/ when \
         it asked (the session's lease is {:x}): {keys:?}",
        f.session.lease()
    );
    assert!(
        !f.session_has_key("m/").await,
        "no key on the live session's lease: {:?}",
        f.keys("m/").await
    );
    assert!(!f.session.is_lost());
    got.unwrap().unlock().await.expect("unlock");
    other.close().await.expect("close");
    f.session.close().await.expect("close");
}

/// (b) The same for a candidacy cancelled by dropping `campaign()`: once it lands, nobody
/// campaigns, so `leader()` must not report a phantom leader, and another candidate is
/// elected within a bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidacy_that_lands_after_its_withdrawal_leaves_no_phantom_leader() {
    let _serial = SERIAL.lock().await;
    let Some(f) = Fixture::start().await else {
        return;
    };
    f.slow_follower();
    f.steering.to(VIA_FOLLOWER);
    let sent = Instant::now();
    let candidacy = Election::new(&f.session, "e");
    let (first, ()) = tokio::join!(
        tokio::time::timeout(CANCEL_AFTER, candidacy.campaign("phantom")),
        async {
            sleep(Duration::from_millis(500)).await;
            f.steering.to(VIA_LEADER);
        }
    );
    assert!(
        first.is_err(),
        "the campaign through the slow follower is cancelled: {first:?}"
    );
    sleep_until(sent + SLOW + Duration::from_millis(1500)).await;
    f.check_same_leader().await;

    let other = f.other_session().await;
    let election = Election::new(&other, "e");
    let deadline = Instant::now() + BOUND;
    loop {
        match election.leader().await {
            Err(Error::NoLeader { .. }) => break,
            Ok(kv) => assert!(
                Instant::now() < deadline,
                "nobody campaigns, yet leader() reports {} = {:?} (the session's lease is \
                 {:x}; the candidacy was cancelled {:?} ago)",
                kv.key_str(),
                String::from_utf8_lossy(&kv.value),
                f.session.lease(),
                sent.elapsed() - Duration::from_secs(1),
            ),
            Err(e) => panic!("leader(): {e}"),
        }
        sleep(Duration::from_millis(100)).await;
    }
    let leadership = election
        .campaign_timeout("real", BOUND)
        .await
        .expect("another candidate is elected within the bound");
    assert_eq!(election.leader().await.expect("leader").value, b"real");
    assert!(!f.session_has_key("e/").await, "{:?}", f.keys("e/").await);
    assert!(!f.session.is_lost());
    leadership.resign().await.expect("resign");
    other.close().await.expect("close");
    f.session.close().await.expect("close");
}
