//! Watchers: registration with gap-free replay, delivery per revision, and the stream type.

use std::collections::HashMap;
use std::sync::Weak;

use coord_core::{
    Error, Event, KeyRange, Result, Revision, WatchRequest, WatchResponse, WatchStart, WatchStream,
};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::Shared;
use crate::store::{RevisionEvents, State};

/// One registered watcher.
#[derive(Debug)]
struct Watcher {
    range: KeyRange,
    /// The first revision delivered (a watch may start in the future).
    start: Revision,
    prev_kv: bool,
    tx: mpsc::UnboundedSender<WatchResponse>,
}

impl Watcher {
    /// The watcher's view of one revision, if it matches anything.
    fn select(&self, entry: &RevisionEvents) -> Option<WatchResponse> {
        if entry.revision < self.start {
            return None;
        }
        let events: Vec<Event> = entry
            .changes
            .iter()
            .filter(|c| self.range.contains(c.key()))
            .map(|c| c.event(entry.revision, self.prev_kv))
            .collect();
        (!events.is_empty()).then_some(WatchResponse {
            revision: entry.revision,
            events,
        })
    }

    /// Sends the watcher's view of one revision; false once its stream is gone.
    fn deliver(&self, entry: &RevisionEvents) -> bool {
        match self.select(entry) {
            Some(response) => self.tx.send(response).is_ok(),
            None => !self.tx.is_closed(),
        }
    }
}

/// All registered watchers of a store.
#[derive(Debug, Default)]
pub(crate) struct Watchers {
    next_id: u64,
    by_id: HashMap<u64, Watcher>,
}

impl Watchers {
    /// Delivers one committed revision to every watcher, dropping those whose stream is gone.
    pub(crate) fn notify(&mut self, entry: &RevisionEvents) {
        self.by_id.retain(|_, w| w.deliver(entry));
    }

    pub(crate) fn remove(&mut self, id: u64) {
        self.by_id.remove(&id);
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }
}

/// What [`State::watch`] decided.
pub(crate) enum Registration {
    /// The watch is live: its id, first revision and receiver.
    Live {
        id: u64,
        start: Revision,
        rx: mpsc::UnboundedReceiver<WatchResponse>,
    },
    /// The start revision is compacted.
    Compacted {
        start: Revision,
        compact_revision: Revision,
    },
}

impl State {
    /// Registers a watcher, replaying history from its start revision under the same lock
    /// so that no revision falls between replay and live delivery.
    pub(crate) fn watch(&mut self, request: &WatchRequest) -> Result<Registration> {
        request.range.validate()?;
        let start = match request.start {
            WatchStart::Now | WatchStart::Revision(0) => self.revision + 1,
            WatchStart::Revision(r) if r < 0 => {
                return Err(Error::invalid_argument(format!(
                    "watch start revision must not be negative, got {r}"
                )));
            }
            WatchStart::Revision(r) => r,
        };
        if start < self.compact_revision {
            return Ok(Registration::Compacted {
                start,
                compact_revision: self.compact_revision,
            });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let watcher = Watcher {
            range: request.range.clone(),
            start,
            prev_kv: request.prev_kv,
            tx,
        };
        if start <= self.revision {
            let from = self.history.partition_point(|e| e.revision < start);
            for entry in self.history.range(from..) {
                if let Some(response) = watcher.select(entry) {
                    // The receiver is alive: we hold it.
                    let _ = watcher.tx.send(response);
                }
            }
        }
        let id = self.watchers.next_id;
        self.watchers.next_id += 1;
        self.watchers.by_id.insert(id, watcher);
        Ok(Registration::Live { id, start, rx })
    }
}

/// Unregisters a watcher when its stream is dropped.
struct WatcherGuard {
    store: Weak<Shared>,
    id: u64,
}

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        if let Some(shared) = self.store.upgrade() {
            shared.lock().watchers.remove(self.id);
        }
    }
}

/// The state a live watch stream carries.
struct Live {
    rx: mpsc::UnboundedReceiver<WatchResponse>,
    _guard: WatcherGuard,
}

/// Builds the stream for a registration (faults are applied around it, by the client).
pub(crate) fn stream(registration: Registration, store: Weak<Shared>) -> WatchStream {
    match registration {
        Registration::Compacted {
            start,
            compact_revision,
        } => WatchStream::new(
            start,
            futures::stream::once(async move {
                Err(Error::Compacted {
                    compact_revision: Some(compact_revision),
                })
            })
            .boxed(),
        ),
        Registration::Live { id, start, rx } => {
            let live = Live {
                rx,
                _guard: WatcherGuard { store, id },
            };
            let inner = futures::stream::unfold(Some(live), |live| async move {
                let mut live = live?;
                let item = live.rx.recv().await.ok_or_else(|| {
                    Error::unavailable("the memory store of this watch was dropped")
                });
                // After an error the stream ends (and the watcher is unregistered).
                let keep = item.is_ok().then_some(live);
                Some((item, keep))
            });
            WatchStream::new(start, inner.boxed())
        }
    }
}
