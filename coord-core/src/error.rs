//! The one error type of the workspace.

use crate::{LeaseId, Revision};

/// A `Result` whose error is [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a backend call or a recipe.
///
/// The kinds are the ones a caller can act on: retry on [`Error::Unavailable`] (see
/// [`Error::is_retryable`]), start a new session on [`Error::SessionExpired`], resync on
/// [`Error::Compacted`], stop writing on [`Error::LockLost`]. Backends map their own errors
/// into these kinds in a `From` impl and keep the rest in [`Error::Backend`]; the backend's
/// own error stays reachable through [`std::error::Error::source`] on
/// [`Error::Unavailable`] and [`Error::Backend`]. [`Error::Contract`] is a backend bug.
///
/// Messages name the key, lease or lock they are about. Secrets (passwords, tokens) never
/// appear in a message or in `Debug` output, sources included: a backend strips them from
/// an error before keeping it as a source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backend could not be reached or refused the call for now; retrying may succeed.
    /// A write that failed this way may or may not have been applied.
    #[error("backend unavailable: {message}")]
    Unavailable {
        /// What failed, for humans. It already includes the text of `source`, so that
        /// printing the error alone says why.
        message: String,
        /// The backend's own error, when the failure came from one (the etcd backend keeps
        /// the `tonic::Status`, transport or I/O error here), for callers that need more
        /// than the kind: walk [`std::error::Error::source`] and downcast.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// An operation did not finish in the time it was given.
    #[error("timed out: {operation}")]
    Timeout {
        /// What timed out, e.g. `lock "jobs"`.
        operation: String,
    },
    /// The lease does not exist: it expired, was revoked, or never existed.
    #[error("lease{} not found (expired or revoked)", lease_id(.lease))]
    LeaseNotFound {
        /// The lease asked for; `None` when the backend did not say which (etcd does not,
        /// for a txn whose puts name several leases).
        lease: Option<LeaseId>,
    },
    /// The revision asked for has been compacted away; resync from `compact_revision`, or,
    /// when it is unknown, from the current revision after a fresh read.
    #[error("revision compacted{}", oldest_kept(.compact_revision))]
    Compacted {
        /// The compaction revision: the oldest revision a watch can still start from.
        /// `None` when the backend did not report it (etcd's error for a compacted read
        /// does not carry it).
        compact_revision: Option<Revision>,
    },
    /// The caller passed something the operation cannot accept.
    #[error("invalid argument: {message}")]
    InvalidArgument {
        /// What was wrong, naming the argument.
        message: String,
    },
    /// The backend rejected the credentials (or none were given where they are needed),
    /// or the peer could not be authenticated: a TLS certificate the client cannot verify,
    /// or a client certificate the server refused. Not retryable: the configuration needs
    /// fixing.
    #[error("unauthenticated: {message}")]
    Unauthenticated {
        /// What the backend said, with secrets removed.
        message: String,
        /// The error that said so, when there is one (a TLS handshake failure keeps the
        /// backend's connect error, whose sources lead down to the TLS library's).
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// The credentials are valid but lack a permission the operation needs.
    #[error("permission denied: {message}")]
    PermissionDenied {
        /// What was refused.
        message: String,
    },
    /// The session's lease is gone (expired, revoked, or no longer trusted); every key
    /// attached to it is gone or about to be. Start a new session.
    #[error("session expired (lease {lease:x})")]
    SessionExpired {
        /// The session's lease.
        lease: LeaseId,
    },
    /// A lock (or permit) this caller held is no longer held: its key was deleted.
    #[error("lock lost: key {key:?} no longer exists")]
    LockLost {
        /// The lock key, as text (lossy if not UTF-8).
        key: String,
    },
    /// An operation that needs leadership was made by a caller that is not the leader.
    #[error("not the leader of election {election:?}")]
    NotLeader {
        /// The election name.
        election: String,
    },
    /// The election has no leader.
    #[error("election {election:?} has no leader")]
    NoLeader {
        /// The election name.
        election: String,
    },
    /// `try_lock` found the lock held by another session.
    #[error("lock {name:?} is held by another session{}", holder_key(.holder))]
    Locked {
        /// The lock name.
        name: String,
        /// The key of the current holder, when known.
        holder: Option<String>,
    },
    /// A backend answered in a way the [`CoordinationBackend`](crate::CoordinationBackend)
    /// contract forbids (a txn answer with fewer responses than operations, a range
    /// answered with another kind of response): a bug in the backend, which a retry will
    /// not fix. Not retryable.
    #[error("backend broke its contract: {message}")]
    Contract {
        /// What the backend answered and what was expected instead.
        message: String,
    },
    /// Any other backend failure, kept with its source.
    #[error("{backend} backend error: {message}")]
    Backend {
        /// Which backend, e.g. `"etcd"`.
        backend: &'static str,
        /// What failed, for humans. It already includes the text of `source`, so that
        /// printing the error alone says why.
        message: String,
        /// The backend's own error, when there is one (for etcd: the `tonic::Status` or
        /// the `etcd_client::Error`).
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
}

fn lease_id(lease: &Option<LeaseId>) -> String {
    lease.map(|l| format!(" {l:x}")).unwrap_or_default()
}

fn oldest_kept(compact_revision: &Option<Revision>) -> String {
    compact_revision
        .map(|r| format!("; the oldest revision kept is {r}"))
        .unwrap_or_default()
}

impl Error {
    /// Whether the same call may succeed if simply tried again later.
    ///
    /// True for [`Error::Unavailable`] and [`Error::Timeout`]. A retried write must be
    /// safe to apply twice; every recipe in this crate guards its writes so that it is.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::Timeout { .. })
    }

    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            message: message.into(),
        }
    }

    /// [`Error::Unavailable`] without a source error.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Error::Unavailable {
            message: message.into(),
            source: None,
        }
    }

    /// [`Error::Unavailable`] caused by `source`; `message` should include its text.
    pub fn unavailable_with_source(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Error::Unavailable {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// [`Error::Unauthenticated`] without a source error.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Error::Unauthenticated {
            message: message.into(),
            source: None,
        }
    }

    /// [`Error::Unauthenticated`] caused by `source`; `message` should say what failed.
    pub fn unauthenticated_with_source(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Error::Unauthenticated {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// [`Error::Contract`].
    pub fn contract(message: impl Into<String>) -> Self {
        Error::Contract {
            message: message.into(),
        }
    }

    /// [`Error::Backend`] without a source error.
    pub fn backend(backend: &'static str, message: impl Into<String>) -> Self {
        Error::Backend {
            backend,
            message: message.into(),
            source: None,
        }
    }

    /// [`Error::Backend`] caused by `source`; `message` should include its text.
    pub fn backend_with_source(
        backend: &'static str,
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Error::Backend {
            backend,
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

/// `Error::Locked`'s holder, as text: the key itself, or nothing when unknown.
fn holder_key(holder: &Option<String>) -> String {
    holder
        .as_deref()
        .map_or_else(String::new, |key| format!(" (holder key {key:?})"))
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn contract_violations_are_not_retryable() {
        let e = Error::contract("a txn answered with fewer responses than it has operations");
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("fewer responses"), "{e}");
        assert!(e.source().is_none());
    }

    #[test]
    fn retryable_kinds_are_unchanged() {
        assert!(Error::unavailable("x").is_retryable());
        assert!(Error::unavailable_with_source("x", std::io::Error::other("y")).is_retryable());
        assert!(
            Error::Timeout {
                operation: "x".into()
            }
            .is_retryable()
        );
        assert!(!Error::backend("etcd", "x").is_retryable());
        assert!(!Error::LeaseNotFound { lease: None }.is_retryable());
    }

    #[test]
    fn the_cause_is_the_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = Error::unavailable_with_source("connect to 127.0.0.1:1: refused", io);
        let source = e.source().expect("kept");
        assert_eq!(
            source.downcast_ref::<std::io::Error>().map(|e| e.kind()),
            Some(std::io::ErrorKind::ConnectionRefused)
        );
        assert!(Error::unavailable("x").source().is_none());

        let e = Error::backend_with_source("etcd", "txn: weird", std::io::Error::other("weird"));
        assert!(e.source().unwrap().is::<std::io::Error>());
        assert_eq!(e.to_string(), "etcd backend error: txn: weird");
        assert!(Error::backend("etcd", "x").source().is_none());
    }

    #[test]
    fn unknown_values_read_well() {
        assert_eq!(
            Error::Compacted {
                compact_revision: Some(7)
            }
            .to_string(),
            "revision compacted; the oldest revision kept is 7"
        );
        assert_eq!(
            Error::Compacted {
                compact_revision: None
            }
            .to_string(),
            "revision compacted"
        );
        assert_eq!(
            Error::LeaseNotFound { lease: Some(0x2a) }.to_string(),
            "lease 2a not found (expired or revoked)"
        );
        assert_eq!(
            Error::LeaseNotFound { lease: None }.to_string(),
            "lease not found (expired or revoked)"
        );
    }
}
