//! The lease table, and the reaper task that expires leases on tokio time.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Weak};
use std::time::Duration;

use coord_core::{Error, LeaseId, Result};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::Shared;
use crate::store::Entry;

/// Lease TTLs are rounded up to a multiple of this by default: whole seconds, as etcd.
pub const LEASE_GRANULARITY: Duration = Duration::from_secs(1);

/// The shortest TTL granted by default; shorter (non-zero) requests are raised to it. etcd's
/// with default server settings: `ceil(1.5 × election timeout of 1 s)`.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(2);

/// The longest TTL granted (etcd's `MaxLeaseTTL`, 9,000,000,000 seconds).
pub const MAX_LEASE_TTL: Duration = coord_core::MAX_LEASE_TTL;

/// How a store rounds the TTLs it grants. The default is etcd's ([`LeaseRules::ETCD`]),
/// so that a test that passes on `memory://` sees the TTLs it would get from etcd; a test
/// that wants short leases on real time can opt out with [`LeaseRules::fine`]
/// (`memory://?min_ttl=1ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRules {
    /// TTLs are rounded up to a multiple of this.
    pub granularity: Duration,
    /// Shorter (non-zero) requests are raised to this.
    pub min_ttl: Duration,
}

impl LeaseRules {
    /// etcd's rules with default server settings: whole seconds, at least 2 s.
    pub const ETCD: LeaseRules = LeaseRules {
        granularity: LEASE_GRANULARITY,
        min_ttl: MIN_LEASE_TTL,
    };

    /// Millisecond TTLs of at least `min_ttl` (rounded up to a millisecond, at least one):
    /// what `memory://?min_ttl=...` asks for. Not what a server grants.
    pub fn fine(min_ttl: Duration) -> LeaseRules {
        let step = Duration::from_millis(1);
        LeaseRules {
            granularity: step,
            min_ttl: round_up(min_ttl, step).max(step),
        }
    }

    /// The TTL granted for a request of `ttl`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero TTL or one above [`MAX_LEASE_TTL`], naming the
    /// TTL asked and the maximum.
    pub fn granted_ttl(&self, ttl: Duration) -> Result<Duration> {
        if ttl.is_zero() {
            return Err(Error::invalid_argument("lease TTL must not be zero"));
        }
        coord_core::check_lease_ttl(ttl, MAX_LEASE_TTL)?;
        Ok(round_up(ttl, self.granularity).max(self.min_ttl))
    }
}

impl Default for LeaseRules {
    fn default() -> Self {
        LeaseRules::ETCD
    }
}

fn round_up(ttl: Duration, step: Duration) -> Duration {
    let step = step.as_nanos().max(1);
    let rounded = ttl.as_nanos().div_ceil(step) * step;
    Duration::from_nanos(u64::try_from(rounded).unwrap_or(u64::MAX))
}

/// One live lease.
#[derive(Debug)]
pub(crate) struct Lease {
    /// The granted TTL.
    pub(crate) ttl: Duration,
    /// When it expires unless kept alive.
    pub(crate) deadline: Instant,
    /// The keys attached to it, as their current versions: sharing the key table's
    /// allocation, so that attaching a key copies nothing.
    pub(crate) keys: BTreeSet<Entry>,
}

/// Hashes a lease id to itself: ids are already SplitMix64 outputs (see [`mix`]), so
/// hashing them again (SipHash, on every put and delete of a key on a lease) is wasted work.
#[derive(Debug, Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_i64(&mut self, n: i64) {
        self.0 = n as u64;
    }
}

/// All live leases, indexed by id and by deadline.
#[derive(Debug, Default)]
pub(crate) struct Leases {
    map: HashMap<LeaseId, Lease, BuildHasherDefault<IdHasher>>,
    deadlines: BTreeSet<(Instant, LeaseId)>,
    seq: u64,
}

/// SplitMix64's finalizer: a bijection on `u64` that makes consecutive counters look random.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Leases {
    /// Creates a lease and returns its id.
    pub(crate) fn grant(&mut self, ttl: Duration, now: Instant) -> LeaseId {
        let id = loop {
            self.seq += 1;
            // Positive int63, as etcd's ids are; never 0 (NO_LEASE) and never reused while live.
            let id = (mix(self.seq.wrapping_add(0x9e37_79b9_7f4a_7c15)) >> 1) as LeaseId;
            if id != 0 && !self.map.contains_key(&id) {
                break id;
            }
        };
        let deadline = now + ttl;
        self.map.insert(
            id,
            Lease {
                ttl,
                deadline,
                keys: BTreeSet::new(),
            },
        );
        self.deadlines.insert((deadline, id));
        id
    }

    pub(crate) fn get(&self, id: LeaseId) -> Option<&Lease> {
        self.map.get(&id)
    }

    pub(crate) fn contains(&self, id: LeaseId) -> bool {
        self.map.contains_key(&id)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Resets the lease's deadline to `now + ttl` and returns the TTL.
    pub(crate) fn keep_alive(&mut self, id: LeaseId, now: Instant) -> Result<Duration> {
        let lease = self
            .map
            .get_mut(&id)
            .ok_or(Error::LeaseNotFound { lease: Some(id) })?;
        self.deadlines.remove(&(lease.deadline, id));
        lease.deadline = now + lease.ttl;
        self.deadlines.insert((lease.deadline, id));
        Ok(lease.ttl)
    }

    /// Removes a lease and returns it (with its keys).
    pub(crate) fn remove(&mut self, id: LeaseId) -> Option<Lease> {
        let lease = self.map.remove(&id)?;
        self.deadlines.remove(&(lease.deadline, id));
        Some(lease)
    }

    /// The lease with the earliest deadline, if that deadline is at or before `now`.
    pub(crate) fn first_due(&self, now: Instant) -> Option<LeaseId> {
        self.deadlines
            .first()
            .filter(|(deadline, _)| *deadline <= now)
            .map(|(_, id)| *id)
    }

    /// The earliest deadline of any lease.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(deadline, _)| *deadline)
    }

    /// Records that `entry` (a key's current version) is attached to lease `id` (which
    /// must exist), replacing the version recorded before, so no old value is kept alive.
    pub(crate) fn attach(&mut self, id: LeaseId, entry: &Entry) {
        if let Some(lease) = self.map.get_mut(&id) {
            lease.keys.replace(entry.clone());
        }
    }

    /// Records that `key` is no longer attached to lease `id`.
    pub(crate) fn detach(&mut self, id: LeaseId, key: &[u8]) {
        if let Some(lease) = self.map.get_mut(&id) {
            lease.keys.remove(key);
        }
    }
}

/// The background task that expires leases when their deadline passes.
///
/// It holds only a [`Weak`] reference to the store and ends once the store is dropped
/// (the store's `Drop` wakes it).
pub(crate) async fn reaper(store: Weak<Shared>, wake: Arc<Notify>) {
    loop {
        let next = {
            let Some(shared) = store.upgrade() else {
                return;
            };
            let mut state = shared.lock();
            state.expire_due(Instant::now());
            state.leases.next_deadline()
        };
        match next {
            Some(deadline) => {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_to_whole_seconds_of_at_least_two_by_default() {
        let etcd = LeaseRules::default();
        assert_eq!(
            etcd.granted_ttl(Duration::from_micros(1)).unwrap(),
            Duration::from_secs(2)
        );
        assert_eq!(
            etcd.granted_ttl(Duration::from_millis(2500)).unwrap(),
            Duration::from_secs(3)
        );
        assert_eq!(
            etcd.granted_ttl(Duration::from_secs(5)).unwrap(),
            Duration::from_secs(5)
        );
        assert!(etcd.granted_ttl(Duration::ZERO).is_err());
        let e = etcd
            .granted_ttl(MAX_LEASE_TTL + Duration::from_secs(1))
            .unwrap_err();
        assert!(e.to_string().contains("9000000000"), "{e}");
        assert!(etcd.granted_ttl(Duration::MAX).is_err());
        assert_eq!(etcd.granted_ttl(MAX_LEASE_TTL).unwrap(), MAX_LEASE_TTL);
    }

    #[test]
    fn fine_rules_round_up_to_milliseconds() {
        let fine = LeaseRules::fine(Duration::from_millis(1));
        assert_eq!(
            fine.granted_ttl(Duration::from_micros(1)).unwrap(),
            Duration::from_millis(1)
        );
        assert_eq!(
            fine.granted_ttl(Duration::from_micros(1500)).unwrap(),
            Duration::from_millis(2)
        );
        assert_eq!(
            LeaseRules::fine(Duration::ZERO).min_ttl,
            Duration::from_millis(1)
        );
    }

    #[test]
    fn ids_are_positive_and_distinct() {
        let mut leases = Leases::default();
        let now = Instant::now();
        let ids: BTreeSet<LeaseId> = (0..1000)
            .map(|_| leases.grant(Duration::from_secs(1), now))
            .collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| *id > 0));
    }
}
