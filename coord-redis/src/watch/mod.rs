//! Watches. All the watches of one backend share one reader: a task doing `XREAD BLOCK`
//! on the namespace's log (`{NS}:log`) on a connection of its own, handing whole revisions
//! to every watcher ([`hub`]). It starts with the first watch and stops when the last one
//! is dropped or the backend is.
//!
//! A new watch joins the live feed first, then reads its history from its start revision
//! with `XRANGE` on the shared connection (which does not block), then drops the live
//! entries its history already had, by entry id (kine's pattern): no gap, no duplicate.
//!
//! A watch never skips events silently. It ends with `Compacted` when its start revision
//! was compacted, when compaction trimmed entries the reader had not read yet, or when it
//! fell more than [`WATCH_BUFFER`] responses behind; with the redis error (`Unavailable`
//! for a dropped connection) when the reader fails; with a `Backend` "data loss" error when
//! the log went back below what was read or the namespace's epoch changed. The next watch starts a new reader.

mod entry;
mod hub;
mod reader;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use coord_core::{Error, Result, Revision, WatchRequest, WatchResponse, WatchStream};
use futures::StreamExt;
use redis::streams::StreamRangeReply;

use crate::backend::{Inner, redis_error};
use entry::{Entry, EntryId, Selector};
pub(crate) use hub::Hub;
use hub::Subscription;

/// How many responses (revisions with a matching event) a watch may have waiting, sent
/// by the reader and not yet taken. A watch further behind ends with
/// `Error::Compacted`: its events are not kept for it any longer.
pub const WATCH_BUFFER: usize = 4096;

/// Entries per `XRANGE` page of a catch-up.
const CATCH_UP_PAGE: usize = 1000;

/// Opens a watch of `request` from revision `start` (resolved by the caller).
///
/// Dropping the returned stream, or this future before it is ready, unsubscribes the
/// watch from the backend's reader; the last watch to go stops the reader.
pub(crate) async fn open(
    inner: &Inner,
    request: WatchRequest,
    start: Revision,
) -> Result<WatchStream> {
    // Join the live feed before reading the history, so that nothing written in between
    // falls through.
    let subscription = inner.watch_hub.subscribe(inner, &request.range).await?;
    let mut watcher = Watcher {
        subscription,
        selector: Selector {
            range: request.range,
            prev_kv: request.prev_kv,
            after: EntryId::before(start),
        },
        pending: VecDeque::new(),
        done: false,
    };
    match catch_up(inner, start).await {
        Ok(history) => {
            let Watcher {
                selector, pending, ..
            } = &mut watcher;
            selector.take(&history, pending);
        }
        Err(e) => {
            drop(watcher);
            let inner = futures::stream::once(async move { Err(e) }).boxed();
            return Ok(WatchStream::new(start, inner));
        }
    }
    let inner = futures::stream::unfold(watcher, |mut watcher| async move {
        let item = watcher.next().await?;
        Some((item, watcher))
    });
    Ok(WatchStream::new(start, inner.boxed()))
}

/// The log from `start` to its end, then a check that compaction has not removed any of
/// it: entries at or above the compact revision are never trimmed, so reading first and
/// checking after cannot miss a compaction in between.
async fn catch_up(inner: &Inner, start: Revision) -> Result<Vec<Entry>> {
    let mut conn = inner.connections.command();
    let log_key = inner.log_key();
    let mut history = Vec::new();
    let mut from = format!("{start}-0");
    loop {
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(&log_key)
            .arg(&from)
            .arg("+")
            .arg("COUNT")
            .arg(CATCH_UP_PAGE)
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_error("watch XRANGE", e))?;
        let page = Entry::parse_all(&reply.ids)?;
        let more = page.len() >= CATCH_UP_PAGE;
        if let Some(last) = page.last() {
            // Exclusive start (Redis >= 6.2): the next page begins after this one.
            from = format!("({}", last.id);
        }
        history.extend(page);
        if !more {
            break;
        }
    }
    let compacted: Option<Revision> = redis::cmd("GET")
        .arg(inner.compact_key())
        .query_async(&mut conn)
        .await
        .map_err(|e| redis_error("watch GET compact", e))?;
    if let Some(at) = compacted
        && start < at
    {
        return Err(Error::Compacted {
            compact_revision: Some(at),
        });
    }
    // Read after the history: entries of data that replaced this client's come with
    // another epoch.
    let epoch: Option<String> = redis::cmd("HGET")
        .arg(&*inner.data_lost.meta_key)
        .arg("epoch")
        .query_async(&mut conn)
        .await
        .map_err(|e| redis_error("watch HGET epoch", e))?;
    inner.data_lost.check(epoch.as_deref())?;
    Ok(history)
}

/// A live watch: its history first, then the feed.
struct Watcher {
    subscription: Subscription,
    selector: Selector,
    pending: VecDeque<WatchResponse>,
    done: bool,
}

impl Watcher {
    async fn next(&mut self) -> Option<Result<WatchResponse>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(response) = self.pending.pop_front() {
                return Some(Ok(response));
            }
            match self.subscription.recv().await {
                Ok(entries) => self.selector.take(&entries, &mut self.pending),
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}
