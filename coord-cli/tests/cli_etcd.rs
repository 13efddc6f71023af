//! The `coord` command line against a real etcd (started by coord-testkit on free loopback
//! ports, or named by `COORD_TEST_ETCD`), and interoperability with `etcdctl`.
//!
//! Without an etcd binary the tests print a skip line, unless
//! `COORD_TEST_REQUIRE_BACKENDS=1`, which makes them fail. Real time only.

mod cli_support;

use std::time::Duration;

use cli_support::{LONG, Proc, SHORT, coord};
use coord::BackendExt;
use coord_testkit::{EtcdServer, FaultProxy, require_backends};
use predicates::prelude::*;

/// The backend URL for the fixture, keys confined to its namespace.
fn url(etcd: &EtcdServer) -> String {
    format!(
        "etcd://{}?namespace={}",
        etcd.endpoints().join(","),
        etcd.namespace()
    )
}

/// The `etcdctl` binary, or `None` (skip) when it is missing and backends are not required.
fn etcdctl_bin() -> Option<String> {
    let bin = std::env::var("COORD_TEST_ETCDCTL_BIN").unwrap_or_else(|_| "etcdctl".to_owned());
    let found = std::process::Command::new(&bin)
        .arg("version")
        .env("ETCDCTL_API", "3")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        Some(bin)
    } else if require_backends() {
        panic!("etcdctl not found and COORD_TEST_REQUIRE_BACKENDS=1");
    } else {
        eprintln!("SKIPPED: etcdctl not found (set COORD_TEST_REQUIRE_BACKENDS=1 to fail instead)");
        None
    }
}

fn etcdctl(bin: &str, etcd: &EtcdServer, args: &[&str]) -> Proc {
    let endpoints = etcd.endpoints().join(",");
    let mut all = vec!["--endpoints", endpoints.as_str()];
    all.extend_from_slice(args);
    Proc::spawn(bin, &all, &[("ETCDCTL_API", "3")])
}

async fn keys_under(etcd: &EtcdServer, prefix: &str) -> String {
    let full = format!("{}{prefix}", etcd.namespace());
    etcd.etcdctl(&["get", "--prefix", &full, "--keys-only"])
        .await
        .expect("etcdctl get")
        .trim()
        .to_owned()
}

const QUIET: Duration = Duration::from_millis(700);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_exclude_each_other() {
    let Some(etcd) = EtcdServer::start_or_skip().await else {
        return;
    };
    let Some(_) = etcdctl_bin() else { return }; // to inspect the server
    let url = url(&etcd);
    let mut a = Proc::coord(&url, &["lock", "L"]);
    let key_a = a.line(SHORT);
    let token_a: i64 = a.line(SHORT).parse().unwrap();
    assert!(key_a.starts_with("L/"), "{key_a}");

    coord(&url, &["lock", "L", "--try"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains(key_a.as_str()));
    coord(&url, &["lock", "L", "--timeout", "300ms"])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("timed out"));

    let mut b = Proc::coord(
        &url,
        &[
            "lock",
            "L",
            "--",
            "sh",
            "-c",
            "echo token=$COORD_FENCING_TOKEN",
        ],
    );
    assert_eq!(
        b.try_line(QUIET),
        None,
        "b must wait while a holds the lock"
    );
    a.signal("TERM");
    assert_eq!(a.wait(SHORT).code(), Some(0), "{}", a.stderr());
    let key_b = b.line(SHORT);
    let token_b: i64 = b.line(SHORT).parse().unwrap();
    assert_eq!(b.line(SHORT), format!("token={token_b}"));
    assert_ne!(key_a, key_b);
    assert!(
        token_b > token_a,
        "fencing tokens rise: {token_a} then {token_b}"
    );
    assert_eq!(b.wait(SHORT).code(), Some(0), "{}", b.stderr());
    assert_eq!(keys_under(&etcd, "L/").await, "", "no key left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_interrupted_withdraws() {
    let Some(etcd) = EtcdServer::start_or_skip().await else {
        return;
    };
    let Some(_) = etcdctl_bin() else { return }; // to inspect the server
    let url = url(&etcd);
    let mut a = Proc::coord(&url, &["lock", "W"]);
    let key_a = a.line(SHORT);
    a.line(SHORT);
    let mut b = Proc::coord(&url, &["lock", "W"]);
    assert_eq!(b.try_line(QUIET), None);
    b.signal("INT");
    assert_eq!(b.wait(SHORT).code(), Some(130), "{}", b.stderr());
    let left = keys_under(&etcd, "W/").await;
    assert_eq!(
        left,
        format!("{}{key_a}", etcd.namespace()),
        "only a's key is left"
    );
    a.signal("INT");
    assert_eq!(a.wait(SHORT).code(), Some(0));
    assert_eq!(keys_under(&etcd, "W/").await, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_mode_env_and_exit_code_on_etcd() {
    let Some(etcd) = EtcdServer::start_or_skip().await else {
        return;
    };
    let Some(etcdctl) = etcdctl_bin() else { return };
    let url = url(&etcd);
    // ETCD_LOCK_KEY is the key as etcd stores it (namespace included): read it back.
    let script = format!(
        "ETCDCTL_API=3 {etcdctl} --endpoints {} get --keys-only \"$ETCD_LOCK_KEY\"; echo \"$COORD_LOCK_KEY\"; exit 3",
        etcd.endpoints().join(",")
    );
    let out = coord(&url, &["lock", "X", "--", "sh", "-c", &script])
        .assert()
        .code(3)
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    let key = lines[0];
    assert_eq!(lines[2], format!("{}{key}", etcd.namespace()), "{out}");
    assert_eq!(lines[3], key, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lock_and_coord_lock_exclude_each_other() {
    let Some(etcd) = EtcdServer::start_or_skip().await else {
        return;
    };
    let Some(bin) = etcdctl_bin() else { return };
    let url = url(&etcd);
    let ns = etcd.namespace().to_owned();
    let full = format!("{ns}shared");

    // etcdctl holds: coord --try fails naming etcdctl's key.
    let mut e = etcdctl(&bin, &etcd, &["lock", &full]);
    let etcd_key = e.line(SHORT);
    let relative = etcd_key.strip_prefix(&ns).expect("namespaced key");
    coord(&url, &["lock", "shared", "--try"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains(relative));
    e.signal("INT");
    e.wait(SHORT);
    coord(&url, &["lock", "shared", "--try", "--", "true"])
        .assert()
        .success();

    // coord holds: etcdctl waits until coord releases.
    let mut c = Proc::coord(&url, &["lock", "shared"]);
    let coord_key = c.line(SHORT);
    c.line(SHORT);
    let mut e = etcdctl(
        &bin,
        &etcd,
        &["lock", &full, "--", "sh", "-c", "echo got $ETCD_LOCK_KEY"],
    );
    assert_eq!(
        e.try_line(QUIET),
        None,
        "etcdctl must wait while coord holds"
    );
    c.signal("TERM");
    assert_eq!(c.wait(SHORT).code(), Some(0));
    let got = loop {
        let line = e.line(SHORT);
        if line.starts_with("got ") {
            break line;
        }
    };
    assert_ne!(got, format!("got {ns}{coord_key}"));
    assert!(e.wait(SHORT).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_listen_and_leader() {
    let Some(etcd) = EtcdServer::start_or_skip().await else {
        return;
    };
    let url = url(&etcd);
    let json_line = |p: &mut Proc| -> serde_json::Value {
        let line = p.line(SHORT);
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"))
    };
    let mut listen = Proc::coord(&url, &["-o", "json", "elect", "--listen", "E"]);
    assert_eq!(json_line(&mut listen)["event"], "no_leader");

    let mut a = Proc::coord(&url, &["elect", "E", "alpha"]);
    let key_a = a.line(SHORT);
    assert_eq!(a.line(SHORT), "alpha");
    let seen = json_line(&mut listen);
    assert_eq!(seen["event"], "leader");
    assert_eq!(seen["proposal"], "alpha");
    assert_eq!(seen["key"], key_a.as_str());
    coord(&url, &["leader", "E"])
        .assert()
        .success()
        .stdout("alpha\n");

    let mut b = Proc::coord(&url, &["elect", "E", "beta"]);
    assert_eq!(b.try_line(QUIET), None, "b waits while a leads");
    a.signal("TERM");
    assert_eq!(a.wait(SHORT).code(), Some(0), "{}", a.stderr());
    let key_b = b.line(SHORT);
    assert_eq!(b.line(SHORT), "beta");
    let seen = json_line(&mut listen);
    assert_eq!(seen["proposal"], "beta");
    assert_eq!(seen["key"], key_b.as_str());
    coord(&url, &["leader", "E"])
        .assert()
        .success()
        .stdout("beta\n");

    b.signal("INT");
    assert_eq!(b.wait(SHORT).code(), Some(0));
    assert_eq!(json_line(&mut listen)["event"], "no_leader");
    coord(&url, &["leader", "E"]).assert().code(6);

    // etcdctl elect's leader is coord's leader.
    if let Some(bin) = etcdctl_bin() {
        let full = format!("{}E", etcd.namespace());
        let mut e = etcdctl(&bin, &etcd, &["elect", &full, "gamma"]);
        e.line(SHORT);
        let seen = json_line(&mut listen);
        assert_eq!(seen["proposal"], "gamma");
        coord(&url, &["leader", "E"])
            .assert()
            .success()
            .stdout("gamma\n");
        e.signal("INT");
        e.wait(SHORT);
        assert_eq!(json_line(&mut listen)["event"], "no_leader");
    }
    listen.signal("INT");
    assert_eq!(listen.wait(SHORT).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lock_terminates_the_command_and_exits_5() {
    let Some(etcd) = EtcdServer::start_or_skip().await else {
        return;
    };
    let Some(_) = etcdctl_bin() else { return }; // to inspect the server
    let url = url(&etcd);
    let ns = etcd.namespace().to_owned();

    // The lock key is deleted under a running command.
    let mut p = Proc::coord(&url, &["lock", "Z", "--", "sleep", "30"]);
    let key = p.line(SHORT);
    p.line(SHORT);
    etcd.etcdctl(&["del", &format!("{ns}{key}")]).await.unwrap();
    let started = std::time::Instant::now();
    assert_eq!(p.wait(SHORT).code(), Some(5));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "sleep 30 was terminated"
    );
    assert!(p.stderr().contains("lost"), "{}", p.stderr());

    // The session's lease is revoked while holding without a command.
    let mut p = Proc::coord(&url, &["-o", "json", "lock", "Z"]);
    let locked: serde_json::Value = serde_json::from_str(&p.line(SHORT)).unwrap();
    let lease = locked["lease"].as_str().unwrap().to_owned();
    etcd.etcdctl(&["lease", "revoke", &lease]).await.unwrap();
    assert_eq!(p.wait(SHORT).code(), Some(5), "{}", p.stderr());
    let lost: serde_json::Value = serde_json::from_str(&p.line(SHORT)).unwrap();
    assert_eq!(lost["event"], "lost");
}

/// Every line of `path` (empty when it does not exist yet).
fn marks(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_ignoring_sigterm_is_dead_before_the_next_holder_starts() {
    let Some(etcd) = EtcdServer::start_or_skip().await else {
        return;
    };
    let proxy = FaultProxy::start(etcd.endpoint()).await.expect("proxy");
    let ns = etcd.namespace();
    let partitioned = format!("etcd://{}?namespace={ns}", proxy.addr());
    let direct = url(&etcd);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("marks");
    let path = file.to_str().unwrap().to_owned();
    let handle = proxy.handle();
    // The `Proc` helpers block: off the runtime, so that the proxy keeps forwarding.
    tokio::task::spawn_blocking(move || {
        // `echo` is a shell builtin: once sh is killed nothing writes A any more.
        let stubborn = "trap '' TERM; while :; do echo A >> \"$1\"; sleep 0.02; done";
        let mut a = Proc::coord(
            &partitioned,
            &[
                "--ttl", "2", "lock", "F", "--", "sh", "-c", stubborn, "sh", &path,
            ],
        );
        a.line(SHORT);
        a.line(SHORT);
        let deadline = std::time::Instant::now() + SHORT;
        while !marks(&file).iter().any(|m| m == "A") {
            assert!(std::time::Instant::now() < deadline, "CMD never wrote");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mark = "echo B >> \"$1\"";
        let mut b = Proc::coord(
            &direct,
            &[
                "--ttl", "2", "lock", "F", "--", "sh", "-c", mark, "sh", &path,
            ],
        );
        assert_eq!(b.try_line(QUIET), None, "b waits while a holds");

        // a can no longer refresh its lease, which the server expires 2 s after the last
        // refresh; then b acquires.
        handle.blackhole();
        assert_eq!(b.wait(LONG).code(), Some(0), "{}", b.stderr());
        // a reaps its command before it exits; judge the marks either way, then the exit.
        let exited = a.wait_at_most(SHORT);
        let marks = marks(&file);
        let first_b = marks.iter().position(|m| m == "B").expect("b wrote");
        let late = marks[first_b..].iter().filter(|m| *m == "A").count();
        assert_eq!(
            late,
            0,
            "a's command wrote {late} times inside b's critical section (of {} marks)",
            marks.len()
        );
        // Still cut off, a gives up revoking its lease rather than hang.
        let exited = exited.unwrap_or_else(|| panic!("a still runs; stderr: {}", a.stderr()));
        assert_eq!(exited.code(), Some(5), "{}", a.stderr());
    })
    .await
    .unwrap();
    assert_eq!(keys_under(&etcd, "F/").await, "", "no key left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_kill_after_takes_no_lock_and_leaves_no_key() {
    let Some(etcd) = EtcdServer::start_or_skip().await else {
        return;
    };
    let url = url(&etcd);
    coord(
        &url,
        &[
            "--ttl",
            "2s",
            "lock",
            "R",
            "--kill-after",
            "2s",
            "--",
            "echo",
            "ran",
        ],
    )
    .assert()
    .code(2)
    .stdout("")
    .stderr(
        predicate::str::contains("--kill-after 2s")
            .and(predicate::str::contains("TTL 2s"))
            .and(predicate::str::contains("--ttl 4s or more")),
    );
    assert_eq!(keys_under(&etcd, "R/").await, "", "no key left behind");
    coord(&url, &["--ttl", "2s", "lock", "R", "--try", "--", "true"])
        .assert()
        .success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_leadership_exits_5() {
    let Some(etcd) = EtcdServer::start_or_skip().await else {
        return;
    };
    let url = url(&etcd);
    let mut p = Proc::coord(&url, &["-o", "json", "elect", "LL", "x"]);
    let elected: serde_json::Value = serde_json::from_str(&p.line(SHORT)).unwrap();
    assert_eq!(elected["event"], "elected");
    let key = elected["key"].as_str().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(p.running(), "a leader leads until told otherwise");
    etcd.etcdctl(&["del", &format!("{}{key}", etcd.namespace())])
        .await
        .unwrap();
    assert_eq!(p.wait(SHORT).code(), Some(5), "{}", p.stderr());
    let lost: serde_json::Value = serde_json::from_str(&p.line(SHORT)).unwrap();
    assert_eq!(lost["event"], "lost");
    assert!(p.stderr().contains("leadership"), "{}", p.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_workloads_on_etcd() {
    let Some(etcd) = EtcdServer::start_or_skip().await else {
        return;
    };
    let url = url(&etcd);
    coord(&url, &["bench", "lock-loop", "-n", "20"])
        .assert()
        .success()
        .stdout(predicate::str::starts_with(
            "cmd=lock-loop ops=20 elapsed_ns=",
        ));
    coord(&url, &["bench", "contend", "--workers", "2", "-n", "10"])
        .timeout(LONG)
        .assert()
        .success()
        .stdout(predicate::str::contains("counter=20 expected=20"));
    // Two hammers in two processes on one lock and key: no increment is lost.
    let h1 = Proc::coord(&url, &["bench", "hammer", "-n", "15", "--key", "K"]);
    let h2 = Proc::coord(&url, &["bench", "hammer", "-n", "15", "--key", "K"]);
    for mut h in [h1, h2] {
        assert!(h.wait(LONG).success(), "{}", h.stderr());
    }
    let conn = coord::connect(&url).await.expect("connect");
    let counter = conn.backend().get(b"K").await.unwrap().expect("counter K");
    assert_eq!(counter.value_str(), "30", "an increment was lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcds_with_client_certificates() {
    let Some(etcd) = EtcdServer::builder().tls(true).start_or_skip().await else {
        return;
    };
    let tls = etcd.tls().expect("tls material");
    let base = format!("etcds://{}", etcd.endpoint());
    let full = format!(
        "{base}?cacert={}&cert={}&key={}",
        tls.ca_cert_path().display(),
        tls.client_cert_path().display(),
        tls.client_key_path().display()
    );
    coord(&full, &["leader", "nobody"])
        .assert()
        .code(6)
        .stderr(predicate::str::contains("has no leader"));
    coord(&full, &["lock", "tls", "--", "true"])
        .assert()
        .success();
    // Plain text to a TLS server, or TLS files on a plain scheme: refused with a message.
    coord(
        &format!("etcd://{}?connect_timeout=2s", etcd.endpoint()),
        &["leader", "x"],
    )
    .assert()
    .code(1);
    coord(
        &format!("etcd://{}?cacert=/x.pem", etcd.endpoint()),
        &["leader", "x"],
    )
    .assert()
    .code(2)
    .stderr(predicate::str::contains("etcds://"));
    coord(
        &format!("{base}?cacert=/nonexistent/ca.pem"),
        &["leader", "x"],
    )
    .assert()
    .code(2)
    .stderr(predicate::str::contains("/nonexistent/ca.pem"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_the_url_or_the_query_string() {
    let Some(etcd) = EtcdServer::builder()
        .user("app", "p@ss w0rd", "app/")
        .start_or_skip()
        .await
    else {
        return;
    };
    let host = etcd.endpoints().join(",");
    // Reserved characters in the password are percent-encoded.
    for url in [
        format!("etcd://app:p%40ss%20w0rd@{host}?namespace=app/"),
        format!("etcd://{host}?namespace=app/&user=app&password=p%40ss%20w0rd"),
    ] {
        coord(
            &url,
            &["lock", "L", "--", "sh", "-c", "echo $COORD_LOCK_KEY"],
        )
        .assert()
        .success()
        .stdout(predicate::str::contains("L/"));
    }
    // The role only covers app/: without the namespace etcd refuses.
    coord(
        &format!("etcd://app:p%40ss%20w0rd@{host}"),
        &["leader", "L"],
    )
    .assert()
    .code(1)
    .stderr(predicate::str::contains("ermission denied"));
    coord(
        &format!("etcd://app:wrong-secret@{host}?namespace=app/"),
        &["leader", "L"],
    )
    .assert()
    .code(1)
    .stderr(
        predicate::str::contains("authentication failed")
            .and(predicate::str::contains("wrong-secret").not()),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_url_options_reach_the_backend() {
    let Some(etcd) = EtcdServer::start_or_skip().await else {
        return;
    };
    let url = format!("{}&ttl=3s&request_timeout=5s", url(&etcd));
    let conn = coord::connect(&url).await.expect("connect");
    assert_eq!(conn.backend_name(), "etcd");
    assert_eq!(conn.session_ttl(), Duration::from_secs(3));
    assert!(!conn.to_string().contains("password"));
    let session = conn.session().await.unwrap();
    let status = conn
        .backend()
        .lease_time_to_live(session.lease())
        .await
        .unwrap();
    assert_eq!(status.granted_ttl, Duration::from_secs(3));
    let guard = coord::Mutex::new(&session, "lib").lock().await.unwrap();
    // Seen without the namespace, the key is under it.
    let raw = coord::connect(&format!("etcd://{}", etcd.endpoints().join(",")))
        .await
        .unwrap();
    let full = format!("{}{}", etcd.namespace(), guard.key());
    assert!(raw.backend().get(full.as_bytes()).await.unwrap().is_some());
    guard.unlock().await.unwrap();
    session.close().await.unwrap();
    let err = coord::connect("etcd://127.0.0.1:1?connect_timeout=500ms")
        .await
        .unwrap_err();
    assert!(matches!(err, coord::Error::Unavailable { .. }), "{err}");
}

/// Waits for `p` to exit, at most `bound` after `since`; returns the exit code and stderr.
fn exit_within(p: &mut Proc, since: std::time::Instant, bound: Duration) -> (Option<i32>, String) {
    // Twice the bound before giving up, so that a late exit is reported with its time.
    let status = p.wait(bound * 2);
    let took = since.elapsed();
    assert!(
        took < bound,
        "exited {took:?} after the signal or CMD's exit, bound {bound:?}; stderr: {}",
        p.stderr()
    );
    (status.code(), p.stderr())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_server_delays_the_exit_by_the_request_timeout_at_most() {
    // Before: with no request timeout, releasing into a black hole hung; coord exited
    // 14.5 s after CMD did, and 28 s after SIGINT.
    let Some(etcd) = EtcdServer::start_or_skip().await else {
        return;
    };
    let proxy = FaultProxy::start(etcd.endpoint()).await.expect("proxy");
    let handle = proxy.handle();
    let url = format!("etcd://{}?namespace={}", proxy.addr(), etcd.namespace());
    let direct = self::url(&etcd);
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    let go = go.to_str().unwrap().to_owned();
    // A TTL far above the bound: the lock must not end by being lost meanwhile.
    let bound = Duration::from_secs(10);
    tokio::task::spawn_blocking(move || {
        // SIGINT while holding.
        let mut p = Proc::coord(&url, &["--ttl", "60", "lock", "BH"]);
        p.line(SHORT);
        p.line(SHORT);
        handle.blackhole();
        let since = std::time::Instant::now();
        p.signal("INT");
        let (code, stderr) = exit_within(&mut p, since, bound);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains("could not release lock \"BH\"")
                && stderr.contains("the lease ends by itself within the TTL (1m)"),
            "{stderr}"
        );
        handle.heal();

        // CMD exits while the server is unreachable: coord exits with CMD's code.
        let wait_for_go = "while [ ! -e \"$1\" ]; do sleep 0.05; done; exit 7";
        let mut p = Proc::coord(
            &url,
            &[
                "--ttl",
                "60",
                "lock",
                "BH2",
                "--",
                "sh",
                "-c",
                wait_for_go,
                "sh",
                &go,
            ],
        );
        p.line(SHORT);
        p.line(SHORT);
        handle.blackhole();
        std::fs::write(&go, "").unwrap();
        let since = std::time::Instant::now();
        let (code, stderr) = exit_within(&mut p, since, bound);
        assert_eq!(code, Some(7), "{stderr}");
        assert!(stderr.contains("the lease ends by itself"), "{stderr}");
        handle.heal();

        // A leader resigning on SIGTERM.
        let mut p = Proc::coord(&url, &["--ttl", "60", "elect", "BHE", "v"]);
        p.line(SHORT);
        p.line(SHORT);
        handle.blackhole();
        let since = std::time::Instant::now();
        p.signal("TERM");
        let (code, stderr) = exit_within(&mut p, since, bound);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains("could not release the leadership of election \"BHE\""),
            "{stderr}"
        );
        handle.heal();

        // A waiter withdrawing on SIGINT, behind a holder that is not cut off.
        let mut holder = Proc::coord(&direct, &["lock", "BHW"]);
        holder.line(SHORT);
        let mut waiter = Proc::coord(&url, &["--ttl", "60", "lock", "BHW"]);
        assert_eq!(waiter.try_line(QUIET), None, "the waiter waits");
        handle.blackhole();
        let since = std::time::Instant::now();
        waiter.signal("INT");
        let (code, stderr) = exit_within(&mut waiter, since, bound);
        assert_eq!(code, Some(130), "{stderr}");
        assert!(
            stderr.contains("could not release the waiting key"),
            "{stderr}"
        );
        holder.signal("TERM");
        assert_eq!(holder.wait(SHORT).code(), Some(0), "{}", holder.stderr());
        handle.heal();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ttl_below_etcds_minimum_is_raised_with_a_warning() {
    // Before: `--ttl 1` got a 2 s lease without a word.
    // etcd's own timing (the test fixture's is faster), for its minimum TTL: 1.5 times the
    // election timeout, rounded up to whole seconds.
    let Some(etcd) = EtcdServer::builder()
        .timing(Duration::from_millis(100), Duration::from_secs(1))
        .start_or_skip()
        .await
    else {
        return;
    };
    let url = url(&etcd);
    coord(
        &url,
        &[
            "--ttl",
            "1",
            "lock",
            "T",
            "--kill-after",
            "100ms",
            "--",
            "true",
        ],
    )
    .assert()
    .success()
    .stderr(predicate::str::contains(
        "warning: TTL 1s raised by the backend: it granted 2s",
    ));
    coord(
        &url,
        &[
            "--ttl",
            "2500ms",
            "lock",
            "T",
            "--kill-after",
            "100ms",
            "--",
            "true",
        ],
    )
    .assert()
    .success()
    .stderr(predicate::str::contains(
        "TTL 2s 500ms raised by the backend: it granted 3s",
    ));
    coord(&url, &["--ttl", "3", "lock", "T", "--", "true"])
        .assert()
        .success()
        .stderr(predicate::str::contains("raised").not());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_lock_rev_is_the_lock_keys_create_revision() {
    // Before: coord set ETCD_LOCK_KEY only; etcdctl lock sets ETCD_LOCK_REV too.
    let Some(etcd) = EtcdServer::start_or_skip().await else {
        return;
    };
    let Some(etcdctl) = etcdctl_bin() else { return };
    let script = format!(
        "echo \"rev=$ETCD_LOCK_REV\"; ETCDCTL_API=3 {etcdctl} --endpoints {} get -w fields \"$ETCD_LOCK_KEY\" | grep '\"CreateRevision\"'",
        etcd.endpoints().join(",")
    );
    let out = coord(&url(&etcd), &["lock", "REV", "--", "sh", "-c", &script])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    let rev = lines[2].strip_prefix("rev=").expect("rev= line");
    assert!(rev.parse::<i64>().unwrap() > 0, "{out}");
    assert_eq!(rev, lines[1], "ETCD_LOCK_REV is the fencing token: {out}");
    let created = lines[3].rsplit(':').next().unwrap().trim();
    assert_eq!(rev, created, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_prints_proposals_that_are_not_one_line_of_text_escaped() {
    // Before: a proposal with a newline printed as two lines, and bytes that are not
    // UTF-8 as U+FFFD, a different value than the store holds.
    let Some(etcd) = EtcdServer::start_or_skip().await else {
        return;
    };
    let url = url(&etcd);
    let conn = coord::connect(&url).await.expect("connect");
    conn.backend()
        .put(b"BIN/1", b"\xffx\ny", 0)
        .await
        .expect("put a foreign candidate");
    coord(&url, &["leader", "BIN"])
        .assert()
        .success()
        .stdout("\\xffx\\ny\n");
    let out = coord(&url, &["-o", "json", "leader", "BIN"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let j: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(j["proposal_hex"], "ff780a79", "{j}");
    assert_eq!(j["proposal"], "\u{fffd}x\ny", "{j}");
    assert_eq!(j["key"], "BIN/1", "{j}");
    assert!(j.get("key_hex").is_none(), "{j}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_can_come_from_a_file() {
    // Before: the password could only be given in the URL, which `ps` shows.
    let Some(etcd) = EtcdServer::builder()
        .user("app", "p@ss w0rd&=", "app/")
        .start_or_skip()
        .await
    else {
        return;
    };
    let host = etcd.endpoints().join(",");
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let good = file("good", "p@ss w0rd&=\nsecond line ignored\n");
    let wrong = file("wrong", "wrong-secret\n");
    let empty = file("empty", "\n");
    let missing = dir.path().join("missing").to_str().unwrap().to_owned();
    let plain = format!("etcd://{host}?namespace=app/");
    let with_user = format!("etcd://app@{host}?namespace=app/");
    coord(
        &plain,
        &[
            "--user",
            "app",
            "--password-file",
            &good,
            "lock",
            "L",
            "--",
            "true",
        ],
    )
    .assert()
    .success();
    coord(&with_user, &["lock", "L", "--", "true"])
        .env("COORD_PASSWORD_FILE", &good)
        .assert()
        .success();
    coord(&with_user, &["--password-file", &wrong, "leader", "L"])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("authentication failed")
                .and(predicate::str::contains("wrong-secret").not()),
        );
    let refused: [(&str, Vec<&str>, &str); 5] = [
        (
            &with_user,
            vec!["--password-file", &missing],
            "/missing: no such file",
        ),
        (
            &with_user,
            vec!["--password-file", &empty],
            "/empty: the first line is empty; it must be the password",
        ),
        (
            "etcd://app:other@127.0.0.1:1",
            vec!["--password-file", &good],
            "--password-file: the backend URL has a password too",
        ),
        (
            &with_user,
            vec!["--user", "app", "--password-file", &good],
            "--user: the backend URL names a user too",
        ),
        (
            "memory://",
            vec!["--password-file", &good],
            "memory:// takes no credentials",
        ),
    ];
    for (url, options, says) in refused {
        let mut args = options.clone();
        args.extend(["leader", "L"]);
        coord(url, &args).assert().code(2).stderr(
            predicate::str::contains(says)
                .and(predicate::str::contains("p@ss").not())
                .and(predicate::str::contains("other").not()),
        );
    }
}
