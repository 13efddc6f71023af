//! A role that covers one prefix only, with the prefix added by `coord_core::Namespaced`
//! (as `coord::connect` applies `?namespace=`) rather than by `EtcdOptions::namespace`:
//! every call the recipes make stays inside the prefix, the backend's own reads included.

use std::time::Duration;

use coord_core::{
    BackendExt, CoordinationBackend, Mutex, NO_LEASE, Namespaced, Session, WatchRequest,
};
use coord_etcd::{EtcdBackend, EtcdOptions};
use coord_testkit::EtcdServer;
use futures::StreamExt;

const APP_PW: &str = "app-Secret-pw";

#[tokio::test]
async fn a_role_over_the_namespace_is_enough_for_watches_revisions_and_locks() {
    let Some(server) = EtcdServer::builder()
        .local_only()
        .user("app", APP_PW, "app/")
        .start_or_skip()
        .await
    else {
        return;
    };
    // The one server named twice: with several endpoints a watch from now first reads the
    // current revision, which must not need a key outside the role.
    let endpoints = [server.url(), server.url()];
    let etcd = EtcdBackend::connect(EtcdOptions::new(endpoints).user("app", APP_PW))
        .await
        .expect("connect");
    let app = Namespaced::new(etcd, "app/");

    let mut watch = app.watch(WatchRequest::key("k")).await.expect("watch");
    let rev = app.put(b"k", b"v", NO_LEASE).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("an event in time")
        .expect("an open stream")
        .expect("no error");
    assert_eq!(event.revision, rev);
    assert_eq!(app.current_revision().await.unwrap(), rev);

    let session = Session::builder(std::sync::Arc::new(app.clone()))
        .ttl(Duration::from_secs(5))
        .start()
        .await
        .unwrap();
    let guard = Mutex::new(&session, "jobs").lock().await.unwrap();
    let other = Session::new(std::sync::Arc::new(app)).await.unwrap();
    let waiting = tokio::spawn(async move {
        let guard = Mutex::new(&other, "jobs").lock().await?;
        guard.unlock().await?;
        other.close().await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    guard.unlock().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiter got the lock in time")
        .unwrap()
        .unwrap();
    session.close().await.unwrap();
}
