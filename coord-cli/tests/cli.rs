//! The `coord` command line on the memory backend (one process: no cross-process
//! exclusion here; see `cli_etcd.rs` for that).

mod cli_support;

use cli_support::{LONG, Proc, SHORT, coord};
use predicates::prelude::*;

const MEM: &str = "memory://";

fn is_lock_key(line: &str, name: &str) -> bool {
    line.strip_prefix(&format!("{name}/"))
        .is_some_and(|hex| !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[test]
fn lock_runs_command_with_env_and_passes_its_exit_code() {
    let out = coord(
        MEM,
        &[
            "--namespace",
            "ns/",
            "lock",
            "jobs",
            "--",
            "sh",
            "-c",
            "echo \"$COORD_LOCK_NAME|$COORD_LOCK_KEY|$COORD_FENCING_TOKEN|$ETCD_LOCK_KEY|$COORD_LEASE_ID\"; exit 7",
        ],
    )
    .assert()
    .code(7)
    .get_output()
    .stdout
    .clone();
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let (key, token) = (lines[0], lines[1]);
    assert!(is_lock_key(key, "jobs"), "{out}");
    assert!(token.parse::<i64>().unwrap() > 0, "{out}");
    let env: Vec<&str> = lines[2].split('|').collect();
    assert_eq!(env[0], "jobs");
    assert_eq!(env[1], key);
    assert_eq!(env[2], token);
    assert_eq!(env[3], format!("ns/{key}"), "ETCD_LOCK_KEY is the full key");
    assert_eq!(format!("jobs/{}", env[4]), key);
}

#[test]
fn lock_command_without_double_dash_and_exit_codes() {
    coord(MEM, &["lock", "x", "true"]).assert().code(0);
    coord(MEM, &["lock", "x", "sh", "-c", "exit 42"])
        .assert()
        .code(42);
    coord(MEM, &["lock", "x", "--", "sh", "-c", "kill -9 $$"])
        .assert()
        .code(128 + 9);
    coord(MEM, &["lock", "x", "--", "/nonexistent/cmd"])
        .assert()
        .code(127)
        .stderr(predicate::str::contains("cannot run"));
}

/// `coord` with no `--backend` and no `COORD_BACKEND`.
fn coord_without_backend(args: &[&str]) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(cli_support::coord_bin());
    cmd.env_remove("COORD_BACKEND")
        .env_remove("COORD_NAMESPACE")
        .args(args)
        .timeout(SHORT);
    cmd
}

#[test]
fn commands_that_coordinate_processes_never_fall_back_on_memory() {
    // Before: two `coord lock jobs` processes both "held" jobs, with the same token.
    for args in [
        &["lock", "jobs"][..],
        &["elect", "e", "v"],
        &["leader", "e"],
    ] {
        coord_without_backend(args)
            .assert()
            .code(2)
            .stdout(predicate::str::is_empty())
            .stderr(
                predicate::str::contains(format!("{} needs a backend", args[0]))
                    .and(predicate::str::contains("--backend"))
                    .and(predicate::str::contains("COORD_BACKEND")),
            );
    }
    // Named explicitly, memory:// works (to try the CLI out), with a warning.
    coord(MEM, &["lock", "jobs", "true"])
        .assert()
        .code(0)
        .stderr(predicate::str::contains("warning: memory:// is in-process"));
    // In-process commands keep their default.
    coord_without_backend(&["bench", "lock-loop", "-n", "3"])
        .assert()
        .code(0)
        .stderr(predicate::str::is_empty());
}

/// Whether `pid` still runs: it exists and is not a zombie waiting for its reaper.
fn runs(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the command name, which is in parentheses.
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
fn cmd_dies_when_coord_is_killed() {
    // Before: after `kill -9` of coord, CMD kept running without the lock, and another
    // process took the lock once the lease ended.
    let mut coord = Proc::coord(
        MEM,
        &["lock", "h3", "--", "sh", "-c", "echo $$; exec sleep 300"],
    );
    let _key = coord.line(SHORT);
    let _token = coord.line(SHORT);
    let cmd = coord.line(SHORT);
    assert!(runs(&cmd), "CMD {cmd} runs under the lock");
    coord.signal("KILL");
    coord.wait(SHORT);
    let deadline = std::time::Instant::now() + SHORT;
    while runs(&cmd) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let survived = runs(&cmd);
    if survived {
        let _ = std::process::Command::new("kill")
            .args(["-9", &cmd])
            .status();
    }
    assert!(!survived, "CMD {cmd} outlived coord by {SHORT:?}");
}

#[test]
fn a_mistyped_option_after_the_name_is_refused_not_run_as_the_command() {
    // Before: `--timout 1s` became CMD, coord waited with no timeout, took the lock and
    // failed with "cannot run --timout" (exit 127).
    coord(MEM, &["lock", "TYPO", "--timout", "1s"])
        .assert()
        .code(2)
        .stdout(predicate::str::is_empty())
        .stderr(
            predicate::str::contains("unexpected argument '--timout'")
                .and(predicate::str::contains("--timeout")),
        );
    // A command that starts with `-` still runs after `--`; options of CMD after its first
    // word still go to CMD.
    coord(MEM, &["lock", "x", "--", "-not-an-option"])
        .assert()
        .code(127)
        .stderr(predicate::str::contains("cannot run \"-not-an-option\""));
    coord(MEM, &["lock", "x", "sh", "-c", "exit 7"])
        .assert()
        .code(7);
}

#[test]
fn lock_holds_until_sigterm_then_releases() {
    for signal in ["TERM", "INT"] {
        let mut p = Proc::coord(MEM, &["lock", "held"]);
        let key = p.line(SHORT);
        assert!(is_lock_key(&key, "held"), "{key}");
        let token: i64 = p.line(SHORT).parse().unwrap();
        assert!(token > 0);
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(p.running(), "must hold until a signal");
        p.signal(signal);
        assert_eq!(p.wait(SHORT).code(), Some(0), "{}", p.stderr());
    }
}

#[test]
fn json_lines_parse() {
    let out = coord(MEM, &["-o", "json", "lock", "j", "--", "true"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let events: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["locked", "exited", "released"]);
    assert!(events[0]["fencing_token"].as_i64().unwrap() > 0);
    assert_eq!(events[0]["name"], "j");
    assert_eq!(events[0]["mode"], "exclusive");
    assert_eq!(events[1]["exit_code"], 0);

    let out = coord(MEM, &["-o", "json", "leader", "nobody"])
        .assert()
        .code(6)
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["event"], "no_leader");

    let out = coord(
        MEM,
        &[
            "-o",
            "json",
            "bench",
            "contend",
            "--workers",
            "2",
            "-n",
            "20",
        ],
    )
    .assert()
    .success()
    .get_output()
    .stdout
    .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["cmd"], "contend");
    assert_eq!(v["counter"], 40);
    assert_eq!(v["expected"], 40);
}

#[test]
fn read_and_write_locks() {
    coord(
        MEM,
        &[
            "lock",
            "rw",
            "--read",
            "--",
            "sh",
            "-c",
            "echo $COORD_LOCK_KEY",
        ],
    )
    .assert()
    .success()
    .stdout(predicate::str::contains("rw/read/"));
    coord(MEM, &["lock", "rw", "--write", "--try", "--", "true"])
        .assert()
        .success()
        .stdout(predicate::str::contains("rw/write/"));
    coord(MEM, &["lock", "rw", "--read", "--write"])
        .assert()
        .code(2);
    coord(MEM, &["lock", "rw", "--try", "--timeout", "1s"])
        .assert()
        .code(2);
}

#[test]
fn elect_prints_key_and_proposal_and_resigns_on_signal() {
    let mut p = Proc::coord(MEM, &["elect", "e", "alpha"]);
    let key = p.line(SHORT);
    assert!(is_lock_key(&key, "e"), "{key}");
    assert_eq!(p.line(SHORT), "alpha");
    p.signal("TERM");
    assert_eq!(p.wait(SHORT).code(), Some(0), "{}", p.stderr());
    coord(MEM, &["elect", "e"]).assert().code(2); // proposal required without --listen
}

#[test]
fn leader_without_leader_exits_6() {
    coord(MEM, &["leader", "nobody"])
        .assert()
        .code(6)
        .stdout("")
        .stderr(predicate::str::contains("has no leader"));
}

#[test]
fn listen_prints_no_leader_then_stops_on_signal() {
    let mut p = Proc::coord(MEM, &["elect", "--listen", "quiet"]);
    assert_eq!(p.line(SHORT), "no leader");
    p.signal("INT");
    assert_eq!(p.wait(SHORT).code(), Some(0));
}

#[test]
fn bench_lines_have_the_go_peer_fields() {
    let field = |name: &str| format!("{name}=[0-9]+");
    let cases = [
        (
            vec!["bench", "lock-loop", "-n", "50"],
            format!(
                "^cmd=lock-loop ops=50 {} {} {} {}\n$",
                field("elapsed_ns"),
                field("per_op_ns"),
                field("p50_ns"),
                field("p99_ns")
            ),
        ),
        (
            vec![
                "bench",
                "contend",
                "--workers",
                "3",
                "--ops",
                "20",
                "--key",
                "c1",
            ],
            format!(
                "^cmd=contend workers=3 ops=60 {} ops_per_s=[0-9]+\\.[0-9] counter=60 expected=60 {} {} {} clients=3\n$",
                field("elapsed_ns"),
                field("handoffs"),
                field("handoff_p50_ns"),
                field("handoff_p99_ns")
            ),
        ),
        (
            vec!["bench", "hammer", "-n", "5", "--key", "h1"],
            // Exactly the Go peer's fields; the counter is checked on a server (cli_etcd.rs).
            format!("^cmd=hammer ops=5 {}\n$", field("elapsed_ns")),
        ),
        (
            vec!["bench", "hammer", "-n", "0", "--key", "h2"],
            format!("^cmd=hammer ops=0 {}\n$", field("elapsed_ns")),
        ),
    ];
    for (args, pattern) in cases {
        coord(MEM, &args)
            .assert()
            .success()
            .stdout(predicate::str::is_match(pattern).unwrap());
    }
}

/// The `key=value` fields of a bench line.
fn bench_fields(line: &str) -> std::collections::HashMap<String, String> {
    line.split_whitespace()
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Runs a bench on memory:// that must succeed: its output line and that line's fields.
fn bench_run(args: &[&str]) -> (String, std::collections::HashMap<String, String>) {
    let out = coord(MEM, args)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let line = String::from_utf8(out).unwrap();
    let fields = bench_fields(&line);
    (line, fields)
}

#[test]
fn bench_duration_runs_until_the_time_is_up() {
    for (workload, extra) in [
        ("lock-loop", &[][..]),
        ("contend", &["--workers", "2", "--key", "dur"][..]),
    ] {
        let mut args = vec!["bench", workload, "--duration", "300ms", "-n", "1"];
        args.extend_from_slice(extra);
        let (line, f) = bench_run(&args);
        let ops: u64 = f["ops"].parse().unwrap();
        let elapsed: u64 = f["elapsed_ns"].parse().unwrap();
        // -n 1 would stop after one operation (per worker): the duration overrides it.
        assert!(ops > 2, "{workload} --duration ran {ops} ops: {line}");
        assert!(elapsed >= 300_000_000, "{workload} stopped early: {line}");
        if workload == "contend" {
            assert_eq!(f["counter"], f["expected"], "{line}");
            assert_eq!(f["expected"], f["ops"], "{line}");
        }
    }
}

#[test]
fn bench_contend_workers_can_share_fewer_connections() {
    let (line, f) = bench_run(&[
        "bench",
        "contend",
        "--workers",
        "6",
        "--clients",
        "2",
        "-n",
        "10",
        "--key",
        "shared",
    ]);
    assert_eq!(f["clients"], "2", "{line}");
    assert_eq!(f["ops"], "60", "{line}");
    assert_eq!(f["counter"], "60", "{line}");
    coord(
        MEM,
        &["bench", "contend", "--workers", "2", "--clients", "0"],
    )
    .assert()
    .code(2)
    .stderr(predicate::str::contains("--clients"));
}

#[test]
fn bench_contend_measures_handoffs_between_waiting_workers() {
    let (_, one) = bench_run(&[
        "bench",
        "contend",
        "--workers",
        "1",
        "-n",
        "20",
        "--key",
        "h1w",
    ]);
    // A lone worker never waits for another: it has no handoffs.
    assert_eq!(one["handoffs"], "0");
    assert_eq!(one["handoff_p50_ns"], "0");
    // For a time rather than a count: a short counted run can finish within one worker's
    // scheduling slice, before the others ask for the lock.
    let (line, four) = bench_run(&[
        "bench",
        "contend",
        "--workers",
        "4",
        "--duration",
        "300ms",
        "--key",
        "h4w",
    ]);
    let handoffs: u64 = four["handoffs"].parse().unwrap();
    let ops: u64 = four["ops"].parse().unwrap();
    assert!(handoffs > 0 && handoffs < ops, "{line}");
    let (p50, p99): (u64, u64) = (
        four["handoff_p50_ns"].parse().unwrap(),
        four["handoff_p99_ns"].parse().unwrap(),
    );
    assert!(p50 > 0 && p50 <= p99, "{line}");
}

#[test]
fn bench_runs_on_a_current_thread_runtime() {
    coord(
        MEM,
        &[
            "bench",
            "lock-loop",
            "-n",
            "100",
            "--runtime",
            "current-thread",
        ],
    )
    .assert()
    .success()
    .stdout(predicate::str::starts_with("cmd=lock-loop ops=100 "));
}

#[test]
fn repl_runs_the_election_example_protocol() {
    let script = "1 watch\n1 elect\n2 elect second\n1 rev\n1 resign\n2 query\n2 proclaim again\n1 query\n2 crash\n1 query\nquit\n";
    let out = coord(MEM, &["repl", "r"])
        .write_stdin(script)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8(out).unwrap();
    for expected in [
        "[1] sees no leader",
        "[1] elected: key r/",
        "[1] leader rev ",
        "[1] resigned",
        "[2] elected: key r/",
        "[2] leader is \"second\"",
        "[1] leader is \"again\"",
        "[2] lease ",
        "[1] no leader",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}

/// The demo's text output with the fastest pace.
fn demo_text() -> String {
    let out = coord(MEM, &["demo", "--pace", "0s"])
        .timeout(LONG)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    String::from_utf8(out).unwrap()
}

/// The number of the first sentence line (not a `==` heading) at or after line `from`
/// that contains `needle`, or a panic naming it.
fn line_of(text: &str, from: usize, needle: &str) -> usize {
    text.lines()
        .enumerate()
        .skip(from)
        .find(|(_, l)| !l.starts_with("==") && l.contains(needle))
        .map(|(i, _)| i)
        .unwrap_or_else(|| panic!("no line with {needle:?} after line {from} in:\n{text}"))
}

#[test]
fn demo_prints_the_same_lines_in_causal_order_on_every_run() {
    // Before: lines came out in a different order on 17 of 20 runs (the observer and the
    // campaigns printed from tasks of their own, effects before their causes).
    let first = demo_text();
    for run in 2..=20 {
        let again = demo_text();
        assert_eq!(again, first, "run {run} differs from run 1");
    }
    let order = [
        "[a] is leader",
        "[observer] sees that the leader is now a",
        "[b] runs for leader too, and waits in line behind a",
        "[c] runs for leader too, and waits in line behind b",
        "[a] crashes",
        "store deleted a's key",
        "[b] was next in line, so b is leader now",
        "[observer] sees that the leader is now b",
        "[b] resigns",
        "[c] was next in line, so c is leader now",
        "[observer] sees that the leader is now c",
        "[c] resigns too",
        "[observer] sees that there is no leader now",
        "[c] takes the lock with fencing token",
        "its lease ends",
        "[b] takes the lock with fencing token",
        "[c] wakes up and writes, on the condition that it still holds the lock: the store \
         refuses the write",
        "[b] writes on the same condition: the store accepts the write",
        "demo/resource = \"b\"",
    ];
    // Each line is looked for after the one before it: a missing or late line panics.
    let mut at = 0;
    for needle in order {
        at = line_of(&first, at, needle) + 1;
    }
}

#[test]
fn demo_explains_each_term_where_it_first_appears_and_ends_with_what_to_try() {
    let text = demo_text();
    for (term, explanation) in [
        ("lease", "a promise that lasts a TTL (time to live)"),
        ("revision", "the number the store gives each change"),
        ("fencing token", "the revision at which it took the lock"),
    ] {
        let first_use = line_of(&text, 0, term);
        assert_eq!(
            first_use,
            line_of(&text, 0, explanation),
            "{term:?} is first used without its explanation:\n{text}"
        );
    }
    let tail: Vec<&str> = text.lines().rev().take(10).collect();
    assert!(
        tail.iter()
            .any(|l| l.trim() == "coord lock --backend etcd://127.0.0.1:2379 jobs -- CMD"),
        "{text}"
    );
    assert!(
        text.contains("coord elect --backend etcd://127.0.0.1:2379"),
        "{text}"
    );
}

#[test]
fn demo_refuses_a_backend_that_is_not_memory() {
    // Before: `demo --backend garbage://x` ran on memory without a word.
    for url in ["garbage://x", "etcd://127.0.0.1:2379"] {
        coord(url, &["demo", "--pace", "0s"])
            .assert()
            .code(2)
            .stdout("")
            .stderr(
                predicate::str::contains("in-memory store")
                    .and(predicate::str::contains("can only be memory://")),
            );
    }
    coord("memory://", &["demo", "--pace", "0s"])
        .timeout(LONG)
        .assert()
        .success();
}

#[test]
fn demo_json_lines_parse_and_tokens_rise() {
    let out = coord(MEM, &["-o", "json", "demo", "--pace", "0s"])
        .timeout(LONG)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let events: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(events[0]["event"], "start");
    let tokens: Vec<i64> = events
        .iter()
        .filter_map(|e| e["fencing_token"].as_i64())
        .collect();
    assert_eq!(tokens.len(), 5, "{events:?}");
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
    let leaders: Vec<&str> = events
        .iter()
        .filter(|e| e["who"] == "observer")
        .filter_map(|e| e["leader"].as_str())
        .collect();
    assert_eq!(leaders, ["a", "b", "c"]);
    let tries = events.iter().filter(|e| e["event"] == "try").count();
    assert!(tries >= 3, "{events:?}");
}

#[test]
fn elect_listen_refuses_a_timeout() {
    // Before: `elect --listen e --timeout 1s` listened forever, the timeout ignored.
    coord(MEM, &["elect", "--listen", "e", "--timeout", "1s"])
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains(
            "'--listen' cannot be used with '--timeout",
        ));
}

#[test]
fn lock_refuses_kill_after_without_a_command() {
    // Before: `--kill-after` without CMD was accepted and did nothing.
    coord(MEM, &["lock", "x", "--kill-after", "2s"])
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("--kill-after").and(predicate::str::contains("<CMD>")));
    coord(MEM, &["lock", "x", "--kill-after", "500ms", "--", "true"])
        .assert()
        .success();
}

#[test]
fn repl_refuses_json_output() {
    // Before: `repl -o json` printed text lines, the option silently ignored.
    coord(MEM, &["-o", "json", "repl", "e"])
        .write_stdin("1 elect\nquit\n")
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("repl has no JSON output"));
}

#[test]
fn lock_command_gets_etcd_lock_rev_the_fencing_token() {
    // Before: only ETCD_LOCK_KEY was set; etcdctl lock sets ETCD_LOCK_REV too.
    let out = coord(
        MEM,
        &[
            "lock",
            "rev",
            "--",
            "sh",
            "-c",
            "echo \"rev=$ETCD_LOCK_REV\"",
        ],
    )
    .assert()
    .success()
    .get_output()
    .stdout
    .clone();
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[2], format!("rev={}", lines[1]), "{out}");
}

/// The one JSON object coord printed on stderr as its error.
fn json_error(stderr: &[u8]) -> serde_json::Value {
    let text = String::from_utf8(stderr.to_vec()).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("\"error\"")).collect();
    assert_eq!(lines.len(), 1, "one error line: {text}");
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[test]
fn with_json_output_errors_are_one_json_object_on_stderr() {
    // Before: with -o json, errors were text lines all the same.
    let cases: [(&str, &[&str], i32, &str, &str); 4] = [
        (
            MEM,
            &["-o", "json", "leader", "nobody"],
            6,
            "no_leader",
            "has no leader",
        ),
        (
            "bogus://x",
            &["-o", "json", "leader", "x"],
            2,
            "invalid_argument",
            "unknown scheme",
        ),
        (MEM, &["lock", "-o", "json"], 2, "usage", "<NAME>"),
        (
            MEM,
            &["-o", "json", "lock", "a\nb"],
            2,
            "usage",
            "a newline",
        ),
    ];
    for (url, args, code, kind, says) in cases {
        let out = coord(url, args).assert().code(code).get_output().clone();
        let e = json_error(&out.stderr);
        assert_eq!(e["exit_code"], code, "{args:?}: {e}");
        assert_eq!(e["kind"], kind, "{args:?}: {e}");
        let message = e["error"].as_str().unwrap();
        assert!(message.contains(says), "{args:?}: {e}");
        assert!(!message.starts_with("error:"), "{e}");
    }
    // Text output keeps text errors.
    coord(MEM, &["leader", "nobody"])
        .assert()
        .code(6)
        .stderr(predicate::str::starts_with("coord: "));
}

#[test]
fn names_and_proposals_with_control_characters_are_refused() {
    // Before: a name with a newline printed its key over two lines, breaking the two-line
    // key/token output.
    for (args, says) in [
        (&["lock", "a\nb"][..], "a newline at character 2"),
        (&["lock", "tab\there", "--", "true"], "a tab at character 4"),
        (&["elect", "e", "v\x1bx"], "an escape (ESC) at character 2"),
        (&["elect", "e\rx", "v"], "a carriage return at character 2"),
        (&["leader", "\x7f"], "U+007F at character 1"),
        (&["elect", "--listen", "x\u{85}"], "U+0085 at character 2"),
    ] {
        coord(MEM, args).assert().code(2).stdout("").stderr(
            predicate::str::contains(says).and(predicate::str::contains("control characters")),
        );
    }
    // Other Unicode is fine.
    coord(MEM, &["lock", "caf\u{e9} \u{1f512}", "--", "true"])
        .assert()
        .success();
}

#[test]
fn a_kill_after_too_long_for_the_ttl_is_refused_before_cmd_runs() {
    coord(
        MEM,
        &[
            "--ttl",
            "2s",
            "lock",
            "x",
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
    .stderr(
        predicate::str::contains("--kill-after 2s")
            .and(predicate::str::contains("TTL 2s"))
            .and(predicate::str::contains("--kill-after 1133ms or less"))
            .and(predicate::str::contains("--ttl 4s or more")),
    );
    // The URL's ttl counts as much as --ttl; the default --kill-after 1s needs 2 s.
    coord("memory://?ttl=1s", &["lock", "x", "--", "echo", "ran"])
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("--ttl 2s or more"));
    coord(MEM, &["--ttl", "2", "lock", "x", "--", "true"])
        .assert()
        .success();
    coord(
        MEM,
        &[
            "--ttl",
            "1",
            "lock",
            "x",
            "--kill-after",
            "500ms",
            "--",
            "true",
        ],
    )
    .assert()
    .success();
}

#[test]
fn bad_urls_and_unavailable_backends_say_what_is_wrong() {
    // A URL that does not parse is bad usage (2); one that nothing answers, a failure (1).
    coord("zk://h:1", &["leader", "x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unknown scheme \"zk\""));
    // etcd: not compiled in, or a port the url crate refuses, named with its host.
    coord("etcd://h:99999", &["leader", "x"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("endpoint \"h:99999\": bad port")
                .or(predicate::str::contains("feature \"etcd\"")),
        );
    coord("memory://?colour=blue", &["leader", "x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unknown query parameter `colour`"));
    // Redis: not compiled in, or nothing listens there; either way the password stays
    // secret.
    coord("redis://user:hunter2@127.0.0.1:1", &["leader", "x"])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("feature \"redis\"")
                .or(predicate::str::contains("unavailable"))
                .and(predicate::str::contains("hunter2").not()),
        );
    // The env variable is the default for --backend.
    assert_cmd::Command::new(cli_support::coord_bin())
        .env("COORD_BACKEND", "bogus://x")
        .args(["leader", "x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unknown scheme \"bogus\""));
}

#[test]
fn help_documents_exit_codes() {
    assert_cmd::Command::new(cli_support::coord_bin())
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("Exit codes").and(predicate::str::contains("--try")));
}

#[test]
fn help_lists_the_backend_urls_of_the_registry() {
    let help = predicate::str::contains("Backend URLs")
        .and(predicate::str::contains("namespace and ttl"))
        .and(predicate::str::contains("  memory://[STORE]"));
    let etcd = predicate::str::contains("  etcd://HOST[:PORT][,HOST[:PORT]…]")
        .and(predicate::str::contains("options: user, password, cacert"))
        .or(predicate::str::contains(
            "etcd://, etcds://: not in this build",
        ));
    let redis = predicate::str::contains("  redis://[USER:PASSWORD@]HOST[:PORT][/DB]").or(
        predicate::str::contains(
            "redis://, rediss://, redis+cluster://, rediss+cluster://: not in this build",
        ),
    );
    assert_cmd::Command::new(cli_support::coord_bin())
        .arg("--help")
        .assert()
        .success()
        .stdout(help.and(etcd).and(redis));
}
