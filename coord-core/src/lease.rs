//! Lease types.

use std::time::Duration;

use crate::LeaseId;

/// A granted lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The id the backend chose.
    pub id: LeaseId,
    /// The TTL granted, which may be longer than asked (backends round up to their
    /// granularity and minimum).
    pub ttl: Duration,
}

/// A lease's state, from [`crate::CoordinationBackend::lease_time_to_live`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseStatus {
    /// The lease.
    pub id: LeaseId,
    /// The TTL it was granted with.
    pub granted_ttl: Duration,
    /// Time left before it expires unless kept alive.
    pub remaining: Duration,
}
