//! The clients: each loops over random operations, one at a time, on its own client and
//! session, recording what it holds in the [`Ledger`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use coord_core::faults::Partition;
use coord_core::{
    Election, Error, Hold, Leadership, Mutex, MutexGuard, NO_LEASE, Put, Result, Revision, RwMode,
    RwMutex, RwMutexGuard, Semaphore, SemaphorePermit, Session, TxnOp, TxnOpResponse, TxnRequest,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::{Config, Scales};
use super::ledger::{HoldKind, Ledger};
use super::{ChaosClient, PERMITS, Slot, Target};

/// Operation counts by (kind, outcome).
pub(crate) type Stats = StdMutex<BTreeMap<(&'static str, String), u64>>;

/// What every client of a run shares.
pub(crate) struct Ctx<'a> {
    pub(crate) target: &'a dyn Target,
    pub(crate) config: &'a Config,
    pub(crate) scales: Scales,
    pub(crate) prefix: String,
    pub(crate) ledger: Arc<Ledger>,
    /// When clients stop starting operations and the injector stops injecting.
    pub(crate) end: Instant,
    pub(crate) stats: Arc<Stats>,
    /// Cancelled by the injector once every fault is undone.
    pub(crate) faults_over: CancellationToken,
}

/// The mutex names (two, so that clients both queue and pass each other).
const LOCKS: usize = 2;

fn lock_name(prefix: &str, i: usize) -> String {
    format!("{prefix}/lock{i}")
}

fn rw_name(prefix: &str) -> String {
    format!("{prefix}/rw")
}

pub(crate) fn semaphore_name(prefix: &str) -> String {
    format!("{prefix}/sem")
}

fn election_name(prefix: &str) -> String {
    format!("{prefix}/elect")
}

/// The key fenced writes of holds of `name` go to.
fn fence_of(name: &str) -> String {
    format!("{name}.fence")
}

/// The kind of an error, as counted in the report: its variant's name.
pub(crate) fn error_kind(e: &Error) -> String {
    let debug = format!("{e:?}");
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("?")
        .to_owned()
}

/// One random operation.
#[derive(Debug, Clone, Copy)]
enum Op {
    Lock(usize),
    TryLock(usize),
    Read,
    Write,
    Acquire,
    Campaign,
}

fn pick(rng: &mut StdRng) -> Op {
    match rng.random_range(0..100) {
        0..25 => Op::Lock(rng.random_range(0..LOCKS)),
        25..40 => Op::TryLock(rng.random_range(0..LOCKS)),
        40..52 => Op::Read,
        52..64 => Op::Write,
        64..82 => Op::Acquire,
        _ => Op::Campaign,
    }
}

/// A granted hold of any recipe.
enum Guard {
    Mutex(MutexGuard),
    Rw(RwMutexGuard),
    Permit(SemaphorePermit),
    Leader(Leadership),
}

impl Guard {
    fn hold(&self) -> &Hold {
        match self {
            Guard::Mutex(g) => g,
            Guard::Rw(g) => g,
            Guard::Permit(g) => g,
            Guard::Leader(g) => g,
        }
    }

    /// The operation that lets go, as counted.
    fn release_kind(&self) -> &'static str {
        match self {
            Guard::Mutex(_) | Guard::Rw(_) => "unlock",
            Guard::Permit(_) => "release",
            Guard::Leader(_) => "resign",
        }
    }

    async fn let_go(self) -> Result<()> {
        match self {
            Guard::Mutex(g) => g.unlock().await,
            Guard::Rw(g) => g.unlock().await,
            Guard::Permit(g) => g.release().await,
            Guard::Leader(g) => g.resign().await,
        }
    }
}

/// One client.
struct Worker<'c, 'a> {
    ctx: &'c Ctx<'a>,
    id: usize,
    rng: StdRng,
    client: ChaosClient,
    slot: Arc<Slot>,
    session: Option<Session>,
    /// Consecutive failures to start a session.
    failures: u32,
}

/// Runs client `id` until the run ends, then the final liveness round.
pub(crate) async fn worker(ctx: &Ctx<'_>, id: usize, client: ChaosClient, slot: Arc<Slot>) {
    let seed = ctx.config.seed ^ (id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut w = Worker {
        ctx,
        id,
        rng: StdRng::seed_from_u64(seed),
        client,
        slot,
        session: None,
        failures: 0,
    };
    while Instant::now() < ctx.end {
        let Some(session) = w.session().await else {
            continue;
        };
        if w.slot.take_pause() {
            w.paused_hold(&session).await;
        } else {
            let op = pick(&mut w.rng);
            w.op(&session, op).await;
        }
        let think = w
            .rng
            .random_range(0..=ctx.scales.ttl.as_millis() as u64 / 40);
        tokio::time::sleep(Duration::from_millis(think)).await;
    }
    // Liveness: once every fault is undone, every client gets the first lock once more.
    ctx.faults_over.cancelled().await;
    w.final_round().await;
    if let Some(s) = w.session.take() {
        w.bounded("close", s.close()).await;
    }
}

impl Worker<'_, '_> {
    fn count(&self, kind: &'static str, outcome: String) {
        let mut stats = self.ctx.stats.lock().unwrap_or_else(|e| e.into_inner());
        *stats.entry((kind, outcome)).or_default() += 1;
    }

    /// Runs `fut` within the hung bound, counting its outcome; `None` when it hung.
    async fn bounded<T>(
        &self,
        kind: &'static str,
        fut: impl Future<Output = Result<T>>,
    ) -> Option<Result<T>> {
        let hung = self.ctx.scales.hung;
        match tokio::time::timeout(hung, fut).await {
            Err(_) => {
                self.count(kind, "hung".into());
                self.ctx.ledger.violation(format!(
                    "client-{}: {kind} neither finished nor failed within {hung:?} (hung)",
                    self.id
                ));
                None
            }
            Ok(Ok(v)) => {
                self.count(kind, "ok".into());
                Some(Ok(v))
            }
            Ok(Err(e)) => {
                let k = error_kind(&e);
                if matches!(e, Error::Contract { .. }) {
                    self.ctx.ledger.violation(format!(
                        "client-{}: {kind} failed with a contract error: {e}",
                        self.id
                    ));
                } else if !matches!(e, Error::Timeout { .. } | Error::Locked { .. }) {
                    self.ctx
                        .ledger
                        .event(format!("client-{} {kind}: {k}: {e}", self.id));
                }
                self.count(kind, k);
                Some(Err(e))
            }
        }
    }

    /// The current session, or a new one when it was lost (`None`, after a pause, when
    /// none could be started).
    async fn session(&mut self) -> Option<Session> {
        if let Some(s) = &self.session
            && !s.is_lost()
        {
            return Some(s.clone());
        }
        if let Some(old) = self.session.take() {
            self.ctx
                .ledger
                .event(format!("client-{} session {:x} lost", self.id, old.lease()));
            self.slot.set_lease(None);
            old.orphan();
        }
        let start = Session::builder(self.client.backend.clone())
            .ttl(self.ctx.scales.ttl)
            .start();
        match self.bounded("session", start).await {
            Some(Ok(s)) => {
                self.failures = 0;
                self.slot.set_lease(Some(s.lease()));
                self.session = Some(s.clone());
                Some(s)
            }
            Some(Err(e)) => {
                self.failures += 1;
                // A client that keeps failing with an error retrying cannot fix (its store
                // lost the data it knew) is replaced.
                if self.failures >= 3 && !e.is_retryable() && !matches!(e, Error::Timeout { .. }) {
                    self.ctx.ledger.event(format!(
                        "client-{}: new backend client after {} failures ({e})",
                        self.id, self.failures
                    ));
                    self.client = self.ctx.target.chaos_client().await;
                    self.slot.set_client(&self.client);
                    self.count("new client", "ok".into());
                    self.failures = 0;
                }
                tokio::time::sleep(self.ctx.scales.ttl / 10).await;
                None
            }
            None => None,
        }
    }

    async fn op(&mut self, session: &Session, op: Op) {
        let wait = self.ctx.scales.wait_limit;
        let prefix = self.ctx.prefix.clone();
        let guard = match op {
            Op::Lock(i) => {
                let name = lock_name(&prefix, i);
                let m = Mutex::new(session, name.as_str());
                self.bounded("lock", m.lock_timeout(wait))
                    .await
                    .and_then(Result::ok)
                    .map(|g| (HoldKind::Lock, name, Guard::Mutex(g)))
            }
            Op::TryLock(i) => {
                let name = lock_name(&prefix, i);
                let m = Mutex::new(session, name.as_str());
                self.bounded("try_lock", m.try_lock())
                    .await
                    .and_then(Result::ok)
                    .map(|g| (HoldKind::Lock, name, Guard::Mutex(g)))
            }
            Op::Read | Op::Write => {
                let name = rw_name(&prefix);
                let rw = RwMutex::new(session, name.as_str());
                let (kind, mode, label) = match op {
                    Op::Read => (HoldKind::Read, RwMode::Read, "read"),
                    _ => (HoldKind::Write, RwMode::Write, "write"),
                };
                self.bounded(label, rw.lock_timeout(mode, wait))
                    .await
                    .and_then(Result::ok)
                    .map(|g| (kind, name, Guard::Rw(g)))
            }
            Op::Acquire => {
                let name = semaphore_name(&prefix);
                let sem = Semaphore::new(session, name.as_str(), PERMITS).expect("permits > 0");
                self.bounded("acquire", sem.acquire_timeout(wait))
                    .await
                    .and_then(Result::ok)
                    .map(|g| (HoldKind::Permit, name, Guard::Permit(g)))
            }
            Op::Campaign => {
                let name = election_name(&prefix);
                let e = Election::new(session, name.as_str());
                let proposal = format!("client-{}", self.id);
                self.bounded("campaign", e.campaign_timeout(proposal, wait))
                    .await
                    .and_then(Result::ok)
                    .map(|g| (HoldKind::Leader, name, Guard::Leader(g)))
            }
        };
        if let Some((kind, name, guard)) = guard {
            self.hold(session, kind, &name, guard, None).await;
        }
    }

    /// Records the hold, watches for its loss, makes a fenced write (exclusive holds),
    /// holds a while (proclaiming, for a leader), then records the end and lets go, or,
    /// sometimes, drops the guard (released in the background). With `pause`, the client
    /// is paused while holding (see [`Self::paused_hold`]).
    async fn hold(
        &mut self,
        session: &Session,
        kind: HoldKind,
        name: &str,
        guard: Guard,
        pause: Option<Duration>,
    ) {
        let ledger = self.ctx.ledger.clone();
        let token = guard.hold().fencing_token();
        let id = ledger.acquired(self.id, session.lease(), kind, name, token);
        let lost = guard.hold().lost();
        let monitor = tokio::spawn({
            let ledger = ledger.clone();
            async move {
                lost.await;
                ledger.ended(id, true);
            }
        });
        if let Some(pause) = pause {
            // A process stopped (SIGSTOP, a GC pause) while holding: it does nothing and
            // nothing of it reaches the store, until it resumes and carries on with its
            // old token.
            // The slot is claimed for the whole pause, so that no other fault on this
            // client heals its partition early.
            while !self.slot.claim() {
                tokio::time::sleep(self.ctx.scales.ttl / 20).await;
            }
            let (faults, _) = self.slot.handles();
            faults.partition(Partition::Hang);
            self.ctx.ledger.event(format!(
                "client-{} paused for {pause:?} holding {} {name} token {token}",
                self.id,
                kind.label()
            ));
            tokio::time::sleep(pause).await;
            faults.heal();
            self.slot.unclaim();
        }
        if kind.exclusive() {
            self.fenced_write(id, name, &guard, pause.is_some()).await;
        }
        let max_hold = self.ctx.scales.max_hold.as_millis() as u64;
        let dwell = Duration::from_millis(self.rng.random_range(0..=max_hold));
        if let Guard::Leader(l) = &guard {
            for _ in 0..self.rng.random_range(0..3) {
                let value = format!("client-{} at {:?}", self.id, Instant::now());
                let _ = self.bounded("proclaim", l.proclaim(value)).await;
                tokio::time::sleep(dwell / 3).await;
            }
        } else {
            tokio::time::sleep(dwell).await;
        }
        ledger.ended(id, false);
        monitor.abort();
        if self.rng.random_bool(0.1) {
            self.count("drop guard", "ok".into());
            drop(guard);
        } else {
            let kind = guard.release_kind();
            let _ = self.bounded(kind, guard.let_go()).await;
        }
    }

    /// Writes the hold's token to its fence with a txn guarded by the hold's `is_owner()`.
    async fn fenced_write(&self, id: u64, name: &str, guard: &Guard, stale: bool) {
        let fence = fence_of(name);
        let token = guard.hold().fencing_token();
        let put = TxnOp::Put(Put {
            key: fence.clone().into_bytes(),
            value: token.to_string().into_bytes(),
            lease: NO_LEASE,
            prev_kv: true,
        });
        let write = TxnRequest::new()
            .when([guard.hold().is_owner()])
            .and_then([put]);
        let before = self.ctx.ledger.fence_snapshot(self.id, name, &fence);
        let label = if stale {
            "fenced write (paused)"
        } else {
            "fenced write"
        };
        match self.bounded(label, self.client.backend.txn(write)).await {
            Some(Ok(resp)) if resp.succeeded => {
                let previous = match resp.responses.first() {
                    Some(TxnOpResponse::Put { prev_kv }) => prev_kv
                        .as_ref()
                        .and_then(|kv| kv.value_str().parse::<Revision>().ok()),
                    _ => None,
                };
                self.ctx
                    .ledger
                    .fenced_accepted(id, self.id, name, &fence, token, previous, before);
            }
            Some(Ok(_)) => self
                .ctx
                .ledger
                .fenced_refused(self.id, &fence, token, stale),
            _ => {}
        }
    }

    /// The paused client: takes the first lock, then pauses for two to three TTLs with its
    /// traffic cut off (its session is lost meanwhile and another client may take the
    /// lock), then resumes and makes a fenced write with its old token, which the store
    /// must refuse if anyone else acquired meanwhile.
    async fn paused_hold(&mut self, session: &Session) {
        let name = lock_name(&self.ctx.prefix, 0);
        let m = Mutex::new(session, name.as_str());
        let wait = self.ctx.scales.wait_limit;
        let Some(Ok(g)) = self.bounded("lock", m.lock_timeout(wait)).await else {
            return;
        };
        let ttl = self.ctx.scales.ttl.as_millis() as u64;
        let pause = Duration::from_millis(self.rng.random_range(ttl * 2..=ttl * 3));
        self.count("paused hold", "ok".into());
        self.hold(session, HoldKind::Lock, &name, Guard::Mutex(g), Some(pause))
            .await;
    }

    /// After the faults: the first lock, within the hung bound.
    async fn final_round(&mut self) {
        let hung = self.ctx.scales.hung;
        let deadline = Instant::now() + hung;
        let name = lock_name(&self.ctx.prefix, 0);
        loop {
            let Some(session) = self.session().await else {
                if Instant::now() >= deadline {
                    self.ctx.ledger.violation(format!(
                        "client-{}: no session within {hung:?} after the faults ended",
                        self.id
                    ));
                    return;
                }
                continue;
            };
            let m = Mutex::new(&session, name.as_str());
            let left = deadline.saturating_duration_since(Instant::now());
            match self.bounded("final lock", m.lock_timeout(left)).await {
                Some(Ok(g)) => {
                    self.hold(&session, HoldKind::Lock, &name, Guard::Mutex(g), None)
                        .await;
                    return;
                }
                Some(Err(Error::SessionExpired { .. })) if Instant::now() < deadline => continue,
                Some(Err(e)) => {
                    self.ctx.ledger.violation(format!(
                        "client-{}: not served the lock after the faults ended: {e}",
                        self.id
                    ));
                    return;
                }
                None => return,
            }
        }
    }
}
