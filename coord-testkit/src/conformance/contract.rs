//! The backend contract itself, as `CoordinationBackend`'s rustdoc states it: revisions,
//! txn, range, leases, watch.

use std::collections::BTreeMap;
use std::time::Duration;

use coord_core::{
    BackendExt, Compare, CompareOp, Error, EventKind, KeyRange, KeyValue, NO_LEASE, RangeRequest,
    Revision, SortOrder, SortTarget, TxnOp, TxnOpResponse, TxnRequest, WatchRequest,
};
use futures::StreamExt;

use super::{Capability, TestBackend, prompt, skip_unless, unique};

async fn put(c: &dyn coord_core::CoordinationBackend, key: &str, value: &str) -> Revision {
    c.put(key.as_bytes(), value.as_bytes(), NO_LEASE)
        .await
        .expect("put")
}

async fn get(c: &dyn coord_core::CoordinationBackend, key: &str) -> Option<KeyValue> {
    c.get(key.as_bytes()).await.expect("get")
}

/// Every write txn raises the revision by exactly one and all of its changes carry it; a
/// txn that changes nothing (reads only, a failed compare with a read-only branch, a delete
/// of an absent key) leaves it alone. `version` counts writes, `create_revision` stays.
pub async fn revision_rises_once_per_write_txn(backend: &dyn TestBackend) {
    backend.exclusive().await;
    let c = backend.client().await;
    let p = unique("rev");
    let (a, b, d) = (format!("{p}/a"), format!("{p}/b"), format!("{p}/c"));
    let before = c.current_revision().await.unwrap();
    let resp = c
        .txn(TxnRequest::new().and_then([
            TxnOp::put(a.as_str(), "1"),
            TxnOp::put(b.as_str(), "1"),
            TxnOp::put(d.as_str(), "1"),
        ]))
        .await
        .unwrap();
    assert!(resp.succeeded);
    assert_eq!(
        resp.revision,
        before + 1,
        "three puts in one txn: one revision"
    );
    for k in [&a, &b, &d] {
        let kv = get(c.as_ref(), k).await.unwrap();
        assert_eq!(
            (kv.create_revision, kv.mod_revision, kv.version),
            (before + 1, before + 1, 1)
        );
    }
    let r2 = put(c.as_ref(), &a, "2").await;
    assert_eq!(r2, before + 2);
    let kv = get(c.as_ref(), &a).await.unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (before + 1, before + 2, 2)
    );

    // Reads only.
    let resp = c
        .txn(TxnRequest::new().and_then([TxnOp::range(RangeRequest::prefix(p.as_str()))]))
        .await
        .unwrap();
    assert_eq!(
        resp.revision,
        before + 2,
        "a read-only txn does not bump the revision"
    );
    // Failed compare, read-only else branch.
    let resp = c
        .txn(
            TxnRequest::new()
                .when([Compare::version(a.as_str(), CompareOp::Equal, 99)])
                .and_then([TxnOp::put(a.as_str(), "x")])
                .or_else([TxnOp::range(RangeRequest::key(a.as_str()))]),
        )
        .await
        .unwrap();
    assert!(!resp.succeeded);
    assert_eq!(resp.revision, before + 2);
    // Deleting nothing.
    let n = c
        .delete(KeyRange::key(format!("{p}/absent")))
        .await
        .unwrap();
    assert_eq!(n, 0);
    assert_eq!(
        c.current_revision().await.unwrap(),
        before + 2,
        "an empty delete changes nothing"
    );
    // Deleting three keys in one txn: one revision.
    let n = c.delete(KeyRange::prefix(p.as_str())).await.unwrap();
    assert_eq!(n, 3);
    assert_eq!(c.current_revision().await.unwrap(), before + 3);
    // Re-creating a key gives it a new create revision and version 1.
    let r4 = put(c.as_ref(), &a, "3").await;
    let kv = get(c.as_ref(), &a).await.unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (r4, r4, 1)
    );
}

/// Compares on create/mod revision, version, value and lease with each of `= != < >`,
/// each both holding (success branch runs) and not holding (failure branch runs), plus
/// etcd's rules for an absent key (numbers are 0, a value compare is false).
pub async fn txn_compares_every_kind_on_both_branches(backend: &dyn TestBackend) {
    let c = backend.client().await;
    let p = unique("cmp");
    let k = format!("{p}/k");
    let absent = format!("{p}/absent");
    let lease = c.lease_grant(Duration::from_secs(600)).await.unwrap().id;
    let created = c.put(k.as_bytes(), b"m", lease).await.unwrap();
    let modded = c.put(k.as_bytes(), b"m", lease).await.unwrap(); // version 2

    // (compare on k, expected to hold)
    let mk = |target: fn(&str, CompareOp, i64) -> Compare, v: i64| {
        let k = k.clone();
        move |op: CompareOp| target(k.as_str(), op, v)
    };
    let mut cases: Vec<(Compare, bool)> = Vec::new();
    type Target = fn(&str, CompareOp, i64) -> Compare;
    let numeric: [(Target, i64); 4] = [
        (|k, op, v| Compare::create_revision(k, op, v), created),
        (|k, op, v| Compare::mod_revision(k, op, v), modded),
        (|k, op, v| Compare::version(k, op, v), 2),
        (|k, op, v| Compare::lease(k, op, v), lease),
    ];
    for (target, actual) in numeric {
        let at = mk(target, actual);
        let below = mk(target, actual - 1);
        let above = mk(target, actual + 1);
        cases.extend([
            (at(CompareOp::Equal), true),
            (below(CompareOp::Equal), false),
            (below(CompareOp::NotEqual), true),
            (at(CompareOp::NotEqual), false),
            (above(CompareOp::Less), true),
            (at(CompareOp::Less), false),
            (below(CompareOp::Greater), true),
            (at(CompareOp::Greater), false),
        ]);
    }
    let kv = |op, v: &str| Compare::value(k.as_str(), op, v);
    cases.extend([
        (kv(CompareOp::Equal, "m"), true),
        (kv(CompareOp::Equal, "n"), false),
        (kv(CompareOp::NotEqual, "n"), true),
        (kv(CompareOp::NotEqual, "m"), false),
        (kv(CompareOp::Less, "n"), true),
        (kv(CompareOp::Less, "l"), false),
        (kv(CompareOp::Greater, "l"), true),
        (kv(CompareOp::Greater, "n"), false),
        // Absent keys: every number is 0, a value compare is false whatever the operator.
        (
            Compare::create_revision(absent.as_str(), CompareOp::Equal, 0),
            true,
        ),
        (Compare::version(absent.as_str(), CompareOp::Equal, 0), true),
        (
            Compare::mod_revision(absent.as_str(), CompareOp::Greater, 0),
            false,
        ),
        (Compare::lease(absent.as_str(), CompareOp::Equal, 0), true),
        (Compare::value(absent.as_str(), CompareOp::Equal, ""), false),
        (
            Compare::value(absent.as_str(), CompareOp::NotEqual, "x"),
            false,
        ),
        (Compare::value(absent.as_str(), CompareOp::Less, "x"), false),
    ]);
    for (cmp, holds) in cases {
        let resp = c
            .txn(
                TxnRequest::new()
                    .when([cmp.clone()])
                    .and_then([TxnOp::range(RangeRequest::key(format!("{p}/then")))])
                    .or_else([
                        TxnOp::range(RangeRequest::key(format!("{p}/else"))),
                        TxnOp::range(RangeRequest::key(format!("{p}/else2"))),
                    ]),
            )
            .await
            .unwrap();
        assert_eq!(resp.succeeded, holds, "{cmp:?}");
        assert_eq!(
            resp.responses.len(),
            if holds { 1 } else { 2 },
            "branch of {cmp:?}"
        );
    }
    // Several compares: all must hold.
    let resp = c
        .txn(
            TxnRequest::new()
                .when([
                    Compare::version(k.as_str(), CompareOp::Equal, 2),
                    Compare::value(k.as_str(), CompareOp::Equal, "nope"),
                ])
                .and_then([TxnOp::put(k.as_str(), "then")])
                .or_else([TxnOp::put(k.as_str(), "else")]),
        )
        .await
        .unwrap();
    assert!(!resp.succeeded);
    assert_eq!(get(c.as_ref(), &k).await.unwrap().value, b"else");
    c.lease_revoke(lease).await.unwrap();
}

/// Later operations of a branch see the writes of earlier ones; `prev_kv` on a put returns
/// the key before the txn's write.
pub async fn txn_later_ops_see_earlier_ones(backend: &dyn TestBackend) {
    let c = backend.client().await;
    let p = unique("seq");
    let (a, b) = (format!("{p}/a"), format!("{p}/b"));
    put(c.as_ref(), &a, "old").await;
    put(c.as_ref(), &b, "b").await;
    let mut put_a = TxnOp::put(a.as_str(), "new");
    if let TxnOp::Put(pt) = &mut put_a {
        pt.prev_kv = true;
    }
    let resp = c
        .txn(TxnRequest::new().and_then([
            put_a,
            TxnOp::range(RangeRequest::key(a.as_str())),
            TxnOp::delete(b.as_str()),
            TxnOp::range(RangeRequest::prefix(p.as_str())),
        ]))
        .await
        .unwrap();
    match &resp.responses[0] {
        TxnOpResponse::Put {
            prev_kv: Some(prev),
        } => assert_eq!(prev.value, b"old"),
        other => panic!("put with prev_kv returned {other:?}"),
    }
    let read = resp.range(1).unwrap();
    assert_eq!(
        read.kvs[0].value, b"new",
        "a read after a put in one branch sees it"
    );
    assert_eq!(read.kvs[0].mod_revision, resp.revision);
    match &resp.responses[2] {
        TxnOpResponse::Delete { deleted, .. } => assert_eq!(*deleted, 1),
        other => panic!("delete returned {other:?}"),
    }
    let all = resp.range(3).unwrap();
    let keys: Vec<_> = all.kvs.iter().map(|kv| kv.key_str().into_owned()).collect();
    assert_eq!(
        keys,
        vec![a.clone()],
        "a read after a delete in one branch misses it"
    );
}

/// Range applies filter, then sort, then limit, sets `more` when the limit cut keys off,
/// and counts before the revision filters (as etcd does).
pub async fn range_filter_sort_limit_and_more(backend: &dyn TestBackend) {
    let c = backend.client().await;
    let p = unique("range");
    // Created in order d, b, e, a, c (create revisions rise in that order); then b is
    // modified last.
    let mut created = BTreeMap::new();
    for name in ["d", "b", "e", "a", "c"] {
        created.insert(name, put(c.as_ref(), &format!("{p}/{name}"), name).await);
    }
    put(c.as_ref(), &format!("{p}/b"), "b2").await;
    put(c.as_ref(), &format!("{p}x"), "outside the prefix").await;
    let names = |kvs: &[KeyValue]| -> Vec<String> {
        kvs.iter()
            .map(|kv| kv.key_str().rsplit('/').next().unwrap().to_owned())
            .collect()
    };
    let pre = format!("{p}/");
    let r = c.range(RangeRequest::prefix(pre.as_str())).await.unwrap();
    assert_eq!(names(&r.kvs), ["a", "b", "c", "d", "e"]);
    assert_eq!((r.count, r.more), (5, false));
    let sorted = |t, o| RangeRequest::prefix(pre.as_str()).sort(t, o);
    let cases = [
        (
            sorted(SortTarget::Key, SortOrder::Descend),
            vec!["e", "d", "c", "b", "a"],
        ),
        (
            sorted(SortTarget::CreateRevision, SortOrder::Ascend),
            vec!["d", "b", "e", "a", "c"],
        ),
        (
            sorted(SortTarget::CreateRevision, SortOrder::Descend),
            vec!["c", "a", "e", "b", "d"],
        ),
        (
            sorted(SortTarget::ModRevision, SortOrder::Ascend),
            vec!["d", "e", "a", "c", "b"],
        ),
        (
            sorted(SortTarget::ModRevision, SortOrder::Descend),
            vec!["b", "c", "a", "e", "d"],
        ),
    ];
    for (req, want) in cases {
        let r = c.range(req.clone()).await.unwrap();
        assert_eq!(names(&r.kvs), want, "{req:?}");
    }
    // Limit: more, count of everything in range.
    let r = c
        .range(sorted(SortTarget::CreateRevision, SortOrder::Ascend).limit(2))
        .await
        .unwrap();
    assert_eq!(names(&r.kvs), ["d", "b"]);
    assert!(r.more);
    assert_eq!(r.count, 5);
    let r = c
        .range(RangeRequest::prefix(pre.as_str()).limit(5))
        .await
        .unwrap();
    assert!(
        !r.more,
        "a limit equal to the number of keys cuts nothing off"
    );
    // Filter before sort before limit: the newest key created at or before `a`'s revision
    // (etcd's WithLastCreate + WithMaxCreateRev: the predecessor query of the recipes).
    let r = c
        .range(RangeRequest::last_created_before(
            pre.as_str(),
            created["a"],
        ))
        .await
        .unwrap();
    assert_eq!(names(&r.kvs), ["a"]);
    assert!(r.more, "d, b and e also pass the filter");
    assert_eq!(r.count, 5, "count is taken before the revision filters");
    let r = c
        .range(RangeRequest::last_created_before(
            pre.as_str(),
            created["a"] - 1,
        ))
        .await
        .unwrap();
    assert_eq!(names(&r.kvs), ["e"]);
    let r = c
        .range(
            RangeRequest::prefix(pre.as_str())
                .min_create_revision(created["e"])
                .sort(SortTarget::CreateRevision, SortOrder::Ascend)
                .limit(2),
        )
        .await
        .unwrap();
    assert_eq!(names(&r.kvs), ["e", "a"]);
    assert!(r.more);
    let r = c
        .range(
            RangeRequest::prefix(pre.as_str())
                .min_create_revision(created["b"])
                .max_create_revision(created["a"]),
        )
        .await
        .unwrap();
    assert_eq!(names(&r.kvs), ["a", "b", "e"]);
    // [start, end) ranges and single keys.
    let r = c
        .range(RangeRequest::new(KeyRange::range(
            format!("{p}/b"),
            format!("{p}/d"),
        )))
        .await
        .unwrap();
    assert_eq!(names(&r.kvs), ["b", "c"]);
    let r = c.range(RangeRequest::key(format!("{p}/c"))).await.unwrap();
    assert_eq!(names(&r.kvs), ["c"]);
    // The store revision a read reports is the current one (no other writer meanwhile).
    backend.exclusive().await;
    let r = c.range(RangeRequest::key(format!("{p}/zz"))).await.unwrap();
    assert!(r.kvs.is_empty());
    assert_eq!(r.count, 0);
    assert_eq!(r.revision, c.current_revision().await.unwrap());
}

/// `keys_only` returns metadata without values; `count_only` returns the count alone.
pub async fn range_keys_only_and_count_only(backend: &dyn TestBackend) {
    let c = backend.client().await;
    let p = unique("konly");
    for i in 0..3 {
        put(c.as_ref(), &format!("{p}/{i}"), "value").await;
    }
    let r = c
        .range(RangeRequest::prefix(p.as_str()).keys_only())
        .await
        .unwrap();
    assert_eq!(r.kvs.len(), 3);
    assert!(
        r.kvs
            .iter()
            .all(|kv| kv.value.is_empty() && kv.create_revision > 0 && kv.version == 1)
    );
    let r = c
        .range(RangeRequest::prefix(p.as_str()).count_only())
        .await
        .unwrap();
    assert!(r.kvs.is_empty());
    assert_eq!(r.count, 3);
}

/// A lease that runs out deletes all of its keys in one new revision, and a watcher sees a
/// DELETE event for each, grouped in that revision.
pub async fn lease_expiry_deletes_all_keys_in_one_revision(backend: &dyn TestBackend) {
    let c = backend.client().await;
    let p = unique("expiry");
    let ttl = backend.short_ttl();
    let grant = c.lease_grant(ttl).await.unwrap();
    assert!(grant.ttl >= ttl, "granted {:?} < asked {ttl:?}", grant.ttl);
    for i in 0..3 {
        c.put(format!("{p}/{i}").as_bytes(), b"v", grant.id)
            .await
            .unwrap();
    }
    put(c.as_ref(), &format!("{p}/unleased"), "v").await;
    let mut watch = c.watch(WatchRequest::prefix(p.as_str())).await.unwrap();
    let resp = tokio::time::timeout(grant.ttl * 3, watch.next())
        .await
        .expect("lease expired within 3 TTLs")
        .expect("watch item")
        .expect("watch ok");
    assert_eq!(
        resp.events.len(),
        3,
        "one revision, one DELETE per key: {resp:?}"
    );
    assert!(resp.events.iter().all(|e| e.kind == EventKind::Delete));
    assert!(
        resp.events
            .iter()
            .all(|e| e.kv.mod_revision == resp.revision)
    );
    let left = c.range(RangeRequest::prefix(p.as_str())).await.unwrap();
    assert_eq!(left.kvs.len(), 1, "only the unleased key is left");
    assert!(matches!(
        c.lease_time_to_live(grant.id).await,
        Err(Error::LeaseNotFound { .. })
    ));
}

/// Keep-alive keeps a lease past its TTL; once it has expired, keep-alive, time-to-live and
/// a put on it give `LeaseNotFound`.
pub async fn lease_keep_alive_after_expiry_is_lease_not_found(backend: &dyn TestBackend) {
    let c = backend.client().await;
    let p = unique("keepalive");
    let ttl = backend.short_ttl();
    let grant = c.lease_grant(ttl).await.unwrap();
    for _ in 0..4 {
        tokio::time::sleep(grant.ttl / 2).await;
        let left = c
            .lease_keep_alive(grant.id)
            .await
            .expect("alive while kept alive");
        assert!(
            left <= grant.ttl && left >= grant.ttl / 2,
            "remaining {left:?}"
        );
    }
    let status = c.lease_time_to_live(grant.id).await.unwrap();
    assert_eq!(status.id, grant.id);
    assert_eq!(status.granted_ttl, grant.ttl);
    assert!(status.remaining <= grant.ttl);
    tokio::time::sleep(grant.ttl + grant.ttl / 2 + Duration::from_millis(500)).await;
    assert!(matches!(
        c.lease_keep_alive(grant.id).await,
        Err(Error::LeaseNotFound { lease: Some(lease) }) if lease == grant.id
    ));
    assert!(matches!(
        c.lease_time_to_live(grant.id).await,
        Err(Error::LeaseNotFound { .. })
    ));
    assert!(matches!(
        c.put(format!("{p}/k").as_bytes(), b"v", grant.id).await,
        Err(Error::LeaseNotFound { .. })
    ));
    assert!(
        get(c.as_ref(), &format!("{p}/k")).await.is_none(),
        "the rejected txn wrote nothing"
    );
}

/// Revoking a lease deletes its keys at once; a second revoke gives `LeaseNotFound`.
pub async fn lease_revoke_deletes_keys(backend: &dyn TestBackend) {
    let c = backend.client().await;
    let p = unique("revoke");
    let grant = c.lease_grant(Duration::from_secs(600)).await.unwrap();
    for i in 0..2 {
        c.put(format!("{p}/{i}").as_bytes(), b"v", grant.id)
            .await
            .unwrap();
    }
    let kv = get(c.as_ref(), &format!("{p}/0")).await.unwrap();
    assert_eq!(kv.lease, grant.id);
    // Seen through a watch, not by comparing store revisions: other tests may write to a
    // shared server at the same time.
    let mut watch = c.watch(WatchRequest::prefix(p.as_str())).await.unwrap();
    c.lease_revoke(grant.id).await.unwrap();
    let resp = tokio::time::timeout(prompt(backend), watch.next())
        .await
        .expect("the revoke's deletes are seen promptly")
        .expect("watch item")
        .expect("watch ok");
    assert_eq!(
        resp.events.len(),
        2,
        "one revision for all keys, one DELETE per key: {resp:?}"
    );
    assert!(resp.events.iter().all(|e| e.kind == EventKind::Delete));
    assert!(
        c.range(RangeRequest::prefix(p.as_str()))
            .await
            .unwrap()
            .kvs
            .is_empty()
    );
    assert!(matches!(
        c.lease_revoke(grant.id).await,
        Err(Error::LeaseNotFound { .. })
    ));
}

/// A watch from a past revision replays every write in revision order, with no gaps and
/// no duplicates, while 8 writers write concurrently; a watch from now started before the
/// writers sees the same sequence live.
pub async fn watch_from_past_replays_in_order_with_concurrent_writers(backend: &dyn TestBackend) {
    const WRITERS: usize = 8;
    const WRITES: usize = 25;
    let c = backend.client().await;
    let p = unique("replay");
    let start = c.current_revision().await.unwrap() + 1;
    let mut live = c.watch(WatchRequest::prefix(p.as_str())).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let client = backend.client().await;
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..WRITES {
                let key = format!("{p}/{w}");
                revs.push((
                    client
                        .put(key.as_bytes(), i.to_string().as_bytes(), NO_LEASE)
                        .await
                        .unwrap(),
                    key,
                    i,
                ));
                if i % 5 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            revs
        }));
    }
    // A watch from the past, opened while the writers run.
    tokio::task::yield_now().await;
    let mut past = c
        .watch(WatchRequest::prefix(p.as_str()).from_revision(start))
        .await
        .unwrap();
    let mut expected = Vec::new();
    for t in tasks {
        expected.extend(t.await.unwrap());
    }
    expected.sort();
    let total = expected.len();
    for (name, stream) in [("past", &mut past), ("live", &mut live)] {
        let mut seen = Vec::new();
        let mut last_rev = 0;
        while seen.len() < total {
            let resp = tokio::time::timeout(prompt(backend) * 5, stream.next())
                .await
                .unwrap_or_else(|_| panic!("{name} watch stalled after {} events", seen.len()))
                .expect("stream item")
                .expect("watch ok");
            assert!(resp.revision > last_rev, "{name}: revisions rise");
            last_rev = resp.revision;
            for e in resp.events {
                assert_eq!(e.kind, EventKind::Put);
                assert_eq!(e.kv.mod_revision, resp.revision);
                seen.push((
                    e.kv.mod_revision,
                    e.kv.key_str().into_owned(),
                    e.kv.value_str().parse::<usize>().unwrap(),
                ));
            }
        }
        assert_eq!(seen, expected, "{name} watch: every write once, in order");
    }
}

/// A watch from now misses nothing written after the call returned, and reports as its
/// start revision the one after the store's revision.
pub async fn watch_from_now_misses_nothing_after_it_returns(backend: &dyn TestBackend) {
    let c = backend.client().await;
    let writer = backend.client().await;
    let p = unique("now");
    for i in 0..20 {
        let before = c.current_revision().await.unwrap();
        let mut w = c.watch(WatchRequest::key(p.as_str())).await.unwrap();
        assert!(
            w.start_revision() > before,
            "start {} <= {before}",
            w.start_revision()
        );
        let rev = put(writer.as_ref(), &p, &i.to_string()).await;
        let resp = tokio::time::timeout(prompt(backend), w.next())
            .await
            .expect("event delivered")
            .unwrap()
            .unwrap();
        assert_eq!(resp.revision, rev);
        assert_eq!(resp.events[0].kv.value, i.to_string().as_bytes());
        assert!(rev >= w.start_revision());
    }
}

async fn next_event(w: &mut coord_core::WatchStream) -> coord_core::WatchResponse {
    tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("event")
        .expect("stream item")
        .expect("watch ok")
}

/// A key watch sees that key only; a prefix watch sees every key under the prefix.
pub async fn watch_key_vs_prefix(backend: &dyn TestBackend) {
    let c = backend.client().await;
    let p = unique("kvp");
    let a = format!("{p}/a");
    let ab = format!("{p}/ab");
    let mut key_watch = c.watch(WatchRequest::key(a.as_str())).await.unwrap();
    let mut prefix_watch = c.watch(WatchRequest::prefix(a.as_str())).await.unwrap();
    let r1 = put(c.as_ref(), &ab, "1").await;
    let r2 = put(c.as_ref(), &a, "2").await;
    let resp = next_event(&mut key_watch).await;
    assert_eq!(resp.revision, r2, "the key watch skips {ab}");
    assert_eq!(resp.events[0].kv.key, a.as_bytes());
    assert_eq!(next_event(&mut prefix_watch).await.revision, r1);
    assert_eq!(next_event(&mut prefix_watch).await.revision, r2);
}

/// `prev_kv` attaches the previous state to each event; a DELETE carries the key with the
/// deleting revision as `mod_revision`.
pub async fn watch_prev_kv_and_delete_events(backend: &dyn TestBackend) {
    let c = backend.client().await;
    let k = unique("prevkv");
    let r1 = put(c.as_ref(), &k, "one").await;
    let mut w = c
        .watch(WatchRequest::key(k.as_str()).with_prev_kv())
        .await
        .unwrap();
    let r2 = put(c.as_ref(), &k, "two").await;
    c.delete(KeyRange::key(k.as_str())).await.unwrap();
    let mut events = Vec::new();
    while events.len() < 2 {
        let resp = tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .expect("event")
            .unwrap()
            .unwrap();
        events.extend(resp.events);
    }
    assert_eq!(events[0].kind, EventKind::Put);
    assert_eq!(events[0].kv.value, b"two");
    assert_eq!(
        (events[0].kv.create_revision, events[0].kv.mod_revision),
        (r1, r2)
    );
    let prev = events[0].prev_kv.as_ref().expect("prev kv of the put");
    assert_eq!(
        (prev.value.as_slice(), prev.mod_revision),
        (&b"one"[..], r1)
    );
    assert_eq!(events[1].kind, EventKind::Delete);
    assert_eq!(events[1].kv.key, k.as_bytes());
    assert!(events[1].kv.mod_revision > r2);
    let prev = events[1].prev_kv.as_ref().expect("prev kv of the delete");
    assert_eq!(prev.value, b"two");
}

/// After compaction at revision r, a watch starting below r ends with
/// `Compacted { compact_revision: Some(r) }`; compacting at or below r again gives `Compacted`,
/// and a future revision gives `InvalidArgument`. A watch from r still works.
pub async fn watch_compacted_reports_compact_revision(backend: &dyn TestBackend) {
    if skip_unless(
        backend,
        "watch_compacted_reports_compact_revision",
        &[Capability::Compaction],
    ) {
        return;
    }
    let c = backend.client().await;
    let k = unique("compact");
    let first = put(c.as_ref(), &k, "1").await;
    put(c.as_ref(), &k, "2").await;
    let last = put(c.as_ref(), &k, "3").await;
    c.compact(last).await.unwrap();
    let mut w = c
        .watch(WatchRequest::key(k.as_str()).from_revision(first))
        .await
        .unwrap();
    let item = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("compacted watch answers")
        .expect("an error item, not the end of the stream");
    match item {
        Err(Error::Compacted { compact_revision }) => assert_eq!(compact_revision, Some(last)),
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(matches!(
        c.compact(first).await,
        Err(Error::Compacted { .. })
    ));
    let future = c.current_revision().await.unwrap() + 100;
    assert!(matches!(
        c.compact(future).await,
        Err(Error::InvalidArgument { .. })
    ));
    let mut w = c
        .watch(WatchRequest::key(k.as_str()).from_revision(last))
        .await
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("event at the compact revision")
        .unwrap()
        .unwrap();
    assert_eq!(resp.revision, last);
}
