//! `connect(url)`: a backend chosen by URL, each scheme behind its cargo feature.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use coord_core::{
    CoordinationBackend, DEFAULT_SESSION_TTL, Error, Result, Session, SessionBuilder,
};

/// Default etcd client port, used when an `etcd://` host has none.
pub const DEFAULT_ETCD_PORT: u16 = 2379;
/// Default Redis port, used when a `redis://` host has none.
pub const DEFAULT_REDIS_PORT: u16 = 6379;

/// Connects to the backend a URL names, with the options in its query string.
///
/// | URL | backend | cargo feature |
/// |---|---|---|
/// | `memory://` or `memory://NAME` | an in-process store named `NAME` (default `default`), shared by every `connect` of the process that names it | `memory` (default) |
/// | `etcd://HOST[:PORT][,HOST[:PORT]...]` | etcd v3 over plain HTTP/2 (port 2379 by default) | `etcd` |
/// | `etcds://HOST[:PORT][,...]` | etcd v3 over TLS | `etcd` |
/// | `redis://[USER:PASSWORD@]HOST[:PORT][/DB]` | Redis >= 7 (port 6379 by default) | `redis` |
/// | `rediss://...` | Redis over TLS | `redis` |
///
/// Query parameters (all optional; see [`ConnectOptions`] for the builder methods that set
/// the same things): `namespace` (a key prefix, usually ending in `/`), `ttl` (the session
/// TTL, `10`, `10s`, `500ms`, `2m`), `user` and `password` (prefer the `USER:PASSWORD@`
/// form), `cacert`, `cert`, `key` (PEM files for TLS, as `etcdctl` names them),
/// `tls_domain` (the name to check the server certificate against), `connect_timeout`
/// and `request_timeout` (durations). Reserved characters in values are percent-encoded.
///
/// ```
/// # #[cfg(feature = "memory")]
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> coord::Result<()> {
/// let conn = coord::connect("memory://doc-example?ttl=5s").await?;
/// let session = conn.session().await?; // a session with the URL's ttl
/// let guard = coord::Mutex::new(&session, "jobs").lock().await?;
/// assert_eq!(guard.fencing_token() > 0, true);
/// # guard.unlock().await?;
/// # session.close().await?;
/// # Ok(())
/// # }
/// # #[cfg(not(feature = "memory"))]
/// # fn main() {}
/// ```
///
/// # Errors
/// [`Error::InvalidArgument`] naming what is wrong with the URL (never echoing a password),
/// or naming the cargo feature to enable when the scheme's backend is not compiled in;
/// the backend's own connect errors ([`Error::Unavailable`] when no server answers,
/// [`Error::Unauthenticated`] for wrong credentials).
pub async fn connect(url: &str) -> Result<Connection> {
    ConnectOptions::parse(url)?.connect().await
}

/// A connected backend and the session settings that came with its URL.
///
/// The backend is an `Arc<dyn CoordinationBackend>`: every recipe takes it through a
/// [`Session`]. [`Connection::session`] starts one with the URL's `ttl` (or
/// [`DEFAULT_SESSION_TTL`]). Cloning a connection shares the backend.
#[derive(Clone)]
pub struct Connection {
    backend: Arc<dyn CoordinationBackend>,
    session_ttl: Duration,
    description: String,
    #[cfg(feature = "memory")]
    memory: Option<coord_memory::MemoryBackend>,
}

impl Connection {
    /// Wraps a backend made by hand (e.g. a configured `MemoryBackend` in a test), with the
    /// session TTL that [`Connection::session`] should use.
    pub fn new(backend: Arc<dyn CoordinationBackend>, session_ttl: Duration) -> Self {
        let description = format!("{}://", backend.info().name);
        Connection {
            backend,
            session_ttl,
            description,
            #[cfg(feature = "memory")]
            memory: None,
        }
    }

    /// Wraps an in-memory backend made by hand, keeping its fault hooks reachable through
    /// [`Connection::memory`].
    #[cfg(feature = "memory")]
    pub fn from_memory(backend: coord_memory::MemoryBackend, session_ttl: Duration) -> Self {
        let mut conn = Connection::new(Arc::new(backend.clone()), session_ttl);
        conn.memory = Some(backend);
        conn
    }

    /// The backend, to build sessions on or call directly.
    pub fn backend(&self) -> &Arc<dyn CoordinationBackend> {
        &self.backend
    }

    /// The backend, consuming the connection.
    pub fn into_backend(self) -> Arc<dyn CoordinationBackend> {
        self.backend
    }

    /// The session TTL: the URL's `ttl`, or [`DEFAULT_SESSION_TTL`] (60 s) when none was
    /// given.
    pub fn session_ttl(&self) -> Duration {
        self.session_ttl
    }

    /// A session builder on this backend with [`Connection::session_ttl`] set.
    pub fn session_builder(&self) -> SessionBuilder {
        Session::builder(self.backend.clone()).ttl(self.session_ttl)
    }

    /// Starts a session with [`Connection::session_ttl`].
    ///
    /// # Errors
    /// As [`SessionBuilder::start`].
    ///
    /// # Cancel safety
    /// Not cancel safe: a lease granted by a dropped call is left to expire.
    pub async fn session(&self) -> Result<Session> {
        self.session_builder().start().await
    }

    /// The backend's short name: `"memory"`, `"etcd"`, `"redis"`.
    pub fn backend_name(&self) -> &'static str {
        self.backend.info().name
    }

    /// The in-memory backend behind a `memory://` connection, for its fault hooks
    /// (`expire_lease_now`, `partition`, ...). `None` for other backends.
    #[cfg(feature = "memory")]
    pub fn memory(&self) -> Option<&coord_memory::MemoryBackend> {
        self.memory.as_ref()
    }
}

/// The URL the connection was made from, with any password replaced by `***`.
impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description)
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("url", &self.description)
            .field("backend", &self.backend)
            .field("session_ttl", &self.session_ttl)
            .finish()
    }
}

/// What a URL names (no secrets: credentials live in [`ConnectOptions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Memory {
        store: String,
    },
    Etcd {
        /// `host:port`, IPv6 hosts in brackets.
        endpoints: Vec<String>,
        tls: bool,
    },
    Redis {
        host: String,
        port: u16,
        db: u32,
        tls: bool,
    },
}

impl Target {
    fn scheme(&self) -> &'static str {
        match self {
            Target::Memory { .. } => "memory",
            Target::Etcd { tls: false, .. } => "etcd",
            Target::Etcd { tls: true, .. } => "etcds",
            Target::Redis { tls: false, .. } => "redis",
            Target::Redis { tls: true, .. } => "rediss",
        }
    }
}

/// Connection settings: parsed from a URL with [`ConnectOptions::parse`], adjusted with
/// the builder methods (which override what the URL's query string said), then
/// [`connect`](ConnectOptions::connect)ed. Clone it to connect again (e.g. one connection
/// per worker).
///
/// ```
/// # fn main() -> coord::Result<()> {
/// use std::time::Duration;
///
/// let options = coord::ConnectOptions::parse("etcd://10.0.0.1:2379,10.0.0.2:2379")?
///     .namespace("myapp/")
///     .ttl(Duration::from_secs(15))
///     .user("alice", "s3cret");
/// assert_eq!(options.scheme(), "etcd");
/// assert!(!format!("{options:?}").contains("s3cret"));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
#[must_use = "options do nothing until `connect` is called"]
pub struct ConnectOptions {
    target: Target,
    namespace: Option<String>,
    ttl: Option<Duration>,
    user: Option<String>,
    password: Option<String>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    tls_domain: Option<String>,
    connect_timeout: Option<Duration>,
    request_timeout: Option<Duration>,
}

impl ConnectOptions {
    /// Parses a backend URL (see [`connect`] for the forms and query parameters).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the part of the URL that is wrong: no or unknown
    /// scheme, a bad host or port, an unknown query parameter, a bad duration, TLS files
    /// on a plain-text scheme. A password is never repeated in the message.
    pub fn parse(url: &str) -> Result<Self> {
        parse_url(url)
    }

    /// Prefixes every key with `prefix` (usually ending in `/`), so that applications can
    /// share one cluster. On `memory://` a namespace selects a separate in-process store.
    pub fn namespace(mut self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        self.namespace = (!prefix.is_empty()).then_some(prefix);
        self
    }

    /// The session TTL [`Connection::session`] asks for.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Authenticates as `user` with `password`. The password is never printed.
    pub fn user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self.password = Some(password.into());
        self
    }

    /// Trusts this CA certificate (PEM file) for the server's TLS certificate. Needs a TLS
    /// scheme (`etcds://`, `rediss://`).
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Presents this client certificate and key (PEM files) for mutual TLS. Needs a TLS
    /// scheme.
    pub fn client_cert_files(
        mut self,
        cert_path: impl Into<PathBuf>,
        key_path: impl Into<PathBuf>,
    ) -> Self {
        self.cert_file = Some(cert_path.into());
        self.key_file = Some(key_path.into());
        self
    }

    /// Checks the server certificate against this name instead of the host in the URL.
    pub fn tls_domain(mut self, name: impl Into<String>) -> Self {
        self.tls_domain = Some(name.into());
        self
    }

    /// Time allowed to reach the server.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Time allowed for each request (never for the lifetime of a watch).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// The URL scheme: `memory`, `etcd`, `etcds`, `redis` or `rediss`.
    pub fn scheme(&self) -> &'static str {
        self.target.scheme()
    }

    /// The namespace prefix, if any.
    pub fn namespace_prefix(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The session TTL, if one was given.
    pub fn session_ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// The URL these options describe, with the password replaced by `***` and the
    /// options that differ from the defaults in the query string.
    pub fn redacted_url(&self) -> String {
        let mut s = format!("{}://", self.scheme());
        if let Some(user) = &self.user {
            s.push_str(&percent_encode(user));
            if self.password.is_some() {
                s.push_str(":***");
            }
            s.push('@');
        } else if self.password.is_some() {
            s.push_str(":***@");
        }
        match &self.target {
            Target::Memory { store } => {
                if store != "default" {
                    s.push_str(store);
                }
            }
            Target::Etcd { endpoints, .. } => s.push_str(&endpoints.join(",")),
            Target::Redis { host, port, db, .. } => {
                s.push_str(&format!("{host}:{port}"));
                if *db != 0 {
                    s.push_str(&format!("/{db}"));
                }
            }
        }
        let mut query = Vec::new();
        if let Some(ns) = &self.namespace {
            query.push(format!("namespace={}", percent_encode(ns)));
        }
        if let Some(ttl) = self.ttl {
            query.push(format!("ttl={}", format_duration(ttl)));
        }
        for (name, path) in [
            ("cacert", &self.ca_file),
            ("cert", &self.cert_file),
            ("key", &self.key_file),
        ] {
            if let Some(p) = path {
                query.push(format!("{name}={}", percent_encode(&p.to_string_lossy())));
            }
        }
        if let Some(d) = &self.tls_domain {
            query.push(format!("tls_domain={}", percent_encode(d)));
        }
        for (name, t) in [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if let Some(t) = t {
                query.push(format!("{name}={}", format_duration(t)));
            }
        }
        if !query.is_empty() {
            s.push('?');
            s.push_str(&query.join("&"));
        }
        s
    }

    /// Connects.
    ///
    /// # Errors
    /// As [`connect`].
    pub async fn connect(self) -> Result<Connection> {
        self.check_tls()?;
        let description = self.redacted_url();
        let session_ttl = self.ttl.unwrap_or(DEFAULT_SESSION_TTL);
        let mut conn = match &self.target {
            Target::Memory { store } => self.connect_memory(store)?,
            Target::Etcd { endpoints, tls } => self.connect_etcd(endpoints, *tls).await?,
            Target::Redis { .. } => self.connect_redis().await?,
        };
        conn.session_ttl = session_ttl;
        conn.description = description;
        Ok(conn)
    }

    fn check_tls(&self) -> Result<()> {
        let tls = matches!(
            self.target,
            Target::Etcd { tls: true, .. } | Target::Redis { tls: true, .. }
        );
        let given = [
            ("cacert", self.ca_file.is_some()),
            ("cert", self.cert_file.is_some()),
            ("key", self.key_file.is_some()),
            ("tls_domain", self.tls_domain.is_some()),
        ];
        if let Some((name, _)) = given.iter().find(|(_, on)| *on)
            && !tls
        {
            let hint = match self.target {
                Target::Etcd { .. } => " (use etcds:// for TLS)",
                Target::Redis { .. } => " (use rediss:// for TLS)",
                Target::Memory { .. } => "",
            };
            return Err(Error::invalid_argument(format!(
                "backend URL: TLS option `{name}` given for the plain-text scheme {}://{hint}",
                self.scheme()
            )));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(Error::invalid_argument(
                "backend URL: a client certificate needs both `cert` and `key`",
            ));
        }
        if matches!(self.target, Target::Memory { .. })
            && (self.user.is_some() || self.password.is_some())
        {
            return Err(Error::invalid_argument(
                "backend URL: memory:// takes no credentials",
            ));
        }
        Ok(())
    }

    #[cfg(feature = "memory")]
    fn connect_memory(&self, store: &str) -> Result<Connection> {
        use std::collections::HashMap;
        use std::sync::{Mutex, OnceLock, PoisonError};
        static STORES: OnceLock<Mutex<HashMap<String, coord_memory::MemoryBackend>>> =
            OnceLock::new();
        let mut stores = STORES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let client = stores.entry(store.to_owned()).or_default().new_client();
        let mut conn = Connection::from_memory(client.clone(), DEFAULT_SESSION_TTL);
        if let Some(namespace) = &self.namespace {
            conn.backend = Arc::new(coord_core::Namespaced::new(client, namespace.as_bytes()));
        }
        Ok(conn)
    }

    #[cfg(not(feature = "memory"))]
    fn connect_memory(&self, _store: &str) -> Result<Connection> {
        Err(feature_missing("memory", "memory"))
    }

    #[cfg(feature = "etcd")]
    async fn connect_etcd(&self, endpoints: &[String], tls: bool) -> Result<Connection> {
        let scheme = if tls { "https" } else { "http" };
        let mut o =
            coord_etcd::EtcdOptions::new(endpoints.iter().map(|e| format!("{scheme}://{e}")));
        if let Some(ns) = &self.namespace {
            o = o.namespace(ns.as_bytes().to_vec());
        }
        match (&self.user, &self.password) {
            (Some(u), Some(p)) => o = o.user(u.clone(), p.clone()),
            (Some(_), None) => {
                return Err(Error::invalid_argument(
                    "backend URL: etcd user given without a password",
                ));
            }
            (None, Some(_)) => {
                return Err(Error::invalid_argument(
                    "backend URL: etcd password given without a user name",
                ));
            }
            (None, None) => {}
        }
        if let Some(ca) = &self.ca_file {
            o = o.ca_cert_file(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
            o = o.client_identity_files(cert.clone(), key.clone());
        }
        if let Some(d) = &self.tls_domain {
            o = o.tls_domain(d.clone());
        }
        if let Some(t) = self.connect_timeout {
            o = o.connect_timeout(t);
        }
        if let Some(t) = self.request_timeout {
            o = o.request_timeout(t);
        }
        let backend = coord_etcd::EtcdBackend::connect(o).await?;
        Ok(Connection::new(Arc::new(backend), DEFAULT_SESSION_TTL))
    }

    #[cfg(not(feature = "etcd"))]
    async fn connect_etcd(&self, _endpoints: &[String], _tls: bool) -> Result<Connection> {
        Err(feature_missing(self.scheme(), "etcd"))
    }

    /// The Redis backend is not written yet: with the feature on, this is the one place to
    /// call it from.
    #[cfg(feature = "redis")]
    async fn connect_redis(&self) -> Result<Connection> {
        Err(Error::invalid_argument(format!(
            "{}:// is not available yet: the Redis backend (crate coord-redis) is not implemented in this version",
            self.scheme()
        )))
    }

    #[cfg(not(feature = "redis"))]
    async fn connect_redis(&self) -> Result<Connection> {
        Err(feature_missing(self.scheme(), "redis"))
    }
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("url", &self.redacted_url())
            .finish()
    }
}

/// The cargo features of this build that add backends.
fn enabled_backend_features() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "memory") {
        v.push("memory");
    }
    if cfg!(feature = "etcd") {
        v.push("etcd");
    }
    if cfg!(feature = "redis") {
        v.push("redis");
    }
    v
}

#[allow(dead_code)] // unused when every backend feature is on
fn feature_missing(scheme: &str, feature: &str) -> Error {
    let enabled = enabled_backend_features();
    let enabled = if enabled.is_empty() {
        "none".to_owned()
    } else {
        enabled.join(", ")
    };
    Error::invalid_argument(format!(
        "{scheme}:// URLs need coord's cargo feature \"{feature}\", which this build does not have \
         (backend features enabled: {enabled}); build with `--features {feature}`"
    ))
}

fn bad(message: impl fmt::Display) -> Error {
    Error::invalid_argument(format!("backend URL: {message}"))
}

fn parse_url(url: &str) -> Result<ConnectOptions> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("must not contain spaces or control characters"));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(bad(
            "no scheme: expected memory://, etcd://HOST:PORT, etcds://HOST:PORT, redis://HOST:PORT or rediss://HOST:PORT",
        ));
    };
    let scheme = scheme.to_ascii_lowercase();
    if rest.contains('#') {
        return Err(bad("a fragment (`#...`) is not allowed"));
    }
    let (main, query) = match rest.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match main.find('/') {
        Some(i) => (&main[..i], &main[i..]),
        None => (main, ""),
    };
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(info) => {
            let (u, p) = match info.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (info, None),
            };
            let u = percent_decode(u, "user name")?;
            let p = p.map(|p| percent_decode(p, "password")).transpose()?;
            ((!u.is_empty()).then_some(u), p)
        }
    };
    let target = match scheme.as_str() {
        "memory" => {
            if !(path.is_empty() || path == "/") {
                return Err(bad(format!(
                    "memory:// takes a store name, not a path (got {path:?})"
                )));
            }
            if userinfo.is_some() {
                return Err(bad("memory:// takes no credentials"));
            }
            let store = percent_decode(hosts, "memory store name")?;
            Target::Memory {
                store: if store.is_empty() {
                    "default".to_owned()
                } else {
                    store
                },
            }
        }
        "etcd" | "etcds" => {
            if !(path.is_empty() || path == "/") {
                return Err(bad(format!(
                    "{scheme}:// takes no path (got {path:?}); put a key prefix in `?namespace=`"
                )));
            }
            if hosts.is_empty() {
                return Err(bad(format!("{scheme}:// needs at least one HOST:PORT")));
            }
            let endpoints = hosts
                .split(',')
                .map(|h| {
                    let (host, port) = parse_host_port(h, DEFAULT_ETCD_PORT)?;
                    Ok(join_host_port(&host, port))
                })
                .collect::<Result<Vec<_>>>()?;
            Target::Etcd {
                endpoints,
                tls: scheme == "etcds",
            }
        }
        "redis" | "rediss" => {
            if hosts.is_empty() {
                return Err(bad(format!("{scheme}:// needs a HOST[:PORT]")));
            }
            if hosts.contains(',') {
                return Err(bad(format!(
                    "{scheme}:// takes one HOST[:PORT], got several"
                )));
            }
            let (host, port) = parse_host_port(hosts, DEFAULT_REDIS_PORT)?;
            let db = match path.trim_start_matches('/') {
                "" => 0,
                db => db.parse::<u32>().map_err(|_| {
                    bad(format!(
                        "the Redis database in the path must be a number, got {db:?}"
                    ))
                })?,
            };
            Target::Redis {
                host,
                port,
                db,
                tls: scheme == "rediss",
            }
        }
        "" => return Err(bad("empty scheme")),
        other => {
            return Err(bad(format!(
                "unknown scheme {other:?}: expected memory, etcd, etcds, redis or rediss"
            )));
        }
    };
    let mut o = ConnectOptions {
        target,
        namespace: None,
        ttl: None,
        user,
        password,
        ca_file: None,
        cert_file: None,
        key_file: None,
        tls_domain: None,
        connect_timeout: None,
        request_timeout: None,
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, raw) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(name, "query parameter name")?;
        let value = percent_decode(raw, &format!("query parameter `{name}`"))?;
        let shown = if name == "password" {
            "***".to_owned()
        } else {
            value.clone()
        };
        if value.is_empty() && name != "namespace" {
            return Err(bad(format!("query parameter `{name}` needs a value")));
        }
        match name.as_str() {
            "namespace" => o.namespace = (!value.is_empty()).then_some(value),
            "ttl" => {
                let ttl = parse_duration(&value)
                    .map_err(|e| bad(format!("query parameter `ttl`: {e}")))?;
                if ttl.is_zero() {
                    return Err(bad("query parameter `ttl` must be positive"));
                }
                o.ttl = Some(ttl);
            }
            "user" => o.user = Some(value),
            "password" => o.password = Some(value),
            "cacert" | "ca" => o.ca_file = Some(value.into()),
            "cert" => o.cert_file = Some(value.into()),
            "key" => o.key_file = Some(value.into()),
            "tls_domain" => o.tls_domain = Some(value),
            "connect_timeout" | "dial_timeout" => {
                o.connect_timeout = Some(
                    parse_duration(&value)
                        .map_err(|e| bad(format!("query parameter `{name}`: {e}")))?,
                );
            }
            "request_timeout" => {
                o.request_timeout = Some(
                    parse_duration(&value)
                        .map_err(|e| bad(format!("query parameter `{name}`: {e}")))?,
                );
            }
            _ => {
                return Err(bad(format!(
                    "unknown query parameter `{name}` (={shown}); known: namespace, ttl, user, password, \
                     cacert, cert, key, tls_domain, connect_timeout, request_timeout"
                )));
            }
        }
    }
    Ok(o)
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn parse_host_port(s: &str, default_port: u16) -> Result<(String, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(bad(format!("unclosed `[` in host {s:?}")));
        };
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err(bad(format!("bad IPv6 address in host {s:?}")));
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| bad(format!("unexpected {p:?} after `]` in host {s:?}")))?,
            ),
        };
        (format!("[{host}]"), port)
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (s.to_owned(), None),
        }
    };
    if host.is_empty() {
        return Err(bad(format!("empty host in {s:?}")));
    }
    if !host.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(bad(format!("bad host name {host:?}")));
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(bad(format!("bad port {p:?} for host {host:?}"))),
        },
    };
    Ok((host, port))
}

fn join_host_port(host: &str, port: u16) -> String {
    format!("{host}:{port}")
}

fn percent_decode(s: &str, what: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| bad(format!("bad percent-encoding in the {what}")))?;
                out.push(hex);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| bad(format!("the {what} is not UTF-8")))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Parses a duration as the command line and URL options write it: a bare number of
/// seconds (`10`, as etcdctl's `--ttl`) or humantime's grammar (`10s`, `500ms`,
/// `1h30m`, `2min`).
///
/// # Errors
/// A message naming the text and the accepted forms.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| format!("duration {s:?} out of range"));
    }
    humantime::parse_duration(s).map_err(|e| {
        format!("bad duration {s:?}: {e} (expected e.g. 10 (seconds), 10s, 500ms, 1h30m)")
    })
}

fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}us", d.as_micros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(url: &str) -> String {
        match ConnectOptions::parse(url) {
            Ok(o) => panic!("{url} parsed: {o:?}"),
            Err(e) => {
                assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
                e.to_string()
            }
        }
    }

    #[test]
    fn memory_urls() {
        let o = ConnectOptions::parse("memory://").unwrap();
        assert_eq!(
            o.target,
            Target::Memory {
                store: "default".into()
            }
        );
        let o = ConnectOptions::parse("memory://tests?ttl=500ms&namespace=a/").unwrap();
        assert_eq!(
            o.target,
            Target::Memory {
                store: "tests".into()
            }
        );
        assert_eq!(o.ttl, Some(Duration::from_millis(500)));
        assert_eq!(o.namespace.as_deref(), Some("a/"));
        assert_eq!(o.redacted_url(), "memory://tests?namespace=a/&ttl=500ms");
        assert!(err("memory://x/y").contains("path"));
        assert!(err("memory://u:p@x").contains("credentials"));
    }

    #[test]
    fn etcd_urls() {
        let o = ConnectOptions::parse("etcd://127.0.0.1:2379,[::1]:23790,host").unwrap();
        assert_eq!(
            o.target,
            Target::Etcd {
                endpoints: vec![
                    "127.0.0.1:2379".into(),
                    "[::1]:23790".into(),
                    "host:2379".into()
                ],
                tls: false
            }
        );
        let o = ConnectOptions::parse(
            "ETCDS://alice:p%40ss@h:1?cacert=/tmp/ca.pem&cert=c.pem&key=k.pem&ttl=15&request_timeout=2s",
        )
        .unwrap();
        assert_eq!(o.scheme(), "etcds");
        assert_eq!(o.user.as_deref(), Some("alice"));
        assert_eq!(o.password.as_deref(), Some("p@ss"));
        assert_eq!(o.ttl, Some(Duration::from_secs(15)));
        assert_eq!(o.request_timeout, Some(Duration::from_secs(2)));
        let shown = format!("{o:?} {}", o.redacted_url());
        assert!(
            !shown.contains("p@ss") && !shown.contains("p%40ss"),
            "{shown}"
        );
        assert!(shown.contains("alice:***@"), "{shown}");
    }

    #[test]
    fn redis_urls() {
        let o = ConnectOptions::parse("redis://:pw@localhost/3").unwrap();
        assert_eq!(
            o.target,
            Target::Redis {
                host: "localhost".into(),
                port: 6379,
                db: 3,
                tls: false
            }
        );
        assert_eq!(o.user, None);
        assert_eq!(o.password.as_deref(), Some("pw"));
        assert_eq!(o.redacted_url(), "redis://:***@localhost:6379/3");
        assert!(err("redis://h:1/x").contains("database"));
        assert!(err("redis://a:1,b:2").contains("one HOST"));
    }

    #[test]
    fn bad_urls_name_the_problem() {
        assert!(err("127.0.0.1:2379").contains("no scheme"));
        assert!(err("zk://h:1").contains("unknown scheme \"zk\""));
        assert!(err("etcd://").contains("at least one"));
        assert!(err("etcd://h:99999").contains("bad port \"99999\""));
        assert!(err("etcd://h:0").contains("bad port"));
        assert!(err("etcd://h:x").contains("bad port"));
        assert!(err("etcd://h:1/path").contains("no path"));
        assert!(err("etcd://h:1?bogus=1").contains("unknown query parameter `bogus`"));
        assert!(err("etcd://h:1?ttl=ten").contains("ttl"));
        assert!(err("etcd://h:1?ttl=0").contains("positive"));
        assert!(err("etcd://h:1#frag").contains("fragment"));
        assert!(err("etcd://h :1").contains("spaces"));
        assert!(err("etcd://[::1:1").contains("unclosed"));
        let e = err("etcd://u:hunter2@h:1?password=hunter3&nope=1");
        assert!(!e.contains("hunter"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[tokio::test]
    async fn tls_options_need_a_tls_scheme() {
        let e = ConnectOptions::parse("etcd://h:1?cacert=/x")
            .unwrap()
            .connect()
            .await
            .unwrap_err();
        assert!(e.to_string().contains("etcds://"), "{e}");
    }

    #[cfg(feature = "memory")]
    #[tokio::test]
    async fn memory_connections_share_a_store_by_name_and_prefix_keys_by_namespace() {
        use coord_core::{BackendExt, NO_LEASE};
        let a = connect("memory://share-test").await.unwrap();
        let b = connect("memory://share-test").await.unwrap();
        let c = connect("memory://share-test?namespace=x/").await.unwrap();
        a.backend().put(b"k", b"v", NO_LEASE).await.unwrap();
        assert!(b.backend().get(b"k").await.unwrap().is_some());
        assert!(c.backend().get(b"k").await.unwrap().is_none());
        c.backend().put(b"k", b"in x", NO_LEASE).await.unwrap();
        assert_eq!(
            a.backend().get(b"x/k").await.unwrap().unwrap().value,
            b"in x"
        );
        assert_eq!(a.session_ttl(), DEFAULT_SESSION_TTL);
        assert!(a.memory().is_some());
        assert_eq!(a.to_string(), "memory://share-test");
    }

    #[cfg(not(feature = "etcd"))]
    #[tokio::test]
    async fn missing_feature_is_named() {
        let e = connect("etcd://127.0.0.1:1").await.unwrap_err();
        assert!(e.to_string().contains("feature \"etcd\""), "{e}");
    }

    #[cfg(not(feature = "redis"))]
    #[tokio::test]
    async fn missing_redis_feature_is_named() {
        let e = connect("rediss://u:pw@127.0.0.1").await.unwrap_err();
        assert!(e.to_string().contains("feature \"redis\""), "{e}");
        assert!(!e.to_string().contains("pw"), "{e}");
    }

    #[cfg(feature = "redis")]
    #[tokio::test]
    async fn redis_is_not_available_yet() {
        let e = connect("redis://127.0.0.1").await.unwrap_err();
        assert!(e.to_string().contains("not available yet"), "{e}");
    }
}
