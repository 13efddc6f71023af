//! An in-process [`CoordinationBackend`] with etcd's exact semantics, leases on tokio time,
//! and fault hooks for tests.
//!
//! [`MemoryBackend`] is a complete implementation of the contract, not a mock:
//!
//! - **Revisions** start at 1 (as in an empty etcd) and rise by exactly one for every txn,
//!   lease expiry or revoke that changes something. Keys carry `create_revision`,
//!   `mod_revision`, `version` and `lease` exactly as etcd reports them.
//! - **Txn** checks what etcd's API layer checks (valid keys and ranges, at most
//!   [`MAX_TXN_OPS`](coord_core::MAX_TXN_OPS) operations per branch, no key put twice or put and deleted in one
//!   branch), evaluates the compares, rejects the whole txn with
//!   [`Error::LeaseNotFound`] if a put of the chosen branch
//!   names a lease that does not exist, then applies the branch in order.
//! - **Range** applies the key range, the create-revision filters, the sort and the limit,
//!   in that order; `count` is taken before the filters.
//! - **Leases** run on [`tokio::time`], so a paused clock (`tokio::time::pause`,
//!   `#[tokio::test(start_paused = true)]`) drives expiry deterministically. TTLs are
//!   granted as etcd grants them by default: rounded up to whole seconds and at least 2 s
//!   ([`LEASE_GRANULARITY`], [`MIN_LEASE_TTL`]); [`LeaseRules::fine`]
//!   (`memory://?min_ttl=1ms`) opts out, for tests that want short leases.
//! - **Request size**: a txn whose keys and values exceed etcd's default
//!   `--max-request-bytes` ([`MAX_REQUEST_BYTES`](coord_core::MAX_REQUEST_BYTES), 1.5 MiB)
//!   is refused with [`Error::InvalidArgument`], as etcd refuses it.
//!   A reaper task, spawned on the first grant, expires leases on time; every call also
//!   expires due leases first, so results are exact even if the reaper lags.
//! - **Watch** replays history from the start revision and goes live under one lock, so no
//!   event is missed. History is kept for the last [`DEFAULT_HISTORY_REVISIONS`] revisions
//!   by default, so memory stays flat however long a test loop runs; a watch that starts
//!   below what is kept gets [`Error::Compacted`], as after an explicit
//!   [`compact`](CoordinationBackend::compact). A live watcher never depends on history:
//!   each revision is pushed to it as it is committed. The bound is set per store
//!   ([`MemoryOptions::history_retention`], `memory://NAME?history=N|all`,
//!   [`MemoryBackend::set_history_retention`]).
//!
//! # Clients and faults
//!
//! A [`MemoryBackend`] is a handle to one *client* of one *store*. [`Clone`] gives another
//! handle to the same client; [`MemoryBackend::new_client`] gives an independent client of
//! the same store. Faults are per client, so one client can be cut off while the others
//! carry on: [`fail_next`](MemoryBackend::fail_next),
//! [`set_latency`](MemoryBackend::set_latency), [`partition`](MemoryBackend::partition) and
//! [`heal`](MemoryBackend::heal). [`expire_lease_now`](MemoryBackend::expire_lease_now) acts
//! on the store, as if a lease's TTL ran out.
//!
//! # Testing your application
//!
//! Give the code under test a [`MemoryBackend`] client instead of a server connection (it
//! takes an `Arc<dyn CoordinationBackend>` either way), and run the test on a paused tokio
//! clock (`#[tokio::test(start_paused = true)]`): lease TTLs, keep-alives, your own sleeps
//! and timeouts then cost no real time, and happen in the same order on every run. One
//! client per simulated process lets you hurt one of them:
//!
//! | hook | simulates |
//! |---|---|
//! | [`expire_lease_now`](MemoryBackend::expire_lease_now) | a process that died, or stalled past its TTL: its locks and candidacies vanish |
//! | [`fail_next(n)`](MemoryBackend::fail_next) | `n` failed requests ([`Error::Unavailable`]): test your retries |
//! | [`set_latency`](MemoryBackend::set_latency) | a slow network (on tokio time, so free on a paused clock) |
//! | [`partition`](MemoryBackend::partition) / [`heal`](MemoryBackend::heal) | a client cut off: its keep-alives stop getting through |
//! | [`delay_next`](MemoryBackend::delay_next) / [`apply_late`](MemoryBackend::apply_late) | a write whose answer was lost lands later, after writes sent after it (a slow etcd follower) |
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use coord_core::{BackendExt, Error, Mutex, Session};
//! use coord_core::faults::Partition;
//! use coord_memory::MemoryBackend;
//! use tokio::time::{Instant, sleep};
//!
//! /// The application: one step a minute under the lock; it must stop the moment the lock
//! /// is lost. Returns the number of steps done.
//! async fn nightly_job(session: &Session, steps: u32) -> coord_core::Result<u32> {
//!     let guard = Mutex::new(session, "jobs/nightly").lock().await?;
//!     let lost = guard.lost();
//!     tokio::pin!(lost);
//!     for done in 0..steps {
//!         tokio::select! {
//!             _ = &mut lost => return Ok(done),
//!             _ = sleep(Duration::from_secs(60)) => {}
//!         }
//!     }
//!     guard.unlock().await?;
//!     Ok(steps)
//! }
//!
//! async fn session_on(client: &MemoryBackend) -> coord_core::Result<Session> {
//!     let backend = Arc::new(client.clone());
//!     Session::builder(backend).ttl(Duration::from_secs(10)).start().await
//! }
//!
//! // In a test: #[tokio::test(start_paused = true)]
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> coord_core::Result<()> {
//! let store = MemoryBackend::new();
//! let (a, b) = (store.new_client(), store.new_client());
//!
//! // An hour of work with a 10 s TTL, in no real time: the keep-alive held the lock.
//! let session = session_on(&a).await?;
//! assert_eq!(nightly_job(&session, 60).await?, 60);
//!
//! // The process stalls past its TTL after two and a half steps: the job stops at once.
//! let job = tokio::spawn({
//!     let session = session.clone();
//!     async move { nightly_job(&session, 60).await }
//! });
//! sleep(Duration::from_secs(150)).await;
//! store.expire_lease_now(session.lease())?;
//! assert_eq!(job.await.unwrap()?, 2);
//! // The session itself finds out at its next keep-alive, within a third of the TTL.
//! let noticed = tokio::time::timeout(Duration::from_secs(4), session.lost()).await;
//! assert!(noticed.is_ok() && session.is_lost());
//!
//! // Two failed requests, then the backend answers again.
//! let session = session_on(&a).await?;
//! a.fail_next(2);
//! let mut failures = 0;
//! let guard = loop {
//!     match Mutex::new(&session, "jobs/nightly").try_lock().await {
//!         Ok(guard) => break guard,
//!         Err(e @ Error::Unavailable { .. }) => {
//!             assert!(e.is_retryable());
//!             failures += 1;
//!         }
//!         Err(e) => return Err(e),
//!     }
//! };
//! // The recipe's own background clean-up of a failed attempt (a write whose answer was
//! // lost may still land) goes through the same client and may meet a failure too.
//! assert!((1..=2).contains(&failures));
//!
//! // a is cut off while holding the lock: its session gives up (lost fires) before the
//! // server lets the lease expire, and then b gets the lock.
//! a.partition(Partition::Hang);
//! let started = Instant::now();
//! guard.lost().await;
//! assert!(b.get(guard.key().as_bytes()).await?.is_some(), "lost fired first");
//! let other = session_on(&b).await?;
//! let taken = Mutex::new(&other, "jobs/nightly").lock().await?;
//! assert!(started.elapsed() <= Duration::from_secs(10));
//! assert!(taken.fencing_token() > guard.fencing_token());
//! a.heal();
//!
//! // A slow network: each of b's calls now takes 200 ms of (paused) time.
//! b.set_latency(Duration::from_millis(200));
//! let started = Instant::now();
//! taken.unlock().await?;
//! assert!(started.elapsed() >= Duration::from_millis(200));
//! # Ok(())
//! # }
//! ```
//!
//! # Example
//!
//! ```
//! use coord_core::{BackendExt, CoordinationBackend, NO_LEASE, WatchRequest};
//! use coord_memory::MemoryBackend;
//! use futures::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> coord_core::Result<()> {
//! let backend = MemoryBackend::new();
//! let mut watch = backend.watch(WatchRequest::prefix("jobs/")).await?;
//! let rev = backend.put(b"jobs/1", b"build", NO_LEASE).await?;
//! assert_eq!(rev, 2); // an empty store is at revision 1
//! let response = watch.next().await.unwrap()?;
//! assert_eq!(response.revision, rev);
//! assert_eq!(response.events[0].kv.value, b"build");
//! # Ok(())
//! # }
//! ```

mod lease;
mod shared;
mod store;
mod watch;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use coord_core::faults::{FaultControls, FaultyBackend, LateApply, Partition};
use coord_core::{
    BackendInfo, CoordinationBackend, Error, LeaseGrant, LeaseId, LeaseStatus, RangeRequest,
    RangeResponse, Result, Revision, TxnRequest, TxnResponse, WatchRequest, WatchStream,
};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use lease::{LEASE_GRANULARITY, LeaseRules, MAX_LEASE_TTL, MIN_LEASE_TTL};
pub use shared::{DEFAULT_STORE, MemoryOptions};
pub use store::DEFAULT_HISTORY_REVISIONS;

use store::State;

/// The store shared by every client.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Wakes the reaper: on a new lease, and when the store is dropped.
    reaper_wake: Arc<Notify>,
    reaper: Mutex<Option<JoinHandle<()>>>,
    next_client: AtomicU64,
}

impl Shared {
    /// Locks the state. The lock is never held across an await, so poisoning can only come
    /// from a panic in this crate's own code; the state is still consistent then (every
    /// mutation completes before anything can panic), so the poison is ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the reaper on the current runtime unless it is running.
    fn ensure_reaper(self: &Arc<Self>) {
        let mut reaper = self.reaper.lock().unwrap_or_else(PoisonError::into_inner);
        if reaper.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            *reaper = Some(runtime.spawn(lease::reaper(
                Arc::downgrade(self),
                Arc::clone(&self.reaper_wake),
            )));
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.reaper_wake.notify_one();
        let reaper = self
            .reaper
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = reaper.take() {
            task.abort();
        }
    }
}

/// An in-process coordination store with etcd's semantics; see the [crate docs](crate).
///
/// Each value is a handle to one client of one store. [`Clone`] shares the client (and its
/// fault state); [`MemoryBackend::new_client`] makes an independent client of the same
/// store. The store lives as long as any handle to it; open watch streams hold only a weak
/// reference and end with [`Error::Unavailable`] once every handle is dropped.
///
/// A client is [`coord_core::faults::FaultyBackend`] around the store, so its fault hooks
/// are exactly those every backend's conformance tests use.
#[derive(Clone)]
pub struct MemoryBackend {
    store: Arc<Store>,
    id: u64,
    client: FaultyBackend,
    faults: Arc<FaultControls>,
}

/// A fault-free client of the store: what every [`MemoryBackend`] client wraps.
struct Store {
    shared: Arc<Shared>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("client", &self.id)
            .finish_non_exhaustive()
    }
}

impl MemoryBackend {
    /// A new, empty store (at revision 1) and a first client of it.
    ///
    /// Works outside a tokio runtime; the lease reaper is started by the first
    /// [`lease_grant`](CoordinationBackend::lease_grant).
    pub fn new() -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            reaper_wake: Arc::new(Notify::new()),
            reaper: Mutex::new(None),
            next_client: AtomicU64::new(1),
        });
        Self::client_of(Arc::new(Store { shared }), 0)
    }

    fn client_of(store: Arc<Store>, id: u64) -> Self {
        let (client, faults) = FaultyBackend::new(store.clone());
        MemoryBackend {
            store,
            id,
            client,
            faults,
        }
    }

    /// Another client of the same store, with its own fault state (no faults to begin
    /// with). Use one client per simulated process to test partitions.
    pub fn new_client(&self) -> Self {
        let id = self
            .store
            .shared
            .next_client
            .fetch_add(1, Ordering::Relaxed);
        Self::client_of(self.store.clone(), id)
    }

    /// A number identifying this client within its store (0 for the one from [`new`](Self::new)).
    pub fn client_id(&self) -> u64 {
        self.id
    }

    /// Whether `other` is a handle to the same store.
    pub fn same_store(&self, other: &MemoryBackend) -> bool {
        Arc::ptr_eq(&self.store, &other.store)
    }

    fn state(&self) -> &Shared {
        &self.store.shared
    }

    // ---- fault hooks ------------------------------------------------------------------

    /// Expires a lease now, as if its TTL ran out: its keys are deleted in one new revision
    /// (watchers see a DELETE event for each) and later calls on it give
    /// [`Error::LeaseNotFound`]. Acts on the store, whatever this client's faults.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`] when the lease does not exist.
    pub fn expire_lease_now(&self, lease: LeaseId) -> Result<()> {
        let mut state = self.state().lock();
        state.expire_due(Instant::now());
        if state.remove_lease(lease) {
            tracing::debug!(
                lease = format_args!("{lease:x}"),
                "memory backend: lease expired by hook"
            );
            Ok(())
        } else {
            Err(Error::LeaseNotFound { lease: Some(lease) })
        }
    }

    /// This client's fault controls: [`fail_next`](FaultControls::fail_next),
    /// [`set_latency`](FaultControls::set_latency), [`partition`](FaultControls::partition)
    /// and [`heal`](FaultControls::heal), [`delay_next`](FaultControls::delay_next) and
    /// [`apply_late`](FaultControls::apply_late) (late apply), and
    /// [`break_watches`](FaultControls::break_watches). They act on this client (and its
    /// clones) alone, so one client can be cut off while the others carry on.
    pub fn faults(&self) -> &Arc<FaultControls> {
        &self.faults
    }

    /// Shorthand for [`FaultControls::fail_next`].
    pub fn fail_next(&self, n: u64) {
        self.faults.fail_next(n);
    }

    /// Shorthand for [`FaultControls::set_latency`].
    pub fn set_latency(&self, latency: Duration) {
        self.faults.set_latency(latency);
    }

    /// Shorthand for [`FaultControls::partition`]: other clients of the store are not
    /// affected (so this client's leases expire unless someone else keeps them alive).
    pub fn partition(&self, mode: Partition) {
        tracing::debug!(client = self.id, ?mode, "memory backend: partition");
        self.faults.partition(mode);
    }

    /// Shorthand for [`FaultControls::heal`].
    pub fn heal(&self) {
        tracing::debug!(client = self.id, "memory backend: heal");
        self.faults.heal();
    }

    /// This client's current partition, if any.
    pub fn partitioned(&self) -> Option<Partition> {
        self.faults.partitioned()
    }

    /// Shorthand for [`FaultControls::delay_next`]: a recipe must stay safe when a write it
    /// gave up on lands later, after writes sent after it.
    pub fn delay_next(&self, n: u64, mode: LateApply) {
        self.faults.delay_next(n, mode);
    }

    /// Shorthand for [`FaultControls::apply_late`].
    pub async fn apply_late(&self) -> usize {
        self.faults.apply_late().await
    }

    /// Removes every fault of this client: pending failures, latency, partition and txns
    /// left to hold back (txns already held stay held until [`apply_late`](Self::apply_late)).
    pub fn clear_faults(&self) {
        self.fail_next(0);
        self.delay_next(0, LateApply::Fail);
        self.set_latency(Duration::ZERO);
        self.heal();
    }

    // ---- inspection -------------------------------------------------------------------

    /// The store's current revision (after expiring due leases), without faults or latency.
    pub fn revision(&self) -> Revision {
        let mut state = self.state().lock();
        state.expire_due(Instant::now());
        state.revision
    }

    /// The oldest revision a watch can start from: 0 until the first compaction (explicit,
    /// or automatic once the store has more revisions than its history bound).
    pub fn compact_revision(&self) -> Revision {
        self.state().lock().compact_revision
    }

    /// The number of live keys (after expiring due leases).
    pub fn key_count(&self) -> usize {
        let mut state = self.state().lock();
        state.expire_due(Instant::now());
        state.keys.len()
    }

    /// The number of live leases (after expiring due leases).
    pub fn lease_count(&self) -> usize {
        let mut state = self.state().lock();
        state.expire_due(Instant::now());
        state.leases.len()
    }

    /// The number of registered watchers of the store (all clients). A dropped watch stream
    /// is unregistered at once.
    pub fn watcher_count(&self) -> usize {
        self.state().lock().watchers.len()
    }

    /// Bounds the history kept for watches to the last `revisions` revisions (`Some(0)`
    /// counts as 1), compacting older ones automatically as new revisions are written;
    /// How the store rounds the TTLs it grants, for every client (see [`LeaseRules`]):
    /// etcd's by default. Leases granted before keep their TTL.
    pub fn set_lease_rules(&self, rules: LeaseRules) {
        self.state().lock().lease_rules = rules;
    }

    /// The store's [`LeaseRules`].
    pub fn lease_rules(&self) -> LeaseRules {
        self.state().lock().lease_rules
    }

    /// `None` keeps everything since the last explicit compaction, as etcd without
    /// auto-compaction does. The default is [`DEFAULT_HISTORY_REVISIONS`]. Acts on the
    /// store (every client); a smaller bound takes effect at the next write.
    pub fn set_history_retention(&self, revisions: Option<u64>) {
        self.state().lock().retention = revisions;
    }

    /// The store's history bound in revisions (`None`: unbounded); see
    /// [`set_history_retention`](Self::set_history_retention).
    pub fn history_retention(&self) -> Option<u64> {
        self.state().lock().retention
    }

    /// The number of revisions whose events the store keeps for watches that start in the
    /// past (at most the [history bound](Self::history_retention); revisions that changed
    /// nothing are not recorded).
    pub fn history_len(&self) -> usize {
        self.state().lock().history.len()
    }

    /// The heap bytes the history keeps alive (an upper estimate).
    #[cfg(test)]
    pub(crate) fn history_bytes(&self) -> usize {
        self.state().lock().history_bytes()
    }
}

impl Store {
    /// Runs `op` under the store lock with the current tokio time.
    fn run<T>(&self, op: impl FnOnce(&mut State, Instant) -> Result<T>) -> Result<T> {
        let mut state = self.shared.lock();
        op(&mut state, Instant::now())
    }

    // Every call is synchronous: the store answers under its lock, without awaiting.

    fn lease_grant_now(&self, ttl: Duration) -> Result<LeaseGrant> {
        let rules = self.shared.lock().lease_rules;
        let ttl = rules.granted_ttl(ttl)?;
        self.shared.ensure_reaper();
        let grant = self.run(|state, now| Ok(state.lease_grant(ttl, now)))?;
        // The new lease may expire before the one the reaper sleeps for.
        self.shared.reaper_wake.notify_one();
        Ok(grant)
    }
    fn lease_keep_alive_now(&self, lease: LeaseId) -> Result<Duration> {
        self.run(|state, now| state.lease_keep_alive(lease, now))
    }
    fn lease_revoke_now(&self, lease: LeaseId) -> Result<()> {
        self.run(|state, now| state.lease_revoke(lease, now))
    }
    fn lease_time_to_live_now(&self, lease: LeaseId) -> Result<LeaseStatus> {
        self.run(|state, now| state.lease_time_to_live(lease, now))
    }
    fn range_now(&self, request: &RangeRequest) -> Result<RangeResponse> {
        self.run(|state, now| state.range(request, now))
    }
    fn txn_now(&self, request: TxnRequest) -> Result<TxnResponse> {
        // etcd refuses a request over its `--max-request-bytes`; so does the store.
        coord_core::check_request_size(&request, coord_core::MAX_REQUEST_BYTES)?;
        self.run(|state, now| state.txn(request, now))
    }
    fn current_revision_now(&self) -> Result<Revision> {
        self.run(|state, now| {
            state.expire_due(now);
            Ok(state.revision)
        })
    }
    fn compact_now(&self, revision: Revision) -> Result<()> {
        self.run(|state, now| state.compact(revision, now))
    }
}

#[async_trait]
impl CoordinationBackend for Store {
    fn info(&self) -> BackendInfo {
        let rules = self.shared.lock().lease_rules;
        BackendInfo::new("memory", rules.granularity, rules.min_ttl)
    }
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseGrant> {
        self.lease_grant_now(ttl)
    }
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        self.lease_keep_alive_now(lease)
    }
    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.lease_revoke_now(lease)
    }
    async fn lease_time_to_live(&self, lease: LeaseId) -> Result<LeaseStatus> {
        self.lease_time_to_live_now(lease)
    }
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        self.range_now(&request)
    }
    async fn txn(&self, request: TxnRequest) -> Result<TxnResponse> {
        self.txn_now(request)
    }
    async fn watch(&self, request: WatchRequest) -> Result<WatchStream> {
        let store = Arc::downgrade(&self.shared);
        self.run(move |state, now| {
            state.expire_due(now);
            let registration = state.watch(&request)?;
            Ok(watch::stream(registration, store))
        })
    }
    async fn current_revision(&self) -> Result<Revision> {
        self.current_revision_now()
    }
    async fn compact(&self, revision: Revision) -> Result<()> {
        self.compact_now(revision)
    }
}

/// Every call goes through this client's faults (a request half with latency, partition and
/// injected failures, the store under its lock at the current tokio time, a response half).
/// While no fault is armed ([`FaultControls::is_clear`]) a call goes straight to the store:
/// the store answers without awaiting, so nothing can happen between the two halves, and
/// the wrapper's work (two boxed futures and its checks) would change nothing.
#[async_trait]
impl CoordinationBackend for MemoryBackend {
    fn info(&self) -> BackendInfo {
        self.store.info()
    }

    /// Grants a lease of `ttl` rounded by the store's [`LeaseRules`]: by default as etcd
    /// does, up to whole seconds and at least [`MIN_LEASE_TTL`] (2 s).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero TTL or one above [`MAX_LEASE_TTL`], naming the
    /// TTL asked and the maximum; nothing is granted.
    ///
    /// # Cancel safety
    /// Not cancel safe: a lease granted by a dropped call is never reported and expires
    /// after its TTL.
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseGrant> {
        if self.faults.is_clear() {
            return self.store.lease_grant_now(ttl);
        }
        self.client.lease_grant(ttl).await
    }

    /// Resets the lease's deadline to now plus its TTL and returns the TTL.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`] once the lease has expired or been revoked.
    ///
    /// # Cancel safety
    /// Cancel safe: a refresh is idempotent.
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        if self.faults.is_clear() {
            return self.store.lease_keep_alive_now(lease);
        }
        self.client.lease_keep_alive(lease).await
    }

    /// Revokes the lease, deleting its keys in one revision.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`] when it does not exist.
    ///
    /// # Cancel safety
    /// Cancel safe: a repeat gives `LeaseNotFound`.
    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        if self.faults.is_clear() {
            return self.store.lease_revoke_now(lease);
        }
        self.client.lease_revoke(lease).await
    }

    /// The lease's granted TTL and the time left before it expires.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`] when it does not exist.
    ///
    /// # Cancel safety
    /// Cancel safe: read only.
    async fn lease_time_to_live(&self, lease: LeaseId) -> Result<LeaseStatus> {
        if self.faults.is_clear() {
            return self.store.lease_time_to_live_now(lease);
        }
        self.client.lease_time_to_live(lease).await
    }

    /// Reads keys at the current revision.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a request that fails [`RangeRequest::validate`].
    ///
    /// # Cancel safety
    /// Cancel safe: read only.
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        if self.faults.is_clear() {
            return self.store.range_now(&request);
        }
        self.client.range(request).await
    }

    /// Runs a transaction atomically.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a request that fails [`TxnRequest::validate`], has
    /// more than [`MAX_TXN_OPS`](coord_core::MAX_TXN_OPS) compares or operations in a branch, or puts a key twice (or
    /// puts a key it also deletes) in one branch; [`Error::LeaseNotFound`] when a put of the
    /// chosen branch names a lease that does not exist. In every error case nothing is
    /// applied.
    ///
    /// # Cancel safety
    /// Atomic; a call dropped during its latency may or may not have been applied.
    async fn txn(&self, request: TxnRequest) -> Result<TxnResponse> {
        if self.faults.is_clear() {
            return self.store.txn_now(request);
        }
        self.client.txn(request).await
    }

    /// Establishes a watch. [`WatchStart::Revision(0)`](coord_core::WatchStart::Revision)
    /// means "now", as in etcd.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty key, an inverted range or a negative start
    /// revision. A compacted start revision is reported on the stream.
    ///
    /// # Cancel safety
    /// Cancel safe: a watch dropped while being established is unregistered.
    async fn watch(&self, request: WatchRequest) -> Result<WatchStream> {
        self.client.watch(request).await
    }

    /// The store's current revision.
    ///
    /// # Cancel safety
    /// Cancel safe: read only.
    async fn current_revision(&self) -> Result<Revision> {
        if self.faults.is_clear() {
            return self.store.current_revision_now();
        }
        self.client.current_revision().await
    }

    /// Discards the history before `revision`.
    ///
    /// # Errors
    /// [`Error::Compacted`] when already compacted at or past `revision`;
    /// [`Error::InvalidArgument`] when `revision` is not positive or is in the future.
    ///
    /// # Cancel safety
    /// Cancel safe: a repeat gives `Compacted`.
    async fn compact(&self, revision: Revision) -> Result<()> {
        if self.faults.is_clear() {
            return self.store.compact_now(revision);
        }
        self.client.compact(revision).await
    }
}
