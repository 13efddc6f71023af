//! The hub: one live feed per backend, read by one reader task and fanned out to every
//! watcher of that backend.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use coord_core::{Error, KeyRange, Result, Revision};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::WATCH_BUFFER;
use super::entry::{Entry, responses_in};
use super::reader;
use crate::backend::{Inner, redis_error};
use crate::data_loss::DataLost;

/// Why a feed ended for a watcher; turned into the watcher's last item.
#[derive(Debug, Clone)]
pub(super) enum Fate {
    /// The watcher fell behind its buffer, or compaction trimmed entries the reader had
    /// not read yet: the events it would need are gone (or no longer kept for it).
    Compacted(Revision),
    /// The reader's connection failed.
    Redis {
        context: &'static str,
        error: redis::RedisError,
    },
    /// The server did not answer a blocking read within its block time plus a margin.
    NoAnswer(Duration),
    /// The server lost data: the log went back below what was read, or the namespace's
    /// epoch changed.
    DataLost(DataLost),
    /// The log held something this code cannot read.
    Contract(String),
    /// Every handle of the backend was dropped.
    BackendDropped,
}

impl Fate {
    pub(super) fn error(&self) -> Error {
        match self {
            Fate::Compacted(at) => Error::Compacted {
                compact_revision: Some(*at),
            },
            Fate::Redis { context, error } => redis_error(context, error.clone()),
            Fate::NoAnswer(after) => Error::unavailable(format!(
                "redis watch: the server did not answer a blocking read within {after:?}"
            )),
            Fate::DataLost(signal) => signal.error(),
            Fate::Contract(message) => Error::contract(message.clone()),
            Fate::BackendDropped => {
                Error::unavailable("redis watch: every handle of its RedisBackend was dropped")
            }
        }
    }
}

/// A backend's watch hub (one per `Inner`): the current feed, if a reader runs.
pub(crate) struct Hub {
    // Async, so that a watch finding no reader can start one (connect, read the log's top)
    // while concurrent watches wait for it instead of starting their own.
    slot: tokio::sync::Mutex<Option<Arc<Feed>>>,
}

impl Hub {
    pub(crate) fn new() -> Hub {
        Hub {
            slot: tokio::sync::Mutex::new(None),
        }
    }

    /// Registers a watcher of `range` on the live feed, starting a reader when none runs.
    /// The watcher receives every whole revision the reader hands out from now on.
    pub(super) async fn subscribe(&self, inner: &Inner, range: &KeyRange) -> Result<Subscription> {
        let mut slot = self.slot.lock().await;
        if let Some(subscription) = slot.as_ref().and_then(|feed| feed.register(range)) {
            return Ok(subscription);
        }
        let mut conn = inner.connections.blocking().await?;
        let log_key = inner.log_key();
        let top = reader::log_top(&mut conn, &log_key)
            .await
            .map_err(|e| redis_error("watch XINFO STREAM", e))?
            .unwrap_or(super::entry::EntryId::ZERO);
        let feed = Arc::new(Feed::new());
        let subscription = feed
            .register(range)
            .ok_or_else(|| Error::contract("redis watch: a new feed refused its first watcher"))?;
        let reader = reader::Reader::new(
            conn,
            &inner.prefix,
            inner.data_lost.clone(),
            top,
            feed.clone(),
        );
        let task = tokio::spawn(reader.run());
        feed.set_task(task.abort_handle());
        *slot = Some(feed);
        Ok(subscription)
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(feed) = self.slot.get_mut().take() {
            feed.close(Fate::BackendDropped);
        }
    }
}

type Batch = (Arc<[Entry]>, usize);

/// A live feed: its watchers and its reader task.
pub(super) struct Feed {
    state: Mutex<FeedState>,
}

struct FeedState {
    /// False once the feed stopped (last watcher gone, reader failed, backend dropped): a
    /// new watch then starts a new feed.
    open: bool,
    next_id: u64,
    subscribers: HashMap<u64, Subscriber>,
    task: Option<AbortHandle>,
}

struct Subscriber {
    range: KeyRange,
    tx: mpsc::UnboundedSender<Batch>,
    /// Responses sent and not yet taken by the watcher; the bound is [`WATCH_BUFFER`].
    queued: Arc<AtomicUsize>,
    fate: Arc<OnceLock<Fate>>,
}

impl Feed {
    pub(super) fn new() -> Feed {
        Feed {
            state: Mutex::new(FeedState {
                open: true,
                next_id: 0,
                subscribers: HashMap::new(),
                task: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FeedState> {
        // Nothing panics while holding the lock; a poisoned one still holds valid state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `None` when the feed has stopped.
    pub(super) fn register(self: &Arc<Self>, range: &KeyRange) -> Option<Subscription> {
        let mut state = self.lock();
        if !state.open {
            return None;
        }
        let id = state.next_id;
        state.next_id += 1;
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let fate = Arc::new(OnceLock::new());
        state.subscribers.insert(
            id,
            Subscriber {
                range: range.clone(),
                tx,
                queued: queued.clone(),
                fate: fate.clone(),
            },
        );
        Some(Subscription {
            feed: self.clone(),
            id,
            rx,
            queued,
            fate,
        })
    }

    fn set_task(&self, task: AbortHandle) {
        let mut state = self.lock();
        if state.open {
            state.task = Some(task);
        } else {
            task.abort();
        }
    }

    pub(super) fn is_open(&self) -> bool {
        self.lock().open
    }

    /// Hands whole revisions to every watcher they concern. A watcher whose buffer would
    /// overflow is ended with `Compacted { compact }`: its events are not kept for it.
    /// Returns false when no watcher is left (the feed is then closed).
    pub(super) fn publish(&self, entries: Arc<[Entry]>, compact: Revision) -> bool {
        let mut state = self.lock();
        let mut overflowed = Vec::new();
        for (id, subscriber) in &state.subscribers {
            let count = responses_in(&entries, &subscriber.range);
            if count == 0 {
                continue;
            }
            let queued = subscriber.queued.load(Ordering::Acquire);
            if queued + count > WATCH_BUFFER {
                overflowed.push(*id);
                continue;
            }
            subscriber.queued.fetch_add(count, Ordering::AcqRel);
            // An error means the watcher is being dropped; its drop unsubscribes it.
            let _ = subscriber.tx.send((entries.clone(), count));
        }
        for id in overflowed {
            if let Some(subscriber) = state.subscribers.remove(&id) {
                tracing::debug!(
                    buffer = WATCH_BUFFER,
                    "redis watch: a watcher fell behind its buffer and is ended (Compacted)"
                );
                let _ = subscriber.fate.set(Fate::Compacted(compact.max(1)));
            }
        }
        if state.subscribers.is_empty() {
            Self::stop(&mut state);
            return false;
        }
        true
    }

    /// Ends every watcher with `fate` and stops the reader.
    pub(super) fn close(&self, fate: Fate) {
        let mut state = self.lock();
        if !state.open {
            return;
        }
        for (_, subscriber) in state.subscribers.drain() {
            // Set before the sender is dropped, so the watcher finds it once the channel
            // is empty.
            let _ = subscriber.fate.set(fate.clone());
        }
        Self::stop(&mut state);
    }

    fn stop(state: &mut FeedState) {
        state.open = false;
        if let Some(task) = state.task.take() {
            task.abort();
        }
    }

    fn unsubscribe(&self, id: u64) {
        let mut state = self.lock();
        if state.subscribers.remove(&id).is_some() && state.subscribers.is_empty() {
            Self::stop(&mut state);
        }
    }
}

/// A watcher's end of the feed. Dropping it unsubscribes; the last one to go stops the
/// reader.
pub(super) struct Subscription {
    feed: Arc<Feed>,
    id: u64,
    rx: mpsc::UnboundedReceiver<Batch>,
    queued: Arc<AtomicUsize>,
    fate: Arc<OnceLock<Fate>>,
}

impl Subscription {
    /// The next whole revisions from the reader, or the error that ended the feed for this
    /// watcher. Cancel safe (`mpsc::UnboundedReceiver::recv`).
    pub(super) async fn recv(&mut self) -> Result<Arc<[Entry]>> {
        match self.rx.recv().await {
            Some((entries, count)) => {
                self.queued.fetch_sub(count, Ordering::AcqRel);
                Ok(entries)
            }
            None => Err(self.fate.get().map_or_else(
                || Error::contract("redis watch: the feed ended without saying why"),
                Fate::error,
            )),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.feed.unsubscribe(self.id);
    }
}
