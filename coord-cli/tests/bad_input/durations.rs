//! TTLs, time limits and permit counts.

use std::time::Duration;

use coord::{ConnectOptions, Error, Mutex, Semaphore, Session};

use crate::support::{
    assert_cli, assert_invalid, assert_message, assert_nothing_left, etcd, etcd_url, session,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b07_a_zero_ttl_is_refused() {
    let Some(server) = etcd().await else { return };
    let url = etcd_url(&server);
    let conn = coord::connect(&url).await.unwrap();
    let zero = Session::builder(conn.backend().clone())
        .ttl(Duration::ZERO)
        .start()
        .await;
    assert_invalid(zero.map(|_| ()), &["ttl", "positive"]);
    assert_invalid(
        ConnectOptions::parse(&format!("{url}&ttl=0s")),
        &["ttl", "positive"],
    );
    assert_cli(
        &url,
        &["--ttl", "0", "lock", "x", "--", "true"],
        2,
        &["TTL must be positive"],
    );
    assert_nothing_left(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b08_a_negative_ttl_is_refused() {
    // `Duration` cannot be negative: only text can say it.
    assert_invalid(ConnectOptions::parse("memory://?ttl=-1s"), &["ttl"]);
    assert_cli(
        "memory://",
        &["--ttl=-1s", "lock", "x", "--", "true"],
        2,
        &["--ttl", "-1s"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b09_a_ttl_that_is_not_a_duration_is_refused() {
    assert_invalid(ConnectOptions::parse("memory://?ttl=abc"), &["ttl", "abc"]);
    assert_cli(
        "memory://",
        &["--ttl", "abc", "lock", "x", "--", "true"],
        2,
        &["--ttl", "abc", "10s"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b10_a_ttl_above_the_servers_maximum_is_refused_not_wrapped() {
    let Some(server) = etcd().await else { return };
    let url = etcd_url(&server);
    let conn = coord::connect(&url).await.unwrap();
    for ttl in [Duration::MAX, Duration::from_secs(9_000_000_001)] {
        let huge = Session::builder(conn.backend().clone())
            .ttl(ttl)
            .start()
            .await;
        assert_invalid(huge.map(|_| ()), &["9000000000s"]);
    }
    assert_cli(
        &url,
        &["--ttl", "300years", "lock", "x", "--", "true"],
        2,
        &["TTL"],
    );
    assert_nothing_left(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b11_a_ttl_below_the_servers_minimum_is_raised_and_said() {
    let Some(server) = etcd().await else { return };
    let url = etcd_url(&server);
    let conn = coord::connect(&url).await.unwrap();
    let s = Session::builder(conn.backend().clone())
        .ttl(Duration::from_millis(500))
        .start()
        .await
        .unwrap();
    assert_eq!(s.ttl(), Duration::from_secs(2), "etcd grants at least 2 s");
    s.close().await.unwrap();
    // With CMD, --kill-after must fit in the TTL asked for (checked before connecting).
    let args = [
        "--ttl",
        "500ms",
        "lock",
        "--kill-after",
        "100ms",
        "x",
        "--",
        "true",
    ];
    assert_cli(&url, &args, 0, &["TTL 500ms raised", "granted 2s"]);
    assert_nothing_left(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b12_a_zero_time_limit_tries_once() {
    let Some(server) = etcd().await else { return };
    let url = etcd_url(&server);
    let a = session(&url).await;
    let free = Mutex::new(&a, "z").lock_timeout(Duration::ZERO).await;
    let held = free.expect("a free lock is taken with a zero limit");
    let b = session(&url).await;
    let err = Mutex::new(&b, "z")
        .lock_timeout(Duration::ZERO)
        .await
        .expect_err("a held lock is not");
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert_message(&err, true, &["lock \"z\""]);
    assert_cli(
        &url,
        &["lock", "--timeout", "0s", "z", "--", "true"],
        4,
        &["timed out"],
    );
    held.unlock().await.unwrap();
    assert_cli(
        &url,
        &["lock", "--timeout", "0s", "z", "--", "true"],
        0,
        &[],
    );
    a.close().await.unwrap();
    b.close().await.unwrap();
    assert_nothing_left(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b13_a_negative_or_malformed_time_limit_is_refused() {
    for bad in ["--timeout=-1s", "--timeout=soon"] {
        assert_cli(
            "memory://",
            &["lock", bad, "x", "--", "true"],
            2,
            &["--timeout"],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b14_a_zero_request_timeout_is_refused() {
    assert_invalid(
        ConnectOptions::parse("etcd://127.0.0.1:2379?request_timeout=0s"),
        &["request_timeout"],
    );
    assert_cli(
        "etcd://127.0.0.1:2379?request_timeout=0s",
        &["lock", "x", "--", "true"],
        2,
        &["request_timeout"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b15_a_url_ttl_takes_the_same_duration_grammar_as_the_cli() {
    let options = ConnectOptions::parse("memory://?ttl=1h30m").unwrap();
    assert_eq!(options.session_ttl(), Some(Duration::from_secs(5400)));
    assert_cli("memory://?ttl=1h30m", &["lock", "x", "--", "true"], 0, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b16_zero_permits_are_refused() {
    let s = session("memory://").await;
    assert_invalid(
        Semaphore::new(&s, "pool", 0).map(|_| ()),
        &["0 permits is not accepted"],
    );
    assert_cli(
        "memory://",
        &["lock", "--permits", "0", "pool", "--", "true"],
        2,
        &["--permits"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b17_a_huge_permit_count_is_refused_up_front() {
    let Some(server) = etcd().await else { return };
    let url = etcd_url(&server);
    let s = session(&url).await;
    assert_invalid(
        Semaphore::new(&s, "pool", usize::MAX).map(|_| ()),
        &["permits"],
    );
    s.close().await.unwrap();
    assert_cli(
        &url,
        &[
            "lock",
            "--permits",
            "18446744073709551615",
            "pool",
            "--",
            "true",
        ],
        2,
        &["permits"],
    );
    assert_nothing_left(&url).await;
}
