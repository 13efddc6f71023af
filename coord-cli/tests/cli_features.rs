//! `coord lock --permits`, `coord elect NAME VALUE -- CMD`, `coord elect --try` and a
//! stopped `coord bench` on the memory backend, through the built binary. Exclusion across
//! processes is in `cli_etcd_features.rs`.

mod cli_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use cli_support::{Proc, SHORT, coord};
use predicates::prelude::*;

const MEM: &str = "memory://";

#[test]
fn permits_are_refused_with_read_write_zero_or_too_many() {
    for (args, says) in [
        (
            &["lock", "s", "--permits", "2", "--read"][..],
            "'--permits <N>' cannot be used with '--read'",
        ),
        (
            &["lock", "s", "-n", "2", "--write"],
            "'--permits <N>' cannot be used with '--write'",
        ),
        (&["lock", "s", "-n", "0"], "at least 1 permit"),
        (
            &["lock", "s", "-n", "two"],
            "\"two\" is not a number of permits",
        ),
        (
            &["lock", "s", "-n", "9223372036854775808", "--", "true"],
            "more than the most a server can count, 9223372036854775807",
        ),
    ] {
        coord(MEM, args)
            .assert()
            .code(2)
            .stdout("")
            .stderr(predicate::str::contains(says));
    }
}

#[test]
fn a_permit_runs_the_command_with_the_lock_env_and_its_exit_code() {
    let out = coord(
        MEM,
        &[
            "-o",
            "json",
            "lock",
            "pool",
            "--permits",
            "3",
            "--",
            "sh",
            "-c",
            "echo \"{\\\"env\\\": \\\"$COORD_LOCK_NAME|$COORD_LOCK_KEY|$COORD_FENCING_TOKEN|$COORD_PERMITS\\\"}\"; exit 6",
        ],
    )
    .assert()
    .code(6)
    .get_output()
    .stdout
    .clone();
    let events: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let locked = &events[0];
    assert_eq!(locked["event"], "locked");
    assert_eq!(locked["mode"], "semaphore");
    assert_eq!(locked["permits"], 3);
    let key = locked["key"].as_str().unwrap();
    assert!(key.starts_with("pool/"), "{key}");
    let env = events[1]["env"].as_str().unwrap();
    assert_eq!(
        env,
        format!("pool|{key}|{}|3", locked["fencing_token"]),
        "CMD's environment"
    );
    assert_eq!(events[2]["event"], "exited");
    assert_eq!(events[2]["exit_code"], 6);
    assert_eq!(events[3]["event"], "released");
}

#[test]
fn elect_runs_the_command_while_leader_and_exits_with_its_code() {
    let out = coord(
        MEM,
        &[
            "--namespace",
            "ns/",
            "elect",
            "sched",
            "node-a",
            "--",
            "sh",
            "-c",
            "echo \"$COORD_ELECTION_NAME|$COORD_LEADER_KEY|$COORD_PROPOSAL|$COORD_FENCING_TOKEN|$COORD_LEASE_ID|$ETCD_LEADER_KEY\"; exit 9",
        ],
    )
    .assert()
    .code(9)
    .get_output()
    .stdout
    .clone();
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let key = lines[0];
    assert!(key.starts_with("sched/"), "{out}");
    assert_eq!(
        lines[1], "node-a",
        "the proposal, as etcdctl elect prints it"
    );
    let env: Vec<&str> = lines[2].split('|').collect();
    assert_eq!(env[0], "sched");
    assert_eq!(env[1], key);
    assert_eq!(env[2], "node-a");
    assert!(env[3].parse::<i64>().unwrap() > 0, "{out}");
    assert_eq!(format!("sched/{}", env[4]), key);
    assert_eq!(env[5], format!("ns/{key}"), "the key as stored");

    coord(MEM, &["elect", "e", "v", "--", "/nonexistent/cmd"])
        .assert()
        .code(127)
        .stderr(predicate::str::contains("cannot run"));
    coord(MEM, &["elect", "e", "v", "--", "sh", "-c", "kill -9 $$"])
        .assert()
        .code(128 + 9);
}

#[test]
fn elect_options_that_need_a_command_or_a_campaign_are_refused() {
    for (args, says) in [
        (&["elect", "e", "v", "--kill-after", "2s"][..], "<CMD>"),
        (
            &["elect", "e", "v", "--try", "--timeout", "1s"],
            "--timeout",
        ),
        (&["elect", "--listen", "e", "--try"], "--listen"),
    ] {
        coord(MEM, args)
            .assert()
            .code(2)
            .stdout("")
            .stderr(predicate::str::contains(says));
    }
    coord(
        MEM,
        &[
            "--ttl",
            "2s",
            "elect",
            "e",
            "v",
            "--kill-after",
            "2s",
            "--",
            "echo",
            "ran",
        ],
    )
    .assert()
    .code(2)
    .stdout("")
    .stderr(predicate::str::contains("--ttl 4s or more"));
}

#[test]
fn elect_try_leads_when_there_is_no_leader() {
    coord(
        MEM,
        &["elect", "--try", "free", "me", "--", "sh", "-c", "echo ran"],
    )
    .assert()
    .code(0)
    .stdout(predicate::str::ends_with("me\nran\n"));
}

#[test]
fn elect_passes_signals_on_to_the_command() {
    let script = "trap 'echo got TERM; exit 3' TERM; echo ready; while :; do sleep 0.05; done";
    let mut p = Proc::coord(MEM, &["elect", "sig", "v", "--", "sh", "-c", script]);
    p.line(SHORT); // key
    p.line(SHORT); // proposal
    assert_eq!(p.line(SHORT), "ready");
    p.signal("TERM");
    assert_eq!(p.line(SHORT), "got TERM");
    assert_eq!(p.wait(SHORT).code(), Some(3), "{}", p.stderr());
}

/// Whether `pid` still runs: it exists and is not a zombie waiting for its reaper.
fn runs(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_owned();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

#[test]
fn an_elected_command_dies_when_coord_is_killed() {
    let mut coord = Proc::coord(
        MEM,
        &[
            "elect",
            "g",
            "v",
            "--",
            "sh",
            "-c",
            "echo $$; exec sleep 300",
        ],
    );
    coord.line(SHORT);
    coord.line(SHORT);
    let cmd = coord.line(SHORT);
    assert!(runs(&cmd), "CMD {cmd} runs while leader");
    coord.signal("KILL");
    coord.wait(SHORT);
    let deadline = std::time::Instant::now() + SHORT;
    while runs(&cmd) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let survived = runs(&cmd);
    if survived {
        let _ = Command::new("kill").args(["-9", &cmd]).status();
    }
    assert!(!survived, "CMD {cmd} outlived coord by {SHORT:?}");
}

/// Runs `coord bench ARGS` on memory://, sends SIGINT after its first progress line on
/// stderr, and returns its exit code and stdout.
fn bench_interrupted(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(cli_support::coord_bin())
        .env_remove("COORD_BACKEND")
        .env_remove("COORD_NAMESPACE")
        .args(["--backend", MEM])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start coord");
    let stderr = child.stderr.take().unwrap();
    let (tx, progress) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("coord bench ") {
                let _ = tx.send(line);
            }
        }
    });
    let first = progress.recv_timeout(cli_support::LONG);
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(first.is_ok(), "no progress line on stderr");
    let out = child.wait_with_output().expect("wait for coord");
    (out.status.code(), String::from_utf8(out.stdout).unwrap())
}

#[test]
fn bench_stopped_by_sigint_prints_the_partial_result_and_exits_130() {
    let (code, out) = bench_interrupted(&[
        "-o",
        "json",
        "bench",
        "contend",
        "--workers",
        "2",
        "--duration",
        "60s",
        "--key",
        "int",
    ]);
    assert_eq!(code, Some(130), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{out}: {e}"));
    assert_eq!(v["cmd"], "contend");
    assert_eq!(v["interrupted"], true);
    let ops = v["ops"].as_u64().unwrap();
    assert!(ops > 0, "{out}");
    assert_eq!(v["counter"], v["expected"], "no operation was cut in half");
    assert_eq!(v["expected"], ops);
    let elapsed = v["elapsed_ns"].as_u64().unwrap();
    assert!(elapsed < 60_000_000_000, "stopped before --duration: {out}");
    for field in [
        "workers",
        "ops_per_s",
        "handoffs",
        "handoff_p50_ns",
        "handoff_p99_ns",
    ] {
        assert!(v.get(field).is_some(), "{field} missing: {out}");
    }
}

#[test]
fn bench_stopped_by_sigint_says_so_in_text() {
    let (code, out) = bench_interrupted(&["bench", "lock-loop", "--duration", "60s"]);
    assert_eq!(code, Some(130), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("cmd=lock-loop ops="), "{out}");
    assert!(lines[1].starts_with("interrupted:"), "{out}");
    assert!(lines[1].contains("partial"), "{out}");
}

#[test]
fn bench_not_interrupted_has_no_interrupted_field() {
    let out = coord(MEM, &["-o", "json", "bench", "lock-loop", "-n", "5"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert!(v.get("interrupted").is_none(), "{v}");
}

#[test]
fn elect_with_the_proposal_forgotten_is_refused_not_run_with_cmd_as_the_proposal() {
    // Without the rule that CMD always follows `--`, `./job.sh` became the proposal and
    // coord led forever without running anything.
    coord(MEM, &["elect", "e", "--", "./job.sh"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("<PROPOSAL>"));
    coord(MEM, &["elect", "e", "v", "sh", "-c", "exit 3"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unexpected argument 'sh'"));
    coord(MEM, &["elect", "e", "v", "--", "sh", "-c", "exit 3"])
        .assert()
        .code(3);
}
