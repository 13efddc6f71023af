//! Data loss on the server (restart without persistence, FLUSHALL) ends every session and
//! watch of the clients that knew the old data, changes nothing on their behalf, and never
//! lets a fencing token repeat; a restart that keeps the data (AOF, `appendfsync always`)
//! keeps locks, tokens and rising revisions. Each test has a redis-server of its own, on
//! real time.

use std::sync::Arc;
use std::time::Duration;

use coord_core::{
    BackendExt as _, Compare, CompareOp, CoordinationBackend, Error, Mutex, NO_LEASE, Revision,
    Session, TxnOp, TxnRequest, WatchRequest,
};
use coord_redis::{RedisBackend, RedisOptions, Revisions};
use coord_testkit::RedisServer;
use futures::StreamExt as _;

/// The sessions' TTL.
const TTL: Duration = Duration::from_secs(2);
/// How long a lost session or an ended watch may take to be reported: the TTL, plus room
/// for a loaded machine.
const BOUND: Duration = Duration::from_secs(4);
/// The namespace every test works in.
const NS: &str = "loss";

/// A server of the test's own (`None` after a skip line when redis-server is missing).
async fn server(appendonly: bool) -> Option<RedisServer> {
    RedisServer::builder()
        .local_only()
        .appendonly(appendonly)
        .start_or_skip()
        .await
}

async fn client(server: &RedisServer, revisions: Revisions) -> Arc<dyn CoordinationBackend> {
    Arc::new(connect(server, revisions).await.expect("connect"))
}

async fn connect(server: &RedisServer, revisions: Revisions) -> coord_core::Result<RedisBackend> {
    let options = RedisOptions::parse_url(&server.url())
        .and_then(|o| o.namespace(NS))
        .expect("the fixture's URL parses")
        .revisions(revisions);
    RedisBackend::connect(options).await
}

async fn session(backend: &Arc<dyn CoordinationBackend>) -> Session {
    Session::builder(backend.clone())
        .ttl(TTL)
        .start()
        .await
        .expect("session")
}

/// The server's clock in microseconds (`TIME`).
async fn server_time_us(server: &RedisServer) -> i64 {
    let out = server.cli(&["TIME"]).await.expect("redis-cli TIME");
    let mut parts = out
        .split_whitespace()
        .map(|p| p.parse::<i64>().expect("TIME"));
    let (secs, micros) = (parts.next().unwrap(), parts.next().unwrap());
    secs * 1_000_000 + micros
}

async fn db_size(server: &RedisServer) -> String {
    server
        .cli(&["DBSIZE"])
        .await
        .expect("DBSIZE")
        .trim()
        .to_owned()
}

/// Takes and releases the lock `name` a few times, and holds it once more: every token
/// handed out, and the guard still held.
async fn tokens_then_hold(
    session: &Session,
    name: &str,
) -> (Vec<Revision>, coord_core::MutexGuard) {
    let mutex = Mutex::new(session, name);
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let guard = mutex.lock().await.expect("lock");
        tokens.push(guard.fencing_token());
        guard.unlock().await.expect("unlock");
    }
    let guard = mutex.lock().await.expect("lock");
    tokens.push(guard.fencing_token());
    (tokens, guard)
}

fn is_data_loss(e: &Error) -> bool {
    matches!(e, Error::Backend { .. }) && e.to_string().contains("redis data loss detected")
}

/// The first answer of `backend` after a server restart, skipping the `Unavailable` of calls
/// that find the old connection broken (within [`BOUND`]).
async fn first_answer_after_reconnecting(
    backend: &Arc<dyn CoordinationBackend>,
) -> coord_core::Result<Revision> {
    tokio::time::timeout(BOUND, async {
        loop {
            match backend.current_revision().await {
                Err(Error::Unavailable { .. }) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                answer => return answer,
            }
        }
    })
    .await
    .expect("the client reconnects")
}

/// After the server lost the namespace's data: the holder's session and lock are lost
/// within the bound, the watch ends with an error (the data-loss one when `detected`), the
/// old client writes nothing to the new data (checked before any new client connects), and
/// a new client's token is above every token handed out before.
async fn after_loss(
    server: &RedisServer,
    old: &Arc<dyn CoordinationBackend>,
    guard: coord_core::MutexGuard,
    mut watch: coord_core::WatchStream,
    tokens: &[Revision],
    detected: bool,
) {
    tokio::time::timeout(BOUND, guard.lost())
        .await
        .expect("the holder's lock is lost within TTL + 2 s of the data loss");
    assert!(guard.session().is_lost(), "the holder's session is lost");
    let ended = tokio::time::timeout(BOUND, async {
        loop {
            match watch.next().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return e,
                None => panic!("the watch ended without an error"),
            }
        }
    })
    .await
    .expect("the watch ends within TTL + 2 s of the data loss");
    if detected {
        assert!(is_data_loss(&ended), "{ended}");
    }
    let put = old.put(b"after/loss", b"old client", NO_LEASE).await;
    assert!(
        put.is_err(),
        "the old client wrote to the new data: {put:?}"
    );
    assert_eq!(
        db_size(server).await,
        "0",
        "the old client's scripts (its reaper, keep-alives, the put) changed nothing"
    );

    let new = client(server, Revisions::TimeFloored).await;
    let s = session(&new).await;
    let guard = Mutex::new(&s, "job")
        .lock()
        .await
        .expect("lock after the loss");
    let highest = tokens.iter().max().copied().unwrap_or_default();
    assert!(
        guard.fencing_token() > highest,
        "token {} after the loss is not above {highest}, the highest before",
        guard.fencing_token()
    );
    assert!(new.get(b"after/loss").await.unwrap().is_none());
    guard.unlock().await.unwrap();
    s.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_ends_sessions_and_watches_and_fails_the_old_client_closed() {
    let Some(server) = server(false).await else {
        return;
    };
    let old = client(&server, Revisions::TimeFloored).await;
    let s = session(&old).await;
    let (tokens, guard) = tokens_then_hold(&s, "job").await;
    let watch = old.watch(WatchRequest::prefix("job")).await.unwrap();
    let lease = s.lease();

    server.cli(&["FLUSHALL"]).await.expect("FLUSHALL");

    // The reaper's next run finds the epoch gone; from then on the client fails closed.
    let e = tokio::time::timeout(BOUND, async {
        loop {
            match old.current_revision().await {
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => return e,
            }
        }
    })
    .await
    .expect("the old client notices the loss");
    assert!(is_data_loss(&e), "{e}");
    assert!(!e.is_retryable(), "{e}");
    assert!(
        matches!(old.lease_keep_alive(lease).await, Err(Error::LeaseNotFound { lease: Some(l) }) if l == lease),
        "a keep-alive of a lease that went with the data answers LeaseNotFound"
    );
    let grant = old.lease_grant(TTL).await.unwrap_err();
    assert!(is_data_loss(&grant), "{grant}");
    after_loss(&server, &old, guard, watch, &tokens, true).await;

    // The old client stays closed, even with new data under the same namespace.
    let e = old.current_revision().await.unwrap_err();
    assert!(is_data_loss(&e), "{e}");
}

/// The old client reconnects to the restarted, empty server and finds the epoch gone: it
/// fails closed with the data-loss error (its watch ends first, with the reader's broken
/// connection). Nothing it sends lands in the new data, and tokens never repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_without_persistence_loses_sessions_and_never_repeats_a_token() {
    let Some(server) = server(false).await else {
        return;
    };
    let old = client(&server, Revisions::TimeFloored).await;
    let s = session(&old).await;
    let (tokens, guard) = tokens_then_hold(&s, "job").await;
    let watch = old.watch(WatchRequest::prefix("job")).await.unwrap();

    server.restart().await.expect("restart");
    assert_eq!(
        db_size(&server).await,
        "0",
        "no persistence: the data is gone"
    );
    let e = first_answer_after_reconnecting(&old).await.unwrap_err();
    assert!(is_data_loss(&e), "{e}");
    assert!(!e.is_retryable(), "{e}");

    after_loss(&server, &old, guard, watch, &tokens, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aof_restart_keeps_the_lock_its_token_and_rising_revisions() {
    let Some(server) = server(true).await else {
        return;
    };
    // A TTL the restart fits in with room to spare.
    let ttl = Duration::from_secs(10);
    let old = client(&server, Revisions::TimeFloored).await;
    let s = Session::builder(old.clone())
        .ttl(ttl)
        .start()
        .await
        .unwrap();
    let (tokens, guard) = tokens_then_hold(&s, "job").await;
    let held = guard.key().to_owned();
    let token = guard.fencing_token();
    let before = old.current_revision().await.unwrap();

    server.restart().await.expect("restart");

    // The holder's own client reconnects, its session and lock intact.
    let revision = first_answer_after_reconnecting(&old)
        .await
        .expect("the old client answers again");
    assert_eq!(revision, before, "the AOF kept the store revision");
    assert!(
        !s.is_lost(),
        "the holder's session outlives a quick restart"
    );
    assert!(
        old.get(held.as_bytes()).await.unwrap().is_some(),
        "the holder's own client still sees its lock key"
    );

    let new = client(&server, Revisions::TimeFloored).await;
    let kv = new
        .get(held.as_bytes())
        .await
        .unwrap()
        .expect("the lock key survives");
    assert_eq!(kv.create_revision, token, "the token survives");
    assert_eq!(kv.lease, s.lease());
    assert_eq!(new.current_revision().await.unwrap(), before);
    let status = new.lease_time_to_live(s.lease()).await.unwrap();
    assert!(status.remaining > Duration::ZERO, "{status:?}");
    // The holder's lease can be kept alive across the restart (from a client that can
    // reach the server): the session resumed from it holds on.
    let resumed = Session::builder(new.clone())
        .ttl(ttl)
        .lease(s.lease())
        .start()
        .await
        .expect("the holder's lease lives on");
    assert!(!resumed.is_lost());

    let contender = Session::builder(new.clone())
        .ttl(ttl)
        .start()
        .await
        .unwrap();
    let waited = Mutex::new(&contender, "job")
        .lock_timeout(Duration::from_millis(500))
        .await;
    assert!(
        matches!(waited, Err(Error::Timeout { .. })),
        "a contender still waits: {waited:?}"
    );
    let after = new.put(b"after/restart", b"x", NO_LEASE).await.unwrap();
    assert!(
        after > before,
        "revision {after} after the restart, {before} before"
    );
    assert!(after > *tokens.iter().max().unwrap());
    assert!(!resumed.is_lost());
    assert!(!s.is_lost());
    contender.close().await.unwrap();
    resumed.close().await.unwrap();
    assert!(new.get(held.as_bytes()).await.unwrap().is_none());
    drop(guard);
}

/// Revisions start at the server's clock in µs (about 1.8e15, beyond cjson's 14 digits)
/// and cross every path exactly: the txn answer, the key's fields, a compare, the watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_floored_revisions_round_trip_exactly_above_1e15() {
    let Some(server) = server(false).await else {
        return;
    };
    let c = client(&server, Revisions::TimeFloored).await;
    assert!(!c.info().dense_revisions);
    let mut watch = c.watch(WatchRequest::key("k")).await.unwrap();
    let floor = server_time_us(&server).await;
    let first = c.put(b"k", b"1", NO_LEASE).await.unwrap();
    let second = c.put(b"k", b"2", NO_LEASE).await.unwrap();
    assert!(
        first >= floor && first > 1_000_000_000_000_000,
        "{first} < {floor}"
    );
    assert!(second > first);
    let kv = c.get(b"k").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision), (first, second));
    let stored = server
        .cli(&["HGET", &format!("{{{NS}}}:k:k"), "m"])
        .await
        .unwrap();
    assert_eq!(stored.trim(), second.to_string());
    let resp = c
        .txn(
            TxnRequest::new()
                .when([Compare::mod_revision("k", CompareOp::Equal, second)])
                .and_then([TxnOp::put("k", "3")]),
        )
        .await
        .unwrap();
    assert!(resp.succeeded, "a compare on the exact revision holds");
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let r = tokio::time::timeout(BOUND, watch.next())
            .await
            .expect("watch event")
            .expect("watch open")
            .expect("watch event");
        for e in &r.events {
            assert_eq!(e.kv.mod_revision, r.revision);
        }
        seen.push(r.revision);
    }
    assert_eq!(seen, vec![first, second, resp.revision]);
}

/// `revisions=sequential` steps by exactly one from 1, as etcd does; a namespace keeps the
/// mode it was created with, and a client asking for the other is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_revisions_step_by_one_and_a_namespace_keeps_its_mode() {
    let Some(server) = server(false).await else {
        return;
    };
    let c = client(&server, Revisions::Sequential).await;
    assert!(c.info().dense_revisions);
    assert_eq!(c.current_revision().await.unwrap(), 1);
    assert_eq!(c.put(b"k", b"1", NO_LEASE).await.unwrap(), 2);
    assert_eq!(c.put(b"k", b"2", NO_LEASE).await.unwrap(), 3);
    let e = connect(&server, Revisions::TimeFloored).await.unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    assert!(e.to_string().contains("revisions=sequential"), "{e}");
}

/// The documented weakness of `revisions=sequential`: after FLUSHALL the numbering starts
/// again, so a token handed out before is handed out again (time-floored revisions exist to
/// prevent exactly this).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_revisions_repeat_tokens_after_a_flush() {
    let Some(server) = server(false).await else {
        return;
    };
    let old = client(&server, Revisions::Sequential).await;
    let s = session(&old).await;
    let guard = Mutex::new(&s, "job").lock().await.unwrap();
    let before = guard.fencing_token();
    server.cli(&["FLUSHALL"]).await.expect("FLUSHALL");
    tokio::time::timeout(BOUND, guard.lost())
        .await
        .expect("the holder's lock is lost");
    let new = client(&server, Revisions::Sequential).await;
    let s2 = session(&new).await;
    let again = Mutex::new(&s2, "job").lock().await.unwrap();
    assert!(
        again.fencing_token() <= before,
        "sequential revisions restart after a flush: {} after {before}",
        again.fencing_token()
    );
}

/// A watch of a client whose data was replaced ends with the data-loss error instead of
/// delivering the new data's events as if they followed the old ones, however soon after
/// the loss they are written (here before the old client's reaper can notice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_never_delivers_events_of_the_data_that_replaced_its_own() {
    let Some(server) = server(false).await else {
        return;
    };
    let old = client(&server, Revisions::TimeFloored).await;
    old.put(b"job/a", b"old", NO_LEASE).await.unwrap();
    let mut watch = old.watch(WatchRequest::prefix("job")).await.unwrap();
    server.cli(&["FLUSHALL"]).await.expect("FLUSHALL");
    let new = client(&server, Revisions::TimeFloored).await;
    new.put(b"job/b", b"new", NO_LEASE).await.unwrap();
    let first = tokio::time::timeout(BOUND, watch.next())
        .await
        .expect("the watch answers");
    match first {
        Some(Err(e)) => assert!(is_data_loss(&e), "{e}"),
        other => panic!("the old client's watch delivered {other:?}"),
    }
    assert!(watch.next().await.is_none(), "nothing after the error");
}
