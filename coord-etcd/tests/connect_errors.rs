//! What connecting to a real etcd gives when the TLS settings or the credentials are wrong:
//! a permanent error naming what failed, never an `Unavailable` a caller would retry
//! forever, and never a hang.

#![cfg(feature = "tls")]

use std::time::Duration;

use coord_core::{Error, UrlOptions};
use coord_etcd::EtcdOptions;
use coord_testkit::{EtcdServer, EtcdServerBuilder, TlsMaterial};

const PASSWORD: &str = "s3cret-Pa55";

fn local_etcd() -> EtcdServerBuilder {
    EtcdServer::builder().local_only()
}

async fn connect(url: &str) -> coord_core::Result<coord_etcd::EtcdBackend> {
    EtcdOptions::parse_url(url)?.connect().await
}

/// Connects with `url` and returns the error, which must be permanent.
async fn permanent(url: &str) -> Error {
    let e = match connect(url).await {
        Ok(_) => panic!("{url} connected"),
        Err(e) => e,
    };
    assert!(!e.is_retryable(), "{e:?}");
    assert!(!format!("{e} {e:?}").contains(PASSWORD), "{e:?}");
    e
}

/// Asserts `e` is `Unauthenticated` and its message holds every one of `words`.
fn unauthenticated(e: &Error, words: &[&str]) {
    assert!(matches!(e, Error::Unauthenticated { .. }), "{e:?}");
    let text = e.to_string();
    for w in words {
        assert!(text.contains(w), "{w:?} not in {text}");
    }
}

/// Asserts `e` is `InvalidArgument` and its message holds every one of `words`.
fn invalid(e: &Error, words: &[&str]) {
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
    let text = e.to_string();
    for w in words {
        assert!(text.contains(w), "{w:?} not in {text}");
    }
}

/// `etcds://` to `server`, with `query` (`cacert=...&cert=...`) and a short connect
/// timeout, so that a hang would show as a failure.
fn url(server: &EtcdServer, query: &str) -> String {
    format!(
        "etcds://root:{PASSWORD}@{}?connect_timeout=5s&{query}",
        server.endpoint()
    )
}

fn ca(t: &TlsMaterial) -> String {
    format!("cacert={}", t.ca_cert_path().display())
}

fn identity(t: &TlsMaterial) -> String {
    format!(
        "cert={}&key={}",
        t.client_cert_path().display(),
        t.client_key_path().display()
    )
}

#[tokio::test]
async fn a_server_certificate_the_client_cannot_verify_is_unauthenticated_not_retryable() {
    let Some(server) = local_etcd().tls(true).start_or_skip().await else {
        return;
    };
    let tls = server.tls().expect("TLS material").clone();
    let other = TlsMaterial::generate(&server.data_dir().expect("local").join("other-ca"))
        .expect("a second CA");

    // No CA at all: nothing trusts the test CA.
    let e = permanent(&url(&server, &identity(&tls))).await;
    unauthenticated(
        &e,
        &["TLS", "not signed by a CA the client trusts", "cacert"],
    );
    // Another CA.
    let e = permanent(&url(&server, &format!("{}&{}", ca(&other), identity(&tls)))).await;
    unauthenticated(&e, &["TLS", "not signed by a CA the client trusts"]);
    // The certificate's names do not include the one checked.
    let e = permanent(&url(
        &server,
        &format!("{}&{}&tls_domain=etcd.invalid", ca(&tls), identity(&tls)),
    ))
    .await;
    unauthenticated(&e, &["TLS", "not valid for the name", "etcd.invalid"]);
    // The source leads down to rustls' error.
    assert!(std::error::Error::source(&e).is_some(), "{e:?}");
}

#[tokio::test]
async fn a_client_certificate_the_server_refuses_is_unauthenticated_not_retryable() {
    let Some(server) = local_etcd().tls(true).start_or_skip().await else {
        return;
    };
    let tls = server.tls().expect("TLS material").clone();
    let other = TlsMaterial::generate(&server.data_dir().expect("local").join("other-ca"))
        .expect("a second CA");
    // The refusal reaches the client in one of three ways, by timing (the alert, the
    // connection closed, a broken pipe): a few attempts each meet more than one.
    for query in [ca(&tls), format!("{}&{}", ca(&tls), identity(&other))] {
        for _ in 0..5 {
            let e = permanent(&url(&server, &query)).await;
            unauthenticated(&e, &["TLS", "refused the client certificate", "`cert`"]);
        }
    }
}

#[tokio::test]
async fn tls_files_that_are_missing_or_not_pem_are_invalid_arguments_before_any_connection() {
    // Port 1: nothing listens there, so an error about the network would be Unavailable.
    let base = format!("etcds://root:{PASSWORD}@127.0.0.1:1?");
    let scratch = std::env::temp_dir().join(format!("coord-etcd-pem-{}", std::process::id()));
    let material = TlsMaterial::generate(&scratch).expect("TLS material");
    let (cert, key) = (material.client_cert_path(), material.client_key_path());
    for (query, words) in [
        (
            "cacert=/etc/passwd".to_owned(),
            vec!["`cacert` file /etc/passwd", "not a PEM certificate"],
        ),
        (
            "cacert=/nonexistent/ca.pem".to_owned(),
            vec!["`cacert` file /nonexistent/ca.pem"],
        ),
        (
            format!("cert=/etc/passwd&key={}", key.display()),
            vec!["`cert` file /etc/passwd", "not a PEM certificate"],
        ),
        (
            format!("cert={}&key=/etc/passwd", cert.display()),
            vec!["`key` file /etc/passwd", "not a PEM private key"],
        ),
        // A certificate where the key belongs.
        (
            format!("cert={}&key={}", cert.display(), cert.display()),
            vec!["`key` file", "not a PEM private key"],
        ),
    ] {
        let e = permanent(&format!("{base}{query}")).await;
        invalid(&e, &words);
    }
    std::fs::remove_dir_all(scratch).ok();
}

#[tokio::test]
async fn tls_to_a_plain_text_server_says_to_use_etcd_without_hanging() {
    let Some(server) = local_etcd().start_or_skip().await else {
        return;
    };
    let scratch = std::env::temp_dir().join(format!("coord-etcd-plain-{}", std::process::id()));
    let material = TlsMaterial::generate(&scratch).expect("TLS material");
    let e = connect(&url(&server, &ca(&material)))
        .await
        .expect_err("TLS to a plain-text port fails");
    // etcd closes or resets the connection: to the client that looks like an outage, so
    // it stays retryable, with the hint.
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("if it serves plain text, use etcd://"),
        "{e}"
    );
    std::fs::remove_dir_all(scratch).ok();
}

#[tokio::test]
async fn plain_text_to_a_tls_server_says_to_use_etcds_without_hanging() {
    let Some(server) = local_etcd().tls(true).start_or_skip().await else {
        return;
    };
    let e = connect(&format!("etcd://{}?connect_timeout=5s", server.endpoint()))
        .await
        .expect_err("plain text to a TLS port fails");
    // The server's closing the connection looks like an outage to the client: retryable,
    // with the hint.
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    assert!(
        e.to_string().contains("if it serves TLS, use etcds://"),
        "{e}"
    );
}

#[tokio::test]
async fn no_credentials_for_an_etcd_with_auth_is_unauthenticated() {
    let Some(server) = local_etcd().auth(PASSWORD).start_or_skip().await else {
        return;
    };
    let e = connect(&format!("etcd://{}?connect_timeout=5s", server.endpoint()))
        .await
        .expect_err("no credentials");
    assert!(!e.is_retryable(), "{e:?}");
    unauthenticated(&e, &["needs credentials", "USER:PASSWORD@"]);
    // With them it works.
    connect(&format!(
        "etcd://root:{PASSWORD}@{}?connect_timeout=5s",
        server.endpoint()
    ))
    .await
    .expect("connects with credentials");
}

#[tokio::test]
async fn zero_timeouts_set_in_code_are_refused_naming_them() {
    for (options, name) in [
        (
            EtcdOptions::new(["127.0.0.1:1"]).connect_timeout(Duration::ZERO),
            "connect_timeout",
        ),
        (
            EtcdOptions::new(["127.0.0.1:1"]).request_timeout(Duration::ZERO),
            "request_timeout",
        ),
    ] {
        let e = coord_etcd::EtcdBackend::connect(options)
            .await
            .expect_err("refused");
        invalid(&e, &[name, "must be positive"]);
    }
}
