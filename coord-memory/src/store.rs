//! The revisioned key space: keys, revisions, event history, txn and range.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::time::Duration;

use coord_core::{
    Delete, Error, Event, EventKind, KeyRange, KeyValue, LeaseGrant, LeaseId, LeaseStatus,
    NO_LEASE, Put, RangeRequest, RangeResponse, Result, Revision, SortOrder, SortTarget, TxnOp,
    TxnOpResponse, TxnRequest, TxnResponse,
};
use tokio::time::Instant;

use crate::lease::Leases;
use crate::watch::Watchers;

/// The events of one revision, with `prev_kv` always filled in when the key existed.
#[derive(Debug)]
pub(crate) struct RevisionEvents {
    pub(crate) revision: Revision,
    pub(crate) events: Vec<Event>,
}

/// Everything behind the store's lock.
#[derive(Debug)]
pub(crate) struct State {
    /// The current revision; 1 for an empty store, as in etcd.
    pub(crate) revision: Revision,
    /// The oldest revision a watch can start from; 0 until the first compaction.
    pub(crate) compact_revision: Revision,
    /// When set, history is compacted automatically to keep at most this many revisions.
    pub(crate) retention: Option<u64>,
    pub(crate) keys: BTreeMap<Vec<u8>, KeyValue>,
    /// Events of every revision at or above `compact_revision`, oldest first.
    pub(crate) history: VecDeque<RevisionEvents>,
    pub(crate) leases: Leases,
    pub(crate) watchers: Watchers,
}

impl Default for State {
    fn default() -> Self {
        State {
            revision: 1,
            compact_revision: 0,
            retention: None,
            keys: BTreeMap::new(),
            history: VecDeque::new(),
            leases: Leases::default(),
            watchers: Watchers::default(),
        }
    }
}

/// The keys of `range`, in key order.
pub(crate) fn keys_in<'a>(
    keys: &'a BTreeMap<Vec<u8>, KeyValue>,
    range: &'a KeyRange,
) -> Box<dyn Iterator<Item = &'a KeyValue> + 'a> {
    match range {
        KeyRange::Key(k) => Box::new(keys.get(k.as_slice()).into_iter()),
        KeyRange::Prefix(p) => Box::new(
            keys.range::<[u8], _>((Bound::Included(p.as_slice()), Bound::Unbounded))
                .take_while(move |(k, _)| k.starts_with(p))
                .map(|(_, kv)| kv),
        ),
        KeyRange::Range { start, end } => Box::new(
            keys.range::<[u8], _>((
                Bound::Included(start.as_slice()),
                Bound::Excluded(end.as_slice()),
            ))
            .map(|(_, kv)| kv),
        ),
    }
}

/// Answers a range request from `keys`, reporting `revision`.
pub(crate) fn range(
    keys: &BTreeMap<Vec<u8>, KeyValue>,
    request: &RangeRequest,
    revision: Revision,
) -> RangeResponse {
    let mut count: i64 = 0;
    let mut selected: Vec<&KeyValue> = Vec::new();
    let min = request.min_create_revision;
    let max = request.max_create_revision;
    for kv in keys_in(keys, &request.range) {
        count += 1;
        if request.count_only
            || (min > 0 && kv.create_revision < min)
            || (max > 0 && kv.create_revision > max)
        {
            continue;
        }
        selected.push(kv);
    }
    if request.count_only {
        return RangeResponse {
            kvs: Vec::new(),
            more: false,
            count,
            revision,
        };
    }
    // Keys come in ascending key order; stable sorts keep it for ties.
    match request.sort {
        None | Some((SortTarget::Key, SortOrder::Ascend)) => {}
        Some((SortTarget::Key, SortOrder::Descend)) => selected.reverse(),
        Some((SortTarget::CreateRevision, SortOrder::Ascend)) => {
            selected.sort_by_key(|kv| kv.create_revision);
        }
        Some((SortTarget::CreateRevision, SortOrder::Descend)) => {
            selected.sort_by_key(|kv| std::cmp::Reverse(kv.create_revision));
        }
        Some((SortTarget::ModRevision, SortOrder::Ascend)) => {
            selected.sort_by_key(|kv| kv.mod_revision);
        }
        Some((SortTarget::ModRevision, SortOrder::Descend)) => {
            selected.sort_by_key(|kv| std::cmp::Reverse(kv.mod_revision));
        }
    }
    let mut more = false;
    if let Ok(limit) = usize::try_from(request.limit)
        && limit > 0
        && selected.len() > limit
    {
        selected.truncate(limit);
        more = true;
    }
    let kvs = selected
        .into_iter()
        .map(|kv| {
            if request.keys_only {
                KeyValue {
                    value: Vec::new(),
                    ..kv.clone()
                }
            } else {
                kv.clone()
            }
        })
        .collect();
    RangeResponse {
        kvs,
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
        if lease.keys.is_empty() {
            return true;
        }
        let rev = self.revision + 1;
        let mut events = Vec::with_capacity(lease.keys.len());
        for key in lease.keys {
            if let Some(prev) = self.keys.remove(&key) {
                events.push(delete_event(prev, rev));
            }
        }
        self.commit(events);
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
            .all(|c| c.evaluate(self.keys.get(c.key.as_slice())));
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
        let mut events = Vec::new();
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match op {
                TxnOp::Put(put) => self.apply_put(put, rev, &mut events),
                TxnOp::Delete(delete) => self.apply_delete(&delete, rev, &mut events),
                TxnOp::Range(request) => {
                    // As etcd: a read after a write in the same txn reports the new revision.
                    let seen = if events.is_empty() {
                        self.revision
                    } else {
                        rev
                    };
                    TxnOpResponse::Range(range(&self.keys, &request, seen))
                }
            };
            responses.push(response);
        }
        if !events.is_empty() {
            self.commit(events);
        }
        Ok(TxnResponse {
            succeeded,
            revision: self.revision,
            responses,
        })
    }

    fn apply_put(&mut self, put: Put, rev: Revision, events: &mut Vec<Event>) -> TxnOpResponse {
        let prev = self.keys.get(put.key.as_slice()).cloned();
        if let Some(prev) = &prev
            && prev.lease != NO_LEASE
            && prev.lease != put.lease
        {
            self.leases.detach(prev.lease, &put.key);
        }
        if put.lease != NO_LEASE {
            self.leases.attach(put.lease, &put.key);
        }
        let kv = KeyValue {
            create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
            mod_revision: rev,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            lease: put.lease,
            key: put.key,
            value: put.value,
        };
        self.keys.insert(kv.key.clone(), kv.clone());
        events.push(Event {
            kind: EventKind::Put,
            kv,
            prev_kv: prev.clone(),
        });
        TxnOpResponse::Put {
            prev_kv: if put.prev_kv { prev } else { None },
        }
    }

    fn apply_delete(
        &mut self,
        delete: &Delete,
        rev: Revision,
        events: &mut Vec<Event>,
    ) -> TxnOpResponse {
        let doomed: Vec<Vec<u8>> = keys_in(&self.keys, &delete.range)
            .map(|kv| kv.key.clone())
            .collect();
        let mut prev_kvs = Vec::new();
        for key in &doomed {
            let Some(prev) = self.keys.remove(key.as_slice()) else {
                continue;
            };
            if prev.lease != NO_LEASE {
                self.leases.detach(prev.lease, key);
            }
            if delete.prev_kv {
                prev_kvs.push(prev.clone());
            }
            events.push(delete_event(prev, rev));
        }
        TxnOpResponse::Delete {
            deleted: doomed.len() as i64,
            prev_kvs,
        }
    }

    /// Makes `events` (non-empty, all carrying `revision + 1`) the next revision: bumps the
    /// revision, records history and notifies watchers.
    fn commit(&mut self, events: Vec<Event>) {
        debug_assert!(!events.is_empty());
        self.revision += 1;
        let entry = RevisionEvents {
            revision: self.revision,
            events,
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
}

/// etcd's DELETE event: the key with `mod_revision` set to the deleting revision and every
/// other field zero or empty; the deleted key as `prev_kv`.
fn delete_event(prev: KeyValue, revision: Revision) -> Event {
    Event {
        kind: EventKind::Delete,
        kv: KeyValue {
            key: prev.key.clone(),
            mod_revision: revision,
            ..KeyValue::default()
        },
        prev_kv: Some(prev),
    }
}
