//! A resource that fences for itself: it remembers the highest fencing token it has been
//! written with and refuses lower ones. This is what to do when the protected thing is not
//! in the coordination store (a database row, a file server, an API): pass the guard's
//! `fencing_token()` with every write and let the resource compare.
//!
//! ```text
//! cargo run -p coord --example fenced_resource
//! cargo run -p coord --features etcd --example fenced_resource -- --backend etcd://127.0.0.1:2379
//! ```

use std::sync::Mutex as StdMutex;

use coord::{Mutex, Revision};

mod common;
use common::backend_url;

const LOCK: &str = "examples/fenced-resource/lock";

/// The protected resource: in real life a database row with a `token` column
/// (`UPDATE … WHERE token <= $token`), here a value and the highest token seen.
#[derive(Default)]
struct Resource {
    state: StdMutex<(Revision, String)>,
}

impl Resource {
    /// Writes `value` unless a write with a higher token came first; returns whether it did.
    fn write(&self, token: Revision, value: &str) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if token < state.0 {
            return false;
        }
        *state = (token, value.to_owned());
        true
    }
}

#[tokio::main]
async fn main() -> coord::Result<()> {
    let conn = coord::connect(&backend_url()).await?;
    let (a, b) = (conn.session().await?, conn.session().await?);
    let resource = Resource::default();

    let a_guard = Mutex::new(&a, LOCK).lock().await?;
    let a_token = a_guard.fencing_token();
    println!(
        "a holds the lock (token {a_token}); writes: accepted = {}",
        resource.write(a_token, "from a")
    );

    // a stalls (a GC pause, a stopped VM); its lease ends meanwhile (here: revoked, as if
    // it had expired), and b takes the lock with a higher token.
    conn.backend().lease_revoke(a.lease()).await?;
    let b_guard = Mutex::new(&b, LOCK).lock().await?;
    let b_token = b_guard.fencing_token();
    println!(
        "b holds the lock (token {b_token}); writes: accepted = {}",
        resource.write(b_token, "from b")
    );

    // a wakes up, still believing it holds the lock, and writes with its old token.
    let stale = resource.write(a_token, "stale write from a");
    println!("a wakes up and writes with token {a_token}: accepted = {stale}");
    assert!(
        !stale,
        "the resource must refuse a token lower than one it has seen"
    );
    assert_eq!(resource.state.lock().unwrap().1, "from b");

    drop(a_guard);
    b_guard.unlock().await?;
    b.close().await?;
    Ok(())
}
