//! `coord status` and `coord ls` against real servers (etcd and Redis, started by
//! coord-testkit on free loopback ports), with holders and waiters that are other processes:
//! `coord lock`, `coord elect`, and on etcd `etcdctl lock` / `etcdctl elect` (interop).
//!
//! The memory backend cannot be used: its store lives inside one process. Without a server
//! binary the tests print a skip line, unless `COORD_TEST_REQUIRE_BACKENDS=1`, which makes
//! them fail. Real time only.

#![cfg(any(feature = "etcd", feature = "redis"))]

mod cli_support;

use std::time::{Duration, Instant};

use cli_support::{Proc, SHORT, coord};
use serde_json::Value;

/// `coord status ARGS -o json`, which must exit 0.
fn status(url: &str, args: &[&str]) -> Value {
    let mut all = vec!["status", "-o", "json"];
    all.extend_from_slice(args);
    let out = coord(url, &all).output().expect("run coord status");
    assert!(
        out.status.success(),
        "coord status {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

/// Polls `coord status` until `waiters` waiters queue (the processes started meanwhile).
fn until_waiters(url: &str, args: &[&str], waiters: usize) -> Value {
    let deadline = Instant::now() + SHORT;
    loop {
        let s = status(url, args);
        if s["waiters"].as_array().map(Vec::len) == Some(waiters) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{waiters} waiters never queued: {s}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn key(entry: &Value) -> &str {
    entry["key"].as_str().expect("a key")
}

/// The entry's lease is the one its key names (`NAME/<lease hex>`), alive, with some but
/// no more than `granted` left.
fn assert_live_lease(entry: &Value, granted: Duration) {
    let lease = entry["lease"].as_str().expect("a lease");
    assert!(key(entry).ends_with(&format!("/{lease}")), "{entry}");
    assert_eq!(entry["lease_state"], "live", "{entry}");
    assert_eq!(
        entry["ttl_granted_ms"].as_u64(),
        Some(granted.as_millis() as u64),
        "{entry}"
    );
    let left = entry["ttl_remaining_ms"].as_u64().expect("time left");
    assert!(left > 0 && left <= granted.as_millis() as u64, "{entry}");
}

/// `coord lock` prints its key, then its fencing token.
fn hold(url: &str, args: &[&str]) -> (Proc, String, i64) {
    let mut p = Proc::coord(url, args);
    let key = p.line(SHORT);
    let token = p.line(SHORT).parse().expect("a fencing token");
    (p, key, token)
}

/// A holder, then two `coord lock` waiters; after the holder ends, the first waiter holds;
/// `ls` counts them. Shared by both backends.
fn lock_holder_and_waiters_in_order(url: &str) {
    let (mut a, key_a, token_a) = hold(url, &["lock", "L"]);
    let s = status(url, &["L"]);
    assert_eq!(s["kind"], "lock");
    assert_eq!(s["state"], "held");
    let holders = s["holders"].as_array().unwrap();
    assert_eq!(holders.len(), 1, "{s}");
    assert_eq!(key(&holders[0]), key_a);
    assert_eq!(holders[0]["fencing_token"], token_a);
    assert_live_lease(&holders[0], Duration::from_secs(10));

    let _b = Proc::coord(url, &["lock", "L"]);
    let first = until_waiters(url, &["L"], 1);
    let key_b = key(&first["waiters"][0]).to_owned();
    let _c = Proc::coord(url, &["lock", "L", "--ttl", "7"]);
    let s = until_waiters(url, &["L"], 2);
    assert_eq!(key(&s["holders"][0]), key_a);
    assert_eq!(
        key(&s["waiters"][0]),
        key_b,
        "waiters in the order they queued"
    );
    assert_live_lease(&s["waiters"][1], Duration::from_secs(7));
    let (tb, tc) = (
        &s["waiters"][0]["fencing_token"],
        &s["waiters"][1]["fencing_token"],
    );
    assert!(tb.as_i64() < tc.as_i64(), "{s}");

    let ls = coord(url, &["ls", "-o", "json"]).output().unwrap();
    let ls = String::from_utf8(ls.stdout).unwrap();
    let l: Value = ls
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["name"] == "L")
        .unwrap_or_else(|| panic!("L not listed: {ls}"));
    assert_eq!(
        (&l["kind"], &l["holders"], &l["waiters"]),
        (&"lock".into(), &1.into(), &2.into())
    );

    let text = coord(url, &["status", "L"]).output().unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("lock L: held, 2 waiting"), "{text}");
    assert!(
        lines[1]
            .trim_start()
            .starts_with(&format!("holder    {key_a}  token {token_a}")),
        "{text}"
    );
    assert!(
        lines[2].contains(&key_b) && lines[2].contains("waiter 1"),
        "{text}"
    );

    a.signal("TERM");
    assert_eq!(a.wait(SHORT).code(), Some(0));
    let s = until_waiters(url, &["L"], 1);
    assert_eq!(
        key(&s["holders"][0]),
        key_b,
        "the first waiter holds next: {s}"
    );
}

/// `status --watch`: a block per change; the handoff shows the next holder, held for a
/// time measured by the watch.
fn watch_shows_a_handoff(url: &str) {
    let (mut a, key_a, _) = hold(url, &["lock", "H"]);
    let _b = Proc::coord(url, &["lock", "H"]);
    until_waiters(url, &["H"], 1);
    let mut w = Proc::coord(url, &["status", "--watch", "H", "-o", "json"]);
    let first: Value = serde_json::from_str(&w.line(SHORT)).unwrap();
    assert_eq!(key(&first["holders"][0]), key_a);
    assert_eq!(first["holders"][0]["began_before_watch"], true);
    let key_b = key(&first["waiters"][0]).to_owned();

    a.signal("TERM");
    let next: Value = serde_json::from_str(&w.line(SHORT)).unwrap();
    assert_eq!(key(&next["holders"][0]), key_b, "{next}");
    assert_eq!(next["waiters"], Value::Array(vec![]), "{next}");
    assert_eq!(next["holders"][0]["began_before_watch"], false, "{next}");
    assert!(next["holders"][0]["held_for_ms"].is_u64(), "{next}");
    assert_eq!(
        w.try_line(Duration::from_millis(500)),
        None,
        "no change, no block"
    );
    w.signal("INT");
    assert_eq!(w.wait(SHORT).code(), Some(0), "{}", w.stderr());
    assert_eq!(a.wait(SHORT).code(), Some(0));
}

#[cfg(feature = "etcd")]
mod etcd {
    use coord_testkit::{EtcdServer, require_backends};

    use super::*;

    fn url(etcd: &EtcdServer) -> String {
        format!(
            "etcd://{}?namespace={}",
            etcd.endpoints().join(","),
            etcd.namespace()
        )
    }

    fn etcdctl(etcd: &EtcdServer, args: &[&str]) -> Option<Proc> {
        let bin = std::env::var("COORD_TEST_ETCDCTL_BIN").unwrap_or_else(|_| "etcdctl".into());
        let found = std::process::Command::new(&bin)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            assert!(
                !require_backends(),
                "etcdctl not found and COORD_TEST_REQUIRE_BACKENDS=1"
            );
            eprintln!("skipped: etcdctl not found");
            return None;
        }
        let endpoints = etcd.endpoints().join(",");
        let mut all = vec!["--endpoints", endpoints.as_str()];
        all.extend_from_slice(args);
        Some(Proc::spawn(&bin, &all, &[("ETCDCTL_API", "3")]))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn status_shows_lock_holder_then_waiters_in_order() {
        let Some(etcd) = EtcdServer::start_or_skip().await else {
            return;
        };
        lock_holder_and_waiters_in_order(&url(&etcd));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn status_watch_shows_a_handoff() {
        let Some(etcd) = EtcdServer::start_or_skip().await else {
            return;
        };
        watch_shows_a_handoff(&url(&etcd));
    }

    /// etcdctl's holders and waiters are coord's: a lock waiter and an election leader
    /// made by etcdctl show up in order, a lock waiter with the lease etcdctl asked for.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn status_shows_etcdctl_lock_waiters_and_election_leaders() {
        let Some(etcd) = EtcdServer::start_or_skip().await else {
            return;
        };
        let url = url(&etcd);
        let ns = etcd.namespace().to_owned();
        let (_a, key_a, _) = hold(&url, &["lock", "X"]);
        let Some(_e) = etcdctl(&etcd, &["lock", "--ttl", "13", &format!("{ns}X")]) else {
            return;
        };
        let s = until_waiters(&url, &["X"], 1);
        assert_eq!(key(&s["holders"][0]), key_a);
        assert!(key(&s["waiters"][0]).starts_with("X/"), "{s}");
        assert_live_lease(&s["waiters"][0], Duration::from_secs(13));

        let Some(mut leader) = etcdctl(&etcd, &["elect", &format!("{ns}E"), "from-etcdctl"]) else {
            return;
        };
        leader.line(SHORT); // the leader key: elected
        let _candidate = Proc::coord(&url, &["elect", "E", "from-coord"]);
        let s = until_waiters(&url, &["E"], 1);
        assert_eq!(s["kind"], "election", "guessed from the proposals: {s}");
        assert_eq!(s["holders"][0]["proposal"], "from-etcdctl");
        assert_eq!(s["waiters"][0]["proposal"], "from-coord");
    }

    /// A read/write lock: readers hold, a writer queued behind them, a reader behind it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn status_shows_rw_readers_and_queued_writer() {
        let Some(etcd) = EtcdServer::start_or_skip().await else {
            return;
        };
        let url = url(&etcd);
        let (_r, key_r, _) = hold(&url, &["lock", "RW", "--read"]);
        let _w = Proc::coord(&url, &["lock", "RW", "--write"]);
        until_waiters(&url, &["RW"], 1);
        let _r2 = Proc::coord(&url, &["lock", "RW", "--read"]);
        let s = until_waiters(&url, &["RW"], 2);
        assert_eq!(s["kind"], "rw");
        assert_eq!(key(&s["holders"][0]), key_r);
        let modes: Vec<&Value> = s["waiters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| &w["mode"])
            .collect();
        assert_eq!(modes, [&Value::from("write"), &Value::from("read")], "{s}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn status_refuses_bad_names_and_kinds() {
        let Some(etcd) = EtcdServer::start_or_skip().await else {
            return;
        };
        let url = url(&etcd);
        coord(&url, &["status", "a/"]).assert().code(2);
        coord(&url, &["status", "a", "--kind", "semaphore"])
            .assert()
            .code(2);
        coord(&url, &["status", "a", "--kind", "lock", "--permits", "2"])
            .assert()
            .code(2);
        let s = status(&url, &["nobody-here"]);
        assert_eq!((&s["state"], &s["kind"]), (&"free".into(), &"lock".into()));
    }
}

#[cfg(feature = "redis")]
mod redis {
    use coord_testkit::RedisServer;

    use super::*;

    fn url(redis: &RedisServer) -> String {
        format!("{}?namespace={}", redis.url(), redis.namespace())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn status_shows_lock_holder_then_waiters_in_order() {
        let Some(redis) = RedisServer::start_or_skip().await else {
            return;
        };
        lock_holder_and_waiters_in_order(&url(&redis));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn status_watch_shows_a_handoff() {
        let Some(redis) = RedisServer::start_or_skip().await else {
            return;
        };
        watch_shows_a_handoff(&url(&redis));
    }

    /// A semaphore of 2 permits held by two `coord lock --permits 2`, a third waiting.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn status_shows_semaphore_permits() {
        let Some(redis) = RedisServer::start_or_skip().await else {
            return;
        };
        let url = url(&redis);
        let (_a, key_a, _) = hold(&url, &["lock", "S", "--permits", "2"]);
        let (_b, key_b, _) = hold(&url, &["lock", "S", "--permits", "2"]);
        let _c = Proc::coord(&url, &["lock", "S", "--permits", "2"]);
        let s = until_waiters(&url, &["S", "--permits", "2"], 1);
        assert_eq!(s["kind"], "semaphore");
        assert_eq!(s["permits"], 2);
        let holders: Vec<&str> = s["holders"].as_array().unwrap().iter().map(key).collect();
        assert_eq!(holders, [key_a.as_str(), key_b.as_str()]);
    }
}
