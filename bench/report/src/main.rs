//! `bench-report`: the record keeper and report writer of `scripts/bench.sh`.
//!
//! The script appends one JSON line per result (`record`), fact (`meta`), command
//! (`command`) or note (`note`) to the run's raw file, then `render` turns that file into
//! `BENCHMARKS.md` and SVG plots. Keeping the raw lines means a report can be rewritten
//! without rerunning the benchmarks.

mod format;
mod plots;
mod records;
mod report;
mod stats;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use records::{Record, RunResult, fields_of_line};

#[derive(Debug, Parser)]
#[command(
    name = "bench-report",
    about = "Records and reports scripts/bench.sh runs"
)]
struct Cli {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Print a benchmark's output line (`cmd=… key=value …`) as a result record.
    Record {
        /// etcd, redis or memory.
        #[arg(long)]
        suite: String,
        /// coord, go, raw, tokio, server, both.
        #[arg(long)]
        side: String,
        /// The round of the alternation.
        #[arg(long, default_value_t = 0)]
        round: u32,
        /// The tokio runtime flavour the run used.
        #[arg(long)]
        runtime: Option<String>,
        /// Extra fields, `key=value` (server CPU time, watch streams...).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// The benchmark's output line.
        line: String,
    },
    /// Print a fact about the run (machine, version) as a record.
    Meta { key: String, value: String },
    /// Print an exact command as a record.
    Command { label: String, command: String },
    /// Print a note for the report's reader as a record.
    Note { text: String },
    /// Write the report and its plots from a raw results file.
    Render {
        /// The raw results (JSON lines).
        raw: PathBuf,
        /// The report to write.
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// The directory of the SVG plots (created if missing).
        #[arg(long, default_value = "bench/plots")]
        plots: PathBuf,
        /// A hand-written analysis of the targets missed, appended to the report when the
        /// file exists (what bounds them is found by profiling, not by the script).
        #[arg(long, default_value = "bench/bounds.md")]
        bounds: PathBuf,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse().action) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-report: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print(record: &Record) -> Result<(), String> {
    let line = serde_json::to_string(record).map_err(|e| e.to_string())?;
    println!("{line}");
    Ok(())
}

fn run(action: Action) -> Result<(), String> {
    match action {
        Action::Record {
            suite,
            side,
            round,
            runtime,
            set,
            line,
        } => {
            let mut fields = fields_of_line(&line);
            for kv in &set {
                let extra = fields_of_line(kv);
                if extra.len() != 1 || !kv.contains('=') {
                    return Err(format!("--set {kv:?}: expected one KEY=VALUE"));
                }
                fields.extend(extra);
            }
            let Some(cmd) = fields.remove("cmd") else {
                return Err(format!(
                    "{suite}/{side}: the line has no cmd= field (did the benchmark fail?): {line:?}"
                ));
            };
            let cmd = cmd.as_str().map(str::to_owned).unwrap_or(cmd.to_string());
            print(&Record::Result(RunResult {
                suite,
                side,
                round,
                runtime,
                cmd,
                fields,
            }))
        }
        Action::Meta { key, value } => print(&Record::Meta { key, value }),
        Action::Command { label, command } => print(&Record::Command { label, command }),
        Action::Note { text } => print(&Record::Note { text }),
        Action::Render {
            raw,
            out,
            plots,
            bounds,
        } => render(&raw, &out, &plots, &bounds),
    }
}

fn render(raw: &Path, out: &Path, plots: &Path, bounds: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(raw).map_err(|e| format!("{}: {e}", raw.display()))?;
    let run = records::parse(&text).map_err(|e| format!("{}: {e}", raw.display()))?;
    std::fs::create_dir_all(plots).map_err(|e| format!("{}: {e}", plots.display()))?;
    let (throughput, handoff) = (plots.join("throughput.svg"), plots.join("handoff.svg"));
    plots::throughput(&run, &throughput).map_err(|e| format!("{}: {e}", throughput.display()))?;
    plots::handoff(&run, &handoff).map_err(|e| format!("{}: {e}", handoff.display()))?;
    // The report links the plots relative to its own directory.
    let base = out.parent().unwrap_or(Path::new(""));
    let rel = |p: &Path| {
        let p = p.strip_prefix(base).unwrap_or(p);
        p.to_string_lossy().replace('\\', "/")
    };
    let md = report::render(
        &run,
        &report::Plots {
            throughput: rel(&throughput),
            handoff: rel(&handoff),
        },
    );
    let md = match std::fs::read_to_string(bounds) {
        Ok(analysis) => report::with_bounds(md, &analysis),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => md,
        Err(e) => return Err(format!("{}: {e}", bounds.display())),
    };
    std::fs::write(out, md).map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!(
        "bench-report: wrote {} and {} ({} results)",
        out.display(),
        plots.display(),
        run.results.len()
    );
    Ok(())
}
