//! A semaphore of 2 permits shared by 5 workers: never more than 2 work at once.
//!
//! ```text
//! cargo run -p coord --example semaphore
//! cargo run -p coord --features etcd --example semaphore -- --backend etcd://127.0.0.1:2379
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use coord::Semaphore;

mod common;
use common::backend_url;

const NAME: &str = "examples/semaphore";
const PERMITS: usize = 2;

#[tokio::main]
async fn main() -> coord::Result<()> {
    let conn = coord::connect(&backend_url()).await?;
    let working = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for id in 1..=5 {
        // One session per permit holder: a session holds at most one permit of a name.
        let session = conn.session().await?;
        let working = working.clone();
        workers.push(tokio::spawn(async move {
            let permit = Semaphore::new(&session, NAME, PERMITS)?.acquire().await?;
            let now = working.fetch_add(1, Ordering::SeqCst) + 1;
            println!(
                "worker {id} got {} ({now} of {PERMITS} permits in use)",
                permit.key()
            );
            assert!(now <= PERMITS, "more holders than permits");
            tokio::time::sleep(Duration::from_millis(100)).await;
            working.fetch_sub(1, Ordering::SeqCst);
            permit.release().await?;
            session.close().await
        }));
    }
    for worker in workers {
        worker.await.expect("worker panicked")?;
    }
    println!("all workers done");
    Ok(())
}
