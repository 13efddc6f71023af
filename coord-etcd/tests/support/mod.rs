//! Helpers for the etcd test binaries: a per-binary shared server, a server of a test's
//! own, and client-side fault injection.
#![allow(dead_code, unreachable_pub)]

pub mod faulty;
pub mod own_server;
pub mod shared;
