//! Helpers for the etcd test binaries: a per-binary shared server or cluster, the
//! conformance suite's backend on it, a server of a test's own, and a multi-member client
//! steered by the test.
#![allow(dead_code, unreachable_pub)]

pub mod conformance;
pub mod own_server;
pub mod shared;
pub mod steered;
