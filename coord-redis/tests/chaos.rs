//! Chaos runs (coord-testkit's `chaos`) on Redis, on real time: 8 clients doing random
//! lock / try_lock / rw / semaphore / election operations under random client faults,
//! forced lease expiry and server faults, the history checked.
//!
//! - `chaos_run_on_redis_keeps_every_promise`: a redis-server of the run's own with
//!   `appendonly yes, appendfsync always` (a restart keeps the data); each client connects
//!   through a fault proxy of its own (blackhole, latency); the server is killed (-9) and
//!   restarted, or paused.
//! - `chaos_run_on_a_redis_cluster_keeps_every_promise`: the binary's 3-master cluster
//!   (`cluster_support`, with the conformance suite's factory on a namespace of its own);
//!   a master is paused (SIGSTOP, then SIGCONT). The cluster has no replicas, so a master
//!   is never killed: its slots would be gone.
//!
//! Length `COORD_CHAOS_SECONDS` (default 10), seed `COORD_CHAOS_SEED` (random by default;
//! printed with the report); `scripts/chaos.sh --backend redis|redis-cluster` runs them.

#[allow(dead_code, reason = "the cluster tests use more of it")]
mod cluster_support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use coord_core::faults::FaultyBackend;
use coord_core::{CoordinationBackend, Error, LeaseId};
use coord_redis::{RedisBackend, RedisOptions};
use coord_testkit::chaos::{self, ChaosClient, Config, ServerFault, Target};
use coord_testkit::conformance::{ClientFaults, Clock, Faults, TestBackend};
use coord_testkit::{FaultProxy, RedisServer};

/// The sessions' TTL, as in the conformance suite.
const TTL: Duration = Duration::from_secs(2);
const NAMESPACE: &str = "chaos";

/// The run's redis-server, and the proxies in front of it (kept alive for the run).
struct Redis {
    server: RedisServer,
    proxies: std::sync::Mutex<Vec<FaultProxy>>,
}

impl Redis {
    async fn try_connect(&self, endpoint: &str) -> coord_core::Result<RedisBackend> {
        let options = RedisOptions::parse_url(&format!("redis://{endpoint}"))
            .and_then(|o| o.namespace(NAMESPACE))
            .expect("the fixture's endpoint makes a URL");
        RedisBackend::connect(options).await
    }

    /// A new client; while a server fault keeps redis down (killed, paused), it waits for
    /// the server to come back, as a restarted application would.
    async fn connect(&self, endpoint: &str) -> RedisBackend {
        chaos::connect_through_faults("the run's redis", || self.try_connect(endpoint)).await
    }
}

#[async_trait]
impl TestBackend for Redis {
    async fn client(&self) -> Arc<dyn CoordinationBackend> {
        Arc::new(self.connect(self.server.endpoint()).await)
    }
    fn clock(&self) -> Clock {
        Clock::Real
    }
    fn short_ttl(&self) -> Duration {
        TTL
    }
    fn faults(&self) -> Option<&dyn Faults> {
        Some(self)
    }
}

#[async_trait]
impl Faults for Redis {
    async fn faulty_client(&self) -> (Arc<dyn CoordinationBackend>, Arc<dyn ClientFaults>) {
        let (client, controls) = FaultyBackend::new(TestBackend::client(self).await);
        (Arc::new(client), controls)
    }

    /// A revoke from a connection of its own: the same deletion in one revision as an
    /// expiry, and the holder learns of it only at its next keep-alive.
    async fn expire_lease_now(&self, lease: LeaseId) {
        let other = match self.try_connect(self.server.endpoint()).await {
            Ok(other) => other,
            // A server fault keeps redis down: the lease then ends by its TTL, as below.
            Err(e) => return eprintln!("expire lease {lease:x}: {e}"),
        };
        match other.lease_revoke(lease).await {
            Ok(()) | Err(Error::LeaseNotFound { .. }) => {}
            // The server may be down (a server fault); the runner already counts the lease
            // ended, which only makes its checks stricter.
            Err(e) => eprintln!("expire lease {lease:x}: {e}"),
        }
    }
}

#[async_trait]
impl Target for Redis {
    fn backend(&self) -> &dyn TestBackend {
        self
    }

    async fn chaos_client(&self) -> ChaosClient {
        let proxy = FaultProxy::start(self.server.endpoint())
            .await
            .expect("start a fault proxy");
        let handle = proxy.handle();
        self.proxies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(proxy);
        let client: Arc<dyn CoordinationBackend> =
            Arc::new(self.connect(&handle.addr().to_string()).await);
        let (backend, faults) = FaultyBackend::new(client);
        ChaosClient {
            backend: Arc::new(backend),
            faults,
            proxy: Some(handle),
        }
    }

    fn server_faults(&self) -> Vec<ServerFault> {
        vec![ServerFault::KillRestart, ServerFault::Pause]
    }

    async fn inject(
        &self,
        fault: ServerFault,
        _pick: usize,
        hold: Duration,
    ) -> Result<String, String> {
        let e = |e: coord_testkit::FixtureError| e.to_string();
        match fault {
            ServerFault::KillRestart => {
                self.server.kill().await.map_err(e)?;
                tokio::time::sleep(hold).await;
                self.server.restart().await.map_err(e)?;
                Ok(format!(
                    "redis killed, restarted (data kept) after {hold:?}"
                ))
            }
            ServerFault::Pause => {
                self.server.pause().await.map_err(e)?;
                tokio::time::sleep(hold).await;
                self.server.resume().await.map_err(e)?;
                Ok(format!("redis paused for {hold:?}"))
            }
            other => Err(format!("{} is not offered here", other.label())),
        }
    }
}

/// The shared cluster's conformance factory, and SIGSTOP / SIGCONT of a master.
struct Cluster {
    redis: cluster_support::conformance::Redis,
    shared: &'static cluster_support::Shared,
}

#[async_trait]
impl Target for Cluster {
    fn backend(&self) -> &dyn TestBackend {
        &self.redis
    }

    fn server_faults(&self) -> Vec<ServerFault> {
        vec![ServerFault::Pause]
    }

    async fn inject(
        &self,
        fault: ServerFault,
        pick: usize,
        hold: Duration,
    ) -> Result<String, String> {
        if fault != ServerFault::Pause {
            return Err(format!("{} is not offered here", fault.label()));
        }
        let pids = self.shared.cluster().pids().await;
        let Some(pid) = pids.get(pick % pids.len().max(1)).copied() else {
            return Err("no running cluster node".into());
        };
        signal(pid, "-STOP").await?;
        tokio::time::sleep(hold).await;
        signal(pid, "-CONT").await?;
        Ok(format!("cluster node pid {pid} paused for {hold:?}"))
    }
}

async fn signal(pid: u32, sig: &'static str) -> Result<(), String> {
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()
    })
    .await
    .map_err(|e| format!("kill {sig} {pid}: {e}"))?
    .map_err(|e| format!("kill {sig} {pid}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill {sig} {pid}: {status}"))
    }
}

/// The two runs of this binary take turns: each is timed against its servers, and two at
/// once on a loaded machine would mostly measure each other.
static ONE_RUN_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_run_on_redis_keeps_every_promise() {
    let _turn = ONE_RUN_AT_A_TIME.lock().await;
    let Some(server) = RedisServer::builder()
        .local_only()
        .appendonly(true)
        .start_or_skip()
        .await
    else {
        return;
    };
    let redis = Redis {
        server,
        proxies: std::sync::Mutex::default(),
    };
    chaos::run(&redis, Config::from_env("redis"))
        .await
        .assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_run_on_a_redis_cluster_keeps_every_promise() {
    let _turn = ONE_RUN_AT_A_TIME.lock().await;
    let Some(shared) = cluster_support::shared_cluster().await else {
        return;
    };
    let Some(redis) = cluster_support::conformance::Redis::new(Some(shared)) else {
        return;
    };
    let cluster = Cluster { redis, shared };
    chaos::run(&cluster, Config::from_env("redis-cluster"))
        .await
        .assert_clean();
}
