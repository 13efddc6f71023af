//! The revisioned key space: keys, revisions, event history, txn and range.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{BTreeSet, VecDeque, btree_set};
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use coord_core::{
    Delete, Error, Event, EventKind, KeyRange, KeyValue, LeaseGrant, LeaseId, LeaseStatus,
    NO_LEASE, Put, RangeRequest, RangeResponse, Result, Revision, SortOrder, SortTarget, TxnOp,
    TxnOpResponse, TxnRequest, TxnResponse,
};
use tokio::time::Instant;

use crate::lease::{LeaseRules, Leases};
use crate::watch::Watchers;

/// How many revisions of history a store keeps for watches that start in the past, unless
/// configured otherwise ([`MemoryOptions::history_retention`](crate::MemoryOptions::history_retention),
/// [`MemoryBackend::set_history_retention`](crate::MemoryBackend::set_history_retention)).
///
/// Why a revision cap, and not "everything at or above the oldest live watcher's start": a
/// live watcher never reads history again (each revision is pushed to it as it is
/// committed), so that rule would protect nobody, and with no watcher it would keep
/// nothing, failing the usual "read, then watch from the read's revision + 1" with
/// [`Error::Compacted`] whenever a write lands in between. A cap keeps that pattern working
/// for any gap shorter than the cap, like etcd's `--auto-compaction-mode=revision`, and
/// bounds memory: a few hundred bytes per revision.
pub const DEFAULT_HISTORY_REVISIONS: u64 = 10_000;

/// A key's current version, ordered (and found) by its key. The key table, the history and
/// a txn's changes share one allocation, so a write copies nothing: the request's key and
/// value move in, and the version it replaces moves into the history as the change's
/// previous version.
#[derive(Debug, Clone)]
pub(crate) struct Entry(pub(crate) Arc<KeyValue>);

impl Entry {
    pub(crate) fn key(&self) -> &[u8] {
        &self.0.key
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(other.key())
    }
}

impl Borrow<[u8]> for Entry {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

/// One change of a revision, as recorded: the versions involved, shared with the key table.
/// A watcher's [`Event`] is made from it when delivered (only for watchers it matches).
#[derive(Debug)]
pub(crate) enum Change {
    Put {
        kv: Arc<KeyValue>,
        prev: Option<Arc<KeyValue>>,
    },
    Delete {
        prev: Arc<KeyValue>,
    },
}

impl Change {
    pub(crate) fn key(&self) -> &[u8] {
        match self {
            Change::Put { kv, .. } => &kv.key,
            Change::Delete { prev } => &prev.key,
        }
    }

    /// The event a watcher sees for this change of `revision`.
    pub(crate) fn event(&self, revision: Revision, with_prev: bool) -> Event {
        match self {
            Change::Put { kv, prev } => Event {
                kind: EventKind::Put,
                kv: KeyValue::clone(kv),
                prev_kv: if with_prev {
                    prev.as_deref().cloned()
                } else {
                    None
                },
            },
            // etcd's DELETE event: the key with `mod_revision` set to the deleting revision
            // and every other field zero or empty; the deleted key as `prev_kv`.
            Change::Delete { prev } => Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: prev.key.clone(),
                    mod_revision: revision,
                    ..KeyValue::default()
                },
                prev_kv: with_prev.then(|| KeyValue::clone(prev)),
            },
        }
    }

    /// The heap bytes this change keeps alive, counting shared versions in full.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        let kv = |kv: &KeyValue| {
            std::mem::size_of::<KeyValue>() + kv.key.capacity() + kv.value.capacity()
        };
        match self {
            Change::Put { kv: new, prev } => kv(new) + prev.as_deref().map_or(0, kv),
            Change::Delete { prev } => kv(prev),
        }
    }
}

/// The changes of one revision, in the order applied.
#[derive(Debug)]
pub(crate) struct RevisionEvents {
    pub(crate) revision: Revision,
    pub(crate) changes: Vec<Change>,
}

/// Everything behind the store's lock.
#[derive(Debug)]
pub(crate) struct State {
    /// The current revision; 1 for an empty store, as in etcd.
    pub(crate) revision: Revision,
    /// The oldest revision a watch can start from; 0 until the first compaction.
    pub(crate) compact_revision: Revision,
    /// When set, history is compacted automatically to keep at most this many revisions
    /// ([`DEFAULT_HISTORY_REVISIONS`] unless configured otherwise).
    pub(crate) retention: Option<u64>,
    pub(crate) keys: BTreeSet<Entry>,
    /// Changes of every revision at or above `compact_revision` (and within `retention`),
    /// oldest first.
    pub(crate) history: VecDeque<RevisionEvents>,
    pub(crate) leases: Leases,
    /// How granted TTLs are rounded.
    pub(crate) lease_rules: LeaseRules,
    pub(crate) watchers: Watchers,
}

impl Default for State {
    fn default() -> Self {
        State {
            revision: 1,
            compact_revision: 0,
            retention: Some(DEFAULT_HISTORY_REVISIONS),
            keys: BTreeSet::new(),
            history: VecDeque::new(),
            leases: Leases::default(),
            lease_rules: LeaseRules::default(),
            watchers: Watchers::default(),
        }
    }
}

/// The keys of a [`KeyRange`], in key order, without boxing or copying.
pub(crate) enum KeysIn<'a> {
    One(Option<&'a Entry>),
    Prefix {
        keys: btree_set::Range<'a, Entry>,
        prefix: &'a [u8],
    },
    Span(btree_set::Range<'a, Entry>),
}

impl<'a> Iterator for KeysIn<'a> {
    type Item = &'a Entry;

    fn next(&mut self) -> Option<&'a Entry> {
        match self {
            KeysIn::One(entry) => entry.take(),
            // Keys with a prefix are contiguous: the first one without it ends the prefix.
            KeysIn::Prefix { keys, prefix } => keys.next().filter(|e| e.key().starts_with(prefix)),
            KeysIn::Span(keys) => keys.next(),
        }
    }
}

/// The keys of `range`, in key order.
pub(crate) fn keys_in<'a>(keys: &'a BTreeSet<Entry>, range: &'a KeyRange) -> KeysIn<'a> {
    match range {
        KeyRange::Key(k) => KeysIn::One(keys.get(k.as_slice())),
        KeyRange::Prefix(p) => KeysIn::Prefix {
            keys: keys.range::<[u8], _>((Bound::Included(p.as_slice()), Bound::Unbounded)),
            prefix: p,
        },
        KeyRange::Range { start, end } => KeysIn::Span(keys.range::<[u8], _>((
            Bound::Included(start.as_slice()),
            Bound::Excluded(end.as_slice()),
        ))),
    }
}

/// Whether `a` comes strictly before `b` in `sort` (keys arrive in ascending key order, and
/// ties keep it, as a stable sort does).
fn sorts_before(sort: Option<(SortTarget, SortOrder)>, a: &KeyValue, b: &KeyValue) -> bool {
    match sort {
        None | Some((SortTarget::Key, SortOrder::Ascend)) => a.key < b.key,
        Some((SortTarget::Key, SortOrder::Descend)) => a.key > b.key,
        Some((SortTarget::CreateRevision, SortOrder::Ascend)) => {
            a.create_revision < b.create_revision
        }
        Some((SortTarget::CreateRevision, SortOrder::Descend)) => {
            a.create_revision > b.create_revision
        }
        Some((SortTarget::ModRevision, SortOrder::Ascend)) => a.mod_revision < b.mod_revision,
        Some((SortTarget::ModRevision, SortOrder::Descend)) => a.mod_revision > b.mod_revision,
    }
}

/// A key as a range answer reports it.
fn answer(kv: &KeyValue, keys_only: bool) -> KeyValue {
    if keys_only {
        KeyValue {
            key: kv.key.clone(),
            value: Vec::new(),
            ..*kv
        }
    } else {
        kv.clone()
    }
}

/// Answers a range request from `keys`, reporting `revision`.
pub(crate) fn range(
    keys: &BTreeSet<Entry>,
    request: &RangeRequest,
    revision: Revision,
) -> RangeResponse {
    let min = request.min_create_revision;
    let max = request.max_create_revision;
    let wanted = |kv: &KeyValue| {
        !((min > 0 && kv.create_revision < min) || (max > 0 && kv.create_revision > max))
    };
    let in_range = keys_in(keys, &request.range).map(|e| &*e.0);
    if request.count_only {
        return RangeResponse {
            kvs: Vec::new(),
            more: false,
            count: in_range.count() as i64,
            revision,
        };
    }
    let limit = usize::try_from(request.limit).ok().filter(|l| *l > 0);
    let mut count: i64 = 0;
    if limit == Some(1) {
        // The recipes' reads (first or last created, one key): one pass, no list.
        let mut best: Option<&KeyValue> = None;
        let mut matched = 0_usize;
        for kv in in_range {
            count += 1;
            if !wanted(kv) {
                continue;
            }
            matched += 1;
            if best.is_none_or(|b| sorts_before(request.sort, kv, b)) {
                best = Some(kv);
            }
        }
        return RangeResponse {
            kvs: best
                .map(|kv| vec![answer(kv, request.keys_only)])
                .unwrap_or_default(),
            more: matched > 1,
            count,
            revision,
        };
    }
    let mut selected: Vec<&KeyValue> = Vec::new();
    for kv in in_range {
        count += 1;
        if wanted(kv) {
            selected.push(kv);
        }
    }
    // Keys come in ascending key order; stable sorts keep it for ties.
    match request.sort {
        None | Some((SortTarget::Key, SortOrder::Ascend)) => {}
        Some((SortTarget::Key, SortOrder::Descend)) => selected.reverse(),
        Some(sort) => selected.sort_by(|a, b| {
            if sorts_before(Some(sort), a, b) {
                Ordering::Less
            } else if sorts_before(Some(sort), b, a) {
                Ordering::Greater
            } else {
                Ordering::Equal
            }
        }),
    }
    let mut more = false;
    if let Some(limit) = limit
        && selected.len() > limit
    {
        selected.truncate(limit);
        more = true;
    }
    RangeResponse {
        kvs: selected
            .into_iter()
            .map(|kv| answer(kv, request.keys_only))
            .collect(),
        more,
        count,
        revision,
    }
}

impl State {
    /// Expires every lease whose deadline is at or before `now`, earliest first.
    pub(crate) fn expire_due(&mut self, now: Instant) {
        while let Some(id) = self.leases.first_due(now) {
            tracing::debug!(
                lease = format_args!("{id:x}"),
                "memory backend: lease expired"
            );
            self.remove_lease(id);
        }
    }

    /// Removes a lease and deletes its keys in one new revision (none if it has no keys).
    pub(crate) fn remove_lease(&mut self, id: LeaseId) -> bool {
        let Some(lease) = self.leases.remove(id) else {
            return false;
        };
        let mut changes = Vec::with_capacity(lease.keys.len());
        for key in lease.keys {
            if let Some(prev) = self.keys.take(key.key()) {
                changes.push(Change::Delete { prev: prev.0 });
            }
        }
        if !changes.is_empty() {
            self.commit(changes);
        }
        true
    }

    /// Grants a lease of `ttl` (already rounded).
    pub(crate) fn lease_grant(&mut self, ttl: Duration, now: Instant) -> LeaseGrant {
        self.expire_due(now);
        let id = self.leases.grant(ttl, now);
        LeaseGrant { id, ttl }
    }

    pub(crate) fn lease_keep_alive(&mut self, id: LeaseId, now: Instant) -> Result<Duration> {
        self.expire_due(now);
        self.leases.keep_alive(id, now)
    }

    pub(crate) fn lease_revoke(&mut self, id: LeaseId, now: Instant) -> Result<()> {
        self.expire_due(now);
        if self.remove_lease(id) {
            Ok(())
        } else {
            Err(Error::LeaseNotFound { lease: Some(id) })
        }
    }

    pub(crate) fn lease_time_to_live(&mut self, id: LeaseId, now: Instant) -> Result<LeaseStatus> {
        self.expire_due(now);
        let lease = self
            .leases
            .get(id)
            .ok_or(Error::LeaseNotFound { lease: Some(id) })?;
        Ok(LeaseStatus {
            id,
            granted_ttl: lease.ttl,
            remaining: lease.deadline.saturating_duration_since(now),
        })
    }

    pub(crate) fn range(&mut self, request: &RangeRequest, now: Instant) -> Result<RangeResponse> {
        request.validate()?;
        self.expire_due(now);
        Ok(range(&self.keys, request, self.revision))
    }

    pub(crate) fn txn(&mut self, request: TxnRequest, now: Instant) -> Result<TxnResponse> {
        request.validate()?;
        self.expire_due(now);
        let succeeded = request
            .compares
            .iter()
            .all(|c| c.evaluate(self.keys.get(c.key.as_slice()).map(|e| &*e.0)));
        let ops = if succeeded {
            request.success
        } else {
            request.failure
        };
        for op in &ops {
            if let TxnOp::Put(p) = op
                && p.lease != NO_LEASE
                && !self.leases.contains(p.lease)
            {
                return Err(Error::LeaseNotFound {
                    lease: Some(p.lease),
                });
            }
        }
        let rev = self.revision + 1;
        let mut changes = Vec::new();
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match op {
                TxnOp::Put(put) => self.apply_put(put, rev, &mut changes),
                TxnOp::Delete(delete) => self.apply_delete(&delete, &mut changes),
                TxnOp::Range(request) => {
                    // As etcd: a read after a write in the same txn reports the new revision.
                    let seen = if changes.is_empty() {
                        self.revision
                    } else {
                        rev
                    };
                    TxnOpResponse::Range(range(&self.keys, &request, seen))
                }
            };
            responses.push(response);
        }
        if !changes.is_empty() {
            self.commit(changes);
        }
        Ok(TxnResponse {
            succeeded,
            revision: self.revision,
            responses,
        })
    }

    fn apply_put(&mut self, put: Put, rev: Revision, changes: &mut Vec<Change>) -> TxnOpResponse {
        let prev = self.keys.get(put.key.as_slice()).map(|e| e.0.clone());
        let prev_lease = prev.as_ref().map_or(NO_LEASE, |p| p.lease);
        if prev_lease != put.lease && prev_lease != NO_LEASE {
            self.leases.detach(prev_lease, &put.key);
        }
        let kv = Arc::new(KeyValue {
            create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
            mod_revision: rev,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            lease: put.lease,
            key: put.key,
            value: put.value,
        });
        let entry = Entry(kv.clone());
        if put.lease != NO_LEASE {
            self.leases.attach(put.lease, &entry);
        }
        self.keys.replace(entry);
        let prev_kv = if put.prev_kv {
            prev.as_deref().cloned()
        } else {
            None
        };
        changes.push(Change::Put { kv, prev });
        TxnOpResponse::Put { prev_kv }
    }

    fn apply_delete(&mut self, delete: &Delete, changes: &mut Vec<Change>) -> TxnOpResponse {
        let mut prev_kvs = Vec::new();
        let mut deleted = 0;
        let mut gone = |state: &mut State, prev: Arc<KeyValue>| {
            if prev.lease != NO_LEASE {
                state.leases.detach(prev.lease, &prev.key);
            }
            if delete.prev_kv {
                prev_kvs.push(KeyValue::clone(&prev));
            }
            deleted += 1;
            changes.push(Change::Delete { prev });
        };
        if let KeyRange::Key(key) = &delete.range {
            if let Some(prev) = self.keys.take(key.as_slice()) {
                gone(self, prev.0);
            }
        } else {
            let doomed: Vec<Entry> = keys_in(&self.keys, &delete.range).cloned().collect();
            for entry in doomed {
                self.keys.remove(entry.key());
                gone(self, entry.0);
            }
        }
        TxnOpResponse::Delete { deleted, prev_kvs }
    }

    /// Makes `changes` (non-empty) the next revision: bumps the revision, records history
    /// (trimmed to the retention bound) and notifies watchers.
    fn commit(&mut self, changes: Vec<Change>) {
        debug_assert!(!changes.is_empty());
        self.revision += 1;
        let entry = RevisionEvents {
            revision: self.revision,
            changes,
        };
        self.watchers.notify(&entry);
        self.history.push_back(entry);
        if let Some(keep) = self.retention {
            let keep = i64::try_from(keep.max(1)).unwrap_or(i64::MAX);
            let floor = self.revision - keep + 1;
            if floor > self.compact_revision.max(1) {
                self.compact_to(floor);
            }
        }
    }

    /// Compacts history below `revision`.
    pub(crate) fn compact(&mut self, revision: Revision, now: Instant) -> Result<()> {
        self.expire_due(now);
        if revision < 1 {
            return Err(Error::invalid_argument(format!(
                "compact revision must be positive, got {revision}"
            )));
        }
        if revision <= self.compact_revision {
            return Err(Error::Compacted {
                compact_revision: Some(self.compact_revision),
            });
        }
        if revision > self.revision {
            return Err(Error::invalid_argument(format!(
                "compact revision {revision} is in the future (current revision {})",
                self.revision
            )));
        }
        self.compact_to(revision);
        Ok(())
    }

    fn compact_to(&mut self, revision: Revision) {
        self.compact_revision = revision;
        while self
            .history
            .front()
            .is_some_and(|entry| entry.revision < revision)
        {
            self.history.pop_front();
        }
    }

    /// The heap bytes the history keeps alive (shared versions counted in full, so an
    /// upper estimate).
    #[cfg(test)]
    pub(crate) fn history_bytes(&self) -> usize {
        self.history.capacity() * std::mem::size_of::<RevisionEvents>()
            + self
                .history
                .iter()
                .map(|e| {
                    e.changes.capacity() * std::mem::size_of::<Change>()
                        + e.changes.iter().map(Change::bytes).sum::<usize>()
                })
                .sum::<usize>()
    }
}
