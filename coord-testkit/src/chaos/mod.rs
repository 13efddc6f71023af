//! Chaos runs: clients doing random lock, try_lock, read/write lock, semaphore and
//! election operations against one store while random faults are injected, every
//! acquisition, release, loss and fenced write recorded, and the history checked.
//!
//! [`run`] drives [`CLIENTS`](config::CLIENTS) clients for [`Config::duration`], each with a
//! faulty client and a session of the backend's short TTL, looping over one operation at a
//! time on a few names: `lock` (hold, fenced write, unlock or drop), `try_lock`, `read`,
//! `write` (fenced), a semaphore of [`PERMITS`] permits, and `campaign` (fenced write,
//! `proclaim`s, `resign`). Meanwhile an injector picks faults at random: on one client
//! (`fail_next`, latency, a partition that fails or hangs, a txn held back and applied late,
//! watches broken), on its proxy when the target routes clients through one (blackhole,
//! latency), on the store (a lease ended by force), a paused client (its worker stops while
//! holding a lock and its traffic is cut off; on resume it makes a fenced write with its
//! old token), and what the [`Target`] offers on the servers (kill -9 and restart, pause,
//! an isolated or killed cluster member).
//!
//! Checked: the [`History`](crate::History) checker (no overlapping holders, readers never
//! with a writer, at most [`PERMITS`] permit holders, one leader at a time, tokens only
//! rise); no fenced write accepted from a stale holder (store-side: the fence never goes
//! back to a lower token, and no write is accepted after another client acquired a higher
//! token); every operation ends, with a result or a typed [`coord_core::Error`], within its
//! bound (its own time limit plus the longest fault plus a few TTLs), else it is "hung";
//! [`coord_core::Error::Contract`] is a violation; and after the faults end every client
//! gets the lock once more.
//!
//! When a session is lost the client starts a new one, and when its client keeps failing
//! with an error retrying cannot fix (data lost on a Redis restart without persistence), a
//! new client. The [`Report`] lists operations by kind and outcome, faults by kind, holds
//! and violations, with the last events and the replay line on violation.

mod config;
mod faults;
mod ledger;
mod reconnect;
mod report;
mod workload;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use coord_core::{CoordinationBackend, LeaseId};

pub use config::{CLIENTS, Config, DEFAULT_SECONDS};
pub use reconnect::{RECONNECT_BOUND, connect_through_faults};
pub use report::Report;

use crate::FaultProxyHandle;
use crate::conformance::{ClientFaults, TestBackend, unique};

/// The permits of the semaphore the clients share.
pub const PERMITS: usize = 3;

/// A fault on the servers behind a [`Target`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServerFault {
    /// kill -9 the server, then restart it on the same data.
    KillRestart,
    /// SIGSTOP the server (or one cluster node), then SIGCONT it.
    Pause,
    /// Cut one cluster member off from the others, then let it rejoin.
    IsolateMember,
    /// kill -9 one cluster member, then restart it.
    KillMember,
}

impl ServerFault {
    /// The fault's name in the report.
    pub fn label(self) -> &'static str {
        match self {
            ServerFault::KillRestart => "server kill -9 + restart",
            ServerFault::Pause => "server paused",
            ServerFault::IsolateMember => "member isolated",
            ServerFault::KillMember => "member kill -9 + restart",
        }
    }
}

/// A client for one chaos client: a backend client with its own fault controls, and the
/// proxy between it and the server when there is one.
pub struct ChaosClient {
    /// The backend client.
    pub backend: Arc<dyn CoordinationBackend>,
    /// Its fault controls.
    pub faults: Arc<dyn ClientFaults>,
    /// The fault proxy its connections go through, if any.
    pub proxy: Option<FaultProxyHandle>,
}

/// What a chaos run runs against: the backend under test, and the server faults its
/// fixture allows.
#[async_trait]
pub trait Target: Send + Sync {
    /// The backend: its clock, short TTL, client faults and forced lease expiry.
    fn backend(&self) -> &dyn TestBackend;

    /// A new client for a chaos client. The default is the backend's
    /// [`faulty_client`](crate::conformance::Faults::faulty_client), without a proxy.
    ///
    /// # Panics
    ///
    /// The default panics when the backend has no fault injection.
    async fn chaos_client(&self) -> ChaosClient {
        let faults = self
            .backend()
            .faults()
            .expect("a chaos run needs a backend with fault injection");
        let (backend, faults) = faults.faulty_client().await;
        ChaosClient {
            backend,
            faults,
            proxy: None,
        }
    }

    /// The server faults [`inject`](Self::inject) can do; none by default.
    fn server_faults(&self) -> Vec<ServerFault> {
        Vec::new()
    }

    /// Does `fault` (on the member `pick` modulo the cluster size, for member faults),
    /// keeps it for `hold`, undoes it (restart, resume, rejoin), and returns what it did.
    ///
    /// # Errors
    ///
    /// What failed, when the fixture could not do or undo it.
    async fn inject(
        &self,
        fault: ServerFault,
        pick: usize,
        hold: Duration,
    ) -> Result<String, String> {
        let _ = (pick, hold);
        Err(format!("{} is not supported by this target", fault.label()))
    }
}

/// A [`Target`] with client faults only (no server faults): what an in-process backend,
/// or a server shared with other tests, offers.
pub struct ClientFaultsOnly<'a>(pub &'a dyn TestBackend);

impl Target for ClientFaultsOnly<'_> {
    fn backend(&self) -> &dyn TestBackend {
        self.0
    }
}

/// What the runner and the injector share about one client.
pub(crate) struct Slot {
    /// The client's fault controls and proxy, replaced with the client.
    handles: std::sync::Mutex<(Arc<dyn ClientFaults>, Option<FaultProxyHandle>)>,
    /// The lease of its current session, if it has one.
    lease: std::sync::Mutex<Option<LeaseId>>,
    /// Set by the injector: the client's worker pauses at its next operation.
    pause: AtomicBool,
    /// Set while a client fault is on it, so that faults on one client do not overlap.
    busy: AtomicBool,
}

impl Slot {
    fn new(client: &ChaosClient) -> Slot {
        Slot {
            handles: std::sync::Mutex::new((client.faults.clone(), client.proxy.clone())),
            lease: std::sync::Mutex::new(None),
            pause: AtomicBool::new(false),
            busy: AtomicBool::new(false),
        }
    }

    pub(crate) fn set_client(&self, client: &ChaosClient) {
        *self.handles.lock().unwrap_or_else(|e| e.into_inner()) =
            (client.faults.clone(), client.proxy.clone());
    }

    pub(crate) fn handles(&self) -> (Arc<dyn ClientFaults>, Option<FaultProxyHandle>) {
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_lease(&self, lease: Option<LeaseId>) {
        *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = lease;
    }

    pub(crate) fn lease(&self) -> Option<LeaseId> {
        *self.lease.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn request_pause(&self) {
        self.pause.store(true, Ordering::SeqCst);
    }

    pub(crate) fn take_pause(&self) -> bool {
        self.pause.swap(false, Ordering::SeqCst)
    }

    /// Marks the slot busy; false if it already was.
    pub(crate) fn claim(&self) -> bool {
        !self.busy.swap(true, Ordering::SeqCst)
    }

    pub(crate) fn unclaim(&self) {
        self.busy.store(false, Ordering::SeqCst);
    }
}

/// Runs a chaos run on `target` with `config`, prints its [`Report`] to the real stderr
/// (visible even when the test harness captures output), and returns it. It does not
/// panic on violations: call [`Report::assert_clean`].
pub async fn run(target: &dyn Target, config: Config) -> Report {
    let backend = target.backend();
    let scales = config::Scales::of(backend);
    let prefix = unique("chaos");
    let ledger = Arc::new(ledger::Ledger::new());
    ledger
        .history()
        .semaphore(workload::semaphore_name(&prefix), PERMITS);
    let started = tokio::time::Instant::now();
    let end = started + config.duration;
    let mut clients = Vec::new();
    let mut slots = Vec::new();
    for _ in 0..config.clients {
        let c = target.chaos_client().await;
        slots.push(Arc::new(Slot::new(&c)));
        clients.push(c);
    }
    let ctx = workload::Ctx {
        target,
        config: &config,
        scales,
        prefix,
        ledger: ledger.clone(),
        end,
        stats: Arc::default(),
        faults_over: tokio_util::sync::CancellationToken::new(),
    };
    let workers = clients
        .into_iter()
        .enumerate()
        .map(|(i, c)| workload::worker(&ctx, i, c, slots[i].clone()));
    let injector = faults::inject(&ctx, &slots);
    let (_, fault_counts) = tokio::join!(futures::future::join_all(workers), injector);
    let elapsed = started.elapsed();
    let report = Report::new(&config, elapsed, &ctx, fault_counts);
    report.print();
    report
}
