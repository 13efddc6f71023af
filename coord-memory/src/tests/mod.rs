//! The crate's own unit tests, of what only this backend has; what every backend must do
//! is checked by the conformance suite in `coord-testkit`, which `tests/conformance.rs` runs.

mod faults;
mod kv;
mod lease;
mod watch;

use std::time::Duration;

use coord_core::{WatchResponse, WatchStream};
use futures::StreamExt;

/// The next watch response, failing the test if none comes within a (virtual) minute.
async fn next(watch: &mut WatchStream) -> WatchResponse {
    tokio::time::timeout(Duration::from_secs(60), watch.next())
        .await
        .expect("a watch response within a minute")
        .expect("the watch stream is open")
        .expect("a watch response, not an error")
}

/// Whether the watch yields nothing within `wait`.
async fn quiet(watch: &mut WatchStream, wait: Duration) -> bool {
    tokio::time::timeout(wait, watch.next()).await.is_err()
}
