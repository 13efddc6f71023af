//! [`RedisBackend`]: etcd's data model kept in Redis by Lua scripts (see the crate docs for
//! the key layout).

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use coord_core::{
    BackendInfo, CoordinationBackend, Error, LeaseGrant, LeaseId, LeaseStatus, RangeRequest,
    RangeResponse, Result, Revision, TxnOp, TxnOpResponse, TxnRequest, TxnResponse, UrlOptions,
    WatchRequest, WatchStart, WatchStream,
};
use redis::Script;
use tokio::task::JoinHandle;

use crate::codec::{Value, contract, decode, duration_ms, int, list, op_response_of, txn_request};
use crate::connection::Connections;
pub(crate) use crate::connection::redis_error;
use crate::data_loss::DataLost;
use crate::watch;
use crate::{RedisOptions, Revisions};

/// Lease TTLs are granted in whole seconds, as etcd grants them (the server keeps
/// deadlines in milliseconds of its clock).
pub const LEASE_GRANULARITY: Duration = Duration::from_secs(1);
/// The shortest TTL granted: etcd's with default server settings, so that code tried on
/// Redis gets the leases it would get from etcd.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(2);
/// The longest TTL granted: etcd's (`MaxLeaseTTL`, 9,000,000,000 s). Deadlines (server
/// milliseconds plus the TTL) are Lua numbers and stay below 10^14, exact wherever a script
/// prints one with `%.14g`.
pub const MAX_LEASE_TTL: Duration = coord_core::MAX_LEASE_TTL;
/// How often each client's reaper expires due leases: a lease whose holder died has its
/// keys deleted within its TTL plus this (plus one script's run time). Every script
/// reaps too, so reads and writes never see an expired lease's keys.
pub const REAP_INTERVAL: Duration = Duration::from_millis(100);
/// Leases reaped per script run (`REAP_BATCH` in common.lua).
const REAP_BATCH: i64 = 64;
/// Lease ids are below this, for the same reason as [`MAX_LEASE_TTL`].
const LEASE_ID_BOUND: u64 = 100_000_000_000_000;
const COMMON: &str = include_str!("lua/common.lua");
const TXN: &str = include_str!("lua/txn.lua");
const LEASE: &str = include_str!("lua/lease.lua");
const COMPACT: &str = include_str!("lua/compact.lua");
const EPOCH: &str = include_str!("lua/epoch.lua");

/// The scripts, each with the shared prologue in front (Lua scripts cannot include).
struct Scripts {
    txn: Script,
    lease: Script,
    compact: Script,
    /// Run alone, at connect: adopts (or creates) the namespace's epoch.
    epoch: Script,
}

impl Scripts {
    fn new() -> Self {
        let with_common = |body: &str| Script::new(&format!("{COMMON}\n{body}"));
        Scripts {
            txn: with_common(TXN),
            lease: with_common(LEASE),
            compact: with_common(COMPACT),
            epoch: Script::new(EPOCH),
        }
    }
}

pub(crate) struct Inner {
    pub(crate) connections: Connections,
    /// `{namespace}`: the hash tag every key of the namespace starts with.
    pub(crate) prefix: String,
    /// `{namespace}:rev`, the one key every script declares (made once, not per call).
    rev_key: String,
    scripts: Scripts,
    url: String,
    next_lease: AtomicU64,
    ids: RandomState,
    /// The reader shared by every watch of this backend.
    pub(crate) watch_hub: watch::Hub,
    /// The namespace's epoch when this client connected; every script checks it first.
    epoch: String,
    revisions: Revisions,
    /// Fires for good when a script finds the epoch gone or changed.
    pub(crate) data_lost: DataLost,
}

/// A client of one namespace on one Redis server. Cloning gives another handle to the same
/// connection; the reaper task stops when the last handle is dropped.
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
    _reaper: Arc<Reaper>,
}

struct Reaper(JoinHandle<()>);

impl Drop for Reaper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &self.inner.url)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// Connects to the server the options name, loads the scripts, adopts the namespace's
    /// epoch (creating it in a namespace that has none) and starts the lease reaper. The
    /// connection is made again after it breaks (a server restart): the call that finds it
    /// broken fails with [`Error::Unavailable`], later ones reconnect.
    ///
    /// A client that later finds the epoch gone or changed (the server lost the data:
    /// restart without persistence, `FLUSHALL`/`FLUSHDB`, failover to a replica that
    /// lacked it) fails closed for good; connecting again is how to work on the new data,
    /// with new sessions (see the crate docs, "Data loss and fencing tokens").
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the server cannot be reached (with a hint naming the
    /// other scheme when it closes the connection during the TLS handshake, or at once);
    /// [`Error::Unauthenticated`] for a wrong user name or password, and for a TLS failure
    /// retrying cannot fix (a server certificate the client cannot verify, a client
    /// certificate the server requires or refuses: the message starts `TLS:` and says
    /// what failed); [`Error::PermissionDenied`] when the user may not load the scripts;
    /// [`Error::InvalidArgument`] for a `cacert`, `cert` or `key` file that is missing or
    /// not PEM (named with its path, before any connection), or a revision mode other than
    /// the one the namespace was created with.
    pub async fn connect(options: RedisOptions) -> Result<RedisBackend> {
        let url = options.redacted_url();
        let connections = Connections::open(&options).await?;
        let mut conn = connections.command();
        let scripts = Scripts::new();
        for script in [
            &scripts.txn,
            &scripts.lease,
            &scripts.compact,
            &scripts.epoch,
        ] {
            script
                .prepare_invoke()
                .load_async(&mut conn)
                .await
                .map_err(|e| redis_error(&format!("SCRIPT LOAD on {url}"), e))?;
        }
        let prefix = format!("{{{}}}", options.namespace_name());
        let revisions = options.revision_mode();
        let reply: Vec<u8> = scripts
            .epoch
            .prepare_invoke()
            .key(format!("{prefix}:meta"))
            .arg(new_epoch())
            .arg(revisions.as_str())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| redis_error("epoch", e))?;
        let reply = decode(&reply, "epoch")?;
        let epoch = reply["epoch"]
            .as_str()
            .ok_or_else(|| contract("no \"epoch\"", &reply))?
            .to_owned();
        match reply["revisions"].as_str() {
            Some(mode) if mode == revisions.as_str() => {}
            // A namespace created by a client that knew no modes numbers as it likes.
            Some("") | None => {}
            Some(mode) => {
                return Err(Error::invalid_argument(format!(
                    "{url}: namespace {:?} numbers its revisions with revisions={mode}, \
                     this client asks for revisions={}",
                    options.namespace_name(),
                    revisions.as_str()
                )));
            }
        }
        let data_lost = DataLost::new(&url, &prefix, &epoch);
        let inner = Arc::new(Inner {
            connections,
            rev_key: format!("{prefix}:rev"),
            prefix,
            scripts,
            url,
            next_lease: AtomicU64::new(0),
            ids: RandomState::new(),
            watch_hub: watch::Hub::new(),
            epoch,
            revisions,
            data_lost,
        });
        let reaper = tokio::spawn(reap_forever(Arc::downgrade(&inner)));
        Ok(RedisBackend {
            inner,
            _reaper: Arc::new(Reaper(reaper)),
        })
    }
}

impl RedisBackend {
    /// This client's data-loss signal.
    #[cfg(test)]
    pub(crate) fn data_lost(&self) -> &DataLost {
        &self.inner.data_lost
    }
}

/// A fresh epoch: 128 bits from std's per-process random hash keys, the clock and the
/// process id, so two clients creating one namespace's epoch never pick the same.
fn new_epoch() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let pid = std::process::id();
    let a = RandomState::new().hash_one((nanos, pid, 0u8));
    let b = RandomState::new().hash_one((nanos, pid, 1u8));
    format!("{a:016x}{b:016x}")
}

impl Inner {
    /// Runs a script (EVALSHA; redis-rs loads it again after `NOSCRIPT`, e.g. after a
    /// server restart or `SCRIPT FLUSH`) and decodes its answer. Refuses at once once data
    /// loss was seen, and reports it when the script finds it.
    async fn run(&self, script: &Script, args: &[&[u8]], what: &str) -> Result<Value> {
        if self.data_lost.is_lost() {
            return Err(self.data_lost.error());
        }
        let mut invocation = script.prepare_invoke();
        // The one declared key: it routes the call to the namespace's slot in a cluster,
        // and the script derives the key prefix from it.
        invocation
            .key(self.rev_key.as_str())
            .arg(&self.epoch)
            .arg(self.revisions.as_str());
        for arg in args {
            invocation.arg(*arg);
        }
        let mut conn = self.connections.command();
        let reply: Vec<u8> = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| redis_error(what, e))?;
        let reply = decode(&reply, what)?;
        if reply["err"].as_str() == Some("epoch") {
            let found = reply["epoch"].as_str().filter(|e| !e.is_empty());
            return Err(self.data_lost.lose(found));
        }
        Ok(reply)
    }

    async fn lease_call(&self, call: &str, lease: LeaseId, ttl_ms: i64) -> Result<Value> {
        let reply = self
            .run(
                &self.scripts.lease,
                &[
                    call.as_bytes(),
                    lease.to_string().as_bytes(),
                    ttl_ms.to_string().as_bytes(),
                ],
                call,
            )
            .await;
        match reply {
            Ok(reply) if reply["err"].as_str() == Some("lease") => {
                Err(Error::LeaseNotFound { lease: Some(lease) })
            }
            // The lease went with the data: its holder's session must end now, and
            // keep-alive's LeaseNotFound is what ends it.
            Err(_) if self.data_lost.is_lost() && lease != 0 && call != "grant" => {
                Err(Error::LeaseNotFound { lease: Some(lease) })
            }
            reply => reply,
        }
    }

    pub(crate) fn log_key(&self) -> String {
        format!("{}:log", self.prefix)
    }

    pub(crate) fn compact_key(&self) -> String {
        format!("{}:compact", self.prefix)
    }
}

/// Expires due leases every [`REAP_INTERVAL`] until the backend is dropped.
async fn reap_forever(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(REAP_INTERVAL).await;
        // A full batch means more may be due: go again at once.
        loop {
            let Some(inner) = inner.upgrade() else { return };
            if inner.data_lost.is_lost() {
                return;
            }
            match inner.lease_call("reap", 0, 0).await {
                Ok(reply) if reply["reaped"].as_i64() == Some(REAP_BATCH) => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "redis backend: reaping failed");
                    break;
                }
            }
        }
    }
}

#[async_trait]
impl CoordinationBackend for RedisBackend {
    fn info(&self) -> BackendInfo {
        let info = BackendInfo::new("redis", LEASE_GRANULARITY, MIN_LEASE_TTL);
        match self.inner.revisions {
            Revisions::TimeFloored => info.with_sparse_revisions(),
            Revisions::Sequential => info,
        }
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseGrant> {
        if ttl.is_zero() {
            return Err(Error::invalid_argument("lease TTL must not be zero"));
        }
        coord_core::check_lease_ttl(ttl, MAX_LEASE_TTL)?;
        let secs = (ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).max(MIN_LEASE_TTL.as_secs());
        let ttl_ms = i64::try_from(secs * 1000).unwrap_or(i64::MAX);
        loop {
            let seq = self.inner.next_lease.fetch_add(1, Ordering::Relaxed);
            let id = (self.inner.ids.hash_one(seq) % (LEASE_ID_BOUND - 1) + 1) as LeaseId;
            let reply = self.inner.lease_call("grant", id, ttl_ms).await?;
            if reply["err"].as_str() == Some("exists") {
                continue;
            }
            return Ok(LeaseGrant {
                id,
                ttl: duration_ms(int(&reply, "ttl")?),
            });
        }
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        let reply = self.inner.lease_call("keepalive", lease, 0).await?;
        Ok(duration_ms(int(&reply, "ttl")?))
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.inner.lease_call("revoke", lease, 0).await.map(drop)
    }

    async fn lease_time_to_live(&self, lease: LeaseId) -> Result<LeaseStatus> {
        let reply = self.inner.lease_call("ttl", lease, 0).await?;
        Ok(LeaseStatus {
            id: lease,
            granted_ttl: duration_ms(int(&reply, "ttl")?),
            remaining: duration_ms(int(&reply, "left")?),
        })
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        request.validate()?;
        // A txn with one read: it reaps first, so the read never sees an expired lease's keys.
        let mut response = self
            .txn(TxnRequest::new().and_then([TxnOp::Range(request)]))
            .await?;
        match response.responses.pop() {
            Some(TxnOpResponse::Range(r)) => Ok(r),
            other => Err(Error::contract(format!("redis range answered {other:?}"))),
        }
    }

    async fn txn(&self, request: TxnRequest) -> Result<TxnResponse> {
        request.validate()?;
        // etcd refuses a request over its `--max-request-bytes`; so does this backend.
        coord_core::check_request_size(&request, coord_core::MAX_REQUEST_BYTES)?;
        let reply = self
            .inner
            .run(&self.inner.scripts.txn, &[&txn_request(&request)], "txn")
            .await?;
        if reply["err"].as_str() == Some("lease") {
            return Err(Error::LeaseNotFound {
                lease: Some(int(&reply, "lease")?),
            });
        }
        let succeeded = reply["ok"]
            .as_bool()
            .ok_or_else(|| contract("no \"ok\"", &reply))?;
        let ops = if succeeded {
            &request.success
        } else {
            &request.failure
        };
        let answers = list(&reply["resp"]);
        if answers.len() != ops.len() {
            return Err(contract("a response per operation", &reply));
        }
        Ok(TxnResponse {
            succeeded,
            revision: int(&reply, "rev")?,
            responses: ops
                .iter()
                .zip(answers)
                .map(|(op, v)| op_response_of(op, v))
                .collect::<Result<_>>()?,
        })
    }

    /// Every watch of this backend shares one blocking reader (see the crate docs).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad range or a negative start revision;
    /// [`Error::Unavailable`] when the reader's connection cannot be opened. The stream
    /// ends with [`Error::Compacted`] when its start revision is compacted or it fell
    /// [`crate::WATCH_BUFFER`] responses behind, with the redis error when the reader
    /// fails (`Unavailable` for a lost connection), and with [`Error::Backend`] when the
    /// server lost data.
    ///
    /// # Cancel safety
    /// Dropping the stream unsubscribes the watch at once (no event is kept for it any
    /// more); the backend's last watch to go stops the reader and closes its connection.
    /// Dropping this future before it is ready does the same.
    async fn watch(&self, request: WatchRequest) -> Result<WatchStream> {
        request.range.validate()?;
        let start = match request.start {
            WatchStart::Now | WatchStart::Revision(0) => self.current_revision().await? + 1,
            WatchStart::Revision(r) if r < 0 => {
                return Err(Error::invalid_argument(format!(
                    "watch start revision must not be negative, got {r}"
                )));
            }
            WatchStart::Revision(r) => r,
        };
        watch::open(&self.inner, request, start).await
    }

    async fn current_revision(&self) -> Result<Revision> {
        // An empty txn reaps first, so the revision counts every expiry already due.
        Ok(self.txn(TxnRequest::new()).await?.revision)
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        if revision < 1 {
            return Err(Error::invalid_argument(format!(
                "compact revision must be positive, got {revision}"
            )));
        }
        let reply = self
            .inner
            .run(
                &self.inner.scripts.compact,
                &[revision.to_string().as_bytes()],
                "compact",
            )
            .await?;
        match reply["err"].as_str() {
            None => Ok(()),
            Some("compacted") => Err(Error::Compacted {
                compact_revision: Some(int(&reply, "at")?),
            }),
            Some(_) => Err(Error::invalid_argument(format!(
                "compact revision {revision} is in the future (current revision {})",
                int(&reply, "rev")?
            ))),
        }
    }
}
