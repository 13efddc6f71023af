//! Credentials and TLS: a refusal is permanent (retrying cannot help), says what failed,
//! and never shows the password.

use std::time::Duration;

use coord::Error;
use coord_testkit::{EtcdServer, RedisServer, TlsMaterial};

use crate::support::{assert_cli, assert_message};

const PASSWORD: &str = "s3cret-pw";

async fn etcd_with_auth() -> Option<EtcdServer> {
    EtcdServer::builder()
        .local_only()
        .auth("r00t-pw")
        .user("app", PASSWORD, "app/")
        .start_or_skip()
        .await
}

async fn etcd_with_tls() -> Option<EtcdServer> {
    EtcdServer::builder()
        .local_only()
        .tls(true)
        .start_or_skip()
        .await
}

/// `coord::connect(url)`'s error, which must not show `secret`.
async fn refused(url: &str, secret: &str) -> Error {
    let err = coord::connect(url)
        .await
        .map(|c| c.backend_name())
        .expect_err("must be refused");
    assert!(
        secret.is_empty() || !format!("{err} {err:?}").contains(secret),
        "{err:?}"
    );
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b27_a_wrong_etcd_password_is_unauthenticated() {
    let Some(server) = etcd_with_auth().await else {
        return;
    };
    let url = format!("etcd://app:wrong-pw@{}?namespace=app/", server.endpoint());
    wrong_password_is_unauthenticated(&url, "authentication failed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b28_a_wrong_redis_password_is_unauthenticated() {
    let Some(server) = RedisServer::builder()
        .local_only()
        .acl_user("app", PASSWORD)
        .start_or_skip()
        .await
    else {
        return;
    };
    let url = format!("redis://app:wrong-pw@{}", server.endpoint());
    wrong_password_is_unauthenticated(&url, "app").await;
}

/// `url` holds the password `wrong-pw`: refused as `Unauthenticated` (not retryable), the
/// message naming `names`, by the library and by the CLI, neither showing the password.
async fn wrong_password_is_unauthenticated(url: &str, names: &str) {
    let err = refused(url, "wrong-pw").await;
    assert!(matches!(err, Error::Unauthenticated { .. }), "{err:?}");
    assert_message(&err, false, &[names]);
    let stderr = assert_cli(url, &["lock", "x", "--", "true"], 1, &["unauthenticated"]);
    assert!(!stderr.contains("wrong-pw"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b29_no_credentials_for_an_etcd_with_auth_is_unauthenticated() {
    let Some(server) = etcd_with_auth().await else {
        return;
    };
    let url = format!("etcd://{}?namespace=app/", server.endpoint());
    let err = refused(&url, PASSWORD).await;
    assert!(matches!(err, Error::Unauthenticated { .. }), "{err:?}");
    assert_message(&err, false, &["credentials"]);
    assert_cli(&url, &["lock", "x", "--", "true"], 1, &["credentials"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b30_a_user_outside_its_prefix_is_permission_denied() {
    let Some(server) = etcd_with_auth().await else {
        return;
    };
    let url = format!(
        "etcd://app:{PASSWORD}@{}?namespace=other/",
        server.endpoint()
    );
    let conn = coord::connect(&url)
        .await
        .expect("the credentials are right");
    let session = conn
        .session()
        .await
        .expect("a lease needs no key permission");
    let err = coord::Mutex::new(&session, "x")
        .try_lock()
        .await
        .expect_err("outside app/");
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    assert_message(&err, false, &["permission denied"]);
    let stderr = assert_cli(
        &url,
        &["lock", "x", "--", "true"],
        1,
        &["permission denied"],
    );
    assert!(!stderr.contains(PASSWORD), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b31_a_ca_file_that_is_not_pem_is_refused_before_connecting() {
    for scheme in ["etcds", "rediss"] {
        // Nothing listens on port 1: refusing first shows no network was needed.
        let url = format!("{scheme}://127.0.0.1:1?cacert=/etc/passwd");
        let err = refused(&url, "").await;
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
        assert_message(&err, false, &["cacert", "/etc/passwd", "PEM"]);
        assert_cli(&url, &["leader", "x"], 2, &["cacert", "/etc/passwd"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b32_a_missing_ca_file_is_refused_naming_it() {
    for scheme in ["etcds", "rediss"] {
        let url = format!("{scheme}://127.0.0.1:1?cacert=/nonexistent/ca.pem");
        let err = refused(&url, "").await;
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
        assert_message(&err, false, &["cacert", "/nonexistent/ca.pem"]);
        assert_cli(&url, &["leader", "x"], 2, &["/nonexistent/ca.pem"]);
    }
}

/// The fixture's TLS URL trusting `ca` (the server's own CA unless given), with the
/// client certificate, checking the server's name against `domain` if given.
fn tls_url(server: &EtcdServer, ca: &std::path::Path, domain: Option<&str>) -> String {
    let t = server.tls().expect("a TLS fixture");
    let mut url = format!(
        "etcds://{}?cacert={}&cert={}&key={}&connect_timeout=3s",
        server.endpoint(),
        ca.display(),
        t.client_cert_path().display(),
        t.client_key_path().display()
    );
    if let Some(d) = domain {
        url.push_str(&format!("&tls_domain={d}"));
    }
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b33_a_server_certificate_from_another_ca_is_a_permanent_tls_error() {
    let Some(server) = etcd_with_tls().await else {
        return;
    };
    let other = tempfile::tempdir().unwrap();
    let other_ca = TlsMaterial::generate(other.path()).unwrap();
    let url = tls_url(&server, &other_ca.ca_cert_path(), None);
    let err = refused(&url, "").await;
    assert!(matches!(err, Error::Unauthenticated { .. }), "{err:?}");
    assert_message(&err, false, &["TLS", "certificate"]);
    assert_cli(&url, &["leader", "x"], 1, &["TLS"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b34_a_wrong_tls_domain_is_a_permanent_tls_error() {
    let Some(server) = etcd_with_tls().await else {
        return;
    };
    let ca = server.tls().unwrap().ca_cert_path();
    let url = tls_url(&server, &ca, Some("not-this-server.example"));
    let err = refused(&url, "").await;
    assert!(matches!(err, Error::Unauthenticated { .. }), "{err:?}");
    assert_message(&err, false, &["TLS", "not-this-server.example"]);
    assert_cli(&url, &["leader", "x"], 1, &["not-this-server.example"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b35_tls_to_a_plain_server_fails_saying_so() {
    let Some(plain) = crate::support::etcd().await else {
        return;
    };
    let Some(tls) = etcd_with_tls().await else {
        return;
    };
    let ca = tls.tls().unwrap().ca_cert_path();
    let url = format!(
        "etcds://{}?cacert={}&connect_timeout=3s",
        plain.endpoint(),
        ca.display()
    );
    let started = std::time::Instant::now();
    let err = refused(&url, "").await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert_message(&err, err.is_retryable(), &["TLS"]);
    assert_cli(&url, &["leader", "x"], 1, &["TLS"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b36_plain_text_to_a_tls_server_fails_saying_so() {
    let Some(server) = etcd_with_tls().await else {
        return;
    };
    let url = format!("etcd://{}?connect_timeout=3s", server.endpoint());
    let started = std::time::Instant::now();
    let err = refused(&url, "").await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert_message(&err, err.is_retryable(), &["TLS"]);
    assert_cli(&url, &["leader", "x"], 1, &["TLS"]);
}
