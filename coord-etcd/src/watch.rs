//! Watches over etcd's `Watch` stream, resumed transparently when the stream breaks.
//!
//! - A watch "from now" with one endpoint is created with etcd's start revision 0: etcd
//!   then watches from `R + 1` where `R` is the revision in the `created` response's
//!   header, so the [`WatchStream::start_revision`] is exact without an extra round trip
//!   (and without the 100 ms catch-up delay etcd 3.4 adds to a watch whose start is
//!   already in the past). With several endpoints the member that creates the watch may
//!   lag the one the caller last read from, so "now" is a linearizable read's revision
//!   plus one instead (a start ahead of a lagging member is fine: etcd waits for it).
//! - `watch()` returns only after etcd's `created` response.
//! - One etcd response may carry events of several revisions (etcd batches catch-up
//!   events); they are split into one [`WatchResponse`] per revision. Without etcd's
//!   `fragment` option (not used) etcd never splits one revision across responses; should
//!   it ever happen, the revision is delivered as two responses rather than held back.
//! - A `Now` watch whose stream breaks before its first event resumes from its
//!   start revision, so nothing after the moment `watch()` returned is missed.
//! - etcd's progress notifications are not used to advance the resume point: etcd 3.4 can
//!   send one ahead of pending events (etcd-io/etcd#15220). So a long-idle watch that
//!   resumes after a restart may report `Compacted` although it missed nothing.
//! - A `canceled` response with a compaction revision ends the stream with
//!   [`Error::Compacted`]; any other cancellation ends it with the mapped error.
//! - Watches are created with etcd's `hasleader`: a member that has had no leader for
//!   three election timeouts (cut off from the quorum, so its store no longer moves)
//!   ends them with "no leader", which resumes them like a break, on another member.
//! - When the stream breaks (etcd restart, connection reset, h2 error) a new etcd watch is
//!   opened from the revision after the last one delivered, with backoff, until it works or
//!   the consumer drops the stream. If that revision has been compacted meanwhile the
//!   stream ends with [`Error::Compacted`]: events are never skipped silently.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use coord_core::{
    Error, Event, EventKind, Result, Revision, WatchRequest, WatchResponse, WatchStart, WatchStream,
};
use etcd_client as ec;

use crate::convert::Namespace;
use crate::error::{Context, map_err, retry_unsent};

/// Watch responses may be large (a lease expiry deleting many keys with prev kv);
/// etcd-client's 4 MiB default would break such a watch for good.
const MAX_WATCH_MESSAGE: usize = 256 * 1024 * 1024;
/// How long a watch creation may take when no request timeout is configured.
const DEFAULT_CREATE_TIMEOUT: Duration = Duration::from_secs(30);
const RESUME_BACKOFF_MIN: Duration = Duration::from_millis(50);
const RESUME_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Everything needed to (re)open one watch.
struct Params {
    client: ec::WatchClient,
    /// For re-authenticating (`refresh_token`) when a resumed watch is refused.
    auth: ec::Client,
    ns: Namespace,
    key: Vec<u8>,
    range_end: Vec<u8>,
    prev_kv: bool,
    create_timeout: Duration,
    /// How often a watch creation that never reached a server is sent.
    attempts: u32,
    /// For messages: the range as the caller gave it.
    what: String,
}

/// Establishes a watch; see the module docs. A watch from now starts after `now_floor`
/// when given (a revision the cluster had reached before the call), else at the answering
/// member's revision.
pub(crate) async fn watch(
    client: &ec::Client,
    ns: &Namespace,
    request: WatchRequest,
    now_floor: Option<Revision>,
    request_timeout: Option<Duration>,
    attempts: u32,
) -> Result<WatchStream> {
    request.range.validate()?;
    let start = match request.start {
        // Revision 0 means "now", as in etcd's own API.
        WatchStart::Now | WatchStart::Revision(0) => now_floor.map_or(0, |r| r + 1),
        WatchStart::Revision(r) if r > 0 => r,
        WatchStart::Revision(r) => {
            return Err(Error::invalid_argument(format!(
                "watch start revision must not be negative, got {r}"
            )));
        }
    };
    let (key, range_end) = ns.bounds(&request.range);
    let params = Arc::new(Params {
        client: client
            .watch_client()
            .max_decoding_message_size(MAX_WATCH_MESSAGE),
        auth: client.clone(),
        ns: ns.clone(),
        key,
        range_end,
        prev_kv: request.prev_kv,
        create_timeout: request_timeout.unwrap_or(DEFAULT_CREATE_TIMEOUT),
        attempts,
        what: format!("watch {:?}", request.range),
    });
    let (stream, header_revision) = open_first(&params, start).await?;
    let start_revision = if start == 0 {
        header_revision + 1
    } else {
        start
    };
    let state = State {
        params,
        stream: Some(stream),
        next_revision: start_revision,
        min_revision: start_revision,
        pending: VecDeque::new(),
        done: false,
        failures: 0,
    };
    let inner = futures::stream::unfold(state, |mut state| async move {
        let item = state.next().await?;
        Some((item, state))
    });
    Ok(WatchStream::new(start_revision, Box::pin(inner)))
}

/// [`open`], sent again for up to [`crate::READ_RETRY`] while it fails with `Unavailable`
/// and other members may answer (several endpoints) or the member has no leader yet (etcd
/// refuses watches then, as they are created with `hasleader`): creating a watch changes
/// nothing, so it is as safe to repeat as a read. (With one endpoint a dead server is
/// reported at once.)
async fn open_first(params: &Params, start: Revision) -> Result<(ec::WatchStream, Revision)> {
    let deadline = tokio::time::Instant::now() + crate::READ_RETRY;
    let mut delay = Duration::from_millis(25);
    loop {
        match open(params, start).await {
            Err(Error::Unavailable { message, .. })
                if (params.attempts > 1 || crate::error::leaderless_message(&message))
                    && tokio::time::Instant::now() + delay < deadline =>
            {
                tracing::debug!(watch = %params.what, error = %message, "etcd watch creation failed; sending again");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(500));
            }
            result => return result,
        }
    }
}

/// Opens an etcd watch from `start` (0: now) and waits for its `created` response.
/// Returns the stream and the `created` header revision.
async fn open(params: &Params, start: Revision) -> Result<(ec::WatchStream, Revision)> {
    let ctx = Context::op(&params.what);
    let create = async {
        let mut opts = ec::WatchOptions::new().with_start_revision(start);
        if !params.range_end.is_empty() {
            opts = opts.with_range(params.range_end.clone());
        }
        if params.prev_kv {
            opts = opts.with_prev_key();
        }
        let mut stream = retry_unsent(params.attempts, || {
            let (mut client, key, opts) = (params.client.clone(), params.key.clone(), opts.clone());
            async move { client.watch(key, Some(opts)).await }
        })
        .await
        .map_err(|e| map_err(ctx, e))?;
        loop {
            match stream.message().await.map_err(|e| map_err(ctx, e))? {
                Some(resp) if resp.created() => {
                    if resp.canceled() {
                        return Err(cancel_error(&params.what, &resp));
                    }
                    let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
                    return Ok((stream, revision));
                }
                // Nothing precedes `created` on a fresh stream; skip defensively.
                Some(_) => {}
                None => {
                    return Err(Error::unavailable(format!(
                        "etcd {}: stream closed before the watch was created",
                        params.what
                    )));
                }
            }
        }
    };
    match tokio::time::timeout(params.create_timeout, create).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout {
            operation: format!(
                "etcd {} creation (timeout {:?})",
                params.what, params.create_timeout
            ),
        }),
    }
}

/// The error a `canceled` watch response stands for.
fn cancel_error(what: &str, resp: &ec::WatchResponse) -> Error {
    if resp.compact_revision() > 0 {
        return Error::Compacted {
            compact_revision: Some(resp.compact_revision()),
        };
    }
    let reason = resp.cancel_reason();
    if reason.is_empty() || reason.contains("permission denied") {
        // etcd 3.4 refuses a watch it does not permit with `created` + `canceled` and no
        // reason.
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

struct State {
    params: Arc<Params>,
    /// The live etcd watch; `None` after it broke, until it is resumed.
    stream: Option<ec::WatchStream>,
    /// The first revision not delivered yet: where a resumed watch starts.
    next_revision: Revision,
    /// Events below this revision are dropped (a safety net; etcd does not send them).
    min_revision: Revision,
    /// Responses split from one etcd response, not yet handed out.
    pending: VecDeque<WatchResponse>,
    /// The stream has ended (after an error item).
    done: bool,
    /// Failed resume attempts in a row.
    failures: u32,
}

impl State {
    async fn next(&mut self) -> Option<Result<WatchResponse>> {
        loop {
            if let Some(resp) = self.pending.pop_front() {
                return Some(Ok(resp));
            }
            if self.done {
                return None;
            }
            let Some(stream) = self.stream.as_mut() else {
                if let Err(e) = self.resume().await {
                    self.done = true;
                    return Some(Err(e));
                }
                continue;
            };
            match stream.message().await {
                Ok(Some(resp)) => {
                    if resp.canceled() {
                        self.done = true;
                        self.stream = None;
                        return Some(Err(cancel_error(&self.params.what, &resp)));
                    }
                    self.take_events(&resp);
                }
                Ok(None) => {
                    tracing::warn!(
                        watch = %self.params.what,
                        next_revision = self.next_revision,
                        "etcd closed the watch stream; resuming"
                    );
                    self.stream = None;
                }
                Err(e) => {
                    let e = map_err(Context::op(&self.params.what), e);
                    self.stream = None;
                    if !e.is_retryable() {
                        self.done = true;
                        return Some(Err(e));
                    }
                    tracing::warn!(
                        watch = %self.params.what,
                        next_revision = self.next_revision,
                        error = %e,
                        "etcd watch stream broke; resuming"
                    );
                }
            }
        }
    }

    /// Opens a new etcd watch from `next_revision`, retrying retryable failures with
    /// backoff. Returns the error that ends the stream.
    async fn resume(&mut self) -> Result<()> {
        let mut reauthenticated = false;
        loop {
            if self.failures > 0 {
                tokio::time::sleep(backoff(self.failures)).await;
            }
            match open(&self.params, self.next_revision).await {
                Ok((stream, _)) => {
                    if self.failures > 0 {
                        tracing::warn!(
                            watch = %self.params.what,
                            from_revision = self.next_revision,
                            attempts = self.failures + 1,
                            "etcd watch resumed"
                        );
                    }
                    self.stream = Some(stream);
                    self.min_revision = self.next_revision;
                    self.failures = 0;
                    return Ok(());
                }
                Err(e) if e.is_retryable() => {
                    self.failures = self.failures.saturating_add(1);
                    if self.failures == 1 {
                        tracing::warn!(
                            watch = %self.params.what,
                            from_revision = self.next_revision,
                            error = %e,
                            "etcd watch cannot resume yet; retrying with backoff"
                        );
                    } else {
                        tracing::debug!(
                            watch = %self.params.what,
                            from_revision = self.next_revision,
                            attempt = self.failures,
                            error = %e,
                            "etcd watch resume attempt failed"
                        );
                    }
                }
                // This watch was permitted before: the refusal may come from an auth
                // token the restarted server no longer knows. Authenticate again, once.
                Err(Error::PermissionDenied { .. }) if !reauthenticated => {
                    reauthenticated = true;
                    if let Err(e) = self.params.auth.refresh_token().await {
                        tracing::debug!(error = %e, "etcd re-authentication failed");
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Splits an etcd response into one coord response per revision.
    fn take_events(&mut self, resp: &ec::WatchResponse) {
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let revision = kv.mod_revision();
            if revision < self.min_revision {
                continue;
            }
            let event = Event {
                kind: match ev.event_type() {
                    ec::EventType::Put => EventKind::Put,
                    ec::EventType::Delete => EventKind::Delete,
                },
                kv: self.params.ns.kv(kv),
                prev_kv: ev.prev_kv().map(|p| self.params.ns.kv(p)),
            };
            match self.pending.back_mut() {
                Some(last) if last.revision == revision => last.events.push(event),
                _ => self.pending.push_back(WatchResponse {
                    revision,
                    events: vec![event],
                }),
            }
            self.next_revision = self.next_revision.max(revision + 1);
        }
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
}
