//! The crate's own unit tests; the cross-backend conformance suite lives in `coord-testkit`.

mod faults;
mod kv;
mod lease;
mod range;
mod watch;

use std::time::Duration;

use coord_core::{Event, EventKind, KeyValue, WatchResponse, WatchStream};
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

/// `(kind, key, value)` of each event, for compact assertions.
fn summary(events: &[Event]) -> Vec<(EventKind, String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e.kind,
                e.kv.key_str().into_owned(),
                e.kv.value_str().into_owned(),
            )
        })
        .collect()
}

fn kv(key: &str, value: &str, create: i64, modified: i64, version: i64, lease: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: value.into(),
        create_revision: create,
        mod_revision: modified,
        version,
        lease,
    }
}
