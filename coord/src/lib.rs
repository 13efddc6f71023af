//! Distributed coordination for Rust services: leader election, mutexes, read/write locks
//! and semaphores, written once against one backend contract and run on etcd, in memory, or
//! on Redis (one server or a Redis Cluster, over TLS if asked, with data-loss detection).
//!
//! ```
//! # #[cfg(feature = "memory")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> coord::Result<()> {
//! use std::sync::Arc;
//! use coord::{Mutex, Session};
//!
//! let backend = Arc::new(coord::memory::MemoryBackend::new());
//! let session = Session::new(backend).await?;
//! let guard = Mutex::new(&session, "jobs/nightly").lock().await?;
//! println!("holding {} with fencing token {}", guard.key(), guard.fencing_token());
//! guard.unlock().await?;
//! session.close().await?;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "memory"))]
//! # fn main() {}
//! ```
//!
//! The recipes, the contract and the error type come from `coord-core` and are re-exported
//! here; each backend sits behind a cargo feature (`memory`, on by default).
//!
//! # Choosing a backend by URL
//!
//! [`connect`] takes a URL and returns a [`Connection`]: the backend as an
//! `Arc<dyn CoordinationBackend>` plus the session TTL the URL asked for.
//!
//! ```
//! # #[cfg(feature = "memory")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> coord::Result<()> {
//! // "etcd://127.0.0.1:2379?namespace=myapp/&ttl=10s" with the `etcd` feature
//! let conn = coord::connect("memory://?ttl=10s").await?;
//! let session = conn.session().await?;
//! let leader = coord::Election::new(&session, "scheduler").campaign("node-1").await?;
//! println!("leading as {} (rev {})", leader.key(), leader.rev());
//! # leader.resign().await?;
//! # session.close().await?;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "memory"))]
//! # fn main() {}
//! ```
//!
//! Cargo features:
//!
#![doc = include_str!("features.md")]
//!
//! [`known_backends`] lists the backends `connect` knows, with their schemes and whether
//! this build has them.
//!
//! The `coord` command-line tool is the `coord-cli` package, so this library pulls in no
//! command-line dependencies.

mod connect;
mod registry;

pub use connect::{ConnectOptions, Connection, connect};
pub use coord_core::*;
pub use registry::{KnownBackend, known_backends};

// The backends `connect` knows. A line gives the module that re-exports the backend crate
// (when its feature is on), the cargo feature, the URL schemes, and the type that parses
// those URLs (`coord_core::UrlOptions`); a new backend is one more line here and its
// feature in Cargo.toml.
registry::backends! {
    /// The in-process backend: exact etcd semantics, tokio time, fault hooks for tests.
    memory: "memory" ["memory"] => coord_memory::MemoryOptions;
    /// The etcd v3 backend.
    etcd: "etcd" ["etcd", "etcds"] => coord_etcd::EtcdOptions;
    /// The Redis backend, on one server or a Redis Cluster.
    redis: "redis" ["redis", "rediss", "redis+cluster", "rediss+cluster"] => coord_redis::RedisOptions;
}
