//! `coord bench lock-loop|contend|hammer`: the workloads of our Go yardstick (a program
//! driving etcd's `clientv3/concurrency` recipes) with the same names, definitions and
//! output fields, so that a line of ours and a line of Go's compare directly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use coord::{BackendExt, CoordinationBackend, Mutex, NO_LEASE};
use serde_json::json;

use super::{CliError, Ctx, code};

#[derive(Debug, Args)]
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

    /// Concurrent workers for contend, each with its own connection and session.
    #[arg(long, default_value_t = 4)]
    pub(crate) workers: u64,

    /// Operations (per worker for contend), as the Go peer's -n.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub(crate) ops: u64,
}

/// The workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Workload {
    /// One session; OPS times: lock, unlock. Fields: ops elapsed_ns per_op_ns p50_ns p99_ns.
    LockLoop,
    /// Writes KEY=0; WORKERS workers, each with its own connection and session, each OPS
    /// times: lock, read KEY, write KEY+1, unlock. Fields: workers ops elapsed_ns ops_per_s
    /// counter expected. Exits 1 if counter != expected (mutual exclusion broken).
    Contend,
    /// One worker of contend, to run beside another implementation on the same NAME and
    /// KEY (read KEY afterwards to check that no increment was lost). Fields: ops
    /// elapsed_ns.
    Hammer,
}

/// Go's `log.Fatal`: any failure exits 1.
fn fatal(e: impl std::fmt::Display) -> CliError {
    CliError::new(code::FAILURE, e.to_string())
}

pub(crate) async fn run(ctx: &Ctx, args: BenchArgs) -> Result<u8, CliError> {
    match args.workload {
        Workload::LockLoop => lock_loop(ctx, &args).await,
        Workload::Contend => contend(ctx, &args).await,
        Workload::Hammer => hammer(ctx, &args).await,
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

/// Go's `pct`: the element at index (len-1)*p/100 of the sorted latencies.
fn pct(lat: &[Duration], p: usize) -> u128 {
    if lat.is_empty() {
        return 0;
    }
    let mut s = lat.to_vec();
    s.sort();
    s[(s.len() - 1) * p / 100].as_nanos()
}

async fn lock_loop(ctx: &Ctx, args: &BenchArgs) -> Result<u8, CliError> {
    let conn = ctx.connect().await.map_err(|e| fatal(e.message))?;
    let session = conn.session().await.map_err(fatal)?;
    let m = Mutex::new(&session, args.name.clone());
    let mut lat = Vec::with_capacity(args.ops as usize);
    let start = Instant::now();
    for _ in 0..args.ops {
        let t = Instant::now();
        m.lock()
            .await
            .map_err(fatal)?
            .unlock()
            .await
            .map_err(fatal)?;
        lat.push(t.elapsed());
    }
    let el = start.elapsed().as_nanos();
    let per_op = if args.ops == 0 {
        0
    } else {
        el / u128::from(args.ops)
    };
    let (p50, p99) = (pct(&lat, 50), pct(&lat, 99));
    session.close().await.map_err(fatal)?;
    ctx.out.emit(
        format!(
            "cmd=lock-loop ops={} elapsed_ns={el} per_op_ns={per_op} p50_ns={p50} p99_ns={p99}",
            args.ops
        ),
        json!({"cmd": "lock-loop", "ops": args.ops, "elapsed_ns": el as u64, "per_op_ns": per_op as u64, "p50_ns": p50 as u64, "p99_ns": p99 as u64}),
    );
    Ok(code::OK)
}

async fn contend(ctx: &Ctx, args: &BenchArgs) -> Result<u8, CliError> {
    let conn = ctx.connect().await.map_err(|e| fatal(e.message))?;
    conn.backend()
        .put(args.key.as_bytes(), b"0", NO_LEASE)
        .await
        .map_err(fatal)?;
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.workers {
        let ctx = ctx.clone();
        let name = args.name.clone();
        let key = args.key.clone();
        let ops = args.ops;
        workers.push(tokio::spawn(async move {
            let c = ctx.connect().await.map_err(|e| fatal(e.message))?;
            let backend: Arc<dyn CoordinationBackend> = c.backend().clone();
            let s = c.session().await.map_err(fatal)?;
            let m = Mutex::new(&s, name);
            for _ in 0..ops {
                let guard = m.lock().await.map_err(fatal)?;
                incr(backend.as_ref(), &key).await?;
                guard.unlock().await.map_err(fatal)?;
            }
            s.close().await.map_err(fatal)?;
            Ok::<(), CliError>(())
        }));
    }
    for w in workers {
        w.await.map_err(fatal)??;
    }
    let el = start.elapsed();
    let got = get(conn.backend().as_ref(), &args.key).await?;
    let total = args.workers * args.ops;
    let ops_per_s = total as f64 / el.as_secs_f64();
    ctx.out.emit(
        format!(
            "cmd=contend workers={} ops={total} elapsed_ns={} ops_per_s={ops_per_s:.1} counter={got} expected={total}",
            args.workers,
            el.as_nanos()
        ),
        json!({
            "cmd": "contend",
            "workers": args.workers,
            "ops": total,
            "elapsed_ns": el.as_nanos() as u64,
            "ops_per_s": (ops_per_s * 10.0).round() / 10.0,
            "counter": got,
            "expected": total,
        }),
    );
    if got != total as i64 {
        return Err(fatal(format!(
            "counter {got} != expected {total}: mutual exclusion was broken"
        )));
    }
    Ok(code::OK)
}

async fn hammer(ctx: &Ctx, args: &BenchArgs) -> Result<u8, CliError> {
    let conn = ctx.connect().await.map_err(|e| fatal(e.message))?;
    let session = conn.session().await.map_err(fatal)?;
    let m = Mutex::new(&session, args.name.clone());
    let backend = conn.backend().as_ref();
    let start = Instant::now();
    for _ in 0..args.ops {
        let guard = m.lock().await.map_err(fatal)?;
        incr(backend, &args.key).await?;
        guard.unlock().await.map_err(fatal)?;
    }
    let el = start.elapsed().as_nanos();
    session.close().await.map_err(fatal)?;
    // Exactly Go's fields: a line from either side must compare field for field.
    ctx.out.emit(
        format!("cmd=hammer ops={} elapsed_ns={el}", args.ops),
        json!({"cmd": "hammer", "ops": args.ops, "elapsed_ns": el as u64}),
    );
    Ok(code::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pct_matches_go() {
        let lat: Vec<Duration> = (1..=10).rev().map(Duration::from_nanos).collect();
        // Go: s[(len-1)*p/100] of the sorted slice: index 4 for p50, 8 for p99.
        assert_eq!(pct(&lat, 50), 5);
        assert_eq!(pct(&lat, 99), 9);
        assert_eq!(pct(&[], 50), 0);
    }
}
