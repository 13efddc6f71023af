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
//! the namespace's keys, or calls fail with `Error::PermissionDenied`. `coord::connect` takes these URLs with the `redis` feature; without
//! the facade connect with [`RedisBackend::connect`].
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

pub use backend::{LEASE_GRANULARITY, MAX_LEASE_TTL, MIN_LEASE_TTL, REAP_INTERVAL, RedisBackend};

/// The namespace a client works in unless told otherwise ([`RedisOptions::namespace`]).
pub const DEFAULT_NAMESPACE: &str = "coord";

/// The Redis port, for a host given without one.
pub const DEFAULT_PORT: u16 = 6379;

/// How to reach a Redis server, from a `redis://[USER:PASSWORD@]HOST[:PORT][/DB]` (plain
/// text) or `rediss://...` (TLS) URL. `Debug` never shows the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    host: String,
    port: u16,
    db: u32,
    tls: bool,
    credentials: Credentials,
    tls_files: TlsFiles,
    connect_timeout: Option<Duration>,
    request_timeout: Option<Duration>,
    namespace: String,
}

impl RedisOptions {
    /// Parses a `redis://` or `rediss://` URL. The query parameters are `user`, `password`
    /// (or `USER:PASSWORD@`), `cacert`, `cert`, `key`, `tls_domain` (TLS only),
    /// `connect_timeout` and `request_timeout`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](coord_core::Error::InvalidArgument) naming what is wrong: another scheme, no host or several,
    /// a bad port, a database that is not a number, an unknown or repeated query parameter,
    /// a TLS file on `redis://`, a `tls_domain` that is neither a DNS name nor an IP
    /// address. Never repeats the password.
    pub fn from_url(url: &Url) -> Result<RedisOptions> {
        let scheme = url.scheme();
        let tls = match scheme {
            "redis" => false,
            "rediss" => true,
            other => {
                return Err(invalid(format!(
                    "not a redis:// or rediss:// URL (scheme {other:?})"
                )));
            }
        };
        let host = match url.host() {
            None | Some(Host::Domain("")) => {
                return Err(invalid(format!("{scheme}:// needs a HOST[:PORT]")));
            }
            Some(Host::Domain(name)) if name.contains(',') => {
                return Err(invalid(format!(
                    "{scheme}:// takes one HOST[:PORT], got several"
                )));
            }
            Some(Host::Domain(name))
                if !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) =>
            {
                return Err(invalid(format!("bad host name {name:?}")));
            }
            Some(_) => url.host_str().unwrap_or_default().to_owned(),
        };
        let db = match url.path().trim_start_matches('/') {
            "" => 0,
            db => db.parse().map_err(|_| {
                invalid(format!(
                    "the Redis database in the path must be a number, got {db:?}"
                ))
            })?,
        };
        let mut query = Query::of(url)?;
        let credentials = Credentials::take(url, &mut query)?;
        let tls_files = TlsFiles::take(&mut query, scheme, tls, "rediss")?;
        if let Some(domain) = &tls_files.tls_domain {
            check_tls_domain(domain)?;
        }
        let connect_timeout = query.take_duration("connect_timeout")?;
        let request_timeout = query.take_duration("request_timeout")?;
        query.finish(scheme, Self::QUERY_PARAMETERS)?;
        Ok(RedisOptions {
            host,
            port: url.port().unwrap_or(DEFAULT_PORT),
            db,
            tls,
            credentials,
            tls_files,
            connect_timeout,
            request_timeout,
            namespace: DEFAULT_NAMESPACE.to_owned(),
        })
    }

    /// The host: a name, an IPv4 address, or an IPv6 address in brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The database number (`SELECT`), 0 unless the URL's path gives one.
    pub fn db(&self) -> u32 {
        self.db
    }

    /// Whether the scheme is `rediss`.
    pub fn tls(&self) -> bool {
        self.tls
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

#[async_trait]
impl UrlOptions for RedisOptions {
    type Backend = RedisBackend;
    const URL_FORMS: &'static [&'static str] = &[
        "redis://[USER:PASSWORD@]HOST[:PORT][/DB]",
        "rediss://[USER:PASSWORD@]HOST[:PORT][/DB] (TLS)",
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
        RedisOptions::from_url(&backend_url::parse(url)?)
    }

    fn redacted_url(&self) -> String {
        let mut base = format!(
            "{}://{}{}:{}",
            if self.tls { "rediss" } else { "redis" },
            self.credentials.redacted_userinfo(),
            self.host,
            self.port
        );
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
        assert!(err("redis://a:1,b:2").contains("bad port"));
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
    fn namespaces_keep_their_hash_tag_intact() {
        let options = RedisOptions::parse_url("redis://h").unwrap();
        assert_eq!(options.namespace_name(), DEFAULT_NAMESPACE);
        assert!(options.clone().namespace("a{b").is_err());
        assert!(options.clone().namespace("").is_err());
        assert_eq!(options.namespace("t1").unwrap().namespace_name(), "t1");
    }
}
