//! Helpers for the etcd test binaries that share them: a per-binary shared server and
//! client-side fault injection.
#![allow(dead_code, unreachable_pub)]

pub mod faulty;
pub mod shared;
