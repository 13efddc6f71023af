//! The redis fixture.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;
use tokio::sync::Mutex;

use super::probe::Probe;
use super::process::{Backing, ManagedProcess, run_command};
use super::{
    Credentials, DEFAULT_STARTUP_TIMEOUT, ENV_REDIS, ENV_REDIS_BIN, ENV_REDIS_CLI_BIN,
    FixtureError, PORT_ATTEMPTS, ServerMode, TlsMaterial, find_binary, finish_temp_dir, free_ports,
    host_port, is_port_clash, make_temp_dir, random_namespace, skip_or_panic,
};

/// Timeout for one `redis-cli` invocation.
const CLI_TIMEOUT: Duration = Duration::from_secs(10);

/// Builder for [`RedisServer`]; see the [module docs](crate::servers) for how a server
/// is found.
#[derive(Clone, Debug)]
#[must_use]
pub struct RedisServerBuilder {
    tls: bool,
    appendonly: bool,
    password: Option<String>,
    acl_users: Vec<Credentials>,
    startup_timeout: Duration,
    local_only: bool,
    extra_args: Vec<String>,
}

impl Default for RedisServerBuilder {
    fn default() -> Self {
        Self {
            tls: false,
            appendonly: false,
            password: None,
            acl_users: Vec::new(),
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            local_only: false,
            extra_args: Vec::new(),
        }
    }
}

impl RedisServerBuilder {
    /// Serve only TLS (`--port 0 --tls-port P`), requiring client certificates, with
    /// freshly generated material (see [`RedisServer::tls`]). The readiness probe then
    /// uses `redis-cli --tls`. Implies a local server.
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    /// Persist through an append-only file fsynced on every write
    /// (`--appendonly yes --appendfsync always`), so data survives
    /// [`kill`](RedisServer::kill) + [`restart`](RedisServer::restart). Implies a local
    /// server.
    pub fn appendonly(mut self, on: bool) -> Self {
        self.appendonly = on;
        self
    }

    /// Require this password for the `default` user (`--requirepass`). Implies a local
    /// server.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Add an ACL user with full access (`user NAME on >PASS ~* &* +@all`). The password
    /// must not contain spaces. Implies a local server.
    pub fn acl_user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.acl_users.push(Credentials::new(name, password));
        self
    }

    /// How long to wait for `PING` (default 10 s).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Ignore `COORD_TEST_REDIS` and Docker: spawn a local process the test can control.
    pub fn local_only(mut self) -> Self {
        self.local_only = true;
        self
    }

    /// Pass an extra argument to `redis-server` (e.g. `--notify-keyspace-events`,
    /// `KEA` as two calls). Implies a local server.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    fn wants_local(&self) -> bool {
        self.local_only
            || self.tls
            || self.appendonly
            || self.password.is_some()
            || !self.acl_users.is_empty()
            || !self.extra_args.is_empty()
    }

    /// Resolves and starts the server.
    ///
    /// # Errors
    ///
    /// [`FixtureError::Unavailable`] when no server can be had; other variants when one
    /// was found but failed to start (with the log tail attached).
    pub async fn start(self) -> Result<RedisServer, FixtureError> {
        if !self.wants_local()
            && let Some(url) = std::env::var(ENV_REDIS)
                .ok()
                .filter(|s| !s.trim().is_empty())
        {
            return Ok(RedisServer::external(&url));
        }
        match find_binary(ENV_REDIS_BIN, "redis-server") {
            Some(bin) => self.start_local(bin).await,
            #[cfg(feature = "docker")]
            None if !self.wants_local() => super::docker::start_redis(self.startup_timeout).await,
            None => Err(FixtureError::Unavailable(format!(
                "redis: {ENV_REDIS} is not set and no `redis-server` binary was found (install redis-server or set {ENV_REDIS_BIN})"
            ))),
        }
    }

    /// Like [`start`](Self::start), but prints a skip line and returns `None` when redis
    /// is unavailable (panics instead when `COORD_TEST_REQUIRE_BACKENDS=1`). Panics on
    /// any other startup failure.
    pub async fn start_or_skip(self) -> Option<RedisServer> {
        skip_or_panic("redis", self.start().await)
    }

    async fn start_local(self, bin: PathBuf) -> Result<RedisServer, FixtureError> {
        let cli = find_binary(ENV_REDIS_CLI_BIN, "redis-cli");
        if self.tls && cli.is_none() {
            return Err(FixtureError::Unavailable(format!(
                "redis TLS readiness needs `redis-cli` (install redis-tools or set {ENV_REDIS_CLI_BIN})"
            )));
        }
        let dir = make_temp_dir("coord-redis-")?;
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&data_dir)
            .map_err(|e| FixtureError::io(format!("creating {}", data_dir.display()), e))?;
        let tls = if self.tls {
            Some(TlsMaterial::generate(&dir.path().join("tls"))?)
        } else {
            None
        };
        let log_path = dir.path().join("redis.log");
        let mut attempt = 0;
        let (port, process) = loop {
            attempt += 1;
            let port = free_ports(1)?[0];
            let mut args: Vec<OsString> = Vec::new();
            let mut push = |a: &str| args.push(OsString::from(a));
            if let Some(tls) = &tls {
                for a in [
                    "--port".to_string(),
                    "0".to_string(),
                    "--tls-port".to_string(),
                    port.to_string(),
                    "--tls-cert-file".to_string(),
                    tls.server_cert_path().to_string_lossy().into_owned(),
                    "--tls-key-file".to_string(),
                    tls.server_key_path().to_string_lossy().into_owned(),
                    "--tls-ca-cert-file".to_string(),
                    tls.ca_cert_path().to_string_lossy().into_owned(),
                    "--tls-auth-clients".to_string(),
                    "yes".to_string(),
                ] {
                    push(&a);
                }
            } else {
                push("--port");
                push(&port.to_string());
            }
            for a in ["--bind", "127.0.0.1", "--save", "", "--dir"] {
                push(a);
            }
            push(&data_dir.to_string_lossy());
            if self.appendonly {
                for a in ["--appendonly", "yes", "--appendfsync", "always"] {
                    push(a);
                }
            } else {
                for a in ["--appendonly", "no"] {
                    push(a);
                }
            }
            if let Some(pw) = &self.password {
                push("--requirepass");
                push(pw);
            }
            for u in &self.acl_users {
                for a in [
                    "--user".to_string(),
                    u.user.clone(),
                    "on".to_string(),
                    format!(">{}", u.password),
                    "~*".to_string(),
                    "&*".to_string(),
                    "+@all".to_string(),
                ] {
                    push(&a);
                }
            }
            for a in &self.extra_args {
                push(a);
            }
            let probe = match (&tls, &cli) {
                (Some(tls), Some(cli)) => Probe::Command {
                    port,
                    program: cli.clone(),
                    args: cli_args(port, Some(tls), None)
                        .into_iter()
                        .chain([OsString::from("PING")])
                        .collect(),
                    expect: vec!["PONG", "NOAUTH"],
                },
                _ => Probe::RedisPing { port },
            };
            let mut process = ManagedProcess::new(
                format!("redis-server (127.0.0.1:{port})"),
                bin.clone(),
                args,
                dir.path().to_path_buf(),
                log_path.clone(),
                probe,
                vec![port],
            );
            let started = match process.spawn() {
                Ok(()) => process.wait_ready(self.startup_timeout).await,
                Err(e) => Err(e),
            };
            match started {
                Ok(()) => break (port, process),
                Err(e) => {
                    let _ = process.kill().await;
                    if attempt < PORT_ATTEMPTS && is_port_clash(&e) {
                        tracing::debug!("redis port clash, retrying on a new port: {e}");
                        continue;
                    }
                    return Err(e);
                }
            }
        };
        Ok(RedisServer {
            backing: Backing::Local(Box::new(Mutex::new(process))),
            endpoint: format!("127.0.0.1:{port}"),
            url: None,
            namespace: random_namespace(),
            tls,
            password: self.password,
            acl_users: self.acl_users,
            data_dir: Some(data_dir),
            log_path: Some(log_path),
            startup_timeout: self.startup_timeout,
            cli,
            dir: Some(dir),
        })
    }
}

/// `redis-cli` connection arguments.
fn cli_args(port: u16, tls: Option<&TlsMaterial>, auth: Option<&Credentials>) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "-h".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string().into(),
    ];
    if let Some(tls) = tls {
        args.push("--tls".into());
        args.push("--cacert".into());
        args.push(tls.ca_cert_path().into());
        args.push("--cert".into());
        args.push(tls.client_cert_path().into());
        args.push("--key".into());
        args.push(tls.client_key_path().into());
    }
    if let Some(c) = auth {
        args.push("--no-auth-warning".into());
        if c.user != "default" {
            args.push("--user".into());
            args.push(c.user.clone().into());
        }
        args.push("--pass".into());
        args.push(c.password.clone().into());
    }
    args
}

/// A redis server for one test: external (env), a local child process, or a container.
/// See the [module docs](crate::servers).
///
/// ```no_run
/// # async fn t() {
/// use coord_testkit::RedisServer;
/// let Some(redis) = RedisServer::start_or_skip().await else { return };
/// let url = redis.url(); // "redis://127.0.0.1:PORT"
/// redis.pause().await.unwrap(); // SIGSTOP: connections hang
/// redis.resume().await.unwrap();
/// # let _ = url; }
/// ```
#[derive(Debug)]
pub struct RedisServer {
    backing: Backing,
    endpoint: String,
    /// The URL as given for external servers.
    url: Option<String>,
    namespace: String,
    tls: Option<TlsMaterial>,
    password: Option<String>,
    acl_users: Vec<Credentials>,
    data_dir: Option<PathBuf>,
    log_path: Option<PathBuf>,
    startup_timeout: Duration,
    cli: Option<PathBuf>,
    // Last, so the process is gone before the directory is removed.
    dir: Option<TempDir>,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.backing.start_kill();
        finish_temp_dir(self.dir.take(), "redis fixture");
    }
}

impl RedisServer {
    /// A builder with TLS, auth, persistence and other options.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// Starts a plain server with default options.
    ///
    /// # Errors
    ///
    /// See [`RedisServerBuilder::start`].
    pub async fn start() -> Result<Self, FixtureError> {
        Self::builder().start().await
    }

    /// Starts a plain server, or skips; see [`RedisServerBuilder::start_or_skip`].
    pub async fn start_or_skip() -> Option<Self> {
        Self::builder().start_or_skip().await
    }

    pub(crate) fn external(url: &str) -> Self {
        let url = url.trim();
        Self {
            backing: Backing::External,
            endpoint: host_port(url),
            url: url.contains("://").then(|| url.to_string()),
            namespace: random_namespace(),
            tls: None,
            password: None,
            acl_users: Vec::new(),
            data_dir: None,
            log_path: None,
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            cli: find_binary(ENV_REDIS_CLI_BIN, "redis-cli"),
            dir: None,
        }
    }

    #[cfg(feature = "docker")]
    pub(crate) fn docker(guard: Box<dyn std::any::Any + Send + Sync>, endpoint: String) -> Self {
        let mut me = Self::external(&endpoint);
        me.backing = Backing::Docker(guard);
        me
    }

    /// Where the server comes from.
    pub fn mode(&self) -> ServerMode {
        self.backing.mode()
    }

    /// Whether `stop`, `kill`, `pause`, `resume` and `restart` work (local processes only).
    pub fn is_controllable(&self) -> bool {
        self.mode() == ServerMode::Local
    }

    /// `host:port`, e.g. `127.0.0.1:26379`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// `redis://127.0.0.1:PORT` (`rediss://` with TLS; the given URL for an external
    /// server). Credentials are not embedded; see [`password`](Self::password) and
    /// [`acl_users`](Self::acl_users).
    pub fn url(&self) -> String {
        if let Some(u) = &self.url {
            return u.clone();
        }
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://{}", self.endpoint)
    }

    /// A random key prefix unique to this fixture (`coord-test/<hex>/`). Tests must keep
    /// their keys under it so they can share an external server.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The redis working directory (local mode only).
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }

    /// The server log file (local mode only).
    pub fn log_path(&self) -> Option<&Path> {
        self.log_path.as_deref()
    }

    /// The last lines of the server log (empty unless local).
    pub fn log_tail(&self) -> String {
        self.log_path
            .as_deref()
            .map(|p| super::read_log_tail(p, super::process::LOG_TAIL_LINES))
            .unwrap_or_default()
    }

    /// The TLS material when built with [`RedisServerBuilder::tls`].
    pub fn tls(&self) -> Option<&TlsMaterial> {
        self.tls.as_ref()
    }

    /// The `default` user's password, when set with [`RedisServerBuilder::password`].
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The ACL users added with [`RedisServerBuilder::acl_user`].
    pub fn acl_users(&self) -> &[Credentials] {
        &self.acl_users
    }

    /// The server's pid while it runs (local mode only).
    pub async fn pid(&self) -> Option<u32> {
        match &self.backing {
            Backing::Local(p) => p.lock().await.pid(),
            _ => None,
        }
    }

    /// Whether the local process is alive (paused counts as alive); `true` for servers
    /// the fixture does not own.
    pub async fn is_running(&self) -> bool {
        match &self.backing {
            Backing::Local(p) => p.lock().await.is_running(),
            _ => true,
        }
    }

    fn what(&self) -> String {
        format!("redis at {}", self.endpoint)
    }

    /// Graceful stop: SIGTERM (after SIGCONT if paused) and wait; SIGKILL after 10 s.
    ///
    /// # Errors
    ///
    /// [`FixtureError::NotControllable`] unless local.
    pub async fn stop(&self) -> Result<(), FixtureError> {
        self.backing
            .local(&self.what(), "stop")?
            .lock()
            .await
            .stop()
            .await
    }

    /// SIGKILL and wait: an abrupt crash.
    ///
    /// # Errors
    ///
    /// [`FixtureError::NotControllable`] unless local.
    pub async fn kill(&self) -> Result<(), FixtureError> {
        self.backing
            .local(&self.what(), "kill")?
            .lock()
            .await
            .kill()
            .await
    }

    /// SIGSTOP: the server keeps its connections open but stops answering.
    ///
    /// # Errors
    ///
    /// [`FixtureError::NotControllable`] unless local, [`FixtureError::NotRunning`] when
    /// stopped.
    pub async fn pause(&self) -> Result<(), FixtureError> {
        self.backing
            .local(&self.what(), "pause")?
            .lock()
            .await
            .pause()
            .await
    }

    /// SIGCONT after [`pause`](Self::pause).
    ///
    /// # Errors
    ///
    /// As for [`pause`](Self::pause).
    pub async fn resume(&self) -> Result<(), FixtureError> {
        self.backing
            .local(&self.what(), "resume")?
            .lock()
            .await
            .resume()
            .await
    }

    /// Stops the server if it runs (gracefully), starts it again on the same port and
    /// directory, and waits until `PING` answers. Data survives only with
    /// [`RedisServerBuilder::appendonly`].
    ///
    /// # Errors
    ///
    /// [`FixtureError::NotControllable`] unless local; startup errors with the log tail.
    pub async fn restart(&self) -> Result<(), FixtureError> {
        self.backing
            .local(&self.what(), "restart")?
            .lock()
            .await
            .restart(self.startup_timeout)
            .await
    }

    /// Runs the readiness probe once (`PING`; with TLS through `redis-cli`).
    pub async fn is_ready(&self) -> bool {
        match &self.backing {
            Backing::Local(p) => p.lock().await.probe().await.is_ok(),
            _ => super::probe::redis_ping(&self.endpoint).await.is_ok(),
        }
    }

    /// Runs `redis-cli` against this server (with its TLS material and, if set, the
    /// default user's password) and returns stdout, e.g. `cli(&["GET", "k"])`.
    ///
    /// # Errors
    ///
    /// [`FixtureError::Unavailable`] without `redis-cli`; [`FixtureError::Command`] when
    /// it fails.
    pub async fn cli(&self, args: &[&str]) -> Result<String, FixtureError> {
        let bin = self.cli.as_deref().ok_or_else(|| {
            FixtureError::Unavailable(format!(
                "`redis-cli` not found (install redis-tools or set {ENV_REDIS_CLI_BIN})"
            ))
        })?;
        let (host, port) = self
            .endpoint
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
            .unwrap_or_else(|| ("127.0.0.1".into(), 6379));
        let creds = self
            .password
            .as_ref()
            .map(|p| Credentials::new("default", p));
        let mut argv = cli_args(port, self.tls.as_ref(), creds.as_ref());
        argv[1] = host.into();
        argv.extend(args.iter().map(OsString::from));
        let redact: Vec<&str> = self.password.iter().map(String::as_str).collect();
        run_command(bin, &argv, &[], &redact, CLI_TIMEOUT).await
    }
}
