//! One 3-master Redis Cluster per test binary, and the conformance suite's factory on it
//! (the single-server factory, `support/conformance.rs`, reused as it is: it needs only a
//! `Shared` with `fresh_namespace` and `connect`).

#[path = "../support/conformance.rs"]
pub(crate) mod conformance;

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use coord_redis::{RedisBackend, RedisOptions};
use coord_testkit::{RedisCluster, require_backends};
use tokio::sync::OnceCell;

/// The shared cluster. It lives in a static, which Rust never drops, so a watchdog (`sh`
/// blocked reading a pipe only this process writes) kills its nodes when the binary exits.
pub(crate) struct Shared {
    url: String,
    prefix: String,
    cluster: RedisCluster,
    _watchdog: Option<ChildStdin>,
}

impl Shared {
    /// A namespace no other test of this binary uses.
    pub(crate) fn fresh_namespace(&self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        format!("{}t{}", self.prefix, NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// A new client of `namespace`, connected through every master as a seed node.
    pub(crate) async fn connect(&self, namespace: &str) -> RedisBackend {
        let options = RedisOptions::parse_url(&self.url)
            .and_then(|o| o.namespace(namespace))
            .expect("the fixture's URL parses");
        RedisBackend::connect(options)
            .await
            .expect("connect to the shared redis cluster")
    }

    /// `redis+cluster://` and every master.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The cluster, to ask which master serves a namespace.
    pub(crate) fn cluster(&self) -> &RedisCluster {
        &self.cluster
    }
}

/// The shared cluster, started on first use; `None` after a skip line when redis-server or
/// redis-cli is unavailable (a panic when `COORD_TEST_REQUIRE_BACKENDS=1`).
pub(crate) async fn shared_cluster() -> Option<&'static Shared> {
    static SHARED: OnceCell<Option<Shared>> = OnceCell::const_new();
    SHARED.get_or_init(start).await.as_ref()
}

async fn start() -> Option<Shared> {
    // The fixture gets a runtime of its own: each test has its own runtime, and the one
    // that happens to start the cluster ends with its test.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime for the shared redis cluster");
        rt.block_on(async move {
            let started = RedisCluster::start().await;
            let pids = match &started {
                Ok(cluster) => cluster.pids().await,
                Err(_) => Vec::new(),
            };
            if tx.send((started, pids)).is_err() {
                return;
            }
            std::future::pending::<()>().await
        });
    });
    let (started, pids) = rx.await.expect("the shared redis cluster thread answers");
    let cluster = match started {
        Ok(cluster) => cluster,
        Err(e) if e.is_unavailable() && !require_backends() => {
            let _ = writeln!(
                std::io::stderr().lock(),
                "skipped: redis cluster unavailable: {e} (set COORD_TEST_REQUIRE_BACKENDS=1 to fail instead)"
            );
            return None;
        }
        Err(e) => panic!("shared redis cluster: {e}"),
    };
    Some(Shared {
        url: cluster.url(),
        prefix: cluster.namespace().replace(['{', '}'], ""),
        _watchdog: watchdog(&pids),
        cluster,
    })
}

fn watchdog(pids: &[u32]) -> Option<ChildStdin> {
    if pids.is_empty() {
        return None;
    }
    Command::new("sh")
        .args(["-c", "read _ignored; kill -9 \"$@\"", "sh"])
        .args(pids.iter().map(u32::to_string))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group, so a signal to the test's group does not stop the clean-up.
        .process_group(0)
        .spawn()
        .ok()
        .and_then(|mut child| child.stdin.take())
}
