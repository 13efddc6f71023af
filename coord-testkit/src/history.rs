//! Record what many clients did with locks and elections, then check the safety
//! properties a coordination recipe promises.
//!
//! A [`History`] is a cloneable, thread-safe log. Each client task records
//!
//! * for locks: [`acquired`](History::acquired), [`released`](History::released),
//!   [`lost`](History::lost) (the recipe told the client it no longer holds the lock) and
//!   [`wrote`](History::wrote) (the client wrote to the protected resource using its
//!   fencing token);
//! * for elections: [`elected`](History::elected), [`resigned`](History::resigned) and
//!   [`deposed`](History::deposed) (leadership lost without resigning);
//! * for read/write locks: writers as locks, readers with
//!   [`read_acquired`](History::read_acquired), [`read_released`](History::read_released)
//!   and [`read_lost`](History::read_lost) on the same name;
//! * for semaphores: declare the name with [`semaphore`](History::semaphore), then record
//!   permits as lock holds of that name.
//!
//! [`History::check`] then verifies, per lock name / election:
//!
//! 1. no two holders overlap: the hold intervals `[acquired, released or lost]` of
//!    different clients (or different tokens) are disjoint;
//! 2. fencing tokens strictly rise across successive acquisitions (the same client
//!    acquiring again with the same token is accepted as re-entrant);
//! 3. a client never writes with a token after it was told that hold was lost
//!    ([`Violation::WriteAfterLoss`]), nor with a token it does not hold at all;
//! 4. at most one leader per election at any instant, with rising terms (tokens);
//! 5. nobody releases or resigns what it does not hold;
//! 6. readers never overlap a writer of the same name; a reader's token is above every
//!    earlier writer's, and a writer's above every earlier reader's;
//! 7. a semaphore never has more holders than permits, and no two hold one token.
//!
//! # Recording discipline
//!
//! Events are ordered by the order in which they were recorded (a sequence number taken
//! under a lock), not by their timestamps, so the checker works under a paused tokio clock
//! where many events share one [`Instant`]. For the check to be sound the recorded hold
//! must lie *inside* the real one: record `acquired` after the acquire call returns, and
//! record `released` **before** issuing the release (and `resigned` before resigning).
//! Record `lost` as soon as the recipe reports the loss. Timestamps come from
//! [`tokio::time::Instant`] and are informational (shown in violations).
//!
//! ```
//! use coord_testkit::History;
//! let h = History::new();
//! h.acquired("a", "lock", 1);
//! h.wrote("a", "lock", 1);
//! h.released("a", "lock", 1);
//! h.acquired("b", "lock", 2);
//! h.lost("b", "lock", 2);
//! h.check().unwrap();
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The client acquired the lock `name` with fencing token `token`.
    Acquired,
    /// The client is releasing the lock (record before releasing).
    Released,
    /// The client was told it lost the lock (session or lease expired).
    Lost,
    /// The client wrote to the resource protected by the lock, using `token`.
    Wrote,
    /// The client became leader of election `name` with term / token `token`.
    Elected,
    /// The leader is resigning (record before resigning).
    Resigned,
    /// The leader was told it lost leadership without resigning.
    Deposed,
    /// The client acquired a read lock on `name` (a read/write lock whose writers are
    /// recorded as [`Acquired`](Self::Acquired)).
    ReadAcquired,
    /// The client is releasing its read lock (record before releasing).
    ReadReleased,
    /// The client was told it lost its read lock.
    ReadLost,
}

impl EventKind {
    /// `Lost` or `Deposed`: the end of a hold that the client did not choose.
    fn is_loss(self) -> bool {
        matches!(
            self,
            EventKind::Lost | EventKind::Deposed | EventKind::ReadLost
        )
    }

    fn verb(self) -> &'static str {
        match self {
            EventKind::Acquired => "acquired",
            EventKind::Released => "released",
            EventKind::Lost => "lost",
            EventKind::Wrote => "wrote with",
            EventKind::Elected => "was elected in",
            EventKind::Resigned => "resigned from",
            EventKind::Deposed => "was deposed from",
            EventKind::ReadAcquired => "acquired a read lock on",
            EventKind::ReadReleased => "released a read lock on",
            EventKind::ReadLost => "lost a read lock on",
        }
    }
}

/// One recorded event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEvent {
    /// Position in the history (recording order, from 0): the order the checker uses.
    pub seq: u64,
    /// When it was recorded ([`tokio::time::Instant`], so paused clocks work).
    pub at: Instant,
    /// Time since the [`History`] was created.
    pub elapsed: Duration,
    /// The client (task, process or session) that acted.
    pub client: String,
    /// What happened.
    pub kind: EventKind,
    /// The lock name or election name.
    pub name: String,
    /// The fencing token (locks) or term (elections).
    pub token: u64,
}

impl fmt::Display for HistoryEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} +{:.3}s {} {} {:?} token={}",
            self.seq,
            self.elapsed.as_secs_f64(),
            self.client,
            self.kind.verb(),
            self.name,
            self.token
        )
    }
}

/// A broken safety property, with the events involved.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// Two holders of one lock overlapped: `acquired` happened while `holder` still held it.
    OverlappingHolders {
        /// The lock.
        name: String,
        /// The acquisition of the hold that was still open.
        holder: HistoryEvent,
        /// The conflicting acquisition.
        acquired: HistoryEvent,
    },
    /// A successive acquisition (or election) did not have a strictly greater token.
    TokenNotRising {
        /// The lock or election.
        name: String,
        /// The previous acquisition / election.
        previous: HistoryEvent,
        /// The acquisition / election whose token is not greater.
        next: HistoryEvent,
    },
    /// A client wrote with a token after it had been told that hold was lost.
    WriteAfterLoss {
        /// The lock.
        name: String,
        /// The loss notification.
        lost: HistoryEvent,
        /// The later write.
        write: HistoryEvent,
    },
    /// A client wrote with a token it did not hold (never acquired, or already released).
    WriteWithoutHold {
        /// The lock.
        name: String,
        /// The write.
        write: HistoryEvent,
        /// The acquisition of whoever held the lock at the time, if anyone.
        holder: Option<HistoryEvent>,
    },
    /// A client released (or lost) a lock with a token it did not hold.
    ReleaseWithoutAcquire {
        /// The lock.
        name: String,
        /// The release or loss.
        release: HistoryEvent,
        /// The acquisition of whoever held the lock at the time, if anyone.
        holder: Option<HistoryEvent>,
    },
    /// Two leaders at once: `elected` happened while `leader` still led.
    TwoLeaders {
        /// The election.
        election: String,
        /// The election of the leader still in office.
        leader: HistoryEvent,
        /// The conflicting election.
        elected: HistoryEvent,
    },
    /// A reader and a writer of one read/write lock overlapped.
    ReaderWriterOverlap {
        /// The read/write lock.
        name: String,
        /// The acquisition (read or write) of the hold that was still open.
        holder: HistoryEvent,
        /// The conflicting acquisition.
        acquired: HistoryEvent,
    },
    /// A semaphore had more holders than permits, or two holders of one token.
    TooManyHolders {
        /// The semaphore.
        name: String,
        /// Its number of permits.
        permits: usize,
        /// The acquisitions of the holds that were open.
        holders: Vec<HistoryEvent>,
        /// The acquisition that was one too many.
        acquired: HistoryEvent,
    },
    /// A client resigned (or was deposed from) leadership it did not have.
    ResignWithoutElection {
        /// The election.
        election: String,
        /// The resignation or deposition.
        event: HistoryEvent,
        /// The election of whoever led at the time, if anyone.
        leader: Option<HistoryEvent>,
    },
}

fn or_nobody(e: &Option<HistoryEvent>) -> String {
    e.as_ref()
        .map_or_else(|| "nobody held it".to_string(), |e| format!("holder: {e}"))
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::OverlappingHolders {
                name,
                holder,
                acquired,
            } => write!(
                f,
                "two holders of lock {name:?} overlap: [{acquired}] while [{holder}] had not released or lost it"
            ),
            Violation::TokenNotRising {
                name,
                previous,
                next,
            } => write!(
                f,
                "tokens of {name:?} did not strictly rise: [{next}] follows [{previous}]"
            ),
            Violation::WriteAfterLoss { name, lost, write } => write!(
                f,
                "stale write to {name:?}: [{write}] after the client was told [{lost}]"
            ),
            Violation::WriteWithoutHold {
                name,
                write,
                holder,
            } => write!(
                f,
                "write to {name:?} without holding the lock with that token: [{write}] ({})",
                or_nobody(holder)
            ),
            Violation::ReleaseWithoutAcquire {
                name,
                release,
                holder,
            } => write!(
                f,
                "release of {name:?} without a matching acquire: [{release}] ({})",
                or_nobody(holder)
            ),
            Violation::TwoLeaders {
                election,
                leader,
                elected,
            } => write!(
                f,
                "two leaders of election {election:?}: [{elected}] while [{leader}] still led"
            ),
            Violation::ReaderWriterOverlap {
                name,
                holder,
                acquired,
            } => write!(
                f,
                "reader and writer of {name:?} overlap: [{acquired}] while [{holder}] had not released or lost it"
            ),
            Violation::TooManyHolders {
                name,
                permits,
                holders,
                acquired,
            } => {
                let open: Vec<String> = holders.iter().map(|h| format!("[{h}]")).collect();
                write!(
                    f,
                    "semaphore {name:?} of {permits} permits: [{acquired}] while {} held it: {}",
                    holders.len(),
                    open.join(", ")
                )
            }
            Violation::ResignWithoutElection {
                election,
                event,
                leader,
            } => write!(
                f,
                "leadership of {election:?} ended without being won: [{event}] ({})",
                leader
                    .as_ref()
                    .map_or_else(|| "no leader".to_string(), |e| format!("leader: {e}"))
            ),
        }
    }
}

impl std::error::Error for Violation {}

#[derive(Debug)]
struct Inner {
    start: Instant,
    events: Vec<HistoryEvent>,
    /// Names declared as semaphores, with their permits.
    semaphores: HashMap<String, usize>,
}

/// A thread-safe, cloneable recorder of lock and election events; clones share one log.
/// See the [module docs](self).
#[derive(Clone, Debug)]
pub struct History {
    inner: Arc<Mutex<Inner>>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    /// An empty history whose clock starts now.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                start: Instant::now(),
                events: Vec::new(),
                semaphores: HashMap::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an event now and returns it.
    pub fn record(
        &self,
        kind: EventKind,
        client: impl Into<String>,
        name: impl Into<String>,
        token: u64,
    ) -> HistoryEvent {
        let mut inner = self.lock();
        let at = Instant::now();
        let event = HistoryEvent {
            seq: inner.events.len() as u64,
            at,
            elapsed: at.saturating_duration_since(inner.start),
            client: client.into(),
            kind,
            name: name.into(),
            token,
        };
        inner.events.push(event.clone());
        event
    }

    /// `client` acquired lock `name` with fencing token `token` (record after acquiring).
    pub fn acquired(&self, client: impl Into<String>, name: impl Into<String>, token: u64) {
        self.record(EventKind::Acquired, client, name, token);
    }

    /// `client` releases lock `name` held with `token` (record **before** releasing).
    pub fn released(&self, client: impl Into<String>, name: impl Into<String>, token: u64) {
        self.record(EventKind::Released, client, name, token);
    }

    /// `client` was told it lost lock `name` held with `token`.
    pub fn lost(&self, client: impl Into<String>, name: impl Into<String>, token: u64) {
        self.record(EventKind::Lost, client, name, token);
    }

    /// `client` wrote to the resource guarded by lock `name` using fencing token `token`.
    pub fn wrote(&self, client: impl Into<String>, name: impl Into<String>, token: u64) {
        self.record(EventKind::Wrote, client, name, token);
    }

    /// `client` became leader of `election` with term / token `token` (record after
    /// winning).
    pub fn elected(&self, client: impl Into<String>, election: impl Into<String>, token: u64) {
        self.record(EventKind::Elected, client, election, token);
    }

    /// `client` resigns leadership of `election` (record **before** resigning).
    pub fn resigned(&self, client: impl Into<String>, election: impl Into<String>, token: u64) {
        self.record(EventKind::Resigned, client, election, token);
    }

    /// `client` was told it lost leadership of `election` without resigning.
    pub fn deposed(&self, client: impl Into<String>, election: impl Into<String>, token: u64) {
        self.record(EventKind::Deposed, client, election, token);
    }

    /// `client` acquired a read lock on the read/write lock `name` with `token` (record
    /// after acquiring). Writers of `name` are recorded with [`acquired`](Self::acquired).
    pub fn read_acquired(&self, client: impl Into<String>, name: impl Into<String>, token: u64) {
        self.record(EventKind::ReadAcquired, client, name, token);
    }

    /// `client` releases its read lock on `name` (record **before** releasing).
    pub fn read_released(&self, client: impl Into<String>, name: impl Into<String>, token: u64) {
        self.record(EventKind::ReadReleased, client, name, token);
    }

    /// `client` was told it lost its read lock on `name`.
    pub fn read_lost(&self, client: impl Into<String>, name: impl Into<String>, token: u64) {
        self.record(EventKind::ReadLost, client, name, token);
    }

    /// Declares `name` a semaphore of `permits` permits: its holds, recorded with
    /// [`acquired`](Self::acquired) / [`released`](Self::released) / [`lost`](Self::lost),
    /// may overlap up to `permits` at once, and their tokens need not rise (a permit's
    /// token is above those released before it was asked for, not above every earlier
    /// one). Declare before recording.
    pub fn semaphore(&self, name: impl Into<String>, permits: usize) {
        self.lock().semaphores.insert(name.into(), permits);
    }

    /// A copy of all events in recording order.
    pub fn events(&self) -> Vec<HistoryEvent> {
        self.lock().events.clone()
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.lock().events.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.lock().events.is_empty()
    }

    /// All events, one per line.
    pub fn dump(&self) -> String {
        self.lock()
            .events
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Checks the safety properties listed in the [module docs](self).
    ///
    /// # Errors
    ///
    /// The first [`Violation`] found, in recording order.
    #[allow(
        clippy::result_large_err,
        reason = "a violation is rare; its events are the point"
    )]
    pub fn check(&self) -> Result<(), Violation> {
        let inner = self.lock();
        check_events(&inner.events, &inner.semaphores)
    }

    /// Panics with the violation and the whole history when [`check`](Self::check) fails.
    #[track_caller]
    pub fn assert_valid(&self) {
        if let Err(v) = self.check() {
            panic!("history violation: {v}\n--- history ---\n{}", self.dump());
        }
    }
}

/// An open hold or leadership term.
#[derive(Debug)]
struct Open {
    client: String,
    token: u64,
    depth: u32,
    since: HistoryEvent,
}

impl Open {
    fn is(&self, e: &HistoryEvent) -> bool {
        self.client == e.client && self.token == e.token
    }
}

#[derive(Debug, Default)]
struct Resource {
    current: Option<Open>,
    /// The latest acquisition / election (for the token order).
    last: Option<HistoryEvent>,
    /// Ends (release / loss) of past holds, by (client, token).
    ended: HashMap<(String, u64), HistoryEvent>,
}

impl Resource {
    fn holder(&self) -> Option<HistoryEvent> {
        self.current.as_ref().map(|o| o.since.clone())
    }

    /// Opens a hold; returns the conflicting open hold or the token-order violation
    /// `(previous, next)` as `Err`.
    fn open(&mut self, e: &HistoryEvent) -> Result<(), Conflict> {
        if let Some(cur) = &mut self.current {
            if cur.is(e) {
                cur.depth += 1;
                return Ok(());
            }
            return Err(Conflict::Overlap(cur.since.clone()));
        }
        if let Some(prev) = &self.last {
            let reentrant = prev.client == e.client && prev.token == e.token;
            if e.token <= prev.token && !reentrant {
                return Err(Conflict::Token(prev.clone()));
            }
        }
        self.last = Some(e.clone());
        self.ended.remove(&(e.client.clone(), e.token));
        self.current = Some(Open {
            client: e.client.clone(),
            token: e.token,
            depth: 1,
            since: e.clone(),
        });
        Ok(())
    }

    /// Closes a hold. `whole` ends it regardless of re-entrant depth (loss). Returns
    /// `false` when the event matches no open or past hold.
    fn close(&mut self, e: &HistoryEvent, whole: bool) -> bool {
        match &mut self.current {
            Some(cur) if cur.is(e) => {
                cur.depth -= 1;
                if whole || cur.depth == 0 {
                    self.current = None;
                    self.ended.insert((e.client.clone(), e.token), e.clone());
                }
                true
            }
            // A late loss notice for a hold that already ended, or a cleanup release
            // after a loss, is harmless; a second release is not.
            _ => self
                .ended
                .get(&(e.client.clone(), e.token))
                .is_some_and(|end| end.kind.is_loss() || e.kind.is_loss()),
        }
    }
}

enum Conflict {
    Overlap(HistoryEvent),
    Token(HistoryEvent),
}

/// The open holds of a name that many may hold at once: the readers of a read/write lock,
/// the permits of a semaphore.
#[derive(Debug, Default)]
struct Shared {
    open: Vec<Open>,
    /// Ends (release / loss) of past holds, by (client, token).
    ended: HashMap<(String, u64), HistoryEvent>,
    /// The acquisition with the highest token so far.
    highest: Option<HistoryEvent>,
}

impl Shared {
    fn holders(&self) -> Vec<HistoryEvent> {
        self.open.iter().map(|o| o.since.clone()).collect()
    }

    fn holds(&self, e: &HistoryEvent) -> bool {
        self.open.iter().any(|o| o.is(e))
    }

    /// Opens a hold; `Err` when that makes more than `limit` holders, or a second holder of
    /// one token.
    fn open(&mut self, e: &HistoryEvent, limit: Option<usize>) -> Result<(), ()> {
        if let Some(o) = self.open.iter_mut().find(|o| o.is(e)) {
            o.depth += 1;
            return Ok(());
        }
        let full = limit.is_some_and(|n| self.open.len() >= n);
        if full || self.open.iter().any(|o| o.token == e.token) {
            return Err(());
        }
        if self.highest.as_ref().is_none_or(|h| h.token < e.token) {
            self.highest = Some(e.clone());
        }
        self.ended.remove(&(e.client.clone(), e.token));
        self.open.push(Open {
            client: e.client.clone(),
            token: e.token,
            depth: 1,
            since: e.clone(),
        });
        Ok(())
    }

    /// As [`Resource::close`].
    fn close(&mut self, e: &HistoryEvent, whole: bool) -> bool {
        if let Some(i) = self.open.iter().position(|o| o.is(e)) {
            let o = &mut self.open[i];
            o.depth -= 1;
            if whole || o.depth == 0 {
                self.open.remove(i);
                self.ended.insert((e.client.clone(), e.token), e.clone());
            }
            return true;
        }
        self.ended
            .get(&(e.client.clone(), e.token))
            .is_some_and(|end| end.kind.is_loss() || e.kind.is_loss())
    }
}

/// What the checker knows of one lock name: its writers (or sole holders) and readers.
#[derive(Debug, Default)]
struct Lock {
    writers: Resource,
    readers: Shared,
}

/// The checker behind [`History::check`], usable on any event list in order.
#[allow(
    clippy::result_large_err,
    reason = "a violation is rare; its events are the point"
)]
fn check_events(
    events: &[HistoryEvent],
    semaphores: &HashMap<String, usize>,
) -> Result<(), Violation> {
    let mut locks: HashMap<&str, Lock> = HashMap::new();
    let mut sems: HashMap<&str, Shared> = HashMap::new();
    let mut elections: HashMap<&str, Resource> = HashMap::new();
    for e in events {
        let name = e.name.clone();
        if let Some(&permits) = semaphores.get(&e.name) {
            check_permit(sems.entry(&e.name).or_default(), permits, e)?;
            continue;
        }
        match e.kind {
            EventKind::Acquired => {
                let l = locks.entry(&e.name).or_default();
                if let Some(reader) = l.readers.open.first() {
                    return Err(Violation::ReaderWriterOverlap {
                        name,
                        holder: reader.since.clone(),
                        acquired: e.clone(),
                    });
                }
                if let Some(reader) = &l.readers.highest
                    && reader.token >= e.token
                {
                    return Err(Violation::TokenNotRising {
                        name,
                        previous: reader.clone(),
                        next: e.clone(),
                    });
                }
                match l.writers.open(e) {
                    Ok(()) => {}
                    Err(Conflict::Overlap(holder)) => {
                        return Err(Violation::OverlappingHolders {
                            name,
                            holder,
                            acquired: e.clone(),
                        });
                    }
                    Err(Conflict::Token(previous)) => {
                        return Err(Violation::TokenNotRising {
                            name,
                            previous,
                            next: e.clone(),
                        });
                    }
                }
            }
            EventKind::Released | EventKind::Lost => {
                let r = &mut locks.entry(&e.name).or_default().writers;
                if !r.close(e, e.kind == EventKind::Lost) {
                    return Err(Violation::ReleaseWithoutAcquire {
                        name,
                        release: e.clone(),
                        holder: r.holder(),
                    });
                }
            }
            EventKind::ReadAcquired => {
                let l = locks.entry(&e.name).or_default();
                if let Some(writer) = l.writers.holder() {
                    return Err(Violation::ReaderWriterOverlap {
                        name,
                        holder: writer,
                        acquired: e.clone(),
                    });
                }
                if let Some(writer) = &l.writers.last
                    && writer.token >= e.token
                {
                    return Err(Violation::TokenNotRising {
                        name,
                        previous: writer.clone(),
                        next: e.clone(),
                    });
                }
                // Readers never exclude each other, so opening cannot fail.
                let _ = l.readers.open(e, None);
            }
            EventKind::ReadReleased | EventKind::ReadLost => {
                let r = &mut locks.entry(&e.name).or_default().readers;
                if !r.close(e, e.kind == EventKind::ReadLost) {
                    return Err(Violation::ReleaseWithoutAcquire {
                        name,
                        release: e.clone(),
                        holder: r.open.first().map(|o| o.since.clone()),
                    });
                }
            }
            EventKind::Wrote => {
                let r = &locks.entry(&e.name).or_default().writers;
                if r.current.as_ref().is_some_and(|c| c.is(e)) {
                    continue;
                }
                return Err(bad_write(&r.ended, r.holder(), e));
            }
            EventKind::Elected => {
                let r = elections.entry(&e.name).or_default();
                match r.open(e) {
                    Ok(()) => {}
                    Err(Conflict::Overlap(leader)) => {
                        return Err(Violation::TwoLeaders {
                            election: name,
                            leader,
                            elected: e.clone(),
                        });
                    }
                    Err(Conflict::Token(previous)) => {
                        return Err(Violation::TokenNotRising {
                            name,
                            previous,
                            next: e.clone(),
                        });
                    }
                }
            }
            EventKind::Resigned | EventKind::Deposed => {
                let r = elections.entry(&e.name).or_default();
                // Leadership is not re-entrant: any end closes the term.
                if !r.close(e, true) {
                    return Err(Violation::ResignWithoutElection {
                        election: name,
                        event: e.clone(),
                        leader: r.holder(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// One event on a semaphore of `permits` permits.
#[allow(
    clippy::result_large_err,
    reason = "a violation is rare; its events are the point"
)]
fn check_permit(s: &mut Shared, permits: usize, e: &HistoryEvent) -> Result<(), Violation> {
    let name = e.name.clone();
    match e.kind {
        EventKind::Acquired | EventKind::ReadAcquired => {
            let holders = s.holders();
            s.open(e, Some(permits))
                .map_err(|()| Violation::TooManyHolders {
                    name,
                    permits,
                    holders,
                    acquired: e.clone(),
                })
        }
        EventKind::Wrote if s.holds(e) => Ok(()),
        EventKind::Wrote => Err(bad_write(
            &s.ended,
            s.open.first().map(|o| o.since.clone()),
            e,
        )),
        _ => {
            if s.close(e, e.kind.is_loss()) {
                Ok(())
            } else {
                Err(Violation::ReleaseWithoutAcquire {
                    name,
                    release: e.clone(),
                    holder: s.open.first().map(|o| o.since.clone()),
                })
            }
        }
    }
}

/// The violation of a write by a client that does not hold with its token.
fn bad_write(
    ended: &HashMap<(String, u64), HistoryEvent>,
    holder: Option<HistoryEvent>,
    write: &HistoryEvent,
) -> Violation {
    match ended.get(&(write.client.clone(), write.token)) {
        Some(end) if end.kind.is_loss() => Violation::WriteAfterLoss {
            name: write.name.clone(),
            lost: end.clone(),
            write: write.clone(),
        },
        _ => Violation::WriteWithoutHold {
            name: write.name.clone(),
            write: write.clone(),
            holder,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h() -> History {
        History::new()
    }

    #[test]
    fn empty_history_is_valid() {
        let h = h();
        assert!(h.is_empty());
        h.check().unwrap();
    }

    #[test]
    fn valid_sequential_holders() {
        let h = h();
        h.acquired("a", "L", 1);
        h.wrote("a", "L", 1);
        h.released("a", "L", 1);
        h.acquired("b", "L", 5);
        h.wrote("b", "L", 5);
        h.wrote("b", "L", 5);
        h.lost("b", "L", 5);
        h.acquired("a", "L", 6);
        h.released("a", "L", 6);
        assert_eq!(h.len(), 9);
        h.check().unwrap();
        h.assert_valid();
    }

    #[test]
    fn valid_independent_names_and_reentrancy() {
        let h = h();
        h.acquired("a", "L1", 1);
        h.acquired("b", "L2", 1); // another lock: no conflict, own token sequence
        h.acquired("a", "L1", 1); // re-entrant
        h.released("a", "L1", 1);
        h.wrote("a", "L1", 1); // still held once
        h.released("a", "L1", 1);
        h.released("b", "L2", 1);
        h.acquired("a", "L1", 1); // same client, same token again: accepted
        h.released("a", "L1", 1);
        h.check().unwrap();
    }

    #[test]
    fn valid_late_notifications_and_release_after_loss() {
        let h = h();
        h.acquired("a", "L", 1);
        h.lost("a", "L", 1);
        h.released("a", "L", 1); // cleanup unlock after loss
        h.acquired("b", "L", 2);
        h.released("b", "L", 2);
        h.lost("b", "L", 2); // late session-expiry notice for a released hold
        h.check().unwrap();
    }

    #[test]
    fn valid_elections() {
        let h = h();
        h.elected("a", "E", 10);
        h.acquired("b", "E", 1); // a lock with the same name is a different thing
        h.resigned("a", "E", 10);
        h.elected("b", "E", 12);
        h.deposed("b", "E", 12);
        h.elected("c", "E", 13);
        h.elected("c", "E", 13); // repeated notice of the same term
        h.elected("x", "F", 1);
        h.check().unwrap();
    }

    #[test]
    fn valid_concurrent_recording_from_threads() {
        let h = h();
        let lock = Arc::new(Mutex::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let h = h.clone();
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let mut token = lock.lock().unwrap();
                        *token += 1;
                        let client = format!("t{i}");
                        h.acquired(&client, "L", *token);
                        h.wrote(&client, "L", *token);
                        h.released(&client, "L", *token);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(h.len(), 600);
        h.check().unwrap();
    }

    #[test]
    fn rejects_overlapping_holders() {
        let h = h();
        h.acquired("a", "L", 1);
        h.acquired("b", "L", 2);
        h.released("a", "L", 1);
        match h.check() {
            Err(Violation::OverlappingHolders {
                name,
                holder,
                acquired,
            }) => {
                assert_eq!(name, "L");
                assert_eq!((holder.client.as_str(), holder.seq), ("a", 0));
                assert_eq!((acquired.client.as_str(), acquired.seq), ("b", 1));
            }
            other => panic!("unexpected {other:?}"),
        }
        let msg = h.check().unwrap_err().to_string();
        assert!(
            msg.contains("overlap") && msg.contains("#0") && msg.contains("#1"),
            "{msg}"
        );
    }

    #[test]
    fn rejects_same_client_double_acquire_with_new_token() {
        let h = h();
        h.acquired("a", "L", 1);
        h.acquired("a", "L", 2);
        assert!(matches!(
            h.check(),
            Err(Violation::OverlappingHolders { .. })
        ));
    }

    #[test]
    fn rejects_falling_or_repeated_tokens() {
        let h = h();
        h.acquired("a", "L", 5);
        h.released("a", "L", 5);
        h.acquired("b", "L", 5);
        match h.check() {
            Err(Violation::TokenNotRising {
                name,
                previous,
                next,
            }) => {
                assert_eq!(name, "L");
                assert_eq!((previous.client.as_str(), previous.token), ("a", 5));
                assert_eq!((next.client.as_str(), next.token), ("b", 5));
            }
            other => panic!("unexpected {other:?}"),
        }

        let h2 = History::new();
        h2.acquired("a", "L", 5);
        h2.released("a", "L", 5);
        h2.acquired("a", "L", 4);
        assert!(matches!(h2.check(), Err(Violation::TokenNotRising { .. })));
    }

    #[test]
    fn rejects_write_after_loss() {
        let h = h();
        h.acquired("a", "L", 1);
        h.lost("a", "L", 1);
        h.acquired("b", "L", 2);
        h.wrote("a", "L", 1);
        match h.check() {
            Err(Violation::WriteAfterLoss { name, lost, write }) => {
                assert_eq!(name, "L");
                assert_eq!(lost.kind, EventKind::Lost);
                assert_eq!(lost.seq, 1);
                assert_eq!(write.seq, 3);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(h.check().unwrap_err().to_string().contains("stale write"));
    }

    #[test]
    fn rejects_write_without_hold() {
        let h = h();
        h.acquired("a", "L", 1);
        h.wrote("b", "L", 1); // someone else's token
        match h.check() {
            Err(Violation::WriteWithoutHold { write, holder, .. }) => {
                assert_eq!(write.client, "b");
                assert_eq!(holder.unwrap().client, "a");
            }
            other => panic!("unexpected {other:?}"),
        }

        let h2 = History::new();
        h2.acquired("a", "L", 1);
        h2.released("a", "L", 1);
        h2.wrote("a", "L", 1); // after its own release
        assert!(matches!(
            h2.check(),
            Err(Violation::WriteWithoutHold { holder: None, .. })
        ));
    }

    #[test]
    fn rejects_release_without_acquire() {
        let h = h();
        h.released("a", "L", 1);
        assert!(matches!(
            h.check(),
            Err(Violation::ReleaseWithoutAcquire { holder: None, .. })
        ));

        let h2 = History::new();
        h2.acquired("a", "L", 1);
        h2.released("b", "L", 1);
        match h2.check() {
            Err(Violation::ReleaseWithoutAcquire {
                release, holder, ..
            }) => {
                assert_eq!(release.client, "b");
                assert_eq!(holder.unwrap().client, "a");
            }
            other => panic!("unexpected {other:?}"),
        }

        let h3 = History::new();
        h3.acquired("a", "L", 1);
        h3.released("a", "L", 1);
        h3.released("a", "L", 1); // double release
        assert!(matches!(
            h3.check(),
            Err(Violation::ReleaseWithoutAcquire { .. })
        ));

        let h4 = History::new();
        h4.lost("a", "L", 3); // loss of something never held
        assert!(matches!(
            h4.check(),
            Err(Violation::ReleaseWithoutAcquire { .. })
        ));
    }

    #[test]
    fn rejects_two_leaders() {
        let h = h();
        h.elected("a", "E", 1);
        h.elected("b", "E", 2);
        match h.check() {
            Err(Violation::TwoLeaders {
                election,
                leader,
                elected,
            }) => {
                assert_eq!(election, "E");
                assert_eq!(leader.client, "a");
                assert_eq!(elected.client, "b");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(h.check().unwrap_err().to_string().contains("two leaders"));
    }

    #[test]
    fn rejects_falling_terms_and_bogus_resign() {
        let h = h();
        h.elected("a", "E", 7);
        h.resigned("a", "E", 7);
        h.elected("b", "E", 3);
        assert!(matches!(h.check(), Err(Violation::TokenNotRising { .. })));

        let h2 = History::new();
        h2.elected("a", "E", 1);
        h2.resigned("b", "E", 1);
        assert!(matches!(
            h2.check(),
            Err(Violation::ResignWithoutElection { .. })
        ));
    }

    #[test]
    fn reports_the_first_violation() {
        let h = h();
        h.acquired("a", "L", 2);
        h.released("a", "L", 2);
        h.acquired("b", "L", 1); // token falls (first)
        h.acquired("c", "L", 9); // overlap (second)
        assert!(matches!(h.check(), Err(Violation::TokenNotRising { .. })));
    }

    #[test]
    fn readers_share_and_take_turns_with_writers() {
        let h = h();
        h.acquired("w", "RW", 1);
        h.released("w", "RW", 1);
        h.read_acquired("a", "RW", 2);
        h.read_acquired("b", "RW", 3);
        h.read_released("a", "RW", 2);
        h.read_lost("b", "RW", 3);
        h.read_released("b", "RW", 3); // cleanup after the loss
        h.acquired("w", "RW", 4);
        h.released("w", "RW", 4);
        h.check().unwrap();
    }

    #[test]
    fn rejects_a_reader_during_a_writer_and_a_writer_during_a_reader() {
        let h = h();
        h.acquired("w", "RW", 1);
        h.read_acquired("a", "RW", 2);
        assert!(matches!(
            h.check(),
            Err(Violation::ReaderWriterOverlap { holder, .. }) if holder.client == "w"
        ));

        let h2 = History::new();
        h2.read_acquired("a", "RW", 1);
        h2.acquired("w", "RW", 2);
        let v = h2.check().unwrap_err();
        assert!(
            matches!(&v, Violation::ReaderWriterOverlap { holder, .. } if holder.client == "a")
        );
        assert!(v.to_string().contains("reader and writer"), "{v}");
    }

    #[test]
    fn rejects_reader_and_writer_tokens_out_of_order() {
        let h = h();
        h.acquired("w", "RW", 5);
        h.released("w", "RW", 5);
        h.read_acquired("a", "RW", 4);
        assert!(matches!(h.check(), Err(Violation::TokenNotRising { .. })));

        let h2 = History::new();
        h2.read_acquired("a", "RW", 5);
        h2.read_released("a", "RW", 5);
        h2.acquired("w", "RW", 3);
        assert!(matches!(h2.check(), Err(Violation::TokenNotRising { .. })));
    }

    #[test]
    fn semaphore_admits_up_to_its_permits_in_any_token_order() {
        let h = h();
        h.semaphore("S", 2);
        h.acquired("a", "S", 5);
        h.acquired("b", "S", 3);
        h.wrote("b", "S", 3);
        h.released("a", "S", 5);
        h.acquired("c", "S", 4);
        h.lost("b", "S", 3);
        h.acquired("d", "S", 9);
        h.check().unwrap();
    }

    #[test]
    fn rejects_a_semaphore_holder_beyond_its_permits_or_a_shared_token() {
        let h = h();
        h.semaphore("S", 2);
        h.acquired("a", "S", 1);
        h.acquired("b", "S", 2);
        h.acquired("c", "S", 3);
        match h.check() {
            Err(Violation::TooManyHolders {
                permits,
                holders,
                acquired,
                ..
            }) => {
                assert_eq!(permits, 2);
                assert_eq!(holders.len(), 2);
                assert_eq!(acquired.client, "c");
            }
            other => panic!("unexpected {other:?}"),
        }

        let h2 = History::new();
        h2.semaphore("S", 3);
        h2.acquired("a", "S", 1);
        h2.acquired("b", "S", 1);
        assert!(matches!(h2.check(), Err(Violation::TooManyHolders { .. })));

        let h3 = History::new();
        h3.semaphore("S", 3);
        h3.acquired("a", "S", 1);
        h3.lost("a", "S", 1);
        h3.wrote("a", "S", 1);
        assert!(matches!(h3.check(), Err(Violation::WriteAfterLoss { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn timestamps_follow_the_paused_clock_and_order_uses_sequence() {
        let h = History::new();
        h.acquired("a", "L", 1);
        tokio::time::sleep(Duration::from_secs(30)).await; // instant under a paused clock
        h.released("a", "L", 1);
        h.acquired("b", "L", 2);
        let ev = h.events();
        assert_eq!(ev[1].elapsed, Duration::from_secs(30));
        // Same instant, but the recording order still tells the holds apart.
        assert_eq!(ev[1].at, ev[2].at);
        assert!(
            ev[2]
                .to_string()
                .contains("+30.000s b acquired \"L\" token=2")
        );
        h.check().unwrap();
    }

    #[test]
    #[should_panic(expected = "history violation")]
    fn assert_valid_panics_with_the_history() {
        let h = h();
        h.resigned("a", "E", 1);
        h.assert_valid();
    }
}
