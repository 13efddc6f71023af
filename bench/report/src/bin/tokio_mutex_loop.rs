//! `tokio-mutex-loop RUNTIME OPS`: the yardstick of `coord bench lock-loop` on `memory://`:
//! one task taking and releasing an uncontended `tokio::sync::Mutex` OPS times, on a
//! `current-thread` or `multi-thread` runtime. Prints a line in lock-loop's format.
//!
//! An operation takes tens of nanoseconds, about what reading the clock costs, so the
//! latencies are timed per batch of 1,000 operations (p50/p99 are of the batch means).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BATCH: u64 = 1000;

/// OPS lock+unlock in batches; the total time and each batch's mean.
async fn lock_loop(ops: u64) -> (Duration, Vec<Duration>) {
    let mutex = Arc::new(tokio::sync::Mutex::new(0u64));
    let mut batches = Vec::with_capacity((ops / BATCH + 1) as usize);
    let start = Instant::now();
    let mut done = 0;
    while done < ops {
        let n = BATCH.min(ops - done);
        let t = Instant::now();
        for _ in 0..n {
            // The write keeps the compiler from dropping the lock as dead code.
            *mutex.lock().await += 1;
        }
        batches.push(t.elapsed() / n as u32);
        done += n;
    }
    let elapsed = start.elapsed();
    assert_eq!(*mutex.lock().await, ops);
    (elapsed, batches)
}

fn pct(sorted: &[Duration], p: usize) -> u128 {
    sorted
        .get(sorted.len().saturating_sub(1) * p / 100)
        .map_or(0, Duration::as_nanos)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (flavour, ops) = match &args[..] {
        [flavour, ops] => match ops.parse::<u64>() {
            Ok(ops) if ops > 0 => (flavour.as_str(), ops),
            _ => {
                eprintln!("tokio-mutex-loop: OPS must be a positive integer, not {ops:?}");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("usage: tokio-mutex-loop current-thread|multi-thread OPS");
            return ExitCode::from(2);
        }
    };
    let runtime = match flavour {
        "current-thread" => tokio::runtime::Builder::new_current_thread().build(),
        "multi-thread" => tokio::runtime::Builder::new_multi_thread().build(),
        other => {
            eprintln!(
                "tokio-mutex-loop: RUNTIME must be current-thread or multi-thread, not {other:?}"
            );
            return ExitCode::from(2);
        }
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio-mutex-loop: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // One spawned task, as `coord bench` runs its workload.
    let (elapsed, mut batches) = match runtime.block_on(runtime.spawn(lock_loop(ops))) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tokio-mutex-loop: the loop failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    batches.sort();
    let el = elapsed.as_nanos();
    println!(
        "cmd=lock-loop ops={ops} elapsed_ns={el} per_op_ns={} p50_ns={} p99_ns={}",
        el / u128::from(ops),
        pct(&batches, 50),
        pct(&batches, 99)
    );
    ExitCode::SUCCESS
}
