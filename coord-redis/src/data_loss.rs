//! The data-loss signal of a client: the namespace's epoch (a random value in `{NS}:meta`,
//! made with the namespace) is checked by every script and every watch read. When it is
//! gone or changed, the server lost the data this client worked on, and the client fails
//! closed for good.

use std::sync::Arc;

use coord_core::{Error, Result};
use tokio_util::sync::CancellationToken;

/// The "data lost" signal: once a script finds the namespace's epoch gone or changed, the
/// data this client worked on is lost, and every call (and watch) fails from then on.
#[derive(Clone, Debug)]
pub(crate) struct DataLost {
    token: CancellationToken,
    /// The epoch the client adopted at connect.
    epoch: Arc<str>,
    /// The meta key that holds the epoch.
    pub(crate) meta_key: Arc<str>,
    /// Where, for the error: the redacted URL and the namespace's prefix.
    at: Arc<str>,
}

impl DataLost {
    pub(crate) fn new(url: &str, prefix: &str, epoch: &str) -> Self {
        DataLost {
            token: CancellationToken::new(),
            epoch: epoch.into(),
            meta_key: format!("{prefix}:meta").into(),
            at: format!("{url} in namespace {prefix}").into(),
        }
    }

    /// Checks the epoch a read found (`HGET {ns}:meta epoch`), declaring the loss when it
    /// is gone or another one.
    pub(crate) fn check(&self, found: Option<&str>) -> Result<()> {
        if self.is_lost() || found != Some(&*self.epoch) {
            return Err(self.lose(found));
        }
        Ok(())
    }

    pub(crate) fn is_lost(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes once data loss was seen.
    pub(crate) async fn lost(&self) {
        self.token.cancelled().await;
    }

    /// Records a loss the epoch shows (`found`: the epoch the server has now, if any) and
    /// answers the error.
    pub(crate) fn lose(&self, found: Option<&str>) -> Error {
        self.declare(&format!(
            "the namespace's epoch is {}",
            found.map_or_else(|| "gone".to_owned(), |e| format!("now {e}"))
        ))
    }

    /// Records the loss (logged the first time, with `why`) and answers the error.
    pub(crate) fn declare(&self, why: &str) -> Error {
        if !self.token.is_cancelled() {
            self.token.cancel();
            tracing::error!(
                at = %self.at,
                why,
                "redis backend: data loss detected; this client fails closed"
            );
        }
        self.error()
    }

    /// What every call answers once data loss was seen (lease calls answer
    /// `LeaseNotFound`). Not retryable: the same client never works again.
    pub(crate) fn error(&self) -> Error {
        Error::backend(
            "redis",
            format!(
                "redis data loss detected on {}: the namespace's epoch is gone or changed \
                 (a restart without persistence, FLUSHALL/FLUSHDB, or a failover to a replica \
                 that lacked the data), so every lock, lease and revision this client knew \
                 may be gone; it fails closed: connect a new client",
                self.at
            ),
        )
    }
}
