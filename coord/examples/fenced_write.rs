//! A fenced write: the write and the `is_owner()` compare go in one transaction, so a
//! holder that lost its lock without knowing it (a long GC pause, a partition) cannot
//! overwrite the work of the next holder.
//!
//! ```text
//! cargo run -p coord --example fenced_write
//! cargo run -p coord --features etcd --example fenced_write -- --backend etcd://127.0.0.1:2379
//! ```

use coord::{BackendExt, Mutex, MutexGuard, Session, TxnOp, TxnRequest};

mod common;
use common::backend_url;

const LOCK: &str = "examples/fenced/lock";
const CONFIG: &str = "examples/fenced/config";

/// Writes `value` only if `guard` still holds the lock; returns whether it did.
async fn fenced_write(session: &Session, guard: &MutexGuard, value: &str) -> coord::Result<bool> {
    let txn = TxnRequest::new()
        .when([guard.is_owner()])
        .and_then([TxnOp::put(CONFIG, value)]);
    Ok(session.backend().txn(txn).await?.succeeded)
}

#[tokio::main]
async fn main() -> coord::Result<()> {
    let conn = coord::connect(&backend_url()).await?;
    let (a, b) = (conn.session().await?, conn.session().await?);

    let a_guard = Mutex::new(&a, LOCK).lock().await?;
    println!("a holds the lock (token {})", a_guard.fencing_token());
    println!(
        "a writes: accepted = {}",
        fenced_write(&a, &a_guard, "from a").await?
    );

    // a stalls; meanwhile its lease ends (here: revoked, as if it had expired) and with
    // it a's lock key. a does not know yet.
    conn.backend().lease_revoke(a.lease()).await?;

    let b_guard = Mutex::new(&b, LOCK).lock().await?;
    println!("b holds the lock (token {})", b_guard.fencing_token());
    println!(
        "b writes: accepted = {}",
        fenced_write(&b, &b_guard, "from b").await?
    );

    let stale = fenced_write(&a, &a_guard, "stale write from a").await?;
    println!("a wakes up and writes: accepted = {stale}");
    assert!(!stale, "the is_owner() compare must refuse a stale holder");

    let config = conn
        .backend()
        .get(CONFIG.as_bytes())
        .await?
        .expect("written");
    println!("{CONFIG} = {:?}", config.value_str());
    drop(a_guard);
    b_guard.unlock().await?;
    b.close().await
}
