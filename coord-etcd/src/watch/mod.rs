//! Watches, multiplexed over one etcd `Watch` stream per backend and resumed transparently
//! when that stream breaks.
//!
//! - **One stream per connection.** Every watch of an [`EtcdBackend`](crate::EtcdBackend)
//!   and its clones is one etcd watcher on a single bidirectional gRPC `Watch` stream,
//!   owned by a dispatcher task (spawned on first use). etcd answers the create requests
//!   of one stream in the order they were sent (its receive loop handles them one by one
//!   and queues the `created` answers in order), so each `created` answer is matched to
//!   the oldest create still unanswered and etcd assigns the watch ids itself. Events are
//!   routed by watch id, to an unbounded queue per watch: a consumer that does not poll
//!   its stream never holds up the others (etcd's Go client buffers the same way).
//! - **Cancels are acknowledged.** Dropping a [`WatchStream`] sends etcd a cancel; the
//!   watch id is forgotten when etcd acknowledges it (events still in flight for it are
//!   dropped; etcd sends none after the acknowledgement). A watch dropped before etcd
//!   created it is cancelled once it is.
//! - **A watch "from now"** is created with etcd's start revision 0: etcd then watches
//!   from `R + 1` where `R` is the revision in the `created` response's header, so the
//!   [`WatchStream::start_revision`] is exact without an extra round trip. With several
//!   endpoints the member that creates the watch may lag the one the caller last read
//!   from, so the backend first makes a linearizable read; the watch is still created from
//!   0 (see *stalls* below) and starts at the later of that read's revision + 1 and the
//!   member's `R + 1`, events below it being dropped (a lagging member would replay them).
//! - `watch()` returns only after etcd's `created` response.
//! - One etcd response may carry events of several revisions (etcd batches catch-up
//!   events); they are split into one [`WatchResponse`] per revision. Without etcd's
//!   `fragment` option (not used) etcd never splits one revision across responses; should
//!   it ever happen, the revision is delivered as two responses rather than held back.
//! - **Resuming.** When the stream breaks (etcd restart, connection reset, h2 error, or a
//!   member that lost its leader: streams are opened with etcd's `hasleader`, and etcd
//!   ends them after three election timeouts without a leader) every watch is created
//!   again on a new stream, from the revision after the last one delivered (or its start
//!   revision when nothing was delivered yet), with backoff, until it works or the watch is
//!   dropped. Delivery is by revision, so nothing is lost or repeated. A watch whose
//!   resume revision has been compacted meanwhile ends with [`Error::Compacted`]: events
//!   are never skipped silently. Watches whose creation was under way when the stream
//!   broke are created on the new stream; their `watch()` fails only if that cannot be
//!   opened.
//! - etcd's progress notifications are not used to advance the resume point: etcd 3.4 can
//!   send one ahead of pending events (etcd-io/etcd#15220). So a long-idle watch that
//!   resumes after a restart may report `Compacted` although it missed nothing.
//! - A `canceled` response with a compaction revision ends that watch alone with
//!   [`Error::Compacted`]; any other cancellation ends it with the mapped error.
//! - **Refused watches.** etcd refuses a watch the user may not read with `created` +
//!   `canceled` on the stream (which stays open for the others). A stream carries the auth
//!   token it was opened with, which a restarted etcd no longer knows and which expires
//!   when unused: when a client with a user name has a watch refused, it authenticates
//!   again and re-opens the stream (every watch resumes), once per watch; a second refusal
//!   is [`Error::PermissionDenied`].
//!
//! # Stalls of 20-100 ms: unsynced watchers
//!
//! etcd's watchable store keeps two groups of watchers. A watcher created with a start
//! revision above the store's current revision (start 0 = current + 1 included) is
//! *synced*: every write notifies it as it is applied. A watcher whose start revision is
//! at or below the current revision is *unsynced*: it must first catch up on history, and
//! etcd does that only in its `syncWatchersLoop`, which runs every 100 ms. Until that loop
//! has moved the watcher to the synced group it receives nothing, including writes made
//! after it was created. So a watch from a past revision sees its first event up to
//! 100 ms late (`etcd_debugging_mvcc_slow_watcher_total` is etcd's gauge of such
//! watchers). Under contention other clients write between a caller's txn at revision
//! `R` and its watch from `R + 1`, which is then in the past: that is the occasional
//! 20-100 ms stall. coord's backend creates every watch "from now" with start 0 (synced),
//! with several endpoints too. A watch from an explicit revision is created from that
//! revision, as the caller needs the events since then, and is unsynced whenever that
//! revision is not in the future; recipes that can wait from "now" (watch first, then
//! read) avoid the stall. Resumed watches are unsynced by nature (they catch up), which is
//! only after a broken stream. etcd itself can still make a start-0 watch unsynced: its
//! watch server reads the store's revision `R`, then registers the watcher from `R + 1`,
//! and a write applied between the two leaves the watcher behind. Under contention that
//! race is what remained of the stalls: with a watch created per wait, the 99th-percentile
//! handoff of `coord bench contend` at 2 workers was 5-73 ms; since the recipes keep a
//! waiter's watch for its session's next wait on the same key (`coord_core`'s
//! `kept_watch`), it is 2-7 ms on the same loaded machine.

mod dispatcher;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coord_core::{Error, Result, Revision, WatchRequest, WatchStart, WatchStream};
use etcd_client as ec;
use tokio::sync::{mpsc, oneshot};

use crate::convert::Namespace;
use dispatcher::{Command, Create, Spec};

/// Watch responses may be large (a lease expiry deleting many keys with prev kv);
/// etcd-client's 4 MiB default would break the stream for good.
const MAX_WATCH_MESSAGE: usize = 256 * 1024 * 1024;
/// How long a watch creation may take when no request timeout is configured.
const DEFAULT_CREATE_TIMEOUT: Duration = Duration::from_secs(30);

/// Counters for tests and diagnostics.
#[derive(Default)]
pub(crate) struct Stats {
    /// gRPC watch streams opened so far.
    pub(crate) streams_opened: AtomicU64,
    /// Watches registered with the dispatcher (created or being created or resumed).
    pub(crate) watchers: AtomicU64,
}

/// The watches of one backend (shared by its clones): a handle on the dispatcher task.
pub(crate) struct Watches {
    client: ec::Client,
    /// Whether the client authenticates with a user name (so has a token to refresh).
    has_credentials: bool,
    create_timeout: Duration,
    /// How often a stream open that never reached a server is sent.
    attempts: u32,
    /// The dispatcher's command queue; replaced when the task is gone (its runtime shut
    /// down while the backend lives on).
    commands: Mutex<Option<mpsc::UnboundedSender<Command>>>,
    next_watcher: AtomicU64,
    stats: Arc<Stats>,
}

impl Watches {
    pub(crate) fn new(
        client: ec::Client,
        has_credentials: bool,
        request_timeout: Option<Duration>,
        attempts: u32,
    ) -> Self {
        Watches {
            client,
            has_credentials,
            create_timeout: request_timeout.unwrap_or(DEFAULT_CREATE_TIMEOUT),
            attempts,
            commands: Mutex::new(None),
            next_watcher: AtomicU64::new(1),
            stats: Arc::default(),
        }
    }

    pub(crate) fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Sends `command` to the dispatcher, starting one when there is none or it is gone.
    fn send(&self, command: Command) -> mpsc::UnboundedSender<Command> {
        let mut slot = self.commands.lock().unwrap_or_else(|e| e.into_inner());
        let command = match slot.as_ref() {
            Some(tx) => match tx.send(command) {
                Ok(()) => return tx.clone(),
                Err(mpsc::error::SendError(command)) => command,
            },
            None => command,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(
            dispatcher::Dispatcher::new(
                self.client
                    .watch_client()
                    .max_decoding_message_size(MAX_WATCH_MESSAGE),
                self.client.clone(),
                self.has_credentials,
                self.create_timeout,
                self.attempts,
                self.stats.clone(),
                rx,
            )
            .run(),
        );
        // The receiver is alive: the task has not run yet.
        let _ = tx.send(command);
        *slot = Some(tx.clone());
        tx
    }

    /// Establishes a watch; see the module docs. A watch from now starts after `now_floor`
    /// when given (a revision the cluster had reached before the call), else at the
    /// answering member's revision.
    pub(crate) async fn watch(
        &self,
        ns: &Namespace,
        request: WatchRequest,
        now_floor: Option<Revision>,
    ) -> Result<WatchStream> {
        request.range.validate()?;
        let start = match request.start {
            // Revision 0 means "now", as in etcd's own API.
            WatchStart::Now | WatchStart::Revision(0) => 0,
            WatchStart::Revision(r) if r > 0 => r,
            WatchStart::Revision(r) => {
                return Err(Error::invalid_argument(format!(
                    "watch start revision must not be negative, got {r}"
                )));
            }
        };
        let (key, range_end) = ns.bounds(&request.range);
        let spec = Arc::new(Spec {
            ns: ns.clone(),
            key,
            range_end,
            prev_kv: request.prev_kv,
            what: format!("watch {:?}", request.range),
        });
        let floor = if start == 0 { now_floor } else { None };
        // Sent again for up to READ_RETRY while it fails with `Unavailable` and other
        // members may answer (several endpoints) or the member has no leader yet (etcd
        // refuses watches then, as they are created with `hasleader`): creating a watch
        // changes nothing, so it is as safe to repeat as a read. (With one endpoint a dead
        // server is reported at once.)
        let deadline = tokio::time::Instant::now() + crate::READ_RETRY;
        let mut delay = Duration::from_millis(25);
        loop {
            match self.create(&spec, start, floor).await {
                Err(Error::Unavailable { message, .. })
                    if (self.attempts > 1 || crate::error::leaderless_message(&message))
                        && tokio::time::Instant::now() + delay < deadline =>
                {
                    tracing::debug!(watch = %spec.what, error = %message, "etcd watch creation failed; sending again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(500));
                }
                result => return result,
            }
        }
    }

    /// One attempt at registering a watch with the dispatcher, until etcd created it.
    async fn create(
        &self,
        spec: &Arc<Spec>,
        start: Revision,
        floor: Option<Revision>,
    ) -> Result<WatchStream> {
        let id = self.next_watcher.fetch_add(1, Ordering::Relaxed);
        let (events_tx, events) = mpsc::unbounded_channel();
        let (created_tx, created) = oneshot::channel();
        let commands = self.send(Command::Create(Create {
            id,
            spec: spec.clone(),
            start,
            floor,
            events: events_tx,
            created: created_tx,
        }));
        // From here on a failed or cancelled call, or the stream's end, cancels the watch.
        let guard = Registration { commands, id };
        let outcome = tokio::time::timeout(self.create_timeout, created).await;
        let start_revision = match outcome {
            Ok(Ok(result)) => result?,
            Ok(Err(_)) => {
                return Err(Error::unavailable(format!(
                    "etcd {}: the watch dispatcher stopped",
                    spec.what
                )));
            }
            Err(_) => {
                return Err(Error::Timeout {
                    operation: format!(
                        "etcd {} creation (timeout {:?})",
                        spec.what, self.create_timeout
                    ),
                });
            }
        };
        let inner = futures::stream::unfold((events, guard), |(mut events, guard)| async move {
            let item = events.recv().await?;
            Some((item, (events, guard)))
        });
        Ok(WatchStream::new(start_revision, Box::pin(inner)))
    }
}

/// A watch registered with the dispatcher; dropping it cancels the watch.
struct Registration {
    commands: mpsc::UnboundedSender<Command>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        // A dispatcher that is gone has forgotten the watch already.
        let _ = self.commands.send(Command::Drop(self.id));
    }
}
