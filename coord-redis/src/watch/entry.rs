//! Entries of the namespace's log stream (`{NS}:log`, one entry per changed key, id
//! `REVISION-N`), parsed once by whoever reads them and shared by every watcher.

use std::collections::VecDeque;
use std::fmt;

use coord_core::{Error, Event, EventKind, KeyRange, KeyValue, Result, Revision, WatchResponse};
use redis::streams::StreamId;

/// A stream entry id: the revision, and the entry's place among that revision's changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct EntryId {
    pub(super) revision: Revision,
    pub(super) seq: u64,
}

impl EntryId {
    /// Below every entry a script writes (`XREAD` from here reads the whole stream).
    pub(super) const ZERO: EntryId = EntryId {
        revision: 0,
        seq: 0,
    };

    /// The last id revision `revision - 1` could have: reading after it starts at
    /// `revision`.
    pub(super) fn before(revision: Revision) -> EntryId {
        EntryId {
            revision: revision - 1,
            seq: u64::MAX,
        }
    }

    pub(super) fn parse(id: &str) -> Result<EntryId> {
        id.split_once('-')
            .and_then(|(rev, seq)| {
                Some(EntryId {
                    revision: rev.parse().ok()?,
                    seq: seq.parse().ok()?,
                })
            })
            .ok_or_else(|| Error::contract(format!("redis watch: log entry id {id:?}")))
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.revision, self.seq)
    }
}

/// One change, with the key's previous state whenever the log has it (watchers that did
/// not ask for it drop it).
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) id: EntryId,
    pub(super) event: Event,
}

impl Entry {
    pub(super) fn parse(raw: &StreamId) -> Result<Entry> {
        let id = EntryId::parse(&raw.id)?;
        let field = |name: &str| -> Option<Vec<u8>> {
            match raw.map.get(name)? {
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
        let key = field("k")
            .ok_or_else(|| Error::contract(format!("redis watch: log entry {id} has no key")))?;
        let prev_kv = field("pc").is_some().then(|| KeyValue {
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
                mod_revision: id.revision,
                ..KeyValue::default()
            };
            (EventKind::Delete, kv)
        };
        Ok(Entry {
            id,
            event: Event { kind, kv, prev_kv },
        })
    }

    pub(super) fn parse_all(raw: &[StreamId]) -> Result<Vec<Entry>> {
        raw.iter().map(Entry::parse).collect()
    }
}

/// What one watcher wants out of the log.
#[derive(Debug, Clone)]
pub(super) struct Selector {
    pub(super) range: KeyRange,
    pub(super) prev_kv: bool,
    /// Entries at or below this were delivered already (or are before the start).
    pub(super) after: EntryId,
}

impl Selector {
    /// Queues the entries this watcher wants, one response per revision. `entries` must
    /// hold whole revisions (or end where the log ended when it was read), so that a
    /// revision's events never come in two responses.
    pub(super) fn take(&mut self, entries: &[Entry], out: &mut VecDeque<WatchResponse>) {
        // The revision of `out`'s last response, if this call added it: a response queued
        // earlier belongs to an earlier read and is never extended.
        let mut open: Option<Revision> = None;
        for entry in entries {
            if entry.id <= self.after {
                continue;
            }
            self.after = entry.id;
            if !self.range.contains(&entry.event.kv.key) {
                continue;
            }
            let mut event = entry.event.clone();
            if !self.prev_kv {
                event.prev_kv = None;
            }
            match out.back_mut() {
                Some(last) if open == Some(entry.id.revision) => last.events.push(event),
                _ => {
                    open = Some(entry.id.revision);
                    out.push_back(WatchResponse {
                        revision: entry.id.revision,
                        events: vec![event],
                    });
                }
            }
        }
    }
}

/// How many responses `entries` would make for a watcher of `range`: the revisions that
/// have at least one change in it.
pub(super) fn responses_in(entries: &[Entry], range: &KeyRange) -> usize {
    let mut count = 0;
    let mut last = None;
    for entry in entries {
        if last != Some(entry.id.revision) && range.contains(&entry.event.kv.key) {
            count += 1;
            last = Some(entry.id.revision);
        }
    }
    count
}
