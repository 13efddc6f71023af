//! `connect(url)`: a backend chosen by URL scheme from the table in `lib.rs`.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use coord_core::backend_url::{self, Query, format_duration, invalid};
use coord_core::{
    CoordinationBackend, DEFAULT_SESSION_TTL, Namespaced, Result, Session, SessionBuilder,
};

use crate::registry::{self, KnownBackend, ParsedUrl};

/// Connects to the backend a URL names, with the options in its query string.
///
#[doc = include_str!("backend_urls.md")]
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
/// [`Error::InvalidArgument`](coord_core::Error::InvalidArgument) naming what is wrong
/// with the URL (never echoing a password), or naming the cargo feature to enable when the
/// scheme's backend is not compiled in; the backend's own connect errors
/// ([`Error::Unavailable`](coord_core::Error::Unavailable) when no server answers,
/// [`Error::Unauthenticated`](coord_core::Error::Unauthenticated) for wrong or missing
/// credentials and for TLS failures retrying cannot fix,
/// [`Error::InvalidArgument`](coord_core::Error::InvalidArgument) for TLS files that are
/// missing or not PEM).
///
/// # Cancel safety
/// Cancel safe: dropping the future drops the connection being made.
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
    /// The backend as its own type, for [`Connection::backend_as`].
    concrete: Option<Arc<dyn Any + Send + Sync>>,
}

impl Connection {
    /// Wraps a backend made by hand, with the session TTL that [`Connection::session`]
    /// should use.
    pub fn new(backend: Arc<dyn CoordinationBackend>, session_ttl: Duration) -> Self {
        let description = format!("{}://", backend.info().name);
        Connection {
            backend,
            session_ttl,
            description,
            concrete: None,
        }
    }

    /// Wraps a backend made by hand (e.g. a configured `MemoryBackend` in a test), keeping
    /// it reachable as its own type through [`Connection::backend_as`].
    pub fn from_backend<B: CoordinationBackend>(backend: B, session_ttl: Duration) -> Self {
        let backend = Arc::new(backend);
        let mut conn = Connection::new(backend.clone(), session_ttl);
        conn.concrete = Some(backend);
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

    /// The backend as its own type `B`, for what only it offers: the in-memory backend's
    /// fault hooks (`expire_lease_now`, `partition`, ...), say. `None` when the backend is
    /// of another type, or was given to [`Connection::new`]. It sees keys as they are
    /// stored: a URL's `namespace` is applied on top of it, in [`Connection::backend`],
    /// except on Redis, whose backend works in the namespace itself (see
    /// [`ConnectOptions::namespace`]).
    ///
    /// ```
    /// # #[cfg(feature = "memory")]
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> coord::Result<()> {
    /// use coord::memory::MemoryBackend;
    ///
    /// let conn = coord::connect("memory://hooks-example").await?;
    /// let memory = conn.backend_as::<MemoryBackend>().expect("a memory:// connection");
    /// memory.fail_next(1); // the next call fails with Error::Unavailable
    /// # Ok(())
    /// # }
    /// # #[cfg(not(feature = "memory"))]
    /// # fn main() {}
    /// ```
    pub fn backend_as<B: CoordinationBackend>(&self) -> Option<&B> {
        self.concrete.as_ref()?.downcast_ref()
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

/// Connection settings: parsed from a URL with [`ConnectOptions::parse`], adjusted with the
/// builder methods for the options every scheme shares (which override what the URL's
/// query string said), then [`connect`](ConnectOptions::connect)ed. Clone it to connect
/// again (e.g. one connection per worker).
///
/// The backend's own options (credentials, TLS files, timeouts) go in the URL; to set them
/// in code, build the backend's options type (`coord::etcd::EtcdOptions`) and wrap the
/// backend with [`Connection::from_backend`].
///
/// ```
/// # #[cfg(feature = "memory")]
/// # fn main() -> coord::Result<()> {
/// use std::time::Duration;
///
/// let options = coord::ConnectOptions::parse("memory://jobs?ttl=5s")?
///     .namespace("myapp/")
///     .ttl(Duration::from_secs(15));
/// assert_eq!(options.scheme(), "memory");
/// assert_eq!(options.redacted_url(), "memory://jobs?namespace=myapp/&ttl=15s");
/// # Ok(())
/// # }
/// # #[cfg(not(feature = "memory"))]
/// # fn main() {}
/// ```
#[derive(Clone)]
#[must_use = "options do nothing until `connect` is called"]
pub struct ConnectOptions {
    scheme: &'static str,
    backend: Arc<dyn ParsedUrl>,
    namespace: Option<String>,
    ttl: Option<Duration>,
}

impl ConnectOptions {
    /// Parses a backend URL (see [`connect`] for the forms and query parameters): takes
    /// out the query parameters every scheme shares, and has the scheme's backend parse
    /// the rest.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](coord_core::Error::InvalidArgument) naming the part of
    /// the URL that is wrong: no or unknown scheme, a scheme whose backend this build
    /// lacks, a bad `namespace` or `ttl`, or whatever the backend finds wrong. A password
    /// is never repeated in the message.
    pub fn parse(url: &str) -> Result<Self> {
        backend_url::check_text(url)?;
        let Some((scheme, _)) = url.split_once("://") else {
            return Err(invalid(format!(
                "no scheme: expected {}",
                every_scheme().join(", ")
            )));
        };
        let Some((entry, scheme)) = registry::find(&scheme.to_ascii_lowercase()) else {
            return Err(invalid(format!(
                "unknown scheme {scheme:?}: expected {}",
                every_scheme().join(", ")
            )));
        };
        let Some(parse) = entry.parse else {
            return Err(feature_missing(scheme, entry));
        };
        if url.contains('#') {
            return Err(invalid("a fragment (`#...`) is not allowed"));
        }
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut query = Query::parse(query)?;
        let namespace = query.take_or_empty("namespace").filter(|ns| !ns.is_empty());
        let ttl = query.take_duration("ttl")?;
        let rest = if query.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", query.encode())
        };
        Ok(ConnectOptions {
            scheme,
            backend: parse(&rest)?,
            namespace,
            ttl,
        })
    }

    /// Prefixes every key with `prefix` (usually ending in `/`), so that applications can
    /// share one store or cluster: the backend is wrapped in a [`Namespaced`].
    ///
    /// The prefix is joined to names as raw bytes, as etcd's namespace does: without a
    /// trailing `/`, namespace `app` and name `x` make `appx`, the same keys as namespace
    /// `ap` and name `px`. End a namespace with `/` unless you mean that.
    ///
    /// On Redis the namespace is the backend's own key space instead: every Redis key of
    /// it starts with the hash tag `{prefix}` (which must then hold no `{` or `}`), with its
    /// own revisions, leases and event stream. An ACL key pattern `~{prefix}*` confines a
    /// user to it, and a Redis Cluster places each namespace on the master of its slot.
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

    /// The URL scheme, lowercase: `memory`, `etcd`, `etcds`, ...
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// The namespace prefix, if any.
    pub fn namespace_prefix(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The session TTL, if one was given.
    pub fn session_ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// The URL these options describe, as the backend writes it back with every secret
    /// replaced by `***`, `namespace` and `ttl` first in the query string.
    pub fn redacted_url(&self) -> String {
        let url = self.backend.redacted_url();
        let (base, backend_query) = url.split_once('?').unwrap_or((&url, ""));
        let mut query = Vec::new();
        if let Some(ns) = &self.namespace {
            query.push(format!("namespace={}", backend_url::encode(ns)));
        }
        if let Some(ttl) = self.ttl {
            query.push(format!("ttl={}", format_duration(ttl)));
        }
        if !backend_query.is_empty() {
            query.push(backend_query.to_owned());
        }
        if query.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", query.join("&"))
        }
    }

    /// Connects.
    ///
    /// # Errors
    /// As [`connect`].
    pub async fn connect(self) -> Result<Connection> {
        let connected = self.backend.connect(self.namespace.as_deref()).await?;
        let backend = match &self.namespace {
            Some(ns) if !connected.owns_namespace => {
                Arc::new(Namespaced::new(connected.backend, ns.as_bytes()))
            }
            _ => connected.backend,
        };
        Ok(Connection {
            backend,
            session_ttl: self.ttl.unwrap_or(DEFAULT_SESSION_TTL),
            description: self.redacted_url(),
            concrete: Some(connected.concrete),
        })
    }
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("url", &self.redacted_url())
            .finish()
    }
}

/// Every scheme of [`registry::known_backends`], as `memory://`.
fn every_scheme() -> Vec<String> {
    registry::known_backends()
        .iter()
        .flat_map(|b| b.schemes())
        .map(|s| format!("{s}://"))
        .collect()
}

/// The cargo features of this build that add backends.
fn enabled_backend_features() -> Vec<&'static str> {
    registry::known_backends()
        .iter()
        .filter(|b| b.is_enabled())
        .map(|b| b.feature())
        .collect()
}

fn feature_missing(scheme: &str, backend: &KnownBackend) -> coord_core::Error {
    let enabled = enabled_backend_features();
    let enabled = if enabled.is_empty() {
        "none".to_owned()
    } else {
        enabled.join(", ")
    };
    let feature = backend.feature();
    coord_core::Error::invalid_argument(format!(
        "{scheme}:// URLs need coord's cargo feature \"{feature}\", which this build does not have \
         (backend features enabled: {enabled}); build with `--features {feature}`"
    ))
}

#[cfg(test)]
mod tests {
    use coord_core::Error;

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

    #[cfg(feature = "memory")]
    #[test]
    fn namespace_and_ttl_are_taken_for_every_scheme_and_the_rest_left_to_the_backend() {
        let o = ConnectOptions::parse("memory://").unwrap();
        assert_eq!(
            (o.scheme(), o.redacted_url().as_str()),
            ("memory", "memory://")
        );
        let o = ConnectOptions::parse("MEMORY://tests?ttl=500ms&namespace=a/").unwrap();
        assert_eq!(o.session_ttl(), Some(Duration::from_millis(500)));
        assert_eq!(o.namespace_prefix(), Some("a/"));
        assert_eq!(o.redacted_url(), "memory://tests?namespace=a/&ttl=500ms");
        let o = o.namespace("").ttl(Duration::from_secs(3));
        assert_eq!(o.redacted_url(), "memory://tests?ttl=3s");
        assert!(err("memory://x/y").contains("path"));
        assert!(err("memory://u:p@x").contains("credentials"));
        let e = err("memory://?colour=blue");
        assert!(e.contains("unknown query parameter `colour`"), "{e}");
        assert!(err("memory://?ttl=1s&ttl=2s").contains("`ttl` given twice"));
    }

    #[cfg(feature = "etcd")]
    #[test]
    fn the_backend_gets_the_url_without_namespace_and_ttl_and_writes_it_back_redacted() {
        let o = ConnectOptions::parse(
            "etcds://alice:p%40ss@h:1,h2?namespace=app%2F&cacert=/ca.pem&ttl=15&password_file=x",
        );
        let e = o.unwrap_err().to_string();
        assert!(e.contains("unknown query parameter `password_file`"), "{e}");
        assert!(!e.contains("p@ss") && !e.contains("p%40ss"), "{e}");
        let o = ConnectOptions::parse(
            "etcds://alice:p%40ss@h:1,h2?namespace=app%2F&cacert=/ca+b.pem&ttl=15",
        )
        .unwrap();
        assert_eq!(o.scheme(), "etcds");
        assert_eq!(o.namespace_prefix(), Some("app/"));
        let shown = format!("{} {o:?}", o.redacted_url());
        assert!(
            !shown.contains("p@ss") && !shown.contains("p%40ss"),
            "{shown}"
        );
        assert_eq!(
            o.redacted_url(),
            "etcds://alice:***@h:1,h2:2379?namespace=app/&ttl=15s&cacert=/ca%2Bb.pem"
        );
    }

    #[test]
    fn bad_urls_name_the_problem() {
        let e = err("127.0.0.1:2379");
        assert!(
            e.contains("no scheme") && e.contains("memory://, etcd://"),
            "{e}"
        );
        assert!(err("zk://h:1").contains("unknown scheme \"zk\""));
        assert!(err("://h").contains("unknown scheme \"\""));
        assert!(err("memory://h :1").contains("spaces"));
        assert!(err("memory://?ttl=ten").contains("ttl"));
        assert!(err("memory://?ttl=0").contains("positive"));
        assert!(err("memory://?ttl=").contains("needs a value"));
        assert!(err("memory://x#frag").contains("fragment"));
        assert!(err("memory://?namespace=%zz").contains("percent-encoding"));
    }

    #[test]
    fn the_table_lists_each_scheme_once_and_the_docs_show_every_one() {
        let schemes: Vec<_> = registry::known_backends()
            .iter()
            .flat_map(|b| b.schemes())
            .collect();
        let mut unique = schemes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), schemes.len(), "{schemes:?}");
        let doc = include_str!("backend_urls.md");
        for scheme in schemes {
            assert!(
                doc.contains(&format!("| `{scheme}://")),
                "{scheme}:// is not in the docs"
            );
        }
    }

    /// The README shows the same section, which GitHub cannot include from a file.
    #[test]
    fn the_readme_shows_the_backend_url_section_and_feature_table_as_the_docs_do() {
        let readme = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
        let Ok(readme) = std::fs::read_to_string(readme) else {
            return; // a packaged crate has no workspace README
        };
        assert!(
            readme.contains(include_str!("backend_urls.md")),
            "README.md's \"Backend URLs\" section differs from coord/src/backend_urls.md"
        );
        assert!(
            readme.contains(include_str!("features.md")),
            "README.md's \"Cargo features\" table differs from coord/src/features.md"
        );
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
        assert_eq!(a.to_string(), "memory://share-test");
        assert_eq!(c.to_string(), "memory://share-test?namespace=x/");
        let raw = c.backend_as::<coord_memory::MemoryBackend>().unwrap();
        assert!(raw.get(b"x/k").await.unwrap().is_some());
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
    async fn an_unreachable_redis_is_unavailable_without_showing_the_password() {
        let e = connect("redis://u:hunter2@127.0.0.1:1?namespace=a/")
            .await
            .unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
