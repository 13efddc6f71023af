//! [`RedisBackend`]: etcd's data model kept in Redis by Lua scripts (see the crate docs for
//! the key layout).

use std::collections::VecDeque;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use coord_core::{
    BackendInfo, CompareOp, CompareTarget, CoordinationBackend, Error, Event, EventKind, KeyRange,
    KeyValue, LeaseGrant, LeaseId, LeaseStatus, RangeRequest, RangeResponse, Result, Revision,
    SortOrder, SortTarget, TxnOp, TxnOpResponse, TxnRequest, TxnResponse, UrlOptions, WatchRequest,
    WatchResponse, WatchStart, WatchStream, prefix_end,
};
use futures::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use redis::{AsyncConnectionConfig, Script};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::RedisOptions;

/// Lease TTLs are kept in whole milliseconds of the server's clock.
pub const LEASE_GRANULARITY: Duration = Duration::from_millis(1);
/// The shortest TTL granted.
pub const MIN_LEASE_TTL: Duration = Duration::from_millis(1);
/// The longest TTL granted: ids, deadlines and TTLs cross the scripts' JSON as Lua numbers,
/// which cjson prints with 14 significant digits, so every value must stay below 10^14
/// (deadlines are server milliseconds plus the TTL).
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(50_000_000_000);
/// How often each client's reaper expires due leases: a lease whose holder died has its
/// keys deleted within its TTL plus this (plus one script's run time). Every script
/// reaps too, so reads and writes never see an expired lease's keys.
pub const REAP_INTERVAL: Duration = Duration::from_millis(100);
/// Leases reaped per script run (`REAP_BATCH` in common.lua).
const REAP_BATCH: i64 = 64;
/// Lease ids are below this, for the same reason as [`MAX_LEASE_TTL`].
const LEASE_ID_BOUND: u64 = 100_000_000_000_000;
/// How long one `XREAD BLOCK` waits before asking again; a dropped watch's connection is
/// closed at once, so this only bounds how long a silent dead server goes unnoticed.
const WATCH_BLOCK: Duration = Duration::from_secs(5);

const COMMON: &str = include_str!("lua/common.lua");
const TXN: &str = include_str!("lua/txn.lua");
const LEASE: &str = include_str!("lua/lease.lua");
const COMPACT: &str = include_str!("lua/compact.lua");

/// The scripts, each with the shared prologue in front (Lua scripts cannot include).
struct Scripts {
    txn: Script,
    lease: Script,
    compact: Script,
}

impl Scripts {
    fn new() -> Self {
        let with_common = |body: &str| Script::new(&format!("{COMMON}\n{body}"));
        Scripts {
            txn: with_common(TXN),
            lease: with_common(LEASE),
            compact: with_common(COMPACT),
        }
    }
}

struct Inner {
    client: redis::Client,
    conn: MultiplexedConnection,
    /// `{namespace}`: the hash tag every key of the namespace starts with.
    prefix: String,
    scripts: Scripts,
    url: String,
    next_lease: AtomicU64,
    ids: RandomState,
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

fn redis_error(context: &str, e: redis::RedisError) -> Error {
    let message = format!("redis {context}: {e}");
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        Error::unavailable_with_source(message, e)
    } else {
        Error::backend_with_source("redis", message, e)
    }
}

fn contract(what: &str, reply: &Value) -> Error {
    Error::contract(format!("redis script answered {what}: {reply}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn duration_ms(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// The key selection of a range as the scripts take it: one key, or `[lo, hi)` with no
/// `hi` meaning "to the end".
fn range_json(range: &KeyRange) -> Value {
    match range {
        KeyRange::Key(k) => json!({ "key": hex(k) }),
        KeyRange::Prefix(p) => {
            let end = prefix_end(p);
            if end == [0] {
                json!({ "lo": hex(p) })
            } else {
                json!({ "lo": hex(p), "hi": hex(&end) })
            }
        }
        KeyRange::Range { start, end } => json!({ "lo": hex(start), "hi": hex(end) }),
    }
}

fn range_request_json(r: &RangeRequest) -> Value {
    let mut v = range_json(&r.range);
    let sort = match r.sort {
        None | Some((SortTarget::Key, SortOrder::Ascend)) => None,
        Some((SortTarget::Key, SortOrder::Descend)) => Some("kd"),
        Some((SortTarget::CreateRevision, SortOrder::Ascend)) => Some("ca"),
        Some((SortTarget::CreateRevision, SortOrder::Descend)) => Some("cd"),
        Some((SortTarget::ModRevision, SortOrder::Ascend)) => Some("ma"),
        Some((SortTarget::ModRevision, SortOrder::Descend)) => Some("md"),
    };
    let obj = v.as_object_mut().expect("range_json makes objects");
    if let Some(sort) = sort {
        obj.insert("sort".into(), sort.into());
    }
    obj.insert("limit".into(), r.limit.into());
    obj.insert("minc".into(), r.min_create_revision.into());
    obj.insert("maxc".into(), r.max_create_revision.into());
    obj.insert("ko".into(), r.keys_only.into());
    obj.insert("co".into(), r.count_only.into());
    v
}

fn op_json(op: &TxnOp) -> Value {
    match op {
        TxnOp::Put(p) => json!({
            "o": "put", "k": hex(&p.key), "v": hex(&p.value), "l": p.lease, "p": p.prev_kv,
        }),
        TxnOp::Delete(d) => json!({ "o": "del", "r": range_json(&d.range), "p": d.prev_kv }),
        TxnOp::Range(r) => json!({ "o": "range", "r": range_request_json(r) }),
    }
}

fn txn_json(request: &TxnRequest) -> String {
    let compares: Vec<Value> = request
        .compares
        .iter()
        .map(|c| {
            let (t, x) = match &c.target {
                CompareTarget::CreateRevision(r) => ("c", json!(r)),
                CompareTarget::ModRevision(r) => ("m", json!(r)),
                CompareTarget::Version(v) => ("ver", json!(v)),
                CompareTarget::Lease(l) => ("l", json!(l)),
                // Hex keeps byte order, and Lua compares its strings with strcoll.
                CompareTarget::Value(v) => ("v", json!(hex(v))),
            };
            let op = match c.op {
                CompareOp::Equal => "=",
                CompareOp::NotEqual => "!=",
                CompareOp::Less => "<",
                CompareOp::Greater => ">",
            };
            json!({ "k": hex(&c.key), "t": t, "op": op, "x": x })
        })
        .collect();
    json!({
        "cmp": compares,
        "ok": request.success.iter().map(op_json).collect::<Vec<_>>(),
        "els": request.failure.iter().map(op_json).collect::<Vec<_>>(),
    })
    .to_string()
}

/// cjson writes an empty Lua table as `{}`, so an empty list may arrive as an object.
fn list(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

fn int(v: &Value, field: &str) -> Result<i64> {
    v.get(field)
        .and_then(|x| x.as_i64().or_else(|| x.as_f64().map(|f| f as i64)))
        .ok_or_else(|| contract(&format!("no number {field:?}"), v))
}

fn bytes(v: &Value, field: &str) -> Result<Vec<u8>> {
    v.get(field)
        .and_then(Value::as_str)
        .and_then(unhex)
        .ok_or_else(|| contract(&format!("no hex {field:?}"), v))
}

fn kv_of(v: &Value) -> Result<KeyValue> {
    Ok(KeyValue {
        key: bytes(v, "k")?,
        value: bytes(v, "v")?,
        create_revision: int(v, "c")?,
        mod_revision: int(v, "m")?,
        version: int(v, "ver")?,
        lease: int(v, "l")?,
    })
}

fn range_response_of(v: &Value) -> Result<RangeResponse> {
    Ok(RangeResponse {
        kvs: list(&v["kvs"]).iter().map(kv_of).collect::<Result<_>>()?,
        more: v["more"].as_bool().unwrap_or(false),
        count: int(v, "count")?,
        revision: int(v, "rev")?,
    })
}

fn op_response_of(op: &TxnOp, v: &Value) -> Result<TxnOpResponse> {
    Ok(match op {
        TxnOp::Put(_) => TxnOpResponse::Put {
            prev_kv: match &v["p"] {
                Value::Object(_) => Some(kv_of(&v["p"])?),
                _ => None,
            },
        },
        TxnOp::Delete(_) => TxnOpResponse::Delete {
            deleted: int(v, "n")?,
            prev_kvs: list(&v["p"]).iter().map(kv_of).collect::<Result<_>>()?,
        },
        TxnOp::Range(_) => TxnOpResponse::Range(range_response_of(v)?),
    })
}

impl RedisBackend {
    /// Connects to the server the options name, loads the scripts and starts the lease
    /// reaper.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the server cannot be reached;
    /// [`Error::InvalidArgument`] for options this backend does not support yet (TLS).
    pub async fn connect(options: RedisOptions) -> Result<RedisBackend> {
        let url = options.redacted_url();
        if options.tls() {
            return Err(Error::invalid_argument(format!(
                "{url}: TLS (rediss://) is not supported by the Redis backend yet"
            )));
        }
        let client = redis::Client::open(options.connection_url())
            .map_err(|e| Error::invalid_argument(format!("{url}: {e}")))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(
                options.connect_timeout().unwrap_or(Duration::from_secs(5)),
            ))
            .set_response_timeout(Some(
                options.request_timeout().unwrap_or(Duration::from_secs(10)),
            ));
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| redis_error(&format!("connect to {url}"), e))?;
        let scripts = Scripts::new();
        for script in [&scripts.txn, &scripts.lease, &scripts.compact] {
            script
                .prepare_invoke()
                .load_async(&mut conn)
                .await
                .map_err(|e| redis_error("SCRIPT LOAD", e))?;
        }
        let inner = Arc::new(Inner {
            client,
            conn,
            prefix: format!("{{{}}}", options.namespace_name()),
            scripts,
            url,
            next_lease: AtomicU64::new(0),
            ids: RandomState::new(),
        });
        let reaper = tokio::spawn(reap_forever(Arc::downgrade(&inner)));
        Ok(RedisBackend {
            inner,
            _reaper: Arc::new(Reaper(reaper)),
        })
    }
}

impl Inner {
    /// Runs a script (EVALSHA; redis-rs loads it again after `NOSCRIPT`, e.g. after a
    /// server restart or `SCRIPT FLUSH`) and decodes its JSON answer.
    async fn run(&self, script: &Script, args: &[&str], what: &str) -> Result<Value> {
        let mut invocation = script.prepare_invoke();
        invocation.arg(&self.prefix);
        for arg in args {
            invocation.arg(*arg);
        }
        let mut conn = self.conn.clone();
        let reply: String = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| redis_error(what, e))?;
        serde_json::from_str(&reply)
            .map_err(|e| Error::contract(format!("redis {what} script answered {reply:?}: {e}")))
    }

    async fn lease_call(&self, call: &str, lease: LeaseId, ttl_ms: i64) -> Result<Value> {
        let reply = self
            .run(
                &self.scripts.lease,
                &[call, &lease.to_string(), &ttl_ms.to_string()],
                call,
            )
            .await?;
        match reply["err"].as_str() {
            Some("lease") => Err(Error::LeaseNotFound { lease: Some(lease) }),
            _ => Ok(reply),
        }
    }

    fn log_key(&self) -> String {
        format!("{}:log", self.prefix)
    }
}

/// Expires due leases every [`REAP_INTERVAL`] until the backend is dropped.
async fn reap_forever(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(REAP_INTERVAL).await;
        // A full batch means more may be due: go again at once.
        loop {
            let Some(inner) = inner.upgrade() else { return };
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
        BackendInfo::new("redis", LEASE_GRANULARITY, MIN_LEASE_TTL)
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseGrant> {
        if ttl.is_zero() {
            return Err(Error::invalid_argument("lease TTL must not be zero"));
        }
        if ttl > MAX_LEASE_TTL {
            return Err(Error::invalid_argument(format!(
                "lease TTL {ttl:?} is above the maximum of {MAX_LEASE_TTL:?}"
            )));
        }
        let ttl_ms = i64::try_from(ttl.as_nanos().div_ceil(1_000_000)).unwrap_or(i64::MAX);
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
        let reply = self
            .inner
            .run(&self.inner.scripts.txn, &[&txn_json(&request)], "txn")
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
        // Its own connection: XREAD BLOCK would hold up every call queued behind it on the
        // shared multiplexed one.
        let config = AsyncConnectionConfig::new().set_response_timeout(None);
        let conn = self
            .inner
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| redis_error("watch connect", e))?;
        let mut watch = Watch {
            conn,
            log_key: self.inner.log_key(),
            compact_key: format!("{}:compact", self.inner.prefix),
            range: request.range,
            prev_kv: request.prev_kv,
            start,
            last_id: if start > 1 {
                format!("{}-{}", start - 1, u64::MAX)
            } else {
                "0-0".to_owned()
            },
            pending: VecDeque::new(),
            done: false,
        };
        if let Err(e) = watch.catch_up().await {
            watch.done = true;
            let inner = futures::stream::once(async move { Err(e) }).boxed();
            return Ok(WatchStream::new(start, inner));
        }
        let inner = futures::stream::unfold(watch, |mut watch| async move {
            let item = watch.next().await?;
            Some((item, watch))
        });
        Ok(WatchStream::new(start, inner.boxed()))
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
                &[&revision.to_string()],
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

/// A live watch: reads the namespace's stream on a connection of its own.
struct Watch {
    conn: MultiplexedConnection,
    log_key: String,
    compact_key: String,
    range: KeyRange,
    prev_kv: bool,
    start: Revision,
    /// The id of the last stream entry read.
    last_id: String,
    pending: VecDeque<WatchResponse>,
    done: bool,
}

impl Watch {
    /// Reads the history from the start revision (XRANGE), then checks that compaction has
    /// not removed any of it: entries at or above the compact revision are never trimmed,
    /// so reading first and checking after cannot miss a compaction in between.
    async fn catch_up(&mut self) -> Result<()> {
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(&self.log_key)
            .arg(format!("{}-0", self.start))
            .arg("+")
            .query_async(&mut self.conn)
            .await
            .map_err(|e| redis_error("watch XRANGE", e))?;
        let compacted: Option<i64> = redis::cmd("GET")
            .arg(&self.compact_key)
            .query_async(&mut self.conn)
            .await
            .map_err(|e| redis_error("watch GET", e))?;
        if let Some(at) = compacted
            && self.start < at
        {
            return Err(Error::Compacted {
                compact_revision: Some(at),
            });
        }
        self.take(&reply.ids)
    }

    /// Groups stream entries by revision and queues those the watch matches.
    fn take(&mut self, entries: &[StreamId]) -> Result<()> {
        for entry in entries {
            self.last_id.clone_from(&entry.id);
            let revision: Revision = entry
                .id
                .split('-')
                .next()
                .and_then(|r| r.parse().ok())
                .ok_or_else(|| Error::contract(format!("stream entry id {:?}", entry.id)))?;
            let Some(event) = self.event(entry, revision)? else {
                continue;
            };
            match self.pending.back_mut() {
                Some(last) if last.revision == revision => last.events.push(event),
                _ => self.pending.push_back(WatchResponse {
                    revision,
                    events: vec![event],
                }),
            }
        }
        Ok(())
    }

    fn event(&self, entry: &StreamId, revision: Revision) -> Result<Option<Event>> {
        let field = |name: &str| -> Option<Vec<u8>> {
            match entry.map.get(name)? {
                redis::Value::BulkString(b) => Some(b.clone()),
                redis::Value::SimpleString(s) => Some(s.clone().into_bytes()),
                _ => None,
            }
        };
        let number = |name: &str| -> i64 {
            field(name)
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        };
        let key = field("k").ok_or_else(|| Error::contract("stream entry without a key"))?;
        if !self.range.contains(&key) {
            return Ok(None);
        }
        let prev_kv = (self.prev_kv && field("pc").is_some()).then(|| KeyValue {
            key: key.clone(),
            value: field("pv").unwrap_or_default(),
            create_revision: number("pc"),
            mod_revision: number("pm"),
            version: number("pver"),
            lease: number("pl"),
        });
        let (kind, kv) = if field("t").as_deref() == Some(b"P") {
            let kv = KeyValue {
                key,
                value: field("v").unwrap_or_default(),
                create_revision: number("c"),
                mod_revision: number("m"),
                version: number("ver"),
                lease: number("l"),
            };
            (EventKind::Put, kv)
        } else {
            let kv = KeyValue {
                key,
                mod_revision: revision,
                ..KeyValue::default()
            };
            (EventKind::Delete, kv)
        };
        Ok(Some(Event { kind, kv, prev_kv }))
    }

    /// The next response: queued ones first, then whatever `XREAD BLOCK` brings.
    async fn next(&mut self) -> Option<Result<WatchResponse>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(response) = self.pending.pop_front() {
                return Some(Ok(response));
            }
            let reply: redis::RedisResult<Option<StreamReadReply>> = redis::cmd("XREAD")
                .arg("BLOCK")
                .arg(WATCH_BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&self.log_key)
                .arg(&self.last_id)
                .query_async(&mut self.conn)
                .await;
            let result = match reply {
                Ok(Some(reply)) => {
                    let entries: Vec<StreamId> =
                        reply.keys.into_iter().flat_map(|k| k.ids).collect();
                    self.take(&entries)
                }
                Ok(None) => Ok(()),
                Err(e) => Err(redis_error("watch XREAD", e)),
            };
            if let Err(e) = result {
                self.done = true;
                return Some(Err(e));
            }
        }
    }
}
