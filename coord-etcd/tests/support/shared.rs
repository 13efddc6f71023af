//! One etcd (a single server, or a three-member cluster) shared by every test of a test
//! binary.
//!
//! Starting etcd takes a second or more; the conformance suite has 70+ tests, so they
//! share one and keep apart by key prefix (each test gets its own namespace). The server
//! lives in a static, which Rust never drops: a small watchdog process (`sh`, blocked
//! reading a pipe whose only writer is this process) kills it and removes its directory
//! when the test binary exits, however it exits.

use std::any::Any;
use std::future::Future;
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use coord_testkit::{EtcdCluster, EtcdServer, FixtureError, ServerMode, require_backends};
use tokio::sync::OnceCell;

/// The shared etcd and what keeps it from outliving the test binary.
pub struct Shared {
    urls: Vec<String>,
    namespace: String,
    mode: ServerMode,
    /// The fixture, kept alive for good.
    _fixture: Box<dyn Any + Send + Sync>,
    /// Held, never written: the watchdog's `read` returns when this process exits.
    _watchdog: Option<ChildStdin>,
}

impl Shared {
    /// Every member's client URL.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Where the etcd comes from (an external one may be shared with other processes).
    pub fn mode(&self) -> ServerMode {
        self.mode
    }

    /// A namespace no other test of this binary uses, under the fixture's random one.
    pub fn fresh_namespace(&self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        format!(
            "{}t{}/",
            self.namespace,
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
    }
}

/// What a launch on the fixture thread hands back.
struct Launched {
    fixture: Box<dyn Any + Send + Sync>,
    urls: Vec<String>,
    namespace: String,
    mode: ServerMode,
    /// The local processes to kill when the binary exits.
    pids: Vec<u32>,
    /// The fixture's directory, to remove then.
    dir: Option<PathBuf>,
}

type Launch = fn() -> Pin<Box<dyn Future<Output = Result<Launched, FixtureError>> + Send>>;

/// The shared single server, started on first use; `None` (after a skip line naming the
/// test) when etcd is unavailable and `COORD_TEST_REQUIRE_BACKENDS` is not set (panics
/// when it is).
pub async fn shared_etcd() -> Option<&'static Shared> {
    static SHARED: OnceCell<Result<Shared, String>> = OnceCell::const_new();
    skip_line(SHARED.get_or_init(|| start(launch_server)).await)
}

/// The shared three-member cluster (etcd's default raft timing), as [`shared_etcd`].
pub async fn shared_cluster() -> Option<&'static Shared> {
    static SHARED: OnceCell<Result<Shared, String>> = OnceCell::const_new();
    skip_line(SHARED.get_or_init(|| start(launch_cluster)).await)
}

fn launch_server() -> Pin<Box<dyn Future<Output = Result<Launched, FixtureError>> + Send>> {
    Box::pin(async {
        let server = EtcdServer::builder().start().await?;
        Ok(Launched {
            urls: server.urls(),
            namespace: server.namespace().to_owned(),
            mode: server.mode(),
            pids: server.pid().await.into_iter().collect(),
            dir: server
                .data_dir()
                .and_then(|d| d.parent())
                .map(PathBuf::from),
            fixture: Box::new(server),
        })
    })
}

fn launch_cluster() -> Pin<Box<dyn Future<Output = Result<Launched, FixtureError>> + Send>> {
    Box::pin(async {
        let cluster = EtcdCluster::start().await?;
        let mut pids = Vec::new();
        for i in 0..cluster.len() {
            pids.extend(cluster.pid(i).await);
        }
        Ok(Launched {
            urls: cluster.urls(),
            namespace: cluster.namespace().to_owned(),
            mode: ServerMode::Local,
            pids,
            dir: cluster.data_dir(0).parent().map(PathBuf::from),
            fixture: Box::new(cluster),
        })
    })
}

fn skip_line(shared: &'static Result<Shared, String>) -> Option<&'static Shared> {
    match shared {
        Ok(shared) => Some(shared),
        Err(unavailable) => {
            let test = std::thread::current()
                .name()
                .unwrap_or("<unnamed test>")
                .to_owned();
            let _ = writeln!(
                std::io::stderr().lock(),
                "skipped: {test}: etcd unavailable: {unavailable} \
                 (set COORD_TEST_REQUIRE_BACKENDS=1 to fail instead)"
            );
            None
        }
    }
}

async fn start(launch: Launch) -> Result<Shared, String> {
    // The fixture gets a runtime of its own: each test has its own runtime, and the one
    // that happens to start the fixture ends with its test.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("shared-etcd".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for the shared etcd");
            rt.block_on(async move {
                if tx.send(launch().await).is_err() {
                    return;
                }
                // Keep the runtime (and the child processes it reaps) alive for good.
                std::future::pending::<()>().await
            });
        })
        .expect("spawn the shared etcd thread");
    let launched = match rx.await.expect("the shared etcd thread answers") {
        Ok(launched) => launched,
        Err(e) if e.is_unavailable() && !require_backends() => return Err(e.to_string()),
        Err(e) => panic!("shared etcd: {e}"),
    };
    let watchdog = match launched.mode {
        ServerMode::Local if !launched.pids.is_empty() => {
            watchdog(&launched.pids, launched.dir.as_ref())
        }
        _ => None,
    };
    Ok(Shared {
        urls: launched.urls,
        namespace: launched.namespace,
        mode: launched.mode,
        _fixture: launched.fixture,
        _watchdog: watchdog,
    })
}

/// Starts `sh` blocked on reading its stdin: when this process exits the pipe closes and
/// it kills the servers and removes their directory (unless `COORD_TEST_KEEP_DIR=1`).
fn watchdog(pids: &[u32], dir: Option<&PathBuf>) -> Option<ChildStdin> {
    let keep = matches!(
        std::env::var("COORD_TEST_KEEP_DIR").as_deref(),
        Ok("1") | Ok("true")
    );
    let dir = dir
        .filter(|_| !keep)
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_default();
    let pids = pids
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    let spawned = Command::new("sh")
        .args([
            "-c",
            // `$0` unquoted: one word per pid.
            r#"read _ignored; kill -9 $0; if [ -n "$1" ]; then rm -rf "$1"; fi"#,
        ])
        .arg(&pids)
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group, so that it outlives a signal sent to the test's group
        // (Ctrl-C, a CI timeout) and still cleans up.
        .process_group(0)
        .spawn();
    match spawned {
        Ok(mut child) => child.stdin.take(),
        Err(e) => {
            let _ = writeln!(
                std::io::stderr().lock(),
                "warning: no watchdog for the shared etcd (pids {pids}): {e}; it may outlive the tests"
            );
            None
        }
    }
}
