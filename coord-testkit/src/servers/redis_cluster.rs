//! The Redis Cluster fixture: several masters (no replicas) on loopback, slots spread
//! over them by `redis-cli --cluster create`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::sync::Mutex;

use super::probe::Probe;
use super::process::{ManagedProcess, run_command};
use super::{
    DEFAULT_STARTUP_TIMEOUT, ENV_REDIS_BIN, ENV_REDIS_CLI_BIN, FixtureError, PORT_ATTEMPTS,
    find_binary, finish_temp_dir, free_ports, is_port_clash, make_temp_dir, random_namespace,
    skip_or_panic,
};

/// Timeout for one `redis-cli` query.
const CLI_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout for `redis-cli --cluster create`, which waits for the nodes to agree.
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often `CLUSTER INFO` is asked while waiting for `cluster_state:ok`.
const POLL: Duration = Duration::from_millis(100);

/// Builder for [`RedisCluster`].
#[derive(Clone, Debug)]
#[must_use]
pub struct RedisClusterBuilder {
    masters: usize,
    startup_timeout: Duration,
}

impl Default for RedisClusterBuilder {
    fn default() -> Self {
        Self {
            masters: 3,
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
        }
    }
}

impl RedisClusterBuilder {
    /// How many masters (default 3).
    ///
    /// # Panics
    ///
    /// Below 3, which `redis-cli --cluster create` refuses.
    pub fn masters(mut self, n: usize) -> Self {
        assert!(n >= 3, "a Redis Cluster needs at least 3 masters, got {n}");
        self.masters = n;
        self
    }

    /// How long to wait for each node's `PING`, and then for `cluster_state:ok` on every
    /// node (default 10 s each).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Spawns the nodes, joins them with `redis-cli --cluster create`, and waits until
    /// every node reports `cluster_state:ok`. Always local: there is no external cluster.
    ///
    /// # Errors
    ///
    /// [`FixtureError::Unavailable`] without `redis-server` or `redis-cli`; other
    /// variants when a node fails to start or the cluster does not form (with the log
    /// tail or the command output attached).
    pub async fn start(self) -> Result<RedisCluster, FixtureError> {
        let Some(bin) = find_binary(ENV_REDIS_BIN, "redis-server") else {
            return Err(FixtureError::Unavailable(format!(
                "redis cluster: no `redis-server` binary was found (install redis-server or set {ENV_REDIS_BIN})"
            )));
        };
        let Some(cli) = find_binary(ENV_REDIS_CLI_BIN, "redis-cli") else {
            return Err(FixtureError::Unavailable(format!(
                "redis cluster: forming it needs `redis-cli` (install redis-tools or set {ENV_REDIS_CLI_BIN})"
            )));
        };
        let dir = make_temp_dir("coord-redis-cluster-")?;
        let mut cluster = RedisCluster {
            nodes: Vec::with_capacity(self.masters),
            cli,
            namespace: random_namespace(),
            dir: None,
        };
        for i in 0..self.masters {
            let node = start_node(
                &bin,
                &dir.path().join(format!("node{i}")),
                self.startup_timeout,
            )
            .await?;
            cluster.nodes.push(node);
        }
        cluster.dir = Some(dir);
        let mut args: Vec<OsString> = vec!["--cluster".into(), "create".into()];
        args.extend(cluster.endpoints().into_iter().map(OsString::from));
        for a in ["--cluster-replicas", "0", "--cluster-yes"] {
            args.push(a.into());
        }
        run_command(&cluster.cli, &args, &[], &[], CREATE_TIMEOUT).await?;
        cluster.wait_ok(self.startup_timeout).await?;
        Ok(cluster)
    }

    /// Like [`start`](Self::start), but prints a skip line and returns `None` when
    /// `redis-server` or `redis-cli` is missing (panics instead when
    /// `COORD_TEST_REQUIRE_BACKENDS=1`). Panics on any other startup failure.
    pub async fn start_or_skip(self) -> Option<RedisCluster> {
        skip_or_panic("redis cluster", self.start().await)
    }
}

/// Starts one cluster-enabled node in `dir`, on fresh ports (client and cluster bus) and
/// again on new ones when another process took them first.
async fn start_node(
    bin: &Path,
    dir: &Path,
    startup_timeout: Duration,
) -> Result<Node, FixtureError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| FixtureError::io(format!("creating {}", dir.display()), e))?;
    let log_path = dir.join("redis.log");
    let mut attempt = 0;
    loop {
        attempt += 1;
        // The bus port is given rather than left at PORT + 10000, which can pass 65535.
        let ports = free_ports(2)?;
        let (port, bus_port) = (ports[0], ports[1]);
        let mut args: Vec<OsString> = Vec::new();
        for a in [
            "--cluster-enabled".to_owned(),
            "yes".to_owned(),
            "--cluster-config-file".to_owned(),
            dir.join("nodes.conf").to_string_lossy().into_owned(),
            "--cluster-port".to_owned(),
            bus_port.to_string(),
            "--port".to_owned(),
            port.to_string(),
            "--bind".to_owned(),
            "127.0.0.1".to_owned(),
            "--dir".to_owned(),
            dir.to_string_lossy().into_owned(),
            "--save".to_owned(),
            String::new(),
            "--appendonly".to_owned(),
            "no".to_owned(),
        ] {
            args.push(a.into());
        }
        let mut process = ManagedProcess::new(
            format!("redis-server cluster node (127.0.0.1:{port})"),
            bin.to_path_buf(),
            args,
            dir.to_path_buf(),
            log_path.clone(),
            Probe::RedisPing { port },
            vec![port, bus_port],
        );
        let started = match process.spawn() {
            Ok(()) => process.wait_ready(startup_timeout).await,
            Err(e) => Err(e),
        };
        match started {
            Ok(()) => {
                return Ok(Node {
                    port,
                    process: Mutex::new(process),
                });
            }
            Err(e) => {
                let _ = process.kill().await;
                if attempt < PORT_ATTEMPTS && is_port_clash(&e) {
                    tracing::debug!("redis cluster port clash, retrying on new ports: {e}");
                    continue;
                }
                return Err(e);
            }
        }
    }
}

#[derive(Debug)]
struct Node {
    port: u16,
    process: Mutex<ManagedProcess>,
}

/// A Redis Cluster of local masters (no replicas) for one test binary or test: every node
/// a `redis-server --cluster-enabled yes` child process on free loopback ports in a
/// directory of its own, killed when the fixture is dropped.
///
/// ```no_run
/// # async fn t() {
/// use coord_testkit::RedisCluster;
/// let Some(cluster) = RedisCluster::start_or_skip().await else { return };
/// let url = cluster.url(); // "redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3"
/// let master = cluster.master_of_namespace("app").await.unwrap(); // "127.0.0.1:P2"
/// # let _ = (url, master); }
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Node>,
    cli: PathBuf,
    namespace: String,
    // Last, so the processes are gone before the directory is removed.
    dir: Option<TempDir>,
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.process.get_mut().start_kill();
        }
        finish_temp_dir(self.dir.take(), "redis cluster fixture");
    }
}

impl RedisCluster {
    /// A builder.
    pub fn builder() -> RedisClusterBuilder {
        RedisClusterBuilder::default()
    }

    /// Starts a 3-master cluster.
    ///
    /// # Errors
    ///
    /// See [`RedisClusterBuilder::start`].
    pub async fn start() -> Result<Self, FixtureError> {
        Self::builder().start().await
    }

    /// Starts a 3-master cluster or skips; see [`RedisClusterBuilder::start_or_skip`].
    pub async fn start_or_skip() -> Option<Self> {
        Self::builder().start_or_skip().await
    }

    /// Number of masters.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always `false` (a cluster has at least 3 masters).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every master's endpoint as `127.0.0.1:PORT`, in start order.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect()
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...`: every master as a seed node.
    pub fn url(&self) -> String {
        format!("redis+cluster://{}", self.endpoints().join(","))
    }

    /// A random key prefix unique to this fixture (`coord-test/<hex>/`).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The pids of the running nodes.
    pub async fn pids(&self) -> Vec<u32> {
        let mut pids = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            pids.extend(node.process.lock().await.pid());
        }
        pids
    }

    /// Runs `redis-cli` against node `i` (start order) and returns stdout, e.g.
    /// `cli(0, &["CLUSTER", "INFO"])`.
    ///
    /// # Errors
    ///
    /// [`FixtureError::Command`] when it fails.
    ///
    /// # Panics
    ///
    /// When `i` is not below [`len`](Self::len).
    pub async fn cli(&self, i: usize, args: &[&str]) -> Result<String, FixtureError> {
        let mut argv: Vec<OsString> = vec![
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.nodes[i].port.to_string().into(),
        ];
        argv.extend(args.iter().map(OsString::from));
        run_command(&self.cli, &argv, &[], &[], CLI_TIMEOUT).await
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`; only the part in the first `{...}`
    /// counts when there is one).
    ///
    /// # Errors
    ///
    /// [`FixtureError::Command`] when `redis-cli` fails or answers something else than
    /// a slot number.
    pub async fn keyslot(&self, key: &str) -> Result<u16, FixtureError> {
        let out = self.cli(0, &["CLUSTER", "KEYSLOT", key]).await?;
        out.trim()
            .parse()
            .map_err(|_| unexpected("CLUSTER KEYSLOT", &out))
    }

    /// The endpoint (`127.0.0.1:PORT`) of the master serving `slot`, from `CLUSTER NODES`.
    ///
    /// # Errors
    ///
    /// [`FixtureError::Command`] when `redis-cli` fails or no master serves the slot.
    pub async fn master_of_slot(&self, slot: u16) -> Result<String, FixtureError> {
        let out = self.cli(0, &["CLUSTER", "NODES"]).await?;
        master_of_slot(&out, slot).ok_or_else(|| unexpected("CLUSTER NODES", &out))
    }

    /// The endpoint of the master serving the keys of the coord-redis namespace `ns`:
    /// they all start with the hash tag `{ns}`, so they are all in one slot.
    ///
    /// # Errors
    ///
    /// As [`keyslot`](Self::keyslot) and [`master_of_slot`](Self::master_of_slot).
    pub async fn master_of_namespace(&self, ns: &str) -> Result<String, FixtureError> {
        let slot = self.keyslot(&format!("{{{ns}}}")).await?;
        self.master_of_slot(slot).await
    }

    /// The last lines of node `i`'s log.
    ///
    /// # Panics
    ///
    /// When `i` is not below [`len`](Self::len).
    pub async fn log_tail(&self, i: usize) -> String {
        self.nodes[i].process.lock().await.log_tail()
    }

    /// Waits until every node says `cluster_state:ok`: `--cluster create` returns once
    /// the slots are assigned, before every node has heard of every other.
    async fn wait_ok(&self, timeout: Duration) -> Result<(), FixtureError> {
        let deadline = Instant::now() + timeout;
        for i in 0..self.nodes.len() {
            loop {
                let info = self.cli(i, &["CLUSTER", "INFO"]).await;
                match info {
                    Ok(out) if out.lines().any(|l| l.trim() == "cluster_state:ok") => break,
                    _ if Instant::now() < deadline => tokio::time::sleep(POLL).await,
                    Ok(out) => {
                        return Err(FixtureError::Command {
                            command: format!("CLUSTER INFO on 127.0.0.1:{}", self.nodes[i].port),
                            status: format!("cluster not ok after {timeout:?}"),
                            output: format!(
                                "{}\n--- log tail ---\n{}",
                                out.trim(),
                                self.log_tail(i).await
                            ),
                        });
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

fn unexpected(command: &str, out: &str) -> FixtureError {
    FixtureError::Command {
        command: command.to_owned(),
        status: "unexpected answer".to_owned(),
        output: out.trim().to_owned(),
    }
}

/// The `host:port` of the master whose slot ranges in `CLUSTER NODES` output hold `slot`.
/// Lines read `ID HOST:PORT@BUS[,HOSTNAME] FLAGS MASTER PING PONG EPOCH LINK SLOT...`,
/// a slot being `N`, `A-B`, or a migration in brackets (skipped).
fn master_of_slot(nodes: &str, slot: u16) -> Option<String> {
    nodes.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 9 || !fields[2].split(',').any(|f| f == "master") {
            return None;
        }
        let serves = fields[8..].iter().any(|range| {
            if range.starts_with('[') {
                return false;
            }
            let (lo, hi) = range.split_once('-').unwrap_or((range, range));
            matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if lo <= slot && slot <= hi)
        });
        let address = fields[1].split(['@', ',']).next()?;
        serves.then(|| address.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_master_of_a_slot_is_read_from_cluster_nodes() {
        let nodes = "\
a1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:30002@40002 master - 0 1700000000000 2 connected 5461-10922 [5462->-a1]
c3 127.0.0.1:30003@40003,host master - 0 1700000000000 3 connected 10923 10924-16383
d4 127.0.0.1:30004@40004 slave a1 0 1700000000000 1 connected
";
        assert_eq!(master_of_slot(nodes, 0).as_deref(), Some("127.0.0.1:30001"));
        assert_eq!(
            master_of_slot(nodes, 5461).as_deref(),
            Some("127.0.0.1:30002")
        );
        assert_eq!(
            master_of_slot(nodes, 10923).as_deref(),
            Some("127.0.0.1:30003")
        );
        assert_eq!(
            master_of_slot(nodes, 16383).as_deref(),
            Some("127.0.0.1:30003")
        );
        assert_eq!(master_of_slot("", 7), None);
    }

    #[test]
    #[should_panic(expected = "at least 3 masters")]
    fn fewer_than_three_masters_are_refused() {
        let _ = RedisCluster::builder().masters(2);
    }
}
