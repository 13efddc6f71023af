//! The connections of a backend: one shared (multiplexed) connection for every script and
//! plain command, and dedicated ones for blocking reads.

use std::time::Duration;

use coord_core::{Error, Result, UrlOptions};
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;

use crate::RedisOptions;
use crate::backend::redis_error;

/// Time allowed to reach the server unless the URL says otherwise.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed per request unless the URL says otherwise. The redis crate's own default
/// (500 ms) would cut a script that waits behind a slow one on a loaded server.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct Connections {
    client: redis::Client,
    shared: MultiplexedConnection,
}

impl Connections {
    /// Connects the shared connection.
    pub(crate) async fn open(options: &RedisOptions) -> Result<Connections> {
        let url = options.redacted_url();
        if options.tls() {
            return Err(Error::invalid_argument(format!(
                "{url}: TLS (rediss://) is not supported by the Redis backend yet"
            )));
        }
        let client = redis::Client::open(options.connection_url())
            .map_err(|e| Error::invalid_argument(format!("{url}: {e}")))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(
                options.connect_timeout().unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            ))
            .set_response_timeout(Some(
                options.request_timeout().unwrap_or(DEFAULT_REQUEST_TIMEOUT),
            ));
        let shared = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| redis_error(&format!("connect to {url}"), e))?;
        Ok(Connections { client, shared })
    }

    /// The shared connection, for every call that answers at once.
    pub(crate) fn command(&self) -> MultiplexedConnection {
        self.shared.clone()
    }

    /// A new connection of its own with no response timeout, for `XREAD BLOCK`: a blocking
    /// read on the shared connection would hold up every call queued behind it.
    pub(crate) async fn blocking(&self) -> Result<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new().set_response_timeout(None);
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| redis_error("connect a blocking reader", e))
    }
}
