//! Chaos runs (coord-testkit's `chaos`) on etcd, on real time: 8 clients doing random lock
//! / try_lock / rw / semaphore / election operations under random client faults, proxy
//! blackholes and latency, forced lease expiry, and server faults, the history checked.
//!
//! - `chaos_run_on_etcd_keeps_every_promise`: a server of the run's own; each client
//!   connects through a fault proxy of its own; the server is killed (-9) and restarted,
//!   or paused.
//! - `chaos_run_on_an_etcd_cluster_keeps_every_promise`: a three-member cluster of its own
//!   with peer proxies; clients connect to every member; a member is isolated from the
//!   others and rejoins, or is killed (-9) and restarted.
//!
//! Both run on fixtures of their own (not the binary-shared etcd of the conformance suite):
//! they kill and restart servers. Length `COORD_CHAOS_SECONDS` (default 10), seed
//! `COORD_CHAOS_SEED` (random by default; printed with the report); `scripts/chaos.sh
//! --backend etcd|etcd-cluster` runs them.

mod support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use coord_core::faults::FaultyBackend;
use coord_core::{CoordinationBackend, Error, LeaseId};
use coord_etcd::{EtcdBackend, EtcdOptions};
use coord_testkit::chaos::{self, ChaosClient, Config, ServerFault, Target};
use coord_testkit::conformance::{ClientFaults, Clock, Faults, TestBackend};
use coord_testkit::{EtcdCluster, EtcdServer, FaultProxy};

/// etcd's minimum TTL with its default raft timing is 2 s (`ceil(1.5 × 1 s election
/// timeout)`); sessions use it, as the conformance suite does.
const TTL: Duration = Duration::from_secs(2);
const NAMESPACE: &str = "chaos/";

enum Fixture {
    Server(Box<EtcdServer>),
    Cluster(EtcdCluster),
}

/// The run's etcd, and the proxies in front of it (kept alive for the run).
struct Etcd {
    fixture: Fixture,
    proxies: std::sync::Mutex<Vec<FaultProxy>>,
}

impl Etcd {
    fn urls(&self) -> Vec<String> {
        match &self.fixture {
            Fixture::Server(s) => s.urls(),
            Fixture::Cluster(c) => c.urls(),
        }
    }

    async fn try_connect(
        &self,
        urls: Vec<String>,
        namespace: &str,
    ) -> coord_core::Result<EtcdBackend> {
        EtcdBackend::connect(EtcdOptions::new(urls).namespace(namespace.as_bytes())).await
    }

    /// A new client; while a server fault keeps etcd down (killed, paused), it waits for
    /// the server to come back, as a restarted application would.
    async fn connect(&self, urls: Vec<String>, namespace: &str) -> EtcdBackend {
        chaos::connect_through_faults("the run's etcd", || {
            self.try_connect(urls.clone(), namespace)
        })
        .await
    }
}

#[async_trait]
impl TestBackend for Etcd {
    async fn client(&self) -> Arc<dyn CoordinationBackend> {
        Arc::new(self.connect(self.urls(), NAMESPACE).await)
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
impl Faults for Etcd {
    async fn faulty_client(&self) -> (Arc<dyn CoordinationBackend>, Arc<dyn ClientFaults>) {
        let (client, controls) = FaultyBackend::new(self.client().await);
        (Arc::new(client), controls)
    }

    /// A revoke from a connection of its own: what etcd does on expiry (the leader
    /// proposes a `LeaseRevoke`), and the holder's keep-alive stream is not told.
    async fn expire_lease_now(&self, lease: LeaseId) {
        let other = match self.try_connect(self.urls(), "").await {
            Ok(other) => other,
            // A server fault keeps etcd down: the lease then ends by its TTL, as below.
            Err(e) => return eprintln!("expire lease {lease:x}: {e}"),
        };
        match other.lease_revoke(lease).await {
            Ok(()) | Err(Error::LeaseNotFound { .. }) => {}
            // The server may be down (a server fault): the lease then ends by its TTL, or
            // lives on if the holder keeps it alive; the runner already counts it ended,
            // which only makes its checks stricter.
            Err(e) => eprintln!("expire lease {lease:x}: {e}"),
        }
    }
}

#[async_trait]
impl Target for Etcd {
    fn backend(&self) -> &dyn TestBackend {
        self
    }

    async fn chaos_client(&self) -> ChaosClient {
        let Fixture::Server(server) = &self.fixture else {
            let (backend, faults) = self.faulty_client().await;
            return ChaosClient {
                backend,
                faults,
                proxy: None,
            };
        };
        let proxy = FaultProxy::start(server.endpoint())
            .await
            .expect("start a fault proxy");
        let handle = proxy.handle();
        self.proxies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(proxy);
        let url = format!("http://{}", handle.addr());
        let client: Arc<dyn CoordinationBackend> =
            Arc::new(self.connect(vec![url], NAMESPACE).await);
        let (backend, faults) = FaultyBackend::new(client);
        ChaosClient {
            backend: Arc::new(backend),
            faults,
            proxy: Some(handle),
        }
    }

    fn server_faults(&self) -> Vec<ServerFault> {
        match self.fixture {
            Fixture::Server(_) => vec![ServerFault::KillRestart, ServerFault::Pause],
            Fixture::Cluster(_) => vec![ServerFault::IsolateMember, ServerFault::KillMember],
        }
    }

    async fn inject(
        &self,
        fault: ServerFault,
        pick: usize,
        hold: Duration,
    ) -> Result<String, String> {
        let e = |e: coord_testkit::FixtureError| e.to_string();
        match (&self.fixture, fault) {
            (Fixture::Server(s), ServerFault::KillRestart) => {
                s.kill().await.map_err(e)?;
                tokio::time::sleep(hold).await;
                s.restart().await.map_err(e)?;
                Ok(format!("etcd killed, restarted after {hold:?}"))
            }
            (Fixture::Server(s), ServerFault::Pause) => {
                s.pause().await.map_err(e)?;
                tokio::time::sleep(hold).await;
                s.resume().await.map_err(e)?;
                Ok(format!("etcd paused for {hold:?}"))
            }
            (Fixture::Cluster(c), ServerFault::IsolateMember) => {
                let i = pick % c.len();
                c.isolate_member(i);
                tokio::time::sleep(hold).await;
                c.rejoin_member(i);
                Ok(format!("member {i} isolated for {hold:?}"))
            }
            (Fixture::Cluster(c), ServerFault::KillMember) => {
                let i = pick % c.len();
                c.kill_member(i).await.map_err(e)?;
                tokio::time::sleep(hold).await;
                c.restart_member(i).await.map_err(e)?;
                Ok(format!("member {i} killed, restarted after {hold:?}"))
            }
            (_, other) => Err(format!("{} is not offered here", other.label())),
        }
    }
}

/// The two runs of this binary take turns: each is timed against its servers, and two at
/// once on a loaded machine would mostly measure each other.
static ONE_RUN_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_run_on_etcd_keeps_every_promise() {
    let _turn = ONE_RUN_AT_A_TIME.lock().await;
    let Some(server) = support::own_server::local_etcd().await else {
        return;
    };
    let etcd = Etcd {
        fixture: Fixture::Server(Box::new(server)),
        proxies: std::sync::Mutex::default(),
    };
    chaos::run(&etcd, Config::from_env("etcd"))
        .await
        .assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_run_on_an_etcd_cluster_keeps_every_promise() {
    let _turn = ONE_RUN_AT_A_TIME.lock().await;
    let Some(cluster) = EtcdCluster::builder()
        .peer_proxies(true)
        .start_or_skip()
        .await
    else {
        return;
    };
    let etcd = Etcd {
        fixture: Fixture::Cluster(cluster),
        proxies: std::sync::Mutex::default(),
    };
    chaos::run(&etcd, Config::from_env("etcd-cluster"))
        .await
        .assert_clean();
}
