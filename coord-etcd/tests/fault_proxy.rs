//! A partition between client and etcd, made with the testkit's `FaultProxy`: while the
//! proxy blackholes traffic the client's calls time out, and after healing they work again.

use std::time::Duration;

use coord_core::{BackendExt, CoordinationBackend, Error, NO_LEASE};
use coord_etcd::{EtcdBackend, EtcdOptions};
use coord_testkit::{EtcdServer, FaultProxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackholed_etcd_times_out_and_healing_restores_it() {
    let Some(server) = EtcdServer::start_or_skip().await else {
        return;
    };
    let proxy = FaultProxy::start(server.endpoint())
        .await
        .expect("proxy starts");
    let backend = EtcdBackend::connect(
        EtcdOptions::new([proxy.addr().to_string()])
            .namespace(server.namespace())
            .request_timeout(Duration::from_millis(500)),
    )
    .await
    .expect("connects through the proxy");
    backend
        .put(b"k", b"before", NO_LEASE)
        .await
        .expect("put before the partition");

    proxy.blackhole();
    let started = tokio::time::Instant::now();
    let err = backend
        .current_revision()
        .await
        .expect_err("a call across a blackhole must not succeed");
    assert!(
        matches!(err, Error::Timeout { .. } | Error::Unavailable { .. }),
        "expected a timeout, got {err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the request timeout bounds the wait, took {:?}",
        started.elapsed()
    );

    proxy.heal();
    // A blackholed connection may have to be re-established: retry until the client
    // notices, bounded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let value = loop {
        match backend.get(b"k").await {
            Ok(kv) => break kv,
            Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("etcd did not come back after healing: {e:?}"),
        }
    };
    assert_eq!(value.expect("key survives").value, b"before");
    backend
        .put(b"k", b"after", NO_LEASE)
        .await
        .expect("writes work again");
}
