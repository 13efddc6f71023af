//! The connections of a backend: one shared (multiplexed) connection for every script and
//! plain command, replaced on the next call after it breaks, and dedicated ones for
//! blocking reads. TLS (`rediss://`) and credentials apply to both. To one server, or to a
//! Redis Cluster (see the `cluster` module below), behind one [`Connection`] type.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use coord_core::{Error, Result, UrlOptions};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, ServerErrorKind,
    Value,
};
use tokio::sync::Mutex;

use crate::RedisOptions;

/// Time allowed to reach the server unless the URL says otherwise.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed per request unless the URL says otherwise. The redis crate's own default
/// (500 ms) would cut a script that waits behind a slow one on a loaded server.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Maps a redis-rs error to the kind a caller can act on. `context` says what failed (and,
/// for a connection, where, as a redacted URL); it never holds a password, nor does the
/// redis error (the server's `WRONGPASS` reply does not repeat it).
pub(crate) fn redis_error(context: &str, e: RedisError) -> Error {
    let message = format!("redis {context}: {e}");
    match e.kind() {
        ErrorKind::AuthenticationFailed => Error::unauthenticated(message),
        ErrorKind::Server(ServerErrorKind::NoPerm) => Error::PermissionDenied { message },
        // The server is starting (LOADING: reading its AOF or RDB after a restart), has no
        // healthy primary, or is busy: the same call may succeed later.
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::MasterDown
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown,
        ) => Error::unavailable_with_source(message, e),
        ErrorKind::InvalidClientConfig => Error::InvalidArgument { message },
        // Redis 7.0 answers a script's access to a key or command its user may not touch
        // with a plain ERR ("The user executing the script can't access at least one of
        // the keys ...", Redis `script.c`), not NOPERM.
        ErrorKind::Server(ServerErrorKind::ResponseError)
            if e.detail()
                .is_some_and(|d| d.contains("user executing the script can't")) =>
        {
            Error::PermissionDenied { message }
        }
        _ => match e.code() {
            // NOAUTH: the server wants a password and none was given. WRONGPASS also comes
            // back from a plain `AUTH` command, outside the handshake.
            Some("NOAUTH" | "WRONGPASS") => Error::unauthenticated(message),
            // A script that ran past `busy-reply-threshold` holds the server.
            Some("BUSY") => Error::unavailable_with_source(message, e),
            _ if e.is_io_error() => Error::unavailable_with_source(message, e),
            _ => Error::backend_with_source("redis", message, e),
        },
    }
}

/// Whether the connection that gave `e` must be replaced: it broke (EOF, reset, a
/// timed-out read that may leave a late reply in the stream) or lost its framing.
fn needs_reconnect(e: &RedisError) -> bool {
    e.is_io_error() || e.is_unrecoverable_error()
}

pub(crate) struct Connections {
    kind: Kind,
}

enum Kind {
    Single {
        client: redis::Client,
        config: AsyncConnectionConfig,
        shared: Arc<Shared>,
        db: i64,
    },
    Cluster(cluster::ClusterConnections),
}

/// A connection to the server, or to the cluster (each command routed to the master of its
/// key's slot). Cheap to clone: clones share the underlying connection.
#[derive(Clone)]
pub(crate) enum Connection {
    /// The shared connection to one server, made again after it breaks.
    Shared(SharedConnection),
    /// A dedicated connection to one server (a blocking reader's).
    Dedicated(MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Shared(c) => c.req_packed_command(cmd),
            Connection::Dedicated(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Shared(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Dedicated(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Shared(c) => c.get_db(),
            Connection::Dedicated(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

fn connect_timeout(options: &RedisOptions) -> Duration {
    options.connect_timeout().unwrap_or(DEFAULT_CONNECT_TIMEOUT)
}

fn request_timeout(options: &RedisOptions) -> Duration {
    options.request_timeout().unwrap_or(DEFAULT_REQUEST_TIMEOUT)
}

impl Connections {
    /// Reads the TLS files, builds the client and connects the shared connection.
    pub(crate) async fn open(options: &RedisOptions) -> Result<Connections> {
        if options.is_cluster() {
            let cluster = cluster::ClusterConnections::open(options).await?;
            return Ok(Connections {
                kind: Kind::Cluster(cluster),
            });
        }
        let url = options.redacted_url();
        let client = client(options, &url)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout(options)))
            .set_response_timeout(Some(request_timeout(options)));
        // The client is built for the tls_domain name (what rustls checks the certificate
        // against); this resolver sends its connections to the real host.
        #[cfg(feature = "tls")]
        let config = match options.tls_files().tls_domain {
            Some(_) => config.set_dns_resolver(HostResolver {
                host: options.host().trim_matches(['[', ']']).to_owned(),
            }),
            None => config,
        };
        let shared = Arc::new(Shared {
            client: client.clone(),
            config: config.clone(),
            live: RwLock::new(None),
            state: Mutex::new(State::default()),
        });
        shared
            .current()
            .await
            .map_err(|e| connect_error(options, redis_error(&format!("connect to {url}"), e)))?;
        Ok(Connections {
            kind: Kind::Single {
                client,
                config,
                shared,
                db: i64::from(options.db()),
            },
        })
    }

    /// The shared connection, for every call that answers at once. After it breaks (a
    /// server restart, a dropped socket, a timeout) the call that saw it fails and the
    /// next one connects again.
    pub(crate) fn command(&self) -> Connection {
        match &self.kind {
            Kind::Single { shared, db, .. } => Connection::Shared(SharedConnection {
                shared: shared.clone(),
                db: *db,
            }),
            Kind::Cluster(cluster) => Connection::Cluster(cluster.shared.clone()),
        }
    }

    /// A new connection of its own with no response timeout, for `XREAD BLOCK`: a blocking
    /// read on the shared connection would hold up every call queued behind it.
    pub(crate) async fn blocking(&self) -> Result<Connection> {
        match &self.kind {
            Kind::Single { client, config, .. } => {
                let config = config.clone().set_response_timeout(None);
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(Connection::Dedicated)
                    .map_err(|e| redis_error("connect a blocking reader", e))
            }
            Kind::Cluster(cluster) => cluster.blocking().await.map(Connection::Cluster),
        }
    }
}

/// `USER:PASSWORD@` percent-encoded, password included, or nothing.
fn userinfo(options: &RedisOptions) -> String {
    let mut userinfo = String::new();
    let credentials = options.credentials();
    if let Some(user) = credentials.user() {
        userinfo.push_str(&utf8_percent_encode(user, NON_ALPHANUMERIC).to_string());
    }
    if let Some(password) = credentials.password() {
        userinfo.push(':');
        userinfo.push_str(&utf8_percent_encode(password, NON_ALPHANUMERIC).to_string());
    }
    if !userinfo.is_empty() {
        userinfo.push('@');
    }
    userinfo
}

/// One URL per cluster node, password included.
fn cluster_node_urls(options: &RedisOptions) -> Vec<String> {
    let userinfo = userinfo(options);
    options
        .cluster_nodes()
        .iter()
        .map(|node| format!("redis://{userinfo}{node}"))
        .collect()
}

/// The redis crate's client for `options`: credentials, database, TLS material.
fn client(options: &RedisOptions, url: &str) -> Result<redis::Client> {
    let userinfo = userinfo(options);
    // Errors below name `url`, never `connection_url`: it holds the password.
    let bad = |e: RedisError| Error::invalid_argument(format!("{url}: {e}"));
    if !options.tls() {
        let connection_url = format!(
            "redis://{userinfo}{}:{}/{}",
            options.host(),
            options.port(),
            options.db()
        );
        return redis::Client::open(connection_url).map_err(bad);
    }
    tls_client(options, url, &userinfo)
}

#[cfg(not(feature = "tls"))]
fn tls_client(_options: &RedisOptions, url: &str, _userinfo: &str) -> Result<redis::Client> {
    Err(Error::invalid_argument(format!(
        "{url}: this build of coord-redis has no TLS (enable its `tls` feature for rediss://)"
    )))
}

/// The client for a `rediss://` URL: the CA, the client certificate and key, read now so
/// that a missing file is an error naming it.
#[cfg(feature = "tls")]
fn tls_client(options: &RedisOptions, url: &str, userinfo: &str) -> Result<redis::Client> {
    use coord_core::tls::PemKind;
    use redis::{ClientTlsConfig, TlsCertificates};

    let bad = |e: RedisError| Error::invalid_argument(format!("{url}: {e}"));
    let files = options.tls_files();
    // rustls checks the server's certificate against the URL's host, so the client is
    // built for tls_domain when one is given (the resolver in `open` keeps the address).
    let name = match &files.tls_domain {
        Some(domain) => match domain.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
            _ => domain.clone(),
        },
        None => options.host().to_owned(),
    };
    let connection_url = format!(
        "rediss://{userinfo}{name}:{}/{}",
        options.port(),
        options.db()
    );
    let client_tls = match (&files.cert_file, &files.key_file) {
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read(url, "cert", cert, PemKind::Certificates)?,
            client_key: read(url, "key", key, PemKind::PrivateKey)?,
        }),
        _ => None,
    };
    let root_cert = files
        .ca_file
        .as_deref()
        .map(|ca| read(url, "cacert", ca, PemKind::Certificates))
        .transpose()?;
    // rustls needs a process-wide crypto provider when more than one is compiled in (an
    // application may enable aws-lc-rs); ring is the one this crate brings. Installing
    // fails harmlessly when one is already there.
    let _ = rustls::crypto::ring::default_provider().install_default();
    redis::Client::build_with_tls(
        connection_url,
        TlsCertificates {
            client_tls,
            root_cert,
        },
    )
    .map_err(bad)
}

/// Reads a TLS file named by the URL parameter `parameter`, checked to hold `kind`.
#[cfg(feature = "tls")]
fn read(
    url: &str,
    parameter: &str,
    path: &std::path::Path,
    kind: coord_core::tls::PemKind,
) -> Result<Vec<u8>> {
    coord_core::tls::read_pem(parameter, path, kind).map_err(|e| match e {
        Error::InvalidArgument { message } => Error::invalid_argument(format!("{url}: {message}")),
        e => e,
    })
}

/// A failure to connect, with TLS failures made permanent ([`coord_core::tls`]).
fn connect_error(options: &RedisOptions, e: Error) -> Error {
    let schemes = if options.is_cluster() {
        ("redis+cluster", "rediss+cluster")
    } else {
        ("redis", "rediss")
    };
    coord_core::tls::connect_error(
        e,
        coord_core::tls::Schemes {
            tls: options.tls(),
            plain: schemes.0,
            secure: schemes.1,
        },
    )
}

/// Resolves every name to the configured host: with `tls_domain` the redis crate is given
/// the certificate's name as host, and this keeps the connection going to the URL's host.
#[cfg(feature = "tls")]
struct HostResolver {
    host: String,
}

#[cfg(feature = "tls")]
impl redis::io::AsyncDNSResolver for HostResolver {
    fn resolve<'a, 'b: 'a>(
        &'a self,
        _name: &'b str,
        port: u16,
    ) -> RedisFuture<'a, Box<dyn Iterator<Item = std::net::SocketAddr> + Send + 'a>> {
        Box::pin(async move {
            let addresses = tokio::net::lookup_host((self.host.as_str(), port)).await?;
            Ok(Box::new(addresses) as Box<dyn Iterator<Item = std::net::SocketAddr> + Send>)
        })
    }
}

/// The shared connection and how to make it again.
struct Shared {
    client: redis::Client,
    config: AsyncConnectionConfig,
    /// The live connection, `None` after it broke until a call connects again. Every call
    /// reads it; a read lock held only to clone it keeps that path free of waiting (the
    /// async mutex below is taken only when there is no live connection).
    live: RwLock<Option<Current>>,
    /// Held while connecting, so calls during an outage wait for one attempt instead of
    /// each opening a connection.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The last connection attempt's failure and when it ended: a call that waited for
    /// that attempt gets its error instead of trying again, so a burst of calls during an
    /// outage (say, a paused server) waits for one connect timeout, not one each.
    failure: Option<(Instant, RedisError)>,
    /// Numbers the connections.
    generations: u64,
}

#[derive(Clone)]
struct Current {
    connection: MultiplexedConnection,
    /// Tells connections apart, so a late failure on a replaced one does not drop its
    /// replacement.
    generation: u64,
}

impl Shared {
    fn live(&self) -> Option<Current> {
        self.live
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn current(&self) -> redis::RedisResult<Current> {
        if let Some(live) = self.live() {
            return Ok(live);
        }
        let asked = Instant::now();
        let mut state = self.state.lock().await;
        // Another call may have connected while this one waited.
        if let Some(live) = self.live() {
            return Ok(live);
        }
        if let Some((ended, e)) = &state.failure
            && *ended >= asked
        {
            return Err(e.clone());
        }
        match self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
        {
            Ok(connection) => {
                state.generations += 1;
                let live = Current {
                    connection,
                    generation: state.generations,
                };
                *self.live.write().unwrap_or_else(PoisonError::into_inner) = Some(live.clone());
                state.failure = None;
                Ok(live)
            }
            Err(e) => {
                state.failure = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    /// Drops the connection of `generation` after it gave `e`, when `e` says it broke.
    fn failed(&self, generation: u64, e: &RedisError) {
        if !needs_reconnect(e) {
            return;
        }
        let mut live = self.live.write().unwrap_or_else(PoisonError::into_inner);
        if live.as_ref().is_some_and(|c| c.generation == generation) {
            tracing::debug!(error = %e, "redis backend: the shared connection broke; the next call reconnects");
            *live = None;
        }
    }

    async fn with<T>(
        &self,
        call: impl AsyncFnOnce(&mut MultiplexedConnection) -> redis::RedisResult<T>,
    ) -> redis::RedisResult<T> {
        let Current {
            mut connection,
            generation,
        } = self.current().await?;
        let result = call(&mut connection).await;
        if let Err(e) = &result {
            self.failed(generation, e);
        }
        result
    }
}

/// A handle to the shared connection: redis commands and scripts run on it as on a
/// `MultiplexedConnection`, and a broken connection is replaced on the next call. A
/// failed call is not retried: a script cut off mid-flight may have run.
#[derive(Clone)]
pub(crate) struct SharedConnection {
    shared: Arc<Shared>,
    db: i64,
}

impl ConnectionLike for SharedConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(
            self.shared
                .with(async move |c: &mut MultiplexedConnection| c.req_packed_command(cmd).await),
        )
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(
            self.shared
                .with(async move |c: &mut MultiplexedConnection| {
                    c.req_packed_commands(pipeline, offset, count).await
                }),
        )
    }

    fn get_db(&self) -> i64 {
        self.db
    }
}

/// Redis Cluster: the redis crate's cluster client finds every master from the seed nodes
/// of the URL, and routes each command by its key's slot (following `MOVED` and `ASK`).
/// Every key of a namespace is in the slot of its hash tag, so one master serves it all.
mod cluster {
    use redis::cluster::{ClusterClient, ClusterConfig};
    use redis::cluster_async::ClusterConnection;

    use super::{Error, RedisOptions, Result, UrlOptions, connect_timeout, redis_error};

    pub(super) struct ClusterConnections {
        /// No overall timeout: a blocking read waits as long as it asks to.
        blocking_client: ClusterClient,
        pub(super) shared: ClusterConnection,
        connect_timeout: std::time::Duration,
    }

    impl ClusterConnections {
        pub(super) async fn open(options: &RedisOptions) -> Result<ClusterConnections> {
            let url = options.redacted_url();
            if options.tls() {
                return Err(Error::invalid_argument(format!(
                    "{url}: TLS with Redis Cluster (rediss+cluster://) is not supported by the \
                     Redis backend yet"
                )));
            }
            let nodes = super::cluster_node_urls(options);
            let connect_timeout = connect_timeout(options);
            let build = |builder: redis::cluster::ClusterClientBuilder| {
                builder
                    .connection_timeout(connect_timeout)
                    .build()
                    .map_err(|e| Error::invalid_argument(format!("{url}: {e}")))
            };
            // Requests time out after the request timeout, retries included.
            let client = build(
                ClusterClient::builder(nodes.clone())
                    .response_timeout(super::request_timeout(options)),
            )?;
            let blocking_client =
                build(ClusterClient::builder(nodes).overall_response_timeout(None))?;
            let shared = client.get_async_connection().await.map_err(|e| {
                super::connect_error(options, redis_error(&format!("connect to {url}"), e))
            })?;
            Ok(ClusterConnections {
                blocking_client,
                shared,
                connect_timeout,
            })
        }

        /// A cluster connection of its own (one socket per master it talks to) with no
        /// response timeout.
        pub(super) async fn blocking(&self) -> Result<ClusterConnection> {
            let config = ClusterConfig::new().set_connection_timeout(self.connect_timeout);
            self.blocking_client
                .get_async_connection_with_config(config)
                .await
                .map_err(|e| redis_error("connect a blocking reader", e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cluster_node_gets_the_credentials() {
        let o =
            RedisOptions::parse_url("redis+cluster://app:p%40ss@10.0.0.1:7000,node-b,[::1]:7002")
                .unwrap();
        assert_eq!(
            cluster_node_urls(&o),
            [
                "redis://app:p%40ss@10.0.0.1:7000",
                "redis://app:p%40ss@node-b:6379",
                "redis://app:p%40ss@[::1]:7002"
            ]
        );
    }
}
