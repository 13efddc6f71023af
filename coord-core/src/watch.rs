//! Watches: ordered change events on a key or prefix.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use futures::stream::BoxStream;

use crate::{KeyRange, KeyValue, Result, Revision};

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchStart {
    /// From the first revision after the one current when the watch is established.
    Now,
    /// From this revision, inclusive; it may be in the past or the future. `Revision(0)`
    /// means [`WatchStart::Now`] (etcd's rule); a negative revision is invalid.
    Revision(Revision),
}

/// A watch request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchRequest {
    /// The key or keys watched.
    pub range: KeyRange,
    /// Where the watch starts.
    pub start: WatchStart,
    /// Attach the previous state of each key to its events.
    pub prev_kv: bool,
}

impl WatchRequest {
    /// Watches `range` from now, without prev kv.
    pub fn new(range: KeyRange) -> Self {
        WatchRequest {
            range,
            start: WatchStart::Now,
            prev_kv: false,
        }
    }

    /// Watches one key from now.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Self::new(KeyRange::key(key))
    }

    /// Watches a prefix from now.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        Self::new(KeyRange::prefix(prefix))
    }

    /// Starts at `revision` (inclusive) instead of now.
    pub fn from_revision(mut self, revision: Revision) -> Self {
        self.start = WatchStart::Revision(revision);
        self
    }

    /// Asks for the previous state of each key.
    pub fn with_prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }
}

/// Whether an event wrote or deleted a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The key was created or updated.
    Put,
    /// The key was deleted (explicitly or by lease expiry).
    Delete,
}

/// One change to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after a put; for a delete, the key with `mod_revision` set to the deleting
    /// revision and everything else zero or empty (as etcd reports it).
    pub kv: KeyValue,
    /// The key before the change, when asked for and it existed.
    pub prev_kv: Option<KeyValue>,
}

/// All the events of one revision that a watch matched, in the order they were applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchResponse {
    /// The revision the events carry.
    pub revision: Revision,
    /// The events; never empty.
    pub events: Vec<Event>,
}

/// An established watch: a stream of [`WatchResponse`]s in strictly rising revision order.
///
/// The stream ends with an `Err` item when the watch cannot go on: [`crate::Error::Compacted`]
/// when its start revision is no longer kept, [`crate::Error::Unavailable`] when a backend
/// lost its connection and could not resume. It never skips events silently. Dropping the
/// stream cancels the watch.
#[must_use = "a watch does nothing unless its stream is polled"]
pub struct WatchStream {
    start_revision: Revision,
    inner: BoxStream<'static, Result<WatchResponse>>,
}

impl WatchStream {
    /// Wraps a backend's stream. `start_revision` is the first revision the watch covers.
    pub fn new(start_revision: Revision, inner: BoxStream<'static, Result<WatchResponse>>) -> Self {
        WatchStream {
            start_revision,
            inner,
        }
    }

    /// The first revision this watch covers: every event at or after it is delivered.
    /// For [`WatchStart::Now`] it is one more than the revision current when the watch was
    /// established.
    pub fn start_revision(&self) -> Revision {
        self.start_revision
    }
}

impl Stream for WatchStream {
    type Item = Result<WatchResponse>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStream")
            .field("start_revision", &self.start_revision)
            .finish_non_exhaustive()
    }
}
