//! A server of the test's own, for the tests that cannot share one.

use std::time::Duration;

use coord_etcd::{EtcdBackend, EtcdOptions};
use coord_testkit::EtcdServer;

/// A server of the test's own, never a shared or external one: these tests write keys
/// outside any namespace, check revision arithmetic, whole-keyspace counts and
/// compaction, and some kill and restart it. With etcd's default raft timing (100 ms
/// heartbeat, 1 s election): the server settings `coord_etcd` assumes, such as the 2 s
/// minimum lease TTL.
pub async fn local_etcd() -> Option<EtcdServer> {
    EtcdServer::builder()
        .local_only()
        .timing(Duration::from_millis(100), Duration::from_secs(1))
        .start_or_skip()
        .await
}

/// Options for a client of `server`, without a namespace.
pub fn options(server: &EtcdServer) -> EtcdOptions {
    EtcdOptions::new(server.urls())
}

/// A client of `server`, without a namespace.
pub async fn backend(server: &EtcdServer) -> EtcdBackend {
    EtcdBackend::connect(options(server))
        .await
        .expect("connect")
}

/// A client of `server` with namespace `ns`.
pub async fn backend_ns(server: &EtcdServer, ns: &str) -> EtcdBackend {
    EtcdBackend::connect(options(server).namespace(ns))
        .await
        .expect("connect")
}
