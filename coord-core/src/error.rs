//! The one error type of the workspace.

use crate::{LeaseId, Revision};

/// A `Result` whose error is [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a backend call or a recipe.
///
/// The kinds are the ones a caller can act on: retry on [`Error::Unavailable`] (see
/// [`Error::is_retryable`]), start a new session on [`Error::SessionExpired`], resync on
/// [`Error::Compacted`], stop writing on [`Error::LockLost`]. Backends map their own errors
/// into these kinds in a `From` impl and keep the rest in [`Error::Backend`].
///
/// Messages name the key, lease or lock they are about. Secrets (passwords, tokens) never
/// appear in a message or in `Debug` output.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backend could not be reached or refused the call for now; retrying may succeed.
    /// A write that failed this way may or may not have been applied.
    #[error("backend unavailable: {message}")]
    Unavailable {
        /// What failed, for humans.
        message: String,
    },
    /// An operation did not finish in the time it was given.
    #[error("timed out: {operation}")]
    Timeout {
        /// What timed out, e.g. `lock "jobs"`.
        operation: String,
    },
    /// The lease does not exist: it expired, was revoked, or never existed.
    #[error("lease {lease:x} not found (expired or revoked)")]
    LeaseNotFound {
        /// The lease asked for.
        lease: LeaseId,
    },
    /// The revision asked for has been compacted away; resync from `compact_revision`.
    #[error("revision compacted; the oldest revision kept is {compact_revision}")]
    Compacted {
        /// The compaction revision: the oldest revision a watch can still start from.
        compact_revision: Revision,
    },
    /// The caller passed something the operation cannot accept.
    #[error("invalid argument: {message}")]
    InvalidArgument {
        /// What was wrong, naming the argument.
        message: String,
    },
    /// The backend rejected the credentials (or none were given where they are needed).
    #[error("unauthenticated: {message}")]
    Unauthenticated {
        /// What the backend said, with secrets removed.
        message: String,
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
    #[error("lock {name:?} is held by another session (holder key {holder:?})")]
    Locked {
        /// The lock name.
        name: String,
        /// The key of the current holder, when known.
        holder: Option<String>,
    },
    /// Any other backend failure, kept with its source.
    #[error("{backend} backend error: {source}")]
    Backend {
        /// Which backend, e.g. `"etcd"`.
        backend: &'static str,
        /// The backend's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
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

    /// Shorthand for [`Error::Unavailable`].
    pub fn unavailable(message: impl Into<String>) -> Self {
        Error::Unavailable {
            message: message.into(),
        }
    }

    /// Shorthand for [`Error::Backend`].
    pub fn backend(
        backend: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Error::Backend {
            backend,
            source: source.into(),
        }
    }
}
