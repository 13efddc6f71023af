//! The raw results of a `scripts/bench.sh` run: one JSON object per line, each a result, a
//! fact about the run (machine, versions), an exact command, or a note.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One line of the raw results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Record {
    /// The output line of one benchmark run.
    Result(RunResult),
    /// A fact about the run: `cpu`, `nproc`, `etcd`, `quick`...
    Meta { key: String, value: String },
    /// The exact command behind a row of results, with `PORT`-style placeholders.
    Command { label: String, command: String },
    /// Something the reader of the report must know (a part skipped, a failure).
    Note { text: String },
}

/// The output line of one benchmark run, with where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RunResult {
    /// The server: `etcd`, `redis` or `memory`.
    pub(crate) suite: String,
    /// Who ran: `coord`, `go` (etcd's Go recipes), `raw` (the plain redis-rs lock),
    /// `tokio` (`tokio::sync::Mutex`).
    pub(crate) side: String,
    /// Which round of the alternation (1-based); pairs of sides compare round by round.
    #[serde(default)]
    pub(crate) round: u32,
    /// `current-thread` or `multi-thread` where the run chose one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) runtime: Option<String>,
    /// The workload: `lock-loop`, `contend`, `raw-lock-loop`, `failover`, `mixed`...
    pub(crate) cmd: String,
    /// Every other field of the line: `workers`, `ops_per_s`, `per_op_ns`...
    #[serde(flatten)]
    pub(crate) fields: BTreeMap<String, Value>,
}

impl RunResult {
    /// A numeric field (numbers, or strings holding one, as `key=value` lines give them).
    pub(crate) fn num(&self, name: &str) -> Option<f64> {
        match self.fields.get(name)? {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }

    /// The `workers` field, 0 when absent.
    pub(crate) fn workers(&self) -> u64 {
        self.num("workers").map_or(0, |w| w as u64)
    }
}

/// A whole run, in file order.
#[derive(Debug, Default)]
pub(crate) struct Run {
    pub(crate) results: Vec<RunResult>,
    pub(crate) meta: Vec<(String, String)>,
    pub(crate) commands: Vec<(String, String)>,
    pub(crate) notes: Vec<String>,
}

impl Run {
    /// The last value given for a meta key.
    pub(crate) fn meta(&self, key: &str) -> Option<&str> {
        self.meta
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A line of the raw results that is not a record.
#[derive(Debug)]
pub(crate) struct ParseError {
    pub(crate) line: usize,
    pub(crate) source: serde_json::Error,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: not a result record: {}",
            self.line, self.source
        )
    }
}

impl std::error::Error for ParseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Parses the raw results; blank lines are skipped.
pub(crate) fn parse(text: &str) -> Result<Run, ParseError> {
    let mut run = Run::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(line).map_err(|source| ParseError {
            line: i + 1,
            source,
        })?;
        match record {
            Record::Result(r) => run.results.push(r),
            Record::Meta { key, value } => run.meta.push((key, value)),
            Record::Command { label, command } => run.commands.push((label, command)),
            Record::Note { text } => run.notes.push(text),
        }
    }
    Ok(run)
}

/// Splits a `key=value key=value` line (as `coord bench` and the Go yardstick print) into
/// fields: integers and decimals become numbers, anything else stays a string. Words
/// without `=` (the `held` of `cmd=hold held key=…`) are kept as `true` flags.
pub(crate) fn fields_of_line(line: &str) -> BTreeMap<String, Value> {
    line.split_whitespace()
        .map(|word| match word.split_once('=') {
            Some((k, v)) => (k.to_owned(), value_of(v)),
            None => (word.to_owned(), Value::Bool(true)),
        })
        .collect()
}

fn value_of(v: &str) -> Value {
    if let Ok(i) = v.parse::<i64>() {
        return Value::from(i);
    }
    match v.parse::<f64>() {
        Ok(f) if f.is_finite() => Value::from(f),
        _ => Value::from(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"type":"meta","key":"nproc","value":"2"}
{"type":"command","label":"etcd contend","command":"coord --backend etcd://127.0.0.1:PORT bench contend --workers W --duration 4s"}

{"type":"result","suite":"etcd","side":"go","round":1,"cmd":"contend","workers":8,"ops":410,"elapsed_ns":5000000000,"ops_per_s":82.0,"counter":410,"expected":410,"handoffs":402,"handoff_p50_ns":9000000,"handoff_p99_ns":101000000}
{"type":"result","suite":"memory","side":"tokio","round":2,"runtime":"current-thread","cmd":"lock-loop","ops":"1000","per_op_ns":"31"}
{"type":"note","text":"1,000 waiters skipped (--quick)"}
"#;

    #[test]
    fn a_sample_run_parses_into_results_meta_commands_and_notes() {
        let run = parse(SAMPLE).unwrap();
        assert_eq!(run.meta("nproc"), Some("2"));
        assert_eq!(run.meta("cpu"), None);
        assert_eq!(run.commands.len(), 1);
        assert_eq!(run.notes, ["1,000 waiters skipped (--quick)"]);
        assert_eq!(run.results.len(), 2);
        let go = &run.results[0];
        assert_eq!(
            (go.suite.as_str(), go.side.as_str(), go.round),
            ("etcd", "go", 1)
        );
        assert_eq!(go.cmd, "contend");
        assert_eq!(go.workers(), 8);
        assert_eq!(go.num("ops_per_s"), Some(82.0));
        assert_eq!(go.num("handoff_p99_ns"), Some(101_000_000.0));
        let tokio = &run.results[1];
        assert_eq!(tokio.runtime.as_deref(), Some("current-thread"));
        // Numbers written as strings still read as numbers.
        assert_eq!(tokio.num("per_op_ns"), Some(31.0));
        assert_eq!(tokio.workers(), 0);
        assert_eq!(tokio.num("missing"), None);
    }

    #[test]
    fn a_bad_line_is_named_by_its_number() {
        let err =
            parse("{\"type\":\"note\",\"text\":\"ok\"}\n\n{\"type\":\"result\"}\n").unwrap_err();
        assert_eq!(err.line, 3);
        assert!(
            err.to_string().starts_with("line 3: not a result record"),
            "{err}"
        );
        assert!(parse("not json").is_err());
    }

    #[test]
    fn bench_lines_split_into_typed_fields() {
        let f = fields_of_line("cmd=contend workers=8 ops_per_s=82.5 counter=410 key=peer/1 held");
        assert_eq!(f["cmd"], Value::from("contend"));
        assert_eq!(f["workers"], Value::from(8));
        assert_eq!(f["ops_per_s"], Value::from(82.5));
        assert_eq!(f["key"], Value::from("peer/1"));
        assert_eq!(f["held"], Value::Bool(true));
    }

    #[test]
    fn a_result_written_by_record_reads_back_the_same() {
        let mut fields = fields_of_line("cmd=lock-loop ops=10 per_op_ns=1200");
        let cmd = fields.remove("cmd").unwrap();
        let r = RunResult {
            suite: "etcd".into(),
            side: "coord".into(),
            round: 3,
            runtime: None,
            cmd: cmd.as_str().unwrap().to_owned(),
            fields,
        };
        let line = serde_json::to_string(&Record::Result(r.clone())).unwrap();
        let run = parse(&line).unwrap();
        assert_eq!(run.results, [r]);
    }
}
