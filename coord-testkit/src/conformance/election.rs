//! `Election` scenarios: those of etcd's own election tests (each names its model),
//! cancellation and the lost-before-the-next-leader rule.

use std::time::Duration;

use coord_core::{
    BackendExt, Election, Error, KeyValue, LeaderUpdate, NO_LEASE, Result, Session, leader,
};
use futures::StreamExt;
use futures::stream::BoxStream;

use super::{
    Capability, Partition, TestBackend, assert_blocks, delete_key, join_prompt, keys_under,
    new_session, no_key_of, prompt, quiet, session_with_ttl, skip_unless, unique,
};

type Observer = BoxStream<'static, Result<LeaderUpdate>>;

/// The next update of an observe stream within [`prompt`].
async fn next_update(backend: &dyn TestBackend, obs: &mut Observer) -> LeaderUpdate {
    tokio::time::timeout(prompt(backend), obs.next())
        .await
        .expect("an observe update in time")
        .expect("observe stream open")
        .expect("observe ok")
}

/// Skips updates until the leader's value is `value`, within [`prompt`]; checks revisions
/// never go back on the way.
async fn until_value(backend: &dyn TestBackend, obs: &mut Observer, value: &str) -> KeyValue {
    let mut last = 0;
    loop {
        let u = next_update(backend, obs).await;
        assert!(u.revision >= last, "observe went back in revision");
        last = u.revision;
        if let Some(l) = u.leader
            && l.value == value.as_bytes()
        {
            return l;
        }
    }
}

/// From etcd's own tests (ExampleElection_Campaign): e2 campaigns first and wins; e1 campaigns
/// later and blocks; observe gives "e2". After e2 resigns, e1 wins and observe gives "e1".
pub async fn election_order_and_observe(backend: &dyn TestBackend) {
    let name = unique("order");
    let (s1, s2) = (new_session(backend).await, new_session(backend).await);
    let l2 = Election::new(&s2, name.as_str())
        .campaign("e2")
        .await
        .unwrap();
    let e1 = Election::new(&s1, name.as_str());
    let mut obs = e1.observe();
    let c1 = e1.clone();
    let wait = tokio::spawn(async move { c1.campaign("e1").await });
    assert_blocks(backend, &wait, "e1 behind e2").await;
    let first = next_update(backend, &mut obs).await;
    assert_eq!(first.leader.expect("a leader").value, b"e2");
    l2.resign().await.unwrap();
    let l1 = join_prompt(backend, wait, "e1 wins after e2 resigns")
        .await
        .unwrap();
    until_value(backend, &mut obs, "e1").await;
    assert!(l1.rev() > 0);
    assert_eq!(e1.leader().await.unwrap().value, b"e1");
    l1.resign().await.unwrap();
}

/// From etcd's own tests (TestElectionWait): three leaders campaign in sequence; three fresh
/// followers each see the current leader's value as their first observation; long-lived
/// followers see every leader in order. Each leader resigns after all followers saw it.
pub async fn followers_observe_each_leader(backend: &dyn TestBackend) {
    let name = unique("followers");
    let watcher = backend.client().await;
    let mut long_lived: Vec<Observer> = (0..3)
        .map(|_| coord_core::observe(watcher.clone(), name.clone()))
        .collect();
    for obs in &mut long_lived {
        assert!(
            next_update(backend, obs).await.leader.is_none(),
            "no leader yet"
        );
    }
    for i in 0..3 {
        let value = format!("leader-{i}");
        let s = new_session(backend).await;
        let l = Election::new(&s, name.as_str())
            .campaign(value.as_str())
            .await
            .unwrap();
        for _ in 0..3 {
            let client = backend.client().await;
            let mut fresh = coord_core::observe(client, name.clone());
            let u = next_update(backend, &mut fresh).await;
            assert_eq!(
                u.leader.expect("leader").value,
                value.as_bytes(),
                "fresh follower"
            );
        }
        for obs in &mut long_lived {
            until_value(backend, obs, &value).await;
        }
        l.resign().await.unwrap();
    }
}

/// From etcd's own tests (TestElectionFailover): "foo" is leader and "bar" campaigns; closing
/// foo's session lets bar win promptly; a fresh observer and `leader()` see "bar".
pub async fn failover_on_session_loss(backend: &dyn TestBackend) {
    let name = unique("failover");
    let (s1, s2) = (new_session(backend).await, new_session(backend).await);
    let l_foo = Election::new(&s1, name.as_str())
        .campaign("foo")
        .await
        .unwrap();
    let e2 = Election::new(&s2, name.as_str());
    let c2 = e2.clone();
    let bar = tokio::spawn(async move { c2.campaign("bar").await });
    assert_blocks(backend, &bar, "bar behind foo").await;
    s1.close().await.unwrap();
    let lbar = join_prompt(backend, bar, "bar wins after foo's session closes")
        .await
        .unwrap();
    let mut obs = e2.observe();
    assert_eq!(
        next_update(backend, &mut obs).await.leader.unwrap().value,
        b"bar"
    );
    assert_eq!(e2.leader().await.unwrap().value, b"bar");
    tokio::time::timeout(prompt(backend), l_foo.lost())
        .await
        .expect("foo's leadership reports the loss");
    lbar.resign().await.unwrap();
}

/// A session resumed from its lease id (as a restarted process does) campaigns again: it
/// adopts the candidacy its predecessor left and proclaims the new value at once, keeping
/// the key and its revision. (Within one process, a second campaign on the same session
/// waits for the first candidacy to end instead.)
pub async fn recampaign_on_a_resumed_session_proclaims_at_once(backend: &dyn TestBackend) {
    let name = unique("recampaign");
    let client = backend.client().await;
    let s = session_with_ttl(&client, backend.short_ttl()).await;
    let l1 = Election::new(&s, name.as_str())
        .campaign("abc")
        .await
        .unwrap();
    let resumed = Session::builder(client.clone())
        .lease(s.lease())
        .start()
        .await
        .unwrap();
    let e = Election::new(&resumed, name.as_str());
    let l2 = tokio::time::timeout(prompt(backend), e.campaign("def"))
        .await
        .expect("re-campaign on the resumed session returns at once")
        .unwrap();
    assert_eq!((l1.key(), l1.rev()), (l2.key(), l2.rev()));
    let mut obs = e.observe();
    assert_eq!(
        next_update(backend, &mut obs).await.leader.unwrap().value,
        b"def"
    );
    assert_eq!(e.leader().await.unwrap().value, b"def");
    l2.resign().await.unwrap();
    assert!(
        matches!(l1.resign().await, Err(Error::NotLeader { .. })),
        "the old handle's candidacy ended with the resumed one's"
    );
    resumed.orphan();
}

/// From etcd's own tests (TestElectionOnPrefixOfExistingKey): a key `<name>a` and a candidate in
/// election `<name>a` do not block election `<name>`, whose prefix is `<name>/`.
pub async fn election_name_is_a_prefix_with_a_slash(backend: &dyn TestBackend) {
    let name = unique("test");
    let (a, b) = (new_session(backend).await, new_session(backend).await);
    let c = backend.client().await;
    c.put(format!("{name}a").as_bytes(), b"v", NO_LEASE)
        .await
        .unwrap();
    let _other = Election::new(&a, format!("{name}a"))
        .campaign("x")
        .await
        .unwrap();
    let l = tokio::time::timeout(
        prompt(backend),
        Election::new(&b, name.as_str()).campaign("y"),
    )
    .await
    .expect("election `<name>` is not blocked by `<name>a`")
    .unwrap();
    assert_eq!(leader(c.as_ref(), &name).await.unwrap().value, b"y");
    l.resign().await.unwrap();
}

/// From etcd's own tests (TestElectionOnSessionRestart): the leader campaigns "abc" and another
/// candidate waits. The leader's process "restarts" (its session is orphaned, its handles
/// are forgotten as a crash would); a new session on a new client resumes the old lease
/// and campaigns "def": it wins at once and observe gives "def", while the other candidate
/// still waits.
pub async fn leadership_resumes_after_restart_from_the_lease_id(backend: &dyn TestBackend) {
    let name = unique("restart");
    let old = new_session(backend).await;
    let other = new_session(backend).await;
    let l = Election::new(&old, name.as_str())
        .campaign("abc")
        .await
        .unwrap();
    let eo = Election::new(&other, name.as_str());
    let wait = tokio::spawn(async move { eo.campaign("other").await });
    assert_blocks(backend, &wait, "other candidate behind the leader").await;
    let lease = old.lease();
    let rev = l.rev();
    old.orphan();
    std::mem::forget(l); // a crashed process runs no destructor
    let client = backend.client().await;
    let resumed = Session::builder(client.clone())
        .ttl(backend.short_ttl())
        .lease(lease)
        .start()
        .await
        .unwrap();
    let e = Election::new(&resumed, name.as_str());
    let l = tokio::time::timeout(prompt(backend), e.campaign("def"))
        .await
        .expect("the resumed candidacy wins at once")
        .unwrap();
    assert_eq!(l.rev(), rev, "the same candidacy, not a new one");
    let mut obs = e.observe();
    assert_eq!(
        next_update(backend, &mut obs).await.leader.unwrap().value,
        b"def"
    );
    assert_blocks(
        backend,
        &wait,
        "other candidate still behind the resumed leader",
    )
    .await;
    l.resign().await.unwrap();
    join_prompt(backend, wait, "other wins after the resign")
        .await
        .unwrap()
        .resign()
        .await
        .unwrap();
    drop(old);
}

/// From etcd's own tests (TestElectionObserveCompacted): elect, write and compact at the latest
/// revision; a new observer still reports the leader, and one opened before the
/// compaction still reports later proclamations.
pub async fn observe_survives_compaction(backend: &dyn TestBackend) {
    if skip_unless(
        backend,
        "observe_survives_compaction",
        &[Capability::Compaction],
    ) {
        return;
    }
    let name = unique("compacted");
    let s = new_session(backend).await;
    let c = backend.client().await;
    let l = Election::new(&s, name.as_str())
        .campaign("abc")
        .await
        .unwrap();
    let mut before = coord_core::observe(c.clone(), name.clone());
    assert_eq!(
        next_update(backend, &mut before)
            .await
            .leader
            .unwrap()
            .value,
        b"abc"
    );
    let rev = c
        .put(format!("{name}-other").as_bytes(), b"x", NO_LEASE)
        .await
        .unwrap();
    c.compact(rev).await.unwrap();
    let mut after = coord_core::observe(c.clone(), name.clone());
    assert_eq!(
        next_update(backend, &mut after).await.leader.unwrap().value,
        b"abc"
    );
    l.proclaim("def").await.unwrap();
    until_value(backend, &mut before, "def").await;
    until_value(backend, &mut after, "def").await;
    l.resign().await.unwrap();
}

/// From etcd's own tests (TestElectionObserveFreshResponsesOnProclaim, TestV3ElectionObserve):
/// observe yields "abc", "def", "ghi" as the leader proclaims, with versions 1, 2, 3 and
/// strictly rising revisions; across two leaders the values never go back.
pub async fn proclaimed_values_reach_observers_in_rising_revisions(backend: &dyn TestBackend) {
    let name = unique("proclaim");
    let (s1, s2) = (new_session(backend).await, new_session(backend).await);
    let e = Election::new(&s1, name.as_str());
    let mut obs = e.observe();
    assert!(next_update(backend, &mut obs).await.leader.is_none());
    let l = e.campaign("abc").await.unwrap();
    let mut last = 0;
    for (i, value) in ["abc", "def", "ghi"].into_iter().enumerate() {
        if i > 0 {
            l.proclaim(value).await.unwrap();
        }
        let u = next_update(backend, &mut obs).await;
        let kv = u.leader.expect("leader");
        assert_eq!(kv.value, value.as_bytes());
        assert_eq!(kv.version, i as i64 + 1);
        assert!(u.revision > last, "revisions strictly rise");
        last = u.revision;
    }
    assert_eq!(l.current().await.unwrap().value, b"ghi");
    // A second leader follows; the stream moves forward only.
    let e2 = Election::new(&s2, name.as_str());
    let c2 = e2.clone();
    let next = tokio::spawn(async move { c2.campaign("jkl").await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    l.resign().await.unwrap();
    let l2 = join_prompt(backend, next, "second leader").await.unwrap();
    let kv = until_value(backend, &mut obs, "jkl").await;
    assert!(kv.create_revision > last);
    l2.resign().await.unwrap();
}

/// From etcd's own tests (TestV3ElectionCampaign): campaign "abc" wins; campaign "def" blocks;
/// resign lets "def" win promptly and `leader()` returns "def". Observe ignores puts
/// outside the election's prefix (TestResumeElection).
pub async fn resign_unblocks_the_next_candidate(backend: &dyn TestBackend) {
    let name = unique("resign");
    let (s1, s2) = (new_session(backend).await, new_session(backend).await);
    let c = backend.client().await;
    let mut obs = coord_core::observe(c.clone(), name.clone());
    assert!(next_update(backend, &mut obs).await.leader.is_none());
    let l1 = Election::new(&s1, name.as_str())
        .campaign("abc")
        .await
        .unwrap();
    until_value(backend, &mut obs, "abc").await;
    let e2 = Election::new(&s2, name.as_str());
    let c2 = e2.clone();
    let wait = tokio::spawn(async move { c2.campaign("def").await });
    assert_blocks(backend, &wait, "def behind abc").await;
    c.put(format!("{name}x").as_bytes(), b"noise", NO_LEASE)
        .await
        .unwrap();
    l1.resign().await.unwrap();
    let l2 = join_prompt(backend, wait, "def wins after abc resigns")
        .await
        .unwrap();
    assert_eq!(e2.leader().await.unwrap().value, b"def");
    let u = next_update(backend, &mut obs).await;
    // The next update is either "no leader" (between the resign and def's win) or "def".
    match u.leader {
        None => {
            until_value(backend, &mut obs, "def").await;
        }
        Some(l) => assert_eq!(l.value, b"def", "the noise key is not a leader"),
    }
    l2.resign().await.unwrap();
}

/// From etcd's own tests (curl tests TestCurlV3ProclaimMissiongLeaderKey,
/// TestCurlV3ResignMissiongLeaderKey, ErrElectionNoLeader): with no candidate `leader()`
/// gives `NoLeader` and observe reports `leader: None` (etcd's Observe never does); once
/// the leader key is gone, `proclaim` gives `NotLeader` and `resign` gives `NotLeader`.
pub async fn no_leader_and_not_leader_errors(backend: &dyn TestBackend) {
    let name = unique("noleader");
    let s = new_session(backend).await;
    let c = backend.client().await;
    let e = Election::new(&s, name.as_str());
    assert!(matches!(e.leader().await, Err(Error::NoLeader { .. })));
    let mut obs = e.observe();
    assert!(
        next_update(backend, &mut obs).await.leader.is_none(),
        "observe reports no leader"
    );
    let l = e.campaign("abc").await.unwrap();
    until_value(backend, &mut obs, "abc").await;
    delete_key(c.as_ref(), l.key()).await;
    let u = next_update(backend, &mut obs).await;
    assert!(
        u.leader.is_none(),
        "observe reports the leader vanished: {u:?}"
    );
    assert!(matches!(e.leader().await, Err(Error::NoLeader { .. })));
    tokio::time::timeout(prompt(backend), l.lost())
        .await
        .expect("lost fires");
    assert!(matches!(l.current().await, Err(Error::NotLeader { .. })));
    let err = l.proclaim("def").await.unwrap_err();
    assert!(
        matches!(err, Error::NotLeader { .. }),
        "proclaim after losing: {err:?}"
    );
    assert!(
        keys_under(c.as_ref(), &name).await.is_empty(),
        "a refused proclaim writes nothing"
    );
    let r = l.resign().await;
    assert!(
        matches!(r, Err(Error::NotLeader { .. })),
        "resign after losing: {r:?}"
    );
}

/// Cancel safety: dropping a `campaign()` future mid-wait withdraws the candidacy in the
/// background (no key left), and the next live candidate still wins.
pub async fn election_dropped_campaign_leaves_no_key(backend: &dyn TestBackend) {
    let name = unique("drop-campaign");
    let (a, b, d) = (
        new_session(backend).await,
        new_session(backend).await,
        new_session(backend).await,
    );
    let c = backend.client().await;
    let la = Election::new(&a, name.as_str())
        .campaign("a")
        .await
        .unwrap();
    let r = tokio::time::timeout(
        quiet(backend),
        Election::new(&b, name.as_str()).campaign("b"),
    )
    .await;
    assert!(r.is_err(), "b waits while a leads");
    no_key_of(
        backend,
        c.as_ref(),
        &name,
        b.lease(),
        "dropped campaign leaves no key",
    )
    .await;
    let r = Election::new(&b, name.as_str())
        .campaign_timeout("b", Duration::from_millis(100))
        .await;
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    no_key_of(
        backend,
        c.as_ref(),
        &name,
        b.lease(),
        "timed-out campaign leaves no key",
    )
    .await;
    let ed = Election::new(&d, name.as_str());
    let wait = tokio::spawn(async move { ed.campaign("d").await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    la.resign().await.unwrap();
    join_prompt(backend, wait, "next live candidate wins")
        .await
        .unwrap()
        .resign()
        .await
        .unwrap();
}

/// The lost signal: when the leader's keep-alives stop reaching the store, its
/// `lost()` fires strictly before the next candidate is elected.
pub async fn election_lost_fires_before_next_leader_is_elected(backend: &dyn TestBackend) {
    if skip_unless(
        backend,
        "election_lost_fires_before_next_leader_is_elected",
        &[Capability::PartitionFail],
    ) {
        return;
    }
    let faults = backend.faults().unwrap();
    let name = unique("lost-leader");
    let (lc, lf) = faults.faulty_client().await;
    let ls = session_with_ttl(&lc, backend.short_ttl()).await;
    let l = Election::new(&ls, name.as_str())
        .campaign("old")
        .await
        .unwrap();
    let lost = l.lost();
    let lost_at = tokio::spawn(async move {
        lost.await;
        tokio::time::Instant::now()
    });
    let next = new_session(backend).await;
    let en = Election::new(&next, name.as_str());
    let elected_at = tokio::spawn(async move {
        let l = en.campaign("new").await;
        (tokio::time::Instant::now(), l)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    lf.partition(Partition::Fail);
    let limit = ls.ttl() * 3;
    let lost_at = tokio::time::timeout(limit, lost_at)
        .await
        .expect("leader told")
        .unwrap();
    let (elected_at, ln) = tokio::time::timeout(limit, elected_at)
        .await
        .expect("next leader elected")
        .unwrap();
    assert!(
        lost_at < elected_at,
        "lost() fired {:?} after the next leader was elected",
        lost_at.saturating_duration_since(elected_at)
    );
    lf.heal();
    ln.unwrap().resign().await.unwrap();
    drop(l);
}
