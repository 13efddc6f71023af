//! What etcd's leases add to the contract (real time: TTLs are whole seconds): rounding
//! and the minimum TTL, the shared keep-alive stream, keep-alive across a restart. What
//! every backend's leases do is checked by the conformance suite.

use std::time::{Duration, Instant};

use coord_core::{BackendExt, CoordinationBackend, Error};

mod support;
use support::own_server::{backend, local_etcd};

#[tokio::test]
async fn grant_rounds_up_and_reports_the_granted_ttl() {
    let Some(server) = local_etcd().await else {
        return;
    };
    let b = backend(&server).await;
    assert_eq!(b.info().name, "etcd");
    let g = b.lease_grant(Duration::from_millis(5200)).await.unwrap();
    assert!(g.id > 0);
    assert_eq!(g.ttl, Duration::from_secs(6));
    let st = b.lease_time_to_live(g.id).await.unwrap();
    assert_eq!(st.id, g.id);
    assert_eq!(st.granted_ttl, Duration::from_secs(6));
    assert!(st.remaining <= Duration::from_secs(6) && st.remaining >= Duration::from_secs(4));

    // etcd raises TTLs below its minimum (2 s with default server settings).
    let tiny = b.lease_grant(Duration::from_millis(10)).await.unwrap();
    eprintln!("etcd granted {:?} for a 10 ms request", tiny.ttl);
    assert!(tiny.ttl >= Duration::from_secs(1));
    assert_eq!(tiny.ttl, b.info().min_lease_ttl);

    let err = b
        .lease_grant(Duration::from_secs(u64::MAX / 2))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
}

/// Every refresh goes over one keep-alive stream per client, and reports the TTL etcd
/// granted (not the time left).
#[tokio::test]
async fn keep_alives_share_one_stream_and_report_the_granted_ttl() {
    let Some(server) = local_etcd().await else {
        return;
    };
    let b = backend(&server).await;
    let g = b.lease_grant(Duration::from_secs(3)).await.unwrap();
    b.put(b"owned", b"x", g.id).await.unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            b.lease_keep_alive(g.id).await.unwrap(),
            Duration::from_secs(3)
        );
    }
    assert!(b.get(b"owned").await.unwrap().is_some());
    // Concurrent refreshes of one lease take turns on the stream.
    let (r1, r2) = tokio::join!(b.lease_keep_alive(g.id), b.lease_keep_alive(g.id));
    assert!(r1.is_ok() && r2.is_ok());
    b.lease_revoke(g.id).await.unwrap();
    // The stream answers a revoked lease with TTL 0, which is not a refresh.
    let err = b.lease_keep_alive(g.id).await.unwrap_err();
    assert!(
        matches!(err, Error::LeaseNotFound { lease } if lease == Some(g.id)),
        "{err:?}"
    );
}

#[tokio::test]
async fn keep_alive_continues_after_restart() {
    let Some(server) = local_etcd().await else {
        return;
    };
    let b = backend(&server).await;
    let g = b.lease_grant(Duration::from_secs(10)).await.unwrap();
    b.put(b"held", b"x", g.id).await.unwrap();
    b.lease_keep_alive(g.id).await.unwrap();

    server.kill().await.expect("kill etcd");
    let err = b.lease_keep_alive(g.id).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    server.restart().await.expect("restart etcd");

    // The broken stream is replaced transparently once etcd is back.
    let deadline = Instant::now() + Duration::from_secs(10);
    let ttl = loop {
        match b.lease_keep_alive(g.id).await {
            Ok(ttl) => break ttl,
            Err(e) if Instant::now() < deadline => {
                assert!(e.is_retryable(), "{e:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    };
    assert_eq!(ttl, Duration::from_secs(10));
    assert_eq!(b.get(b"held").await.unwrap().unwrap().lease, g.id);
    // And keeps working on the new stream.
    assert_eq!(
        b.lease_keep_alive(g.id).await.unwrap(),
        Duration::from_secs(10)
    );
}
