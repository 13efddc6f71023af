//! The lease table, and the reaper task that expires leases on tokio time.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Weak};
use std::time::Duration;

use coord_core::{Error, LeaseId, Result};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::Shared;

/// Lease TTLs are rounded up to a multiple of this.
pub const LEASE_GRANULARITY: Duration = Duration::from_millis(1);

/// The shortest TTL granted; shorter (non-zero) requests are raised to it.
pub const MIN_LEASE_TTL: Duration = Duration::from_millis(1);

/// The longest TTL granted (etcd's `MaxLeaseTTL`, 9,000,000,000 seconds).
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(9_000_000_000);

/// One live lease.
#[derive(Debug)]
pub(crate) struct Lease {
    /// The granted TTL.
    pub(crate) ttl: Duration,
    /// When it expires unless kept alive.
    pub(crate) deadline: Instant,
    /// The keys attached to it.
    pub(crate) keys: BTreeSet<Vec<u8>>,
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

/// Rounds a requested TTL to what the backend grants.
pub(crate) fn granted_ttl(ttl: Duration) -> Result<Duration> {
    if ttl.is_zero() {
        return Err(Error::invalid_argument("lease TTL must not be zero"));
    }
    if ttl > MAX_LEASE_TTL {
        return Err(Error::invalid_argument(format!(
            "lease TTL {ttl:?} is above the maximum of {MAX_LEASE_TTL:?}"
        )));
    }
    let step = LEASE_GRANULARITY.as_nanos();
    let rounded = ttl.as_nanos().div_ceil(step) * step;
    let rounded = Duration::from_nanos(u64::try_from(rounded).unwrap_or(u64::MAX));
    Ok(rounded.max(MIN_LEASE_TTL))
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

    /// Records that `key` is attached to lease `id` (which must exist).
    pub(crate) fn attach(&mut self, id: LeaseId, key: &[u8]) {
        if let Some(lease) = self.map.get_mut(&id) {
            lease.keys.insert(key.to_vec());
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
    fn ttl_rounds_up_to_milliseconds() {
        assert_eq!(
            granted_ttl(Duration::from_micros(1)).unwrap(),
            Duration::from_millis(1)
        );
        assert_eq!(
            granted_ttl(Duration::from_micros(1500)).unwrap(),
            Duration::from_millis(2)
        );
        assert_eq!(
            granted_ttl(Duration::from_secs(5)).unwrap(),
            Duration::from_secs(5)
        );
        assert!(granted_ttl(Duration::ZERO).is_err());
        assert!(granted_ttl(MAX_LEASE_TTL + Duration::from_secs(1)).is_err());
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
