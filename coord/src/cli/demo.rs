//! `coord demo`: several nodes in one process on the memory backend, printed as it happens.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use coord::memory::MemoryBackend;
use coord::{BackendExt, Election, Error, Mutex, MutexGuard, Session, TxnOp, TxnRequest};
use futures::StreamExt;

use super::{CliError, Out, code};

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Pause between steps, so the output can be followed (0s for none).
    #[arg(long, value_name = "DURATION", default_value = "300ms", value_parser = super::parse_duration)]
    pub(crate) pace: Duration,
}

const TTL: Duration = Duration::from_secs(2);
const ELECTION: &str = "demo/leader";
const LOCK: &str = "demo/lock";
const RESOURCE: &str = "demo/resource";

/// A node: one client of the shared store and one session on it.
struct Node {
    name: &'static str,
    client: MemoryBackend,
    session: Session,
}

impl Node {
    async fn start(store: &MemoryBackend, name: &'static str) -> Result<Node, Error> {
        let client = store.new_client();
        let session = Session::builder(Arc::new(client.clone()))
            .ttl(TTL)
            .start()
            .await?;
        Ok(Node {
            name,
            client,
            session,
        })
    }

    /// The process dies: its lease expires now (the memory backend's fault hook), so every
    /// key it held is deleted, as the server would do a TTL after a real crash.
    fn die(&self) -> Result<(), Error> {
        self.client.expire_lease_now(self.session.lease())
    }
}

fn step(title: &str) {
    println!("\n== {title}");
}

/// Writes `value` to the shared resource only if `guard` still holds the lock: the
/// `is_owner()` compare and the put go in one txn.
async fn fenced_write(node: &Node, guard: &MutexGuard, value: &str) -> Result<bool, Error> {
    let resp = node
        .session
        .backend()
        .txn(
            TxnRequest::new()
                .when([guard.is_owner()])
                .and_then([TxnOp::put(RESOURCE, value)]),
        )
        .await?;
    Ok(resp.succeeded)
}

pub(crate) async fn run(args: &DemoArgs, _out: Out) -> Result<u8, CliError> {
    demo(args.pace).await?;
    Ok(code::OK)
}

async fn demo(pace: Duration) -> Result<(), Error> {
    let pause = || tokio::time::sleep(pace);
    let store = MemoryBackend::new();
    println!(
        "coord demo: nodes a, b and c, each with its own client and session (TTL {TTL:?}), on one in-memory store"
    );

    step(&format!("1. Leader election {ELECTION:?}"));
    let mut observer = coord::observe(Arc::new(store.new_client()), ELECTION.to_owned());
    tokio::spawn(async move {
        while let Some(update) = observer.next().await {
            match update {
                Ok(u) => match u.leader {
                    Some(kv) => println!(
                        "   [observer] leader is {:?} (key {}, rev {})",
                        kv.value_str(),
                        kv.key_str(),
                        kv.create_revision
                    ),
                    None => println!("   [observer] no leader"),
                },
                Err(e) => println!("   [observer] stopped: {e}"),
            }
        }
    });
    pause().await;
    let a = Node::start(&store, "a").await?;
    let b = Node::start(&store, "b").await?;
    let c = Node::start(&store, "c").await?;
    println!("   [a] campaigns");
    let a_leads = Election::new(&a.session, ELECTION).campaign("a").await?;
    println!(
        "   [a] elected: key {}, rev {}",
        a_leads.key(),
        a_leads.rev()
    );
    let lost = a_leads.lost();
    tokio::spawn(async move {
        lost.await;
        println!("   [a] is told: leadership lost");
    });
    pause().await;
    let mut campaigns = Vec::new();
    for node in [&b, &c] {
        println!("   [{}] campaigns (and waits)", node.name);
        let election = Election::new(&node.session, ELECTION);
        let name = node.name;
        campaigns.push(tokio::spawn(async move {
            let leadership = election.campaign(name).await?;
            println!(
                "   [{name}] elected: key {}, rev {}",
                leadership.key(),
                leadership.rev()
            );
            Ok::<_, Error>(leadership)
        }));
        pause().await;
    }

    step("2. Leader a dies: its lease expires (memory fault hook), as if the process were killed");
    a.die()?;
    let b_leads = campaigns.remove(0).await.expect("campaign task")?;
    pause().await;

    step("3. Leader b resigns; c takes over");
    b_leads.resign().await?;
    println!("   [b] resigned");
    let c_leads = campaigns.remove(0).await.expect("campaign task")?;
    pause().await;
    c_leads.resign().await?;
    println!("   [c] resigned");
    drop(a_leads);
    pause().await;

    step(&format!(
        "4. Lock {LOCK:?} passes between nodes; fencing tokens rise"
    ));
    let a = Node::start(&store, "a").await?; // a restarts with a new session
    println!(
        "   [a] restarted with a new session (lease {:x})",
        a.session.lease()
    );
    let mut last = 0;
    for node in [&b, &c, &a] {
        let guard = Mutex::new(&node.session, LOCK).lock().await?;
        let token = guard.fencing_token();
        let written = fenced_write(node, &guard, node.name).await?;
        let rising = if last == 0 {
            String::new()
        } else {
            format!(" (> {last})")
        };
        println!(
            "   [{}] locked: key {}, fencing token {token}{rising}; fenced write {}",
            node.name,
            guard.key(),
            if written { "accepted" } else { "REFUSED" }
        );
        last = token;
        guard.unlock().await?;
        println!("   [{}] unlocked", node.name);
        pause().await;
    }

    step("5. A stale holder: c holds the lock, stalls (think GC pause), its lease expires");
    let c_guard = Mutex::new(&c.session, LOCK).lock().await?;
    println!("   [c] locked: fencing token {}", c_guard.fencing_token());
    c.die()?;
    println!("   [c] ...stalled; meanwhile its lease expired and its lock key was deleted");
    let b_guard = Mutex::new(&b.session, LOCK).lock().await?;
    println!(
        "   [b] locked: fencing token {} (> c's {})",
        b_guard.fencing_token(),
        c_guard.fencing_token()
    );
    let stale = fenced_write(&c, &c_guard, "c (stale)").await?;
    println!(
        "   [c] wakes up and writes, guarded by is_owner(): {}",
        if stale {
            "ACCEPTED (bug!)"
        } else {
            "refused, the compare failed"
        }
    );
    let fresh = fenced_write(&b, &b_guard, "b").await?;
    println!(
        "   [b] writes, guarded by is_owner(): {}",
        if fresh { "accepted" } else { "REFUSED (bug!)" }
    );
    let value = store
        .get(RESOURCE.as_bytes())
        .await?
        .map(|kv| kv.value_str().into_owned())
        .unwrap_or_default();
    println!("   {RESOURCE} = {value:?}");
    println!(
        "   (a resource that remembers the highest token it has seen, {}, would refuse c's token {} too)",
        b_guard.fencing_token(),
        c_guard.fencing_token()
    );
    drop(c_guard);
    b_guard.unlock().await?;
    pause().await;

    step("done");
    for node in [&a, &b] {
        node.session.close().await?;
    }
    if stale || !fresh {
        return Err(Error::invalid_argument(
            "the demo's fencing check did not behave as expected",
        ));
    }
    Ok(())
}
