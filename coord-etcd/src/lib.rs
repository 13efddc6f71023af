//! etcd v3 backend for `coord`, over the [`etcd_client`] crate.
//!
//! [`EtcdBackend`] implements [`coord_core::CoordinationBackend`] with a one-to-one
//! mapping onto etcd's KV, Txn, Lease and Watch services, so `coord`'s recipes run on etcd
//! with etcd's own key layout (and interoperate with `etcdctl lock` / `etcdctl elect`).
//!
//! ```no_run
//! use std::time::Duration;
//! use coord_core::{BackendExt, CoordinationBackend};
//! use coord_etcd::{EtcdBackend, EtcdOptions};
//!
//! # async fn run() -> coord_core::Result<()> {
//! let etcd = EtcdBackend::connect(
//!     EtcdOptions::new(["127.0.0.1:2379"])
//!         .namespace("myapp/")
//!         .request_timeout(Duration::from_secs(5)),
//! )
//! .await?;
//! etcd.put(b"config", b"v1", coord_core::NO_LEASE).await?;
//! # Ok(()) }
//! ```
//!
//! # Behaviour worth knowing
//!
//! - **Connect probes the cluster.** etcd-client connects lazily; [`EtcdBackend::connect`]
//!   makes one read so that a wrong endpoint fails there with
//!   [`Error::Unavailable`].
//! - **Errors keep etcd's error.** [`Error::Unavailable`] and [`Error::Backend`] keep what
//!   etcd-client reported as their [`source`](std::error::Error::source): the
//!   `tonic::Status` of a failed call (without its metadata, which may carry a token),
//!   whose own sources lead down to the I/O error of a failed connect, the tonic
//!   transport or I/O error, or else the `etcd_client::Error`. A read of a compacted
//!   revision gives `Compacted { compact_revision: None }`, as etcd's error does not say
//!   which revision is the oldest kept.
//! - **Timeouts.** The request timeout applies to each unary call, keep-alive round trip
//!   and watch creation, never to the lifetime of a watch.
//! - **Leases** are granted in whole seconds (rounded up). etcd raises TTLs below its
//!   minimum (`1.5 × election timeout`, 2 s with default server settings) to that minimum;
//!   the granted TTL is reported as etcd granted it.
//! - **One watch stream per connection.** Every watch of a backend and its clones shares
//!   one etcd watch stream, through a dispatcher task spawned on the first watch; dropping a
//!   watch cancels it on the server.
//! - **Watches survive restarts.** When the stream breaks, every watch is created again
//!   on a new stream from the revision after the last one delivered, with backoff, until
//!   it works or it is dropped; if that revision was compacted meanwhile it ends with
//!   [`Error::Compacted`].
//! - **Restarts.** Calls in flight fail with `Unavailable`; later calls work once etcd is
//!   back. Keep-alive streams are re-opened transparently.
//! - **Failover between members.** etcd-client's balancer keeps picking an endpoint that
//!   went down (hyperium/tonic#2839), so a call that could not connect is sent again: it
//!   never reached a server. Reads (range, read-only txn, lease time-to-live, current
//!   revision) and watch creations are also sent again for up to 5 s while the cluster
//!   elects a leader, and, with several endpoints, while they fail with `Unavailable`. Any other failed write is
//!   reported as [`Error::Unavailable`]: it may or may not have been applied.
//! - **A member cut off from its leader** is skipped. Every call asks etcd to refuse it
//!   when the member has no leader (`hasleader`), so calls to an isolated member fail at
//!   once instead of after etcd's request timeout, and etcd cancels the watches and
//!   keep-alive streams of a member that has been leaderless for three election timeouts:
//!   they are resumed on another member. With several endpoints, a read attempt that gets
//!   no answer within 1 s (a member that still thinks it has a leader but cannot reach
//!   it) is sent to the other members in turn, within the 5 s window.
//! - **Txn limits are etcd's.** etcd refuses a txn whose branch writes one key twice (two
//!   puts, or a put and a delete of it) with
//!   [`Error::InvalidArgument`] ("duplicate key given in txn request"); a read after a write
//!   of the same key is fine. Its default limit is 128 operations per txn.
//! - **HTTP/2 keep-alive** pings only while streams (watches, keep-alives) are open: etcd
//!   closes connections that ping while idle (`too_many_pings`).

mod convert;
mod error;
mod from_url;
mod lease;
mod options;
mod watch;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use coord_core::{
    BackendInfo, CoordinationBackend, Error, LeaseGrant, LeaseId, LeaseStatus, RangeRequest,
    RangeResponse, Result, Revision, TxnRequest, TxnResponse, WatchRequest, WatchStream,
};

pub use etcd_client;
pub use from_url::DEFAULT_PORT;
pub use options::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEP_ALIVE_INTERVAL, DEFAULT_KEEP_ALIVE_TIMEOUT, EtcdOptions,
};

use convert::Namespace;
use error::{Context, map_err};

/// etcd's lease TTL granularity.
pub const LEASE_GRANULARITY: Duration = Duration::from_secs(1);
/// How long a read is retried while the cluster fails over: a leader election takes about
/// one election timeout (1 s by default), a few on a busy machine.
pub(crate) const READ_RETRY: Duration = Duration::from_secs(5);
/// With several endpoints, how long one read attempt may take before it is sent to
/// another member while the read-retry window lasts. A member cut off from its leader
/// takes etcd's request timeout (7 s with default settings) to fail a linearizable read,
/// longer than the whole window; a healthy member answers in milliseconds.
pub(crate) const READ_ATTEMPT: Duration = Duration::from_secs(1);
/// The shortest TTL an etcd server with default settings grants (`--heartbeat-interval`
/// 100 ms, `--election-timeout` 1000 ms): shorter requests are raised to it. Servers with
/// other settings grant `ceil(1.5 × election timeout)`.
pub const DEFAULT_MIN_LEASE_TTL: Duration = Duration::from_secs(2);

/// A [`CoordinationBackend`] on an etcd v3 cluster. Cheap to clone: clones share the
/// connection.
#[derive(Clone)]
pub struct EtcdBackend {
    inner: Arc<Inner>,
}

struct Inner {
    client: etcd_client::Client,
    ns: Namespace,
    endpoints: Vec<String>,
    request_timeout: Option<Duration>,
    keepers: lease::Keepers,
    /// How often a call that never reached a server is sent ([`error::retry_unsent`]).
    attempts: u32,
    /// With several endpoints, a client of each member alone, connected on first use:
    /// a read retried because its member did not answer in time goes to the next one of
    /// these in turn, as the balanced client may pick the stuck member again and again.
    members: Vec<tokio::sync::OnceCell<etcd_client::Client>>,
    connect_options: etcd_client::ConnectOptions,
    connect_timeout: Duration,
    /// Where the next read retry starts in `members`.
    next_member: std::sync::atomic::AtomicUsize,
    /// The server's minimum lease TTL in seconds, as far as grants have shown it.
    min_lease_secs: std::sync::atomic::AtomicU64,
    /// Every watch, on one etcd watch stream.
    watches: watch::Watches,
}

impl EtcdBackend {
    /// Connects to the cluster and checks it answers.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for unusable options (no endpoint, bad URL, a zero connect
    /// or request timeout, TLS files that are missing or not PEM, named by their URL
    /// parameter: `cacert`, `cert`, `key`), before any connection; [`Error::Unavailable`]
    /// when no endpoint answers within the connect timeout (with a hint naming the other
    /// scheme when the server closes the connection during the TLS handshake, or at once);
    /// [`Error::Unauthenticated`] for wrong or missing credentials (auth enabled on the
    /// server), and for a TLS failure retrying cannot fix: a server certificate the client
    /// cannot verify, a client certificate the server refuses. Its message starts `TLS:`
    /// and says what failed; its source is the connect error.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future drops the connection.
    pub async fn connect(options: EtcdOptions) -> Result<EtcdBackend> {
        if options.endpoints.is_empty() {
            return Err(Error::invalid_argument("etcd: no endpoint given"));
        }
        if options.connect_timeout.is_zero() {
            return Err(Error::invalid_argument(
                "etcd: the connect timeout (`connect_timeout`) must be positive",
            ));
        }
        if options.request_timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::invalid_argument(
                "etcd: the request timeout (`request_timeout`) must be positive",
            ));
        }
        let connect_options = options.to_connect_options()?;
        let endpoints = options.endpoints.clone();
        let what = format!("connect to {}", endpoints.join(","));
        let tls = options.tls_requested() || endpoints.iter().any(|e| e.starts_with("https://"));
        let limit = options.connect_timeout;
        let connected = tokio::time::timeout(
            limit,
            etcd_client::Client::connect(&endpoints, Some(connect_options.clone())),
        )
        .await;
        let client = match connected {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(error::connect_error(map_err(Context::op(&what), e), tls)),
            Err(_) => {
                return Err(Error::unavailable(format!(
                    "etcd {what}: no answer within {limit:?}"
                )));
            }
        };
        let backend = EtcdBackend {
            inner: Arc::new(Inner {
                ns: Namespace::new(options.namespace.clone()),
                endpoints: endpoints.clone(),
                request_timeout: options.request_timeout,
                keepers: lease::Keepers::default(),
                attempts: error::send_attempts(endpoints.len()),
                members: if endpoints.len() > 1 {
                    endpoints.iter().map(|_| Default::default()).collect()
                } else {
                    Vec::new()
                },
                watches: watch::Watches::new(
                    client.clone(),
                    options.user.is_some(),
                    options.request_timeout,
                    error::send_attempts(endpoints.len()),
                ),
                client,
                connect_options,
                connect_timeout: limit,
                next_member: Default::default(),
                min_lease_secs: DEFAULT_MIN_LEASE_TTL.as_secs().into(),
            }),
        };
        // etcd-client connects lazily: make one read so a wrong endpoint fails here.
        match tokio::time::timeout(limit, backend.read_revision()).await {
            Ok(Ok(_)) => {}
            // The server answered; this user may just not read the namespace key.
            Ok(Err(Error::PermissionDenied { .. })) => {}
            Ok(Err(Error::Timeout { .. })) | Err(_) => {
                return Err(Error::unavailable(format!(
                    "etcd {what}: no answer within {limit:?}"
                )));
            }
            Ok(Err(e)) => return Err(error::naming(error::connect_error(e, tls), &what)),
        }
        Ok(backend)
    }

    /// The underlying etcd-client client, for what coord does not cover (maintenance,
    /// auth admin, etcd's own lock and election services). Keys used through it are not
    /// namespaced.
    pub fn client(&self) -> etcd_client::Client {
        self.inner.client.clone()
    }

    /// How many etcd watch streams this backend (with its clones) has opened: one, plus
    /// one for each time the stream broke and was re-opened. For tests.
    #[doc(hidden)]
    pub fn watch_streams_opened(&self) -> u64 {
        self.inner
            .watches
            .stats()
            .streams_opened
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many watches this backend (with its clones) has registered with etcd or is
    /// creating or resuming. For tests.
    #[doc(hidden)]
    pub fn active_watches(&self) -> u64 {
        self.inner
            .watches
            .stats()
            .watchers
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The namespace prefix (empty for none).
    pub fn namespace(&self) -> &[u8] {
        self.inner.ns.prefix()
    }

    /// The endpoints this backend was connected with.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// Runs a unary call under the request timeout.
    async fn unary<T>(
        &self,
        operation: &str,
        fut: impl Future<Output = Result<T>> + Send,
    ) -> Result<T> {
        match self.inner.request_timeout {
            None => fut.await,
            Some(limit) => tokio::time::timeout(limit, fut)
                .await
                .unwrap_or_else(|_| Err(error::timeout(operation, limit))),
        }
    }

    /// The client of member `i` alone (several endpoints only), connected on first use.
    async fn member(
        &self,
        i: usize,
    ) -> std::result::Result<etcd_client::Client, etcd_client::Error> {
        let endpoint = &self.inner.endpoints[i];
        self.inner.members[i]
            .get_or_try_init(|| async {
                let connect = etcd_client::Client::connect(
                    [endpoint],
                    Some(self.inner.connect_options.clone()),
                );
                match tokio::time::timeout(self.inner.connect_timeout, connect).await {
                    Ok(client) => client,
                    Err(_) => Err(etcd_client::Error::IoError(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("connect to {endpoint}: timed out"),
                    ))),
                }
            })
            .await
            .cloned()
    }

    /// Sends the call `call` makes on a client handle under the request timeout, again when
    /// it never reached a server ([`error::retry_unsent`]), and, for a `read`, again for up
    /// to [`READ_RETRY`] while the cluster elects a leader or (with several endpoints) while
    /// it fails with `Unavailable` or a member does not answer within [`READ_ATTEMPT`];
    /// maps its error with `ctx`.
    async fn send<T, F, Fut>(&self, ctx: Context<'_>, read: bool, mut call: F) -> Result<T>
    where
        F: FnMut(etcd_client::Client) -> Fut + Send,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>> + Send,
        T: Send,
    {
        let several = self.inner.endpoints.len() > 1;
        // Half the request timeout at most, so that a stuck member leaves time to ask
        // another.
        let attempt_limit = self
            .inner
            .request_timeout
            .map_or(READ_ATTEMPT, |t| READ_ATTEMPT.min(t / 2));
        self.unary(ctx.operation, async {
            let deadline = tokio::time::Instant::now() + READ_RETRY;
            let mut delay = Duration::from_millis(25);
            // The first attempt goes through the balanced client; retries of a read with
            // several endpoints go to one member after the other.
            let mut member: Option<usize> = None;
            loop {
                let client = match member {
                    None => Ok(self.inner.client.clone()),
                    Some(i) => self.member(i).await,
                };
                let attempt = async {
                    let client = client?;
                    error::retry_unsent(self.inner.attempts, || call(client.clone())).await
                };
                // Bounded while another attempt fits in the window; the last one may take
                // as long as the request timeout allows (a slow but healthy answer).
                let bounded = read
                    && several
                    && tokio::time::Instant::now() + attempt_limit * 2 < deadline;
                let outcome = if bounded {
                    match tokio::time::timeout(attempt_limit, attempt).await {
                        Ok(outcome) => outcome.map_err(Some),
                        Err(_) => Err(None),
                    }
                } else {
                    attempt.await.map_err(Some)
                };
                let e = match outcome {
                    Ok(v) => return Ok(v),
                    Err(e) => e,
                };
                if read && several {
                    let next = match member {
                        Some(i) => i + 1,
                        None => self
                            .inner
                            .next_member
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                    };
                    member = Some(next % self.inner.endpoints.len());
                }
                let Some(e) = e else {
                    tracing::debug!(operation = ctx.operation, limit = ?attempt_limit, "etcd read not answered in time; asking another member");
                    continue;
                };
                // A read may be sent again whatever became of it. Another member may answer
                // it when the one it went to died; with one endpoint, only waiting out an
                // election is worth it (a dead server is reported at once).
                let again = read
                    && (error::leaderless(&e) || several)
                    && tokio::time::Instant::now() + delay < deadline;
                let mapped = map_err(ctx, e);
                if !(again && matches!(mapped, Error::Unavailable { .. })) {
                    return Err(mapped);
                }
                tracing::debug!(operation = ctx.operation, error = %mapped, "etcd read failed; reading again");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(500));
            }
        })
        .await
    }

    /// The current revision, from a count-only read of one key in the namespace.
    async fn read_revision(&self) -> Result<Revision> {
        self.read_revision_at(&[]).await
    }

    /// The current revision, from a count-only read of `key` (in the namespace): a caller
    /// whose role covers only some keys (say, under a prefix that a wrapper such as
    /// `Namespaced` adds) can read the key it is about to watch.
    async fn read_revision_at(&self, key: &[u8]) -> Result<Revision> {
        let key = match (key, self.inner.ns.prefix()) {
            ([], []) => vec![0],
            ([], prefix) => prefix.to_vec(),
            (key, _) => self.inner.ns.key(key),
        };
        let what = "current revision";
        let opts = etcd_client::GetOptions::new().with_count_only();
        let resp = self
            .send(Context::op(what), true, |c| {
                let (key, opts) = (key.clone(), opts.clone());
                async move { c.kv_client().get(key, Some(opts)).await }
            })
            .await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// The oldest revision still kept, found with a watch from revision 1 that etcd cancels
    /// with the compaction revision. `None` when it could not be found out.
    async fn compact_revision(&self) -> Option<Revision> {
        let key = self.inner.ns.key(&[0]);
        let probe = async {
            let mut client = self.inner.client.watch_client();
            let mut stream = client
                .watch(
                    key,
                    Some(etcd_client::WatchOptions::new().with_start_revision(1)),
                )
                .await
                .ok()?;
            loop {
                let resp = stream.message().await.ok()??;
                if resp.canceled() {
                    return (resp.compact_revision() > 0).then_some(resp.compact_revision());
                }
                if !resp.created() || !resp.events().is_empty() {
                    // Revision 1 is still kept: nothing is compacted.
                    return None;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(2), probe)
            .await
            .ok()
            .flatten()
    }
}

impl fmt::Debug for EtcdBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdBackend")
            .field("endpoints", &self.inner.endpoints)
            .field(
                "namespace",
                &String::from_utf8_lossy(self.inner.ns.prefix()),
            )
            .field("request_timeout", &self.inner.request_timeout)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl CoordinationBackend for EtcdBackend {
    /// The minimum lease TTL is [`DEFAULT_MIN_LEASE_TTL`] until a grant shows the
    /// server's own (a request of 1 s, or one the server raised), then that.
    fn info(&self) -> BackendInfo {
        let min = self.inner.min_lease_secs.load(Ordering::Relaxed);
        BackendInfo::new("etcd", LEASE_GRANULARITY, Duration::from_secs(min))
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseGrant> {
        if ttl.is_zero() {
            return Err(Error::invalid_argument("lease TTL must be positive"));
        }
        // Checked before rounding: whole seconds of `Duration::MAX` do not fit a u64.
        coord_core::check_lease_ttl(ttl, coord_core::MAX_LEASE_TTL)?;
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let what = "lease grant";
        let resp = self
            .send(Context::op(what), false, |c| async move {
                c.lease_client().grant(secs as i64, None).await
            })
            .await?;
        if !resp.error().is_empty() {
            return Err(Error::backend(
                "etcd",
                format!("lease grant refused: {}", resp.error()),
            ));
        }
        let granted = resp.ttl().max(0).unsigned_abs();
        // A request the server raised, or one of 1 s, shows its minimum exactly.
        if granted > secs || (secs == 1 && granted == 1) {
            self.inner.min_lease_secs.store(granted, Ordering::Relaxed);
        }
        Ok(LeaseGrant {
            id: resp.id(),
            ttl: Duration::from_secs(granted),
        })
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        let client = self.inner.client.lease_client();
        self.unary(
            "lease keep-alive",
            self.inner
                .keepers
                .keep_alive(&client, lease, self.inner.attempts),
        )
        .await
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.inner.keepers.forget(lease);
        let what = "lease revoke";
        self.send(Context::lease(what, lease), false, |c| async move {
            c.lease_client().revoke(lease).await
        })
        .await?;
        Ok(())
    }

    async fn lease_time_to_live(&self, lease: LeaseId) -> Result<LeaseStatus> {
        let what = "lease time-to-live";
        let resp = self
            .send(Context::lease(what, lease), true, |c| async move {
                c.lease_client().time_to_live(lease, None).await
            })
            .await?;
        if resp.ttl() < 0 {
            return Err(Error::LeaseNotFound { lease: Some(lease) });
        }
        Ok(LeaseStatus {
            id: lease,
            granted_ttl: Duration::from_secs(resp.granted_ttl().max(0).unsigned_abs()),
            remaining: Duration::from_secs(resp.ttl().unsigned_abs()),
        })
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        request.validate()?;
        let what = format!("range {:?}", request.range);
        let (key, opts) = self.inner.ns.get_options(&request);
        let resp = self
            .send(Context::op(&what), true, |c| {
                let (key, opts) = (key.clone(), opts.clone());
                async move { c.kv_client().get(key, Some(opts)).await }
            })
            .await?;
        Ok(self.inner.ns.range_response(&resp, 0))
    }

    async fn txn(&self, request: TxnRequest) -> Result<TxnResponse> {
        request.validate()?;
        let what = "txn";
        let txn = self.inner.ns.txn(&request);
        let ctx = Context {
            operation: what,
            lease: convert::txn_lease(&request),
        };
        let read = request
            .success
            .iter()
            .chain(&request.failure)
            .all(|op| matches!(op, coord_core::TxnOp::Range(_)));
        let resp = self
            .send(ctx, read, |c| {
                let txn = txn.clone();
                async move { c.kv_client().txn(txn).await }
            })
            .await
            .map_err(|e| too_large(e, &request))?;
        Ok(self.inner.ns.txn_response(&resp))
    }

    async fn watch(&self, request: WatchRequest) -> Result<WatchStream> {
        // A member's store may lag the one a caller last read from: "now" on a lagging
        // member is in the caller's past, and such a watch would replay events the caller
        // has already seen (a deleted earlier incarnation of its own key, say). A
        // linearizable read gives a "now" no older than anything read before the call.
        let floor = match request.start {
            coord_core::WatchStart::Now | coord_core::WatchStart::Revision(0)
                if self.inner.endpoints.len() > 1 =>
            {
                Some(self.read_revision_at(request.range.start()).await?)
            }
            _ => None,
        };
        self.inner
            .watches
            .watch(&self.inner.ns, request, floor)
            .await
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.read_revision().await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        if revision <= 0 {
            return Err(Error::invalid_argument(format!(
                "compaction revision must be positive, got {revision}"
            )));
        }
        let what = format!("compact at {revision}");
        let result = self
            .send(Context::op(&what), false, |c| async move {
                c.kv_client().compact(revision, None).await
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(Error::Compacted { .. }) => Err(Error::Compacted {
                compact_revision: self.compact_revision().await,
            }),
            Err(e) => Err(e),
        }
    }
}

/// etcd's refusal of a request over its `--max-request-bytes` ("etcdserver: request is too
/// large", or gRPC's "message larger than max" past the transport's own bound), as every
/// backend reports it: [`Error::InvalidArgument`] naming the size and the limit.
fn too_large(error: Error, request: &TxnRequest) -> Error {
    let text = error.to_string();
    if text.contains("request is too large") || text.contains("larger than max") {
        tracing::debug!(error = %text, "etcd refused a request as too large");
        return coord_core::request_too_large(
            Some(coord_core::request_bytes(request)),
            coord_core::MAX_REQUEST_BYTES,
        );
    }
    error
}
