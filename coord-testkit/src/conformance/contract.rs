//! The backend contract itself, as `CoordinationBackend`'s rustdoc states it: revisions,
//! txn, range, leases, watch.

use std::collections::BTreeMap;
use std::time::Duration;

use coord_core::{
    BackendExt, Compare, CompareOp, Delete, Error, EventKind, KeyRange, KeyValue, MAX_TXN_OPS,
    NO_LEASE, Put, RangeRequest, Revision, SortOrder, SortTarget, TxnOp, TxnOpResponse, TxnRequest,
    WatchRequest,
};
use futures::StreamExt;

use super::{Capability, TestBackend, eventually, keys_under, prompt, skip_unless, unique};

async fn put(c: &dyn coord_core::CoordinationBackend, key: &str, value: &str) -> Revision {
    c.put(key.as_bytes(), value.as_bytes(), NO_LEASE)
        .await
        .expect("put")
}

async fn get(c: &dyn coord_core::CoordinationBackend, key: &str) -> Option<KeyValue> {
    c.get(key.as_bytes()).await.expect("get")
}

/// The key of a DELETE event, as etcd reports it: the key and the deleting revision, every
/// other field zero or empty.
fn deleted(key: impl Into<Vec<u8>>, revision: Revision) -> KeyValue {
    KeyValue {
        key: key.into(),
        mod_revision: revision,
        ..KeyValue::default()
    }
}

/// Every write txn raises the revision by exactly one (by one or more where the backend's
/// revisions are sparse, [`coord_core::BackendInfo::dense_revisions`]) and all of its
/// changes carry it; a txn that changes nothing (reads only, a failed compare with a
/// read-only branch, a delete of an absent key) leaves it alone. `version` counts writes,
/// `create_revision` stays.
pub async fn revision_rises_once_per_write_txn(backend: &dyn TestBackend) {
    backend.exclusive().await;
    let c = backend.client().await;
    let dense = c.info().dense_revisions;
    let after = |prev: Revision, got: Revision, what: &str| {
        if dense {
            assert_eq!(got, prev + 1, "{what}");
        } else {
            assert!(got > prev, "{what}: revision {got} after {prev}");
        }
    };
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
    let r1 = resp.revision;
    after(before, r1, "three puts in one txn: one revision");
    for k in [&a, &b, &d] {
        let kv = get(c.as_ref(), k).await.unwrap();
        assert_eq!(
            (kv.create_revision, kv.mod_revision, kv.version),
            (r1, r1, 1)
        );
    }
    let r2 = put(c.as_ref(), &a, "2").await;
    after(r1, r2, "one put");
    let kv = get(c.as_ref(), &a).await.unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (r1, r2, 2)
    );

    // Reads only.
    let resp = c
        .txn(TxnRequest::new().and_then([TxnOp::range(RangeRequest::prefix(p.as_str()))]))
        .await
        .unwrap();
    assert_eq!(
        resp.revision, r2,
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
    assert_eq!(resp.revision, r2);
    // Deleting nothing.
    let n = c
        .delete(KeyRange::key(format!("{p}/absent")))
        .await
        .unwrap();
    assert_eq!(n, 0);
    assert_eq!(
        c.current_revision().await.unwrap(),
        r2,
        "an empty delete changes nothing"
    );
    // A put and a delete in one txn: one revision.
    let resp = c
        .txn(TxnRequest::new().and_then([TxnOp::put(b.as_str(), "2"), TxnOp::delete(d.as_str())]))
        .await
        .unwrap();
    let r3 = resp.revision;
    after(r2, r3, "a put and a delete in one txn: one revision");
    assert_eq!(get(c.as_ref(), &b).await.unwrap().mod_revision, r3);
    assert!(get(c.as_ref(), &d).await.is_none());
    // Deleting the two keys left in one txn: one revision.
    let n = c.delete(KeyRange::prefix(p.as_str())).await.unwrap();
    assert_eq!(n, 2);
    after(
        r3,
        c.current_revision().await.unwrap(),
        "deleting two keys in one txn: one revision",
    );
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
        (
            Compare::create_revision(absent.as_str(), CompareOp::Greater, 0),
            false,
        ),
        (
            Compare::mod_revision(absent.as_str(), CompareOp::Equal, 0),
            true,
        ),
        (
            Compare::mod_revision(absent.as_str(), CompareOp::Less, 1),
            true,
        ),
        (
            Compare::version(absent.as_str(), CompareOp::NotEqual, 0),
            false,
        ),
        (Compare::lease(absent.as_str(), CompareOp::Equal, 0), true),
        (Compare::value(absent.as_str(), CompareOp::Equal, ""), false),
        (
            Compare::value(absent.as_str(), CompareOp::Greater, ""),
            false,
        ),
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
/// the key before the txn's write. A read reports the store revision it saw: the one before
/// the txn until the branch has written, the txn's own after (as etcd's write txns do).
pub async fn txn_later_ops_see_earlier_ones(backend: &dyn TestBackend) {
    let c = backend.client().await;
    let p = unique("seq");
    let (a, b) = (format!("{p}/a"), format!("{p}/b"));
    put(c.as_ref(), &a, "old").await;
    let written = put(c.as_ref(), &b, "b").await;
    let resp = c
        .txn(TxnRequest::new().and_then([
            TxnOp::range(RangeRequest::key(a.as_str())),
            put_returning_prev(&a, "new"),
            TxnOp::range(RangeRequest::key(a.as_str())),
            TxnOp::delete(b.as_str()),
            TxnOp::range(RangeRequest::prefix(p.as_str())),
        ]))
        .await
        .unwrap();
    let unwritten = resp.range(0).unwrap();
    assert_eq!(unwritten.kvs[0].value, b"old");
    // Where revisions are sparse, the one before the txn is only known to lie between the
    // last write seen and the txn's own.
    if c.info().dense_revisions {
        assert_eq!(
            unwritten.revision,
            resp.revision - 1,
            "a read before the branch's first write reports the revision before the txn"
        );
    } else {
        assert!(
            written <= unwritten.revision && unwritten.revision < resp.revision,
            "a read before the branch's first write reports the revision before the txn: \
             {} is not in [{written}, {})",
            unwritten.revision,
            resp.revision
        );
    }
    match &resp.responses[1] {
        TxnOpResponse::Put {
            prev_kv: Some(prev),
        } => assert_eq!(prev.value, b"old"),
        other => panic!("put with prev_kv returned {other:?}"),
    }
    let read = resp.range(2).unwrap();
    assert_eq!(
        read.kvs[0].value, b"new",
        "a read after a put in one branch sees it"
    );
    assert_eq!(read.kvs[0].mod_revision, resp.revision);
    assert_eq!(read.revision, resp.revision);
    match &resp.responses[3] {
        TxnOpResponse::Delete { deleted, .. } => assert_eq!(*deleted, 1),
        other => panic!("delete returned {other:?}"),
    }
    let all = resp.range(4).unwrap();
    let keys: Vec<_> = all.kvs.iter().map(|kv| kv.key_str().into_owned()).collect();
    assert_eq!(
        keys,
        vec![a.clone()],
        "a read after a delete in one branch misses it"
    );
}

fn put_returning_prev(key: &str, value: &str) -> TxnOp {
    TxnOp::Put(Put {
        key: key.into(),
        value: value.into(),
        lease: NO_LEASE,
        prev_kv: true,
    })
}

/// `prev_kv` on a put returns the whole key as it was (none for a new key); on a delete,
/// every deleted key in key order. Without it, neither returns anything.
pub async fn txn_prev_kv_returns_the_keys_before_the_write(backend: &dyn TestBackend) {
    let c = backend.client().await;
    let p = unique("prev");
    let (k, k2) = (format!("{p}/k"), format!("{p}/k2"));
    let resp = c
        .txn(TxnRequest::new().and_then([put_returning_prev(&k, "1")]))
        .await
        .unwrap();
    let created = resp.revision;
    assert_eq!(resp.responses[0], TxnOpResponse::Put { prev_kv: None });
    let resp = c
        .txn(TxnRequest::new().and_then([put_returning_prev(&k, "2")]))
        .await
        .unwrap();
    let first = KeyValue {
        key: k.clone().into(),
        value: b"1".to_vec(),
        create_revision: created,
        mod_revision: created,
        version: 1,
        lease: NO_LEASE,
    };
    assert_eq!(
        resp.responses[0],
        TxnOpResponse::Put {
            prev_kv: Some(first)
        }
    );
    let resp = c
        .txn(TxnRequest::new().and_then([TxnOp::put(k.as_str(), "3")]))
        .await
        .unwrap();
    assert_eq!(resp.responses[0], TxnOpResponse::Put { prev_kv: None });
    let third = resp.revision;
    let lease = c.lease_grant(Duration::from_secs(600)).await.unwrap().id;
    let leased = c.put(k2.as_bytes(), b"x", lease).await.unwrap();
    let resp = c
        .txn(TxnRequest::new().and_then([TxnOp::Delete(Delete {
            range: KeyRange::prefix(p.as_str()),
            prev_kv: true,
        })]))
        .await
        .unwrap();
    assert_eq!(
        resp.responses[0],
        TxnOpResponse::Delete {
            deleted: 2,
            prev_kvs: vec![
                KeyValue {
                    key: k.clone().into(),
                    value: b"3".to_vec(),
                    create_revision: created,
                    mod_revision: third,
                    version: 3,
                    lease: NO_LEASE,
                },
                KeyValue {
                    key: k2.clone().into(),
                    value: b"x".to_vec(),
                    create_revision: leased,
                    mod_revision: leased,
                    version: 1,
                    lease,
                },
            ]
        }
    );
    put(c.as_ref(), &k, "again").await;
    let resp = c
        .txn(TxnRequest::new().and_then([TxnOp::delete(k.as_str())]))
        .await
        .unwrap();
    assert_eq!(
        resp.responses[0],
        TxnOpResponse::Delete {
            deleted: 1,
            prev_kvs: Vec::new()
        }
    );
    c.lease_revoke(lease).await.unwrap();
}

/// A put naming a lease that does not exist fails the whole txn with `LeaseNotFound` for
/// that lease, and nothing of the txn is applied. Only the branch that runs is checked.
pub async fn txn_put_on_a_missing_lease_applies_nothing(backend: &dyn TestBackend) {
    let c = backend.client().await;
    let p = unique("nolease");
    let (a, b) = (format!("{p}/a"), format!("{p}/b"));
    // Revoked, so certainly absent, even on a store other tests share.
    let gone = c.lease_grant(backend.short_ttl()).await.unwrap().id;
    c.lease_revoke(gone).await.unwrap();
    let err = c
        .txn(TxnRequest::new().and_then([
            TxnOp::put(a.as_str(), "1"),
            TxnOp::put_with_lease(b.as_str(), "2", gone),
        ]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::LeaseNotFound { lease } if lease == Some(gone)),
        "{err:?}"
    );
    assert!(keys_under(c.as_ref(), &p).await.is_empty());
    let resp = c
        .txn(
            TxnRequest::new()
                .and_then([TxnOp::put(a.as_str(), "1")])
                .or_else([TxnOp::put_with_lease(b.as_str(), "2", gone)]),
        )
        .await
        .unwrap();
    assert!(resp.succeeded);
    assert!(get(c.as_ref(), &a).await.is_some());
    assert!(get(c.as_ref(), &b).await.is_none());
}

/// A txn that etcd's API layer refuses is rejected whole with `InvalidArgument`, whatever
/// part is bad and in whichever branch: nothing of it is applied. Requests right at the
/// limits are accepted.
pub async fn invalid_txns_are_rejected_whole(backend: &dyn TestBackend) {
    let c = backend.client().await;
    let p = unique("invalid");
    let k = |name: &str| format!("{p}/{name}");
    let marker = k("marker");
    // Every bad request also writes the marker in the branch that would run.
    let marked = || TxnRequest::new().and_then([TxnOp::put(marker.as_str(), "applied")]);
    let puts = |n: usize| (0..n).map(|i| TxnOp::put(k(&format!("many/{i}")), "v"));
    let absent =
        |n: usize| (0..n).map(|i| Compare::version(k(&format!("absent/{i}")), CompareOp::Equal, 0));
    let bad = [
        ("empty put key", marked().and_then([TxnOp::put("", "v")])),
        (
            "empty compare key",
            marked().when([Compare::version("", CompareOp::Equal, 0)]),
        ),
        ("empty delete key", marked().and_then([TxnOp::delete("")])),
        (
            "inverted delete range",
            marked().and_then([TxnOp::delete_range(KeyRange::range(k("b"), k("a")))]),
        ),
        (
            "negative read limit",
            marked().and_then([TxnOp::range(RangeRequest::key(k("a")).limit(-1))]),
        ),
        (
            "negative lease",
            marked().and_then([TxnOp::put_with_lease(k("a"), "v", -1)]),
        ),
        (
            "a key put twice",
            marked().and_then([TxnOp::put(k("a"), "1"), TxnOp::put(k("a"), "2")]),
        ),
        (
            "a key put after a delete of its range",
            marked().and_then([
                TxnOp::delete_range(KeyRange::prefix(k("d/"))),
                TxnOp::put(k("d/1"), "v"),
            ]),
        ),
        (
            "a key put before its delete",
            marked().and_then([TxnOp::put(k("a"), "v"), TxnOp::delete(k("a"))]),
        ),
        (
            "a bad branch that does not run",
            marked().or_else([TxnOp::put(k("a"), "1"), TxnOp::put(k("a"), "2")]),
        ),
        ("too many operations", marked().and_then(puts(MAX_TXN_OPS))),
        (
            "too many operations in the branch that does not run",
            marked().or_else(puts(MAX_TXN_OPS + 1)),
        ),
        ("too many compares", marked().when(absent(MAX_TXN_OPS + 1))),
    ];
    for (what, request) in bad {
        match c.txn(request).await {
            Err(Error::InvalidArgument { .. }) => {}
            other => panic!("{what}: expected InvalidArgument, got {other:?}"),
        }
    }
    assert!(
        keys_under(c.as_ref(), &p).await.is_empty(),
        "a rejected txn applies nothing"
    );

    let at_limits = TxnRequest::new()
        .when(absent(MAX_TXN_OPS))
        .and_then(puts(MAX_TXN_OPS))
        .or_else(puts(MAX_TXN_OPS));
    assert!(c.txn(at_limits).await.expect("at the limits").succeeded);
    assert_eq!(keys_under(c.as_ref(), &k("many/")).await.len(), MAX_TXN_OPS);
    // Overlapping deletes, a put beside a deleted range, and one key put in both branches.
    let fine = TxnRequest::new()
        .and_then([
            TxnOp::delete_range(KeyRange::prefix(k("many/"))),
            TxnOp::delete(k("many/1")),
            TxnOp::put(k("b"), "success"),
        ])
        .or_else([TxnOp::put(k("b"), "failure")]);
    assert!(c.txn(fine).await.expect("valid txn").succeeded);
    assert!(keys_under(c.as_ref(), &k("many/")).await.is_empty());
    assert_eq!(get(c.as_ref(), &k("b")).await.unwrap().value, b"success");
}

/// A delete of one key, of a prefix or of a `[start, end)` range removes exactly the keys
/// in it and says how many.
pub async fn delete_by_key_prefix_and_range(backend: &dyn TestBackend) {
    let c = backend.client().await;
    let p = unique("del");
    let k = |name: &str| format!("{p}/{name}");
    for name in ["a", "b/1", "b/2", "c", "d", "e"] {
        put(c.as_ref(), &k(name), "v").await;
    }
    assert_eq!(c.delete(KeyRange::prefix(k("b/"))).await.unwrap(), 2);
    assert_eq!(
        c.delete(KeyRange::range(k("a"), k("d"))).await.unwrap(),
        2,
        "a and c; d is the excluded end"
    );
    assert_eq!(c.delete(KeyRange::key(k("d"))).await.unwrap(), 1);
    assert_eq!(c.delete(KeyRange::key(k("d"))).await.unwrap(), 0);
    let left: Vec<_> = keys_under(c.as_ref(), &p)
        .await
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(left, [k("e").into_bytes()]);
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
            sorted(SortTarget::Key, SortOrder::Ascend),
            vec!["a", "b", "c", "d", "e"],
        ),
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
    // Filter, then sort, then limit; `more` when the limit cut off keys that passed the
    // filters; `count` taken before the filters and the limit, so always 5 here.
    let all = || RangeRequest::prefix(pre.as_str());
    let b_to_a = || {
        all()
            .min_create_revision(created["b"])
            .max_create_revision(created["a"])
    };
    let cases: [(&str, RangeRequest, &[&str], bool); 10] = [
        (
            "limit",
            sorted(SortTarget::CreateRevision, SortOrder::Ascend).limit(2),
            &["d", "b"],
            true,
        ),
        (
            "a limit equal to the number of keys",
            all().limit(5),
            &["a", "b", "c", "d", "e"],
            false,
        ),
        // etcd's WithLastCreate + WithMaxCreateRev: the predecessor query of the recipes.
        (
            "newest created at or before a",
            RangeRequest::last_created_before(pre.as_str(), created["a"]),
            &["a"],
            true,
        ),
        (
            "newest created before a",
            RangeRequest::last_created_before(pre.as_str(), created["a"] - 1),
            &["e"],
            true,
        ),
        (
            "oldest",
            RangeRequest::first_created(pre.as_str()),
            &["d"],
            true,
        ),
        (
            "min create revision, sorted, limited",
            all()
                .min_create_revision(created["e"])
                .sort(SortTarget::CreateRevision, SortOrder::Ascend)
                .limit(2),
            &["e", "a"],
            true,
        ),
        (
            "min and max create revision",
            b_to_a(),
            &["a", "b", "e"],
            false,
        ),
        (
            "min and max create revision, sorted, limited",
            b_to_a().sort(SortTarget::Key, SortOrder::Descend).limit(2),
            &["e", "b"],
            true,
        ),
        (
            "a filter that lets no more keys through than the limit",
            all().min_create_revision(created["a"]).limit(2),
            &["a", "c"],
            false,
        ),
        (
            "a filter that lets nothing through",
            all().max_create_revision(created["d"] - 1),
            &[],
            false,
        ),
    ];
    for (what, req, want, more) in cases {
        let r = c.range(req).await.unwrap();
        assert_eq!(
            (names(&r.kvs), r.more, r.count),
            (want.iter().map(|n| n.to_string()).collect(), more, 5),
            "{what}"
        );
    }
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

/// `keys_only` returns metadata without values; `count_only` returns the count alone,
/// and never `more`, whatever the limit.
pub async fn range_keys_only_and_count_only(backend: &dyn TestBackend) {
    let c = backend.client().await;
    let p = unique("konly");
    for i in 0..3 {
        put(c.as_ref(), &format!("{p}/{i}"), "value").await;
    }
    put(c.as_ref(), &format!("{p}/1"), "value").await;
    let r = c
        .range(RangeRequest::prefix(p.as_str()).keys_only())
        .await
        .unwrap();
    assert_eq!(r.kvs.len(), 3);
    assert!(
        r.kvs
            .iter()
            .all(|kv| kv.value.is_empty() && kv.create_revision > 0)
    );
    assert_eq!(r.kvs[1].version, 2);
    assert!(r.kvs[1].mod_revision > r.kvs[1].create_revision);
    let r = c
        .range(RangeRequest::prefix(p.as_str()).keys_only().limit(2))
        .await
        .unwrap();
    assert_eq!((r.kvs.len(), r.more, r.count), (2, true, 3));
    assert!(r.kvs.iter().all(|kv| kv.value.is_empty()));
    let r = c
        .range(RangeRequest::prefix(p.as_str()).count_only())
        .await
        .unwrap();
    assert!(r.kvs.is_empty());
    assert_eq!(r.count, 3);
    let r = c
        .range(RangeRequest::prefix(p.as_str()).count_only().limit(1))
        .await
        .unwrap();
    assert!(r.kvs.is_empty());
    assert_eq!((r.count, r.more), (3, false));
}

/// A key range is that key alone, not a prefix; a prefix ending in 0xff bytes ends at the
/// next key that does not start with it.
pub async fn range_key_is_one_key_and_prefixes_may_end_in_0xff(backend: &dyn TestBackend) {
    let c = backend.client().await;
    let p = unique("bytes");
    let key = |tail: &[u8]| [p.as_bytes(), tail].concat();
    for tail in [
        &b"/a"[..],
        b"/ab",
        b"/\xfe",
        b"/\xff\xff",
        b"/\xff\xff\x01",
        b"0",
    ] {
        c.put(&key(tail), b"v", NO_LEASE).await.unwrap();
    }
    let r = c.range(RangeRequest::key(key(b"/a"))).await.unwrap();
    assert_eq!(r.kvs.len(), 1);
    assert_eq!((r.kvs[0].key.clone(), r.count), (key(b"/a"), 1));
    let r = c.range(RangeRequest::key(key(b"/"))).await.unwrap();
    assert_eq!((r.kvs.len(), r.count), (0, 0));
    let r = c
        .range(RangeRequest::prefix(key(b"/\xff\xff")))
        .await
        .unwrap();
    let keys: Vec<_> = r.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, [key(b"/\xff\xff"), key(b"/\xff\xff\x01")]);
    assert_eq!(r.count, 2);
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
    let mut watch = c
        .watch(WatchRequest::prefix(p.as_str()).with_prev_kv())
        .await
        .unwrap();
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
    for (i, e) in resp.events.iter().enumerate() {
        assert_eq!(e.kind, EventKind::Delete);
        assert_eq!(e.kv, deleted(format!("{p}/{i}"), resp.revision));
        let prev = e.prev_kv.as_ref().expect("prev kv of the expired key");
        assert_eq!((prev.value.as_slice(), prev.lease), (&b"v"[..], grant.id));
    }
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
        Err(Error::LeaseNotFound { lease }) if lease == Some(grant.id)
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
    for result in [
        c.lease_revoke(grant.id).await,
        c.lease_keep_alive(grant.id).await.map(drop),
        c.lease_time_to_live(grant.id).await.map(drop),
    ] {
        assert!(
            matches!(result, Err(Error::LeaseNotFound { lease }) if lease == Some(grant.id)),
            "{result:?}"
        );
    }
}

/// A grant gives a positive id that no other live lease has, for at least the TTL asked;
/// a zero TTL is `InvalidArgument`.
pub async fn lease_grant_gives_distinct_positive_ids(backend: &dyn TestBackend) {
    let c = backend.client().await;
    let ttl = backend.short_ttl();
    let grants = [
        c.lease_grant(ttl).await.unwrap(),
        c.lease_grant(ttl).await.unwrap(),
    ];
    assert!(grants[0].id > 0 && grants[1].id > 0, "{grants:?}");
    assert_ne!(grants[0].id, grants[1].id);
    assert!(grants.iter().all(|g| g.ttl >= ttl), "{grants:?}");
    assert!(matches!(
        c.lease_grant(Duration::ZERO).await,
        Err(Error::InvalidArgument { .. })
    ));
    for g in grants {
        c.lease_revoke(g.id).await.unwrap();
    }
}

/// Leases change the key space only through their keys: granting, keeping alive, and
/// revoking or expiring a lease that has no keys (any more) make no revision.
pub async fn leases_without_keys_never_change_the_revision(backend: &dyn TestBackend) {
    backend.exclusive().await;
    let c = backend.client().await;
    let k = unique("keyless");
    let ttl = backend.short_ttl();
    let before = c.current_revision().await.unwrap();
    let emptied = c.lease_grant(ttl).await.unwrap().id;
    let unused = c.lease_grant(ttl).await.unwrap().id;
    c.lease_keep_alive(unused).await.unwrap();
    assert_eq!(c.current_revision().await.unwrap(), before);
    c.put(k.as_bytes(), b"v", emptied).await.unwrap();
    c.delete(KeyRange::key(k.as_str())).await.unwrap();
    let after = c.current_revision().await.unwrap();
    if c.info().dense_revisions {
        assert_eq!(after, before + 2, "a put and a delete");
    } else {
        assert!(after > before, "a put and a delete: {after} after {before}");
    }
    c.lease_revoke(unused).await.unwrap();
    assert_eq!(
        c.current_revision().await.unwrap(),
        after,
        "revoking a lease without keys"
    );
    eventually(ttl * 3, "the emptied lease expires", || async {
        matches!(
            c.lease_time_to_live(emptied).await,
            Err(Error::LeaseNotFound { .. })
        )
    })
    .await;
    assert_eq!(
        c.current_revision().await.unwrap(),
        after,
        "expiry of a lease whose keys were deleted"
    );
}

/// A put moves a key to the lease it names, or off any lease when it names none; the lease
/// the key left no longer deletes it.
pub async fn put_moves_a_key_between_leases(backend: &dyn TestBackend) {
    let c = backend.client().await;
    let p = unique("move");
    let (a, b) = (format!("{p}/a"), format!("{p}/b"));
    let first = c.lease_grant(Duration::from_secs(600)).await.unwrap().id;
    let second = c.lease_grant(Duration::from_secs(600)).await.unwrap().id;
    c.put(a.as_bytes(), b"1", first).await.unwrap();
    c.put(b.as_bytes(), b"1", first).await.unwrap();
    c.put(a.as_bytes(), b"2", second).await.unwrap();
    c.put(b.as_bytes(), b"2", NO_LEASE).await.unwrap();
    assert_eq!(get(c.as_ref(), &a).await.unwrap().lease, second);
    assert_eq!(get(c.as_ref(), &b).await.unwrap().lease, NO_LEASE);
    c.lease_revoke(first).await.unwrap();
    assert_eq!(
        keys_under(c.as_ref(), &p).await.len(),
        2,
        "the first lease has no keys left"
    );
    c.lease_revoke(second).await.unwrap();
    assert!(get(c.as_ref(), &a).await.is_none());
    assert_eq!(get(c.as_ref(), &b).await.unwrap().value, b"2");
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

/// `prev_kv` attaches the previous state to each event (none for a key's creation); a
/// DELETE carries the key and the deleting revision only. Without `prev_kv`, no event has
/// one.
pub async fn watch_prev_kv_and_delete_events(backend: &dyn TestBackend) {
    let c = backend.client().await;
    let k = unique("prevkv");
    let mut with = c
        .watch(WatchRequest::key(k.as_str()).with_prev_kv())
        .await
        .unwrap();
    let mut without = c.watch(WatchRequest::key(k.as_str())).await.unwrap();
    let r1 = put(c.as_ref(), &k, "one").await;
    let r2 = put(c.as_ref(), &k, "two").await;
    c.delete(KeyRange::key(k.as_str())).await.unwrap();
    let mut events = Vec::new();
    while events.len() < 3 {
        events.extend(next_event(&mut with).await.events);
    }
    assert_eq!(events[0].kind, EventKind::Put);
    assert_eq!(events[0].prev_kv, None, "the key did not exist");
    assert_eq!(events[1].kind, EventKind::Put);
    assert_eq!(events[1].kv.value, b"two");
    assert_eq!(
        (events[1].kv.create_revision, events[1].kv.mod_revision),
        (r1, r2)
    );
    let prev = events[1].prev_kv.as_ref().expect("prev kv of the update");
    assert_eq!(
        (prev.value.as_slice(), prev.mod_revision),
        (&b"one"[..], r1)
    );
    assert_eq!(events[2].kind, EventKind::Delete);
    assert!(events[2].kv.mod_revision > r2);
    assert_eq!(events[2].kv, deleted(k.as_str(), events[2].kv.mod_revision));
    let prev = events[2].prev_kv.as_ref().expect("prev kv of the delete");
    assert_eq!(
        (
            prev.value.as_slice(),
            prev.create_revision,
            prev.mod_revision
        ),
        (&b"two"[..], r1, r2)
    );
    let mut plain = Vec::new();
    while plain.len() < 3 {
        plain.extend(next_event(&mut without).await.events);
    }
    assert!(plain.iter().all(|e| e.prev_kv.is_none()), "{plain:?}");
}

/// A watch hands out one response per revision: the events of one txn come together, in
/// the order of its operations. A watch from the past replays them so, then goes on live
/// without a gap; `start_revision` is the revision asked for.
pub async fn watch_delivers_a_txn_as_one_response_in_op_order(backend: &dyn TestBackend) {
    let c = backend.client().await;
    let p = unique("group");
    let w = |name: &str| format!("{p}/w/{name}");
    let r1 = put(c.as_ref(), &w("a"), "1").await;
    let r2 = put(c.as_ref(), &w("b"), "2").await;
    put(c.as_ref(), &format!("{p}/outside"), "x").await;
    let r3 = c
        .txn(TxnRequest::new().and_then([
            TxnOp::put(w("c"), "3"),
            TxnOp::put(w("a"), "1b"),
            TxnOp::put(format!("{p}/outside2"), "x"),
        ]))
        .await
        .unwrap()
        .revision;
    let r4 = c
        .txn(TxnRequest::new().and_then([TxnOp::delete(w("b"))]))
        .await
        .unwrap()
        .revision;
    let mut watch = c
        .watch(
            WatchRequest::prefix(format!("{p}/w/"))
                .from_revision(r1)
                .with_prev_kv(),
        )
        .await
        .unwrap();
    assert_eq!(watch.start_revision(), r1);
    let summary = |resp: &coord_core::WatchResponse| {
        let events: Vec<_> = resp
            .events
            .iter()
            .map(|e| {
                (
                    e.kind,
                    e.kv.key_str().into_owned(),
                    e.kv.value_str().into_owned(),
                )
            })
            .collect();
        (resp.revision, events)
    };
    let put_of = |key: String, value: &str| (EventKind::Put, key, value.to_owned());
    assert_eq!(
        summary(&next_event(&mut watch).await),
        (r1, vec![put_of(w("a"), "1")])
    );
    assert_eq!(
        summary(&next_event(&mut watch).await),
        (r2, vec![put_of(w("b"), "2")])
    );
    let txn = next_event(&mut watch).await;
    assert_eq!(
        summary(&txn),
        (r3, vec![put_of(w("c"), "3"), put_of(w("a"), "1b")])
    );
    assert_eq!(txn.events[0].prev_kv, None);
    let prev = txn.events[1].prev_kv.as_ref().expect("prev kv of a");
    assert_eq!((prev.value.as_slice(), prev.mod_revision), (&b"1"[..], r1));
    let delete = next_event(&mut watch).await;
    assert_eq!(delete.revision, r4);
    assert_eq!(delete.events.len(), 1);
    assert_eq!(delete.events[0].kind, EventKind::Delete);
    assert_eq!(delete.events[0].kv, deleted(w("b"), r4));
    let live = put(c.as_ref(), &w("a"), "live").await;
    assert_eq!(
        summary(&next_event(&mut watch).await),
        (live, vec![put_of(w("a"), "live")])
    );
}

/// A watch from a revision still to come reports it as its start and delivers nothing
/// before it; a `[start, end)` watch sees the keys in the range only.
pub async fn watch_from_a_future_revision_starts_there(backend: &dyn TestBackend) {
    let c = backend.client().await;
    let p = unique("future");
    let (inside, end) = (format!("{p}/n"), format!("{p}/o"));
    let start = c.current_revision().await.unwrap() + 3;
    let mut watch = c
        .watch(
            WatchRequest::new(KeyRange::range(format!("{p}/m"), end.as_str())).from_revision(start),
        )
        .await
        .unwrap();
    assert_eq!(watch.start_revision(), start);
    let mut written = Vec::new();
    for i in 0..4 {
        written.push(put(c.as_ref(), &inside, &i.to_string()).await);
        put(c.as_ref(), &end, "outside the range").await;
    }
    // Other tests may write to a shared store meanwhile, so which writes fall before the
    // start is known only now.
    let expected: Vec<Revision> = written.into_iter().filter(|r| *r >= start).collect();
    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        let resp = next_event(&mut watch).await;
        for e in &resp.events {
            assert_eq!(e.kv.key, inside.as_bytes());
        }
        seen.push(resp.revision);
    }
    assert_eq!(seen, expected);
}

/// Malformed reads and watches are `InvalidArgument`: an empty key, an empty or inverted
/// range, a negative limit, create-revision filter or start revision.
pub async fn malformed_reads_and_watches_are_invalid_argument(backend: &dyn TestBackend) {
    let c = backend.client().await;
    let p = unique("malformed");
    let (a, b) = (format!("{p}/a"), format!("{p}/b"));
    for request in [
        RangeRequest::key(""),
        RangeRequest::new(KeyRange::range(a.as_str(), a.as_str())),
        RangeRequest::new(KeyRange::range(b.as_str(), a.as_str())),
        RangeRequest::prefix(p.as_str()).limit(-1),
        RangeRequest::prefix(p.as_str()).min_create_revision(-1),
        RangeRequest::prefix(p.as_str()).max_create_revision(-1),
    ] {
        let result = c.range(request.clone()).await;
        assert!(
            matches!(result, Err(Error::InvalidArgument { .. })),
            "{request:?}: {result:?}"
        );
    }
    for request in [
        WatchRequest::key(""),
        WatchRequest::new(KeyRange::range(b.as_str(), a.as_str())),
        WatchRequest::key(a.as_str()).from_revision(-1),
    ] {
        let result = c.watch(request.clone()).await.map(|w| w.start_revision());
        assert!(
            matches!(result, Err(Error::InvalidArgument { .. })),
            "{request:?}: {result:?}"
        );
    }
}

/// After compaction at revision r, a watch starting below r ends with
/// `Compacted { compact_revision: r }` and then ends; compacting at or below r again gives
/// `Compacted` with r, and revision 0 or a future revision gives `InvalidArgument`. Keys
/// survive compaction, a watch from r still works and open watches are not disturbed.
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
    let mut open = c.watch(WatchRequest::key(k.as_str())).await.unwrap();
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
    let after = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("the compacted watch ends");
    assert!(after.is_none(), "nothing after Compacted: {after:?}");
    for below in [first, last] {
        let result = c.compact(below).await;
        assert!(
            matches!(result, Err(Error::Compacted { compact_revision }) if compact_revision == Some(last)),
            "compact({below}) after compact({last}): {result:?}"
        );
    }
    let future = c.current_revision().await.unwrap() + 100;
    for bad in [0, future] {
        let result = c.compact(bad).await;
        assert!(
            matches!(result, Err(Error::InvalidArgument { .. })),
            "compact({bad}): {result:?}"
        );
    }
    assert_eq!(get(c.as_ref(), &k).await.unwrap().version, 3);
    let mut w = c
        .watch(WatchRequest::key(k.as_str()).from_revision(last))
        .await
        .unwrap();
    assert_eq!(next_event(&mut w).await.revision, last);
    let newer = put(c.as_ref(), &k, "4").await;
    assert_eq!(next_event(&mut w).await.revision, newer);
    assert_eq!(
        next_event(&mut open).await.revision,
        newer,
        "a watch open across the compaction"
    );
}

/// A watch from revision 0 starts "now", as in etcd's own API: it sees the next write and
/// nothing before it.
pub async fn watch_from_revision_zero_means_now(backend: &dyn TestBackend) {
    let c = backend.client().await;
    let key = format!("{}/k", unique("watch-zero"));
    c.put(key.as_bytes(), b"old", NO_LEASE).await.unwrap();
    let mut zero = c
        .watch(WatchRequest::key(key.as_str()).from_revision(0))
        .await
        .unwrap();
    let rev = c.put(key.as_bytes(), b"new", NO_LEASE).await.unwrap();
    let resp = tokio::time::timeout(prompt(backend), zero.next())
        .await
        .expect("the next write arrives")
        .unwrap()
        .unwrap();
    assert_eq!(resp.revision, rev, "nothing before the watch was replayed");
    assert_eq!(resp.events[0].kv.value, b"new");
}
