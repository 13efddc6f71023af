//! One redis-server per test binary, and the conformance suite's factory on it.

pub(crate) mod conformance;

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use coord_redis::{RedisBackend, RedisOptions};
use coord_testkit::{RedisServer, require_backends};
use tokio::sync::OnceCell;

/// The shared server. It lives in a static, which Rust never drops, so a watchdog (`sh`
/// blocked reading a pipe only this process writes) kills it when the binary exits.
pub(crate) struct Shared {
    url: String,
    prefix: String,
    _server: RedisServer,
    _watchdog: Option<ChildStdin>,
}

impl Shared {
    /// A namespace no other test of this binary uses.
    pub(crate) fn fresh_namespace(&self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        format!("{}t{}", self.prefix, NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// A new client of `namespace`.
    pub(crate) async fn connect(&self, namespace: &str) -> RedisBackend {
        let options = RedisOptions::parse_url(&self.url)
            .and_then(|o| o.namespace(namespace))
            .expect("the fixture's URL parses");
        RedisBackend::connect(options)
            .await
            .expect("connect to the shared redis")
    }
}

/// The shared server, started on first use; `None` after a skip line when redis-server is
/// unavailable (a panic when `COORD_TEST_REQUIRE_BACKENDS=1`).
pub(crate) async fn shared_redis() -> Option<&'static Shared> {
    static SHARED: OnceCell<Option<Shared>> = OnceCell::const_new();
    SHARED.get_or_init(start).await.as_ref()
}

async fn start() -> Option<Shared> {
    // The fixture gets a runtime of its own: each test has its own runtime, and the one
    // that happens to start the server ends with its test.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime for the shared redis");
        rt.block_on(async move {
            let started = RedisServer::builder().local_only().start().await;
            let pid = match &started {
                Ok(server) => server.pid().await,
                Err(_) => None,
            };
            if tx.send((started, pid)).is_err() {
                return;
            }
            std::future::pending::<()>().await
        });
    });
    let (started, pid) = rx.await.expect("the shared redis thread answers");
    let server = match started {
        Ok(server) => server,
        Err(e) if e.is_unavailable() && !require_backends() => {
            let _ = writeln!(
                std::io::stderr().lock(),
                "skipped: redis unavailable: {e} (set COORD_TEST_REQUIRE_BACKENDS=1 to fail instead)"
            );
            return None;
        }
        Err(e) => panic!("shared redis: {e}"),
    };
    Some(Shared {
        url: server.url(),
        prefix: server.namespace().replace(['{', '}'], ""),
        _watchdog: pid.and_then(watchdog),
        _server: server,
    })
}

fn watchdog(pid: u32) -> Option<ChildStdin> {
    Command::new("sh")
        .args(["-c", "read _ignored; kill -9 $0"])
        .arg(pid.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group, so a signal to the test's group does not stop the clean-up.
        .process_group(0)
        .spawn()
        .ok()
        .and_then(|mut child| child.stdin.take())
}
