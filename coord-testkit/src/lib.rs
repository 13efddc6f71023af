//! Test support for the `coord` workspace.
//!
//! * [`servers`]: real etcd and redis servers for integration tests ([`EtcdServer`],
//!   [`EtcdCluster`], [`RedisServer`], and [`RedisCluster`], always local processes). A server comes from an environment variable
//!   (`COORD_TEST_ETCD`, `COORD_TEST_REDIS`), else from a local binary spawned on free
//!   loopback ports in a temp dir, else (feature `docker`) from testcontainers. Fixtures
//!   can stop, kill, pause, resume and restart their server on the same ports and data,
//!   and can run with TLS (certificates generated at test time) and authentication. When
//!   no server can be had, `start_or_skip()` skips the test, unless
//!   `COORD_TEST_REQUIRE_BACKENDS=1` ([`require_backends`]).
//! * [`proxy`]: [`FaultProxy`], a TCP proxy between client and server that adds latency,
//!   blackholes traffic or resets connections, to test partitions without root.
//! * [`history`]: [`History`], a recorder of lock and election events from many clients,
//!   and a checker that no two holders overlap, fencing tokens only rise, and nobody
//!   writes after losing a lock.
//! * [`conformance`]: the conformance suite every backend runs.
//! * [`chaos`]: chaos runs: random operations of many clients under random faults, with
//!   the history checked.
//!
//! Fixtures that talk to real servers must run on real time: never combine them with a
//! paused tokio clock. [`History`] works with paused clocks.

pub mod chaos;
pub mod conformance;
pub mod history;
pub mod proxy;
pub mod servers;

pub use history::{EventKind, History, HistoryEvent, Violation};
pub use proxy::{FaultProxy, FaultProxyHandle};
pub use servers::{
    Credentials, EtcdCluster, EtcdClusterBuilder, EtcdServer, EtcdServerBuilder, EtcdUser,
    FixtureError, MemberStatus, RedisCluster, RedisClusterBuilder, RedisServer, RedisServerBuilder,
    ServerMode, TlsMaterial, require_backends,
};
