//! The `coord` command line against a real redis-server started by coord-testkit on a free
//! loopback port: mutual exclusion across processes, and a killed holder's replacement.
//!
//! Without a redis-server binary the tests print a skip line, unless
//! `COORD_TEST_REQUIRE_BACKENDS=1`, which makes them fail. Real time only.

mod cli_support;

use std::time::{Duration, Instant};

use cli_support::{LONG, Proc, SHORT, coord, coord_bin};
use coord::{BackendExt, Mutex};
use coord_testkit::RedisServer;
use predicates::prelude::*;

/// The backend URL for the fixture, keys confined to its namespace.
fn url(redis: &RedisServer) -> String {
    format!("{}?namespace={}", redis.url(), redis.namespace())
}

/// The counter a bench run left behind.
async fn counter(url: &str, key: &str) -> i64 {
    let conn = coord::connect(url).await.expect("connect");
    let kv = conn
        .backend()
        .get(key.as_bytes())
        .await
        .expect("read the counter")
        .expect("the counter exists");
    kv.value_str().parse().expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contend_with_eight_workers_keeps_the_counter_exact() {
    let Some(redis) = RedisServer::start_or_skip().await else {
        return;
    };
    let url = url(&redis);
    let out = coord(
        &url,
        &[
            "bench",
            "contend",
            "--workers",
            "8",
            "-n",
            "25",
            "--key",
            "c8",
        ],
    )
    .timeout(LONG)
    .output()
    .expect("run coord bench contend");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("counter=200 expected=200"), "{stdout}");
    assert_eq!(counter(&url, "c8").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_hammering_one_counter_lose_nothing() {
    let Some(redis) = RedisServer::start_or_skip().await else {
        return;
    };
    let url = url(&redis);
    let args = ["bench", "hammer", "-n", "150", "--name", "h", "--key", "hk"];
    let mut a = Proc::coord(&url, &args);
    let mut b = Proc::coord(&url, &args);
    for p in [&mut a, &mut b] {
        let status = p.wait(LONG);
        assert!(status.success(), "{status}: {}", p.stderr());
    }
    assert_eq!(counter(&url, "hk").await, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holder_is_replaced_within_its_ttl_and_a_second() {
    let Some(redis) = RedisServer::start_or_skip().await else {
        return;
    };
    let url = url(&redis);
    let ttl = Duration::from_secs(2);
    let mut holder = Proc::coord(&url, &["--ttl", "2", "lock", "dead"]);
    let key = holder.line(SHORT);
    let token: i64 = holder.line(SHORT).parse().expect("a token");
    assert!(key.starts_with("dead/"), "{key}");

    let conn = coord::connect(&url).await.expect("connect");
    let session = conn.session().await.expect("session");
    let waiter = Mutex::new(&session, "dead");
    let acquire = tokio::spawn(async move {
        let guard = waiter.lock().await.expect("lock after the holder died");
        (Instant::now(), guard.fencing_token())
    });
    // The waiter is queued behind the holder before the holder dies.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!acquire.is_finished(), "the lock was granted while held");

    holder.signal("KILL");
    let killed = Instant::now();
    holder.wait(SHORT);
    let (granted, new_token) = tokio::time::timeout(LONG, acquire)
        .await
        .expect("the waiter gets the lock")
        .expect("the waiter task");
    let took = granted - killed;
    eprintln!("killed holder replaced after {took:?} (TTL {ttl:?})");
    assert!(
        took <= ttl + Duration::from_secs(1),
        "replaced after {took:?}, more than TTL {ttl:?} + 1 s"
    );
    assert!(new_token > token, "token {new_token} after {token}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_stops_when_nobody_reads_its_output() {
    // Before: `coord elect --listen X | head -n 1` never exited (write errors were ignored).
    let Some(redis) = RedisServer::start_or_skip().await else {
        return;
    };
    let url = url(&redis);
    let script = format!(
        "{} --backend '{url}' elect --listen e | head -n 1; echo status=${{PIPESTATUS[0]}}",
        coord_bin()
    );
    let mut listener = Proc::spawn("bash", &["-c", &script], &[]);
    assert_eq!(listener.line(SHORT), "no leader");
    // head has gone; the next change makes the listener write into a closed pipe.
    let mut leader = Proc::coord(&url, &["elect", "e", "v"]);
    let _key = leader.line(SHORT);
    assert_eq!(listener.line(SHORT), "status=141");
    listener.wait(SHORT);
    leader.signal("TERM");
    leader.wait(SHORT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_session_ends_says_it_never_held_the_lock() {
    // Before: exit 5, "lost while held", for a waiter that never held anything.
    let Some(redis) = RedisServer::start_or_skip().await else {
        return;
    };
    let url = url(&redis);
    let mut holder = Proc::coord(&url, &["--ttl", "2", "lock", "w"]);
    let _key = holder.line(SHORT);
    let mut waiter = Proc::coord(&url, &["--ttl", "2", "lock", "w"]);
    assert!(
        waiter
            .try_line(std::time::Duration::from_millis(500))
            .is_none(),
        "the waiter got the lock while it was held"
    );
    redis.stop().await.expect("stop redis");
    let status = waiter.wait(LONG);
    let stderr = waiter.stderr();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("while waiting, before anything was held"),
        "{stderr}"
    );
    assert_eq!(
        holder.wait(LONG).code(),
        Some(5),
        "the holder's lock is lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_of_an_acl_user_can_come_from_a_file() {
    // Before: the password could only be given in the URL, which `ps` shows.
    let Some(redis) = RedisServer::builder()
        .acl_user("app", "s3cret pw")
        .start_or_skip()
        .await
    else {
        return;
    };
    let url = url(&redis);
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    std::fs::write(&good, "s3cret pw\r\n").unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "nope-nope\n").unwrap();
    let (good, wrong) = (good.to_str().unwrap(), wrong.to_str().unwrap());
    coord(
        &url,
        &[
            "--user",
            "app",
            "--password-file",
            good,
            "lock",
            "L",
            "--",
            "sh",
            "-c",
            "echo ran",
        ],
    )
    .assert()
    .success()
    .stdout(predicate::str::contains("ran"));
    coord(&url, &["--user", "app", "lock", "L", "--", "true"])
        .env("COORD_PASSWORD_FILE", good)
        .assert()
        .success();
    coord(
        &url,
        &["--user", "app", "--password-file", wrong, "leader", "L"],
    )
    .assert()
    .code(1)
    .stderr(predicate::str::contains("nope-nope").not());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_server_delays_the_exit_after_sigint_by_the_request_timeout_at_most() {
    // Before: the release waited for the Redis backend's own 10 s request timeout per
    // request; now the command line's 5 s bounds the whole release.
    let Some(redis) = RedisServer::start_or_skip().await else {
        return;
    };
    let proxy = coord_testkit::FaultProxy::start(redis.endpoint())
        .await
        .expect("proxy");
    let handle = proxy.handle();
    let url = format!("redis://{}?namespace={}", proxy.addr(), redis.namespace());
    tokio::task::spawn_blocking(move || {
        let mut p = Proc::coord(&url, &["--ttl", "60", "lock", "BH"]);
        p.line(SHORT);
        p.line(SHORT);
        handle.blackhole();
        let since = Instant::now();
        p.signal("INT");
        let bound = Duration::from_secs(7);
        let status = p.wait(bound * 3);
        let took = since.elapsed();
        assert!(
            took < bound,
            "exited {took:?} after SIGINT; stderr: {}",
            p.stderr()
        );
        assert_eq!(status.code(), Some(1), "{}", p.stderr());
        let stderr = p.stderr();
        assert!(
            stderr.contains("could not release lock \"BH\"")
                && stderr.contains("the lease ends by itself within the TTL (1m)"),
            "{stderr}"
        );
        handle.heal();
    })
    .await
    .unwrap();
}

/// A URL's `namespace` is the Redis namespace itself (hash tag `{NS}`): a user whose ACL
/// covers only `~{app/}*`, over TLS with a client certificate, locks in `app/` and is
/// refused in `other/`. Were the namespace a key prefix inside a shared key space, the user
/// would need the shared keys and could not be confined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_user_confined_to_its_namespace_works_there_and_nowhere_else() {
    let Some(redis) = RedisServer::builder()
        .local_only()
        .tls(true)
        .arg("--user")
        .arg("default")
        .arg("off")
        .arg("--user")
        .arg("app")
        .arg("on")
        .arg(">app-pw")
        .arg("~{app/}*")
        .arg("+@all")
        .start_or_skip()
        .await
    else {
        return;
    };
    let tls = redis.tls().expect("a TLS server");
    let url = |namespace: &str| {
        format!(
            "rediss://app:app-pw@{}?namespace={namespace}&cacert={}&cert={}&key={}",
            redis.endpoint(),
            tls.ca_cert_path().display(),
            tls.client_cert_path().display(),
            tls.client_key_path().display()
        )
    };
    coord(
        &url("app/"),
        &[
            "lock",
            "jobs",
            "--",
            "sh",
            "-c",
            "echo held $COORD_FENCING_TOKEN",
        ],
    )
    .assert()
    .success()
    .stdout(predicate::str::contains("\nheld "));
    coord(&url("other/"), &["lock", "jobs", "--", "true"])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("permission denied")
                .and(predicate::str::contains("app-pw").not()),
        );
}
