//! The server away: at connect, while holding, while waiting, or silent (black-holed).

use std::time::{Duration, Instant};

use coord::{Error, Mutex};
use coord_testkit::FaultProxy;

use crate::cli_support::Proc;
use crate::support::{assert_cli, assert_message, assert_nothing_left_within, etcd, etcd_url};

const SHORT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b37_a_server_down_at_connect_is_unavailable_and_retryable() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    for url in [
        "etcd://127.0.0.1:1?connect_timeout=2s",
        "redis://127.0.0.1:1?connect_timeout=2s",
    ] {
        let started = Instant::now();
        let err = coord::connect(url)
            .await
            .map(|c| c.backend_name())
            .expect_err("nothing listens");
        assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
        assert_message(&err, true, &["127.0.0.1:1"]);
        assert!(started.elapsed() < SHORT, "{:?}", started.elapsed());
        assert_cli(url, &["lock", "x", "--", "true"], 1, &["unavailable"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b38_a_server_killed_under_a_holder_ends_the_hold_with_exit_5() {
    let Some(server) = etcd().await else { return };
    let url = format!("{}&ttl=2s", etcd_url(&server));
    let session = crate::support::session(&url).await;
    let guard = Mutex::new(&session, "lib").lock().await.unwrap();
    let mut cli = Proc::coord(&url, &["lock", "cli"]);
    cli.line(SHORT);
    cli.line(SHORT);
    server.kill().await.unwrap();
    tokio::time::timeout(SHORT, guard.lost())
        .await
        .expect("the library's hold says it is lost within the TTL and its margin");
    assert_eq!(cli.wait(SHORT).code(), Some(5), "{}", cli.stderr());
    drop(guard);
    server.restart().await.unwrap();
    assert_nothing_left_within(&url, SHORT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b39_a_server_killed_under_a_waiter_says_nothing_was_held() {
    let Some(server) = etcd().await else { return };
    let url = format!("{}&ttl=2s", etcd_url(&server));
    let mut holder = Proc::coord(&url, &["lock", "w"]);
    holder.line(SHORT);
    let mut waiter = Proc::coord(&url, &["lock", "w"]);
    assert_eq!(
        waiter.try_line(Duration::from_millis(500)),
        None,
        "it waits"
    );
    server.kill().await.unwrap();
    assert_eq!(waiter.wait(SHORT).code(), Some(1), "{}", waiter.stderr());
    assert!(
        waiter.stderr().contains("before anything was held"),
        "{}",
        waiter.stderr()
    );
    assert_eq!(holder.wait(SHORT).code(), Some(5), "{}", holder.stderr());
    server.restart().await.unwrap();
    assert_nothing_left_within(&url, SHORT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b40_a_black_holed_server_does_not_keep_an_interrupted_holder_waiting() {
    let Some(server) = etcd().await else { return };
    let proxy = FaultProxy::start(server.endpoint()).await.unwrap();
    let handle = proxy.handle();
    let url = format!(
        "etcd://{}?namespace={}&ttl=4s",
        handle.addr(),
        server.namespace()
    );
    let mut holder = Proc::coord(&url, &["lock", "b"]);
    holder.line(SHORT);
    holder.line(SHORT);
    handle.blackhole();
    holder.signal("INT");
    let started = Instant::now();
    let status = holder.wait(SHORT);
    assert!(started.elapsed() < SHORT, "{:?}", started.elapsed());
    assert!(holder.stderr().contains("lease"), "{}", holder.stderr());
    assert_ne!(
        status.code(),
        Some(0),
        "the release did not reach the server"
    );
    handle.heal();
    assert_nothing_left_within(&etcd_url(&server), SHORT).await;
}
