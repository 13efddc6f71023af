//! `coord bench lock-loop|contend|hammer`: the workloads of our Go yardstick
//! (`bench/etcd-go`, a program driving etcd's `clientv3/concurrency` recipes) with the same
//! names, definitions and output fields, so that a line of ours and a line of Go's compare
//! directly. `scripts/bench.sh` runs both sides and writes `BENCHMARKS.md`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use coord::{BackendExt, CoordinationBackend, Mutex, NO_LEASE};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::latency::Latencies;
use super::signals::{Signals, interrupted};
use super::{CliError, Ctx, code, parse_duration};

#[derive(Debug, Clone, Args)]
pub(crate) struct BenchArgs {
    /// The workload.
    #[arg(value_enum)]
    pub(crate) workload: Workload,

    /// Lock name (the key prefix), as the Go peer's -name.
    #[arg(long, default_value = "peer-lock")]
    pub(crate) name: String,

    /// Counter key for contend and hammer, as the Go peer's -key.
    #[arg(long, default_value = "peer-counter")]
    pub(crate) key: String,

    /// Concurrent workers for contend, each with its own session.
    #[arg(long, default_value_t = 4)]
    pub(crate) workers: u64,

    /// contend: the connections the workers share, worker i using connection i mod
    /// CLIENTS, as the Go peer's -clients (by default one per worker). Many waiters in few
    /// processes share their connections: coord then multiplexes their watches over one
    /// stream per connection.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) clients: Option<u64>,

    /// Operations (per worker for contend), as the Go peer's -n.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub(crate) ops: u64,

    /// lock-loop and contend: run this long (10s, 500ms) instead of OPS operations, as the
    /// Go peer's -duration. The operation under way when it ends is completed.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) duration: Option<Duration>,

    /// The tokio runtime the benchmark runs on: one thread, or one worker per core. By
    /// default lock-loop and hammer, one task each, run on one thread (a lone task gains
    /// nothing from other threads and pays for waking across them), contend and sessions
    /// on one worker per core.
    #[arg(long, value_enum)]
    pub(crate) runtime: Option<Runtime>,
}

/// `--runtime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Runtime {
    /// tokio's current-thread runtime: every task on the main thread.
    CurrentThread,
    /// tokio's multi-thread runtime.
    MultiThread,
}

impl BenchArgs {
    /// The runtime to run on: `--runtime`, or the one that suits the workload.
    pub(crate) fn runtime(&self) -> Runtime {
        self.runtime.unwrap_or(match self.workload {
            Workload::LockLoop | Workload::Hammer => Runtime::CurrentThread,
            Workload::Contend | Workload::Sessions => Runtime::MultiThread,
        })
    }

    /// Whether operation `i` is to run: OPS operations, or until `--duration` has passed;
    /// none once the run is stopped.
    fn more(&self, i: u64, run: &Running<'_>) -> bool {
        if run.stop.is_set() {
            return false;
        }
        match self.duration {
            Some(d) => run.start.elapsed() < d,
            None => i < self.ops,
        }
    }
}

/// The workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Workload {
    /// One session; OPS times: lock, unlock. Fields: ops elapsed_ns per_op_ns p50_ns p99_ns.
    LockLoop,
    /// Writes KEY=0; WORKERS workers, each with its own session (and connection, unless
    /// --clients), each OPS times: lock, read KEY, write KEY+1, unlock. The clock starts once every worker is
    /// connected. A handoff is the time from a holder's unlock call to the lock returning in
    /// a worker that was already waiting then. Fields: workers ops elapsed_ns ops_per_s
    /// counter expected handoffs handoff_p50_ns handoff_p99_ns clients. Exits 1 if counter !=
    /// expected (mutual exclusion broken).
    Contend,
    /// One worker of contend, to run beside another implementation on the same NAME and
    /// KEY (read KEY afterwards to check that no increment was lost). Fields: ops
    /// elapsed_ns.
    Hammer,
    /// WORKERS idle sessions on one connection, kept for --duration (10 s by default),
    /// then closed: the server's keep-alive load, for sizing (coord only; the Go peer has
    /// no such workload). Says on stderr when all are open and when it starts closing
    /// them. Fields: sessions elapsed_ns ttl_ns.
    Sessions,
}

/// Set when a signal stops the run: each worker finishes the operation under way (a
/// half-done increment would make the counter disagree with the ops counted), then the
/// result so far is printed.
#[derive(Debug, Clone)]
struct Stop(watch::Receiver<bool>);

impl Stop {
    fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the run is stopped (never, if the sender is gone unstopped).
    async fn wait(&mut self) {
        if self.0.wait_for(|stopped| *stopped).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A run under way: when it started, and whether it has been stopped.
struct Running<'a> {
    start: Instant,
    stop: &'a Stop,
}

/// Prints a result line; a stopped run's says so (JSON `"interrupted": true`, and a
/// second text line), as its numbers cover only part of what was asked.
fn emit_result(ctx: &Ctx, text: String, mut json: serde_json::Value, interrupted: bool) {
    if interrupted {
        json["interrupted"] = json!(true);
        ctx.out.emit(
            format!("{text}\ninterrupted: stopped by a signal, the result above is partial"),
            json,
        );
    } else {
        ctx.out.emit(text, json);
    }
}

/// Go's `log.Fatal`: any failure exits 1.
fn fatal(e: impl std::fmt::Display) -> CliError {
    CliError::new(code::FAILURE, e.to_string())
}

pub(crate) async fn run(ctx: &Ctx, args: BenchArgs) -> Result<u8, CliError> {
    let ctx = ctx.clone();
    let mut signals = Signals::install()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop = Stop(stop_rx);
    // A spawned task, as an application's code runs: on the multi-thread runtime the future
    // given to block_on lives on the main thread, and every wake-up from a worker thread
    // would cross threads, which is not what a library user pays.
    let mut workload = tokio::spawn(async move {
        match args.workload {
            Workload::LockLoop => lock_loop(&ctx, &args, &stop).await,
            Workload::Contend => contend(&ctx, &args, &stop).await,
            Workload::Hammer => hammer(&ctx, &args, &stop).await,
            Workload::Sessions => sessions(&ctx, &args, stop).await,
        }
    });
    let signo = tokio::select! {
        done = &mut workload => return done.map_err(fatal)?,
        signo = signals.recv() => signo,
    };
    stop_tx.send_replace(true);
    tokio::select! {
        done = &mut workload => match done.map_err(fatal)?? {
            code::OK => Ok(interrupted(signo)),
            other => Ok(other),
        },
        // An operation that never ends (a server gone silent) must not trap the user.
        signo = signals.recv() => {
            eprintln!("coord bench: a second signal: stopping without waiting for the result");
            Ok(interrupted(signo))
        }
    }
}

/// The counter: a decimal string, absent = 0 (Go's `get`).
async fn get(backend: &dyn CoordinationBackend, key: &str) -> Result<i64, CliError> {
    match backend.get(key.as_bytes()).await.map_err(fatal)? {
        None => Ok(0),
        Some(kv) => kv.value_str().parse().map_err(|e| {
            fatal(format!(
                "counter {key:?} is {:?}, not a number: {e}",
                kv.value_str()
            ))
        }),
    }
}

/// A deliberately non-atomic read-modify-write (Go's `incr`): it stays correct only while
/// the caller really holds the lock.
async fn incr(backend: &dyn CoordinationBackend, key: &str) -> Result<(), CliError> {
    let v = get(backend, key).await?;
    backend
        .put(key.as_bytes(), (v + 1).to_string().as_bytes(), NO_LEASE)
        .await
        .map_err(fatal)?;
    Ok(())
}

/// Prints the running count on stderr every 5 s, so that a long run shows it is alive;
/// stdout keeps only the result line. Dropping the handle stops it.
fn progress(workload: &'static str, done: Arc<AtomicU64>, start: Instant) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::from_std(start) + PROGRESS_EVERY,
            PROGRESS_EVERY,
        );
        loop {
            tick.tick().await;
            let ops = done.load(Ordering::Relaxed);
            let secs = start.elapsed().as_secs_f64();
            eprintln!(
                "coord bench {workload}: {ops} ops in {secs:.0} s ({:.1} ops/s)",
                ops as f64 / secs
            );
        }
    }))
}

const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn lock_loop(ctx: &Ctx, args: &BenchArgs, stop: &Stop) -> Result<u8, CliError> {
    let conn = ctx.connect().await.map_err(|e| fatal(e.message))?;
    let session = conn.session().await.map_err(fatal)?;
    let m = Mutex::new(&session, args.name.clone());
    let mut lat = Latencies::new();
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let ticker = progress("lock-loop", done.clone(), start);
    let mut ops = 0;
    let run = Running { start, stop };
    while args.more(ops, &run) {
        let t = Instant::now();
        m.lock()
            .await
            .map_err(fatal)?
            .unlock()
            .await
            .map_err(fatal)?;
        lat.record(t.elapsed());
        ops += 1;
        done.store(ops, Ordering::Relaxed);
    }
    let el = start.elapsed().as_nanos();
    let interrupted = stop.is_set();
    drop(ticker);
    let per_op = el.checked_div(u128::from(ops)).unwrap_or(0);
    let (p50, p99) = (lat.percentile(50.0), lat.percentile(99.0));
    session.close().await.map_err(fatal)?;
    emit_result(
        ctx,
        format!(
            "cmd=lock-loop ops={ops} elapsed_ns={el} per_op_ns={per_op} p50_ns={p50} p99_ns={p99}"
        ),
        json!({"cmd": "lock-loop", "ops": ops, "elapsed_ns": el as u64, "per_op_ns": per_op as u64, "p50_ns": p50, "p99_ns": p99}),
        interrupted,
    );
    Ok(code::OK)
}

/// How long the lock takes to pass from one contend worker to one that was waiting.
#[derive(Debug, Default)]
struct Handoffs {
    /// The worker that called unlock last and when, until the next holder takes it.
    released: Option<(u64, Instant)>,
    sample: Latencies,
}

impl Handoffs {
    /// Worker `worker` called lock at `asked`, and it returned at `got`. Only a worker
    /// that was already waiting when the lock was released measures a handoff: otherwise
    /// the time includes the worker's own pause.
    fn acquired(&mut self, worker: u64, asked: Instant, got: Instant) {
        if let Some((releaser, at)) = self.released.take()
            && releaser != worker
            && asked < at
        {
            self.sample.record(got - at);
        }
    }

    /// Worker `worker` is about to call unlock.
    fn releasing(&mut self, worker: u64) {
        self.released = Some((worker, Instant::now()));
    }
}

/// One contend worker's loop, after its connection and session are set up.
async fn contend_worker(
    args: &BenchArgs,
    id: u64,
    m: &Mutex,
    backend: &dyn CoordinationBackend,
    run: &Running<'_>,
    done: &AtomicU64,
    handoffs: &std::sync::Mutex<Handoffs>,
) -> Result<u64, CliError> {
    let mut ops = 0;
    while args.more(ops, run) {
        let asked = Instant::now();
        let guard = m.lock().await.map_err(fatal)?;
        let got = Instant::now();
        lock_handoffs(handoffs).acquired(id, asked, got);
        incr(backend, &args.key).await?;
        lock_handoffs(handoffs).releasing(id);
        guard.unlock().await.map_err(fatal)?;
        ops += 1;
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(ops)
}

/// The handoff record; a worker that panicked holding it left nothing half-written.
fn lock_handoffs(h: &std::sync::Mutex<Handoffs>) -> std::sync::MutexGuard<'_, Handoffs> {
    h.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn contend(ctx: &Ctx, args: &BenchArgs, stop: &Stop) -> Result<u8, CliError> {
    let conn = ctx.connect().await.map_err(|e| fatal(e.message))?;
    conn.backend()
        .put(args.key.as_bytes(), b"0", NO_LEASE)
        .await
        .map_err(fatal)?;
    let args = Arc::new(args.clone());
    let done = Arc::new(AtomicU64::new(0));
    let handoffs = Arc::new(std::sync::Mutex::new(Handoffs::default()));
    let clients = match args.clients {
        None => None,
        Some(n) => {
            let mut shared = Vec::with_capacity(n as usize);
            for _ in 0..n {
                shared.push(ctx.connect().await.map_err(|e| fatal(e.message))?);
            }
            Some(Arc::new(shared))
        }
    };
    // Every worker connects and opens its session first, then all start together: at
    // 1,000 workers the setup would otherwise be most of the measured time.
    let (ready_tx, mut ready_rx) = mpsc::channel::<Result<(), CliError>>(1);
    let (start_tx, start_rx) = watch::channel(None::<Instant>);
    let mut workers = Vec::new();
    for id in 0..args.workers {
        let ctx = ctx.clone();
        let args = args.clone();
        let done = done.clone();
        let handoffs = handoffs.clone();
        let ready = ready_tx.clone();
        let mut start_rx = start_rx.clone();
        let stop = stop.clone();
        let clients = clients.clone();
        workers.push(tokio::spawn(async move {
            let setup = async {
                let c = match &clients {
                    Some(shared) => shared[(id % shared.len() as u64) as usize].clone(),
                    None => ctx.connect().await.map_err(|e| fatal(e.message))?,
                };
                let s = c.session().await.map_err(fatal)?;
                Ok::<_, CliError>((c, s))
            };
            let (c, s) = match setup.await {
                Ok(cs) => cs,
                Err(e) => {
                    let _ = ready.send(Err(e)).await;
                    return Ok(0);
                }
            };
            let _ = ready.send(Ok(())).await;
            let start = match start_rx.wait_for(Option::is_some).await {
                Ok(start) => *start,
                Err(_) => return Ok(0), // the run was abandoned
            };
            let Some(start) = start else { return Ok(0) };
            let m = Mutex::new(&s, args.name.clone());
            let backend: Arc<dyn CoordinationBackend> = c.backend().clone();
            let ops = contend_worker(
                &args,
                id,
                &m,
                backend.as_ref(),
                &Running { start, stop: &stop },
                &done,
                &handoffs,
            )
            .await?;
            s.close().await.map_err(fatal)?;
            Ok::<u64, CliError>(ops)
        }));
    }
    drop(ready_tx);
    let mut stopped = stop.clone();
    for _ in 0..args.workers {
        let ready = tokio::select! {
            ready = ready_rx.recv() => ready,
            // Dropping `start_tx` on return sends the workers home.
            () = stopped.wait() => {
                eprintln!("coord bench contend: stopped while the workers were connecting; no result");
                return Ok(code::OK);
            }
        };
        match ready {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(e),
            None => return Err(fatal("a contend worker ended before it was ready")),
        }
    }
    let start = Instant::now();
    let ticker = progress("contend", done.clone(), start);
    start_tx.send_replace(Some(start));
    let mut total = 0;
    for w in workers {
        total += w.await.map_err(fatal)??;
    }
    let el = start.elapsed();
    let interrupted = stop.is_set();
    drop(ticker);
    let got = get(conn.backend().as_ref(), &args.key).await?;
    let ops_per_s = total as f64 / el.as_secs_f64();
    let sample = std::mem::take(&mut *lock_handoffs(&handoffs)).sample;
    let (h50, h99) = (sample.percentile(50.0), sample.percentile(99.0));
    let clients = args.clients.unwrap_or(args.workers);
    emit_result(
        ctx,
        format!(
            "cmd=contend workers={} ops={total} elapsed_ns={} ops_per_s={ops_per_s:.1} counter={got} expected={total} handoffs={} handoff_p50_ns={h50} handoff_p99_ns={h99} clients={clients}",
            args.workers,
            el.as_nanos(),
            sample.len(),
        ),
        json!({
            "cmd": "contend",
            "workers": args.workers,
            "ops": total,
            "elapsed_ns": el.as_nanos() as u64,
            "ops_per_s": (ops_per_s * 10.0).round() / 10.0,
            "counter": got,
            "expected": total,
            "handoffs": sample.len(),
            "handoff_p50_ns": h50,
            "handoff_p99_ns": h99,
            "clients": clients,
        }),
        interrupted,
    );
    if got != total as i64 {
        return Err(fatal(format!(
            "counter {got} != expected {total}: mutual exclusion was broken"
        )));
    }
    Ok(code::OK)
}

async fn hammer(ctx: &Ctx, args: &BenchArgs, stop: &Stop) -> Result<u8, CliError> {
    let conn = ctx.connect().await.map_err(|e| fatal(e.message))?;
    let session = conn.session().await.map_err(fatal)?;
    let m = Mutex::new(&session, args.name.clone());
    let backend = conn.backend().as_ref();
    let start = Instant::now();
    let mut ops = 0;
    while ops < args.ops && !stop.is_set() {
        let guard = m.lock().await.map_err(fatal)?;
        incr(backend, &args.key).await?;
        guard.unlock().await.map_err(fatal)?;
        ops += 1;
    }
    let el = start.elapsed().as_nanos();
    let interrupted = stop.is_set() && ops < args.ops;
    session.close().await.map_err(fatal)?;
    // Exactly Go's fields: a line from either side must compare field for field.
    emit_result(
        ctx,
        format!("cmd=hammer ops={ops} elapsed_ns={el}"),
        json!({"cmd": "hammer", "ops": ops, "elapsed_ns": el as u64}),
        interrupted,
    );
    Ok(code::OK)
}

async fn sessions(ctx: &Ctx, args: &BenchArgs, mut stop: Stop) -> Result<u8, CliError> {
    let conn = ctx.connect().await.map_err(|e| fatal(e.message))?;
    let mut sessions = Vec::with_capacity(args.workers as usize);
    for _ in 0..args.workers {
        sessions.push(conn.session().await.map_err(fatal)?);
    }
    // A reader of stderr (scripts/bench.sh) takes the server's CPU time between these two
    // lines: the keep-alives alone, without the grants and revokes.
    eprintln!("coord bench sessions: {} sessions open", args.workers);
    let start = Instant::now();
    let interrupted = tokio::select! {
        () = tokio::time::sleep(args.duration.unwrap_or(Duration::from_secs(10))) => false,
        () = stop.wait() => true,
    };
    let el = start.elapsed().as_nanos();
    eprintln!("coord bench sessions: closing");
    for s in sessions {
        s.close().await.map_err(fatal)?;
    }
    let ttl = ctx.ttl().as_nanos();
    emit_result(
        ctx,
        format!(
            "cmd=sessions sessions={} elapsed_ns={el} ttl_ns={ttl}",
            args.workers
        ),
        json!({"cmd": "sessions", "sessions": args.workers, "elapsed_ns": el as u64, "ttl_ns": ttl as u64}),
        interrupted,
    );
    Ok(code::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn runtime_of(args: &[&str]) -> Runtime {
        Wrap::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
            .unwrap()
            .bench
            .runtime()
    }

    #[test]
    fn single_task_workloads_default_to_one_thread_and_runtime_overrides() {
        assert_eq!(runtime_of(&["lock-loop"]), Runtime::CurrentThread);
        assert_eq!(runtime_of(&["hammer"]), Runtime::CurrentThread);
        assert_eq!(runtime_of(&["contend"]), Runtime::MultiThread);
        assert_eq!(runtime_of(&["sessions"]), Runtime::MultiThread);
        assert_eq!(
            runtime_of(&["lock-loop", "--runtime", "multi-thread"]),
            Runtime::MultiThread
        );
        assert_eq!(
            runtime_of(&["contend", "--runtime", "current-thread"]),
            Runtime::CurrentThread
        );
    }
}
