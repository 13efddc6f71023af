//! What every catalogue case needs: servers of its own, URLs, the keys left in the store,
//! and assertions on a library error and on a `coord` run.

use std::time::Duration;

use coord::{CoordinationBackend, Error, RangeRequest};
use coord_testkit::{EtcdServer, RedisServer};

use crate::cli_support;

/// An etcd of this test (etcd's default raft timing, so its 2 s minimum lease TTL holds).
pub(crate) async fn etcd() -> Option<EtcdServer> {
    EtcdServer::builder()
        .local_only()
        .timing(Duration::from_millis(100), Duration::from_secs(1))
        .start_or_skip()
        .await
}

/// A redis-server of this test.
pub(crate) async fn redis() -> Option<RedisServer> {
    RedisServer::builder().local_only().start_or_skip().await
}

/// The fixture's URL with its namespace (every key the case writes is under it).
pub(crate) fn etcd_url(etcd: &EtcdServer) -> String {
    format!(
        "etcd://{}?namespace={}",
        etcd.endpoints().join(","),
        etcd.namespace()
    )
}

/// The fixture's URL with its namespace.
pub(crate) fn redis_url(redis: &RedisServer) -> String {
    let base = redis.url();
    let join = if base.contains('?') { '&' } else { '?' };
    format!("{base}{join}namespace={}", redis.namespace())
}

/// Every key under the namespace of `url`, as text: what a case left behind.
pub(crate) async fn keys_left(url: &str) -> Vec<String> {
    let conn = coord::connect(url)
        .await
        .expect("connect to inspect the store");
    let resp = conn
        .backend()
        .range(RangeRequest::prefix(""))
        .await
        .expect("read the namespace");
    resp.kvs
        .iter()
        .map(|kv| kv.key_str().into_owned())
        .collect()
}

/// Asserts that nothing is left under the namespace of `url`.
pub(crate) async fn assert_nothing_left(url: &str) {
    let left = keys_left(url).await;
    assert!(left.is_empty(), "keys left behind: {left:?}");
}

/// Asserts `result` failed with `InvalidArgument` (not retryable) whose message contains
/// every one of `says`.
#[track_caller]
pub(crate) fn assert_invalid<T: std::fmt::Debug>(result: coord::Result<T>, says: &[&str]) {
    let err = result.expect_err("bad input must be refused");
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    assert_message(&err, false, says);
}

/// Asserts `err` is (or is not) retryable and its message contains every one of `says`.
#[track_caller]
pub(crate) fn assert_message(err: &Error, retryable: bool, says: &[&str]) {
    assert_eq!(err.is_retryable(), retryable, "retryable? {err:?}");
    let text = err.to_string();
    for s in says {
        assert!(text.contains(s), "{s:?} not in {text:?}");
    }
}

/// Runs `coord --backend URL args…` to its end (at most a minute) and asserts its exit
/// code and that stderr contains every one of `says`; returns stderr.
#[track_caller]
pub(crate) fn assert_cli(url: &str, args: &[&str], code: i32, says: &[&str]) -> String {
    let out = cli_support::coord(url, args).output().expect("run coord");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "coord {args:?}: stdout {:?}, stderr {stderr:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    for s in says {
        assert!(stderr.contains(s), "{s:?} not in stderr {stderr:?}");
    }
    stderr
}

/// A session on `url`.
pub(crate) async fn session(url: &str) -> coord::Session {
    coord::connect(url)
        .await
        .expect("connect")
        .session()
        .await
        .expect("session")
}

/// Waits until nothing is left under the namespace of `url` (leases of dead sessions end
/// by themselves), failing after `within`.
pub(crate) async fn assert_nothing_left_within(url: &str, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = keys_left(url).await;
        if left.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "keys still there after {within:?}: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
