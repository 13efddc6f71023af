//! User/password auth and TLS against a real etcd.

mod common;

use std::time::Duration;

use coord_core::{BackendExt, CoordinationBackend, Error, NO_LEASE, RangeRequest, WatchRequest};
use coord_etcd::EtcdBackend;
use coord_etcd::etcd_client::Permission;
use futures::StreamExt;

const ROOT_PW: &str = "r00t-Secret-pw";
const APP_PW: &str = "app-Secret-pw";

#[tokio::test]
async fn user_password_auth_and_permissions() {
    let server = etcd_or_skip!("user_password_auth_and_permissions");
    let mut admin = server.backend().await.client();
    admin.user_add("root", ROOT_PW, None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.role_add("app").await.unwrap();
    admin
        .role_grant_permission("app", Permission::read_write("app/").with_prefix())
        .await
        .unwrap();
    admin.user_add("app", APP_PW, None).await.unwrap();
    admin.user_grant_role("app", "app").await.unwrap();
    admin.auth_enable().await.unwrap();

    // Without credentials, or with a wrong password: Unauthenticated, no password shown.
    let wrong = EtcdBackend::connect(server.options().user("app", "not-the-pw"))
        .await
        .unwrap_err();
    assert!(matches!(wrong, Error::Unauthenticated { .. }), "{wrong:?}");
    assert!(!format!("{wrong} {wrong:?}").contains("not-the-pw"));

    // The app user works inside its namespace: every op, including watch and leases.
    let app = EtcdBackend::connect(server.options().user("app", APP_PW).namespace("app/"))
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
    let outside = EtcdBackend::connect(server.options().user("app", APP_PW))
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
    let server = match common::etcd_with("tls_with_client_certificates", |dir| {
        let files = common::make_certs(dir);
        if files.is_none() {
            eprintln!("SKIP tls_with_client_certificates: openssl could not make certificates");
        }
        files
    })
    .await
    {
        Some(s) if s.tls().is_some() => s,
        _ => return,
    };
    let tls = server.tls().unwrap().clone();

    // Files, or the PEM bytes themselves.
    let b = server.backend().await;
    b.put(b"secure", b"yes", NO_LEASE).await.unwrap();
    let from_bytes = EtcdBackend::connect(
        coord_etcd::EtcdOptions::new([format!("127.0.0.1:{}", port_of(&server.endpoint()))])
            .ca_cert(std::fs::read(&tls.ca).unwrap())
            .client_identity(
                std::fs::read(&tls.client_cert).unwrap(),
                std::fs::read(&tls.client_key).unwrap(),
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

    // Without the client certificate the server refuses the connection.
    let no_identity = EtcdBackend::connect(
        coord_etcd::EtcdOptions::new([server.endpoint()])
            .ca_cert_file(&tls.ca)
            .connect_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap_err();
    assert!(no_identity.is_retryable(), "{no_identity:?}");

    // A missing file is named.
    let missing = EtcdBackend::connect(
        coord_etcd::EtcdOptions::new([server.endpoint()]).ca_cert_file("/nonexistent/ca.pem"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(missing, Error::InvalidArgument { .. }),
        "{missing:?}"
    );
    assert!(missing.to_string().contains("/nonexistent/ca.pem"));
}

#[cfg(feature = "tls")]
fn port_of(endpoint: &str) -> u16 {
    endpoint.rsplit(':').next().unwrap().parse().unwrap()
}

/// etcd's simple auth tokens live in the server's memory: after a restart every token is
/// invalid, and the resumed watch and keep-alive stream must authenticate again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_and_keep_alive_survive_a_restart_with_auth() {
    let mut server = etcd_or_skip!("watch_and_keep_alive_survive_a_restart_with_auth");
    let mut admin = server.backend().await.client();
    admin.user_add("root", ROOT_PW, None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.role_add("app").await.unwrap();
    admin
        .role_grant_permission("app", Permission::read_write("app/").with_prefix())
        .await
        .unwrap();
    admin.user_add("app", APP_PW, None).await.unwrap();
    admin.user_grant_role("app", "app").await.unwrap();
    admin.auth_enable().await.unwrap();

    let app_options = server.options().user("app", APP_PW).namespace("app/");
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

    server.kill9();
    server.start().await;
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
