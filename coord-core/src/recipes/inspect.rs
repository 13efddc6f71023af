//! A look inside a lock, read/write lock, semaphore or election: who holds it, who waits,
//! in which order, on which lease and with how much of it left (Curator's
//! `getParticipantNodes`, for every primitive).
//!
//! Everything is read from the keys of the name in one range read, in create-revision
//! order, so the holders and the queue are one consistent snapshot (the lease look-ups that
//! follow are separate reads). The rules are the recipes' own:
//! - a lock's or election's holder is its oldest key, everyone after it waits;
//! - a semaphore of N permits: the N oldest keys hold;
//! - a read/write lock (etcd's recipe `RWMutex` layout, `NAME/read/<id>`, `NAME/write/<id>`):
//!   a reader holds when no older writer exists, a writer when it is the oldest key.
//!
//! Only a name's own keys count: its direct children `NAME/<id>` (and for a read/write
//! lock, those of `NAME/read/` and `NAME/write/`). Deeper keys (`NAME/sub/<id>`) belong to
//! other names.
//!
//! No backend records *when* a key was created, only the revision that created it, so a
//! [`Participant`] says since which revision it holds, not since when; a tool that watches
//! the name can measure the time from when it first saw the key (as `coord status --watch`
//! does).

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use super::name::check_name;
use crate::{
    CoordinationBackend, Error, KeyValue, LeaseId, NO_LEASE, RangeRequest, Result, Revision,
    RwMode, SortOrder, SortTarget,
};

/// What kind of primitive a name is used as, which decides who holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrimitiveKind {
    /// A [`crate::Mutex`] (also `etcdctl lock`): the oldest key holds.
    Lock,
    /// A [`crate::RwMutex`]: readers share, a writer is exclusive, FIFO by revision.
    RwLock,
    /// A [`crate::Semaphore`] of this many permits: the oldest `permits` keys hold.
    Semaphore {
        /// The permits every participant of the name uses.
        permits: usize,
    },
    /// An [`crate::Election`] (also `etcdctl elect`): the oldest key leads.
    Election,
}

impl PrimitiveKind {
    /// A short name: `lock`, `rw`, `semaphore` or `election`.
    pub fn as_str(&self) -> &'static str {
        match self {
            PrimitiveKind::Lock => "lock",
            PrimitiveKind::RwLock => "rw",
            PrimitiveKind::Semaphore { .. } => "semaphore",
            PrimitiveKind::Election => "election",
        }
    }
}

impl fmt::Display for PrimitiveKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrimitiveKind::Semaphore { permits } => write!(f, "semaphore of {permits} permits"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// The lease behind a participant's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// The key has no lease: it stays until someone deletes it (not a coord or etcdctl
    /// key; a holder that never ends by itself).
    NoLease,
    /// The lease is alive.
    Live {
        /// The TTL it was granted with.
        granted: Duration,
        /// Time left before it expires unless kept alive.
        remaining: Duration,
    },
    /// The lease has expired or was revoked; the backend is about to delete its keys.
    Gone,
    /// Not looked up ([`NameStatus::from_keys`]).
    Unknown,
}

/// One key of a name: a holder or a waiter.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Participant {
    /// The key, its value (an election's proposal), create revision and lease id.
    pub kv: KeyValue,
    /// For a read/write lock, whether it reads or writes; `None` otherwise.
    pub mode: Option<RwMode>,
    /// The lease the key is attached to, and how much of it is left.
    pub lease: LeaseState,
}

impl Participant {
    /// The key as text (invalid UTF-8 replaced).
    pub fn key(&self) -> String {
        self.kv.key_str().into_owned()
    }

    /// The fencing token of this holder or waiter: the key's create revision, the same
    /// number its guard's `fencing_token()` gives. A holder holds since this revision.
    pub fn fencing_token(&self) -> Revision {
        self.kv.create_revision
    }

    /// The lease id, or `None` for a key without a lease.
    pub fn lease_id(&self) -> Option<LeaseId> {
        (self.kv.lease != NO_LEASE).then_some(self.kv.lease)
    }

    /// The value: an election candidate's proposal; empty for locks.
    pub fn value(&self) -> &[u8] {
        &self.kv.value
    }
}

/// Who holds a name and who waits for it, as of one store revision.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NameStatus {
    /// The name looked at.
    pub name: String,
    /// The kind the keys were read as (given, or guessed: see [`inspect`]).
    pub kind: PrimitiveKind,
    /// The store revision the keys were read at.
    pub revision: Revision,
    /// The holders in create-revision order: one for a lock or election (its leader), up
    /// to `permits` for a semaphore, readers (or one writer) for a read/write lock.
    pub holders: Vec<Participant>,
    /// The waiters in the order they will be served (create-revision order). For an
    /// election, the candidates after the leader.
    pub waiters: Vec<Participant>,
}

impl NameStatus {
    /// Whether nobody holds the name (and so nobody waits).
    pub fn is_free(&self) -> bool {
        self.holders.is_empty()
    }

    /// An election's leader (the first holder; for other kinds the oldest holder).
    pub fn leader(&self) -> Option<&Participant> {
        self.holders.first()
    }

    /// Every participant, holders first, each in order.
    pub fn participants(&self) -> impl Iterator<Item = &Participant> {
        self.holders.iter().chain(&self.waiters)
    }

    /// The status of `name` from keys already read (any order, any keys: only the name's
    /// own are used), without looking the leases up ([`LeaseState::Unknown`], or
    /// [`LeaseState::NoLease`]). `kind` as in [`inspect`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a name that is empty or ends with `/`, or a
    /// semaphore of zero permits.
    pub fn from_keys(
        name: &str,
        kind: Option<PrimitiveKind>,
        revision: Revision,
        kvs: &[KeyValue],
    ) -> Result<NameStatus> {
        check_name("the", name)?;
        if let Some(PrimitiveKind::Semaphore { permits: 0 }) = kind {
            return Err(Error::invalid_argument(format!(
                "semaphore {name:?} needs at least one permit"
            )));
        }
        let mut own = Own::default();
        for kv in kvs {
            own.add(name, kv);
        }
        own.sort();
        let kind = kind.unwrap_or_else(|| own.guess());
        let entry = |kv: &KeyValue, mode| Participant {
            kv: kv.clone(),
            mode,
            lease: if kv.lease == NO_LEASE {
                LeaseState::NoLease
            } else {
                LeaseState::Unknown
            },
        };
        let (holders, waiters) = match kind {
            PrimitiveKind::Lock | PrimitiveKind::Election => {
                split(&own.direct, 1, |kv| entry(kv, None))
            }
            PrimitiveKind::Semaphore { permits } => {
                split(&own.direct, permits, |kv| entry(kv, None))
            }
            PrimitiveKind::RwLock => {
                let (mut holders, mut waiters) = (Vec::new(), Vec::new());
                let mut older_writer = false;
                for (i, (kv, mode)) in own.rw.iter().enumerate() {
                    let holds = match mode {
                        RwMode::Read => !older_writer,
                        RwMode::Write => i == 0,
                    };
                    older_writer |= *mode == RwMode::Write;
                    let p = entry(kv, Some(*mode));
                    if holds { &mut holders } else { &mut waiters }.push(p);
                }
                (holders, waiters)
            }
        };
        Ok(NameStatus {
            name: name.to_owned(),
            kind,
            revision,
            holders,
            waiters,
        })
    }
}

/// The first `n` hold, the rest wait.
fn split(
    kvs: &[KeyValue],
    n: usize,
    entry: impl Fn(&KeyValue) -> Participant,
) -> (Vec<Participant>, Vec<Participant>) {
    let n = n.min(kvs.len());
    (
        kvs[..n].iter().map(&entry).collect(),
        kvs[n..].iter().map(&entry).collect(),
    )
}

/// A name's own keys, sorted by create revision.
#[derive(Default)]
struct Own {
    /// `NAME/<id>`: a lock's, semaphore's or election's.
    direct: Vec<KeyValue>,
    /// `NAME/read/<id>` and `NAME/write/<id>`: a read/write lock's.
    rw: Vec<(KeyValue, RwMode)>,
}

impl Own {
    fn add(&mut self, name: &str, kv: &KeyValue) {
        let Some(rest) = kv
            .key
            .strip_prefix(name.as_bytes())
            .and_then(|r| r.strip_prefix(b"/"))
        else {
            return;
        };
        if is_segment(rest) {
            self.direct.push(kv.clone());
        } else if rest.strip_prefix(b"read/").is_some_and(is_segment) {
            self.rw.push((kv.clone(), RwMode::Read));
        } else if rest.strip_prefix(b"write/").is_some_and(is_segment) {
            self.rw.push((kv.clone(), RwMode::Write));
        }
    }

    fn sort(&mut self) {
        self.direct.sort_by_key(|kv| kv.create_revision);
        self.rw.sort_by_key(|(kv, _)| kv.create_revision);
    }

    /// A read/write lock when only its keys are there; an election when a direct key has a
    /// value (a proposal: lock keys are empty); else a lock. A semaphore cannot be told
    /// from a lock without its number of permits.
    fn guess(&self) -> PrimitiveKind {
        if self.direct.is_empty() && !self.rw.is_empty() {
            PrimitiveKind::RwLock
        } else if self.direct.iter().any(|kv| !kv.value.is_empty()) {
            PrimitiveKind::Election
        } else {
            PrimitiveKind::Lock
        }
    }
}

/// One key segment: not empty, no `/`.
fn is_segment(s: &[u8]) -> bool {
    !s.is_empty() && !s.contains(&b'/')
}

/// Who holds `name` and who waits for it, with each key's lease and the time left on it.
///
/// `kind` says how to read the keys; `None` guesses it from them: a read/write lock when
/// its `read/` and `write/` keys are the only ones, an election when a key has a value (a
/// proposal), else a lock (a free name is a free lock). A semaphore must be named with its
/// permits: its keys look like a lock's.
///
/// One range read gives the keys, then each distinct lease is looked up
/// ([`CoordinationBackend::lease_time_to_live`]); a lease that ended between the two reads
/// shows as [`LeaseState::Gone`].
///
/// # Errors
/// [`Error::InvalidArgument`] for a name that is empty or ends with `/`, or a semaphore of
/// zero permits; any backend error of the reads.
///
/// # Cancel safety
/// Cancel safe: read only.
pub async fn inspect(
    backend: &dyn CoordinationBackend,
    name: &str,
    kind: Option<PrimitiveKind>,
) -> Result<NameStatus> {
    check_name("the", name)?;
    let read = backend
        .range(
            RangeRequest::prefix(format!("{name}/"))
                .sort(SortTarget::CreateRevision, SortOrder::Ascend),
        )
        .await?;
    let mut status = NameStatus::from_keys(name, kind, read.revision, &read.kvs)?;
    let leases: Vec<LeaseId> = {
        let mut ids: Vec<LeaseId> = status.participants().filter_map(|p| p.lease_id()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    let looked_up = futures::future::join_all(leases.iter().map(|&id| lease_state(backend, id)));
    let states: HashMap<LeaseId, LeaseState> = leases
        .into_iter()
        .zip(looked_up.await)
        .map(|(id, s)| s.map(|s| (id, s)))
        .collect::<Result<_>>()?;
    for p in status.holders.iter_mut().chain(status.waiters.iter_mut()) {
        if let Some(state) = p.lease_id().and_then(|id| states.get(&id)) {
            p.lease = *state;
        }
    }
    Ok(status)
}

async fn lease_state(backend: &dyn CoordinationBackend, id: LeaseId) -> Result<LeaseState> {
    match backend.lease_time_to_live(id).await {
        Ok(s) => Ok(LeaseState::Live {
            granted: s.granted_ttl,
            remaining: s.remaining,
        }),
        Err(Error::LeaseNotFound { .. }) => Ok(LeaseState::Gone),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, rev: Revision, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
            create_revision: rev,
            mod_revision: rev,
            version: 1,
            lease: rev,
        }
    }

    fn keys(ps: &[Participant]) -> Vec<String> {
        ps.iter().map(Participant::key).collect()
    }

    #[test]
    fn names_that_are_empty_or_end_with_a_slash_are_refused() {
        for name in ["", "a/"] {
            let e = NameStatus::from_keys(name, None, 1, &[]).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument { .. }), "{name:?}: {e}");
        }
    }

    #[test]
    fn only_direct_children_count_and_the_oldest_holds() {
        let kvs = [
            kv("a/3", 3, ""),
            kv("a/b/1", 1, ""),
            kv("a/2", 2, ""),
            kv("ab/0", 0, ""),
        ];
        let s = NameStatus::from_keys("a", None, 9, &kvs).unwrap();
        assert_eq!(s.kind, PrimitiveKind::Lock);
        assert_eq!(keys(&s.holders), ["a/2"]);
        assert_eq!(keys(&s.waiters), ["a/3"]);
        assert_eq!(s.holders[0].lease, LeaseState::Unknown);
    }

    #[test]
    fn a_key_with_a_value_makes_an_election() {
        let s = NameStatus::from_keys("e", None, 9, &[kv("e/1", 1, "node-a"), kv("e/2", 2, "b")])
            .unwrap();
        assert_eq!(s.kind, PrimitiveKind::Election);
        assert_eq!(s.leader().unwrap().value(), b"node-a");
    }

    #[test]
    fn semaphore_holders_are_the_oldest_permits() {
        let kvs: Vec<_> = (1..=4).map(|i| kv(&format!("s/{i}"), i, "")).collect();
        let s = NameStatus::from_keys("s", Some(PrimitiveKind::Semaphore { permits: 3 }), 9, &kvs)
            .unwrap();
        assert_eq!(keys(&s.holders), ["s/1", "s/2", "s/3"]);
        assert_eq!(keys(&s.waiters), ["s/4"]);
        assert!(
            NameStatus::from_keys("s", Some(PrimitiveKind::Semaphore { permits: 0 }), 9, &kvs)
                .is_err()
        );
    }

    #[test]
    fn rw_readers_hold_until_an_older_writer_and_a_writer_only_when_oldest() {
        let kvs = [
            kv("rw/read/1", 1, ""),
            kv("rw/read/2", 2, ""),
            kv("rw/write/3", 3, ""),
            kv("rw/read/4", 4, ""),
        ];
        let s = NameStatus::from_keys("rw", None, 9, &kvs).unwrap();
        assert_eq!(s.kind, PrimitiveKind::RwLock);
        assert_eq!(keys(&s.holders), ["rw/read/1", "rw/read/2"]);
        assert_eq!(keys(&s.waiters), ["rw/write/3", "rw/read/4"]);
        let s = NameStatus::from_keys("rw", None, 9, &kvs[2..]).unwrap();
        assert_eq!(keys(&s.holders), ["rw/write/3"]);
        assert_eq!(s.holders[0].mode, Some(RwMode::Write));
        assert_eq!(keys(&s.waiters), ["rw/read/4"]);
    }

    #[test]
    fn a_key_without_a_lease_says_so() {
        let mut k = kv("n/1", 1, "");
        k.lease = NO_LEASE;
        let s = NameStatus::from_keys("n", None, 9, &[k]).unwrap();
        assert_eq!(s.holders[0].lease, LeaseState::NoLease);
        assert_eq!(s.holders[0].lease_id(), None);
    }
}
