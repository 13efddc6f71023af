//! User/password auth and TLS against a real etcd.

use std::time::Duration;

use coord_core::{BackendExt, CoordinationBackend, Error, NO_LEASE, RangeRequest, WatchRequest};
use coord_etcd::{EtcdBackend, EtcdOptions};
use coord_testkit::{EtcdServer, EtcdServerBuilder};
use futures::StreamExt;

const ROOT_PW: &str = "r00t-Secret-pw";
const APP_PW: &str = "app-Secret-pw";

/// A server of the test's own (the tests kill and restart it, or enable auth), never a
/// shared or external one, with etcd's default raft timing (100 ms heartbeat, 1 s
/// election): the server settings `coord_etcd` assumes, such as the 2 s minimum lease TTL.
fn local_etcd() -> EtcdServerBuilder {
    EtcdServer::builder()
        .local_only()
        .timing(Duration::from_millis(100), Duration::from_secs(1))
}

/// With auth on: a `root` user (password [`ROOT_PW`]) and an `app` user (password
/// [`APP_PW`]) whose role may read and write the keys under `app/` only.
async fn local_etcd_with_auth() -> Option<EtcdServer> {
    local_etcd()
        .auth(ROOT_PW)
        .user("app", APP_PW, "app/")
        .start_or_skip()
        .await
}

/// Options that reach the server, with its CA and client certificate when it serves TLS.
fn options(server: &EtcdServer) -> EtcdOptions {
    let o = EtcdOptions::new(server.urls());
    match server.tls() {
        Some(t) => o
            .ca_cert_file(t.ca_cert_path())
            .client_identity_files(t.client_cert_path(), t.client_key_path()),
        None => o,
    }
}

#[tokio::test]
async fn user_password_auth_and_permissions() {
    let Some(server) = local_etcd_with_auth().await else {
        return;
    };

    // Without credentials, or with a wrong password: Unauthenticated, no password shown.
    let wrong = EtcdBackend::connect(options(&server).user("app", "not-the-pw"))
        .await
        .unwrap_err();
    assert!(matches!(wrong, Error::Unauthenticated { .. }), "{wrong:?}");
    assert!(!format!("{wrong} {wrong:?}").contains("not-the-pw"));

    // The app user works inside its namespace: every op, including watch and leases.
    let app = EtcdBackend::connect(options(&server).user("app", APP_PW).namespace("app/"))
        .await
        .unwrap();
    assert!(!format!("{app:?}").contains(APP_PW));
    let mut w = app.watch(WatchRequest::prefix("")).await.unwrap();
    let lease = app.lease_grant(Duration::from_secs(5)).await.unwrap();
    let rev = app.put(b"k", b"v", lease.id).await.unwrap();
    assert_eq!(app.get(b"k").await.unwrap().unwrap().value, b"v");
    assert_eq!(app.range(RangeRequest::prefix("")).await.unwrap().count, 1);
    assert_eq!(app.current_revision().await.unwrap(), rev);
    app.lease_keep_alive(lease.id).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ev.revision, rev);

    // Outside it: PermissionDenied.
    let outside = EtcdBackend::connect(options(&server).user("app", APP_PW))
        .await
        .unwrap();
    let err = outside.put(b"other/k", b"v", NO_LEASE).await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    let err = outside.get(b"other/k").await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    let err = outside
        .watch(WatchRequest::key("other/k"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn tls_with_client_certificates() {
    let Some(server) = local_etcd().tls(true).start_or_skip().await else {
        return;
    };
    let tls = server.tls().expect("TLS material").clone();
    assert!(server.url().starts_with("https://"), "{}", server.url());

    // Files, or the PEM bytes themselves.
    let b = EtcdBackend::connect(options(&server))
        .await
        .expect("connect");
    b.put(b"secure", b"yes", NO_LEASE).await.unwrap();
    let from_bytes = EtcdBackend::connect(
        // A bare host:port: the CA makes it https.
        EtcdOptions::new([server.endpoint()])
            .ca_cert(std::fs::read(tls.ca_cert_path()).unwrap())
            .client_identity(
                std::fs::read(tls.client_cert_path()).unwrap(),
                std::fs::read(tls.client_key_path()).unwrap(),
            ),
    )
    .await
    .unwrap();
    assert_eq!(
        from_bytes.get(b"secure").await.unwrap().unwrap().value,
        b"yes"
    );
    let mut w = from_bytes.watch(WatchRequest::key("secure")).await.unwrap();
    let rev = b.put(b"secure", b"still", NO_LEASE).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ev.revision, rev);

    // Without the client certificate the server refuses the connection: a configuration
    // problem, not an outage.
    let no_identity = EtcdBackend::connect(
        EtcdOptions::new([server.url()])
            .ca_cert_file(tls.ca_cert_path())
            .connect_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(no_identity, Error::Unauthenticated { .. }),
        "{no_identity:?}"
    );
    assert!(!no_identity.is_retryable(), "{no_identity:?}");

    // A missing file is named.
    let missing =
        EtcdBackend::connect(EtcdOptions::new([server.url()]).ca_cert_file("/nonexistent/ca.pem"))
            .await
            .unwrap_err();
    assert!(
        matches!(missing, Error::InvalidArgument { .. }),
        "{missing:?}"
    );
    assert!(missing.to_string().contains("/nonexistent/ca.pem"));
}

/// etcd's simple auth tokens live in the server's memory: after a restart every token is
/// invalid, and the resumed watch and keep-alive stream must authenticate again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_and_keep_alive_survive_a_restart_with_auth() {
    let Some(server) = local_etcd_with_auth().await else {
        return;
    };

    let app_options = options(&server).user("app", APP_PW).namespace("app/");
    let app = || app_options.clone();
    let b = EtcdBackend::connect(app()).await.unwrap();
    let lease = b.lease_grant(Duration::from_secs(20)).await.unwrap();
    b.lease_keep_alive(lease.id).await.unwrap();
    let mut w = b.watch(WatchRequest::key("a")).await.unwrap();
    let r1 = b.put(b"a", b"1", NO_LEASE).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.revision, r1);

    server.kill().await.expect("kill etcd");
    server.restart().await.expect("restart etcd");
    // Poll the watch first, so it resumes before any unary call refreshed the token.
    let watcher = tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(20), w.next())
            .await
            .expect("resumed watch delivers")
            .expect("not ended")
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let writer = EtcdBackend::connect(app()).await.unwrap();
    let r2 = writer.put(b"a", b"2", NO_LEASE).await.unwrap();
    let resumed = watcher.await.unwrap().expect("no error after the restart");
    assert_eq!(resumed.revision, r2);

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match b.lease_keep_alive(lease.id).await {
            Ok(ttl) => {
                assert_eq!(ttl, Duration::from_secs(20));
                break;
            }
            Err(e) if std::time::Instant::now() < deadline => {
                assert!(e.is_retryable(), "{e:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
}
