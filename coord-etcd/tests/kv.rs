//! KV, txn, range and namespace behaviour against a real etcd.

use std::time::Duration;

use coord_core::{
    BackendExt, Compare, CompareOp, CoordinationBackend, Error, KeyRange, NO_LEASE, Put,
    RangeRequest, SortOrder, SortTarget, TxnOp, TxnOpResponse, TxnRequest,
};
use coord_etcd::{EtcdBackend, EtcdOptions};

mod support;
use support::own_server::{backend, backend_ns, local_etcd, options};

#[tokio::test]
async fn connect_to_a_closed_port_fails_with_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = std::time::Instant::now();
    let err = EtcdBackend::connect(
        EtcdOptions::new([format!("127.0.0.1:{port}")])
            .user("root", "s3cr3t-pw")
            .connect_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("s3cr3t-pw"), "{shown}");
}

#[tokio::test]
async fn connect_without_endpoints_is_invalid() {
    let err = EtcdBackend::connect(EtcdOptions::new(Vec::<String>::new()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
}

#[tokio::test]
async fn put_get_delete_and_metadata() {
    let Some(server) = local_etcd().await else {
        return;
    };
    let b = backend(&server).await;
    assert_eq!(b.info().name, "etcd");
    assert!(b.get(b"k").await.unwrap().is_none());
    let r1 = b.put(b"k", b"v1", NO_LEASE).await.unwrap();
    let r2 = b.put(b"k", b"v2", NO_LEASE).await.unwrap();
    assert_eq!(r2, r1 + 1);
    let kv = b.get(b"k").await.unwrap().unwrap();
    assert_eq!(kv.key, b"k");
    assert_eq!(kv.value, b"v2");
    assert_eq!(kv.create_revision, r1);
    assert_eq!(kv.mod_revision, r2);
    assert_eq!(kv.version, 2);
    assert_eq!(kv.lease, NO_LEASE);
    assert_eq!(b.current_revision().await.unwrap(), r2);
    assert_eq!(b.delete(KeyRange::key("k")).await.unwrap(), 1);
    assert!(b.get(b"k").await.unwrap().is_none());
    assert_eq!(b.current_revision().await.unwrap(), r2 + 1);
    assert_eq!(b.delete(KeyRange::key("k")).await.unwrap(), 0);
    // A delete of nothing does not bump the revision.
    assert_eq!(b.current_revision().await.unwrap(), r2 + 1);
}

#[tokio::test]
async fn txn_compares_pick_the_branch() {
    let Some(server) = local_etcd().await else {
        return;
    };
    let b = backend(&server).await;
    b.put(b"d", b"doomed", NO_LEASE).await.unwrap();
    let rev = b.put(b"a", b"1", NO_LEASE).await.unwrap();

    // Every compare kind, holding.
    let ok = b
        .txn(
            TxnRequest::new()
                .when([
                    Compare::create_revision("a", CompareOp::Equal, rev),
                    Compare::mod_revision("a", CompareOp::Equal, rev),
                    Compare::version("a", CompareOp::Equal, 1),
                    Compare::value("a", CompareOp::Equal, "1"),
                    Compare::value("a", CompareOp::Less, "2"),
                    Compare::lease("a", CompareOp::Equal, NO_LEASE),
                    Compare::create_revision("absent", CompareOp::Equal, 0),
                    Compare::version("a", CompareOp::Greater, 0),
                    Compare::mod_revision("a", CompareOp::NotEqual, rev + 5),
                ])
                .and_then([
                    TxnOp::Put(Put {
                        key: b"a".to_vec(),
                        value: b"2".to_vec(),
                        lease: NO_LEASE,
                        prev_kv: true,
                    }),
                    TxnOp::range(RangeRequest::key("a")),
                    // etcd refuses a txn that writes one key twice ("duplicate key").
                    TxnOp::Delete(coord_core::Delete {
                        range: KeyRange::key("d"),
                        prev_kv: true,
                    }),
                ])
                .or_else([TxnOp::put("failed", "x")]),
        )
        .await
        .unwrap();
    assert!(ok.succeeded);
    assert_eq!(ok.revision, rev + 1);
    assert_eq!(ok.responses.len(), 3);
    match &ok.responses[0] {
        TxnOpResponse::Put { prev_kv: Some(p) } => assert_eq!(p.value, b"1"),
        other => panic!("{other:?}"),
    }
    // Later ops see earlier ones.
    let read = ok.range(1).unwrap();
    assert_eq!(read.kvs[0].value, b"2");
    assert_eq!(read.revision, rev + 1);
    match &ok.responses[2] {
        TxnOpResponse::Delete {
            deleted: 1,
            prev_kvs,
        } => {
            assert_eq!(prev_kvs[0].value, b"doomed")
        }
        other => panic!("{other:?}"),
    }
    assert!(b.get(b"failed").await.unwrap().is_none());

    // A failing compare runs the other branch.
    let failed = b
        .txn(
            TxnRequest::new()
                .when([Compare::value("d", CompareOp::Equal, "doomed")]) // absent: false
                .and_then([TxnOp::put("then", "x")])
                .or_else([
                    TxnOp::put("else", "y"),
                    TxnOp::range(RangeRequest::key("else")),
                ]),
        )
        .await
        .unwrap();
    assert!(!failed.succeeded);
    assert_eq!(failed.responses.len(), 2);
    assert!(b.get(b"then").await.unwrap().is_none());
    assert_eq!(failed.range(1).unwrap().kvs[0].value, b"y");

    // Read-only txn leaves the revision alone.
    let before = b.current_revision().await.unwrap();
    let ro = b
        .txn(TxnRequest::new().and_then([TxnOp::range(RangeRequest::key("else"))]))
        .await
        .unwrap();
    assert_eq!(ro.revision, before);

    // A put with an unknown lease rejects the whole txn.
    let err = b
        .txn(TxnRequest::new().and_then([TxnOp::put_with_lease("l", "v", 0x1234)]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::LeaseNotFound {
                lease: Some(0x1234)
            }
        ),
        "{err:?}"
    );
    // Bad input is caught before the call.
    let err = b
        .txn(TxnRequest::new().and_then([TxnOp::put("", "v")]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
}

#[tokio::test]
async fn range_sort_limit_more_count_and_filters() {
    let Some(server) = local_etcd().await else {
        return;
    };
    let b = backend(&server).await;
    // Created in the order c, a, d, b; then a is updated.
    let rc = b.put(b"p/c", b"3", NO_LEASE).await.unwrap();
    let ra = b.put(b"p/a", b"1", NO_LEASE).await.unwrap();
    let rd = b.put(b"p/d", b"4", NO_LEASE).await.unwrap();
    let rb = b.put(b"p/b", b"2", NO_LEASE).await.unwrap();
    let ra2 = b.put(b"p/a", b"1b", NO_LEASE).await.unwrap();
    b.put(b"q", b"outside", NO_LEASE).await.unwrap();
    let keys = |r: &coord_core::RangeResponse| {
        r.kvs
            .iter()
            .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
            .collect::<Vec<_>>()
    };

    let all = b.range(RangeRequest::prefix("p/")).await.unwrap();
    assert_eq!(keys(&all), ["p/a", "p/b", "p/c", "p/d"]);
    assert_eq!(all.count, 4);
    assert!(!all.more);
    assert_eq!(all.revision, ra2 + 1);

    let by_create = b
        .range(RangeRequest::prefix("p/").sort(SortTarget::CreateRevision, SortOrder::Ascend))
        .await
        .unwrap();
    assert_eq!(keys(&by_create), ["p/c", "p/a", "p/d", "p/b"]);
    let by_mod_desc = b
        .range(RangeRequest::prefix("p/").sort(SortTarget::ModRevision, SortOrder::Descend))
        .await
        .unwrap();
    assert_eq!(keys(&by_mod_desc), ["p/a", "p/b", "p/d", "p/c"]);
    let key_desc = b
        .range(RangeRequest::prefix("p/").sort(SortTarget::Key, SortOrder::Descend))
        .await
        .unwrap();
    assert_eq!(keys(&key_desc), ["p/d", "p/c", "p/b", "p/a"]);

    let limited = b.range(RangeRequest::prefix("p/").limit(2)).await.unwrap();
    assert_eq!(keys(&limited), ["p/a", "p/b"]);
    assert!(limited.more);
    assert_eq!(limited.count, 4);

    let first = b.range(RangeRequest::first_created("p/")).await.unwrap();
    assert_eq!(keys(&first), ["p/c"]);
    assert!(first.more);

    // Filter, then sort, then limit.
    let pred = b
        .range(RangeRequest::last_created_before("p/", rd - 1))
        .await
        .unwrap();
    assert_eq!(keys(&pred), ["p/a"]);
    assert_eq!(pred.kvs[0].create_revision, ra);
    let min = b
        .range(RangeRequest::prefix("p/").min_create_revision(rd))
        .await
        .unwrap();
    assert_eq!(keys(&min), ["p/b", "p/d"]);
    assert_eq!(min.count, 4, "count is taken before the filters");
    let window = b
        .range(
            RangeRequest::prefix("p/")
                .min_create_revision(ra)
                .max_create_revision(rb),
        )
        .await
        .unwrap();
    assert_eq!(keys(&window), ["p/a", "p/b", "p/d"]);
    assert!(rc < ra);

    let k_only = b
        .range(RangeRequest::prefix("p/").keys_only())
        .await
        .unwrap();
    assert_eq!(keys(&k_only).len(), 4);
    assert!(k_only.kvs.iter().all(|kv| kv.value.is_empty()));
    let c_only = b
        .range(RangeRequest::prefix("p/").count_only())
        .await
        .unwrap();
    assert!(c_only.kvs.is_empty());
    assert_eq!(c_only.count, 4);

    let ranged = b
        .range(RangeRequest::new(KeyRange::range("p/b", "p/d")))
        .await
        .unwrap();
    assert_eq!(keys(&ranged), ["p/b", "p/c"]);
    let everything = b.range(RangeRequest::prefix("")).await.unwrap();
    assert_eq!(everything.count, 5);

    let err = b
        .range(RangeRequest::new(KeyRange::range("b", "a")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
}

#[tokio::test]
async fn namespaces_are_isolated() {
    let Some(server) = local_etcd().await else {
        return;
    };
    let raw = backend(&server).await;
    let a = backend_ns(&server, "ns-a/").await;
    let b = backend_ns(&server, "ns-b/").await;
    raw.put(b"ns-a", b"just outside", NO_LEASE).await.unwrap();
    raw.put(b"ns-a0", b"just outside", NO_LEASE).await.unwrap();
    a.put(b"k", b"from a", NO_LEASE).await.unwrap();
    b.put(b"k", b"from b", NO_LEASE).await.unwrap();

    assert_eq!(a.get(b"k").await.unwrap().unwrap().value, b"from a");
    assert_eq!(b.get(b"k").await.unwrap().unwrap().value, b"from b");
    assert_eq!(raw.get(b"ns-a/k").await.unwrap().unwrap().value, b"from a");

    // The empty prefix means the whole namespace, and keys come back without it.
    let all_a = a.range(RangeRequest::prefix("")).await.unwrap();
    assert_eq!(all_a.count, 1);
    assert_eq!(all_a.kvs[0].key, b"k");
    let r = a
        .range(RangeRequest::new(KeyRange::range("", "zzz")))
        .await
        .unwrap();
    assert_eq!(r.kvs.len(), 1);

    // Compares and txn ops are namespaced too.
    let t = a
        .txn(
            TxnRequest::new()
                .when([Compare::value("k", CompareOp::Equal, "from a")])
                .and_then([
                    TxnOp::Put(Put {
                        key: b"k".to_vec(),
                        value: b"a2".to_vec(),
                        lease: NO_LEASE,
                        prev_kv: true,
                    }),
                    TxnOp::range(RangeRequest::prefix("")),
                ]),
        )
        .await
        .unwrap();
    assert!(t.succeeded);
    match &t.responses[0] {
        TxnOpResponse::Put { prev_kv: Some(p) } => assert_eq!(p.key, b"k"),
        other => panic!("{other:?}"),
    }
    assert_eq!(t.range(1).unwrap().kvs[0].key, b"k");

    // Deleting everything in a namespace leaves the others alone.
    assert_eq!(a.delete(KeyRange::prefix("")).await.unwrap(), 1);
    assert_eq!(b.get(b"k").await.unwrap().unwrap().value, b"from b");
    assert_eq!(raw.range(RangeRequest::prefix("")).await.unwrap().count, 3);
    assert_eq!(a.namespace(), b"ns-a/");
    assert!(format!("{a:?}").contains("ns-a/"));
}

#[tokio::test]
async fn compact_and_errors() {
    let Some(server) = local_etcd().await else {
        return;
    };
    let b = backend(&server).await;
    for i in 0..5 {
        b.put(b"c", format!("{i}").as_bytes(), NO_LEASE)
            .await
            .unwrap();
    }
    let rev = b.current_revision().await.unwrap();
    b.compact(rev - 1).await.unwrap();
    let err = b.compact(rev - 2).await.unwrap_err();
    match err {
        Error::Compacted { compact_revision } => assert_eq!(compact_revision, Some(rev - 1)),
        other => panic!("{other:?}"),
    }
    let err = b.compact(rev + 100).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
}

#[tokio::test]
async fn request_timeout_applies_to_unary_calls() {
    let Some(server) = local_etcd().await else {
        return;
    };
    let b = EtcdBackend::connect(options(&server).request_timeout(Duration::from_secs(1)))
        .await
        .unwrap();
    b.put(b"x", b"1", NO_LEASE).await.unwrap();
    server.kill().await.expect("kill etcd");
    let err = b.get(b"x").await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    server.restart().await.expect("restart etcd");
    // The same backend works again once etcd is back.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match b.get(b"x").await {
            Ok(kv) => {
                assert_eq!(kv.unwrap().value, b"1");
                break;
            }
            Err(e) if std::time::Instant::now() < deadline => {
                assert!(e.is_retryable(), "{e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
}
