//! The Redis backend for `coord`: a skeleton. `redis://` and `rediss://` URLs parse into
//! [`RedisOptions`], and `coord::connect` reaches this crate through them, but
//! [`RedisBackend::connect`] says the backend is not implemented yet.
//!
//! ```
//! use coord_core::UrlOptions;
//! use coord_redis::RedisOptions;
//!
//! let options = RedisOptions::parse_url("rediss://app:s3cret@cache.internal/2").unwrap();
//! assert_eq!((options.host(), options.port(), options.db()), ("cache.internal", 6379, 2));
//! assert_eq!(options.redacted_url(), "rediss://app:***@cache.internal:6379/2");
//! ```

use std::convert::Infallible;
use std::time::Duration;

use async_trait::async_trait;
use coord_core::backend_url::{
    self, Credentials, Host, Query, TlsFiles, Url, UrlOptions, format_duration, invalid,
};
use coord_core::{
    BackendInfo, CoordinationBackend, Error, LeaseGrant, LeaseId, LeaseStatus, RangeRequest,
    RangeResponse, Result, Revision, TxnRequest, TxnResponse, WatchRequest, WatchStream,
};

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
}

impl RedisOptions {
    /// Parses a `redis://` or `rediss://` URL. The query parameters are `user`, `password`
    /// (or `USER:PASSWORD@`), `cacert`, `cert`, `key`, `tls_domain` (TLS only),
    /// `connect_timeout` and `request_timeout`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming what is wrong: another scheme, no host or several,
    /// a bad port, a database that is not a number, an unknown or repeated query parameter,
    /// a TLS file on `redis://`. Never repeats the password.
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

/// The Redis backend. Not implemented yet: no value of this type can be made, and
/// [`RedisBackend::connect`] says so.
#[derive(Debug)]
pub struct RedisBackend {
    /// Stands for the connection state to come; uninhabited, so the trait methods below
    /// need no body.
    never: Infallible,
}

impl RedisBackend {
    /// Would connect to the server the options name.
    ///
    /// # Errors
    /// Always [`Error::InvalidArgument`]: the Redis backend is not implemented yet.
    pub async fn connect(options: RedisOptions) -> Result<RedisBackend> {
        Err(Error::invalid_argument(format!(
            "{}: the Redis backend is not implemented yet",
            options.redacted_url()
        )))
    }
}

#[async_trait]
impl CoordinationBackend for RedisBackend {
    fn info(&self) -> BackendInfo {
        match self.never {}
    }
    async fn lease_grant(&self, _ttl: Duration) -> Result<LeaseGrant> {
        match self.never {}
    }
    async fn lease_keep_alive(&self, _lease: LeaseId) -> Result<Duration> {
        match self.never {}
    }
    async fn lease_revoke(&self, _lease: LeaseId) -> Result<()> {
        match self.never {}
    }
    async fn lease_time_to_live(&self, _lease: LeaseId) -> Result<LeaseStatus> {
        match self.never {}
    }
    async fn range(&self, _request: RangeRequest) -> Result<RangeResponse> {
        match self.never {}
    }
    async fn txn(&self, _request: TxnRequest) -> Result<TxnResponse> {
        match self.never {}
    }
    async fn watch(&self, _request: WatchRequest) -> Result<WatchStream> {
        match self.never {}
    }
    async fn current_revision(&self) -> Result<Revision> {
        match self.never {}
    }
    async fn compact(&self, _revision: Revision) -> Result<()> {
        match self.never {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    async fn connecting_says_the_backend_is_not_implemented_yet() {
        let options = RedisOptions::parse_url("rediss://u:hunter2@127.0.0.1").unwrap();
        let e = options.connect().await.unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        let e = e.to_string();
        assert!(
            e.contains("the Redis backend is not implemented yet"),
            "{e}"
        );
        assert!(
            e.contains("rediss://u:***@127.0.0.1:6379") && !e.contains("hunter2"),
            "{e}"
        );
    }
}
