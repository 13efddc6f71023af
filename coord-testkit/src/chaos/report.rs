//! The summary of a run: operations by kind and outcome, faults by kind, holds, and
//! violations with the last events and the replay line.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::time::Duration;

use super::config::Config;
use super::faults::FaultCounts;
use super::ledger::HoldCounts;
use super::workload::Ctx;

/// What a chaos run did and found.
#[derive(Debug, Clone)]
pub struct Report {
    /// The run's `--backend` name.
    pub backend: String,
    /// Its seed.
    pub seed: u64,
    /// How long clients worked (the configured length).
    pub duration: Duration,
    /// How long the run took, final round included.
    pub elapsed: Duration,
    /// Operations by (kind, outcome): `ok`, an error kind (`Timeout`, `Locked`,
    /// `SessionExpired`...) or `hung`.
    pub operations: BTreeMap<(String, String), u64>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
    /// Acquisitions by kind of hold (`lock`, `read`, `write`, `permit`, `leader`).
    pub acquisitions: BTreeMap<String, u64>,
    /// Holds ended by choice.
    pub released: u64,
    /// Holds ended by `lost()`.
    pub lost: u64,
    /// Holds ended by a lease the runner ended by force.
    pub ended_by_force: u64,
    /// Fenced writes the store accepted.
    pub fenced_accepted: u64,
    /// Fenced writes the store refused (the hold was gone).
    pub fenced_refused: u64,
    /// Of those, writes by a client resuming from a pause with its old token.
    pub stale_refused: u64,
    /// Events in the history.
    pub history_events: usize,
    /// Everything that broke a promise; empty on a clean run.
    pub violations: Vec<String>,
    /// The last events before the end (shown with violations).
    pub last_events: Vec<String>,
    /// The line that replays the run.
    pub replay: String,
}

impl Report {
    pub(crate) fn new(
        config: &Config,
        elapsed: Duration,
        ctx: &Ctx<'_>,
        faults: FaultCounts,
    ) -> Report {
        let ledger = &ctx.ledger;
        let mut violations = ledger.violations();
        if let Err(v) = ledger.history().check() {
            violations.push(format!("history: {v}"));
        }
        let HoldCounts {
            acquired,
            released,
            lost,
            ended_by_force,
            fenced_accepted,
            fenced_refused,
            stale_refused,
        } = ledger.counts();
        let operations = ctx
            .stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|((k, o), n)| (((*k).to_owned(), o.clone()), *n))
            .collect();
        Report {
            backend: config.backend.clone(),
            seed: config.seed,
            duration: config.duration,
            elapsed,
            operations,
            faults,
            acquisitions: acquired
                .into_iter()
                .map(|(k, n)| (k.to_owned(), n))
                .collect(),
            released,
            lost,
            ended_by_force,
            fenced_accepted,
            fenced_refused,
            stale_refused,
            history_events: ledger.history().len(),
            violations,
            last_events: ledger.last_events(),
            replay: config.replay_line(),
        }
    }

    /// All operations.
    pub fn total_operations(&self) -> u64 {
        self.operations.values().sum()
    }

    /// All faults injected.
    pub fn total_faults(&self) -> u64 {
        self.faults.values().sum()
    }

    /// All acquisitions.
    pub fn total_acquisitions(&self) -> u64 {
        self.acquisitions.values().sum()
    }

    /// Writes the report to the process's real stderr, past the test harness's capture.
    pub fn print(&self) {
        let _ = std::io::stderr()
            .lock()
            .write_all(format!("{self}\n").as_bytes());
    }

    /// Panics with the violations, the last events and the replay line when there were
    /// any, or when the run did nothing (no acquisition or no fault).
    #[track_caller]
    pub fn assert_clean(&self) {
        assert!(
            self.violations.is_empty(),
            "chaos run on {} found {} violation(s) (seed {:#x}); replay: {}\n{}",
            self.backend,
            self.violations.len(),
            self.seed,
            self.replay,
            self.violations.join("\n")
        );
        assert!(
            self.total_acquisitions() > 0 && self.total_faults() > 0,
            "chaos run on {} did nothing: {} acquisitions, {} faults (seed {:#x})",
            self.backend,
            self.total_acquisitions(),
            self.total_faults(),
            self.seed
        );
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "== chaos run: backend {}, seed {:#x}, {} s of work ({:.1} s in all)",
            self.backend,
            self.seed,
            self.duration.as_secs(),
            self.elapsed.as_secs_f64()
        )?;
        writeln!(f, "operations: {}", self.total_operations())?;
        let mut by_kind: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for ((kind, outcome), n) in &self.operations {
            by_kind
                .entry(kind)
                .or_default()
                .push(format!("{outcome} {n}"));
        }
        for (kind, outcomes) in by_kind {
            writeln!(f, "  {kind:<22} {}", outcomes.join(", "))?;
        }
        writeln!(f, "faults injected: {}", self.total_faults())?;
        for (kind, n) in &self.faults {
            writeln!(f, "  {kind:<28} {n}")?;
        }
        let acquired: Vec<String> = self
            .acquisitions
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        writeln!(
            f,
            "holds: {} acquired ({}); {} released, {} lost, {} ended by force",
            self.total_acquisitions(),
            acquired.join(", "),
            self.released,
            self.lost,
            self.ended_by_force
        )?;
        writeln!(
            f,
            "fenced writes: {} accepted, {} refused ({} of them by a resumed paused client); history: {} events",
            self.fenced_accepted, self.fenced_refused, self.stale_refused, self.history_events
        )?;
        if self.violations.is_empty() {
            writeln!(f, "violations: 0")?;
        } else {
            writeln!(f, "violations: {}", self.violations.len())?;
            for v in &self.violations {
                writeln!(f, "  {v}")?;
            }
            writeln!(f, "last events:")?;
            for e in &self.last_events {
                writeln!(f, "  {e}")?;
            }
        }
        write!(f, "replay: {}", self.replay)
    }
}
