//! The testcontainers fallback (feature `docker`): used only when no env endpoint is set
//! and no local binary is found. Containers are removed when the fixture is dropped and
//! cannot be stopped, paused or restarted through the fixture.

use std::time::Duration;

use testcontainers_modules::redis::{REDIS_PORT, Redis};
use testcontainers_modules::testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::{GenericImage, ImageExt, TestcontainersError};

use super::{EtcdServer, FixtureError, RedisServer};

/// The etcd image (there is no etcd module in testcontainers-modules).
const ETCD_IMAGE: &str = "quay.io/coreos/etcd";
/// Its tag.
const ETCD_TAG: &str = "v3.5.17";
/// The redis image tag (the module defaults to 5.0).
const REDIS_TAG: &str = "7.2";

/// No engine (no socket, connection refused) means "unavailable"; anything else is a
/// real failure.
fn map_err(what: &str, e: TestcontainersError) -> FixtureError {
    let text = e.to_string();
    if matches!(e, TestcontainersError::Client(_)) {
        FixtureError::Unavailable(format!(
            "{what}: no local binary and no usable Docker engine: {text}"
        ))
    } else {
        FixtureError::Docker(format!("{what}: {text}"))
    }
}

pub(crate) async fn start_etcd(timeout: Duration) -> Result<EtcdServer, FixtureError> {
    let container = GenericImage::new(ETCD_IMAGE, ETCD_TAG)
        .with_exposed_port(2379.tcp())
        .with_wait_for(WaitFor::message_on_stderr("ready to serve client requests"))
        .with_cmd([
            "etcd",
            "--listen-client-urls",
            "http://0.0.0.0:2379",
            "--advertise-client-urls",
            "http://127.0.0.1:2379",
        ])
        .with_startup_timeout(timeout)
        .start()
        .await
        .map_err(|e| map_err("etcd", e))?;
    let host = container.get_host().await.map_err(|e| map_err("etcd", e))?;
    let port = container
        .get_host_port_ipv4(2379.tcp())
        .await
        .map_err(|e| map_err("etcd", e))?;
    Ok(EtcdServer::docker(
        Box::new(container),
        format!("{host}:{port}"),
    ))
}

pub(crate) async fn start_redis(timeout: Duration) -> Result<RedisServer, FixtureError> {
    let container = Redis::default()
        .with_tag(REDIS_TAG)
        .with_startup_timeout(timeout)
        .start()
        .await
        .map_err(|e| map_err("redis", e))?;
    let host = container
        .get_host()
        .await
        .map_err(|e| map_err("redis", e))?;
    let port = container
        .get_host_port_ipv4(REDIS_PORT)
        .await
        .map_err(|e| map_err("redis", e))?;
    Ok(RedisServer::docker(
        Box::new(container),
        format!("{host}:{port}"),
    ))
}
