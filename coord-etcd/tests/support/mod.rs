//! Helpers for the etcd test binaries: a per-binary shared server, a server of a test's
//! own, client-side fault injection, and a multi-member client steered by the test.
#![allow(dead_code, unreachable_pub)]

pub mod faulty;
pub mod own_server;
pub mod shared;
pub mod steered;
