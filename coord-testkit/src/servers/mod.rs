//! Real etcd and redis servers for integration tests.
//!
//! [`EtcdServer`], [`EtcdCluster`] and [`RedisServer`] resolve a server in this order:
//!
//! 1. **External endpoints from the environment.** If `COORD_TEST_ETCD`
//!    (`host:port` or `http://host:port`, comma separated) or `COORD_TEST_REDIS`
//!    (`host:port` or `redis://...`) is set, the fixture points at that server and does not
//!    own it. Tests must then keep to the random key prefix [`EtcdServer::namespace`] /
//!    [`RedisServer::namespace`]; process control (`stop`, `kill`, `pause`, ...) fails with
//!    [`FixtureError::NotControllable`]. Builders that ask for something an external server
//!    cannot be configured with (TLS, auth, append-only file, extra arguments, or
//!    [`local_only`](EtcdServerBuilder::local_only)) skip this step.
//! 2. **A local binary** (`etcd`, `redis-server`; override the paths with
//!    `COORD_TEST_ETCD_BIN`, `COORD_TEST_REDIS_BIN`, `COORD_TEST_ETCDCTL_BIN`,
//!    `COORD_TEST_REDIS_CLI_BIN`) spawned on free loopback ports inside a fresh
//!    [`tempfile::TempDir`], with stdout and stderr appended to a log file there (see `log_tail()`). The
//!    fixture is ready once a real protocol probe answers (etcd `GET /health`, redis
//!    `PING`). The process is killed when the fixture is dropped; set
//!    `COORD_TEST_KEEP_DIR=1` to keep the directory (and its log) for debugging.
//! 3. **testcontainers**, only when the crate is built with the `docker` feature and a
//!    Docker engine answers.
//!
//! When none of them is available `start()` returns [`FixtureError::Unavailable`]. Tests
//! normally call `start_or_skip()`, which prints a skip line and returns `None` in that case,
//! unless `COORD_TEST_REQUIRE_BACKENDS=1` is set (see [`require_backends`]), in which case
//! it panics so that CI cannot go green by skipping everything.
//!
//! Fixtures run on real time: never use them under a paused tokio clock.

mod etcd;
mod probe;
mod process;
mod redis;
mod redis_cluster;
mod tls;

#[cfg(feature = "docker")]
mod docker;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use etcd::{
    EtcdCluster, EtcdClusterBuilder, EtcdServer, EtcdServerBuilder, EtcdUser, MemberStatus,
};
pub use redis::{RedisServer, RedisServerBuilder};
pub use redis_cluster::{RedisCluster, RedisClusterBuilder};
pub use tls::{CLIENT_COMMON_NAME, TlsMaterial};

/// Environment variable naming external etcd endpoints (`host:port` or URLs, comma separated).
pub const ENV_ETCD: &str = "COORD_TEST_ETCD";
/// Environment variable naming an external redis server (`host:port` or a `redis://` URL).
pub const ENV_REDIS: &str = "COORD_TEST_REDIS";
/// Environment variable that turns "backend unavailable" skips into failures when set to `1`.
pub const ENV_REQUIRE_BACKENDS: &str = "COORD_TEST_REQUIRE_BACKENDS";
/// Environment variable overriding the path of the `etcd` binary.
pub const ENV_ETCD_BIN: &str = "COORD_TEST_ETCD_BIN";
/// Environment variable overriding the path of the `etcdctl` binary.
pub const ENV_ETCDCTL_BIN: &str = "COORD_TEST_ETCDCTL_BIN";
/// Environment variable overriding the path of the `redis-server` binary.
pub const ENV_REDIS_BIN: &str = "COORD_TEST_REDIS_BIN";
/// Environment variable overriding the path of the `redis-cli` binary.
pub const ENV_REDIS_CLI_BIN: &str = "COORD_TEST_REDIS_CLI_BIN";
/// Environment variable that keeps fixture temp dirs (data and logs) when set to `1`.
pub const ENV_KEEP_DIR: &str = "COORD_TEST_KEEP_DIR";

/// Default time a fixture waits for its server to answer the readiness probe.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How many times a fixture picks fresh ports when a spawned server exits because its
/// port was taken between probing and spawning.
const PORT_ATTEMPTS: usize = 4;

/// Returns `true` when `COORD_TEST_REQUIRE_BACKENDS=1` (or `true`) is set.
///
/// In that mode an unavailable backend is a test failure instead of a skip.
pub fn require_backends() -> bool {
    matches!(
        std::env::var(ENV_REQUIRE_BACKENDS)
            .as_deref()
            .map(str::trim),
        Ok("1") | Ok("true") | Ok("yes")
    )
}

/// Where a fixture's server comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerMode {
    /// An external server named by an environment variable; the fixture cannot control it.
    External,
    /// A child process spawned from a local binary; fully controllable.
    Local,
    /// A container started through testcontainers (feature `docker`); not controllable
    /// beyond dropping it.
    Docker,
}

/// A user name and password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
}

impl Credentials {
    /// Builds credentials from a user name and a password.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            password: password.into(),
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Errors from the server fixtures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FixtureError {
    /// No server can be had: no env endpoint, no local binary, no Docker engine.
    /// `start_or_skip()` turns this into a skip (unless backends are required).
    #[error("{0}")]
    Unavailable(String),
    /// The operation needs to control the server process, which this fixture does not own.
    #[error("{what} is {mode:?}; the fixture cannot {action} it")]
    NotControllable {
        /// Which server.
        what: String,
        /// How the server was obtained.
        mode: ServerMode,
        /// The refused operation.
        action: &'static str,
    },
    /// The operation needs a running server process, and it is stopped.
    #[error("{what} is not running")]
    NotRunning {
        /// Which server.
        what: String,
    },
    /// The binary could not be spawned.
    #[error("failed to spawn {program}: {source}")]
    Spawn {
        /// The binary.
        program: PathBuf,
        /// The spawn error.
        source: io::Error,
    },
    /// The server process exited before it became ready.
    #[error("{what} exited during startup ({status})\n--- log tail ---\n{log_tail}")]
    EarlyExit {
        /// Which server.
        what: String,
        /// Its exit status.
        status: ExitStatus,
        /// The last lines of its log.
        log_tail: String,
    },
    /// The server did not answer the readiness probe in time.
    #[error(
        "{what} not ready after {timeout:?} (last probe: {last_probe})\n--- log tail ---\n{log_tail}"
    )]
    NotReady {
        /// Which server.
        what: String,
        /// The startup timeout.
        timeout: Duration,
        /// The last probe failure.
        last_probe: String,
        /// The last lines of its log.
        log_tail: String,
    },
    /// The readiness probe was answered, but by a process other than the fixture's
    /// server: another server holds the port. At startup the fixture retries on new
    /// ports; on restart (same ports) this is returned.
    #[error("{what}: port {port} is served by another process\n--- log tail ---\n{log_tail}")]
    PortTaken {
        /// Which server.
        what: String,
        /// The port.
        port: u16,
        /// The last lines of our server's log.
        log_tail: String,
    },
    /// A helper command (e.g. `etcdctl`) failed.
    #[error("command `{command}` failed ({status}): {output}")]
    Command {
        /// The command line (passwords redacted).
        command: String,
        /// Its exit status, or why it did not run.
        status: String,
        /// Its stdout and stderr.
        output: String,
    },
    /// Generating TLS material failed.
    #[error("generating TLS material: {0}")]
    Tls(String),
    /// An I/O error.
    #[error("{context}: {source}")]
    Io {
        /// What the fixture was doing.
        context: String,
        /// The error.
        source: io::Error,
    },
    /// Sending a signal failed.
    #[error("sending {signal} to {what}: {source}")]
    Signal {
        /// Which server.
        what: String,
        /// The signal name.
        signal: &'static str,
        /// The error.
        source: nix::Error,
    },
    /// A testcontainers error (feature `docker` only).
    #[error("docker: {0}")]
    Docker(String),
}

impl FixtureError {
    /// `true` for [`FixtureError::Unavailable`], the only error `start_or_skip()` skips on.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, FixtureError::Unavailable(_))
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        FixtureError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Turns a start result into the `start_or_skip` contract.
pub(crate) fn skip_or_panic<T>(what: &str, result: Result<T, FixtureError>) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(e) if e.is_unavailable() && !require_backends() => {
            let test = std::thread::current()
                .name()
                .map(|n| format!(" [{n}]"))
                .unwrap_or_default();
            eprintln!(
                "SKIPPED{test}: {what} unavailable: {e} (set {ENV_REQUIRE_BACKENDS}=1 to fail instead)"
            );
            None
        }
        Err(e) if e.is_unavailable() => {
            panic!("{what} unavailable and {ENV_REQUIRE_BACKENDS}=1: {e}")
        }
        Err(e) => panic!("{what} fixture failed: {e}"),
    }
}

/// A random, fixture-unique key prefix such as `coord-test/5f0c1e2a9b7d4c11/`.
pub(crate) fn random_namespace() -> String {
    format!("coord-test/{:016x}/", random_u64())
}

/// A random 64-bit number without a RNG dependency (std's per-process random hash keys
/// mixed with the time, the pid and a counter).
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    h.finish()
}

/// Picks `n` distinct free loopback ports (binds them all at once, then releases them).
pub(crate) fn free_ports(n: usize) -> Result<Vec<u16>, FixtureError> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind(("127.0.0.1", 0)))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| FixtureError::io("binding 127.0.0.1:0 to find a free port", e))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| FixtureError::io("reading a probe listener's port", e))
}

/// Finds a binary: the path in `env_var` if set, else `name` on `PATH`, else the usual
/// system directories.
pub(crate) fn find_binary(env_var: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env_var).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return is_executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/bin", "/usr/bin", "/usr/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The last `max_lines` lines (at most 16 KiB) of a log file.
pub(crate) fn read_log_tail(path: &Path, max_lines: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    const MAX_BYTES: u64 = 16 * 1024;
    let Ok(mut f) = std::fs::File::open(path) else {
        return format!("<no log at {}>", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(MAX_BYTES);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(max_lines);
    lines[from..].join("\n")
}

/// Creates the per-fixture temp dir.
pub(crate) fn make_temp_dir(prefix: &str) -> Result<tempfile::TempDir, FixtureError> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| FixtureError::io("creating the fixture temp dir", e))
}

/// Honours `COORD_TEST_KEEP_DIR=1` when a fixture is dropped.
pub(crate) fn finish_temp_dir(dir: Option<tempfile::TempDir>, what: &str) {
    let Some(dir) = dir else { return };
    if matches!(std::env::var(ENV_KEEP_DIR).as_deref(), Ok("1") | Ok("true")) {
        let path = dir.keep();
        eprintln!("{what}: keeping {}", path.display());
    }
}

/// Strips a scheme, user info and path from an endpoint string: `http://a:1/x` -> `a:1`.
pub(crate) fn host_port(s: &str) -> String {
    let s = s.trim();
    let s = s.split_once("://").map_or(s, |(_, rest)| rest);
    let s = s.rsplit_once('@').map_or(s, |(_, rest)| rest);
    let s = s.split('/').next().unwrap_or(s);
    s.to_string()
}

/// Whether a startup failure looks like a port clash (worth retrying on new ports).
pub(crate) fn is_port_clash(err: &FixtureError) -> bool {
    let tail = match err {
        FixtureError::PortTaken { .. } => return true,
        FixtureError::EarlyExit { log_tail, .. } | FixtureError::NotReady { log_tail, .. } => {
            log_tail
        }
        _ => return false,
    };
    let tail = tail.to_ascii_lowercase();
    tail.contains("address already in use") || tail.contains("could not create server tcp")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_strips_everything_but_host_and_port() {
        assert_eq!(host_port("127.0.0.1:2379"), "127.0.0.1:2379");
        assert_eq!(host_port("http://127.0.0.1:2379"), "127.0.0.1:2379");
        assert_eq!(host_port(" redis://user:pw@host:6379/0 "), "host:6379");
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports(3).unwrap();
        assert_eq!(ports.len(), 3);
        assert_ne!(ports[0], ports[1]);
        assert_ne!(ports[1], ports[2]);
        assert_ne!(ports[0], ports[2]);
    }

    #[tokio::test]
    async fn external_servers_are_not_controllable() {
        let e = EtcdServer::external("http://10.0.0.1:2379, http://10.0.0.2:2379");
        assert_eq!(e.mode(), ServerMode::External);
        assert!(!e.is_controllable());
        assert_eq!(e.endpoint(), "10.0.0.1:2379");
        assert_eq!(e.endpoints(), ["10.0.0.1:2379", "10.0.0.2:2379"]);
        assert_eq!(e.url(), "http://10.0.0.1:2379");
        assert!(e.namespace().starts_with("coord-test/"));
        assert!(e.data_dir().is_none() && e.log_tail().is_empty() && e.pid().await.is_none());
        for r in [
            e.stop().await,
            e.kill().await,
            e.pause().await,
            e.resume().await,
            e.restart().await,
        ] {
            let err = r.unwrap_err();
            assert!(
                matches!(
                    err,
                    FixtureError::NotControllable {
                        mode: ServerMode::External,
                        ..
                    }
                ),
                "{err}"
            );
            assert!(err.to_string().contains("cannot"), "{err}");
        }
        assert!(e.is_running().await);

        let r = RedisServer::external(" redis://:pw@10.0.0.3:6380/1 ");
        assert_eq!(r.endpoint(), "10.0.0.3:6380");
        assert_eq!(r.url(), "redis://:pw@10.0.0.3:6380/1");
        assert!(matches!(
            r.kill().await,
            Err(FixtureError::NotControllable { .. })
        ));
        assert_eq!(
            RedisServer::external("127.0.0.1:6379").url(),
            "redis://127.0.0.1:6379"
        );
        // Two fixtures on one external server get distinct namespaces.
        assert_ne!(
            r.namespace(),
            RedisServer::external("127.0.0.1:6379").namespace()
        );
    }

    #[test]
    fn unavailable_is_skipped_unless_required() {
        let r = std::panic::catch_unwind(|| {
            skip_or_panic::<()>("thing", Err(FixtureError::Unavailable("nope".into())))
        });
        if require_backends() {
            assert!(r.is_err());
        } else {
            assert!(r.unwrap().is_none());
        }
        assert_eq!(skip_or_panic("thing", Ok(7)), Some(7));
    }

    #[test]
    #[should_panic(expected = "thing fixture failed")]
    fn other_start_errors_panic() {
        skip_or_panic::<()>("thing", Err(FixtureError::Tls("broken".into())));
    }

    #[test]
    fn port_clash_is_recognised() {
        let clash = FixtureError::NotReady {
            what: "x".into(),
            timeout: Duration::from_secs(1),
            last_probe: "connect: refused".into(),
            log_tail: "listen tcp 127.0.0.1:1: bind: address already in use".into(),
        };
        assert!(is_port_clash(&clash));
        assert!(!is_port_clash(&FixtureError::Unavailable("x".into())));
    }

    #[test]
    fn missing_binaries_are_not_found() {
        assert!(find_binary("COORD_TEST_SURELY_UNSET_VAR", "no-such-binary-coord").is_none());
    }

    #[test]
    fn tls_material_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let tls = TlsMaterial::generate(&dir.path().join("tls")).unwrap();
        for p in [
            tls.ca_cert_path(),
            tls.server_cert_path(),
            tls.server_key_path(),
            tls.client_cert_path(),
            tls.client_key_path(),
        ] {
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(text.starts_with("-----BEGIN "), "{}", p.display());
        }
        assert!(tls.ca_cert_pem().contains("BEGIN CERTIFICATE"));
        assert!(tls.client_key_pem().contains("PRIVATE KEY"));
        assert_eq!(tls.client_common_name(), CLIENT_COMMON_NAME);
    }

    #[test]
    fn namespaces_differ() {
        assert_ne!(random_namespace(), random_namespace());
        assert!(random_namespace().starts_with("coord-test/"));
    }
}
