//! The core of `coord`: the backend contract and the coordination recipes written once
//! against it.
//!
//! - [`CoordinationBackend`] is the contract: leases, range reads, compare-and-swap
//!   transactions and watches over one revisioned key space (etcd's data model).
//!   `coord-memory`, `coord-etcd` and `coord-redis` implement it, and `coord-testkit`'s
//!   conformance suite checks that they do.
//! - The recipes, one small module each: [`Session`] (a kept-alive lease), [`Mutex`],
//!   [`RwMutex`], [`Election`] and [`Semaphore`]. Their keys use etcd's layout
//!   (`<name>/<lease id in lowercase hex>`), so on etcd they interoperate with
//!   `etcdctl lock`, `etcdctl elect` and Go's `concurrency` package.

mod backend;
pub mod backend_url;
mod error;
mod ext;
pub mod faults;
mod kv;
mod lease;
pub mod metrics;
mod namespace;
mod range;
mod recipes;
pub mod tls;
mod txn;
mod watch;

pub use backend::{
    BackendInfo, CoordinationBackend, MAX_LEASE_TTL, MAX_REQUEST_BYTES, check_lease_ttl,
    check_request_size, request_bytes, request_too_large,
};
pub use backend_url::{UrlOptions, parse_duration};
pub use error::{Error, Result};
pub use ext::BackendExt;
pub use kv::{KeyRange, KeyValue, LeaseId, NO_LEASE, Revision, prefix_end};
pub use lease::{LeaseGrant, LeaseStatus};
pub use namespace::Namespaced;
pub use range::{RangeRequest, RangeResponse, SortOrder, SortTarget};
pub use recipes::*;
pub use txn::{
    Compare, CompareOp, CompareTarget, Delete, MAX_TXN_OPS, Put, TxnOp, TxnOpResponse, TxnRequest,
    TxnResponse,
};
pub use watch::{Event, EventKind, WatchRequest, WatchResponse, WatchStart, WatchStream};
