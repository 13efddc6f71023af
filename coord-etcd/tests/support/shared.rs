//! One etcd server shared by every test of a test binary.
//!
//! Starting etcd takes about a second; the conformance suite has 70+ tests, so they share
//! one server and keep apart by key prefix (each test gets its own namespace). The server
//! lives in a static, which Rust never drops: a small watchdog process (`sh`, blocked
//! reading a pipe whose only writer is this process) kills it and removes its directory
//! when the test binary exits, however it exits.

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use coord_testkit::{EtcdServer, ServerMode, require_backends};
use tokio::sync::OnceCell;

/// The shared server and what keeps it from outliving the test binary.
pub struct Shared {
    server: EtcdServer,
    /// Held, never written: the watchdog's `read` returns when this process exits.
    _watchdog: Option<ChildStdin>,
}

impl Shared {
    /// The server.
    pub fn server(&self) -> &EtcdServer {
        &self.server
    }

    /// A namespace no other test of this binary uses, under the server's random one.
    pub fn fresh_namespace(&self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        format!(
            "{}t{}/",
            self.server.namespace(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
    }
}

/// The shared server, started on first use; `None` (after a skip line naming the test)
/// when etcd is unavailable and `COORD_TEST_REQUIRE_BACKENDS` is not set (panics when it
/// is).
pub async fn shared_etcd() -> Option<&'static Shared> {
    static SHARED: OnceCell<Result<Shared, String>> = OnceCell::const_new();
    match SHARED.get_or_init(start).await {
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

async fn start() -> Result<Shared, String> {
    // The server gets a runtime of its own: each test has its own runtime, and the one
    // that happens to start the server ends with its test.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("shared-etcd".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for the shared etcd");
            rt.block_on(async move {
                let result = EtcdServer::builder().start().await;
                let pid = match &result {
                    Ok(server) => server.pid().await,
                    Err(_) => None,
                };
                if tx.send((result, pid)).is_err() {
                    return;
                }
                // Keep the runtime (and the child process it reaps) alive for good.
                std::future::pending::<()>().await
            });
        })
        .expect("spawn the shared etcd thread");
    let (result, pid) = rx.await.expect("the shared etcd thread answers");
    let server = match result {
        Ok(server) => server,
        Err(e) if e.is_unavailable() && !require_backends() => return Err(e.to_string()),
        Err(e) => panic!("shared etcd: {e}"),
    };
    let watchdog = match (server.mode(), pid) {
        (ServerMode::Local, Some(pid)) => watchdog(pid, &server),
        _ => None,
    };
    Ok(Shared {
        server,
        _watchdog: watchdog,
    })
}

/// Starts `sh` blocked on reading its stdin: when this process exits the pipe closes and
/// it kills the server and removes its directory (unless `COORD_TEST_KEEP_DIR=1`).
fn watchdog(pid: u32, server: &EtcdServer) -> Option<ChildStdin> {
    let keep = matches!(
        std::env::var("COORD_TEST_KEEP_DIR").as_deref(),
        Ok("1") | Ok("true")
    );
    let dir = server
        .data_dir()
        .and_then(|d| d.parent())
        .filter(|_| !keep)
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_default();
    let spawned = Command::new("sh")
        .args([
            "-c",
            r#"read _ignored; kill -9 "$0"; if [ -n "$1" ]; then rm -rf "$1"; fi"#,
        ])
        .arg(pid.to_string())
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
                "warning: no watchdog for the shared etcd (pid {pid}): {e}; it may outlive the tests"
            );
            None
        }
    }
}
