//! The Redis backend for `coord`: etcd's data model (revisions, leases, txns, watches)
//! kept in Redis by Lua scripts, so that every call is one atomic script run.
//!
//! # Key layout
//!
//! Every key of a namespace `NS` starts with the hash tag `{NS}` (one cluster slot):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{NS}:k:KEY` | hash | `v` value, `c` create revision, `m` mod revision, `ver` version, `l` lease |
//! | `{NS}:idx` | sorted set | every live key, score 0: the ordered index (`ZRANGEBYLEX`) |
//! | `{NS}:meta` | hash | `epoch`: random, set once by the namespace's first client; `revisions`: the revision mode (`time` or `sequential`) |
//! | `{NS}:rev` | string | the store revision (absent: 1), raised once per write |
//! | `{NS}:compact` | string | the compact revision (absent: 0) |
//! | `{NS}:trimmed` | string | the revision of the newest log entry compaction removed (absent: 0): with sparse revisions, what tells a watch reader it missed one |
//! | `{NS}:log` | stream | one entry per changed key, id `REVISION-N`, with the prev state |
//! | `{NS}:leases` | sorted set | lease id scored by its deadline in server milliseconds |
//! | `{NS}:ttl` | hash | lease id to granted TTL in milliseconds |
//! | `{NS}:lk:ID` | set | the keys attached to lease `ID` |
//!
//! # Scripts
//!
//! `src/lua/common.lua` is put in front of each script: it checks the epoch, reads `TIME`
//! and reaps a bounded number of due leases (each lease's keys deleted in one revision,
//! with DELETE events) before the script does its own work. `txn.lua` runs a txn (also
//! every range read and `current_revision`), `lease.lua` grants, refreshes, revokes, reads
//! and reaps leases, `compact.lua` compacts; `epoch.lua` runs alone at connect. Requests
//! and answers are msgpack, keys and values raw bytes in it (Redis' cmsgpack writes
//! integral numbers as integers, where cjson would keep 14 significant digits of a
//! 16-digit revision). An uncontended lock and unlock is two script runs: two round trips.
//! Leases are logical (never Redis TTLs); a reaper task per client runs every
//! [`REAP_INTERVAL`], so a dead holder's keys go within its TTL plus that interval.
//! Watches read the stream: a new watch catches up with `XRANGE`, then follows the live
//! feed of the backend's one reader (`XREAD BLOCK` on a connection of its own, shared by
//! every watch of that backend, started by the first and stopped with the last).
//!
//! # Data loss and fencing tokens
//!
//! Redis acknowledges a write before it is durable or replicated: a restart without
//! persistence (or with `appendfsync everysec`, which may lose the last second), `FLUSHALL`
//! / `FLUSHDB`, or a failover to a replica that had not received the last writes, all lose
//! data the clients were told was written, locks and leases included. Redis cannot promise
//! otherwise (`WAIT` narrows the window but does not close it); run with `appendonly yes`
//! and `appendfsync always` where a lock must survive a restart. What this backend does:
//!
//! - **Detection.** The namespace's first client writes a random epoch to `{NS}:meta`;
//!   each client adopts the epoch it finds when it connects and passes it to every script,
//!   which checks it before anything else. An epoch that is gone or another one means the
//!   data this client worked on is lost: the script changes nothing and says so, and the
//!   client **fails closed for good**: lease keep-alives (and revokes and TTL reads) answer
//!   [`Error::LeaseNotFound`](coord_core::Error::LeaseNotFound), so every session on it
//!   ends and its locks and leaderships report `lost()`; watches end with an error; every
//!   other call answers [`Error::Backend`](coord_core::Error::Backend) "redis data loss
//!   detected ...", which is not retryable. The client's reaper runs every
//!   [`REAP_INTERVAL`], so an idle client notices within that. To work on the new data,
//!   connect a new [`RedisBackend`] (it adopts the new epoch) and start new sessions.
//!   Losing the namespace's data entirely is detected this way; a partial rollback that
//!   keeps the epoch (a replica or AOF that lacks only the last writes) is not, and is
//!   what time-floored revisions are for.
//! - **Fencing tokens never repeat** (with the default `revisions=time`, [`Revisions`]).
//!   A lock's fencing token is its key's create revision, and every write's revision is
//!   `max(previous + 1, server clock in µs)` (about 1.8e15, exact in Lua's doubles below
//!   2^53). Every write is floored, not only a namespace's first, so a rollback that keeps
//!   the epoch is covered too: a revision handed out after the loss is at least the
//!   clock then, and every revision handed out before was at most the clock then plus the
//!   lead revisions can take over the clock. That lead grows only while the namespace
//!   writes more than one revision per µs: each revision costs a script run (or, for a
//!   lease expiry, several commands within one) on the server's single thread, so it stays
//!   within microseconds, and any restart or failover takes far longer. The guarantee
//!   needs the new primary's clock not to be behind the old one's by more than the outage
//!   lasted (a clock stepped back on one server only makes revisions step by one for a
//!   while; they never fall).
//! - **The cost**: revisions are sparse (a write raises the revision by one or more, which
//!   [`BackendInfo::dense_revisions`](coord_core::BackendInfo::dense_revisions) reports;
//!   etcd's recipes only compare revisions), and they are 16-digit numbers.
//!   `revisions=sequential` numbers 1, 2, 3, ... as etcd does, and after a data loss starts
//!   again from 1, handing out fencing tokens that were handed out before: use it only
//!   where the server cannot lose data, or tokens do not matter. A namespace keeps the mode
//!   it was created with; a client asking for the other is refused at connect.
//!
//! # Connections
//!
//! Scripts and plain commands share one multiplexed connection; when it breaks (a server
//! restart, a dropped socket, a timeout) the call that found it broken fails with
//! `Error::Unavailable` (a script cut off may or may not have run) and the next call
//! connects again; scripts missing after a restart are loaded again (`EVALSHA`, then
//! `SCRIPT LOAD` on `NOSCRIPT`). `rediss://` speaks TLS through rustls (cargo feature `tls`,
//! on by default): `cacert` replaces the system's trusted roots, `cert` and `key` give a
//! client certificate, `tls_domain` is the name the server's certificate is checked
//! against when it is not the URL's host. A user name and password (`USER:PASSWORD@` or
//! `?user=&password=`) log in as a Redis ACL user (the `default` user with a password
//! alone); the user needs to run scripts (`EVALSHA`, `SCRIPT LOAD`) and read streams on
//! the namespace's keys, or calls fail with `Error::PermissionDenied`.
//!
//! # Redis Cluster
//!
//! A `redis+cluster://HOST[:PORT][,HOST[:PORT]...]` URL connects to a Redis Cluster through
//! the nodes it names (any one that answers is enough: the client learns the others and
//! which master serves which slot, and follows `MOVED` and `ASK` redirections). A cluster
//! has only database 0, so such a URL takes no `/DB`.
//!
//! One namespace is one slot, so one master: every key of the namespace starts with the
//! hash tag `{NS}`, each script declares the namespace's `{NS}:rev` as its one key (the
//! cluster routes it by that key; the script derives every other key from it), and a
//! watch reads `{NS}:log` on a cluster connection of its own, routed the same way. A
//! namespace therefore runs on one master's single thread, with no cross-slot work and
//! atomic scripts as on a single server; to spread load over the masters, spread the
//! work over several namespaces ([`RedisOptions::namespace`]), whose hash tags land on
//! different slots. Replicas are not read from: every call goes to the slot's master. A
//! failover to a replica can lose the writes the replica had not yet received (Redis
//! replicates asynchronously), as a restart without persistence loses everything.
//!
//! ```
//! use coord_core::UrlOptions;
//! use coord_redis::RedisOptions;
//!
//! let options = RedisOptions::parse_url("redis+cluster://10.0.0.1:7000,10.0.0.2:7000")
//!     .unwrap()
//!     .namespace("billing")
//!     .unwrap();
//! assert!(options.is_cluster());
//! assert_eq!(options.cluster_nodes(), ["10.0.0.1:7000", "10.0.0.2:7000"]);
//! ```
//!
//! `coord::connect` reaches it by these URLs (feature `redis` of `coord`); or connect with
//! [`RedisBackend::connect`].
//!
//! ```
//! use coord_core::UrlOptions;
//! use coord_redis::RedisOptions;
//!
//! let options = RedisOptions::parse_url("rediss://app:s3cret@cache.internal/2").unwrap();
//! assert_eq!((options.host(), options.port(), options.db()), ("cache.internal", 6379, 2));
//! assert_eq!(options.redacted_url(), "rediss://app:***@cache.internal:6379/2");
//! ```

mod backend;
mod codec;
mod connection;
mod data_loss;
mod watch;

use std::time::Duration;

use async_trait::async_trait;
use coord_core::Result;
use coord_core::backend_url::{
    self, Credentials, Host, Query, TlsFiles, Url, UrlOptions, format_duration, invalid,
};

pub use backend::{LEASE_GRANULARITY, MAX_LEASE_TTL, MIN_LEASE_TTL, REAP_INTERVAL, RedisBackend};
pub use watch::WATCH_BUFFER;

/// The namespace a client works in unless told otherwise ([`RedisOptions::namespace`]).
pub const DEFAULT_NAMESPACE: &str = "coord";

/// The Redis port, for a host given without one.
pub const DEFAULT_PORT: u16 = 6379;

/// How to reach a Redis server, from a `redis://[USER:PASSWORD@]HOST[:PORT][/DB]` (plain
/// text) or `rediss://...` (TLS) URL, or a Redis Cluster, from a
/// `redis+cluster://[USER:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]` URL naming some of its
/// nodes. `Debug` never shows the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    host: String,
    port: u16,
    db: u32,
    tls: bool,
    /// `HOST:PORT` of every node the URL names; empty unless a cluster URL.
    cluster_nodes: Vec<String>,
    credentials: Credentials,
    tls_files: TlsFiles,
    connect_timeout: Option<Duration>,
    request_timeout: Option<Duration>,
    namespace: String,
    revisions: Revisions,
}

/// How a namespace numbers its revisions (the `revisions` URL parameter). All clients of a
/// namespace use the mode it was created with; see the crate docs, "Data loss and fencing
/// tokens".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Revisions {
    /// `revisions=time` (the default): every write's revision is at least the server's
    /// clock in microseconds, so revisions and fencing tokens never repeat, even after the
    /// server lost data. Revisions rise by one or more per write.
    #[default]
    TimeFloored,
    /// `revisions=sequential`: revisions rise by exactly one per write, as etcd's do, and
    /// start again from 1 after a server lost its data, so fencing tokens handed out
    /// before can be handed out again. Unsafe where the server can lose data.
    Sequential,
}

impl Revisions {
    /// The URL parameter's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Revisions::TimeFloored => "time",
            Revisions::Sequential => "sequential",
        }
    }

    fn parse(value: &str) -> Result<Revisions> {
        match value {
            "time" => Ok(Revisions::TimeFloored),
            "sequential" => Ok(Revisions::Sequential),
            other => Err(invalid(format!(
                "revisions must be `time` or `sequential`, got {other:?}"
            ))),
        }
    }
}

impl RedisOptions {
    /// Parses a one-host `redis://`, `rediss://` or `redis+cluster://` URL (for several
    /// cluster nodes use [`RedisOptions::parse_url`]). The query parameters are `user`,
    /// `password` (or `USER:PASSWORD@`), `cacert`, `cert`, `key`, `tls_domain` (TLS only),
    /// `connect_timeout`, `request_timeout` and `revisions` (`time` or `sequential`, see
    /// [`Revisions`]).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](coord_core::Error::InvalidArgument) naming what is wrong: another scheme, no host or several,
    /// a bad port, a database that is not a number (or not 0 on a cluster), an unknown or
    /// repeated query parameter, a TLS file on `redis://`, a `tls_domain` that is neither a
    /// DNS name nor an IP address, an unknown revision mode. Never repeats the password.
    pub fn from_url(url: &Url) -> Result<RedisOptions> {
        let scheme = url.scheme();
        let (tls, cluster) = match scheme {
            "redis" => (false, false),
            "rediss" => (true, false),
            "redis+cluster" => (false, true),
            "rediss+cluster" => (true, true),
            other => {
                return Err(invalid(format!(
                    "not a redis://, rediss:// or redis+cluster:// URL (scheme {other:?})"
                )));
            }
        };
        let host = host_of(url)?;
        let port = url.port().unwrap_or(DEFAULT_PORT);
        let db = match url.path().trim_start_matches('/') {
            "" => 0,
            db => db.parse().map_err(|_| {
                invalid(format!(
                    "the Redis database in the path must be a number, got {db:?}"
                ))
            })?,
        };
        if cluster && db != 0 {
            return Err(invalid(format!(
                "a Redis Cluster has only database 0, got /{db} in a {scheme}:// URL"
            )));
        }
        let mut query = Query::of(url)?;
        let credentials = Credentials::take(url, &mut query)?;
        let tls_scheme = if cluster { "rediss+cluster" } else { "rediss" };
        let tls_files = TlsFiles::take(&mut query, scheme, tls, tls_scheme)?;
        if let Some(domain) = &tls_files.tls_domain {
            check_tls_domain(domain)?;
        }
        let connect_timeout = query.take_duration("connect_timeout")?;
        let request_timeout = query.take_duration("request_timeout")?;
        let revisions = match query.take("revisions")? {
            Some(mode) => Revisions::parse(&mode)?,
            None => Revisions::default(),
        };
        query.finish(scheme, Self::QUERY_PARAMETERS)?;
        Ok(RedisOptions {
            cluster_nodes: if cluster {
                vec![format!("{host}:{port}")]
            } else {
                Vec::new()
            },
            host,
            port,
            db,
            tls,
            credentials,
            tls_files,
            connect_timeout,
            request_timeout,
            namespace: DEFAULT_NAMESPACE.to_owned(),
            revisions,
        })
    }

    /// Options from URL text, which for a Redis Cluster may name several of its nodes:
    /// `redis+cluster://HOST[:PORT][,HOST[:PORT]...]` and the rest as in
    /// [`RedisOptions::from_url`]. Any one reachable node is enough to find the others.
    ///
    /// The list is not one URL to the `url` crate (the first port would run on into the
    /// next host), so it is cut out, each `HOST[:PORT]` parsed alone, and the URL parsed
    /// with its first host.
    ///
    /// ```
    /// use coord_core::UrlOptions;
    /// use coord_redis::RedisOptions;
    ///
    /// let options = RedisOptions::parse_url("redis+cluster://:pw@10.0.0.1,10.0.0.2:7001").unwrap();
    /// assert_eq!(options.cluster_nodes(), ["10.0.0.1:6379", "10.0.0.2:7001"]);
    /// assert_eq!(options.redacted_url(), "redis+cluster://:***@10.0.0.1:6379,10.0.0.2:7001");
    /// ```
    ///
    /// # Errors
    /// As [`RedisOptions::from_url`]; several hosts on a scheme that is not a cluster one;
    /// a bad node names it (`node "h:99999": bad port`).
    pub fn parse_url(text: &str) -> Result<RedisOptions> {
        let (url, nodes) = backend_url::parse_hosts(text, "node", |url| {
            Ok(format!(
                "{}:{}",
                host_of(url)?,
                url.port().unwrap_or(DEFAULT_PORT)
            ))
        })?;
        if nodes.len() > 1 && !url.scheme().ends_with("+cluster") {
            return Err(invalid(format!(
                "{}:// takes one HOST[:PORT], got several (a Redis Cluster's nodes go in a \
                 redis+cluster:// URL)",
                url.scheme()
            )));
        }
        let mut options = RedisOptions::from_url(&url)?;
        if options.is_cluster() {
            options.cluster_nodes = nodes;
        }
        Ok(options)
    }

    /// The host: a name, an IPv4 address, or an IPv6 address in brackets (a cluster's
    /// first node).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (a cluster's first node's).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The database number (`SELECT`), 0 unless the URL's path gives one.
    pub fn db(&self) -> u32 {
        self.db
    }

    /// Whether the scheme is `rediss` or `rediss+cluster`.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// Whether the URL names a Redis Cluster (`redis+cluster://`).
    pub fn is_cluster(&self) -> bool {
        !self.cluster_nodes.is_empty()
    }

    /// The cluster nodes the URL names, as `HOST:PORT`; empty unless
    /// [`is_cluster`](Self::is_cluster).
    pub fn cluster_nodes(&self) -> &[String] {
        &self.cluster_nodes
    }

    /// The user name and password.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// The TLS files and server name.
    pub fn tls_files(&self) -> &TlsFiles {
        &self.tls_files
    }

    /// Time allowed to reach the server.
    pub fn connect_timeout(&self) -> Option<Duration> {
        self.connect_timeout
    }

    /// Time allowed for each request.
    pub fn request_timeout(&self) -> Option<Duration> {
        self.request_timeout
    }

    /// Works in another namespace: a separate key space (own revisions, leases, history)
    /// on the same server. Every Redis key of a namespace starts with the hash tag
    /// `{NAMESPACE}`, so a namespace lives in one cluster slot.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](coord_core::Error::InvalidArgument) for an empty name or one with `{` or `}` (which would
    /// change the hash tag).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Result<Self> {
        let namespace = namespace.into();
        if namespace.is_empty() || namespace.contains(['{', '}']) {
            return Err(invalid(format!(
                "a Redis namespace must be non-empty and without braces, got {namespace:?}"
            )));
        }
        self.namespace = namespace;
        Ok(self)
    }

    /// The namespace.
    pub fn namespace_name(&self) -> &str {
        &self.namespace
    }

    /// Numbers revisions in another mode (the `revisions` URL parameter). It matters only
    /// for a namespace's first client: a namespace keeps the mode it was created with, and
    /// [`RedisBackend::connect`] refuses a client that asks for another.
    pub fn revisions(mut self, revisions: Revisions) -> Self {
        self.revisions = revisions;
        self
    }

    /// The revision mode.
    pub fn revision_mode(&self) -> Revisions {
        self.revisions
    }
}

/// The server name a certificate is checked against: a DNS name or an IP address.
fn check_tls_domain(domain: &str) -> Result<()> {
    let is_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    };
    let is_name = domain.len() <= 253 && domain.trim_end_matches('.').split('.').all(is_label);
    if is_name || domain.parse::<std::net::IpAddr>().is_ok() {
        Ok(())
    } else {
        Err(invalid(format!(
            "`tls_domain` must be a DNS name or an IP address, got {domain:?}"
        )))
    }
}

/// The host of a one-host URL, checked.
fn host_of(url: &Url) -> Result<String> {
    let scheme = url.scheme();
    match url.host() {
        None | Some(Host::Domain("")) => Err(invalid(format!("{scheme}:// needs a HOST[:PORT]"))),
        Some(Host::Domain(name)) if name.contains(',') => Err(invalid(format!(
            "{scheme}:// takes one HOST[:PORT], got several"
        ))),
        Some(Host::Domain(name))
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) =>
        {
            Err(invalid(format!("bad host name {name:?}")))
        }
        Some(_) => Ok(url.host_str().unwrap_or_default().to_owned()),
    }
}

#[async_trait]
impl UrlOptions for RedisOptions {
    type Backend = RedisBackend;
    const URL_FORMS: &'static [&'static str] = &[
        "redis://[USER:PASSWORD@]HOST[:PORT][/DB]",
        "rediss://[USER:PASSWORD@]HOST[:PORT][/DB] (TLS)",
        "redis+cluster://[USER:PASSWORD@]HOST[:PORT][,HOST[:PORT]...] (Redis Cluster)",
    ];
    const QUERY_PARAMETERS: &'static [&'static str] = &[
        "user",
        "password",
        "cacert",
        "cert",
        "key",
        "tls_domain",
        "connect_timeout",
        "request_timeout",
        "revisions",
    ];

    fn parse_url(url: &str) -> Result<Self> {
        RedisOptions::parse_url(url)
    }

    fn redacted_url(&self) -> String {
        let scheme = match (self.tls, self.is_cluster()) {
            (false, false) => "redis",
            (true, false) => "rediss",
            (false, true) => "redis+cluster",
            (true, true) => "rediss+cluster",
        };
        let hosts = if self.is_cluster() {
            self.cluster_nodes.join(",")
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let mut base = format!("{scheme}://{}{hosts}", self.credentials.redacted_userinfo());
        if self.db != 0 {
            base.push_str(&format!("/{}", self.db));
        }
        let mut query = self.tls_files.query();
        for (name, t) in [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if let Some(t) = t {
                query.push((name, format_duration(t)));
            }
        }
        if self.revisions != Revisions::default() {
            query.push(("revisions", self.revisions.as_str().to_owned()));
        }
        backend_url::join_url(&base, &query)
    }

    /// A URL's `namespace` is the Redis namespace ([`RedisOptions::namespace`]): its own
    /// hash tag, revisions, leases and stream, which an ACL key pattern `~{NAMESPACE}*`
    /// can confine a user to and a cluster places by its slot.
    fn with_own_namespace(&self, namespace: &str) -> Option<Result<Self>> {
        Some(self.clone().namespace(namespace))
    }

    async fn connect(&self) -> Result<RedisBackend> {
        RedisBackend::connect(self.clone()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coord_core::Error;

    fn err(url: &str) -> String {
        match RedisOptions::parse_url(url) {
            Ok(o) => panic!("{url} parsed: {o:?}"),
            Err(e) => {
                assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
                e.to_string()
            }
        }
    }

    #[test]
    fn host_port_database_and_credentials_come_from_the_url() {
        let o = RedisOptions::parse_url("redis://:pw@localhost/3").unwrap();
        assert_eq!(
            (o.host(), o.port(), o.db(), o.tls()),
            ("localhost", 6379, 3, false)
        );
        assert_eq!(o.credentials().user(), None);
        assert_eq!(o.credentials().password(), Some("pw"));
        assert_eq!(o.redacted_url(), "redis://:***@localhost:6379/3");
        let o = RedisOptions::parse_url(
            "REDISS://app:p%40ss@[::1]:7000?cacert=/ca.pem&request_timeout=1500ms",
        )
        .unwrap();
        assert_eq!(
            (o.host(), o.port(), o.db(), o.tls()),
            ("[::1]", 7000, 0, true)
        );
        assert_eq!(o.credentials().password(), Some("p@ss"));
        assert_eq!(
            o.redacted_url(),
            "rediss://app:***@[::1]:7000?cacert=/ca.pem&request_timeout=1500ms"
        );
        assert!(!format!("{o:?}").contains("p@ss"));
    }

    #[test]
    fn bad_urls_name_the_problem() {
        assert!(err("redis://h:1/x").contains("database"));
        assert!(err("redis://a,b").contains("one HOST"));
        assert!(err("redis://a:1,b:2").contains("redis+cluster://"));
        assert!(err("redis://").contains("needs a HOST"));
        assert!(err("redis://h?cacert=/x").contains("use rediss://"));
        assert!(err("redis://h?db=1").contains("unknown query parameter `db`"));
        assert!(err("etcd://h").contains("not a redis"));
        for name in ["connect_timeout", "request_timeout"] {
            let e = err(&format!("redis://h?{name}=0s"));
            assert!(e.contains(&format!("`{name}` must be positive")), "{e}");
            let o = RedisOptions::parse_url(&format!("redis://h?{name}=1h30m")).unwrap();
            assert_eq!(
                o.connect_timeout().or(o.request_timeout()),
                Some(Duration::from_secs(5400))
            );
        }
        let e = err("redis://u:hunter2@h?password=hunter3");
        assert!(e.contains("twice") && !e.contains("hunter"), "{e}");
    }

    #[tokio::test]
    async fn a_server_that_is_not_there_is_unavailable_without_showing_the_password() {
        // Port 1 on loopback: nothing listens there.
        let options = RedisOptions::parse_url("redis://u:hunter2@127.0.0.1:1").unwrap();
        let e = options.connect().await.unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(!format!("{e:?}").contains("hunter2"), "{e:?}");
    }

    #[test]
    fn tls_domain_must_be_a_name_or_an_address() {
        for ok in [
            "redis.internal",
            "localhost",
            "127.0.0.1",
            "::1",
            "a-b.c_d.example.",
        ] {
            let url = format!("rediss://h?tls_domain={ok}");
            let o = RedisOptions::parse_url(&url).unwrap();
            assert_eq!(o.tls_files().tls_domain.as_deref(), Some(ok));
        }
        for bad in ["", "a..b", "-a.b", "a@b", "a%2Fb", "a%20b"] {
            let e = err(&format!("rediss://h?tls_domain={bad}"));
            assert!(e.contains("`tls_domain`"), "{bad}: {e}");
        }
    }

    #[cfg(feature = "tls")]
    #[tokio::test]
    async fn an_unreadable_tls_file_is_named_without_showing_the_password() {
        let options =
            RedisOptions::parse_url("rediss://u:hunter2@127.0.0.1?cacert=/nonexistent/ca.pem")
                .unwrap();
        let e = RedisBackend::connect(options).await.unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        let e = e.to_string();
        assert!(
            e.contains("`cacert` file /nonexistent/ca.pem")
                && e.contains("rediss://u:***@127.0.0.1:6379")
                && !e.contains("hunter2"),
            "{e}"
        );
    }

    #[cfg(not(feature = "tls"))]
    #[tokio::test]
    async fn tls_is_refused_without_the_tls_feature() {
        let options = RedisOptions::parse_url("rediss://u:hunter2@127.0.0.1").unwrap();
        let e = RedisBackend::connect(options).await.unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        let e = e.to_string();
        assert!(e.contains("`tls` feature") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn cluster_urls_name_every_node_and_only_database_zero() {
        let o = RedisOptions::parse_url(
            "redis+cluster://app:hunter2@10.0.0.1:7000,node-b,[::1]:7002?request_timeout=2s",
        )
        .unwrap();
        assert!(o.is_cluster() && !o.tls());
        assert_eq!(
            o.cluster_nodes(),
            ["10.0.0.1:7000", "node-b:6379", "[::1]:7002"]
        );
        assert_eq!((o.host(), o.port()), ("10.0.0.1", 7000));
        assert_eq!(o.credentials().password(), Some("hunter2"));
        assert_eq!(
            o.redacted_url(),
            "redis+cluster://app:***@10.0.0.1:7000,node-b:6379,[::1]:7002?request_timeout=2s"
        );
        assert!(!format!("{o:?}").contains("hunter2"));
        let one = RedisOptions::parse_url("redis+cluster://h:7000").unwrap();
        assert_eq!(one.cluster_nodes(), ["h:7000"]);
        assert_eq!(one.redacted_url(), "redis+cluster://h:7000");
        let tls = RedisOptions::parse_url("rediss+cluster://a,b?cacert=/ca.pem").unwrap();
        assert!(tls.is_cluster() && tls.tls());
        assert_eq!(
            tls.redacted_url(),
            "rediss+cluster://a:6379,b:6379?cacert=/ca.pem"
        );
        assert!(!RedisOptions::parse_url("redis://h").unwrap().is_cluster());

        assert!(err("redis+cluster://a,b/1").contains("only database 0"));
        assert!(err("redis+cluster://a,b:99999").contains("node \"b:99999\""));
        assert!(err("redis+cluster://a,,b").contains("node \"\""));
        assert!(err("redis+cluster://a?cacert=/x").contains("use rediss+cluster://"));
        let e = err("redis+cluster://u:hunter2@a,b?password=x");
        assert!(e.contains("twice") && !e.contains("hunter"), "{e}");
    }

    #[tokio::test]
    async fn tls_on_a_cluster_is_refused_without_showing_the_password() {
        let options = RedisOptions::parse_url("rediss+cluster://u:hunter2@127.0.0.1:1").unwrap();
        let e = RedisBackend::connect(options).await.unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        let e = e.to_string();
        assert!(
            e.contains("TLS") && e.contains("rediss+cluster://u:***@"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[tokio::test]
    async fn a_cluster_that_is_not_there_is_unavailable_without_showing_the_password() {
        let options =
            RedisOptions::parse_url("redis+cluster://u:hunter2@127.0.0.1:1,127.0.0.1:2").unwrap();
        let e = options.connect().await.unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(!format!("{e:?}").contains("hunter2"), "{e:?}");
    }

    #[test]
    fn revisions_are_time_floored_unless_the_url_asks_for_sequential() {
        let o = RedisOptions::parse_url("redis://h").unwrap();
        assert_eq!(o.revision_mode(), Revisions::TimeFloored);
        assert_eq!(o.redacted_url(), "redis://h:6379");
        let o = RedisOptions::parse_url("redis://h?revisions=sequential").unwrap();
        assert_eq!(o.revision_mode(), Revisions::Sequential);
        assert_eq!(o.redacted_url(), "redis://h:6379?revisions=sequential");
        let o = RedisOptions::parse_url("redis://h?revisions=time").unwrap();
        assert_eq!(o.revision_mode(), Revisions::TimeFloored);
        let e = err("redis://h?revisions=dense");
        assert!(e.contains("revisions") && e.contains("dense"), "{e}");
    }

    #[test]
    fn namespaces_keep_their_hash_tag_intact() {
        let options = RedisOptions::parse_url("redis://h").unwrap();
        assert_eq!(options.namespace_name(), DEFAULT_NAMESPACE);
        assert!(options.clone().namespace("a{b").is_err());
        assert!(options.clone().namespace("").is_err());
        assert_eq!(options.namespace("t1").unwrap().namespace_name(), "t1");
    }
}
