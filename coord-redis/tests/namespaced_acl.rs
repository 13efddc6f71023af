//! A Redis ACL user confined to one namespace's keys, over TLS with a client certificate:
//! coord works inside the namespace (locks, a waiter handed the lock, watches, leases) and
//! gets `PermissionDenied` outside it. Every Redis key of a namespace starts with its hash
//! tag `{NAMESPACE}`, so the key pattern `~{NAMESPACE}*` is all such a user needs. Real
//! redis-server (`--tls-port`), real time.
#![cfg(feature = "tls")]

use std::sync::Arc;
use std::time::Duration;

use coord_core::{
    BackendExt, CoordinationBackend, Error, Mutex, Session, UrlOptions, WatchRequest,
};
use coord_redis::RedisOptions;
use coord_testkit::RedisServer;
use futures::StreamExt;

const PASSWORD: &str = "app-Secret-pw";
const BOUND: Duration = Duration::from_secs(10);

/// A TLS server whose `default` user is off and whose `app` user may touch only the keys of
/// the namespace `app/` (hash tag `{app/}`).
async fn server() -> Option<RedisServer> {
    RedisServer::builder()
        .local_only()
        .tls(true)
        .arg("--user")
        .arg("default")
        .arg("off")
        .arg("--user")
        .arg("app")
        .arg("on")
        .arg(format!(">{PASSWORD}"))
        .arg("~{app/}*")
        .arg("+@all")
        .start_or_skip()
        .await
}

/// The `app` user's options on `server` in `namespace`, with the CA and client certificate.
fn options(server: &RedisServer, namespace: &str) -> RedisOptions {
    let tls = server.tls().expect("a TLS server");
    let url = format!(
        "rediss://app:{PASSWORD}@{}?cacert={}&cert={}&key={}",
        server.endpoint(),
        tls.ca_cert_path().display(),
        tls.client_cert_path().display(),
        tls.client_key_path().display()
    );
    RedisOptions::parse_url(&url)
        .expect("parses")
        .namespace(namespace)
        .expect("a valid namespace")
}

#[tokio::test]
async fn a_user_confined_to_its_namespace_locks_hands_over_and_watches_inside_it() {
    let Some(server) = server().await else { return };
    let backend: Arc<dyn CoordinationBackend> = Arc::new(
        options(&server, "app/")
            .connect()
            .await
            .expect("connects inside"),
    );

    let mut watch = backend.watch(WatchRequest::key("k")).await.expect("watch");
    let revision = backend.put(b"k", b"v", 0).await.expect("put");
    let event = tokio::time::timeout(BOUND, watch.next())
        .await
        .expect("an event in time")
        .expect("an open stream")
        .expect("no error");
    assert_eq!(event.revision, revision);

    let holder = Session::new(backend.clone()).await.expect("a session");
    let guard = Mutex::new(&holder, "jobs").lock().await.expect("lock");
    let waiter = Session::new(backend.clone())
        .await
        .expect("a second session");
    let waiting = tokio::spawn(async move {
        let guard = Mutex::new(&waiter, "jobs").lock().await?;
        let token = guard.fencing_token();
        guard.unlock().await?;
        waiter.close().await?;
        Ok::<_, Error>(token)
    });
    let first = guard.fencing_token();
    guard.unlock().await.expect("unlock");
    let second = tokio::time::timeout(BOUND, waiting)
        .await
        .expect("the waiter got the lock in time")
        .unwrap()
        .unwrap();
    assert!(second > first, "tokens rise: {first} then {second}");
    holder.close().await.expect("close");
}

#[tokio::test]
async fn the_same_user_is_refused_outside_its_namespace() {
    let Some(server) = server().await else { return };
    let err = options(&server, "other/")
        .connect()
        .await
        .expect_err("the user may not touch {other/}");
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    assert!(!err.is_retryable());
    let text = format!("{err} {err:?}");
    assert!(!text.contains(PASSWORD), "{text}");
}
