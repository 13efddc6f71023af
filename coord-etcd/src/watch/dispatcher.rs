//! The task that owns a backend's etcd watch stream: it creates, routes, cancels and
//! resumes every watch of the backend on that one stream (see the parent module's docs).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use coord_core::{Error, Event, EventKind, Result, Revision, WatchResponse};
use etcd_client as ec;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::Stats;
use crate::convert::Namespace;
use crate::error::{Context, map_err, retry_unsent};

const RESUME_BACKOFF_MIN: Duration = Duration::from_millis(50);
const RESUME_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// What one watch watches.
pub(crate) struct Spec {
    pub(crate) ns: Namespace,
    pub(crate) key: Vec<u8>,
    pub(crate) range_end: Vec<u8>,
    pub(crate) prev_kv: bool,
    /// For messages: the range as the caller gave it.
    pub(crate) what: String,
}

/// A new watch for the dispatcher.
pub(crate) struct Create {
    /// The dispatcher-wide id of the watch (not etcd's watch id, which changes with
    /// each stream).
    pub(crate) id: u64,
    pub(crate) spec: Arc<Spec>,
    /// The first revision to watch, 0 for now.
    pub(crate) start: Revision,
    /// For a watch from now: a revision the cluster had reached before the call.
    pub(crate) floor: Option<Revision>,
    pub(crate) events: mpsc::UnboundedSender<Result<WatchResponse>>,
    /// Answered with the watch's start revision once etcd created it.
    pub(crate) created: oneshot::Sender<Result<Revision>>,
}

pub(crate) enum Command {
    Create(Create),
    /// The watch's stream was dropped (or its creation given up).
    Drop(u64),
}

struct Watcher {
    spec: Arc<Spec>,
    events: mpsc::UnboundedSender<Result<WatchResponse>>,
    /// Where the next etcd watch for it starts: 0 (now) until its first creation, then
    /// the first revision not delivered yet.
    next_revision: Revision,
    floor: Option<Revision>,
    /// Events below this revision are dropped: those a lagging member replays to a watch
    /// from now, and (a safety net) any etcd should not have sent.
    min_revision: Revision,
    /// The caller of `watch()`, until the first creation.
    created: Option<oneshot::Sender<Result<Revision>>>,
    /// etcd's id of it on the current stream, once created there.
    etcd_id: Option<i64>,
    /// Whether the client authenticated again after etcd refused it.
    reauthenticated: bool,
}

impl Watcher {
    /// Ends the watch with `error`: the caller of `watch()` gets it, or else the stream.
    fn fail(mut self, error: Error) {
        match self.created.take() {
            Some(created) => {
                let _ = created.send(Err(error));
            }
            None => {
                let _ = self.events.send(Err(error));
            }
        }
    }
}

/// A request for the stream, passed on by the forwarding task.
enum Out {
    Create(Vec<u8>, ec::WatchOptions),
    Cancel(i64),
}

/// The current stream.
struct Conn {
    /// To the task that writes requests: a full request buffer never blocks the
    /// dispatcher, which keeps reading answers.
    requests: mpsc::UnboundedSender<Out>,
    responses: ec::WatchResponseStream,
    /// Creates sent and not answered yet, oldest first; `None` for a watch dropped since.
    creating: VecDeque<Option<u64>>,
    /// etcd's watch ids of the created watches.
    ids: HashMap<i64, u64>,
    /// etcd's watch ids cancelled and not acknowledged yet.
    cancelling: HashSet<i64>,
    /// Whether a watch was created on it (so a later break is not a failed attempt).
    healthy: bool,
}

impl Conn {
    fn cancel(&mut self, etcd_id: i64) {
        self.cancelling.insert(etcd_id);
        // A closed forwarder means a broken stream, which the response side reports.
        let _ = self.requests.send(Out::Cancel(etcd_id));
    }
}

pub(crate) struct Dispatcher {
    client: ec::WatchClient,
    /// For re-authenticating (`refresh_token`) when a watch is refused.
    auth: ec::Client,
    has_credentials: bool,
    create_timeout: Duration,
    attempts: u32,
    stats: Arc<Stats>,
    commands: mpsc::UnboundedReceiver<Command>,
    watchers: HashMap<u64, Watcher>,
    conn: Option<Conn>,
    /// Failed attempts in a row at getting a working stream.
    failures: u32,
    /// When to try opening a stream again; `None`: now.
    retry_at: Option<Instant>,
}

impl Dispatcher {
    pub(crate) fn new(
        client: ec::WatchClient,
        auth: ec::Client,
        has_credentials: bool,
        create_timeout: Duration,
        attempts: u32,
        stats: Arc<Stats>,
        commands: mpsc::UnboundedReceiver<Command>,
    ) -> Self {
        Dispatcher {
            client,
            auth,
            has_credentials,
            create_timeout,
            attempts,
            stats,
            commands,
            watchers: HashMap::new(),
            conn: None,
            failures: 0,
            retry_at: None,
        }
    }

    /// Runs until every handle on it (the backend and its watches) is gone.
    pub(crate) async fn run(mut self) {
        loop {
            if self.conn.is_none() && !self.watchers.is_empty() && self.open_due() {
                self.open().await;
                continue;
            }
            let retry_at = self.retry_at;
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(command) => self.command(command),
                    // Every watch holds a handle: none is left.
                    None => return,
                },
                message = next_message(&mut self.conn) => self.message(message).await,
                () = sleep_until(retry_at), if self.conn.is_none() && retry_at.is_some() => {
                    self.retry_at = None;
                }
            }
        }
    }

    /// Whether to open a stream now: a caller of `watch()` waits, or the backoff is over.
    fn open_due(&self) -> bool {
        self.retry_at.is_none_or(|at| Instant::now() >= at)
            || self.watchers.values().any(|w| w.created.is_some())
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Create(c) => {
                self.stats.watchers.fetch_add(1, Ordering::Relaxed);
                self.watchers.insert(
                    c.id,
                    Watcher {
                        spec: c.spec,
                        events: c.events,
                        next_revision: c.start,
                        floor: c.floor,
                        min_revision: c.start,
                        created: Some(c.created),
                        etcd_id: None,
                        reauthenticated: false,
                    },
                );
                if self.conn.is_some() {
                    self.send_create(c.id);
                }
            }
            Command::Drop(id) => {
                let Some(w) = self.watchers.remove(&id) else {
                    return;
                };
                self.stats.watchers.fetch_sub(1, Ordering::Relaxed);
                let Some(conn) = self.conn.as_mut() else {
                    return;
                };
                match w.etcd_id {
                    Some(etcd_id) => {
                        conn.ids.remove(&etcd_id);
                        conn.cancel(etcd_id);
                    }
                    // Being created: cancelled once it is.
                    None => {
                        if let Some(entry) = conn.creating.iter_mut().find(|e| **e == Some(id)) {
                            *entry = None;
                        }
                    }
                }
            }
        }
    }

    fn options(w: &Watcher) -> (Vec<u8>, ec::WatchOptions) {
        let mut opts = ec::WatchOptions::new().with_start_revision(w.next_revision);
        if !w.spec.range_end.is_empty() {
            opts = opts.with_range(w.spec.range_end.clone());
        }
        if w.spec.prev_kv {
            opts = opts.with_prev_key();
        }
        (w.spec.key.clone(), opts)
    }

    fn send_create(&mut self, id: u64) {
        let (Some(conn), Some(w)) = (self.conn.as_mut(), self.watchers.get(&id)) else {
            return;
        };
        let (key, opts) = Self::options(w);
        conn.creating.push_back(Some(id));
        let _ = conn.requests.send(Out::Create(key, opts));
    }

    /// Opens a stream with the oldest watch's create request and sends the others'.
    async fn open(&mut self) {
        let mut order: Vec<u64> = self.watchers.keys().copied().collect();
        order.sort_unstable();
        let first = order[0];
        let (key, opts) = Self::options(&self.watchers[&first]);
        let what = self.watchers[&first].spec.what.clone();
        let client = &self.client;
        let open = retry_unsent(self.attempts, || {
            let (mut client, key, opts) = (client.clone(), key.clone(), opts.clone());
            async move { client.watch(key, Some(opts)).await }
        });
        let error = match tokio::time::timeout(self.create_timeout, open).await {
            Ok(Ok(stream)) => {
                self.stats.streams_opened.fetch_add(1, Ordering::Relaxed);
                let (requests, responses) = stream.split();
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(forward(rx, requests));
                self.conn = Some(Conn {
                    requests: tx,
                    responses,
                    creating: VecDeque::from([Some(first)]),
                    ids: HashMap::new(),
                    cancelling: HashSet::new(),
                    healthy: false,
                });
                for id in order.into_iter().skip(1) {
                    self.send_create(id);
                }
                return;
            }
            Ok(Err(e)) => map_err(Context::op(&what), e),
            Err(_) => Error::Timeout {
                operation: format!("etcd {what} creation (timeout {:?})", self.create_timeout),
            },
        };
        self.failed(error);
    }

    /// A stream could not be opened, or broke before any watch was created on it.
    fn failed(&mut self, error: Error) {
        self.failures = self.failures.saturating_add(1);
        self.retry_at = Some(Instant::now() + backoff(self.failures));
        // Callers of `watch()` decide themselves whether to try again.
        let waiting: Vec<u64> = self
            .watchers
            .iter()
            .filter(|(_, w)| w.created.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            self.remove(id).fail(duplicate(&error));
        }
        if !error.is_retryable() {
            self.fail_all(&error);
            return;
        }
        if self.watchers.is_empty() {
            return;
        }
        if self.failures == 1 {
            tracing::warn!(watches = self.watchers.len(), error = %error, "etcd watch stream cannot be opened yet; retrying with backoff");
        } else {
            tracing::debug!(watches = self.watchers.len(), attempt = self.failures, error = %error, "etcd watch stream open failed");
        }
    }

    fn remove(&mut self, id: u64) -> Watcher {
        self.stats.watchers.fetch_sub(1, Ordering::Relaxed);
        self.watchers.remove(&id).expect("a registered watch")
    }

    fn fail_all(&mut self, error: &Error) {
        let ids: Vec<u64> = self.watchers.keys().copied().collect();
        for id in ids {
            self.remove(id).fail(duplicate(error));
        }
    }

    /// Drops the stream; every watch is created again on the next one.
    fn restart(&mut self) {
        let healthy = self.conn.take().is_some_and(|c| c.healthy);
        for w in self.watchers.values_mut() {
            w.etcd_id = None;
        }
        if healthy {
            self.failures = 0;
            self.retry_at = None;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.retry_at = Some(Instant::now() + backoff(self.failures));
        }
    }

    async fn message(
        &mut self,
        message: std::result::Result<Option<ec::WatchResponse>, ec::Error>,
    ) {
        let error = match message {
            Ok(Some(resp)) => return self.response(resp).await,
            Ok(None) => Error::unavailable("etcd closed the watch stream"),
            Err(e) => map_err(Context::op("watch stream"), e),
        };
        if !error.is_retryable() {
            self.conn = None;
            self.fail_all(&error);
            return;
        }
        tracing::warn!(
            watches = self.watchers.len(),
            error = %error,
            "etcd watch stream broke; resuming every watch on a new one"
        );
        self.restart();
    }

    async fn response(&mut self, resp: ec::WatchResponse) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let etcd_id = resp.watch_id();
        if resp.created() {
            let Some(entry) = conn.creating.pop_front() else {
                tracing::debug!(etcd_id, "etcd watch created without a pending create");
                return;
            };
            let Some(id) = entry else {
                // Dropped while being created.
                if !resp.canceled() {
                    conn.cancel(etcd_id);
                }
                return;
            };
            if resp.canceled() {
                return self.refused(id, &resp).await;
            }
            conn.healthy = true;
            conn.ids.insert(etcd_id, id);
            self.failures = 0;
            let header = resp.header().map(|h| h.revision()).unwrap_or(0);
            let w = self.watchers.get_mut(&id).expect("a registered watch");
            w.etcd_id = Some(etcd_id);
            if w.next_revision == 0 {
                let start = (header + 1).max(w.floor.map_or(0, |f| f + 1));
                w.next_revision = start;
            }
            w.min_revision = w.next_revision;
            if let Some(created) = w.created.take() {
                let _ = created.send(Ok(w.next_revision));
            }
            return;
        }
        if resp.canceled() {
            if conn.cancelling.remove(&etcd_id) {
                return;
            }
            let Some(id) = conn.ids.remove(&etcd_id) else {
                return;
            };
            let w = self.remove(id);
            let error = cancel_error(&w.spec.what, &resp);
            if resp.compact_revision() > 0 {
                // etcd keeps a compacted watcher registered on the stream until cancelled.
                if let Some(conn) = self.conn.as_mut() {
                    conn.cancel(etcd_id);
                }
            }
            tracing::debug!(watch = %w.spec.what, error = %error, "etcd cancelled a watch");
            w.fail(error);
            return;
        }
        // Progress notifications (id -1) and events of a watch being cancelled have none.
        if let Some(id) = conn.ids.get(&etcd_id) {
            let w = self.watchers.get_mut(id).expect("a registered watch");
            take_events(w, &resp);
        }
    }

    /// etcd refused to create watch `id`.
    async fn refused(&mut self, id: u64, resp: &ec::WatchResponse) {
        let w = self.watchers.get_mut(&id).expect("a registered watch");
        let error = cancel_error(&w.spec.what, resp);
        if matches!(error, Error::PermissionDenied { .. })
            && self.has_credentials
            && !w.reauthenticated
        {
            // The stream's token may be one etcd forgot (restart, expiry): authenticate
            // again and open a stream with the new token.
            w.reauthenticated = true;
            tracing::debug!(watch = %w.spec.what, "etcd refused a watch; authenticating again");
            if let Err(e) = self.auth.refresh_token().await {
                tracing::debug!(error = %e, "etcd re-authentication failed");
            }
            self.conn = None;
            for w in self.watchers.values_mut() {
                w.etcd_id = None;
            }
            self.retry_at = None;
            return;
        }
        self.remove(id).fail(error);
    }
}

async fn next_message(
    conn: &mut Option<Conn>,
) -> std::result::Result<Option<ec::WatchResponse>, ec::Error> {
    match conn {
        Some(conn) => conn.responses.message().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Writes requests to the stream in order, until the dispatcher drops the stream or the
/// stream breaks.
async fn forward(mut requests: mpsc::UnboundedReceiver<Out>, mut stream: ec::WatchRequestSender) {
    while let Some(out) = requests.recv().await {
        let sent = match out {
            Out::Create(key, opts) => stream.watch(key, Some(opts)).await,
            Out::Cancel(etcd_id) => stream.cancel(etcd_id).await,
        };
        if sent.is_err() {
            return;
        }
    }
}

/// Splits an etcd response into one coord response per revision and queues them.
fn take_events(w: &mut Watcher, resp: &ec::WatchResponse) {
    let mut current: Option<WatchResponse> = None;
    for ev in resp.events() {
        let Some(kv) = ev.kv() else { continue };
        let revision = kv.mod_revision();
        if revision < w.min_revision {
            continue;
        }
        let event = Event {
            kind: match ev.event_type() {
                ec::EventType::Put => EventKind::Put,
                ec::EventType::Delete => EventKind::Delete,
            },
            kv: w.spec.ns.kv(kv),
            prev_kv: ev.prev_kv().map(|p| w.spec.ns.kv(p)),
        };
        match current.as_mut() {
            Some(last) if last.revision == revision => last.events.push(event),
            _ => {
                if let Some(done) = current.take() {
                    // A consumer that went away is dropped by its `Drop` command.
                    let _ = w.events.send(Ok(done));
                }
                current = Some(WatchResponse {
                    revision,
                    events: vec![event],
                });
            }
        }
        w.next_revision = w.next_revision.max(revision + 1);
    }
    if let Some(done) = current {
        let _ = w.events.send(Ok(done));
    }
}

/// The error a `canceled` watch response stands for.
pub(crate) fn cancel_error(what: &str, resp: &ec::WatchResponse) -> Error {
    if resp.compact_revision() > 0 {
        return Error::Compacted {
            compact_revision: Some(resp.compact_revision()),
        };
    }
    let reason = resp.cancel_reason();
    if reason.is_empty() || reason.contains("permission denied") {
        // etcd 3.4 refuses a watch it does not permit with `created` + `canceled`.
        return Error::PermissionDenied {
            message: format!("etcd {what}: watch refused by the server {reason}")
                .trim_end()
                .to_owned(),
        };
    }
    map_err(
        Context::op(what),
        ec::Error::WatchError(format!("canceled by the server: {reason}")),
    )
}

/// The same error for another watch (sources are not cloneable: their text is kept).
fn duplicate(e: &Error) -> Error {
    match e {
        Error::Unavailable { message, .. } => Error::unavailable(message.clone()),
        Error::Timeout { operation } => Error::Timeout {
            operation: operation.clone(),
        },
        Error::Compacted { compact_revision } => Error::Compacted {
            compact_revision: *compact_revision,
        },
        Error::InvalidArgument { message } => Error::invalid_argument(message.clone()),
        Error::Unauthenticated { message, .. } => Error::unauthenticated(message.clone()),
        Error::PermissionDenied { message } => Error::PermissionDenied {
            message: message.clone(),
        },
        Error::Backend {
            backend, message, ..
        } => Error::backend(backend, message.clone()),
        other => Error::backend("etcd", other.to_string()),
    }
}

/// Delay before the `failures`-th retry: doubling from 50 ms up to 2 s, with jitter.
fn backoff(failures: u32) -> Duration {
    let exp = RESUME_BACKOFF_MIN
        .saturating_mul(1u32 << failures.saturating_sub(1).min(10))
        .min(RESUME_BACKOFF_MAX);
    // Up to 25% jitter from the clock's sub-second noise; no RNG dependency needed.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter = exp.mul_f64(f64::from(nanos % 1000) / 4000.0);
    exp + jitter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) >= RESUME_BACKOFF_MIN);
        assert!(backoff(1) < RESUME_BACKOFF_MIN * 2);
        assert!(backoff(3) >= RESUME_BACKOFF_MIN * 4);
        assert!(backoff(30) <= RESUME_BACKOFF_MAX + RESUME_BACKOFF_MAX / 4);
    }

    #[test]
    fn duplicated_errors_keep_their_kind() {
        let e = duplicate(&Error::unavailable("gone"));
        assert!(matches!(e, Error::Unavailable { ref message, .. } if message == "gone"));
        let e = duplicate(&Error::Compacted {
            compact_revision: Some(7),
        });
        assert!(matches!(
            e,
            Error::Compacted {
                compact_revision: Some(7)
            }
        ));
    }
}
