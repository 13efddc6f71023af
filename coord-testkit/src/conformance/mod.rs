//! The conformance suite every backend runs.
//!
//! Each scenario is a public async function taking `&dyn TestBackend`, in the style of
//! `object_store`'s `integration.rs`: a backend crate implements [`TestBackend`] for a small
//! factory and expands the whole list into `#[tokio::test]`s with
//! [`conformance_tests!`](crate::conformance_tests):
//!
//! ```ignore
//! coord_testkit::conformance_tests! {
//!     backend: MyFactory::new(),   // evaluated once per test; may use `.await`
//!     clock: paused,               // `paused` (in-process backends) or `real` (servers)
//!     lacks: [(Capability::Compaction, "the shared server is used by other suites")],
//! }
//! ```
//!
//! Levels: [`contract`] (data model, txn, range, lease, watch), then the recipes
//! ([`session`], [`mutex`], [`rwmutex`], [`election`], [`semaphore`], and a look inside each:
//! [`inspect`]), the regression tests
//! for the known bugs of etcd's Go recipes ([`bugs`]), safety under lost answers, late
//! writes, lost sessions and shared sessions ([`safety`]), and a seeded randomized schedule test
//! ([`randomized`]).
//!
//! Rules every scenario follows, so that one server can serve many tests at once and the
//! same code runs on paused and real time:
//! - every key lives under a unique prefix from [`unique`];
//! - only `tokio::time` is used (never `std::thread::sleep`); waits are bounded by
//!   [`prompt`] ("should happen soon") or [`quiet`] ("should not happen within"), both
//!   relative to [`TestBackend::short_ttl`];
//! - a scenario that needs a capability the backend lacks prints `skipped: <test>: <reason>`
//!   to the real stderr (visible even when output is captured) and returns.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use coord_core::faults::{FaultControls, LateApply, Partition, WatchBreak};
use coord_core::{
    BackendExt, BackendInfo, CoordinationBackend, KeyRange, KeyValue, LeaseGrant, LeaseId,
    LeaseStatus, RangeRequest, RangeResponse, Result, Revision, Session, TxnRequest, TxnResponse,
    WatchRequest, WatchStart, WatchStream,
};
use futures::future::BoxFuture;

pub mod bugs;
pub mod contract;
pub mod edges;
pub mod election;
mod gate;
pub mod inspect;
pub mod mutex;
pub mod randomized;
pub mod rwmutex;
pub mod safety;
pub mod semaphore;
pub mod session;

pub use gate::{GateHold, Gated, StoreGate};

/// How time passes for a backend under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// Tokio time is paused and auto-advances when every task waits on a timer
    /// (`#[tokio::test(start_paused = true)]`): in-process backends whose leases expire on
    /// tokio time. Waiting costs nothing, so scenarios may wait long.
    Paused,
    /// Real time (servers). Scenarios keep their waits a few TTLs long at most.
    Real,
}

/// Something a scenario may need that not every backend (or fault tool) provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    /// [`Faults::expire_lease_now`].
    ExpireLease,
    /// [`ClientFaults::fail_next`].
    FailNext,
    /// [`ClientFaults::set_latency`], precise enough to drop a call between the moment the
    /// store applied it and the moment its response arrives.
    Latency,
    /// [`ClientFaults::partition`] with [`Partition::Fail`].
    PartitionFail,
    /// [`ClientFaults::partition`] with [`Partition::Hang`].
    PartitionHang,
    /// [`ClientFaults::delay_next`] and [`ClientFaults::apply_late`].
    LateApply,
    /// [`ClientFaults::break_watches`].
    BreakWatches,
    /// [`CoordinationBackend::compact`] on the store under test without disturbing other
    /// tests that share it.
    Compaction,
}

impl Capability {
    fn is_fault(self) -> bool {
        !matches!(self, Capability::Compaction)
    }
}

/// A backend under test: a factory of clients of one store, plus what the scenarios need to
/// know about its time and faults.
#[async_trait]
pub trait TestBackend: Send + Sync + 'static {
    /// A new independent client of the one store under test (scenarios need several: one
    /// per simulated process).
    async fn client(&self) -> Arc<dyn CoordinationBackend>;

    /// Paused tokio time (in-process backends) or real time (servers). Scenarios only use
    /// `tokio::time`, never std sleeps.
    fn clock(&self) -> Clock;

    /// A session TTL short enough for expiry tests on this backend (memory: e.g. 10 s of
    /// paused time; servers: 2-3 s of real time). Every other wait is derived from it.
    fn short_ttl(&self) -> Duration;

    /// Fault injection, if the backend supports it.
    fn faults(&self) -> Option<&dyn Faults> {
        None
    }

    /// Waits until no other test uses the store, which then stays reserved to the calling
    /// test until it ends. Scenarios that assert on store-wide revisions (which any write
    /// moves) call it first. The default does nothing: right for a store per test.
    async fn exclusive(&self) {}

    /// Why the backend lacks `capability`, or `None` when it has it. By default fault
    /// capabilities are lacking exactly when [`faults`](Self::faults) is `None`.
    fn lacks(&self, capability: Capability) -> Option<&'static str> {
        (capability.is_fault() && self.faults().is_none())
            .then_some("the backend has no fault injection")
    }
}

/// Fault injection on the store under test.
#[async_trait]
pub trait Faults: Send + Sync {
    /// A new independent client of the store, with controls that affect that client alone.
    async fn faulty_client(&self) -> (Arc<dyn CoordinationBackend>, Arc<dyn ClientFaults>);

    /// Ends `lease` now as if its TTL had run out: its keys are deleted in one revision,
    /// and whoever keeps it alive is not told (until its next keep-alive fails).
    async fn expire_lease_now(&self, lease: LeaseId);
}

/// The fault controls of one client made by [`Faults::faulty_client`]: what
/// [`FaultControls`] offers, so that [`FaultyBackend`](coord_core::faults::FaultyBackend) around any backend client implements
/// them.
#[async_trait]
pub trait ClientFaults: Send + Sync {
    /// The next `n` calls of the client fail with `Unavailable` before reaching the store.
    fn fail_next(&self, n: u64);
    /// Every call takes `latency` more: half before the store applies it, half after.
    fn set_latency(&self, latency: Duration);
    /// Cuts the client off the store until [`heal`](Self::heal).
    fn partition(&self, mode: Partition);
    /// Ends a partition.
    fn heal(&self);
    /// The next `n` txns of the client are held back instead of reaching the store: their
    /// answer is lost ([`LateApply`] says how the caller notices) and they are applied only
    /// by [`apply_late`](Self::apply_late), after every write sent meanwhile. What a slow
    /// etcd follower does to a write sent through it.
    fn delay_next(&self, n: u64, mode: LateApply);
    /// Applies the txns held by [`delay_next`](Self::delay_next), oldest first, and returns
    /// how many there were. A caller still waiting gets the real answer.
    async fn apply_late(&self) -> usize;
    /// Ends every watch stream of the client that is open now with an error: what a watch
    /// that broke and could not resume reports.
    fn break_watches(&self, how: WatchBreak);
}

#[async_trait]
impl ClientFaults for FaultControls {
    fn fail_next(&self, n: u64) {
        FaultControls::fail_next(self, n);
    }
    fn set_latency(&self, latency: Duration) {
        FaultControls::set_latency(self, latency);
    }
    fn partition(&self, mode: Partition) {
        FaultControls::partition(self, mode);
    }
    fn heal(&self) {
        FaultControls::heal(self);
    }
    fn delay_next(&self, n: u64, mode: LateApply) {
        FaultControls::delay_next(self, n, mode);
    }
    async fn apply_late(&self) -> usize {
        FaultControls::apply_late(self).await
    }
    fn break_watches(&self, how: WatchBreak) {
        FaultControls::break_watches(self, how);
    }
}

/// A [`TestBackend`] with capabilities declared lacking on top of what it reports itself;
/// what [`conformance_tests!`](crate::conformance_tests) hands to each scenario.
pub struct Declared<B> {
    inner: B,
    lacking: &'static [(Capability, &'static str)],
}

impl<B: TestBackend> Declared<B> {
    /// Wraps `inner`, declaring `lacking` (capability, reason) pairs.
    pub fn new(inner: B, lacking: &'static [(Capability, &'static str)]) -> Self {
        Declared { inner, lacking }
    }
}

#[async_trait]
impl<B: TestBackend> TestBackend for Declared<B> {
    async fn client(&self) -> Arc<dyn CoordinationBackend> {
        self.inner.client().await
    }
    fn clock(&self) -> Clock {
        self.inner.clock()
    }
    fn short_ttl(&self) -> Duration {
        self.inner.short_ttl()
    }
    fn faults(&self) -> Option<&dyn Faults> {
        self.inner.faults()
    }
    async fn exclusive(&self) {
        self.inner.exclusive().await
    }
    fn lacks(&self, capability: Capability) -> Option<&'static str> {
        self.lacking
            .iter()
            .find(|(c, _)| *c == capability)
            .map(|(_, reason)| *reason)
            .or_else(|| self.inner.lacks(capability))
    }
}

/// Writes `skipped: <test>: <reason>` to the process's real stderr, bypassing the test
/// harness's output capture so a skip is never silent.
pub fn skip(test: &str, reason: &str) {
    let line = format!("skipped: {test}: {reason}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Returns true (after printing the skip line) when `backend` lacks one of `needs`.
pub fn skip_unless(backend: &dyn TestBackend, test: &str, needs: &[Capability]) -> bool {
    for cap in needs {
        if let Some(reason) = backend.lacks(*cap) {
            skip(test, &format!("needs {cap:?}: {reason}"));
            return true;
        }
    }
    false
}

/// A key prefix no other test (in this process or another one on the same server) uses:
/// `coord-conformance/<process nonce>/<counter>-<label>`.
pub fn unique(label: &str) -> String {
    static NONCE: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nonce = *NONCE.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        nanos ^ (u64::from(std::process::id()) << 32)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("coord-conformance/{nonce:x}/{n}-{label}")
}

/// How long something that should happen "at once" may take: a fifth of the short TTL on
/// real time, one second on paused time.
pub fn prompt(backend: &dyn TestBackend) -> Duration {
    match backend.clock() {
        Clock::Paused => Duration::from_secs(1),
        Clock::Real => backend.short_ttl() / 5,
    }
}

/// How long to watch for something that must not happen (a blocked lock staying blocked):
/// 30 s on paused time (free), a fifth of the short TTL on real time.
pub fn quiet(backend: &dyn TestBackend) -> Duration {
    match backend.clock() {
        Clock::Paused => Duration::from_secs(30),
        Clock::Real => backend.short_ttl() / 5,
    }
}

/// Long enough for background work (releases, retries with back-off up to 1 s) to finish.
pub fn settle(backend: &dyn TestBackend) -> Duration {
    match backend.clock() {
        Clock::Paused => Duration::from_secs(5),
        Clock::Real => backend.short_ttl().max(Duration::from_secs(3)),
    }
}

/// A session on `client` with `ttl`.
pub async fn session_with_ttl(client: &Arc<dyn CoordinationBackend>, ttl: Duration) -> Session {
    Session::builder(client.clone())
        .ttl(ttl)
        .start()
        .await
        .expect("start session")
}

/// A session on a new client with the backend's short TTL.
pub async fn new_session(backend: &dyn TestBackend) -> Session {
    let client = backend.client().await;
    session_with_ttl(&client, backend.short_ttl()).await
}

/// Every key under `prefix`.
pub async fn keys_under(client: &dyn CoordinationBackend, prefix: &str) -> Vec<KeyValue> {
    client
        .range(RangeRequest::prefix(prefix))
        .await
        .expect("range")
        .kvs
}

/// Polls `check` every few milliseconds until it returns true; panics with `what` if
/// `within` passes first.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until no key under `prefix` is attached to `lease`.
pub async fn no_key_of(
    backend: &dyn TestBackend,
    client: &dyn CoordinationBackend,
    prefix: &str,
    lease: LeaseId,
    what: &str,
) {
    eventually(settle(backend), what, || async {
        !keys_under(client, prefix)
            .await
            .iter()
            .any(|kv| kv.lease == lease)
    })
    .await;
}

/// Fails unless `fut` is still pending after [`quiet`]; gives the future back so that it
/// can be awaited later.
pub async fn assert_blocks<T: Send + 'static>(
    backend: &dyn TestBackend,
    handle: &tokio::task::JoinHandle<T>,
    what: &str,
) {
    tokio::time::sleep(quiet(backend)).await;
    assert!(!handle.is_finished(), "should still be blocked: {what}");
}

/// Awaits a spawned task within [`prompt`], panicking with `what` if it does not finish.
pub async fn join_prompt<T>(
    backend: &dyn TestBackend,
    handle: tokio::task::JoinHandle<T>,
    what: &str,
) -> T {
    let limit = prompt(backend);
    match tokio::time::timeout(limit, handle).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("task panicked ({what}): {e}"),
        Err(_) => panic!("not within {limit:?}: {what}"),
    }
}

/// A hook run (and awaited) by [`Spy`] before it forwards a watch request.
pub type WatchHook =
    Arc<dyn Fn(&WatchRequest) -> Option<BoxFuture<'static, ()>> + Send + Sync + 'static>;

/// A hook run by [`Spy`] after a txn returned and before its answer is handed back: a
/// returned future is awaited first (to hold an answer back until a scenario says so).
pub type TxnHook = Arc<
    dyn Fn(&TxnRequest, &Result<TxnResponse>) -> Option<BoxFuture<'static, ()>>
        + Send
        + Sync
        + 'static,
>;

/// One call seen by a [`Spy`].
#[derive(Debug, Clone)]
pub enum SpyCall {
    /// A watch, with the store's current revision read just before it was forwarded.
    Watch {
        /// What was asked.
        request: WatchRequest,
        /// The store revision read right before forwarding.
        current_revision: Revision,
    },
    /// A txn, and whether it returned `Ok`.
    Txn {
        /// What was asked.
        request: TxnRequest,
        /// Whether the call returned `Ok`.
        ok: bool,
    },
    /// Any other call, by method name.
    Other(&'static str),
}

/// A decorator that records every call of a client and can run a hook before a watch is
/// established, to make a race happen exactly where a scenario needs it.
#[derive(Clone)]
pub struct Spy {
    inner: Arc<dyn CoordinationBackend>,
    log: Arc<std::sync::Mutex<Vec<SpyCall>>>,
    watch_hook: Option<WatchHook>,
    txn_hook: Option<TxnHook>,
}

impl std::fmt::Debug for Spy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spy").field("inner", &self.inner).finish()
    }
}

impl Spy {
    /// Records the calls made through it to `inner`.
    pub fn new(inner: Arc<dyn CoordinationBackend>) -> Self {
        Spy {
            inner,
            log: Arc::default(),
            watch_hook: None,
            txn_hook: None,
        }
    }

    /// Runs `hook` after each txn returns; a returned future is awaited before the answer
    /// is handed back.
    pub fn with_txn_hook(mut self, hook: TxnHook) -> Self {
        self.txn_hook = Some(hook);
        self
    }

    /// Runs `hook` before forwarding each watch; a returned future is awaited first.
    pub fn with_watch_hook(mut self, hook: WatchHook) -> Self {
        self.watch_hook = Some(hook);
        self
    }

    /// The calls so far.
    pub fn calls(&self) -> Vec<SpyCall> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn record(&self, call: SpyCall) {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(call);
    }
}

#[async_trait]
impl CoordinationBackend for Spy {
    fn info(&self) -> BackendInfo {
        self.inner.info()
    }
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseGrant> {
        self.record(SpyCall::Other("lease_grant"));
        self.inner.lease_grant(ttl).await
    }
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        self.record(SpyCall::Other("lease_keep_alive"));
        self.inner.lease_keep_alive(lease).await
    }
    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.record(SpyCall::Other("lease_revoke"));
        self.inner.lease_revoke(lease).await
    }
    async fn lease_time_to_live(&self, lease: LeaseId) -> Result<LeaseStatus> {
        self.record(SpyCall::Other("lease_time_to_live"));
        self.inner.lease_time_to_live(lease).await
    }
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        self.record(SpyCall::Other("range"));
        self.inner.range(request).await
    }
    async fn txn(&self, request: TxnRequest) -> Result<TxnResponse> {
        let result = self.inner.txn(request.clone()).await;
        if let Some(fut) = self.txn_hook.as_ref().and_then(|h| h(&request, &result)) {
            fut.await;
        }
        self.record(SpyCall::Txn {
            request,
            ok: result.is_ok(),
        });
        result
    }
    async fn watch(&self, request: WatchRequest) -> Result<WatchStream> {
        if let Some(fut) = self.watch_hook.as_ref().and_then(|h| h(&request)) {
            fut.await;
        }
        let current_revision = self.inner.current_revision().await?;
        self.record(SpyCall::Watch {
            request: request.clone(),
            current_revision,
        });
        self.inner.watch(request).await
    }
    async fn current_revision(&self) -> Result<Revision> {
        self.inner.current_revision().await
    }
    async fn compact(&self, revision: Revision) -> Result<()> {
        self.record(SpyCall::Other("compact"));
        self.inner.compact(revision).await
    }
}

/// Whether a watch start makes the backend replay history (etcd serves such watches from a
/// catch-up loop that runs every 100 ms): a start revision at or below the current one.
pub fn replays_history(start: WatchStart, current_revision: Revision) -> bool {
    match start {
        WatchStart::Now => false,
        WatchStart::Revision(r) => r <= current_revision,
    }
}

/// Deletes one key with a plain txn (another process removing it by hand).
pub async fn delete_key(client: &dyn CoordinationBackend, key: &str) {
    client.delete(KeyRange::key(key)).await.expect("delete key");
}

/// Expands the whole conformance suite into `#[tokio::test]`s for a backend factory.
///
/// ```ignore
/// coord_testkit::conformance_tests! {
///     backend: MemoryFactory::new(),   // an expression giving a TestBackend; once per test
///     clock: paused,                   // `paused`: #[tokio::test(start_paused = true)]
///                                      // `real`: #[tokio::test(flavor = "multi_thread")]
///     lacks: [(coord_testkit::conformance::Capability::Compaction, "shared server")],
/// }
/// ```
///
/// `lacks` is optional; each entry is a [`Capability`](crate::conformance::Capability) and
/// the reason, printed as `skipped: <test>: ...` by the scenarios that need it. The calling
/// crate needs `tokio` with the `macros`, `rt` (and for `real`, `rt-multi-thread`; for
/// `paused`, `test-util`) features.
#[macro_export]
macro_rules! conformance_tests {
    (backend: $backend:expr, clock: $clock:ident $(,)?) => {
        $crate::conformance_tests! { backend: $backend, clock: $clock, lacks: [] }
    };
    (backend: $backend:expr, clock: $clock:ident, lacks: [$($lacks:tt)*] $(,)?) => {
        $crate::__conformance_list! { __conformance_test ($clock) ($backend) ([$($lacks)*]) }
    };
}

/// Internal: one test of [`conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_test {
    (paused, $backend:expr, $lacks:expr, $module:ident :: $name:ident) => {
        #[tokio::test(start_paused = true)]
        async fn $name() {
            static LACKS: &[($crate::conformance::Capability, &str)] = &$lacks;
            let backend = $crate::conformance::Declared::new($backend, LACKS);
            $crate::conformance::$module::$name(&backend).await;
        }
    };
    (real, $backend:expr, $lacks:expr, $module:ident :: $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            static LACKS: &[($crate::conformance::Capability, &str)] = &$lacks;
            let backend = $crate::conformance::Declared::new($backend, LACKS);
            $crate::conformance::$module::$name(&backend).await;
        }
    };
}

/// Internal: the list of every scenario, handed to `$callback!` one by one.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_list {
    ($callback:ident ($clock:ident) ($backend:expr) ($lacks:expr)) => {
        $crate::__conformance_each! { $callback ($clock) ($backend) ($lacks)
            contract::revision_rises_once_per_write_txn
            contract::txn_compares_every_kind_on_both_branches
            contract::txn_later_ops_see_earlier_ones
            contract::txn_prev_kv_returns_the_keys_before_the_write
            contract::txn_put_on_a_missing_lease_applies_nothing
            contract::invalid_txns_are_rejected_whole
            contract::delete_by_key_prefix_and_range
            contract::range_filter_sort_limit_and_more
            contract::range_keys_only_and_count_only
            contract::range_key_is_one_key_and_prefixes_may_end_in_0xff
            contract::lease_expiry_deletes_all_keys_in_one_revision
            contract::lease_keep_alive_after_expiry_is_lease_not_found
            contract::lease_revoke_deletes_keys
            contract::lease_grant_gives_distinct_positive_ids
            contract::leases_without_keys_never_change_the_revision
            contract::put_moves_a_key_between_leases
            contract::watch_from_past_replays_in_order_with_concurrent_writers
            contract::watch_from_now_misses_nothing_after_it_returns
            contract::watch_key_vs_prefix
            contract::watch_prev_kv_and_delete_events
            contract::watch_delivers_a_txn_as_one_response_in_op_order
            contract::watch_from_a_future_revision_starts_there
            contract::malformed_reads_and_watches_are_invalid_argument
            contract::watch_compacted_reports_compact_revision
            contract::watch_from_revision_zero_means_now
            session::resumed_session_uses_the_given_lease
            session::orphan_fires_lost_promptly
            session::session_ttl_option_is_honoured
            session::session_keep_alive_outlives_the_ttl
            session::session_close_revokes_and_deletes_keys
            session::session_lost_when_lease_expires_on_the_server
            mutex::mutex_handoff_waits_for_unlock
            mutex::try_lock_leaves_no_key_and_succeeds_after_unlock
            mutex::five_sessions_lock_exclusively
            mutex::concurrent_try_locks_exactly_one_wins
            mutex::same_session_relock_waits_for_the_first_guard
            mutex::waiter_waits_for_the_holder_not_only_its_predecessor
            mutex::waiter_whose_session_ends_gets_session_expired
            mutex::unlock_releases_and_the_old_guard_is_not_owner
            mutex::lock_name_is_a_prefix_with_a_slash
            mutex::mutex_key_layout_is_etcds
            mutex::fencing_tokens_rise_over_1000_handoffs_among_16_sessions
            mutex::a_long_queue_is_served_in_order_and_a_deleted_waiters_key_ends_its_wait
            mutex::two_sessions_taking_turns_never_mistake_their_own_release_for_a_loss
            mutex::mutex_dropped_lock_future_leaves_no_key
            mutex::mutex_dropped_lock_future_during_round_trip_leaves_no_key
            mutex::mutex_dropped_unlock_future_still_releases
            mutex::mutex_lost_fires_before_next_holder_acquires
            rwmutex::random_readers_and_writers_never_overlap
            rwmutex::rwmutex_readers_share
            rwmutex::rwmutex_reader_waits_behind_older_writer
            rwmutex::rwmutex_writer_waits_for_readers
            election::election_order_and_observe
            election::followers_observe_each_leader
            election::failover_on_session_loss
            election::recampaign_on_a_resumed_session_proclaims_at_once
            election::election_name_is_a_prefix_with_a_slash
            election::leadership_resumes_after_restart_from_the_lease_id
            election::observe_survives_compaction
            election::proclaimed_values_reach_observers_in_rising_revisions
            election::resign_unblocks_the_next_candidate
            election::no_leader_and_not_leader_errors
            election::election_dropped_campaign_leaves_no_key
            election::election_lost_fires_before_next_leader_is_elected
            semaphore::semaphore_permits_admit_next_and_tokens_are_unique
            semaphore::semaphore_never_exceeds_permits_under_contention
            semaphore::semaphore_dropped_acquire_leaves_no_key
            inspect::inspect_lock_shows_holder_then_waiters_in_order
            inspect::inspect_rw_lock_shows_readers_and_writers_held_and_queued
            inspect::inspect_semaphore_shows_the_oldest_permits_as_holders
            inspect::election_participants_show_leader_then_candidates
            inspect::inspect_counts_only_direct_children_and_refuses_bad_names
            bugs::mutex_waiter_whose_lease_is_revoked_never_gets_the_lock
            bugs::mutex_waiter_whose_lease_expires_never_gets_the_lock
            bugs::candidate_whose_lease_is_revoked_never_leads
            bugs::candidate_whose_lease_expires_never_leads
            bugs::mutex_wait_ends_when_its_own_key_is_deleted
            bugs::mutex_wait_ends_when_its_session_is_lost
            bugs::campaign_ends_when_its_own_key_is_deleted
            bugs::campaign_ends_when_its_session_is_lost
            bugs::late_unlock_never_deletes_a_newer_acquisition
            bugs::late_resign_never_deletes_a_newer_candidacy
            bugs::failed_unlock_still_releases
            bugs::failed_resign_still_resigns
            bugs::failed_lock_wait_withdraws_its_key
            bugs::failed_campaign_withdraws_its_key
            bugs::waiter_keeps_its_place_through_a_blip_and_ends_with_its_session
            bugs::predecessor_recreated_under_the_same_key_is_noticed
            bugs::waiters_watch_from_now
            bugs::handoffs_are_not_paced_by_watch_catch_up
            randomized::randomized_mutex_schedules
            edges::zero_limit_lock_acquires_a_free_mutex_and_times_out_on_a_held_one
            edges::zero_limit_rw_lock_acquires_when_free_and_times_out_when_blocked
            edges::zero_limit_acquire_takes_a_free_permit_and_times_out_when_none_is_free
            edges::zero_limit_campaign_leads_an_empty_election_and_times_out_behind_a_leader
            edges::lease_ttls_above_the_maximum_are_refused
            edges::requests_over_the_size_limit_are_refused_and_write_nothing
            edges::lease_ttls_are_whole_seconds_of_at_least_the_minimum
            edges::a_lock_ignores_holders_of_deeper_names
            edges::leader_of_a_name_ignores_candidates_of_deeper_names
            edges::a_mutex_and_a_read_write_lock_on_one_name_exclude_each_other
            edges::keys_in_etcds_layouts_exclude_coord_locks
            edges::locked_names_the_holder_key_and_bad_permit_counts_are_refused
            safety::stale_withdrawal_never_deletes_a_later_acquisition
            safety::cancelled_claim_landing_late_leaves_no_key_on_a_live_lease
            safety::acquisitions_cut_off_mid_setup_end_at_the_session_deadline
            safety::lock_never_returns_ok_once_the_session_is_lost
            safety::lock_never_grants_on_a_delete_seen_after_the_session_is_lost
            safety::tasks_sharing_a_session_exclude_each_other
            safety::one_sessions_overlapping_readers_never_starve_another_sessions_writer
            safety::session_forgets_names_it_no_longer_uses
            safety::too_many_unsettled_claims_end_the_session
            safety::try_lock_cut_off_after_its_claim_returns_by_the_deadline
            safety::lost_stays_pending_after_a_voluntary_release
            safety::waiters_watch_again_when_their_watch_breaks
            safety::session_is_lost_when_its_keep_alive_task_dies
            safety::lost_session_keeps_revoking_until_the_lease_is_gone
            safety::proclaim_with_a_lost_answer_never_overwrites_a_later_one
        }
    };
}

/// Internal: applies `$callback!` to each scenario path.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_each {
    ($callback:ident ($clock:ident) ($backend:expr) ($lacks:expr) $($module:ident :: $name:ident)*) => {
        $( $crate::$callback! { $clock, $backend, $lacks, $module :: $name } )*
    };
}
