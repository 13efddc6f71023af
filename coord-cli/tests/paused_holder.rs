//! What no lease protects against, measured: a holder stopped (SIGSTOP here; a GC or VM
//! pause alike) for longer than its TTL resumes inside the next holder's critical section,
//! and keeps acting there until it notices. The remedy is the fencing token: the stopped
//! holder's writes, made conditional on its lock key still being the one it created
//! (`COORD_FENCING_TOKEN`, compared in an etcd txn), are refused from the moment the next
//! holder could have acquired.
//!
//! Real etcd and etcdctl, real time. The figures go to stderr (`--nocapture` shows them).

mod cli_support;

use std::time::Duration;

use cli_support::Proc;
use coord_testkit::EtcdServer;

const SHORT: Duration = Duration::from_secs(15);

/// A's command: every 20 ms, a write fenced by the lock key's create revision, printed with
/// its time and outcome. It ignores SIGTERM as a program busy shutting down would, so coord
/// has to kill it after `--kill-after`.
fn writer_script(endpoint: &str) -> String {
    format!(
        r#"trap 'echo "term $(date +%s%N)"' TERM
echo "pid $$"
while :; do
  r=$(printf 'create("%s") = "%s"\n\nput res "A"\n\n\n' "$ETCD_LOCK_KEY" "$COORD_FENCING_TOKEN" |
      etcdctl --endpoints {endpoint} txn | head -n 1)
  echo "write $(date +%s%N) $r"
  sleep 0.02
done"#
    )
}

fn signal(pid: &str, name: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid)
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -{name} {pid}");
}

/// `(time in ns, outcome)` of a `write T OUTCOME` line.
fn write_line(line: &str) -> Option<(u128, String)> {
    let mut words = line.strip_prefix("write ")?.split(' ');
    let at = words.next()?.parse().ok()?;
    Some((at, words.next().unwrap_or("").to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_holder_resumes_inside_the_next_holders_section_and_fencing_refuses_its_writes() {
    let Some(etcd) = EtcdServer::builder()
        .local_only()
        .timing(Duration::from_millis(100), Duration::from_secs(1))
        .start_or_skip()
        .await
    else {
        return;
    };
    let endpoint = etcd.endpoint().to_owned();
    let url = format!("etcd://{endpoint}");
    let script = writer_script(&endpoint);
    let mut a = Proc::coord(
        &url,
        &[
            "--ttl",
            "3s",
            "lock",
            "--kill-after",
            "1s",
            "L",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    let cmd_pid = loop {
        let line = a.line(SHORT);
        if let Some(pid) = line.strip_prefix("pid ") {
            break pid.to_owned();
        }
    };
    loop {
        if let Some((_, outcome)) = write_line(&a.line(SHORT)) {
            assert_eq!(outcome, "SUCCESS", "A holds the lock: its writes land");
            break;
        }
    }
    let coord_pid = a.child.id().to_string();

    // A stops, coord and its command alike, for longer than the TTL.
    signal(&coord_pid, "STOP");
    signal(&cmd_pid, "STOP");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut b = Proc::coord(
        &url,
        &[
            "lock",
            "L",
            "--",
            "sh",
            "-c",
            "echo \"acquired $(date +%s%N)\"; sleep 3",
        ],
    );
    let b_acquired: u128 = loop {
        if let Some(at) = b.line(SHORT).strip_prefix("acquired ") {
            break at.parse().unwrap();
        }
    };
    signal(&cmd_pid, "CONT");
    signal(&coord_pid, "CONT");

    assert_eq!(
        a.wait(SHORT).code(),
        Some(5),
        "A learns it lost the lock: {}",
        a.stderr()
    );
    let after: Vec<(u128, String)> = a
        .rest()
        .iter()
        .filter_map(|l| write_line(l))
        .filter(|(at, _)| *at > b_acquired)
        .collect();
    assert!(
        !after.is_empty(),
        "A resumed and wrote inside B's critical section (that is the hazard measured)"
    );
    let inside_ms = (after.last().unwrap().0 - b_acquired) / 1_000_000;
    eprintln!(
        "measured: after a 5 s stop (TTL 3 s), A's command made {} writes during the {inside_ms} ms \
         it ran inside B's critical section; every one was refused by the fencing compare",
        after.len()
    );
    for (at, outcome) in &after {
        assert_eq!(outcome, "FAILURE", "a stale write at {at} must be refused");
    }
    assert_eq!(b.wait(SHORT).code(), Some(0), "{}", b.stderr());
}
