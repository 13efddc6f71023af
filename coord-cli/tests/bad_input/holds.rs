//! Holds misused or disturbed: released twice, touched after they ended, keys that are not
//! coord's under a lock's prefix, signals while waiting and while holding, a command that
//! cannot run.

use std::time::Duration;

use coord::{BackendExt, Election, Error, KeyRange, Mutex, NO_LEASE, RwMutex};

use crate::cli_support::Proc;
use crate::support::{assert_cli, assert_nothing_left, etcd, etcd_url, keys_left, session};

const SHORT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(700);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b41_releasing_a_hold_that_already_ended_deletes_nothing_and_says_so() {
    // Releasing twice does not compile (`unlock` and `resign` take the guard: see the
    // compile_fail examples on `MutexGuard::unlock` and `Leadership::resign`); this is the
    // runtime form: the key was deleted by someone else, then a new holder took the name.
    let Some(server) = etcd().await else { return };
    let url = etcd_url(&server);
    let a = session(&url).await;
    let b = session(&url).await;
    let guard = Mutex::new(&a, "r").lock().await.unwrap();
    let leader = Election::new(&a, "e").campaign("a").await.unwrap();
    let raw = a.backend();
    raw.delete(KeyRange::key(guard.key())).await.unwrap();
    raw.delete(KeyRange::key(leader.key())).await.unwrap();
    let next = Mutex::new(&b, "r").lock().await.unwrap();
    let err = guard.unlock().await.expect_err("the hold had ended");
    assert!(matches!(err, Error::LockLost { .. }), "{err:?}");
    let err = leader.resign().await.expect_err("the leadership had ended");
    assert!(matches!(err, Error::NotLeader { .. }), "{err:?}");
    assert!(
        keys_left(&url).await.contains(&next.key().to_owned()),
        "the new holder's key is untouched"
    );
    next.unlock().await.unwrap();
    a.close().await.unwrap();
    b.close().await.unwrap();
    assert_nothing_left(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b42_proclaiming_after_the_leadership_ended_is_not_leader_and_writes_nothing() {
    let Some(server) = etcd().await else { return };
    let url = etcd_url(&server);
    let a = session(&url).await;
    let leader = Election::new(&a, "e").campaign("first").await.unwrap();
    a.backend()
        .delete(KeyRange::key(leader.key()))
        .await
        .unwrap();
    let err = leader
        .proclaim("second")
        .await
        .expect_err("not leader any more");
    assert!(matches!(err, Error::NotLeader { .. }), "{err:?}");
    assert!(err.to_string().contains("\"e\""), "{err}");
    assert_nothing_left(&url).await;
    drop(leader);
    a.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b43_keys_that_are_not_holders_under_a_lock_prefix_do_not_block_it() {
    let Some(server) = etcd().await else { return };
    let url = etcd_url(&server);
    let a = session(&url).await;
    // Deeper keys belong to other names (`jobs/x` is its own lock).
    a.backend().put(b"jobs/x/y", b"", NO_LEASE).await.unwrap();
    let guard = Mutex::new(&a, "jobs")
        .try_lock()
        .await
        .expect("jobs/x/y is not a holder");
    guard.unlock().await.unwrap();
    assert_cli(&url, &["lock", "--try", "jobs", "--", "true"], 0, &[]);
    a.backend().delete(KeyRange::prefix("jobs/")).await.unwrap();
    a.close().await.unwrap();
    assert_nothing_left(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b44_a_read_lock_refuses_a_name_a_mutex_holds_and_a_writer_waits_for_it() {
    let Some(server) = etcd().await else { return };
    let url = etcd_url(&server);
    let a = session(&url).await;
    let b = session(&url).await;
    let plain = Mutex::new(&a, "mix").lock().await.unwrap();
    // A reader waits only for writers, so it could not exclude a mutex: it refuses.
    let err = RwMutex::new(&b, "mix").try_read().await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    assert!(err.to_string().contains(plain.key()), "{err}");
    assert_cli(
        &url,
        &["lock", "--read", "--try", "mix", "--", "true"],
        2,
        &["read lock cannot share it"],
    );
    // A writer waits for every key of the name, the mutex's too.
    let err = RwMutex::new(&b, "mix").try_write().await.unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err:?}");
    assert_cli(
        &url,
        &["lock", "--write", "--try", "mix", "--", "true"],
        3,
        &[],
    );
    plain.unlock().await.unwrap();
    a.close().await.unwrap();
    b.close().await.unwrap();
    assert_nothing_left(&url).await;
}

/// `coord lock NAME` waiting behind a holder, then `signal`: exit `code`, its key gone.
async fn interrupted_while_waiting(signal: &str, code: i32) {
    let Some(server) = etcd().await else { return };
    let url = etcd_url(&server);
    let s = session(&url).await;
    let held = Mutex::new(&s, "w").lock().await.unwrap();
    let mut waiter = Proc::coord(&url, &["lock", "w"]);
    // Queued: its key is there (a loaded machine may take a while to start it).
    let deadline = tokio::time::Instant::now() + SHORT;
    while keys_left(&url).await.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the waiter never queued"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(waiter.try_line(QUIET), None, "it waits");
    waiter.signal(signal);
    assert_eq!(waiter.wait(SHORT).code(), Some(code), "{}", waiter.stderr());
    assert_eq!(
        keys_left(&url).await,
        vec![held.key().to_owned()],
        "withdrawn"
    );
    held.unlock().await.unwrap();
    s.close().await.unwrap();
    assert_nothing_left(&url).await;
}

/// `coord lock NAME` holding, then `signal`: exit 0, the lock released.
async fn interrupted_while_holding(signal: &str) {
    let Some(server) = etcd().await else { return };
    let url = etcd_url(&server);
    let mut holder = Proc::coord(&url, &["lock", "h"]);
    holder.line(SHORT);
    holder.line(SHORT);
    holder.signal(signal);
    assert_eq!(holder.wait(SHORT).code(), Some(0), "{}", holder.stderr());
    assert_nothing_left(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b45_sigint_while_waiting_exits_130_and_withdraws() {
    interrupted_while_waiting("INT", 130).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b46_sigterm_while_waiting_exits_143_and_withdraws() {
    interrupted_while_waiting("TERM", 143).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b47_sigint_while_holding_releases_and_exits_0() {
    interrupted_while_holding("INT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b48_sigterm_while_holding_releases_and_exits_0() {
    interrupted_while_holding("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b49_a_command_that_cannot_run_releases_the_lock() {
    let Some(server) = etcd().await else { return };
    let url = etcd_url(&server);
    assert_cli(
        &url,
        &["lock", "x", "--", "no-such-command-xyz"],
        127,
        &["no-such-command-xyz"],
    );
    assert_cli(
        &url,
        &["lock", "x", "--", "/etc/passwd"],
        126,
        &["/etc/passwd"],
    );
    assert_nothing_left(&url).await;
}
