//! Distributed coordination for Rust services: leader election, mutexes, read/write locks
//! and semaphores, written once against one backend contract and run on etcd, on Redis or
//! in memory.
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

pub use coord_core::*;

/// The in-process backend: exact etcd semantics, tokio time, fault hooks for tests.
#[cfg(feature = "memory")]
pub mod memory {
    pub use coord_memory::*;
}
