//! Leader election, interactively: several nodes in one process on the in-memory backend.
//!
//! Each line read from standard input is `<node> <command> [argument]`; a node is created
//! (with its own session) the first time it is named.
//!
//! ```text
//! 1 elect [value]     campaign (in the background) with value, default "node-1"
//! 1 proclaim value    change the leader's value (only the leader can)
//! 1 resign            give up leadership (or withdraw the candidacy)
//! 1 watch             print every leader change this node observes
//! 1 query             print the current leader
//! 1 rev               print this node's leader revision (its fencing token)
//! 1 crash             the node dies: on memory:// its lease expires now; on a server its
//!                     keep-alive stops, so the lease expires within the TTL (5 s)
//! help | quit
//! ```
//!
//! Try: `printf '1 watch\n1 elect\n2 elect\n1 resign\n2 query\n' | cargo run -p coord-cli --example election`
//!
//! On a server: `cargo run -p coord-cli --features etcd --example election -- --backend
//! etcd://127.0.0.1:2379` (or set `COORD_BACKEND`). `coord repl NAME` is the same program
//! in the command-line tool.

use std::time::Duration;

use coord::Session;

// The program itself is shared with `coord repl`.
use coord_cli::interactive;

const ELECTION: &str = "example-election";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let backend = coord::connect(&backend_url()).await?;
    interactive::run(ELECTION, || async {
        // A short TTL, so that `crash` on a server shows a failover within seconds.
        let session = Session::builder(backend.backend().clone())
            .ttl(Duration::from_secs(5))
            .start()
            .await?;
        Ok((backend.clone(), session))
    })
    .await
}

/// `--backend URL` (or `COORD_BACKEND`), default `memory://`.
fn backend_url() -> String {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--backend" {
            return args.next().expect("--backend needs a URL");
        }
    }
    std::env::var("COORD_BACKEND").unwrap_or_else(|_| "memory://".to_owned())
}
