//! Leases against a real etcd (real time: TTLs are seconds).

use std::time::{Duration, Instant};

use coord_core::{
    BackendExt, CoordinationBackend, Error, EventKind, KeyRange, RangeRequest, WatchRequest,
};
use futures::StreamExt;

mod support;
use support::own_server::{backend, backend_ns, local_etcd};

#[tokio::test]
async fn grant_rounds_up_and_reports_the_granted_ttl() {
    let Some(server) = local_etcd().await else {
        return;
    };
    let b = backend(&server).await;
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

    let err = b.lease_grant(Duration::ZERO).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    let err = b
        .lease_grant(Duration::from_secs(u64::MAX / 2))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
}

#[tokio::test]
async fn keep_alive_revoke_and_not_found() {
    let Some(server) = local_etcd().await else {
        return;
    };
    let b = backend(&server).await;
    let g = b.lease_grant(Duration::from_secs(3)).await.unwrap();
    b.put(b"owned", b"x", g.id).await.unwrap();
    assert_eq!(b.get(b"owned").await.unwrap().unwrap().lease, g.id);
    // Several refreshes on the shared stream, beyond the TTL.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            b.lease_keep_alive(g.id).await.unwrap(),
            Duration::from_secs(3)
        );
    }
    assert!(b.get(b"owned").await.unwrap().is_some());
    // Concurrent refreshes of one lease take turns on one stream.
    let (r1, r2) = tokio::join!(b.lease_keep_alive(g.id), b.lease_keep_alive(g.id));
    assert!(r1.is_ok() && r2.is_ok());

    let mut w = b.watch(WatchRequest::key("owned")).await.unwrap();
    b.lease_revoke(g.id).await.unwrap();
    let resp = w.next().await.unwrap().unwrap();
    assert_eq!(resp.events.len(), 1);
    assert_eq!(resp.events[0].kind, EventKind::Delete);
    assert!(b.get(b"owned").await.unwrap().is_none());

    let err = b.lease_keep_alive(g.id).await.unwrap_err();
    assert!(
        matches!(err, Error::LeaseNotFound { lease: Some(lease) } if lease == g.id),
        "{err:?}"
    );
    let err = b.lease_time_to_live(g.id).await.unwrap_err();
    assert!(
        matches!(err, Error::LeaseNotFound { lease: Some(lease) } if lease == g.id),
        "{err:?}"
    );
    let err = b.lease_revoke(g.id).await.unwrap_err();
    assert!(
        matches!(err, Error::LeaseNotFound { lease: Some(lease) } if lease == g.id),
        "{err:?}"
    );
    let err = b.lease_keep_alive(0x7777).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::LeaseNotFound {
                lease: Some(0x7777)
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn expiry_deletes_keys_in_one_revision_with_delete_events() {
    let Some(server) = local_etcd().await else {
        return;
    };
    let b = backend_ns(&server, "exp/").await;
    let g = b.lease_grant(Duration::from_secs(2)).await.unwrap();
    b.put(b"l/1", b"a", g.id).await.unwrap();
    b.put(b"l/2", b"b", g.id).await.unwrap();
    b.put(b"keep", b"c", coord_core::NO_LEASE).await.unwrap();
    // Keep the lease alive once on the shared stream, then let it lapse.
    b.lease_keep_alive(g.id).await.unwrap();
    let mut w = b
        .watch(WatchRequest::prefix("").with_prev_kv())
        .await
        .unwrap();
    let before = b.current_revision().await.unwrap();
    let started = Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(15), w.next())
        .await
        .expect("lease expiry within 15 s")
        .unwrap()
        .unwrap();
    eprintln!("lease of 2 s expired after {:?}", started.elapsed());
    assert_eq!(resp.revision, before + 1);
    assert_eq!(resp.events.len(), 2);
    for (ev, key) in resp.events.iter().zip(["l/1", "l/2"]) {
        assert_eq!(ev.kind, EventKind::Delete);
        assert_eq!(ev.kv.key, key.as_bytes());
        assert_eq!(ev.kv.mod_revision, resp.revision);
        assert_eq!(ev.prev_kv.as_ref().unwrap().lease, g.id);
    }
    assert_eq!(b.range(RangeRequest::prefix("")).await.unwrap().count, 1);
    assert!(b.delete(KeyRange::prefix("l/")).await.unwrap() == 0);
    let err = b.lease_keep_alive(g.id).await.unwrap_err();
    assert!(matches!(err, Error::LeaseNotFound { .. }), "{err:?}");
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
