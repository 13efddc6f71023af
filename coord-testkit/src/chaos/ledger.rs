//! The record of a run: every acquisition, release, loss and fenced write, fed to the
//! testkit's [`History`] checker, plus the checks only the runner can make (a fenced
//! write the store accepted from a stale holder, hung or untyped failures).
//!
//! The recorded hold must lie inside the real one (see [`crate::history`]): a hold starts
//! when its acquisition returns and ends when the client lets go (recorded before the
//! release is sent), when `lost()` fires, or when the runner ends its lease by force
//! (recorded before the lease is ended: its holder is not told until its next keep-alive).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use coord_core::{LeaseId, Revision};
use tokio::time::Instant;

use crate::History;

/// How many of the latest events a violation report shows.
const LOG: usize = 60;

/// What a hold is a hold of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum HoldKind {
    /// A mutex (by `lock` or `try_lock`).
    Lock,
    /// A read lock of a read/write lock.
    Read,
    /// A write lock of a read/write lock.
    Write,
    /// A semaphore permit.
    Permit,
    /// Leadership of an election.
    Leader,
}

impl HoldKind {
    pub(crate) fn label(self) -> &'static str {
        match self {
            HoldKind::Lock => "lock",
            HoldKind::Read => "read",
            HoldKind::Write => "write",
            HoldKind::Permit => "permit",
            HoldKind::Leader => "leader",
        }
    }

    /// Whether one holder excludes every other (so fenced writes go in token order).
    pub(crate) fn exclusive(self) -> bool {
        matches!(self, HoldKind::Lock | HoldKind::Write | HoldKind::Leader)
    }
}

/// An open hold, by the id [`Ledger::acquired`] gave it.
#[derive(Debug)]
struct Open {
    client: usize,
    lease: LeaseId,
    name: String,
    token: Revision,
    kind: HoldKind,
    /// False for an acquisition that returned on a lease the runner had already ended:
    /// as far as the store is concerned it never held.
    recorded: bool,
}

/// Counters of holds.
#[derive(Debug, Default, Clone)]
pub(crate) struct HoldCounts {
    pub(crate) acquired: BTreeMap<&'static str, u64>,
    pub(crate) released: u64,
    pub(crate) lost: u64,
    pub(crate) ended_by_force: u64,
    pub(crate) fenced_accepted: u64,
    pub(crate) fenced_refused: u64,
    pub(crate) stale_refused: u64,
}

#[derive(Debug, Default)]
struct Inner {
    open: HashMap<u64, Open>,
    next: u64,
    /// Leases the runner ended by force.
    expired: HashSet<LeaseId>,
    /// Per exclusive name, the highest token each client acquired.
    acquired_by: HashMap<String, HashMap<usize, Revision>>,
    /// Per fence, the highest token of a fenced write known to be accepted.
    written: HashMap<String, Revision>,
    violations: Vec<String>,
    log: VecDeque<String>,
    counts: HoldCounts,
}

/// What a fenced write must be checked against: taken just before it is sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FenceSnapshot {
    /// The highest token another client had acquired on the name.
    others: Option<Revision>,
    /// The highest token of an accepted write to the fence.
    written: Option<Revision>,
}

/// The record of one run. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Ledger {
    history: History,
    start: Instant,
    inner: Mutex<Inner>,
}

impl Ledger {
    pub(crate) fn new() -> Ledger {
        Ledger {
            history: History::new(),
            start: Instant::now(),
            inner: Mutex::default(),
        }
    }

    pub(crate) fn history(&self) -> &History {
        &self.history
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn note(&self, inner: &mut Inner, line: String) {
        if inner.log.len() == LOG {
            inner.log.pop_front();
        }
        let at = self.start.elapsed().as_secs_f64();
        inner.log.push_back(format!("+{at:.3}s {line}"));
    }

    /// Notes something that happened (a fault, an error), for the report's last events.
    pub(crate) fn event(&self, line: String) {
        let mut inner = self.lock();
        self.note(&mut inner, line);
    }

    /// Records a violation of the run's promises.
    pub(crate) fn violation(&self, what: String) {
        let mut inner = self.lock();
        self.note(&mut inner, format!("VIOLATION: {what}"));
        inner.violations.push(what);
    }

    pub(crate) fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    pub(crate) fn last_events(&self) -> Vec<String> {
        self.lock().log.iter().cloned().collect()
    }

    pub(crate) fn counts(&self) -> HoldCounts {
        self.lock().counts.clone()
    }

    fn client(client: usize) -> String {
        format!("client-{client}")
    }

    /// `client` acquired `name` with `token` on `lease`; returns the hold's id.
    pub(crate) fn acquired(
        &self,
        client: usize,
        lease: LeaseId,
        kind: HoldKind,
        name: &str,
        token: Revision,
    ) -> u64 {
        let mut inner = self.lock();
        let recorded = !inner.expired.contains(&lease);
        self.note(
            &mut inner,
            format!(
                "client-{client} acquired {} {name} token {token} lease {lease:x}{}",
                kind.label(),
                if recorded {
                    ""
                } else {
                    " (lease already ended by force)"
                }
            ),
        );
        *inner.counts.acquired.entry(kind.label()).or_default() += 1;
        if recorded {
            let who = Self::client(client);
            match kind {
                HoldKind::Read => self.history.read_acquired(who, name, token as u64),
                HoldKind::Leader => self.history.elected(who, name, token as u64),
                _ => self.history.acquired(who, name, token as u64),
            }
            if kind.exclusive() {
                let best = inner
                    .acquired_by
                    .entry(name.to_owned())
                    .or_default()
                    .entry(client)
                    .or_default();
                *best = (*best).max(token);
            }
        }
        let id = inner.next;
        inner.next += 1;
        inner.open.insert(
            id,
            Open {
                client,
                lease,
                name: name.to_owned(),
                token,
                kind,
                recorded,
            },
        );
        id
    }

    /// The hold ended: `lost` when its `lost()` fired, else released by choice (record
    /// before releasing). A hold already ended is left alone.
    pub(crate) fn ended(&self, id: u64, lost: bool) {
        let mut inner = self.lock();
        let Some(open) = inner.open.remove(&id) else {
            return;
        };
        if lost {
            inner.counts.lost += 1;
        } else {
            inner.counts.released += 1;
        }
        self.note(
            &mut inner,
            format!(
                "client-{} {} {} {} token {}",
                open.client,
                if lost { "lost" } else { "releases" },
                open.kind.label(),
                open.name,
                open.token
            ),
        );
        self.close(&open, lost);
    }

    fn close(&self, open: &Open, lost: bool) {
        if !open.recorded {
            return;
        }
        let (who, name, token) = (
            Self::client(open.client),
            open.name.as_str(),
            open.token as u64,
        );
        match (open.kind, lost) {
            (HoldKind::Read, false) => self.history.read_released(who, name, token),
            (HoldKind::Read, true) => self.history.read_lost(who, name, token),
            (HoldKind::Leader, false) => self.history.resigned(who, name, token),
            (HoldKind::Leader, true) => self.history.deposed(who, name, token),
            (_, false) => self.history.released(who, name, token),
            (_, true) => self.history.lost(who, name, token),
        }
    }

    /// The runner is about to end `lease` by force: every hold on it ends now, and any
    /// acquisition on it that returns later never held.
    pub(crate) fn expire(&self, lease: LeaseId) {
        let mut inner = self.lock();
        inner.expired.insert(lease);
        let ids: Vec<u64> = inner
            .open
            .iter()
            .filter(|(_, o)| o.lease == lease)
            .map(|(id, _)| *id)
            .collect();
        self.note(
            &mut inner,
            format!("lease {lease:x} ended by force ({} holds)", ids.len()),
        );
        for id in ids {
            if let Some(open) = inner.open.remove(&id) {
                inner.counts.ended_by_force += 1;
                self.close(&open, true);
            }
        }
    }

    /// What a fenced write of hold `id` to `fence` is checked against; take it just before
    /// sending the write.
    pub(crate) fn fence_snapshot(&self, client: usize, name: &str, fence: &str) -> FenceSnapshot {
        let inner = self.lock();
        FenceSnapshot {
            others: inner.acquired_by.get(name).and_then(|by| {
                by.iter()
                    .filter(|(c, _)| **c != client)
                    .map(|(_, t)| *t)
                    .max()
            }),
            written: inner.written.get(fence).copied(),
        }
    }

    /// A fenced write of hold `id` (client `client`, `token` on `name`) to `fence` was
    /// accepted by the store, which held `previous` there before. Checks that it was not
    /// stale: no other client had acquired a higher token before it was sent, and the
    /// fence held no lower token than a write already known accepted, nor a higher one
    /// than this write's.
    #[allow(
        clippy::too_many_arguments,
        reason = "one call site; each is a fact checked"
    )]
    pub(crate) fn fenced_accepted(
        &self,
        id: u64,
        client: usize,
        name: &str,
        fence: &str,
        token: Revision,
        previous: Option<Revision>,
        before: FenceSnapshot,
    ) {
        let mut inner = self.lock();
        inner.counts.fenced_accepted += 1;
        self.note(
            &mut inner,
            format!("client-{client} fenced write to {fence} with token {token} accepted (previous {previous:?})"),
        );
        let mut stale = Vec::new();
        if let Some(other) = before.others
            && other > token
        {
            stale.push(format!(
                "another client had acquired {name} with token {other} before it was sent"
            ));
        }
        if let Some(prev) = previous {
            if prev > token {
                stale.push(format!("the fence already held the higher token {prev}"));
            }
            if let Some(w) = before.written
                && prev < w
            {
                stale.push(format!(
                    "the fence held token {prev}, below token {w} accepted earlier: a stale write landed in between"
                ));
            }
        }
        for why in stale {
            let what = format!(
                "stale fenced write accepted: client-{client} wrote {fence} with token {token} of {name}, but {why}"
            );
            self.note(&mut inner, format!("VIOLATION: {what}"));
            inner.violations.push(what);
        }
        let w = inner.written.entry(fence.to_owned()).or_default();
        *w = (*w).max(token);
        // The history checks the write lies inside the hold; only a hold the runner still
        // counts open is fed to it (one ended by force or by `lost()` meanwhile may have
        // been written legitimately just before, which the checks above judge).
        if let Some(open) = inner.open.get(&id)
            && open.recorded
            && !inner.expired.contains(&open.lease)
            && open.kind != HoldKind::Leader
        {
            self.history.wrote(Self::client(client), name, token as u64);
        }
    }

    /// A fenced write was refused (its hold was gone); `stale` when the writer knew it
    /// could be (a paused client writing after its pause).
    pub(crate) fn fenced_refused(&self, client: usize, fence: &str, token: Revision, stale: bool) {
        let mut inner = self.lock();
        inner.counts.fenced_refused += 1;
        if stale {
            inner.counts.stale_refused += 1;
        }
        self.note(
            &mut inner,
            format!("client-{client} fenced write to {fence} with token {token} refused"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_accepted_after_another_client_acquired_a_higher_token_is_a_violation() {
        let l = Ledger::new();
        let old = l.acquired(0, 0xa, HoldKind::Lock, "L", 5);
        l.ended(old, true);
        l.acquired(1, 0xb, HoldKind::Lock, "L", 7);
        let before = l.fence_snapshot(0, "L", "L.fence");
        l.fenced_accepted(old, 0, "L", "L.fence", 5, None, before);
        let v = l.violations();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].contains("stale fenced write accepted") && v[0].contains("token 7"),
            "{v:?}"
        );
    }

    #[test]
    fn a_fence_that_went_back_to_a_lower_token_is_a_violation() {
        let l = Ledger::new();
        let a = l.acquired(0, 0xa, HoldKind::Write, "RW", 9);
        let before = l.fence_snapshot(0, "RW", "RW.fence");
        l.fenced_accepted(a, 0, "RW", "RW.fence", 9, Some(3), before);
        assert!(l.violations().is_empty());
        l.ended(a, false);
        // The next writer finds 4 there: a write of token 4 landed after 9's.
        let b = l.acquired(1, 0xb, HoldKind::Write, "RW", 12);
        let before = l.fence_snapshot(1, "RW", "RW.fence");
        l.fenced_accepted(b, 1, "RW", "RW.fence", 12, Some(4), before);
        let v = l.violations();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("below token 9"), "{v:?}");
        l.history().check().unwrap();
    }

    #[test]
    fn a_lease_ended_by_force_ends_its_holds_and_any_late_acquisition_on_it() {
        let l = Ledger::new();
        l.acquired(0, 0xa, HoldKind::Lock, "L", 5);
        l.expire(0xa);
        // The next holder may come before the first one is told.
        let b = l.acquired(1, 0xb, HoldKind::Lock, "L", 6);
        l.ended(b, false);
        // An acquisition returning on the ended lease never held, as far as the store knows.
        let late = l.acquired(0, 0xa, HoldKind::Lock, "L", 6);
        l.ended(late, true);
        l.history().check().unwrap();
        let c = l.counts();
        assert_eq!((c.ended_by_force, c.released, c.lost), (1, 1, 1));
        assert!(l.violations().is_empty());
    }
}
