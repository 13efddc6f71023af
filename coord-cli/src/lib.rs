//! The `coord` command line: argument parsing, backend connection, output and exit codes.
//! One module per command. The binary is `coord`; this library exists so that the
//! interactive election program is written once, for `coord repl` and the `election`
//! example.

mod bench;
mod demo;
mod elect;
pub mod interactive;
mod latency;
mod lock;
mod ls;
mod output;
mod release;
mod repl;
mod runner;
mod signals;
mod status;
mod url_args;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use coord::{ConnectOptions, Connection};

pub(crate) use output::Out;
pub(crate) use release::{release_within, warn_if_ttl_raised};

/// Exit codes of `coord` (besides those of a command run by `coord lock NAME -- CMD`).
pub(crate) mod code {
    /// Success.
    pub(crate) const OK: u8 = 0;
    /// Any other failure: the backend is unreachable, a bad URL, a benchmark's counter is
    /// wrong (as the Go peer exits 1).
    pub(crate) const FAILURE: u8 = 1;
    /// Bad command-line usage: clap's own code, arguments that parse but do not fit
    /// together (a `--kill-after` too long for the `--ttl`), and arguments the library
    /// refuses (`Error::InvalidArgument`: a malformed URL, an empty name).
    pub(crate) const USAGE: u8 = 2;
    /// `--try`: the lock, every permit of a semaphore, or the leadership is taken.
    pub(crate) const LOCKED: u8 = 3;
    /// `--timeout` passed before the lock (or leadership) was acquired.
    pub(crate) const TIMEOUT: u8 = 4;
    /// The lock or leadership was lost while held (session expired, key deleted).
    pub(crate) const LOST: u8 = 5;
    /// `coord leader`: the election has no leader.
    pub(crate) const NO_LEADER: u8 = 6;
    /// The command given to `coord lock` or `coord elect` could not be run.
    pub(crate) const CANNOT_EXECUTE: u8 = 126;
    /// The command given to `coord lock` or `coord elect` was not found.
    pub(crate) const NOT_FOUND: u8 = 127;
    /// `elect --listen`: stdout's reader went away (128 + SIGPIPE, as a shell reports a
    /// process SIGPIPE ended).
    pub(crate) const BROKEN_PIPE: u8 = 128 + 13;
}

/// The exit codes, as the README shows them too (a test keeps the two the same).
const EXIT_CODES: &str = include_str!("exit_codes.md");

/// The exit-code table as plain text for `--help`.
fn exit_codes_text() -> String {
    let mut text = String::from("Exit codes:");
    for row in EXIT_CODES.lines().skip(2) {
        let cells: Vec<&str> = row.trim_matches('|').split(" | ").map(str::trim).collect();
        if let [code, meaning] = cells[..] {
            text.push_str(&format!("\n  {code:<9} {}", meaning.replace('`', "")));
        }
    }
    text
}

/// The help text after the options: the exit codes, then the backend URLs of the table
/// `coord::connect` reads, those this build lacks with the feature that adds them.
fn after_help() -> String {
    let mut help = format!(
        "{}\n\nBackend URLs (every one takes the query options {}; values \
         percent-encoded):",
        exit_codes_text(),
        coord::backend_url::COMMON_QUERY_PARAMETERS.join(" and ")
    );
    for backend in coord::known_backends() {
        if backend.is_enabled() {
            for form in backend.url_forms() {
                help.push_str(&format!("\n  {form}"));
            }
            if !backend.query_parameters().is_empty() {
                help.push_str(&format!(
                    "\n      options: {}",
                    backend.query_parameters().join(", ")
                ));
            }
        } else {
            let schemes: Vec<String> = backend
                .schemes()
                .iter()
                .map(|s| format!("{s}://"))
                .collect();
            help.push_str(&format!(
                "\n  {}: not in this build (cargo feature \"{}\")",
                schemes.join(", "),
                backend.feature()
            ));
        }
    }
    help.push_str("\ne.g. memory://?namespace=myapp/&ttl=10s");
    help
}

/// Distributed locks, leader election and benchmarks on etcd, Redis or in memory.
///
/// Locks and elections use etcd's own key layout, so on etcd they exclude and see
/// `etcdctl lock`, `etcdctl elect` and Go's `concurrency` package on the same name.
#[derive(Debug, Parser)]
#[command(name = "coord", version, after_help = after_help())]
pub(crate) struct Cli {
    /// Backend URL: a server's (listed at the end of --help), or memory://. lock, elect
    /// and leader need one; repl, bench and demo default to memory://. Requests to a
    /// server time out after 5s unless the URL sets `request_timeout` (bench keeps the
    /// backend's own); a release that times out is left to the lease, which ends by itself
    /// within the TTL.
    #[arg(
        long,
        global = true,
        env = "COORD_BACKEND",
        hide_env_values = true,
        value_name = "URL"
    )]
    backend: Option<String>,

    /// Session TTL: seconds (10) or a duration (10s, 500ms); the lock or leadership ends
    /// this long after coord dies. Default: the URL's `ttl`, else 10 s (as etcdctl lock).
    /// A backend may grant more (etcd: whole seconds, at least 2); coord then warns.
    #[arg(long, global = true, value_name = "SECONDS", value_parser = parse_ttl)]
    ttl: Option<Duration>,

    /// Key prefix for every key (usually ends with `/`); overrides the URL's `namespace`.
    #[arg(
        long,
        global = true,
        env = "COORD_NAMESPACE",
        hide_env_values = true,
        value_name = "NS"
    )]
    namespace: Option<String>,

    /// Output format: text, or json (one JSON object per line; errors then go to stderr
    /// as one JSON object, {"error", "kind", "exit_code"}). In text output, keys and values
    /// from the store that hold control characters or bytes that are not UTF-8 are printed
    /// escaped (\n, \xff); in JSON they are strings, plus a FIELD_hex field with the exact
    /// bytes when they are not UTF-8.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Format::Text)]
    output: Format,

    /// User name for an etcd or Redis server that requires one (instead of USER@ in the
    /// URL); with --password-file.
    #[arg(long, global = true, value_name = "NAME")]
    user: Option<String>,

    /// Read the password from this file's first line instead of the URL, where `ps` shows
    /// it to every user of the machine. With --user, or the URL's USER@.
    #[arg(
        long,
        global = true,
        env = "COORD_PASSWORD_FILE",
        hide_env_values = true,
        value_name = "PATH"
    )]
    password_file: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Plain lines, as etcdctl prints them.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Take a lock and hold it until SIGINT/SIGTERM, or while running a command.
    ///
    /// Without CMD: prints the lock key, then the fencing token, and holds the lock until
    /// SIGINT or SIGTERM, then releases it and exits 0 (exit 5 if the lock is lost first).
    /// With CMD: runs it with COORD_LOCK_KEY, COORD_FENCING_TOKEN, COORD_LOCK_NAME,
    /// COORD_LEASE_ID, ETCD_LOCK_KEY and ETCD_LOCK_REV (as etcdctl lock: the lock key with
    /// the namespace, and its create revision, which is the fencing token) set, releases
    /// the lock when it exits and exits with its code. Signals received meanwhile are passed on to CMD. If the lock is lost
    /// while CMD runs, CMD gets SIGTERM (then SIGKILL after --kill-after) and coord exits 5.
    /// coord gives the lock up --kill-after earlier than it otherwise would, so that CMD is
    /// dead before the lease can expire and another process acquire.
    /// With --permits N: one of N permits of the semaphore NAME, held the same way (CMD
    /// also gets COORD_PERMITS); --try exits 3 when all N are taken.
    Lock(lock::LockArgs),
    /// Campaign in an election and lead until SIGINT/SIGTERM or while running a command;
    /// or watch it with --listen.
    ///
    /// Campaign: when elected prints the leader key and the proposal, leads until SIGINT
    /// or SIGTERM, then resigns and exits 0 (exit 5 if leadership is lost first).
    /// With CMD (NAME PROPOSAL -- CMD): runs CMD once elected, with COORD_ELECTION_NAME,
    /// COORD_LEADER_KEY, COORD_PROPOSAL, COORD_FENCING_TOKEN, COORD_LEASE_ID and
    /// ETCD_LEADER_KEY set, resigns when it exits and exits with its code, with every
    /// guarantee of `lock NAME -- CMD`: signals are passed on, CMD is killed if coord is,
    /// and if leadership is lost CMD gets SIGTERM (SIGKILL after --kill-after) and coord
    /// exits 5. --try: lead only if there is no leader now, else exit 3 leaving no key.
    /// --listen: prints the leader (key, then proposal) every time it changes, and
    /// "no leader" when there is none, until SIGINT/SIGTERM.
    Elect(elect::ElectArgs),
    /// Print the current leader's proposal (exit 6 when there is none).
    Leader(elect::LeaderArgs),
    /// Interactive election: several nodes, commands read from stdin.
    ///
    /// Each line is `<node> <command> [argument]`: elect [value], proclaim <value>,
    /// resign, watch, query, rev, crash; or help, quit. A node gets its own connection
    /// and session the first time it is named. `crash` expires the node's lease at once
    /// on memory://, and elsewhere stops its keep-alive so the lease expires after the TTL.
    Repl(repl::ReplArgs),
    /// Benchmarks: the workloads of the etcd Go peer, same names and output fields.
    ///
    /// SIGINT (Ctrl-C) or SIGTERM stops the workers after the operation each has under
    /// way, prints the partial result (JSON: with "interrupted": true; text: followed by an
    /// "interrupted" line) and exits 130 (143); a second signal exits at once, printing
    /// nothing more.
    Bench(bench::BenchArgs),
    /// A guided tour, explained step by step: leases, election, failover, locks, fencing.
    ///
    /// It runs three nodes in this one process on an in-memory store, so it refuses a
    /// --backend (or COORD_BACKEND) other than memory://; its last lines say what to try
    /// on a real server.
    Demo(demo::DemoArgs),
    /// Show who holds a lock, read/write lock, semaphore or election, and who waits.
    ///
    /// Prints the holder(s) (an election's leader) with key, fencing token, lease, lease
    /// time left and the revision it holds since, then the waiters in the order they will
    /// be served. Exit 0, also when nothing holds it ("free", "no leader"). --watch
    /// prints it again on every change, with how long each has held since the watch saw
    /// it (no backend records when a key was created), until SIGINT/SIGTERM.
    Status(status::StatusArgs),
    /// List the names under PREFIX that have holders or waiters, with their kind and counts.
    ///
    /// Keys on a lease are grouped by the part before their last /<hex id> (a read/write
    /// lock's /read or /write dropped). A semaphore shows as a lock (its permits are not
    /// stored); `coord status NAME --permits N` shows it as one.
    Ls(ls::LsArgs),
}

/// What every command gets: how to connect, and how to print.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub(crate) options: ConnectOptions,
    pub(crate) out: Out,
}

impl Ctx {
    /// The session TTL every command asks for (`run` always sets one).
    pub(crate) fn ttl(&self) -> Duration {
        self.options.session_ttl().unwrap_or(DEFAULT_TTL)
    }

    /// A new connection (a new client of the backend) with the global options applied.
    pub(crate) async fn connect(&self) -> Result<Connection, CliError> {
        Ok(self.options.clone().connect().await?)
    }
}

/// A lock or election name, or a proposal, with no control character: a newline would
/// break the two-line key/value output, and NUL or escape codes make keys that look alike
/// on a terminal.
pub(crate) fn parse_name(s: &str) -> Result<String, String> {
    if let Some((i, c)) = s.chars().enumerate().find(|(_, c)| c.is_control()) {
        let what = match c {
            '\0' => "NUL".to_owned(),
            '\n' => "a newline".to_owned(),
            '\r' => "a carriage return".to_owned(),
            '\t' => "a tab".to_owned(),
            '\u{1b}' => "an escape (ESC)".to_owned(),
            c => format!("U+{:04X}", u32::from(c)),
        };
        return Err(format!(
            "it has {what} at character {}: control characters (NUL, newline, tab, ...) are \
             not allowed",
            i + 1
        ));
    }
    Ok(s.to_owned())
}

/// Closes the session of a lost lock or leadership. The revoke only lets the next holder in
/// sooner: a lease lost to its deadline ends by itself within the drift margin (a tenth of
/// the TTL by default; less is left of a wider margin once CMD has been terminated), so the
/// revoke is not waited for longer. Without a request timeout a revoke sent into a partition
/// would otherwise never return, and coord would hang instead of exiting 5.
pub(crate) async fn close_lost(session: &coord::Session) {
    let _ = tokio::time::timeout(session.ttl() / 10, session.close()).await;
}

/// A failure with its exit code, message, and kind (for `-o json`).
#[derive(Debug)]
pub(crate) struct CliError {
    pub(crate) code: u8,
    pub(crate) message: String,
    /// `usage`, `timeout`, `unavailable`, ...: the backend error's kind when there is one,
    /// else what the exit code means.
    pub(crate) kind: &'static str,
}

impl CliError {
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Self {
        let kind = match code {
            code::USAGE => "usage",
            code::LOCKED => "locked",
            code::TIMEOUT => "timeout",
            code::LOST => "lost",
            code::NO_LEADER => "no_leader",
            code::CANNOT_EXECUTE => "cannot_execute",
            code::NOT_FOUND => "command_not_found",
            _ => "failure",
        };
        CliError {
            code,
            message: message.into(),
            kind,
        }
    }

    /// Prints the error on stderr: `coord: …`, or one JSON object with `-o json`.
    fn print(&self, format: Format) {
        match format {
            Format::Text => eprintln!("coord: {}", self.message),
            Format::Json => eprintln!(
                "{}",
                serde_json::json!({
                    "error": self.message,
                    "kind": self.kind,
                    "exit_code": self.code,
                })
            ),
        }
    }
}

/// The kind of a backend error, as `-o json` names it.
fn error_kind(e: &coord::Error) -> &'static str {
    match e {
        coord::Error::Unavailable { .. } => "unavailable",
        coord::Error::Timeout { .. } => "timeout",
        coord::Error::LeaseNotFound { .. } => "lease_not_found",
        coord::Error::Compacted { .. } => "compacted",
        coord::Error::InvalidArgument { .. } => "invalid_argument",
        coord::Error::Unauthenticated { .. } => "unauthenticated",
        coord::Error::PermissionDenied { .. } => "permission_denied",
        coord::Error::SessionExpired { .. } => "session_expired",
        coord::Error::LockLost { .. } => "lock_lost",
        coord::Error::NotLeader { .. } => "not_leader",
        coord::Error::NoLeader { .. } => "no_leader",
        coord::Error::Locked { .. } => "locked",
        coord::Error::Contract { .. } => "contract",
        _ => "backend",
    }
}

impl From<coord::Error> for CliError {
    fn from(e: coord::Error) -> Self {
        let kind = error_kind(&e);
        CliError {
            kind,
            ..CliError::from_backend(e)
        }
    }
}

impl CliError {
    fn from_backend(e: coord::Error) -> Self {
        if let coord::Error::Locked { name, holder } = &e {
            let holder = holder
                .as_deref()
                .map(|h| format!(" (holder key {h})"))
                .unwrap_or_default();
            return CliError::new(
                code::LOCKED,
                format!("lock {name:?} is held by another session{holder}"),
            );
        }
        let code = match &e {
            coord::Error::Locked { .. } => code::LOCKED,
            coord::Error::Timeout { .. } => code::TIMEOUT,
            coord::Error::LockLost { .. } | coord::Error::SessionExpired { .. } => code::LOST,
            coord::Error::NoLeader { .. } => code::NO_LEADER,
            coord::Error::InvalidArgument { .. } => code::USAGE,
            _ => code::FAILURE,
        };
        CliError::new(code, e.to_string())
    }
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("the TTL must be positive".into());
    }
    Ok(d)
}

/// Parses durations like `10s`, `500ms`, `1m30s` (humantime), or plain seconds.
pub(crate) use coord::parse_duration;

/// The default TTL of the command line, as etcdctl lock's.
const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// Runs the command line with the process's arguments.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    let format = cli.output;
    let mut builder = match &cli.command {
        Command::Bench(args) if args.runtime() == bench::Runtime::CurrentThread => {
            tokio::runtime::Builder::new_current_thread()
        }
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("coord: cannot start the async runtime: {e}");
            return ExitCode::from(code::FAILURE);
        }
    };
    let result = runtime.block_on(run(cli));
    // Background releases (revocations on drop) get a moment, not forever.
    runtime.shutdown_timeout(Duration::from_millis(500));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            e.print(format);
            ExitCode::from(e.code)
        }
    }
}

/// Prints what clap found wrong with the arguments (or the help it was asked for), as one
/// JSON object when `-o json` can still be made out of them.
fn usage_error(e: &clap::Error) -> ExitCode {
    let code = u8::try_from(e.exit_code()).unwrap_or(code::USAGE);
    if !e.use_stderr() {
        let _ = e.print(); // --help, --version
        return ExitCode::from(code);
    }
    // The arguments did not parse, but the output format may still be read from them.
    let format = Cli::command()
        .ignore_errors(true)
        .try_get_matches()
        .ok()
        .and_then(|m| m.get_one::<Format>("output").copied())
        .unwrap_or(Format::Text);
    if format == Format::Json {
        let text = e.render().to_string();
        let message = text.trim().trim_start_matches("error: ");
        CliError::new(code, message).print(format);
    } else {
        let _ = e.print();
    }
    ExitCode::from(code)
}

async fn run(cli: Cli) -> Result<u8, CliError> {
    let out = Out::new(cli.output);
    if let Command::Demo(args) = &cli.command {
        demo::check_backend(cli.backend.as_deref())?;
        return demo::run(args, out).await;
    }
    if matches!(cli.command, Command::Repl(_)) && out.is_json() {
        return Err(CliError::new(
            code::USAGE,
            "repl has no JSON output (--output json): its lines are for a person at a \
             terminal; for JSON lines use lock, elect or leader with -o json",
        ));
    }
    let backend = backend_for(&cli.command, cli.backend.as_deref(), out)?;
    let credentials = url_args::Credentials {
        user: cli.user.as_deref(),
        password_file: cli.password_file.as_deref(),
    };
    // Benchmarks keep the backend's own request timeout: theirs is a measurement.
    let default_timeout = !matches!(cli.command, Command::Bench(_));
    let prepared = url_args::prepare(backend, &credentials, default_timeout)?;
    release::set_bound(prepared.request_timeout);
    let mut options = prepared.options;
    if let Some(ns) = &cli.namespace {
        options = options.namespace(ns.clone());
    }
    let ttl = cli.ttl.or(options.session_ttl()).unwrap_or(DEFAULT_TTL);
    options = options.ttl(ttl);
    let ctx = Ctx { options, out };
    match cli.command {
        Command::Lock(args) => lock::run(&ctx, args).await,
        Command::Elect(args) => elect::run(&ctx, args).await,
        Command::Leader(args) => elect::leader(&ctx, args).await,
        Command::Repl(args) => repl::run(&ctx, args).await,
        Command::Bench(args) => bench::run(&ctx, args).await,
        Command::Status(args) => status::run(&ctx, args).await,
        Command::Ls(args) => ls::run(&ctx, args).await,
        Command::Demo(_) => unreachable!("handled above"),
    }
}

/// The backend URL for `command`. Commands that coordinate processes (lock, elect, leader)
/// never fall back on memory:// silently: its store lives inside this one process, so two
/// `coord lock` invocations would both "hold" the lock. Given explicitly, memory:// works
/// there (to try the CLI out), with a warning.
fn backend_for<'a>(
    command: &Command,
    given: Option<&'a str>,
    out: Out,
) -> Result<&'a str, CliError> {
    let across_processes = match command {
        Command::Lock(_) => Some("lock"),
        Command::Elect(_) => Some("elect"),
        Command::Leader(_) => Some("leader"),
        Command::Status(_) => Some("status"),
        Command::Ls(_) => Some("ls"),
        Command::Repl(_) | Command::Bench(_) | Command::Demo(_) => None,
    };
    match (given, across_processes) {
        (Some(url), Some(what)) => {
            // The URL itself is not echoed: it may carry a password.
            if url.trim().to_ascii_lowercase().starts_with("memory:") {
                output::warn(
                    out,
                    format!(
                        "memory:// is in-process: this {what} coordinates nothing outside this \
                         coord process; use a server (e.g. etcd://127.0.0.1:2379) to \
                         coordinate processes"
                    ),
                );
            }
            Ok(url)
        }
        (Some(url), None) => Ok(url),
        (None, None) => Ok("memory://"),
        (None, Some(what)) => Err(CliError::new(
            code::USAGE,
            format!(
                "{what} needs a backend: give --backend URL or set COORD_BACKEND, e.g. \
                 --backend etcd://127.0.0.1:2379 (memory:// keeps its store inside one \
                 process, so a {what} there coordinates nothing across processes)"
            ),
        )),
    }
}

/// Arguments shared by commands that wait: `--timeout`.
#[derive(Debug, Clone, Args)]
pub(crate) struct WaitArgs {
    /// Give up (exit 4) if not acquired within this time: 10s, 500ms, 1m30s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) timeout: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_lists_every_exit_code_as_the_readme_does() {
        let help = exit_codes_text();
        for code in [
            "0 ", "1 ", "2 ", "3 ", "4 ", "5 ", "6 ", "126, 127", "128+N",
        ] {
            assert!(
                help.contains(&format!("  {code}")),
                "{code:?} missing:\n{help}"
            );
        }
        assert!(!help.contains('`'), "markdown left in the help:\n{help}");
        let readme = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
        let Ok(readme) = std::fs::read_to_string(readme) else {
            return; // a packaged crate has no workspace README
        };
        assert!(
            readme.contains(EXIT_CODES),
            "README.md's exit-code table differs from coord-cli/src/exit_codes.md"
        );
    }

    #[test]
    fn ttl_forms() {
        assert_eq!(parse_ttl("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_ttl("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("x").is_err());
    }
}
