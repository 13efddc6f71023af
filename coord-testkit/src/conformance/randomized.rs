//! A seeded randomized test: many short random schedules of mutex operations and faults
//! across 8 sessions, checking that no two holders ever overlap and that fencing tokens
//! only rise.
//!
//! Set `COORD_CONFORMANCE_SEED` (decimal or `0x` hex) to replay a seed; a failure message
//! names the seed and the last events.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use coord_core::{
    CoordinationBackend, LeaseId, Mutex, MutexGuard, NO_LEASE, Put, Revision, Session, TxnOp,
    TxnOpResponse, TxnRequest,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::{
    Capability, ClientFaults, Clock, Partition, TestBackend, keys_under, session_with_ttl, unique,
};

const ACTORS: usize = 8;
/// Schedules on a paused clock; `COORD_CONFORMANCE_SCHEDULES` overrides both counts.
const SCHEDULES: usize = 1_000;
/// Schedules on real time (servers), where every schedule costs real milliseconds.
const SCHEDULES_REAL: usize = 250;

/// The holder as the test believes it, and what it saw so far.
struct State {
    holder: Option<(usize, Revision, LeaseId)>,
    last_token: Revision,
    /// The actor that acquired `last_token`.
    last_holder: Option<usize>,
    /// Leases the test ended by force ([`super::Faults::expire_lease_now`]): their holders
    /// lost the lock at that instant, without being told.
    expired: HashSet<LeaseId>,
    acquisitions: u64,
    fenced_writes: u64,
    log: VecDeque<String>,
}

struct History {
    seed: u64,
    state: std::sync::Mutex<State>,
    /// The testkit's history checker, fed with every hold the store could have granted.
    recorder: crate::History,
    /// Holds recorded in `recorder` (those not ended by force before they began).
    recorded: std::sync::Mutex<HashSet<(usize, Revision)>>,
}

impl History {
    fn new(seed: u64) -> Self {
        History {
            seed,
            state: std::sync::Mutex::new(State {
                holder: None,
                last_token: 0,
                last_holder: None,
                expired: HashSet::new(),
                acquisitions: 0,
                fenced_writes: 0,
                log: VecDeque::new(),
            }),
            recorder: crate::History::new(),
            recorded: std::sync::Mutex::default(),
        }
    }

    fn client(actor: usize) -> String {
        format!("actor-{actor}")
    }

    fn recorded(&self) -> std::sync::MutexGuard<'_, HashSet<(usize, Revision)>> {
        self.recorded.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn note(state: &mut State, line: String) {
        if state.log.len() == 40 {
            state.log.pop_front();
        }
        state.log.push_back(line);
    }

    fn fail(&self, state: &State, what: String) -> ! {
        let log: Vec<&str> = state.log.iter().map(String::as_str).collect();
        panic!(
            "randomized schedules (seed {:#x}): {what}\nlast events:\n  {}",
            self.seed,
            log.join("\n  ")
        );
    }

    fn acquired(&self, actor: usize, token: Revision, lease: LeaseId, schedule: usize) {
        let mut s = self.lock();
        Self::note(
            &mut s,
            format!("#{schedule} actor {actor} acquired token {token}"),
        );
        if s.expired.contains(&lease) {
            // Its lease was ended by force while the acquisition was in flight: it never
            // held, as far as the store is concerned.
            return;
        }
        if let Some((other, other_token, other_lease)) = s.holder
            && !s.expired.contains(&other_lease)
        {
            self.fail(
                &s,
                format!(
                    "actor {actor} acquired (token {token}) while actor {other} holds (token {other_token})"
                ),
            );
        }
        // Equal is allowed only for the same actor: a guard dropped (released in the
        // background) and a new lock on the same session racing ahead of that release adopt
        // the still-live key, continuing the same hold with the same token (re-entrancy per
        // session; nobody else can have acquired in between, since the key never went).
        let continued = s.last_holder == Some(actor) && token == s.last_token;
        if token <= s.last_token && !continued {
            let last = s.last_token;
            self.fail(
                &s,
                format!("token {token} after token {last}: tokens must rise"),
            );
        }
        s.last_holder = Some(actor);
        s.holder = Some((actor, token, lease));
        s.last_token = token;
        s.acquisitions += 1;
        self.recorded().insert((actor, token));
        self.recorder
            .acquired(Self::client(actor), "lock", token as u64);
    }

    /// The hold ended: released by choice, or `lost()` fired.
    fn ended(&self, actor: usize, token: Revision, lost: bool) {
        let mut s = self.lock();
        let why = if lost { "lost() fired" } else { "released" };
        Self::note(&mut s, format!("actor {actor} ended token {token} ({why})"));
        if matches!(s.holder, Some((a, t, _)) if a == actor && t == token) {
            s.holder = None;
        }
        if self.recorded().contains(&(actor, token)) {
            let client = Self::client(actor);
            if lost {
                self.recorder.lost(client, "lock", token as u64);
            } else {
                self.recorder.released(client, "lock", token as u64);
            }
        }
    }

    fn expire(&self, lease: LeaseId, schedule: usize) {
        let mut s = self.lock();
        Self::note(
            &mut s,
            format!("#{schedule} lease {lease:x} expired by force"),
        );
        s.expired.insert(lease);
        if let Some((actor, token, l)) = s.holder
            && l == lease
        {
            s.holder = None;
            self.recorder
                .lost(Self::client(actor), "lock", token as u64);
        }
    }

    fn fenced(&self, actor: usize, token: Revision, previous: Option<Revision>) {
        let mut s = self.lock();
        if matches!(s.holder, Some((a, t, _)) if a == actor && t == token) {
            self.recorder
                .wrote(Self::client(actor), "lock", token as u64);
        }
        // Equal: the same hold, continued by a re-entrant acquisition (see `acquired`).
        if let Some(prev) = previous
            && prev > token
        {
            self.fail(
                &s,
                format!("fenced write of token {token} after a fenced write of token {prev}"),
            );
        }
        s.fenced_writes += 1;
    }
}

/// One randomized operation of one actor in one schedule. Times are milliseconds.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// Wait `delay`, lock, hold for `hold`, unlock.
    Lock { delay: u64, hold: u64 },
    /// As `Lock`, but drop the guard instead of unlocking (background release).
    LockDrop { delay: u64, hold: u64 },
    /// Wait `delay`, try_lock, hold if it succeeded.
    TryLock { delay: u64, hold: u64 },
    /// Lock, but give up (drop the future) after `after`.
    Cancel { delay: u64, after: u64, hold: u64 },
    /// The next `n` calls of the actor's client fail, then `Lock`.
    FailThenLock { n: u64, hold: u64 },
    /// The actor's client is cut off for `dur` while it tries to lock.
    Partitioned {
        mode: Partition,
        dur: u64,
        hold: u64,
    },
    /// Every call of the actor's client takes `latency` more; lock, giving up after `after`.
    Slow { latency: u64, after: u64, hold: u64 },
}

#[derive(Clone)]
struct Actor {
    id: usize,
    client: Arc<dyn CoordinationBackend>,
    faults: Option<Arc<dyn ClientFaults>>,
    session: Session,
}

struct Ctx {
    history: Arc<History>,
    name: String,
    fence: String,
    limit: Duration,
    schedule: usize,
}

/// A seeded randomized test of 1,000 schedules (250 on real time, where each costs real
/// milliseconds; `COORD_CONFORMANCE_SCHEDULES` overrides) across 8 sessions: each schedule
/// runs 2-4 actors concurrently, each doing one random operation (lock, unlock, drop the
/// guard, try_lock, cancel mid-wait, fail the next calls, partition, latency), while the
/// test sometimes ends a lease by force or restarts a session. It checks that no two
/// holders ever overlap (a holder's time ends when it unlocks, when its `lost()` fires, or
/// when its lease is ended by force), that tokens only rise (the same token twice only as
/// one session's continued hold: a new lock that adopts the session's still-live key before
/// a dropped guard's background release ran), and, store-side, that writes guarded by
/// `is_owner()` happen in rising token order. The testkit's [`crate::History`] checker
/// verifies the recorded history at the end. At the end every actor
/// locks once more concurrently (liveness after all faults healed).
pub async fn randomized_mutex_schedules(backend: &dyn TestBackend) {
    let seed = std::env::var("COORD_CONFORMANCE_SEED")
        .ok()
        .and_then(|s| match s.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => s.parse().ok(),
        })
        .unwrap_or(0x00c0_0d5e_ed00_0001);
    let schedules = std::env::var("COORD_CONFORMANCE_SCHEDULES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(match backend.clock() {
            Clock::Paused => SCHEDULES,
            Clock::Real => SCHEDULES_REAL,
        });
    let mut rng = StdRng::seed_from_u64(seed);
    let has = |cap| backend.lacks(cap).is_none();
    let (can_expire, can_fail, can_latency, can_fail_part, can_hang) = (
        has(Capability::ExpireLease),
        has(Capability::FailNext),
        has(Capability::Latency),
        has(Capability::PartitionFail),
        has(Capability::PartitionHang),
    );
    let ttl = backend.short_ttl();
    let limit = match backend.clock() {
        Clock::Paused => Duration::from_secs(3),
        Clock::Real => ttl,
    };
    let name = unique("random");
    let history = Arc::new(History::new(seed));
    let mut actors = Vec::new();
    for id in 0..ACTORS {
        let (client, faults) = match backend.faults() {
            Some(f) => {
                let (c, cf) = f.faulty_client().await;
                (c, Some(cf))
            }
            None => (backend.client().await, None),
        };
        let session = session_with_ttl(&client, ttl).await;
        actors.push(Actor {
            id,
            client,
            faults,
            session,
        });
    }
    let ctx = |schedule| {
        Arc::new(Ctx {
            history: history.clone(),
            name: name.clone(),
            fence: format!("{name}-fence"),
            limit,
            schedule,
        })
    };

    for schedule in 0..schedules {
        let mut ids: Vec<usize> = (0..ACTORS).collect();
        ids.shuffle(&mut rng);
        let k = rng.random_range(2..=4);
        let participants = ids[..k].to_vec();
        let ctx = ctx(schedule);
        let mut tasks = Vec::new();
        for &id in &participants {
            let op = pick_op(
                &mut rng,
                backend.clock(),
                (can_fail, can_latency, can_fail_part, can_hang),
                ttl,
            );
            let actor = actors[id].clone();
            let ctx = ctx.clone();
            tasks.push(tokio::spawn(run(actor, op, ctx)));
        }
        // Sometimes end a participant's lease by force, a few ms into the schedule.
        let mut expired = None;
        if can_expire && rng.random_bool(0.04) {
            let victim = participants[rng.random_range(0..k)];
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..8))).await;
            let lease = actors[victim].session.lease();
            history.expire(lease, schedule);
            backend.faults().unwrap().expire_lease_now(lease).await;
            history.expire(lease, schedule);
            expired = Some(victim);
        }
        for t in tasks {
            t.await.expect("actor task");
        }
        for &id in &participants {
            let a = &mut actors[id];
            if let Some(f) = &a.faults {
                f.heal();
                f.set_latency(Duration::ZERO);
                f.fail_next(0);
            }
            let restart = rng.random_bool(0.02);
            if expired == Some(id) || restart || a.session.is_lost() {
                a.session.orphan();
                let _ = a.session.close().await;
                a.session = session_with_ttl(&a.client, ttl).await;
            }
        }
    }

    // Liveness: with every fault healed, every actor gets the lock once more.
    let ctx = ctx(schedules);
    let mut tasks = Vec::new();
    for a in &actors {
        let (a, ctx) = (a.clone(), ctx.clone());
        tasks.push(tokio::spawn(async move {
            let g = Mutex::new(&a.session, ctx.name.as_str())
                .lock_timeout(settle_limit(&ctx))
                .await
                .unwrap_or_else(|e| panic!("final lock of actor {} failed: {e}", a.id));
            hold(&a, &ctx, g, 1, false).await;
        }));
    }
    for t in tasks {
        t.await.expect("final round");
    }
    let (acquisitions, fenced) = {
        let s = history.lock();
        (s.acquisitions, s.fenced_writes)
    };
    assert!(
        acquisitions >= schedules as u64 / 2,
        "seed {seed:#x}: only {acquisitions} acquisitions in {schedules} schedules"
    );
    assert!(fenced > 0);
    history.recorder.assert_valid();
    for a in &actors {
        let _ = a.session.close().await;
    }
    let c = backend.client().await;
    assert!(keys_under(c.as_ref(), &format!("{name}/")).await.is_empty());
}

fn settle_limit(ctx: &Ctx) -> Duration {
    ctx.limit * 4
}

fn pick_op(
    rng: &mut StdRng,
    clock: Clock,
    (can_fail, can_latency, can_fail_part, can_hang): (bool, bool, bool, bool),
    ttl: Duration,
) -> Op {
    let delay = rng.random_range(0..6);
    let hold = rng.random_range(0..6);
    let roll = rng.random_range(0..100);
    match roll {
        0..30 => Op::Lock { delay, hold },
        30..40 => Op::LockDrop { delay, hold },
        40..55 => Op::TryLock { delay, hold },
        55..70 => Op::Cancel {
            delay,
            after: rng.random_range(0..10),
            hold,
        },
        70..78 if can_fail => Op::FailThenLock {
            n: rng.random_range(1..4),
            hold,
        },
        78..86 if can_fail_part || can_hang => {
            let mode = if can_hang && (!can_fail_part || rng.random_bool(0.5)) {
                Partition::Hang
            } else {
                Partition::Fail
            };
            // Usually short; on paused time sometimes longer than the TTL, so the session
            // is lost and the lease runs out naturally.
            let long = clock == Clock::Paused && rng.random_bool(0.1);
            let dur = if long {
                ttl.as_millis() as u64 * 2
            } else {
                rng.random_range(1..30)
            };
            Op::Partitioned { mode, dur, hold }
        }
        86..100 if can_latency => Op::Slow {
            latency: rng.random_range(1..20),
            after: rng.random_range(0..40),
            hold,
        },
        _ => Op::Lock { delay, hold },
    }
}

async fn run(actor: Actor, op: Op, ctx: Arc<Ctx>) {
    let ms = Duration::from_millis;
    let m = Mutex::new(&actor.session, ctx.name.as_str());
    let lock_within = |limit: Duration| {
        let m = m.clone();
        async move { m.lock_timeout(limit).await.ok() }
    };
    let (guard, hold_ms, drop_guard) = match op {
        Op::Lock { delay, hold } | Op::LockDrop { delay, hold } => {
            tokio::time::sleep(ms(delay)).await;
            (
                lock_within(ctx.limit).await,
                hold,
                matches!(op, Op::LockDrop { .. }),
            )
        }
        Op::TryLock { delay, hold } => {
            tokio::time::sleep(ms(delay)).await;
            (m.try_lock().await.ok(), hold, false)
        }
        Op::Cancel { delay, after, hold } => {
            tokio::time::sleep(ms(delay)).await;
            (lock_within(ms(after)).await, hold, false)
        }
        Op::FailThenLock { n, hold } => {
            if let Some(f) = &actor.faults {
                f.fail_next(n);
            }
            (lock_within(ctx.limit).await, hold, false)
        }
        Op::Partitioned { mode, dur, hold } => {
            let f = actor.faults.clone().expect("partition needs faults");
            f.partition(mode);
            let heal = async {
                tokio::time::sleep(ms(dur)).await;
                f.heal();
            };
            let (_, g) = tokio::join!(heal, lock_within(ctx.limit));
            (g, hold, false)
        }
        Op::Slow {
            latency,
            after,
            hold,
        } => {
            let f = actor.faults.clone().expect("latency needs faults");
            f.set_latency(ms(latency));
            let g = lock_within(ms(after)).await;
            f.set_latency(Duration::ZERO);
            (g, hold, false)
        }
    };
    if let Some(g) = guard {
        hold(&actor, &ctx, g, hold_ms, drop_guard).await;
    }
}

/// Records the acquisition, makes a fenced write, holds for `hold_ms` (or until `lost()`),
/// records the release, then unlocks (or drops the guard).
async fn hold(actor: &Actor, ctx: &Ctx, g: MutexGuard, hold_ms: u64, drop_guard: bool) {
    let token = g.fencing_token();
    ctx.history
        .acquired(actor.id, token, actor.session.lease(), ctx.schedule);
    let lost = g.lost();
    tokio::pin!(lost);
    let write = TxnRequest::new()
        .when([g.is_owner()])
        .and_then([TxnOp::Put(Put {
            key: ctx.fence.clone().into_bytes(),
            value: token.to_string().into_bytes(),
            lease: NO_LEASE,
            prev_kv: true,
        })]);
    let lost_early = tokio::select! {
        biased;
        _ = &mut lost => true,
        r = actor.client.txn(write) => {
            if let Ok(resp) = r
                && resp.succeeded
            {
                let previous = match resp.responses.first() {
                    Some(TxnOpResponse::Put { prev_kv }) => prev_kv
                        .as_ref()
                        .map(|kv| kv.value_str().parse::<Revision>().expect("token")),
                    _ => None,
                };
                ctx.history.fenced(actor.id, token, previous);
            }
            false
        }
    };
    let lost_during = lost_early
        || tokio::select! {
            _ = &mut lost => true,
            _ = tokio::time::sleep(Duration::from_millis(hold_ms)) => false,
        };
    ctx.history.ended(actor.id, token, lost_during);
    if drop_guard {
        drop(g);
    } else {
        let _ = g.unlock().await;
    }
}
