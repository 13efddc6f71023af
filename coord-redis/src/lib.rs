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
//! | `{NS}:rev` | string | the store revision (absent: 1), bumped once per write |
//! | `{NS}:compact` | string | the compact revision (absent: 0) |
//! | `{NS}:log` | stream | one entry per changed key, id `REVISION-N`, with the prev state |
//! | `{NS}:leases` | sorted set | lease id scored by its deadline in server milliseconds |
//! | `{NS}:ttl` | hash | lease id to granted TTL in milliseconds |
//! | `{NS}:lk:ID` | set | the keys attached to lease `ID` |
//!
//! # Scripts
//!
//! `src/lua/common.lua` is put in front of each script: it reads `TIME` and reaps a bounded
//! number of due leases (each lease's keys deleted in one revision, with DELETE events)
//! before the script does its own work. `txn.lua` runs a txn (also every range read and
//! `current_revision`), `lease.lua` grants, refreshes, revokes, reads and reaps leases,
//! `compact.lua` compacts. Requests and answers are JSON, keys and values hex-encoded.
//! Leases are logical (never Redis TTLs); a reaper task per client runs every
//! [`REAP_INTERVAL`], so a dead holder's keys go within its TTL plus that interval.
//! Watches read the stream (`XRANGE`, then `XREAD BLOCK` on a connection of their own).
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
mod watch;

use std::time::Duration;

use async_trait::async_trait;
use coord_core::Result;
use coord_core::backend_url::{
    self, Credentials, Host, Query, TlsFiles, Url, UrlOptions, format_duration, invalid,
};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

pub use backend::{LEASE_GRANULARITY, MAX_LEASE_TTL, MIN_LEASE_TTL, REAP_INTERVAL, RedisBackend};

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
}

impl RedisOptions {
    /// Parses a one-host `redis://`, `rediss://` or `redis+cluster://` URL (for several
    /// cluster nodes use [`RedisOptions::parse_url`]). The query parameters are `user`,
    /// `password` (or `USER:PASSWORD@`), `cacert`, `cert`, `key`, `tls_domain` (TLS only),
    /// `connect_timeout` and `request_timeout`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](coord_core::Error::InvalidArgument) naming what is wrong: another scheme, no host or several,
    /// a bad port, a database that is not a number (or not 0 on a cluster), an unknown or
    /// repeated query parameter, a TLS file on `redis://`. Never repeats the password.
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
        let connect_timeout = query.take_duration("connect_timeout")?;
        let request_timeout = query.take_duration("request_timeout")?;
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
        backend_url::check_text(text)?;
        let Some((scheme, rest)) = text.split_once("://") else {
            return RedisOptions::from_url(&backend_url::parse(text)?);
        };
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let (userinfo, hosts) = match authority.rfind('@') {
            Some(at) => authority.split_at(at + 1),
            None => ("", authority),
        };
        if !hosts.contains(',') {
            return RedisOptions::from_url(&backend_url::parse(text)?);
        }
        if !scheme.to_ascii_lowercase().ends_with("+cluster") {
            return Err(invalid(format!(
                "{scheme}:// takes one HOST[:PORT], got several (a Redis Cluster's nodes go \
                 in a redis+cluster:// URL)"
            )));
        }
        let hosts: Vec<&str> = hosts.split(',').collect();
        let nodes = hosts
            .iter()
            .map(|host| {
                backend_url::parse(&format!("{scheme}://{host}"))
                    .and_then(|url| {
                        let name = host_of(&url)?;
                        Ok(format!("{name}:{}", url.port().unwrap_or(DEFAULT_PORT)))
                    })
                    .map_err(|e| invalid(format!("node {host:?}: {}", reason(&e))))
            })
            .collect::<Result<Vec<_>>>()?;
        let url = backend_url::parse(&format!("{scheme}://{userinfo}{}{tail}", hosts[0]))?;
        let mut options = RedisOptions::from_url(&url)?;
        options.cluster_nodes = nodes;
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

    /// The URL the redis crate connects with, password included.
    fn connection_url(&self) -> String {
        format!(
            "redis://{}{}:{}/{}",
            self.userinfo(),
            self.host,
            self.port,
            self.db
        )
    }

    /// One URL per cluster node, password included.
    fn cluster_node_urls(&self) -> Vec<String> {
        let userinfo = self.userinfo();
        self.cluster_nodes
            .iter()
            .map(|node| format!("redis://{userinfo}{node}"))
            .collect()
    }

    /// `USER:PASSWORD@` percent-encoded, password included, or nothing.
    fn userinfo(&self) -> String {
        let mut userinfo = String::new();
        if let Some(user) = self.credentials.user() {
            userinfo.push_str(&utf8_percent_encode(user, NON_ALPHANUMERIC).to_string());
        }
        if let Some(password) = self.credentials.password() {
            userinfo.push(':');
            userinfo.push_str(&utf8_percent_encode(password, NON_ALPHANUMERIC).to_string());
        }
        if !userinfo.is_empty() {
            userinfo.push('@');
        }
        userinfo
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

/// The message of an error made by [`invalid`], without its `backend URL: ` lead.
fn reason(e: &coord_core::Error) -> String {
    let text = match e {
        coord_core::Error::InvalidArgument { message } => message.as_str(),
        _ => return e.to_string(),
    };
    text.strip_prefix("backend URL: ")
        .unwrap_or(text)
        .to_owned()
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
        backend_url::join_url(&base, &query)
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

    #[tokio::test]
    async fn tls_is_refused_without_showing_the_password() {
        let options = RedisOptions::parse_url("rediss://u:hunter2@127.0.0.1").unwrap();
        let e = RedisBackend::connect(options).await.unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        let e = e.to_string();
        assert!(e.contains("TLS"), "{e}");
        assert!(
            e.contains("rediss://u:***@127.0.0.1:6379") && !e.contains("hunter2"),
            "{e}"
        );
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
        assert_eq!(
            o.cluster_node_urls(),
            [
                "redis://app:hunter2@10.0.0.1:7000",
                "redis://app:hunter2@node-b:6379",
                "redis://app:hunter2@[::1]:7002"
            ]
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
    fn namespaces_keep_their_hash_tag_intact() {
        let options = RedisOptions::parse_url("redis://h").unwrap();
        assert_eq!(options.namespace_name(), DEFAULT_NAMESPACE);
        assert!(options.clone().namespace("a{b").is_err());
        assert!(options.clone().namespace("").is_err());
        assert_eq!(options.namespace("t1").unwrap().namespace_name(), "t1");
    }
}
