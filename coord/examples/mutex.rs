//! A mutex: three workers, each with its own connection and session, take turns holding
//! one lock, and every new holder gets a higher fencing token. Then `try_lock` and
//! `lock_timeout` while someone else holds it.
//!
//! ```text
//! cargo run -p coord --example mutex
//! cargo run -p coord --features etcd --example mutex -- --backend etcd://127.0.0.1:2379
//! ```

use std::time::Duration;

use coord::{Error, Mutex};

mod common;
use common::backend_url;

const LOCK: &str = "examples/mutex";

#[tokio::main]
async fn main() -> coord::Result<()> {
    let url = backend_url();
    let mut workers = Vec::new();
    for id in 1..=3 {
        let url = url.clone();
        workers.push(tokio::spawn(async move {
            let conn = coord::connect(&url).await?;
            let session = conn.session().await?;
            let lock = Mutex::new(&session, LOCK);
            for _ in 0..2 {
                let guard = lock.lock().await?;
                println!(
                    "worker {id} holds {} with fencing token {}",
                    guard.key(),
                    guard.fencing_token()
                );
                tokio::time::sleep(Duration::from_millis(50)).await; // the critical section
                guard.unlock().await?;
            }
            session.close().await
        }));
    }
    for worker in workers {
        worker.await.expect("worker panicked")?;
    }

    // While one session holds the lock, another cannot take it without waiting.
    let conn = coord::connect(&url).await?;
    let (holder, other) = (conn.session().await?, conn.session().await?);
    let guard = Mutex::new(&holder, LOCK).lock().await?;
    match Mutex::new(&other, LOCK).try_lock().await {
        Err(Error::Locked { holder, .. }) => {
            println!("try_lock: held by {}", holder.unwrap_or_default())
        }
        other => println!("try_lock: unexpected {other:?}"),
    }
    match Mutex::new(&other, LOCK)
        .lock_timeout(Duration::from_millis(200))
        .await
    {
        Err(e @ Error::Timeout { .. }) => println!("lock_timeout: {e}"),
        other => println!("lock_timeout: unexpected {other:?}"),
    }
    guard.unlock().await?;
    holder.close().await?;
    other.close().await
}
