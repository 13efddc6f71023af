//! The connections of a backend: one shared (multiplexed) connection for every script and
//! plain command, and dedicated ones for blocking reads. To one server, or to a Redis
//! Cluster (see the Cluster section below), behind one [`Connection`] type.

use std::time::Duration;

use coord_core::{Error, Result, UrlOptions};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisFuture, Value};

use crate::RedisOptions;
use crate::backend::redis_error;

/// Time allowed to reach the server unless the URL says otherwise.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed per request unless the URL says otherwise. The redis crate's own default
/// (500 ms) would cut a script that waits behind a slow one on a loaded server.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct Connections {
    kind: Kind,
}

enum Kind {
    Single {
        client: redis::Client,
        shared: MultiplexedConnection,
    },
    Cluster(cluster::ClusterConnections),
}

/// A connection to the server, or to the cluster (each command routed to the master of its
/// key's slot). Cheap to clone: clones share the underlying connection.
#[derive(Clone)]
pub(crate) enum Connection {
    Single(MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
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
            Connection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
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
    /// Connects the shared connection.
    pub(crate) async fn open(options: &RedisOptions) -> Result<Connections> {
        if options.is_cluster() {
            let cluster = cluster::ClusterConnections::open(options).await?;
            return Ok(Connections {
                kind: Kind::Cluster(cluster),
            });
        }
        let url = options.redacted_url();
        if options.tls() {
            return Err(Error::invalid_argument(format!(
                "{url}: TLS (rediss://) is not supported by the Redis backend yet"
            )));
        }
        let client = redis::Client::open(options.connection_url())
            .map_err(|e| Error::invalid_argument(format!("{url}: {e}")))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout(options)))
            .set_response_timeout(Some(request_timeout(options)));
        let shared = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| redis_error(&format!("connect to {url}"), e))?;
        Ok(Connections {
            kind: Kind::Single { client, shared },
        })
    }

    /// The shared connection, for every call that answers at once.
    pub(crate) fn command(&self) -> Connection {
        match &self.kind {
            Kind::Single { shared, .. } => Connection::Single(shared.clone()),
            Kind::Cluster(cluster) => Connection::Cluster(cluster.shared.clone()),
        }
    }

    /// A new connection of its own with no response timeout, for `XREAD BLOCK`: a blocking
    /// read on the shared connection would hold up every call queued behind it.
    pub(crate) async fn blocking(&self) -> Result<Connection> {
        match &self.kind {
            Kind::Single { client, .. } => {
                let config = AsyncConnectionConfig::new().set_response_timeout(None);
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(Connection::Single)
                    .map_err(|e| redis_error("connect a blocking reader", e))
            }
            Kind::Cluster(cluster) => cluster.blocking().await.map(Connection::Cluster),
        }
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
            let nodes = options.cluster_node_urls();
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
            let shared = client
                .get_async_connection()
                .await
                .map_err(|e| redis_error(&format!("connect to {url}"), e))?;
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
