//! No password reaches the logs or a `Debug` output: everything coord and the client
//! libraries under it trace, at TRACE level, while connecting with credentials to a real
//! etcd (auth on) and a real redis-server (an ACL user) and locking, electing and observing,
//! is captured and searched; so is the `Debug` of every options type, builder and handle
//! made from such a URL. Real servers, real time.

use std::io::Write;
use std::sync::{Mutex as StdMutex, OnceLock};
use std::time::Duration;

use coord::{ConnectOptions, Connection, Election, Error, Mutex, RwMutex, Semaphore, UrlOptions};
use coord_testkit::{EtcdServer, RedisServer};
use futures::StreamExt;
use tracing_subscriber::fmt::format::FmtSpan;

const ETCD_PASSWORD: &str = "etcd-Pw-5e3b9c";
const ETCD_ROOT_PASSWORD: &str = "etcd-Root-Pw-77aa1";
const REDIS_PASSWORD: &str = "redis-Pw-c41d0e";
const WRONG_PASSWORD: &str = "wrong-Pw-9f8e7d";
const EVERY_SECRET: [&str; 4] = [
    ETCD_PASSWORD,
    ETCD_ROOT_PASSWORD,
    REDIS_PASSWORD,
    WRONG_PASSWORD,
];
const BOUND: Duration = Duration::from_secs(20);

/// Everything traced in this test binary, as the fmt layer wrote it.
fn captured() -> &'static StdMutex<Vec<u8>> {
    static CAPTURE: OnceLock<&'static StdMutex<Vec<u8>>> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let buffer: &'static StdMutex<Vec<u8>> = Box::leak(Box::default());
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            // Span fields are printed when each span closes, with every recorded value.
            .with_span_events(FmtSpan::CLOSE)
            .with_writer(move || Capture(buffer))
            .finish();
        // Global: the backends trace from their own tasks and threads.
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        buffer
    })
}

struct Capture(&'static StdMutex<Vec<u8>>);

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_text() -> String {
    String::from_utf8_lossy(&captured().lock().unwrap()).into_owned()
}

/// Fails naming the secret and showing the text around it.
fn assert_no_secret(what: &str, text: &str) {
    for secret in EVERY_SECRET {
        if let Some(at) = text.find(secret) {
            let start = text[..at]
                .char_indices()
                .rev()
                .nth(200)
                .map_or(0, |(i, _)| i);
            let end = (at + secret.len() + 200).min(text.len());
            panic!(
                "{what} holds the password {secret:?}: ...{}...",
                text.get(start..end).unwrap_or(text)
            );
        }
    }
}

/// Locks (waited for and tried), reads, takes a permit, campaigns, proclaims, observes and
/// resigns, then closes the sessions: every recipe operation traces once at least.
async fn work(connection: &Connection) {
    let a = connection.session().await.expect("a session");
    let b = connection.session().await.expect("a second session");

    let guard = Mutex::new(&a, "jobs").lock().await.expect("lock");
    let err = Mutex::new(&b, "jobs")
        .try_lock()
        .await
        .expect_err("held by a");
    assert!(matches!(err, Error::Locked { .. }), "{err:?}");
    let waiter = tokio::spawn({
        let mutex = Mutex::new(&b, "jobs");
        async move { mutex.lock().await?.unlock().await }
    });
    let err = Mutex::new(&b, "other")
        .lock_timeout(Duration::ZERO)
        .await
        .map(drop);
    assert!(err.is_ok(), "a free lock is taken at once: {err:?}");
    guard.unlock().await.expect("unlock");
    tokio::time::timeout(BOUND, waiter)
        .await
        .expect("the waiter is served in time")
        .unwrap()
        .expect("the waiter locks and unlocks");

    RwMutex::new(&a, "catalog")
        .read()
        .await
        .expect("read")
        .unlock()
        .await
        .expect("unlock");
    Semaphore::new(&a, "encoders", 2)
        .expect("permits")
        .acquire()
        .await
        .expect("a permit")
        .release()
        .await
        .expect("release");

    let election = Election::new(&a, "scheduler");
    let leadership = election.campaign("node-a").await.expect("elected");
    leadership.proclaim("node-a, busy").await.expect("proclaim");
    let leader = election.leader().await.expect("a leader");
    assert_eq!(leader.value, b"node-a, busy");
    let mut changes = Election::new(&b, "scheduler").observe();
    let first = tokio::time::timeout(BOUND, changes.next())
        .await
        .expect("an update in time")
        .expect("open")
        .expect("no error");
    assert!(first.leader.is_some());
    leadership.resign().await.expect("resign");

    a.close().await.expect("close");
    b.close().await.expect("close");
}

/// The `Debug` of the options, the connection, a session builder and a session.
async fn debug_of_everything(url: &str, connection: &Connection) -> String {
    let options = ConnectOptions::parse(url).expect("parses");
    let session = connection.session().await.expect("a session");
    let text = format!(
        "{options:?}\n{options:#?}\n{connection:?}\n{:?}\n{session:?}\n{:?}",
        connection.session_builder(),
        connection.backend(),
    );
    session.close().await.expect("close");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_with_auth_logs_no_password_at_trace_level() {
    captured();
    let Some(server) = EtcdServer::builder()
        .local_only()
        .auth(ETCD_ROOT_PASSWORD)
        .user("app", ETCD_PASSWORD, "app/")
        .start_or_skip()
        .await
    else {
        return;
    };
    let endpoint = server.endpoint();
    let wrong = coord::connect(&format!(
        "etcd://app:{WRONG_PASSWORD}@{endpoint}?namespace=app/"
    ))
    .await
    .expect_err("a wrong password is refused");
    tracing::error!(error = %wrong, debug = ?wrong, "refused");
    assert!(matches!(wrong, Error::Unauthenticated { .. }), "{wrong:?}");

    let url = format!("etcd://app:{ETCD_PASSWORD}@{endpoint}?namespace=app/&ttl=10s");
    let connection = coord::connect(&url).await.expect("connects as app");
    work(&connection).await;
    let debug = debug_of_everything(&url, &connection).await;
    let etcd_options =
        coord::etcd::EtcdOptions::parse_url(&format!("etcd://app:{ETCD_PASSWORD}@{endpoint}"))
            .expect("parses");
    let builder = coord::etcd::EtcdOptions::new([endpoint]).user("root", ETCD_ROOT_PASSWORD);
    let debug = format!(
        "{debug}\n{etcd_options:?}\n{builder:?}\n{:?}",
        server.root_credentials()
    );
    assert!(debug.contains("ConnectOptions"), "{debug}");
    assert_no_secret("the Debug output", &debug);

    let logs = log_text();
    // The capture works, and shows the operations with their fields.
    for expected in [
        "mutex.lock",
        "mutex.try_lock",
        "election.campaign",
        "outcome=ok",
        "token=",
    ] {
        assert!(logs.contains(expected), "{expected:?} not traced:\n{logs}");
    }
    assert_no_secret("the trace output", &logs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_with_an_acl_user_logs_no_password_at_trace_level() {
    captured();
    let Some(server) = RedisServer::builder()
        .acl_user("app", REDIS_PASSWORD)
        .start_or_skip()
        .await
    else {
        return;
    };
    let endpoint = server.endpoint();
    let wrong = coord::connect(&format!("redis://app:{WRONG_PASSWORD}@{endpoint}"))
        .await
        .expect_err("a wrong password is refused");
    tracing::error!(error = %wrong, debug = ?wrong, "refused");
    assert!(matches!(wrong, Error::Unauthenticated { .. }), "{wrong:?}");

    let url = format!("redis://app:{REDIS_PASSWORD}@{endpoint}?namespace=app/&ttl=10s");
    let connection = coord::connect(&url).await.expect("connects as app");
    work(&connection).await;
    let debug = debug_of_everything(&url, &connection).await;
    let redis_options =
        coord::redis::RedisOptions::parse_url(&format!("redis://app:{REDIS_PASSWORD}@{endpoint}"))
            .expect("parses");
    let memory_options = coord::memory::MemoryOptions::parse_url("memory://logs").expect("parses");
    let debug = format!(
        "{debug}\n{redis_options:?}\n{memory_options:?}\n{:?}",
        server.acl_users()
    );
    assert!(debug.contains("RedisOptions"), "{debug}");
    assert_no_secret("the Debug output", &debug);

    let logs = log_text();
    for expected in [
        "mutex.lock",
        "semaphore.acquire",
        "election.resign",
        "outcome=ok",
        "lease=",
    ] {
        assert!(logs.contains(expected), "{expected:?} not traced:\n{logs}");
    }
    assert_no_secret("the trace output", &logs);
}

/// The password of a URL that fails to parse is not repeated either (the one way a
/// password could reach an error message before any connection exists).
#[test]
fn a_bad_url_with_a_password_is_refused_without_repeating_it() {
    for url in [
        format!("etcd://app:{ETCD_PASSWORD}@127.0.0.1:1?nonsense=1"),
        format!("redis://app:{REDIS_PASSWORD}@127.0.0.1:1/notadb"),
        format!("memory://app:{WRONG_PASSWORD}@x"),
    ] {
        let err = ConnectOptions::parse(&url).expect_err("refused");
        assert_no_secret("a URL error", &format!("{err} {err:?}"));
    }
}
