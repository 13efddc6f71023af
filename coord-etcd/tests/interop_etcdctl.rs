//! Interoperability with Debian's `etcdctl` (API v3, etcd 3.4) on a real etcd: a coord
//! `Mutex` and `etcdctl lock` on one name exclude each other in both directions, and a coord
//! `Election` and `etcdctl elect` on one name see the same leader (etcd's own
//! `TestCtlV3Lock`, `TestCtlV3LockWithCmd` and `TestCtlV3Elect`, across implementations).
//!
//! Names live under the fixture's random namespace, spelled out in full: etcdctl 3.4 has no
//! namespace flag, so the coord backend connects without one and both sides use the same
//! raw key names. That also keeps the tests safe on a shared external server.
//!
//! Real time throughout. Every "must still be waiting" check is a short quiet period;
//! everything else awaits the event itself with a bounded timeout.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use coord_core::{
    CoordinationBackend, Election, Error, KeyValue, LeaseId, Mutex, RangeRequest, Session,
    SortOrder, SortTarget, lock_key,
};
use coord_etcd::{EtcdBackend, EtcdOptions};
use coord_testkit::{EtcdServer, require_backends};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// How long a blocked side must stay blocked to count as waiting.
const QUIET: Duration = Duration::from_millis(750);
/// Bound on anything that should happen promptly (an acquisition after a release, a line
/// of output, a process exit). Generous: the machine may be compiling in parallel.
const PROMPT: Duration = Duration::from_secs(10);

/// The `etcdctl` binary, as the testkit finds it: `COORD_TEST_ETCDCTL_BIN`, else `PATH`.
/// Missing: `None` (a skip), or a panic when backends are required, so CI cannot pass by
/// skipping.
fn etcdctl_bin(test: &str) -> Option<PathBuf> {
    let found =
        match std::env::var_os(coord_testkit::servers::ENV_ETCDCTL_BIN).filter(|p| !p.is_empty()) {
            Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
            None => std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join("etcdctl"))
                    .find(|p| p.is_file())
            }),
        };
    if found.is_none() {
        if require_backends() {
            panic!("{test}: `etcdctl` not found and COORD_TEST_REQUIRE_BACKENDS=1");
        }
        eprintln!("SKIPPED {test}: `etcdctl` not found (install etcd-client)");
    }
    found
}

/// A server, an `etcdctl` binary, and a coord backend on it without a namespace.
struct Fixture {
    server: EtcdServer,
    etcdctl: PathBuf,
    backend: Arc<dyn CoordinationBackend>,
}

impl Fixture {
    async fn start(test: &str) -> Option<Fixture> {
        let etcdctl = etcdctl_bin(test)?;
        let server = EtcdServer::start_or_skip().await?;
        let backend = EtcdBackend::connect(EtcdOptions::new(server.urls()))
            .await
            .expect("connect to the fixture");
        Some(Fixture {
            server,
            etcdctl,
            backend: Arc::new(backend),
        })
    }

    /// A name under the fixture's namespace (which ends in `/`).
    fn name(&self, base: &str) -> String {
        format!("{}{base}", self.server.namespace())
    }

    async fn session(&self) -> Session {
        Session::new(self.backend.clone())
            .await
            .expect("coord session")
    }

    /// Starts `etcdctl ARGS` against the fixture, stdout piped, killed if the test ends
    /// early.
    fn spawn(&self, args: &[&str]) -> Etcdctl {
        let mut child = Command::new(&self.etcdctl)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.server.urls().join(",")))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn etcdctl");
        let lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        Etcdctl { child, lines }
    }

    /// Every key under `<name>/`, oldest first.
    async fn queue(&self, name: &str) -> Vec<KeyValue> {
        self.backend
            .range(
                RangeRequest::prefix(format!("{name}/"))
                    .sort(SortTarget::CreateRevision, SortOrder::Ascend),
            )
            .await
            .expect("range")
            .kvs
    }

    /// Waits until `<name>/` holds `n` keys (a waiter has queued), bounded by [`PROMPT`].
    async fn await_queue_len(&self, name: &str, n: usize) -> Vec<KeyValue> {
        let deadline = tokio::time::Instant::now() + PROMPT;
        loop {
            let q = self.queue(name).await;
            if q.len() == n {
                return q;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name}/ never held {n} keys; it holds {:?}",
                q.iter()
                    .map(|kv| kv.key_str().into_owned())
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A running `etcdctl` and its stdout lines.
struct Etcdctl {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Etcdctl {
    /// The next stdout line, waiting at most `limit`; `None` if none came in time.
    async fn line_within(&mut self, limit: Duration) -> Option<String> {
        match tokio::time::timeout(limit, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => Some(line),
            Ok(Ok(None)) => panic!(
                "etcdctl closed stdout (exit: {:?})",
                self.child.try_wait().ok().flatten()
            ),
            Ok(Err(e)) => panic!("reading etcdctl stdout: {e}"),
            Err(_) => None,
        }
    }

    async fn line(&mut self, what: &str) -> String {
        self.line_within(PROMPT)
            .await
            .unwrap_or_else(|| panic!("etcdctl printed no {what} within {PROMPT:?}"))
    }

    /// SIGINT, which makes etcdctl unlock or resign before exiting.
    async fn interrupt(&self) {
        let pid = self.child.id().expect("etcdctl still running");
        let status = Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(status.success(), "kill -INT {pid} failed: {status}");
    }

    async fn exits_cleanly(&mut self) {
        let status = tokio::time::timeout(PROMPT, self.child.wait())
            .await
            .expect("etcdctl exits after SIGINT")
            .expect("wait for etcdctl");
        assert!(status.success(), "etcdctl exited with {status}");
    }

    fn assert_running(&mut self) {
        assert!(
            self.child.try_wait().expect("try_wait").is_none(),
            "etcdctl exited while it should be waiting"
        );
    }
}

/// Parses a key etcdctl printed as `<name>/<lease hex>`; panics unless it has exactly that
/// layout (lowercase hex, as Go's `%x`).
fn lease_of(name: &str, key: &str) -> LeaseId {
    let hex = key
        .strip_prefix(name)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or_else(|| panic!("{key:?} is not under {name:?}/"));
    assert!(
        !hex.is_empty()
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{key:?}: the part after the name is not lowercase hex"
    );
    LeaseId::from_str_radix(hex, 16).expect("lease id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lock_holder_blocks_coord_until_interrupted() {
    let Some(fx) = Fixture::start("etcdctl_lock_holder_blocks_coord_until_interrupted").await
    else {
        return;
    };
    let name = fx.name("lock-a");

    let mut ctl = fx.spawn(&["lock", &name]);
    let ctl_key = ctl.line("lock key").await;
    let ctl_lease = lease_of(&name, &ctl_key);
    let q = fx.queue(&name).await;
    assert_eq!(q.len(), 1, "only etcdctl's key exists");
    assert_eq!(q[0].key_str(), ctl_key);
    assert_eq!(
        q[0].lease, ctl_lease,
        "the key is attached to the lease it names"
    );
    assert!(q[0].value.is_empty(), "lock keys are empty");

    let session = fx.session().await;
    let mutex = Mutex::new(&session, name.clone());
    let mut acquire = tokio::spawn(async move { mutex.lock().await });

    // coord queues behind etcdctl (same layout) and must not acquire while it holds.
    let q = fx.await_queue_len(&name, 2).await;
    assert_eq!(q[0].key_str(), ctl_key, "etcdctl stays first");
    assert_eq!(q[1].key_str(), lock_key(&name, session.lease()));
    assert!(
        tokio::time::timeout(QUIET, &mut acquire).await.is_err(),
        "coord acquired while etcdctl held {ctl_key}"
    );
    ctl.assert_running();

    ctl.interrupt().await;
    let guard = tokio::time::timeout(PROMPT, acquire)
        .await
        .expect("coord acquires promptly after etcdctl unlocks")
        .expect("lock task")
        .expect("lock");
    assert_eq!(guard.key(), lock_key(&name, session.lease()));
    assert!(guard.fencing_token() > q[0].create_revision);
    let q = fx.queue(&name).await;
    assert_eq!(
        q.iter()
            .map(|kv| kv.key_str().into_owned())
            .collect::<Vec<_>>(),
        [guard.key().to_owned()],
        "etcdctl deleted its key on SIGINT and coord holds"
    );
    ctl.exits_cleanly().await;
    guard.unlock().await.expect("unlock");
    assert!(fx.queue(&name).await.is_empty(), "unlock left no key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coord_lock_holder_blocks_etcdctl_until_unlocked() {
    let Some(fx) = Fixture::start("coord_lock_holder_blocks_etcdctl_until_unlocked").await else {
        return;
    };
    let name = fx.name("lock-b");
    let session = fx.session().await;
    let guard = Mutex::new(&session, name.clone())
        .lock()
        .await
        .expect("uncontended lock");

    let mut ctl = fx.spawn(&["lock", &name]);
    // etcdctl has queued behind coord, and neither prints nor exits while coord holds.
    let q = fx.await_queue_len(&name, 2).await;
    assert_eq!(q[0].key_str(), guard.key(), "coord stays first");
    let ctl_lease = lease_of(&name, &q[1].key_str());
    assert_eq!(q[1].lease, ctl_lease);
    if let Some(line) = ctl.line_within(QUIET).await {
        panic!("etcdctl printed {line:?} while coord held {}", guard.key());
    }
    ctl.assert_running();

    guard.unlock().await.expect("unlock");
    let printed = ctl.line("lock key after coord unlocked").await;
    assert_eq!(printed, q[1].key_str(), "etcdctl holds its own queued key");
    assert_eq!(lease_of(&name, &printed), ctl_lease);
    let q = fx.queue(&name).await;
    assert_eq!(q.len(), 1, "coord's key is gone, etcdctl's remains");
    assert_eq!(q[0].key_str(), printed);

    // etcdctl now excludes coord in turn.
    let again = Mutex::new(&session, name.clone());
    assert!(
        matches!(again.try_lock().await, Err(Error::Locked { .. })),
        "coord's try_lock must fail while etcdctl holds"
    );
    ctl.interrupt().await;
    ctl.exits_cleanly().await;
    let guard = again
        .lock_timeout(PROMPT)
        .await
        .expect("lock after etcdctl");
    guard.unlock().await.expect("unlock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_elect_leader_is_seen_and_blocks_coord_campaign() {
    let Some(fx) = Fixture::start("etcdctl_elect_leader_is_seen_and_blocks_coord_campaign").await
    else {
        return;
    };
    let name = fx.name("elect-c");

    let mut ctl = fx.spawn(&["elect", &name, "p1"]);
    let ctl_key = ctl.line("candidacy key").await;
    assert_eq!(ctl.line("proposal").await, "p1");
    lease_of(&name, &ctl_key);

    let session = fx.session().await;
    let election = Election::new(&session, name.clone());
    let leader = election.leader().await.expect("a leader");
    assert_eq!(leader.key_str(), ctl_key);
    assert_eq!(leader.value, b"p1");

    let campaigner = election.clone();
    let mut campaign = tokio::spawn(async move { campaigner.campaign("coord").await });
    let q = fx.await_queue_len(&name, 2).await;
    assert_eq!(q[1].key_str(), lock_key(&name, session.lease()));
    assert_eq!(q[1].value, b"coord");
    assert!(
        tokio::time::timeout(QUIET, &mut campaign).await.is_err(),
        "coord was elected while etcdctl led"
    );
    ctl.assert_running();
    let leader = election.leader().await.expect("a leader");
    assert_eq!(leader.key_str(), ctl_key, "etcdctl still leads");
    assert_eq!(leader.value, b"p1");

    ctl.interrupt().await;
    let leadership = tokio::time::timeout(PROMPT, campaign)
        .await
        .expect("coord is elected promptly after etcdctl resigns")
        .expect("campaign task")
        .expect("campaign");
    assert_eq!(leadership.key(), lock_key(&name, session.lease()));
    let leader = election.leader().await.expect("a leader");
    assert_eq!(leader.key_str(), leadership.key());
    assert_eq!(leader.value, b"coord");
    ctl.exits_cleanly().await;
    assert_eq!(
        fx.queue(&name).await.len(),
        1,
        "etcdctl's candidacy is gone"
    );
    leadership.resign().await.expect("resign");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coord_leader_and_proclamations_are_printed_by_etcdctl_observe() {
    let Some(fx) =
        Fixture::start("coord_leader_and_proclamations_are_printed_by_etcdctl_observe").await
    else {
        return;
    };
    let name = fx.name("elect-d");
    let session = fx.session().await;
    let leadership = Election::new(&session, name.clone())
        .campaign("coord-1")
        .await
        .expect("uncontended campaign");

    let mut ctl = fx.spawn(&["elect", "-l", &name]);
    assert_eq!(ctl.line("leader key").await, leadership.key());
    assert_eq!(ctl.line("leader value").await, "coord-1");

    leadership.proclaim("coord-2").await.expect("proclaim");
    assert_eq!(ctl.line("leader key").await, leadership.key());
    assert_eq!(ctl.line("proclaimed value").await, "coord-2");

    // A second coord candidate takes over after the first resigns; etcdctl follows.
    let other = fx.session().await;
    let next = Election::new(&other, name.clone());
    let waiting = tokio::spawn(async move { next.campaign("coord-3").await });
    fx.await_queue_len(&name, 2).await;
    leadership.resign().await.expect("resign");
    let successor = tokio::time::timeout(PROMPT, waiting)
        .await
        .expect("successor elected")
        .expect("campaign task")
        .expect("campaign");
    assert_eq!(ctl.line("new leader key").await, successor.key());
    assert_eq!(ctl.line("new leader value").await, "coord-3");
    ctl.assert_running();
    ctl.interrupt().await;
    ctl.exits_cleanly().await;
    successor.resign().await.expect("resign");
}
