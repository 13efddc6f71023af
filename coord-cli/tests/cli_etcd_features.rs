//! `coord lock --permits`, `coord elect NAME VALUE -- CMD` and `coord elect --try` across
//! processes on a real etcd (started by coord-testkit on free loopback ports). Without an
//! etcd binary the tests print a skip line, unless `COORD_TEST_REQUIRE_BACKENDS=1`.

mod cli_support;

use std::time::Duration;

use cli_support::{Proc, SHORT, coord};
use coord_testkit::EtcdServer;
use predicates::prelude::*;

/// The backend URL for the fixture, keys confined to its namespace.
fn url(etcd: &EtcdServer) -> String {
    format!(
        "etcd://{}?namespace={}",
        etcd.endpoints().join(","),
        etcd.namespace()
    )
}

/// The keys under `prefix` in the fixture's namespace, as stored, sorted.
async fn keys_under(etcd: &EtcdServer, prefix: &str) -> Vec<String> {
    let full = format!("{}{prefix}", etcd.namespace());
    let mut keys: Vec<String> = etcd
        .etcdctl(&["get", "--prefix", &full, "--keys-only"])
        .await
        .expect("etcdctl get")
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    keys.sort();
    keys
}

/// Long enough for a waiter that would wrongly get in to print its first line.
const QUIET: Duration = Duration::from_millis(700);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_semaphore_of_two_lets_two_hold_and_the_third_wait() {
    let Some(etcd) = EtcdServer::start_or_skip().await else {
        return;
    };
    let url = url(&etcd);
    let ns = etcd.namespace().to_owned();
    let mut a = Proc::coord(&url, &["lock", "S", "--permits", "2"]);
    let key_a = a.line(SHORT);
    let token_a: i64 = a.line(SHORT).parse().unwrap();
    let mut b = Proc::coord(&url, &["lock", "S", "-n", "2"]);
    let key_b = b.line(SHORT);
    b.line(SHORT);
    assert_ne!(key_a, key_b, "two holders at once");

    let mut c = Proc::coord(
        &url,
        &[
            "lock",
            "S",
            "-n",
            "2",
            "--",
            "sh",
            "-c",
            "echo \"c holds $COORD_PERMITS\"",
        ],
    );
    assert_eq!(c.try_line(QUIET), None, "c waits while a and b hold");
    assert_eq!(
        keys_under(&etcd, "S/").await.len(),
        3,
        "a and b hold, c queues"
    );

    // --try with every permit taken: exit 3, and its key is gone when it exits.
    coord(
        &url,
        &["lock", "S", "-n", "2", "--try", "--", "echo", "ran"],
    )
    .assert()
    .code(3)
    .stdout("")
    .stderr(predicate::str::contains(
        "all 2 permits of semaphore \"S\" are held",
    ));
    assert_eq!(keys_under(&etcd, "S/").await.len(), 3, "--try left a key");

    a.signal("TERM");
    assert_eq!(a.wait(SHORT).code(), Some(0), "{}", a.stderr());
    let key_c = c.line(SHORT);
    let token_c: i64 = c.line(SHORT).parse().unwrap();
    assert_eq!(c.line(SHORT), "c holds 2");
    assert!(token_c > token_a, "tokens rise: {token_a} then {token_c}");
    assert_eq!(c.wait(SHORT).code(), Some(0), "{}", c.stderr());
    assert_ne!(key_c, key_a);
    assert_eq!(
        keys_under(&etcd, "S/").await,
        [format!("{ns}{key_b}")],
        "only b holds"
    );
    b.signal("INT");
    assert_eq!(b.wait(SHORT).code(), Some(0), "{}", b.stderr());
    assert!(
        keys_under(&etcd, "S/").await.is_empty(),
        "no key left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_permit_terminates_the_command_and_exits_5() {
    let Some(etcd) = EtcdServer::start_or_skip().await else {
        return;
    };
    let url = url(&etcd);
    let mut p = Proc::coord(&url, &["lock", "P", "-n", "3", "--", "sleep", "30"]);
    let key = p.line(SHORT);
    p.line(SHORT);
    etcd.etcdctl(&["del", &format!("{}{key}", etcd.namespace())])
        .await
        .unwrap();
    assert_eq!(p.wait(SHORT).code(), Some(5), "{}", p.stderr());
    assert!(p.stderr().contains("lost"), "{}", p.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_runs_the_command_only_while_leader() {
    let Some(etcd) = EtcdServer::start_or_skip().await else {
        return;
    };
    let url = url(&etcd);
    let ns = etcd.namespace().to_owned();
    let lead = "echo \"leading $COORD_PROPOSAL $COORD_FENCING_TOKEN\"; exec sleep 30";
    let mut a = Proc::coord(&url, &["elect", "E", "alpha", "--", "sh", "-c", lead]);
    let key_a = a.line(SHORT);
    assert_eq!(a.line(SHORT), "alpha");
    let token_a: i64 = a
        .line(SHORT)
        .strip_prefix("leading alpha ")
        .expect("a's CMD runs")
        .parse()
        .unwrap();

    let mut b = Proc::coord(
        &url,
        &[
            "elect",
            "E",
            "beta",
            "--",
            "sh",
            "-c",
            "echo \"leading $COORD_PROPOSAL $COORD_FENCING_TOKEN\"; exit 9",
        ],
    );
    assert_eq!(b.try_line(QUIET), None, "b's CMD waits while a leads");
    coord(&url, &["leader", "E"])
        .assert()
        .success()
        .stdout("alpha\n");

    // --try while a leads: exit 3 naming the leader, and no candidacy of its own left.
    coord(&url, &["elect", "--try", "E", "gamma", "--", "echo", "ran"])
        .assert()
        .code(3)
        .stdout("")
        .stderr(
            predicate::str::contains("election \"E\" has a leader")
                .and(predicate::str::contains(key_a.as_str()))
                .and(predicate::str::contains("alpha")),
        );
    coord(&url, &["elect", "--try", "E", "gamma"])
        .assert()
        .code(3);
    let left = keys_under(&etcd, "E/").await;
    assert_eq!(
        left.len(),
        2,
        "a leads, b waits, nothing of --try: {left:?}"
    );
    assert!(left.contains(&format!("{ns}{key_a}")), "{left:?}");

    // a's leadership ends under its CMD: CMD is terminated, a exits 5, b leads and runs.
    etcd.etcdctl(&["del", &format!("{ns}{key_a}")])
        .await
        .unwrap();
    assert_eq!(a.wait(SHORT).code(), Some(5), "{}", a.stderr());
    assert!(a.stderr().contains("leadership"), "{}", a.stderr());
    let key_b = b.line(SHORT);
    assert_eq!(b.line(SHORT), "beta");
    let token_b: i64 = b
        .line(SHORT)
        .strip_prefix("leading beta ")
        .expect("b's CMD runs")
        .parse()
        .unwrap();
    assert!(token_b > token_a, "tokens rise: {token_a} then {token_b}");
    assert_ne!(key_a, key_b);
    // b resigns when its CMD exits, and exits with CMD's code.
    assert_eq!(b.wait(SHORT).code(), Some(9), "{}", b.stderr());
    assert!(keys_under(&etcd, "E/").await.is_empty(), "b resigned");
    coord(&url, &["leader", "E"]).assert().code(6);

    // No leader now: --try leads.
    coord(
        &url,
        &[
            "elect",
            "--try",
            "E",
            "delta",
            "--",
            "sh",
            "-c",
            "echo ran $COORD_PROPOSAL",
        ],
    )
    .assert()
    .success()
    .stdout(predicate::str::ends_with("delta\nran delta\n"));
    assert!(
        keys_under(&etcd, "E/").await.is_empty(),
        "resigned after CMD"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_try_without_a_command_leads_until_a_signal() {
    let Some(etcd) = EtcdServer::start_or_skip().await else {
        return;
    };
    let url = url(&etcd);
    let mut a = Proc::coord(&url, &["elect", "--try", "T", "first"]);
    let key_a = a.line(SHORT);
    assert_eq!(a.line(SHORT), "first");
    coord(&url, &["elect", "--try", "T", "second"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains(key_a.as_str()));
    assert_eq!(keys_under(&etcd, "T/").await.len(), 1, "only a's key");
    a.signal("INT");
    assert_eq!(a.wait(SHORT).code(), Some(0), "{}", a.stderr());
    assert!(keys_under(&etcd, "T/").await.is_empty());
}
