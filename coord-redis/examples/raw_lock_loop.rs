//! The yardstick for `coord bench lock-loop` on Redis: the plainest correct Redis lock,
//! written directly on the redis crate. Each operation takes the lock with
//! `SET key token NX PX ttl` and releases it with a Lua compare-and-delete (delete only if
//! the value is still our token), which is two round trips, as coord's lock and unlock are.
//! It prints a line in `coord bench lock-loop`'s format, so the two compare directly:
//!
//! ```text
//! cargo run --release -p coord-redis --example raw_lock_loop -- redis://127.0.0.1:6379 1000
//! ```
//!
//! It has no fencing token, no queue, no lease shared between locks and no watch: what
//! coord's lock costs beyond it is the price of those.

use std::time::{Duration, Instant};

use redis::{AsyncCommands, Script};

const TTL_MS: u64 = 10_000;

#[tokio::main]
async fn main() -> redis::RedisResult<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let ops: u64 = match args.next().map(|n| n.parse()) {
        None => 1000,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("usage: raw_lock_loop [URL] [OPS]: bad OPS: {e}");
            std::process::exit(2);
        }
    };
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let release = Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
    );
    release.prepare_invoke().load_async(&mut conn).await?;
    let key = "raw-lock-loop";
    let mut latencies = Vec::with_capacity(ops as usize);
    let start = Instant::now();
    for i in 0..ops {
        let t = Instant::now();
        let token = format!("{}-{i}", std::process::id());
        let taken: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(TTL_MS)
            .query_async(&mut conn)
            .await?;
        assert!(taken.is_some(), "the lock {key:?} is held by someone else");
        let released: i64 = release.key(key).arg(&token).invoke_async(&mut conn).await?;
        assert_eq!(released, 1, "the lock {key:?} was lost while held");
        latencies.push(t.elapsed());
    }
    let elapsed = start.elapsed().as_nanos();
    let _: () = conn.del(key).await?;
    latencies.sort();
    let pct = |p: usize| {
        latencies
            .get(latencies.len().saturating_sub(1) * p / 100)
            .map_or(0, Duration::as_nanos)
    };
    println!(
        "cmd=raw-lock-loop ops={ops} elapsed_ns={elapsed} per_op_ns={} p50_ns={} p99_ns={}",
        elapsed.checked_div(u128::from(ops)).unwrap_or(0),
        pct(50),
        pct(99)
    );
    Ok(())
}
