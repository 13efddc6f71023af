//! Helpers for the etcd test binaries: a per-binary shared server, and a server of a test's
//! own.
#![allow(dead_code, unreachable_pub)]

pub mod own_server;
pub mod shared;
