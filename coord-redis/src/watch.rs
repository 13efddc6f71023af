//! Watches: catch up from the namespace's stream with `XRANGE`, then follow it with
//! `XREAD BLOCK`.

use std::collections::VecDeque;
use std::time::Duration;

use coord_core::{
    Error, Event, EventKind, KeyRange, KeyValue, Result, Revision, WatchRequest, WatchResponse,
    WatchStream,
};
use futures::StreamExt;
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};

use crate::backend::{Inner, redis_error};
use crate::connection::Connection;

/// How long one `XREAD BLOCK` waits before asking again; a dropped watch's connection is
/// closed at once, so this only bounds how long a silent dead server goes unnoticed.
const WATCH_BLOCK: Duration = Duration::from_secs(5);

/// Opens a watch of `request` from revision `start` (resolved by the caller).
pub(crate) async fn open(
    inner: &Inner,
    request: WatchRequest,
    start: Revision,
) -> Result<WatchStream> {
    // Its own connection: XREAD BLOCK would hold up every call queued behind it on the
    // shared one.
    let conn = inner.connections.blocking().await?;
    let mut watch = Watch {
        conn,
        log_key: inner.log_key(),
        compact_key: format!("{}:compact", inner.prefix),
        range: request.range,
        prev_kv: request.prev_kv,
        start,
        last_id: if start > 1 {
            format!("{}-{}", start - 1, u64::MAX)
        } else {
            "0-0".to_owned()
        },
        pending: VecDeque::new(),
        done: false,
    };
    if let Err(e) = watch.catch_up().await {
        watch.done = true;
        let inner = futures::stream::once(async move { Err(e) }).boxed();
        return Ok(WatchStream::new(start, inner));
    }
    let inner = futures::stream::unfold(watch, |mut watch| async move {
        let item = watch.next().await?;
        Some((item, watch))
    });
    Ok(WatchStream::new(start, inner.boxed()))
}

/// A live watch: reads the namespace's stream on a connection of its own.
struct Watch {
    conn: Connection,
    log_key: String,
    compact_key: String,
    range: KeyRange,
    prev_kv: bool,
    start: Revision,
    /// The id of the last stream entry read.
    last_id: String,
    pending: VecDeque<WatchResponse>,
    done: bool,
}

impl Watch {
    /// Reads the history from the start revision (XRANGE), then checks that compaction has
    /// not removed any of it: entries at or above the compact revision are never trimmed,
    /// so reading first and checking after cannot miss a compaction in between.
    async fn catch_up(&mut self) -> Result<()> {
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(&self.log_key)
            .arg(format!("{}-0", self.start))
            .arg("+")
            .query_async(&mut self.conn)
            .await
            .map_err(|e| redis_error("watch XRANGE", e))?;
        let compacted: Option<i64> = redis::cmd("GET")
            .arg(&self.compact_key)
            .query_async(&mut self.conn)
            .await
            .map_err(|e| redis_error("watch GET", e))?;
        if let Some(at) = compacted
            && self.start < at
        {
            return Err(Error::Compacted {
                compact_revision: Some(at),
            });
        }
        self.take(&reply.ids)
    }

    /// Groups stream entries by revision and queues those the watch matches.
    fn take(&mut self, entries: &[StreamId]) -> Result<()> {
        for entry in entries {
            self.last_id.clone_from(&entry.id);
            let revision: Revision = entry
                .id
                .split('-')
                .next()
                .and_then(|r| r.parse().ok())
                .ok_or_else(|| Error::contract(format!("stream entry id {:?}", entry.id)))?;
            let Some(event) = self.event(entry, revision)? else {
                continue;
            };
            match self.pending.back_mut() {
                Some(last) if last.revision == revision => last.events.push(event),
                _ => self.pending.push_back(WatchResponse {
                    revision,
                    events: vec![event],
                }),
            }
        }
        Ok(())
    }

    fn event(&self, entry: &StreamId, revision: Revision) -> Result<Option<Event>> {
        let field = |name: &str| -> Option<Vec<u8>> {
            match entry.map.get(name)? {
                redis::Value::BulkString(b) => Some(b.clone()),
                redis::Value::SimpleString(s) => Some(s.clone().into_bytes()),
                _ => None,
            }
        };
        let number = |name: &str| -> i64 {
            field(name)
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        };
        let key = field("k").ok_or_else(|| Error::contract("stream entry without a key"))?;
        if !self.range.contains(&key) {
            return Ok(None);
        }
        let prev_kv = (self.prev_kv && field("pc").is_some()).then(|| KeyValue {
            key: key.clone(),
            value: field("pv").unwrap_or_default(),
            create_revision: number("pc"),
            mod_revision: number("pm"),
            version: number("pver"),
            lease: number("pl"),
        });
        let (kind, kv) = if field("t").as_deref() == Some(b"P") {
            let kv = KeyValue {
                key,
                value: field("v").unwrap_or_default(),
                create_revision: number("c"),
                mod_revision: number("m"),
                version: number("ver"),
                lease: number("l"),
            };
            (EventKind::Put, kv)
        } else {
            let kv = KeyValue {
                key,
                mod_revision: revision,
                ..KeyValue::default()
            };
            (EventKind::Delete, kv)
        };
        Ok(Some(Event { kind, kv, prev_kv }))
    }

    /// The next response: queued ones first, then whatever `XREAD BLOCK` brings.
    async fn next(&mut self) -> Option<Result<WatchResponse>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(response) = self.pending.pop_front() {
                return Some(Ok(response));
            }
            let reply: redis::RedisResult<Option<StreamReadReply>> = redis::cmd("XREAD")
                .arg("BLOCK")
                .arg(WATCH_BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&self.log_key)
                .arg(&self.last_id)
                .query_async(&mut self.conn)
                .await;
            let result = match reply {
                Ok(Some(reply)) => {
                    let entries: Vec<StreamId> =
                        reply.keys.into_iter().flat_map(|k| k.ids).collect();
                    self.take(&entries)
                }
                Ok(None) => Ok(()),
                Err(e) => Err(redis_error("watch XREAD", e)),
            };
            if let Err(e) = result {
                self.done = true;
                return Some(Err(e));
            }
        }
    }
}
