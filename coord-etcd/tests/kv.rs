//! What the etcd client adds to the contract: connecting, namespaces, request timeouts.
//! What every backend does with keys, txns and ranges is checked by the conformance suite.

use std::time::Duration;

use coord_core::{
    BackendExt, Compare, CompareOp, CoordinationBackend, Error, KeyRange, NO_LEASE, Put,
    RangeRequest, TxnOp, TxnOpResponse, TxnRequest,
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
