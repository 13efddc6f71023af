//! etcd fixtures: a single server ([`EtcdServer`]) and a three-member cluster
//! ([`EtcdCluster`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::future::try_join_all;
use tempfile::TempDir;
use tokio::sync::Mutex;

use super::probe::{Probe, http_get};
use super::process::{Backing, ManagedProcess, run_command};
use super::{
    Credentials, DEFAULT_STARTUP_TIMEOUT, ENV_ETCD, ENV_ETCD_BIN, ENV_ETCDCTL_BIN, FixtureError,
    PORT_ATTEMPTS, ServerMode, TlsMaterial, find_binary, finish_temp_dir, free_ports, host_port,
    is_port_clash, make_temp_dir, random_namespace, random_u64, skip_or_panic,
};
use crate::proxy::{FaultProxy, FaultProxyHandle};

/// Timeout for one `etcdctl` invocation.
const ETCDCTL_TIMEOUT: Duration = Duration::from_secs(15);

/// A non-root etcd user whose role may read and write one key prefix only.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdUser {
    /// The user name (also used for its role, `role-<name>`). No `:` allowed.
    pub name: String,
    /// The password.
    pub password: String,
    /// The key prefix the user may read and write.
    pub prefix: String,
}

impl EtcdUser {
    /// The user's name and password.
    pub fn credentials(&self) -> Credentials {
        Credentials::new(&self.name, &self.password)
    }
}

impl std::fmt::Debug for EtcdUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdUser")
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Raft timing of spawned members.
#[derive(Clone, Copy, Debug)]
struct Timing {
    heartbeat: Duration,
    election: Duration,
}

/// Everything needed to spawn members.
struct LaunchOpts<'a> {
    bin: &'a Path,
    dir: &'a Path,
    tls: Option<&'a TlsMaterial>,
    timing: Timing,
    extra_args: &'a [String],
    timeout: Duration,
    /// Put a [`FaultProxy`] in front of each member's peer listener and advertise it.
    peer_proxies: bool,
}

/// The header in which etcd members name themselves (their member id in hex) on the
/// HTTP requests of their peer connections (raft streams and pipelines).
const PEER_FROM_HEADER: &str = "X-Server-From";

/// One spawned member's ports and paths.
#[derive(Clone, Debug)]
struct MemberSpec {
    name: String,
    client_port: u16,
    data_dir: PathBuf,
}

impl MemberSpec {
    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }
}

/// A spawned member with its peer proxy, if any.
type Launched = (MemberSpec, ManagedProcess, Option<FaultProxy>);

/// Spawns `n` members forming one new cluster and waits until all answer `/health`.
/// Picks new ports and retries when a member dies because its port was taken.
async fn launch_members(opts: &LaunchOpts<'_>, n: usize) -> Result<Vec<Launched>, FixtureError> {
    let scheme = if opts.tls.is_some() { "https" } else { "http" };
    let ports_per_member = if opts.tls.is_some() { 3 } else { 2 };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let ports = free_ports(n * ports_per_member)?;
        let token = format!("coord-test-{:08x}", random_u64() as u32);
        let peer_url = |i: usize| format!("http://127.0.0.1:{}", ports[i * ports_per_member + 1]);
        let mut proxies = Vec::with_capacity(n);
        for i in 0..n {
            proxies.push(if opts.peer_proxies {
                let upstream = format!("127.0.0.1:{}", ports[i * ports_per_member + 1]);
                Some(
                    FaultProxy::start_tagging(upstream, PEER_FROM_HEADER)
                        .await
                        .map_err(|e| FixtureError::io("starting a peer proxy", e))?,
                )
            } else {
                None
            });
        }
        // Other members reach member i (and it names itself to them) at this URL.
        let advertised = |i: usize| match &proxies[i] {
            Some(proxy) => format!("http://{}", proxy.addr()),
            None => peer_url(i),
        };
        let initial_cluster = (0..n)
            .map(|i| format!("n{i}={}", advertised(i)))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::with_capacity(n);
        for i in 0..n {
            let client_port = ports[i * ports_per_member];
            let name = format!("n{i}");
            let data_dir = opts.dir.join(format!("{name}.data"));
            // A failed earlier attempt may have left a half-initialised data dir.
            let _ = std::fs::remove_dir_all(&data_dir);
            let client_url = format!("{scheme}://127.0.0.1:{client_port}");
            let mut args: Vec<OsString> = [
                "--name",
                &name,
                "--data-dir",
                &data_dir.to_string_lossy(),
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
                "--listen-peer-urls",
                &peer_url(i),
                "--initial-advertise-peer-urls",
                &advertised(i),
                "--initial-cluster",
                &initial_cluster,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                &token,
                "--heartbeat-interval",
                &opts.timing.heartbeat.as_millis().to_string(),
                "--election-timeout",
                &opts.timing.election.as_millis().to_string(),
                "--logger",
                "zap",
                "--log-outputs",
                "stderr",
            ]
            .iter()
            .map(OsString::from)
            .collect();
            let probe = if let Some(tls) = opts.tls {
                // Plain-HTTP /health on the metrics listener: no TLS client needed.
                let metrics_port = ports[i * ports_per_member + 2];
                args.extend(
                    [
                        "--listen-metrics-urls".to_string(),
                        format!("http://127.0.0.1:{metrics_port}"),
                        "--cert-file".to_string(),
                        tls.server_cert_path().to_string_lossy().into_owned(),
                        "--key-file".to_string(),
                        tls.server_key_path().to_string_lossy().into_owned(),
                        "--trusted-ca-file".to_string(),
                        tls.ca_cert_path().to_string_lossy().into_owned(),
                        "--client-cert-auth".to_string(),
                    ]
                    .map(OsString::from),
                );
                Probe::EtcdHealth { port: metrics_port }
            } else {
                Probe::EtcdHealth { port: client_port }
            };
            if opts.peer_proxies {
                // A member cut off and back (or slowed) must not depose a healthy leader
                // with the terms it raised alone: that would end the scenario under test.
                args.push("--pre-vote".into());
            }
            args.extend(opts.extra_args.iter().map(OsString::from));
            let process = ManagedProcess::new(
                format!("etcd {name} (127.0.0.1:{client_port})"),
                opts.bin.to_path_buf(),
                args,
                opts.dir.to_path_buf(),
                opts.dir.join(format!("etcd-{name}.log")),
                probe,
                ports[i * ports_per_member..(i + 1) * ports_per_member].to_vec(),
            );
            members.push((
                MemberSpec {
                    name,
                    client_port,
                    data_dir,
                },
                process,
            ));
        }
        let mut spawned = Ok(());
        for (_, p) in members.iter_mut() {
            spawned = p.spawn();
            if spawned.is_err() {
                break;
            }
        }
        let result = match spawned {
            Ok(()) => try_join_all(members.iter_mut().map(|(_, p)| p.wait_ready(opts.timeout)))
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                return Ok(members
                    .into_iter()
                    .zip(proxies)
                    .map(|((spec, p), proxy)| (spec, p, proxy))
                    .collect());
            }
            Err(e) => {
                for (_, p) in members.iter_mut() {
                    let _ = p.kill().await;
                }
                if attempt < PORT_ATTEMPTS && is_port_clash(&e) {
                    tracing::debug!("etcd port clash, retrying on new ports: {e}");
                    continue;
                }
                return Err(e);
            }
        }
    }
}

fn no_etcd_binary() -> FixtureError {
    FixtureError::Unavailable(format!(
        "etcd: {ENV_ETCD} is not set and no `etcd` binary was found (install etcd-server or set {ENV_ETCD_BIN})"
    ))
}

/// Runs `etcdctl` against `url` with optional TLS material and credentials.
async fn etcdctl(
    bin: &Path,
    url: &str,
    tls: Option<&TlsMaterial>,
    user: Option<&Credentials>,
    args: &[&str],
) -> Result<String, FixtureError> {
    let mut argv: Vec<OsString> = vec![
        format!("--endpoints={url}").into(),
        "--dial-timeout=5s".into(),
        "--command-timeout=10s".into(),
    ];
    if let Some(tls) = tls {
        argv.push(format!("--cacert={}", tls.ca_cert_path().display()).into());
        argv.push(format!("--cert={}", tls.client_cert_path().display()).into());
        argv.push(format!("--key={}", tls.client_key_path().display()).into());
    }
    if let Some(u) = user {
        argv.push(format!("--user={}:{}", u.user, u.password).into());
    }
    argv.extend(args.iter().map(OsString::from));
    // Passwords may also travel in `user add NAME:PASSWORD` arguments.
    let redact: Vec<&str> = user
        .iter()
        .map(|u| u.password.as_str())
        .chain(
            args.iter()
                .filter_map(|a| a.split_once(':').map(|(_, pw)| pw)),
        )
        .collect();
    run_command(
        bin,
        &argv,
        &[("ETCDCTL_API", "3")],
        &redact,
        ETCDCTL_TIMEOUT,
    )
    .await
}

/// Builder for [`EtcdServer`]; see the [module docs](crate::servers) for how a server is
/// found.
#[derive(Clone, Debug)]
#[must_use]
pub struct EtcdServerBuilder {
    tls: bool,
    root_password: Option<String>,
    users: Vec<EtcdUser>,
    startup_timeout: Duration,
    local_only: bool,
    extra_args: Vec<String>,
    timing: Timing,
}

impl Default for EtcdServerBuilder {
    fn default() -> Self {
        Self {
            tls: false,
            root_password: None,
            users: Vec::new(),
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            local_only: false,
            extra_args: Vec::new(),
            // Only one member: a short election timeout makes startup fast and cannot
            // cause spurious elections.
            timing: Timing {
                heartbeat: Duration::from_millis(25),
                election: Duration::from_millis(250),
            },
        }
    }
}

impl EtcdServerBuilder {
    /// Serve clients over TLS with client certificate authentication, using freshly
    /// generated material (see [`EtcdServer::tls`]). Implies a local server.
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    /// Enable etcd authentication with a `root` user (role `root`) having this password.
    /// Needs the `etcdctl` binary. Implies a local server.
    pub fn auth(mut self, root_password: impl Into<String>) -> Self {
        self.root_password = Some(root_password.into());
        self
    }

    /// Add a non-root user whose role can only read and write keys under `prefix`.
    /// Enables authentication (with a random root password unless [`auth`](Self::auth)
    /// is also called).
    pub fn user(
        mut self,
        name: impl Into<String>,
        password: impl Into<String>,
        prefix: impl Into<String>,
    ) -> Self {
        self.users.push(EtcdUser {
            name: name.into(),
            password: password.into(),
            prefix: prefix.into(),
        });
        self
    }

    /// How long to wait for `/health` (default 10 s).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Ignore `COORD_TEST_ETCD` and Docker: spawn a local process the test can stop,
    /// kill, pause and restart.
    pub fn local_only(mut self) -> Self {
        self.local_only = true;
        self
    }

    /// Pass an extra command-line flag to etcd (e.g.
    /// `--experimental-watch-progress-notify-interval=100ms`). Implies a local server.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// Raft heartbeat interval and election timeout (default 25 ms / 250 ms for a single
    /// member).
    pub fn timing(mut self, heartbeat: Duration, election: Duration) -> Self {
        self.timing = Timing {
            heartbeat,
            election,
        };
        self
    }

    fn wants_local(&self) -> bool {
        self.local_only
            || self.tls
            || self.root_password.is_some()
            || !self.users.is_empty()
            || !self.extra_args.is_empty()
    }

    /// Resolves and starts the server.
    ///
    /// # Errors
    ///
    /// [`FixtureError::Unavailable`] when no server can be had; other variants when one
    /// was found but failed to start (with the log tail attached).
    pub async fn start(self) -> Result<EtcdServer, FixtureError> {
        if !self.wants_local()
            && let Some(eps) = std::env::var(ENV_ETCD)
                .ok()
                .filter(|s| !s.trim().is_empty())
        {
            return Ok(EtcdServer::external(&eps));
        }
        match find_binary(ENV_ETCD_BIN, "etcd") {
            Some(bin) => self.start_local(bin).await,
            #[cfg(feature = "docker")]
            None if !self.wants_local() => super::docker::start_etcd(self.startup_timeout).await,
            None => Err(no_etcd_binary()),
        }
    }

    /// Like [`start`](Self::start), but prints a skip line and returns `None` when etcd is
    /// unavailable (panics instead when `COORD_TEST_REQUIRE_BACKENDS=1`). Panics on any
    /// other startup failure.
    pub async fn start_or_skip(self) -> Option<EtcdServer> {
        skip_or_panic("etcd", self.start().await)
    }

    async fn start_local(self, bin: PathBuf) -> Result<EtcdServer, FixtureError> {
        let wants_auth = self.root_password.is_some() || !self.users.is_empty();
        let etcdctl_bin = find_binary(ENV_ETCDCTL_BIN, "etcdctl");
        if wants_auth && etcdctl_bin.is_none() {
            return Err(FixtureError::Unavailable(format!(
                "etcd auth needs `etcdctl` (install etcd-client or set {ENV_ETCDCTL_BIN})"
            )));
        }
        let dir = make_temp_dir("coord-etcd-")?;
        let tls = if self.tls {
            Some(TlsMaterial::generate(&dir.path().join("tls"))?)
        } else {
            None
        };
        let opts = LaunchOpts {
            bin: &bin,
            dir: dir.path(),
            tls: tls.as_ref(),
            timing: self.timing,
            extra_args: &self.extra_args,
            timeout: self.startup_timeout,
            peer_proxies: false,
        };
        let mut members = launch_members(&opts, 1).await?;
        let (spec, process, _) = members.remove(0);
        let root = wants_auth.then(|| {
            Credentials::new(
                "root",
                self.root_password
                    .clone()
                    .unwrap_or_else(|| format!("root-{:016x}", random_u64())),
            )
        });
        let server = EtcdServer {
            log_path: Some(process.log_path().to_path_buf()),
            backing: Backing::Local(Box::new(Mutex::new(process))),
            endpoints: vec![spec.endpoint()],
            scheme: if tls.is_some() { "https" } else { "http" },
            namespace: random_namespace(),
            tls,
            root,
            users: self.users,
            data_dir: Some(spec.data_dir),
            startup_timeout: self.startup_timeout,
            etcdctl_bin,
            dir: Some(dir),
        };
        if wants_auth {
            server.enable_auth().await?;
        }
        Ok(server)
    }
}

/// A single etcd server for one test: external (env), a local child process, or a
/// container. See the [module docs](crate::servers).
///
/// ```no_run
/// # async fn t() {
/// use coord_testkit::EtcdServer;
/// let Some(etcd) = EtcdServer::start_or_skip().await else { return };
/// let url = etcd.url(); // "http://127.0.0.1:PORT"
/// let prefix = etcd.namespace(); // keep all keys under this
/// etcd.kill().await.unwrap();
/// etcd.restart().await.unwrap(); // same port, same data dir
/// # let _ = (url, prefix); }
/// ```
#[derive(Debug)]
pub struct EtcdServer {
    backing: Backing,
    endpoints: Vec<String>,
    scheme: &'static str,
    namespace: String,
    tls: Option<TlsMaterial>,
    root: Option<Credentials>,
    users: Vec<EtcdUser>,
    data_dir: Option<PathBuf>,
    log_path: Option<PathBuf>,
    startup_timeout: Duration,
    etcdctl_bin: Option<PathBuf>,
    // Last, so the process is gone before the directory is removed.
    dir: Option<TempDir>,
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.backing.start_kill();
        finish_temp_dir(self.dir.take(), "etcd fixture");
    }
}

impl EtcdServer {
    /// A builder with TLS, auth and other options.
    pub fn builder() -> EtcdServerBuilder {
        EtcdServerBuilder::default()
    }

    /// Starts a plain server with default options.
    ///
    /// # Errors
    ///
    /// See [`EtcdServerBuilder::start`].
    pub async fn start() -> Result<Self, FixtureError> {
        Self::builder().start().await
    }

    /// Starts a plain server, or skips; see [`EtcdServerBuilder::start_or_skip`].
    pub async fn start_or_skip() -> Option<Self> {
        Self::builder().start_or_skip().await
    }

    pub(crate) fn external(spec: &str) -> Self {
        let parts: Vec<&str> = spec
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let scheme = if parts.first().is_some_and(|p| p.starts_with("https://")) {
            "https"
        } else {
            "http"
        };
        Self {
            backing: Backing::External,
            endpoints: parts.iter().map(|p| host_port(p)).collect(),
            scheme,
            namespace: random_namespace(),
            tls: None,
            root: None,
            users: Vec::new(),
            data_dir: None,
            log_path: None,
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            etcdctl_bin: find_binary(ENV_ETCDCTL_BIN, "etcdctl"),
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

    /// The client endpoint as `host:port`, e.g. `127.0.0.1:23791`.
    pub fn endpoint(&self) -> &str {
        &self.endpoints[0]
    }

    /// All client endpoints (several only for an external multi-endpoint spec).
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The client URL, `http://127.0.0.1:PORT` (`https://` with TLS).
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.endpoint())
    }

    /// All client URLs.
    pub fn urls(&self) -> Vec<String> {
        self.endpoints
            .iter()
            .map(|e| format!("{}://{e}", self.scheme))
            .collect()
    }

    /// A random key prefix unique to this fixture (`coord-test/<hex>/`). Tests must keep
    /// their keys under it so they can share an external server.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The etcd data dir (local mode only).
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

    /// The TLS material when built with [`EtcdServerBuilder::tls`]: connect with
    /// [`TlsMaterial::ca_cert_pem`] as the root and the client certificate and key.
    pub fn tls(&self) -> Option<&TlsMaterial> {
        self.tls.as_ref()
    }

    /// The `root` credentials when authentication is enabled.
    pub fn root_credentials(&self) -> Option<&Credentials> {
        self.root.as_ref()
    }

    /// The prefix-limited users added with [`EtcdServerBuilder::user`].
    pub fn users(&self) -> &[EtcdUser] {
        &self.users
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
        format!("etcd at {}", self.endpoint())
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

    /// SIGKILL and wait: an abrupt crash; the data dir stays for [`restart`](Self::restart).
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

    /// SIGSTOP: the server keeps its connections open but stops answering (a hung
    /// server, or a GC pause).
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
    /// data dir, and waits until `/health` answers.
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

    /// Runs the readiness probe once (`GET /health`; for servers the fixture does not
    /// own, plain HTTP on [`endpoint`](Self::endpoint)).
    pub async fn is_ready(&self) -> bool {
        match &self.backing {
            Backing::Local(p) => p.lock().await.probe().await.is_ok(),
            _ => super::probe::etcd_health(self.endpoint()).await.is_ok(),
        }
    }

    /// Runs `etcdctl` (API v3) against this server with its TLS material and, when auth
    /// is on, the root credentials; returns stdout. Handy to inspect or seed server state.
    ///
    /// # Errors
    ///
    /// [`FixtureError::Unavailable`] without `etcdctl`; [`FixtureError::Command`] when
    /// it fails.
    pub async fn etcdctl(&self, args: &[&str]) -> Result<String, FixtureError> {
        self.etcdctl_as(self.root.as_ref(), args).await
    }

    /// Like [`etcdctl`](Self::etcdctl) but as `user` (`None`: no credentials).
    ///
    /// # Errors
    ///
    /// As for [`etcdctl`](Self::etcdctl).
    pub async fn etcdctl_as(
        &self,
        user: Option<&Credentials>,
        args: &[&str],
    ) -> Result<String, FixtureError> {
        let bin = self.etcdctl_bin.as_deref().ok_or_else(|| {
            FixtureError::Unavailable(format!(
                "`etcdctl` not found (install etcd-client or set {ENV_ETCDCTL_BIN})"
            ))
        })?;
        etcdctl(bin, &self.urls().join(","), self.tls.as_ref(), user, args).await
    }

    /// Creates root (and the prefix users) and enables authentication.
    async fn enable_auth(&self) -> Result<(), FixtureError> {
        let Some(bin) = self.etcdctl_bin.as_deref() else {
            return Ok(());
        };
        let Some(root) = &self.root else {
            return Ok(());
        };
        let url = self.url();
        let tls = self.tls.as_ref();
        let root_spec = format!("root:{}", root.password);
        etcdctl(bin, &url, tls, None, &["user", "add", &root_spec]).await?;
        etcdctl(bin, &url, tls, None, &["role", "add", "root"]).await?;
        etcdctl(
            bin,
            &url,
            tls,
            None,
            &["user", "grant-role", "root", "root"],
        )
        .await?;
        for u in &self.users {
            let role = format!("role-{}", u.name);
            let user_spec = format!("{}:{}", u.name, u.password);
            etcdctl(bin, &url, tls, None, &["role", "add", &role]).await?;
            etcdctl(
                bin,
                &url,
                tls,
                None,
                &[
                    "role",
                    "grant-permission",
                    &role,
                    "--prefix=true",
                    "readwrite",
                    &u.prefix,
                ],
            )
            .await?;
            etcdctl(bin, &url, tls, None, &["user", "add", &user_spec]).await?;
            etcdctl(
                bin,
                &url,
                tls,
                None,
                &["user", "grant-role", &u.name, &role],
            )
            .await?;
        }
        etcdctl(bin, &url, tls, None, &["auth", "enable"]).await?;
        Ok(())
    }
}

/// Builder for [`EtcdCluster`].
#[derive(Clone, Debug)]
#[must_use]
pub struct EtcdClusterBuilder {
    members: usize,
    startup_timeout: Duration,
    extra_args: Vec<String>,
    timing: Timing,
    peer_proxies: bool,
}

impl Default for EtcdClusterBuilder {
    fn default() -> Self {
        Self {
            members: 3,
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            extra_args: Vec::new(),
            // etcd's defaults: robust on a busy 2-core machine.
            timing: Timing {
                heartbeat: Duration::from_millis(100),
                election: Duration::from_millis(1000),
            },
            peer_proxies: false,
        }
    }
}

impl EtcdClusterBuilder {
    /// Route the members' peer (raft) traffic through fault proxies: each member listens
    /// on a peer port of its own but advertises a [`FaultProxy`] in front of it, which
    /// [`EtcdCluster::peer_link`] returns. etcd's raft transport carries member i's
    /// messages on connections the *other* members open to i's advertised URL (plus
    /// pipeline requests that others send to it), so that proxy's latency delays what
    /// member i says, proposals it forwards to the leader included, and its blackhole
    /// mutes i (i still hears the others). [`EtcdCluster::isolate_member`] cuts both ways.
    /// Such members run with `--pre-vote`, so that a member cut off and back does not
    /// depose the leader.
    pub fn peer_proxies(mut self, on: bool) -> Self {
        self.peer_proxies = on;
        self
    }

    /// Number of members (default 3).
    pub fn members(mut self, n: usize) -> Self {
        self.members = n.max(1);
        self
    }

    /// How long to wait for every member's `/health` (default 10 s).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Pass an extra flag to every member.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// Raft heartbeat interval and election timeout (default 100 ms / 1000 ms).
    pub fn timing(mut self, heartbeat: Duration, election: Duration) -> Self {
        self.timing = Timing {
            heartbeat,
            election,
        };
        self
    }

    /// Spawns the members locally (a cluster never uses env endpoints or Docker).
    ///
    /// # Errors
    ///
    /// [`FixtureError::Unavailable`] without an `etcd` binary; startup errors otherwise.
    pub async fn start(self) -> Result<EtcdCluster, FixtureError> {
        let bin = find_binary(ENV_ETCD_BIN, "etcd").ok_or_else(|| {
            FixtureError::Unavailable(format!(
                "etcd cluster: no `etcd` binary found (install etcd-server or set {ENV_ETCD_BIN})"
            ))
        })?;
        let dir = make_temp_dir("coord-etcd-cluster-")?;
        let opts = LaunchOpts {
            bin: &bin,
            dir: dir.path(),
            tls: None,
            timing: self.timing,
            extra_args: &self.extra_args,
            timeout: self.startup_timeout,
            peer_proxies: self.peer_proxies,
        };
        let launched = launch_members(&opts, self.members).await?;
        let mut members = Vec::with_capacity(launched.len());
        for (spec, p, peer_proxy) in launched {
            let id = match member_metrics(&spec.endpoint()).await {
                Ok(m) => m.id,
                Err(e) => {
                    return Err(FixtureError::Command {
                        command: format!("GET http://{}/metrics", spec.endpoint()),
                        status: "no etcd_server_id".into(),
                        output: e,
                    });
                }
            };
            members.push(ClusterMember {
                log_path: p.log_path().to_path_buf(),
                spec,
                id,
                peer_proxy,
                process: Mutex::new(p),
            });
        }
        Ok(EtcdCluster {
            members,
            namespace: random_namespace(),
            startup_timeout: self.startup_timeout,
            timing: self.timing,
            dir: Some(dir),
        })
    }

    /// Like [`start`](Self::start) but skips (or panics when backends are required).
    pub async fn start_or_skip(self) -> Option<EtcdCluster> {
        skip_or_panic("etcd cluster", self.start().await)
    }
}

#[derive(Debug)]
struct ClusterMember {
    spec: MemberSpec,
    /// The member id, in hex as etcd prints it.
    id: String,
    log_path: PathBuf,
    peer_proxy: Option<FaultProxy>,
    process: Mutex<ManagedProcess>,
}

/// What a cluster member says about itself (from its `/metrics`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    /// The member id in hex, as etcd prints it.
    pub id: String,
    /// Whether the member knows a leader (etcd refuses requests that require one when not).
    pub has_leader: bool,
    /// Whether the member is the leader.
    pub is_leader: bool,
}

/// Reads a member's id and leader state from its `/metrics` (no raft round trip, so an
/// isolated member answers too).
async fn member_metrics(endpoint: &str) -> Result<MemberStatus, String> {
    let body = http_get(endpoint, "/metrics").await?;
    let gauge = |name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .map(|v| v.trim() == "1")
    };
    let id = body
        .lines()
        .find_map(|l| l.strip_prefix("etcd_server_id{server_id=\""))
        .and_then(|rest| rest.split_once('"'))
        .map(|(id, _)| id.to_owned());
    match (
        id,
        gauge("etcd_server_has_leader"),
        gauge("etcd_server_is_leader"),
    ) {
        (Some(id), Some(has_leader), Some(is_leader)) => Ok(MemberStatus {
            id,
            has_leader,
            is_leader,
        }),
        _ => Err(format!(
            "{endpoint}/metrics lacks etcd_server_id, etcd_server_has_leader or etcd_server_is_leader"
        )),
    }
}

/// A local multi-member etcd cluster (3 members by default) on loopback ports.
///
/// Member indexes run from `0` to `len() - 1`; methods taking an index panic when it is
/// out of range. A member answers `/health` only while the cluster has a quorum, so
/// restarting a member of a cluster without quorum waits in vain unless enough members
/// are restarted together ([`restart_members`](Self::restart_members)).
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<ClusterMember>,
    namespace: String,
    startup_timeout: Duration,
    timing: Timing,
    dir: Option<TempDir>,
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            m.process.get_mut().start_kill();
        }
        finish_temp_dir(self.dir.take(), "etcd cluster fixture");
    }
}

impl EtcdCluster {
    /// A builder.
    pub fn builder() -> EtcdClusterBuilder {
        EtcdClusterBuilder::default()
    }

    /// Starts a 3-member cluster.
    ///
    /// # Errors
    ///
    /// See [`EtcdClusterBuilder::start`].
    pub async fn start() -> Result<Self, FixtureError> {
        Self::builder().start().await
    }

    /// Starts a 3-member cluster or skips.
    pub async fn start_or_skip() -> Option<Self> {
        Self::builder().start_or_skip().await
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always `false` (a cluster has at least one member).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Every member's client endpoint as `host:port`.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.spec.endpoint()).collect()
    }

    /// Every member's client URL (`http://127.0.0.1:PORT`).
    pub fn urls(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://{}", m.spec.endpoint()))
            .collect()
    }

    /// Member `i`'s client endpoint.
    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].spec.endpoint()
    }

    /// Member `i`'s client URL.
    pub fn url(&self, i: usize) -> String {
        format!("http://{}", self.members[i].spec.endpoint())
    }

    /// Member `i`'s name (`n0`, `n1`, ...).
    pub fn member_name(&self, i: usize) -> &str {
        &self.members[i].spec.name
    }

    /// A random key prefix unique to this fixture.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Member `i`'s id in hex, as etcd prints it (`etcdctl member list -w table`).
    pub fn member_id(&self, i: usize) -> &str {
        &self.members[i].id
    }

    /// Whether the cluster was built with [`EtcdClusterBuilder::peer_proxies`].
    pub fn has_peer_proxies(&self) -> bool {
        self.members.iter().all(|m| m.peer_proxy.is_some())
    }

    /// The fault proxy in front of member `i`'s peer listener: its latency delays what
    /// member `i` says to the others (a slow follower: proposals it forwards land late),
    /// its blackhole mutes member `i`; see [`EtcdClusterBuilder::peer_proxies`].
    ///
    /// # Panics
    ///
    /// When the cluster was built without peer proxies.
    pub fn peer_link(&self, i: usize) -> FaultProxyHandle {
        self.members[i]
            .peer_proxy
            .as_ref()
            .expect("EtcdCluster::peer_link needs EtcdClusterBuilder::peer_proxies(true)")
            .handle()
    }

    /// Cuts member `i` off from the others both ways: what it says (its peer proxy) and
    /// what it hears (its connections through the others' peer proxies). It loses its
    /// leader after an election timeout, keeps campaigning in vain, and stops serving
    /// linearizable requests; its clients stay connected. Held raft messages are delivered
    /// on [`rejoin_member`](Self::rejoin_member).
    ///
    /// # Panics
    ///
    /// When the cluster was built without peer proxies.
    pub fn isolate_member(&self, i: usize) {
        self.set_isolated(i, true);
    }

    /// Undoes [`isolate_member`](Self::isolate_member) (and a blackhole of
    /// [`peer_link(i)`](Self::peer_link)).
    ///
    /// # Panics
    ///
    /// When the cluster was built without peer proxies.
    pub fn rejoin_member(&self, i: usize) {
        self.set_isolated(i, false);
    }

    fn set_isolated(&self, i: usize, isolated: bool) {
        let id = self.member_id(i).to_owned();
        for j in 0..self.len() {
            let link = self.peer_link(j);
            match (j == i, isolated) {
                (true, true) => link.blackhole(),
                (true, false) => link.heal(),
                (false, true) => link.blackhole_tag(&id),
                (false, false) => link.heal_tag(&id),
            }
        }
    }

    /// What member `i` says about itself: its id and whether it has or is the leader.
    ///
    /// # Errors
    ///
    /// [`FixtureError::Command`] when its `/metrics` does not answer (it is down or
    /// paused).
    pub async fn member_status(&self, i: usize) -> Result<MemberStatus, FixtureError> {
        let endpoint = self.endpoint(i);
        member_metrics(&endpoint)
            .await
            .map_err(|e| FixtureError::Command {
                command: format!("GET http://{endpoint}/metrics"),
                status: "failed".into(),
                output: e,
            })
    }

    /// The index of the leader, once the cluster has settled on one: every member that
    /// answers knows a leader, exactly one says it leads, and it has kept leading for an
    /// election timeout (members that start apart can depose the first leader they
    /// elect). Waits up to the startup timeout.
    ///
    /// # Errors
    ///
    /// [`FixtureError::NotReady`] when no leader settles within the startup timeout.
    pub async fn leader(&self) -> Result<usize, FixtureError> {
        let deadline = tokio::time::Instant::now() + self.startup_timeout;
        let mut since: Option<(usize, tokio::time::Instant)> = None;
        loop {
            let mut leaders = Vec::new();
            let mut leaderless = false;
            let mut seen = Vec::new();
            for i in 0..self.len() {
                match self.member_status(i).await {
                    Ok(s) => {
                        if s.is_leader {
                            leaders.push(i);
                        }
                        leaderless |= !s.has_leader;
                        seen.push(format!("{}: {s:?}", self.member_name(i)));
                    }
                    Err(e) => seen.push(format!("{}: {e}", self.member_name(i))),
                }
            }
            let now = tokio::time::Instant::now();
            since = match (&leaders[..], leaderless, since) {
                (&[leader], false, Some((l, t))) if l == leader => {
                    if now.duration_since(t) >= self.timing.election {
                        return Ok(leader);
                    }
                    Some((l, t))
                }
                (&[leader], false, _) => Some((leader, now)),
                _ => None,
            };
            if now >= deadline {
                return Err(FixtureError::NotReady {
                    what: "etcd cluster leader".into(),
                    timeout: self.startup_timeout,
                    last_probe: seen.join("; "),
                    log_tail: String::new(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Member `i`'s data dir.
    pub fn data_dir(&self, i: usize) -> &Path {
        &self.members[i].spec.data_dir
    }

    /// The last lines of member `i`'s log.
    pub fn log_tail(&self, i: usize) -> String {
        super::read_log_tail(&self.members[i].log_path, super::process::LOG_TAIL_LINES)
    }

    /// Member `i`'s pid while it runs.
    pub async fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].process.lock().await.pid()
    }

    /// Whether member `i`'s process is alive.
    pub async fn is_member_running(&self, i: usize) -> bool {
        self.members[i].process.lock().await.is_running()
    }

    /// SIGTERM member `i` and wait.
    ///
    /// # Errors
    ///
    /// Signal or wait failures.
    pub async fn stop_member(&self, i: usize) -> Result<(), FixtureError> {
        self.members[i].process.lock().await.stop().await
    }

    /// SIGKILL member `i` and wait.
    ///
    /// # Errors
    ///
    /// Wait failures.
    pub async fn kill_member(&self, i: usize) -> Result<(), FixtureError> {
        self.members[i].process.lock().await.kill().await
    }

    /// SIGSTOP member `i`.
    ///
    /// # Errors
    ///
    /// [`FixtureError::NotRunning`] when it is stopped.
    pub async fn pause_member(&self, i: usize) -> Result<(), FixtureError> {
        self.members[i].process.lock().await.pause().await
    }

    /// SIGCONT member `i`.
    ///
    /// # Errors
    ///
    /// [`FixtureError::NotRunning`] when it is stopped.
    pub async fn resume_member(&self, i: usize) -> Result<(), FixtureError> {
        self.members[i].process.lock().await.resume().await
    }

    /// Stops member `i` if it runs, starts it again on the same ports and data dir, and
    /// waits for its `/health` (which needs a quorum).
    ///
    /// # Errors
    ///
    /// Startup errors with the log tail.
    pub async fn restart_member(&self, i: usize) -> Result<(), FixtureError> {
        self.restart_members(&[i]).await
    }

    /// Whether member `i` answers `/health` (it is up and the cluster has a quorum).
    pub async fn is_member_ready(&self, i: usize) -> bool {
        self.members[i].process.lock().await.probe().await.is_ok()
    }

    /// Runs `etcdctl` (API v3) against all members' endpoints; returns stdout.
    ///
    /// # Errors
    ///
    /// [`FixtureError::Unavailable`] without `etcdctl`; [`FixtureError::Command`] when
    /// it fails.
    pub async fn etcdctl(&self, args: &[&str]) -> Result<String, FixtureError> {
        let bin = find_binary(ENV_ETCDCTL_BIN, "etcdctl").ok_or_else(|| {
            FixtureError::Unavailable(format!(
                "`etcdctl` not found (install etcd-client or set {ENV_ETCDCTL_BIN})"
            ))
        })?;
        etcdctl(&bin, &self.urls().join(","), None, None, args).await
    }

    /// Restarts several members at once (spawn all, then wait for all), e.g. to bring a
    /// cluster that lost its quorum back.
    ///
    /// # Errors
    ///
    /// Startup errors with the log tail.
    pub async fn restart_members(&self, indexes: &[usize]) -> Result<(), FixtureError> {
        let mut indexes = indexes.to_vec();
        indexes.sort_unstable();
        indexes.dedup();
        let mut guards = Vec::with_capacity(indexes.len());
        for i in indexes {
            guards.push(self.members[i].process.lock().await);
        }
        for g in guards.iter_mut() {
            g.stop().await?;
            g.spawn()?;
        }
        let timeout = self.startup_timeout;
        try_join_all(guards.iter_mut().map(|g| g.wait_ready(timeout))).await?;
        Ok(())
    }
}
