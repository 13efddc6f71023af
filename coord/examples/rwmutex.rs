//! A read/write lock: two readers hold it at once, a writer waits for both, and a reader
//! that comes after the writer waits for the writer (FIFO: writers do not starve).
//!
//! ```text
//! cargo run -p coord --example rwmutex
//! cargo run -p coord --features etcd --example rwmutex -- --backend etcd://127.0.0.1:2379
//! ```

use std::time::Duration;

use coord::RwMutex;

mod common;
use common::backend_url;

const LOCK: &str = "examples/rwmutex";

#[tokio::main]
async fn main() -> coord::Result<()> {
    let conn = coord::connect(&backend_url()).await?;
    // One session per participant: a session holds one key per lock name.
    let (r1, r2, w, r3) = (
        conn.session().await?,
        conn.session().await?,
        conn.session().await?,
        conn.session().await?,
    );

    let read1 = RwMutex::new(&r1, LOCK).read().await?;
    let read2 = RwMutex::new(&r2, LOCK).read().await?;
    println!(
        "readers share the lock: {} and {}",
        read1.key(),
        read2.key()
    );

    let writer = tokio::spawn({
        let w = w.clone();
        async move {
            let guard = RwMutex::new(&w, LOCK).write().await?;
            println!(
                "writer holds {} (token {})",
                guard.key(),
                guard.fencing_token()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            println!("writer releases");
            guard.unlock().await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    println!("writer is waiting for the readers...");

    let late_reader = tokio::spawn({
        let r3 = r3.clone();
        async move {
            let guard = RwMutex::new(&r3, LOCK).read().await?;
            println!("late reader holds {} after the writer", guard.key());
            guard.unlock().await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    println!("readers release");
    read1.unlock().await?;
    read2.unlock().await?;
    writer.await.expect("writer panicked")?;
    late_reader.await.expect("reader panicked")?;
    for s in [r1, r2, w, r3] {
        s.close().await?;
    }
    Ok(())
}
