//! The metrics the recipes record through the [`metrics`](https://docs.rs/metrics/0.24)
//! facade crate, when this crate's `metrics` cargo feature is on (it is off by default; the
//! `coord` facade forwards it as `metrics`). Without the feature nothing is recorded and
//! the `metrics` crate is not a dependency.
//!
//! Like every facade, it records nothing until the application installs a recorder (a
//! Prometheus exporter, for instance) with `metrics::set_global_recorder`; call
//! [`describe`] after that to give the recorder the descriptions below.
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `coord_acquisitions_total` | counter | `kind`, `name` | holds granted: locks, read/write locks, permits, leaderships |
//! | `coord_waits_total` | counter | `kind`, `name` | holds granted after waiting (for another holder, or another task of the same session) |
//! | `coord_wait_seconds` | histogram | `kind`, `name` | time from the call to the grant, for every hold granted (near zero when uncontended) |
//! | `coord_timeouts_total` | counter | `kind`, `name` | `*_timeout` acquisitions that ended with `Error::Timeout` |
//! | `coord_losses_total` | counter | `kind`, `name`, `cause` | holds lost while held, counted once per hold when the loss is noticed (by `Hold::lost()` or by the release) |
//! | `coord_leader` | gauge | `name` | 1 while this process leads the election `name`, 0 otherwise |
//! | `coord_sessions_open` | gauge | none | sessions of this process whose lease is being kept alive |
//! | `coord_sessions_expired_total` | counter | none | sessions lost because their lease could no longer be trusted (no successful keep-alive before the deadline, or the server said the lease is gone) |
//! | `coord_keepalive_seconds` | histogram | none | round trip of each successful session keep-alive |
//!
//! Label values:
//! - `kind`: `lock` ([`Mutex`](crate::Mutex)), `rwlock_read` and `rwlock_write`
//!   ([`RwMutex`](crate::RwMutex)), `semaphore` ([`Semaphore`](crate::Semaphore)),
//!   `election` ([`Election`](crate::Election)).
//! - `name`: the lock, semaphore or election name, verbatim (without the namespace a
//!   connection adds).
//! - `cause`: `session_expired` (the session's lease could no longer be trusted),
//!   `key_deleted` (someone else deleted the key, or it was re-created), `released` (this
//!   process ended the session, by `close`, `orphan` or dropping it, while the hold was
//!   still held).
//!
//! **Cardinality.** Every distinct `name` is a new time series in every metric that carries
//! it. That is right for a fixed set of locks and elections (`jobs/nightly`, `scheduler`);
//! it is not for names made per request, per user or per item (`orders/<order id>`), which
//! make the series grow without bound in the recorder and the monitoring system. Such
//! programs should drop or rewrite the `name` label in their recorder or exporter
//! (a Prometheus `metric_relabel_configs` `labeldrop`, or a recorder layer that filters
//! labels).

use std::time::Duration;

/// Counter: holds granted. Labels `kind`, `name`.
pub const ACQUISITIONS: &str = "coord_acquisitions_total";
/// Counter: holds granted after waiting. Labels `kind`, `name`.
pub const WAITS: &str = "coord_waits_total";
/// Histogram, seconds: time from the call to the grant. Labels `kind`, `name`.
pub const WAIT_SECONDS: &str = "coord_wait_seconds";
/// Counter: `*_timeout` acquisitions that timed out. Labels `kind`, `name`.
pub const TIMEOUTS: &str = "coord_timeouts_total";
/// Counter: holds lost while held. Labels `kind`, `name`, `cause`.
pub const LOSSES: &str = "coord_losses_total";
/// Gauge: 1 while this process leads the election. Label `name`.
pub const LEADER: &str = "coord_leader";
/// Gauge: sessions whose lease is being kept alive. No labels.
pub const SESSIONS_OPEN: &str = "coord_sessions_open";
/// Counter: sessions lost because their lease could no longer be trusted. No labels.
pub const SESSIONS_EXPIRED: &str = "coord_sessions_expired_total";
/// Histogram, seconds: round trip of each successful session keep-alive. No labels.
pub const KEEPALIVE_SECONDS: &str = "coord_keepalive_seconds";

/// What kind of hold a metric or span is about: the `kind` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HoldKind {
    Lock,
    RwRead,
    RwWrite,
    Semaphore,
    Election,
}

impl HoldKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            HoldKind::Lock => "lock",
            HoldKind::RwRead => "rwlock_read",
            HoldKind::RwWrite => "rwlock_write",
            HoldKind::Semaphore => "semaphore",
            HoldKind::Election => "election",
        }
    }
}

/// Why a hold was lost: the `cause` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LossCause {
    SessionExpired,
    KeyDeleted,
    Released,
}

impl LossCause {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LossCause::SessionExpired => "session_expired",
            LossCause::KeyDeleted => "key_deleted",
            LossCause::Released => "released",
        }
    }
}

/// Gives the installed recorder the unit and description of every metric above. Call it
/// once, after installing the recorder; recording works without it. Does nothing without
/// the `metrics` feature.
#[cfg(feature = "metrics")]
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        ACQUISITIONS,
        "holds granted (locks, read/write locks, permits, leaderships)"
    );
    describe_counter!(WAITS, "holds granted after waiting");
    describe_histogram!(
        WAIT_SECONDS,
        Unit::Seconds,
        "time from the call to the grant"
    );
    describe_counter!(TIMEOUTS, "acquisitions that timed out");
    describe_counter!(LOSSES, "holds lost while held, by cause");
    describe_gauge!(LEADER, "1 while this process leads the election");
    describe_gauge!(SESSIONS_OPEN, "sessions whose lease is being kept alive");
    describe_counter!(
        SESSIONS_EXPIRED,
        "sessions lost because their lease could no longer be trusted"
    );
    describe_histogram!(
        KEEPALIVE_SECONDS,
        Unit::Seconds,
        "round trip of a session keep-alive"
    );
}

/// Gives the installed recorder the unit and description of every metric above. Call it
/// once, after installing the recorder; recording works without it. Does nothing without
/// the `metrics` feature.
#[cfg(not(feature = "metrics"))]
pub fn describe() {}

// The recording functions are no-ops without the feature, so the recipes call them
// unconditionally and pay nothing.

#[cfg(feature = "metrics")]
pub(crate) fn acquired(kind: HoldKind, name: &str, waited: bool, wait: Duration) {
    let labels = [
        ("kind", kind.as_str().to_owned()),
        ("name", name.to_owned()),
    ];
    metrics::counter!(ACQUISITIONS, &labels).increment(1);
    if waited {
        metrics::counter!(WAITS, &labels).increment(1);
    }
    metrics::histogram!(WAIT_SECONDS, &labels).record(wait.as_secs_f64());
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn acquired(_: HoldKind, _: &str, _: bool, _: Duration) {}

#[cfg(feature = "metrics")]
pub(crate) fn timed_out(kind: HoldKind, name: &str) {
    metrics::counter!(TIMEOUTS, "kind" => kind.as_str(), "name" => name.to_owned()).increment(1);
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn timed_out(_: HoldKind, _: &str) {}

#[cfg(feature = "metrics")]
pub(crate) fn lost(kind: HoldKind, name: &str, cause: LossCause) {
    metrics::counter!(
        LOSSES,
        "kind" => kind.as_str(),
        "name" => name.to_owned(),
        "cause" => cause.as_str()
    )
    .increment(1);
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn lost(_: HoldKind, _: &str, _: LossCause) {}

/// `leading`: a leadership of `name` began (true) or ended (false).
#[cfg(feature = "metrics")]
pub(crate) fn leader(name: &str, leading: bool) {
    let gauge = metrics::gauge!(LEADER, "name" => name.to_owned());
    if leading {
        gauge.increment(1.0);
    } else {
        gauge.decrement(1.0);
    }
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn leader(_: &str, _: bool) {}

/// `open`: a session's keep-alive started (true) or ended (false).
#[cfg(feature = "metrics")]
pub(crate) fn session_open(open: bool) {
    let gauge = metrics::gauge!(SESSIONS_OPEN);
    if open {
        gauge.increment(1.0);
    } else {
        gauge.decrement(1.0);
    }
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn session_open(_: bool) {}

#[cfg(feature = "metrics")]
pub(crate) fn session_expired() {
    metrics::counter!(SESSIONS_EXPIRED).increment(1);
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn session_expired() {}

#[cfg(feature = "metrics")]
pub(crate) fn keep_alive(round_trip: Duration) {
    metrics::histogram!(KEEPALIVE_SECONDS).record(round_trip.as_secs_f64());
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn keep_alive(_: Duration) {}
