//! The reader task of a feed: `XREAD BLOCK` on a connection of its own, whole revisions
//! handed to the feed.

use std::sync::Arc;
use std::time::Duration;

use coord_core::Revision;
use redis::aio::ConnectionLike;
use redis::streams::{StreamId, StreamReadReply};

use super::entry::{Entry, EntryId};
use super::hub::{Fate, Feed};
use crate::data_loss::DataLost;

/// How long one `XREAD BLOCK` waits. Each timeout also checks that the log did not go
/// back (data loss), so this bounds how long that goes unnoticed by an idle watch.
const BLOCK: Duration = Duration::from_secs(2);
/// How long past [`BLOCK`] an answer may take before the server counts as gone (the
/// blocking connection has no response timeout of its own). Generous: a long script
/// holds up every reply of the single-threaded server.
const ANSWER_MARGIN: Duration = Duration::from_secs(10);
/// Entries per read.
pub(super) const READ_COUNT: usize = 512;

pub(super) struct Reader<C> {
    conn: C,
    log_key: String,
    compact_key: String,
    trimmed_key: String,
    data_lost: DataLost,
    feed: Arc<Feed>,
    /// The id of the last entry read.
    position: EntryId,
    /// Every entry of revisions up to this one has been read.
    complete: Revision,
    /// The trailing revision of a read that `COUNT` may have cut: held back until the
    /// next read shows it whole, so a revision's events never come in two responses.
    held: Vec<Entry>,
}

impl<C: ConnectionLike + Send + 'static> Reader<C> {
    /// A reader from `top`, the log's last generated id when the feed started (a whole
    /// revision: scripts are atomic).
    pub(super) fn new(
        conn: C,
        prefix: &str,
        data_lost: DataLost,
        top: EntryId,
        feed: Arc<Feed>,
    ) -> Self {
        Reader {
            conn,
            log_key: format!("{prefix}:log"),
            compact_key: format!("{prefix}:compact"),
            trimmed_key: format!("{prefix}:trimmed"),
            data_lost,
            feed,
            position: top,
            complete: top.revision,
            held: Vec::new(),
        }
    }

    /// Reads until the feed stops (its task is then aborted) or reading fails, which
    /// ends every watcher of the feed.
    pub(super) async fn run(mut self) {
        let fate = loop {
            match self.step().await {
                Ok(true) => {}
                Ok(false) => return,
                Err(fate) => break fate,
            }
        };
        tracing::debug!(?fate, "redis watch: the reader stopped; its watches end");
        self.feed.close(fate);
    }

    /// One blocking read and what follows; false when no watcher is left.
    async fn step(&mut self) -> Result<bool, Fate> {
        // The epoch is read right after the XREAD, on this connection: entries of data that
        // replaced this client's (after a restart without persistence, say) come with
        // another epoch, so they never pass for the continuation of the old log.
        let mut read = redis::pipe();
        read.cmd("XREAD")
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("STREAMS")
            .arg(&self.log_key)
            .arg(self.position.to_string())
            .cmd("HGET")
            .arg(&*self.data_lost.meta_key)
            .arg("epoch");
        let data_lost = self.data_lost.clone();
        let answer = tokio::select! {
            answer = tokio::time::timeout(BLOCK + ANSWER_MARGIN, read.query_async(&mut self.conn)) => answer,
            () = data_lost.lost() => return Err(Fate::DataLost(data_lost)),
        };
        let (reply, epoch): (Option<StreamReadReply>, Option<String>) = match answer {
            Err(_) => return Err(Fate::NoAnswer(BLOCK + ANSWER_MARGIN)),
            Ok(reply) => reply.map_err(|error| Fate::Redis {
                context: "watch XREAD",
                error,
            })?,
        };
        if self.data_lost.check(epoch.as_deref()).is_err() {
            return Err(Fate::DataLost(self.data_lost.clone()));
        }
        let mut raw = entries_of(reply);
        if raw.is_empty() {
            self.check_not_gone_back().await?;
            return Ok(self.feed.is_open());
        }
        let (mut compact, trimmed) = self.compaction().await?;
        if trimmed > self.complete {
            // Compaction removed an entry newer than what was read before this read: read
            // again, atomically with the compaction state, to tell "trimmed before we read"
            // (a gap) from "compacted just after".
            let ((again_compact, again_trimmed), again) = self.read_with_compaction().await?;
            if again_trimmed > self.complete {
                return Err(Fate::Compacted(again_compact));
            }
            compact = again_compact;
            raw = again;
        }
        let full = raw.len() >= READ_COUNT;
        let entries = Entry::parse_all(&raw).map_err(|e| Fate::Contract(e.to_string()))?;
        let Some(last) = entries.last() else {
            return Ok(self.feed.is_open());
        };
        self.position = last.id;
        self.held.extend(entries);
        let ready = if full {
            // The read may have stopped inside its last revision.
            let trailing = self.position.revision;
            let cut = self.held.partition_point(|e| e.id.revision < trailing);
            let rest = self.held.split_off(cut);
            self.complete = self.complete.max(trailing - 1);
            std::mem::replace(&mut self.held, rest)
        } else {
            // Fewer than asked: the read reached the end of the log, a whole revision.
            self.complete = self.position.revision;
            std::mem::take(&mut self.held)
        };
        if ready.is_empty() {
            return Ok(self.feed.is_open());
        }
        Ok(self.feed.publish(ready.into(), compact))
    }

    /// The compact revision and the revision of the newest entry compaction removed
    /// (`{NS}:trimmed`; revisions may be sparse, so the compact revision alone cannot tell
    /// whether an unread entry went).
    async fn compaction(&mut self) -> Result<(Revision, Revision), Fate> {
        let (compact, trimmed): (Option<Revision>, Option<Revision>) = redis::cmd("MGET")
            .arg(&self.compact_key)
            .arg(&self.trimmed_key)
            .query_async(&mut self.conn)
            .await
            .map_err(|error| Fate::Redis {
                context: "watch MGET compaction",
                error,
            })?;
        Ok((compact.unwrap_or(0), trimmed.unwrap_or(0)))
    }

    /// The compaction state and the entries after the position, read in one `MULTI`.
    async fn read_with_compaction(
        &mut self,
    ) -> Result<((Revision, Revision), Vec<StreamId>), Fate> {
        let ((compact, trimmed), reply): (
            (Option<Revision>, Option<Revision>),
            Option<StreamReadReply>,
        ) = redis::pipe()
            .atomic()
            .cmd("MGET")
            .arg(&self.compact_key)
            .arg(&self.trimmed_key)
            .cmd("XREAD")
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("STREAMS")
            .arg(&self.log_key)
            .arg(self.position.to_string())
            .query_async(&mut self.conn)
            .await
            .map_err(|error| Fate::Redis {
                context: "watch MULTI MGET XREAD",
                error,
            })?;
        Ok((
            (compact.unwrap_or(0), trimmed.unwrap_or(0)),
            entries_of(reply),
        ))
    }

    /// After a read that found nothing: the log must still reach the position. A log that
    /// is gone, or whose last id is below what was read, lost data (restart without
    /// persistence, `FLUSHALL`, failover to a replica that missed writes); the reader
    /// would otherwise wait for ids above the position forever.
    async fn check_not_gone_back(&mut self) -> Result<(), Fate> {
        if self.position == EntryId::ZERO {
            return Ok(());
        }
        let top = log_top(&mut self.conn, &self.log_key)
            .await
            .map_err(|error| Fate::Redis {
                context: "watch XINFO STREAM",
                error,
            })?;
        match top {
            Some(top) if top >= self.position => Ok(()),
            Some(top) => {
                self.data_lost.declare(&format!(
                    "the watch log {} went back from {} to {top}",
                    self.log_key, self.position
                ));
                Err(Fate::DataLost(self.data_lost.clone()))
            }
            None => {
                self.data_lost.declare(&format!(
                    "the watch log {} is gone (it had reached {})",
                    self.log_key, self.position
                ));
                Err(Fate::DataLost(self.data_lost.clone()))
            }
        }
    }
}

fn entries_of(reply: Option<StreamReadReply>) -> Vec<StreamId> {
    reply
        .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
        .unwrap_or_default()
}

/// The log's last generated id (kept by Redis after trimming), `None` when the log does
/// not exist.
pub(super) async fn log_top<C: ConnectionLike>(
    conn: &mut C,
    log_key: &str,
) -> redis::RedisResult<Option<EntryId>> {
    let exists: bool = redis::cmd("EXISTS").arg(log_key).query_async(conn).await?;
    if !exists {
        return Ok(None);
    }
    let info: redis::Value = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(log_key)
        .query_async(conn)
        .await?;
    let last = field(&info, "last-generated-id").ok_or_else(|| {
        redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "XINFO STREAM without last-generated-id",
        ))
    })?;
    EntryId::parse(&last).map(Some).map_err(|_| {
        redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "XINFO STREAM last-generated-id is not REVISION-N",
            last,
        ))
    })
}

/// A text field of a RESP2 (flat key/value array) or RESP3 (map) reply.
fn field(reply: &redis::Value, name: &str) -> Option<String> {
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    match reply {
        redis::Value::Array(items) => items
            .chunks(2)
            .find(|pair| text(&pair[0]).as_deref() == Some(name))
            .and_then(|pair| pair.get(1).and_then(text)),
        redis::Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| text(k).as_deref() == Some(name))
            .and_then(|(_, v)| text(v)),
        _ => None,
    }
}
