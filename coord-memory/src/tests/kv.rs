//! Revisions, puts, deletes and txn semantics.

use std::time::Duration;

use coord_core::{
    BackendExt, Compare, CompareOp, CoordinationBackend, Delete, Error, KeyRange, NO_LEASE, Put,
    RangeRequest, TxnOp, TxnOpResponse, TxnRequest,
};

use super::kv;
use crate::{MAX_TXN_OPS, MemoryBackend};

#[tokio::test(start_paused = true)]
async fn revisions_start_at_one_and_rise_once_per_change() {
    let b = MemoryBackend::new();
    assert_eq!(b.current_revision().await.unwrap(), 1);
    assert_eq!(b.put(b"a", b"1", NO_LEASE).await.unwrap(), 2);
    assert_eq!(b.put(b"a", b"2", NO_LEASE).await.unwrap(), 3);
    assert_eq!(
        b.get(b"a").await.unwrap().unwrap(),
        kv("a", "2", 2, 3, 2, NO_LEASE)
    );

    // A txn with several writes is one revision; every change carries it.
    let resp = b
        .txn(TxnRequest::new().and_then([
            TxnOp::put("b", "1"),
            TxnOp::put("c", "1"),
            TxnOp::delete("a"),
        ]))
        .await
        .unwrap();
    assert_eq!(resp.revision, 4);
    assert_eq!(b.get(b"b").await.unwrap().unwrap().mod_revision, 4);
    assert_eq!(b.get(b"c").await.unwrap().unwrap().create_revision, 4);
    assert!(b.get(b"a").await.unwrap().is_none());

    // Deleting nothing, reading, and a failed compare with a read-only branch change nothing.
    assert_eq!(b.delete(KeyRange::key("missing")).await.unwrap(), 0);
    let resp = b
        .txn(TxnRequest::new().and_then([TxnOp::range(RangeRequest::key("b"))]))
        .await
        .unwrap();
    assert_eq!(resp.revision, 4);
    let resp = b
        .txn(
            TxnRequest::new()
                .when([Compare::version("b", CompareOp::Equal, 7)])
                .and_then([TxnOp::put("x", "y")])
                .or_else([TxnOp::range(RangeRequest::key("b"))]),
        )
        .await
        .unwrap();
    assert!(!resp.succeeded);
    assert_eq!(resp.revision, 4);
    assert_eq!(b.revision(), 4);
    assert!(b.get(b"x").await.unwrap().is_none());

    // Re-creating a deleted key starts a new life: new create revision, version 1.
    b.put(b"a", b"again", NO_LEASE).await.unwrap();
    assert_eq!(
        b.get(b"a").await.unwrap().unwrap(),
        kv("a", "again", 5, 5, 1, NO_LEASE)
    );
}

/// Every compare target and operator, on a present and an absent key, choosing each branch.
#[tokio::test(start_paused = true)]
async fn compares_follow_etcd_rules_including_absent_keys() {
    let b = MemoryBackend::new();
    let lease = b.lease_grant(Duration::from_secs(60)).await.unwrap().id;
    b.put(b"k", b"a", NO_LEASE).await.unwrap(); // rev 2
    b.put(b"k", b"m", lease).await.unwrap(); // rev 3: create 2, mod 3, version 2, value "m"

    use CompareOp::{Equal as Eq, Greater as Gt, Less as Lt, NotEqual as Ne};
    let present = [
        (Compare::create_revision("k", Eq, 2), true),
        (Compare::create_revision("k", Ne, 2), false),
        (Compare::create_revision("k", Lt, 3), true),
        (Compare::create_revision("k", Gt, 2), false),
        (Compare::mod_revision("k", Eq, 3), true),
        (Compare::mod_revision("k", Ne, 3), false),
        (Compare::mod_revision("k", Lt, 3), false),
        (Compare::mod_revision("k", Gt, 2), true),
        (Compare::version("k", Eq, 2), true),
        (Compare::version("k", Ne, 1), true),
        (Compare::version("k", Lt, 2), false),
        (Compare::version("k", Gt, 1), true),
        (Compare::value("k", Eq, "m"), true),
        (Compare::value("k", Ne, "m"), false),
        (Compare::value("k", Lt, "n"), true),
        (Compare::value("k", Gt, "n"), false),
        (Compare::lease("k", Eq, lease), true),
        (Compare::lease("k", Ne, lease), false),
        (Compare::lease("k", Lt, lease), false),
        (Compare::lease("k", Gt, 0), true),
    ];
    let absent = [
        (Compare::create_revision("nope", Eq, 0), true),
        (Compare::create_revision("nope", Gt, 0), false),
        (Compare::mod_revision("nope", Eq, 0), true),
        (Compare::mod_revision("nope", Lt, 1), true),
        (Compare::version("nope", Eq, 0), true),
        (Compare::version("nope", Ne, 0), false),
        (Compare::lease("nope", Eq, NO_LEASE), true),
        // A value compare on an absent key is false whatever the operator.
        (Compare::value("nope", Eq, ""), false),
        (Compare::value("nope", Ne, "x"), false),
        (Compare::value("nope", Lt, "z"), false),
        (Compare::value("nope", Gt, ""), false),
    ];
    for (compare, holds) in present.into_iter().chain(absent) {
        let resp = b
            .txn(
                TxnRequest::new()
                    .when([compare.clone()])
                    .and_then([TxnOp::put("branch", "success")])
                    .or_else([TxnOp::put("branch", "failure")]),
            )
            .await
            .unwrap();
        assert_eq!(resp.succeeded, holds, "{compare:?}");
        let branch = b.get(b"branch").await.unwrap().unwrap();
        let expected = if holds { "success" } else { "failure" };
        assert_eq!(branch.value_str(), expected, "{compare:?}");
    }

    // All compares must hold.
    let resp = b
        .txn(TxnRequest::new().when([
            Compare::version("k", Eq, 2),
            Compare::create_revision("nope", Eq, 1),
        ]))
        .await
        .unwrap();
    assert!(!resp.succeeded);
}

#[tokio::test(start_paused = true)]
async fn later_ops_in_a_branch_see_earlier_ones() {
    let b = MemoryBackend::new();
    b.put(b"old", b"1", NO_LEASE).await.unwrap(); // rev 2
    let resp = b
        .txn(TxnRequest::new().and_then([
            TxnOp::range(RangeRequest::prefix("")),
            TxnOp::put("new", "2"),
            TxnOp::range(RangeRequest::prefix("")),
            TxnOp::delete("old"),
            TxnOp::range(RangeRequest::prefix("")),
        ]))
        .await
        .unwrap();
    assert_eq!(resp.revision, 3);
    let before = resp.range(0).unwrap();
    assert_eq!(before.revision, 2);
    assert_eq!(before.kvs, vec![kv("old", "1", 2, 2, 1, NO_LEASE)]);
    let middle = resp.range(2).unwrap();
    assert_eq!(middle.revision, 3);
    assert_eq!(
        middle.kvs,
        vec![
            kv("new", "2", 3, 3, 1, NO_LEASE),
            kv("old", "1", 2, 2, 1, NO_LEASE)
        ]
    );
    let after = resp.range(4).unwrap();
    assert_eq!(after.kvs, vec![kv("new", "2", 3, 3, 1, NO_LEASE)]);
    assert_eq!(
        resp.responses[3],
        TxnOpResponse::Delete {
            deleted: 1,
            prev_kvs: Vec::new()
        }
    );
}

#[tokio::test(start_paused = true)]
async fn put_with_missing_lease_rejects_the_whole_txn() {
    let b = MemoryBackend::new();
    let err = b
        .txn(
            TxnRequest::new().and_then([TxnOp::put("a", "1"), TxnOp::put_with_lease("b", "2", 42)]),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::LeaseNotFound { lease: Some(42) }),
        "{err}"
    );
    assert_eq!(b.revision(), 1);
    assert_eq!(b.key_count(), 0);

    // Only the branch that runs is checked.
    let resp = b
        .txn(
            TxnRequest::new()
                .and_then([TxnOp::put("a", "1")])
                .or_else([TxnOp::put_with_lease("b", "2", 42)]),
        )
        .await
        .unwrap();
    assert!(resp.succeeded);
    assert_eq!(b.revision(), 2);
}

#[tokio::test(start_paused = true)]
async fn invalid_txns_are_rejected_before_anything_applies() {
    let b = MemoryBackend::new();
    let bad = [
        TxnRequest::new().and_then([TxnOp::put("", "v")]),
        TxnRequest::new().when([Compare::version("", CompareOp::Equal, 0)]),
        TxnRequest::new().and_then([TxnOp::delete_range(KeyRange::range("b", "a"))]),
        TxnRequest::new().and_then([TxnOp::range(RangeRequest::key("a").limit(-1))]),
        TxnRequest::new().and_then([TxnOp::put_with_lease("a", "v", -1)]),
        // etcd's duplicate-key rules: a key put twice, or put inside a deleted range, in one
        // branch (checked for both branches).
        TxnRequest::new().and_then([TxnOp::put("a", "1"), TxnOp::put("a", "2")]),
        TxnRequest::new().or_else([
            TxnOp::delete_range(KeyRange::prefix("a")),
            TxnOp::put("a/1", "2"),
        ]),
        TxnRequest::new().and_then((0..=MAX_TXN_OPS).map(|i| TxnOp::put(format!("k{i}"), "v"))),
    ];
    for request in bad {
        let err = b.txn(request.clone()).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument { .. }),
            "{request:?}: {err}"
        );
    }
    assert_eq!(b.revision(), 1);

    // Overlapping deletes are fine, and a put may follow a delete of another key.
    let ok = TxnRequest::new().and_then([
        TxnOp::delete_range(KeyRange::prefix("a")),
        TxnOp::delete("a/1"),
        TxnOp::put("b", "1"),
    ]);
    b.txn(ok).await.unwrap();
    assert_eq!(
        b.txn(
            TxnRequest::new().and_then((0..MAX_TXN_OPS).map(|i| TxnOp::put(format!("k{i}"), "v")))
        )
        .await
        .unwrap()
        .revision,
        3
    );
}

#[tokio::test(start_paused = true)]
async fn prev_kv_on_put_and_delete() {
    let b = MemoryBackend::new();
    let put = |value: &str| {
        TxnRequest::new().and_then([TxnOp::Put(Put {
            key: b"k".to_vec(),
            value: value.into(),
            lease: NO_LEASE,
            prev_kv: true,
        })])
    };
    let resp = b.txn(put("1")).await.unwrap();
    assert_eq!(resp.responses[0], TxnOpResponse::Put { prev_kv: None });
    let resp = b.txn(put("2")).await.unwrap();
    assert_eq!(
        resp.responses[0],
        TxnOpResponse::Put {
            prev_kv: Some(kv("k", "1", 2, 2, 1, NO_LEASE))
        }
    );
    b.put(b"k2", b"x", NO_LEASE).await.unwrap();
    let resp = b
        .txn(TxnRequest::new().and_then([TxnOp::Delete(Delete {
            range: KeyRange::prefix("k"),
            prev_kv: true,
        })]))
        .await
        .unwrap();
    assert_eq!(
        resp.responses[0],
        TxnOpResponse::Delete {
            deleted: 2,
            prev_kvs: vec![
                kv("k", "2", 2, 3, 2, NO_LEASE),
                kv("k2", "x", 4, 4, 1, NO_LEASE)
            ]
        }
    );
    assert_eq!(resp.revision, 5);
}

#[tokio::test(start_paused = true)]
async fn deletes_by_key_prefix_and_range() {
    let b = MemoryBackend::new();
    for k in ["a", "b/1", "b/2", "c", "d"] {
        b.put(k.as_bytes(), b"v", NO_LEASE).await.unwrap();
    }
    assert_eq!(b.delete(KeyRange::prefix("b/")).await.unwrap(), 2);
    assert_eq!(b.delete(KeyRange::range("a", "d")).await.unwrap(), 2);
    assert_eq!(b.delete(KeyRange::key("d")).await.unwrap(), 1);
    assert_eq!(b.key_count(), 0);
    assert_eq!(b.revision(), 9);
}

#[tokio::test(start_paused = true)]
async fn put_moves_a_key_between_leases() {
    let b = MemoryBackend::new();
    let l1 = b.lease_grant(Duration::from_secs(10)).await.unwrap().id;
    let l2 = b.lease_grant(Duration::from_secs(10)).await.unwrap().id;
    b.put(b"a", b"1", l1).await.unwrap();
    b.put(b"b", b"1", l1).await.unwrap();
    b.put(b"a", b"2", l2).await.unwrap();
    b.put(b"b", b"2", NO_LEASE).await.unwrap(); // a put without lease detaches, as in etcd
    assert_eq!(b.get(b"a").await.unwrap().unwrap().lease, l2);
    let rev = b.revision();
    b.lease_revoke(l1).await.unwrap();
    assert_eq!(b.revision(), rev, "l1 has no keys left");
    assert_eq!(b.key_count(), 2);
    b.lease_revoke(l2).await.unwrap();
    assert_eq!(b.revision(), rev + 1);
    assert!(b.get(b"a").await.unwrap().is_none());
    assert!(b.get(b"b").await.unwrap().is_some());
}

#[test]
fn new_works_outside_a_runtime_and_clones_share_the_store() {
    let b = MemoryBackend::default();
    let c = b.clone();
    let other = b.new_client();
    assert!(b.same_store(&c) && b.same_store(&other));
    assert!(!b.same_store(&MemoryBackend::new()));
    assert_eq!(b.client_id(), c.client_id());
    assert_ne!(b.client_id(), other.client_id());
    assert_eq!(b.revision(), 1);
    assert_eq!(b.info().name, "memory");
    assert!(format!("{b:?}").contains("MemoryBackend"));
}

#[tokio::test(start_paused = true)]
async fn works_as_a_trait_object() {
    let b: std::sync::Arc<dyn CoordinationBackend> = std::sync::Arc::new(MemoryBackend::new());
    b.put(b"k", b"v", NO_LEASE).await.unwrap();
    assert_eq!(b.get(b"k").await.unwrap().unwrap().value, b"v");
}

/// Compare-and-swap increments from several threads: none lost, none doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_counter_on_a_multi_thread_runtime() {
    let b = MemoryBackend::new();
    b.put(b"n", b"0", NO_LEASE).await.unwrap();
    let lease = b.lease_grant(Duration::from_millis(30)).await.unwrap().id;
    b.put(b"ephemeral", b"", lease).await.unwrap();
    let mut watch = b
        .watch(coord_core::WatchRequest::key("ephemeral"))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let c = b.new_client();
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            while done < 100 {
                let cur = c.get(b"n").await.unwrap().unwrap();
                let n: u64 = cur.value_str().parse().unwrap();
                let resp = c
                    .txn(
                        TxnRequest::new()
                            .when([Compare::mod_revision(
                                "n",
                                CompareOp::Equal,
                                cur.mod_revision,
                            )])
                            .and_then([TxnOp::put("n", (n + 1).to_string())]),
                    )
                    .await
                    .unwrap();
                if resp.succeeded {
                    done += 1;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(b.get(b"n").await.unwrap().unwrap().value, b"400");
    // The reaper works on real time too: the expiry arrives without any call.
    let expired = super::next(&mut watch).await;
    assert_eq!(expired.events[0].kind, coord_core::EventKind::Delete);
    assert_eq!(b.key_count(), 1);
}
