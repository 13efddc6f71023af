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
//! Try: `printf '1 watch\n1 elect\n2 elect\n1 resign\n2 query\n' | cargo run -p coord --example election`
//!
//! On a server: `cargo run -p coord --features etcd --example election -- --backend
//! etcd://127.0.0.1:2379` (or set `COORD_BACKEND`). `coord repl NAME` is the same program
//! in the command-line tool.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use coord::{Connection, Election, Error, Leadership, Session};
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Mutex as AsyncMutex;

const ELECTION: &str = "example-election";

/// One participant: a session, and its candidacy or leadership if any.
struct Node {
    session: Session,
    election: Election,
    leadership: Arc<AsyncMutex<Option<Leadership>>>,
    campaign: Option<tokio::task::JoinHandle<()>>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let backend = coord::connect(&backend_url()).await?;
    let mut nodes: HashMap<String, Node> = HashMap::new();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    println!("commands: <node> elect|proclaim|resign|watch|query|rev|crash [arg]; help; quit");
    while let Some(line) = lines.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [] => continue,
            ["quit"] | ["exit"] => break,
            ["help"] => {
                println!(
                    "<node> elect [value] | proclaim <value> | resign | watch | query | rev | crash"
                );
                continue;
            }
            [id, command, rest @ ..] => {
                if !nodes.contains_key(*id) {
                    let session = Session::builder(backend.backend().clone())
                        .ttl(Duration::from_secs(5))
                        .start()
                        .await?;
                    let election = Election::new(&session, ELECTION);
                    nodes.insert(
                        id.to_string(),
                        Node {
                            session,
                            election,
                            leadership: Arc::new(AsyncMutex::new(None)),
                            campaign: None,
                        },
                    );
                }
                let node = nodes.get_mut(*id).expect("inserted above");
                if let Err(e) = run(id, node, command, &rest.join(" "), &backend).await {
                    println!("[{id}] {command} failed: {e}");
                }
            }
            [word] => println!("unknown command {word:?}: say <node> <command>, e.g. `1 elect`"),
        }
        // Let background campaigns and observers print before the next command.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // On a server the candidates' keys would otherwise linger until their leases expire.
    for node in nodes.into_values() {
        if let Some(campaign) = node.campaign {
            campaign.abort();
        }
        if let Some(leadership) = node.leadership.lock().await.take() {
            let _ = leadership.resign().await;
        }
        let _ = node.session.close().await;
    }
    Ok(())
}

async fn run(
    id: &str,
    node: &mut Node,
    command: &str,
    arg: &str,
    backend: &Connection,
) -> Result<(), Error> {
    match command {
        "elect" => {
            let value = if arg.is_empty() {
                format!("node-{id}")
            } else {
                arg.to_owned()
            };
            let election = node.election.clone();
            let slot = node.leadership.clone();
            let id = id.to_owned();
            println!("[{id}] campaigning with {value:?}");
            node.campaign = Some(tokio::spawn(async move {
                match election.campaign(value.clone()).await {
                    Ok(leadership) => {
                        println!(
                            "[{id}] elected: key {} rev {}",
                            leadership.key(),
                            leadership.rev()
                        );
                        *slot.lock().await = Some(leadership);
                    }
                    Err(e) => println!("[{id}] campaign ended: {e}"),
                }
            }));
        }
        "proclaim" => match node.leadership.lock().await.as_ref() {
            Some(l) => {
                l.proclaim(arg.as_bytes().to_vec()).await?;
                println!("[{id}] proclaimed {arg:?}");
            }
            None => println!("[{id}] not the leader"),
        },
        "resign" => {
            if let Some(campaign) = node.campaign.take() {
                campaign.abort(); // a pending campaign's candidacy is withdrawn
            }
            match node.leadership.lock().await.take() {
                Some(l) => {
                    l.resign().await?;
                    println!("[{id}] resigned");
                }
                None => println!("[{id}] withdrew (was not leader)"),
            }
        }
        "watch" => {
            let mut updates = node.election.observe();
            let id = id.to_owned();
            tokio::spawn(async move {
                while let Some(update) = updates.next().await {
                    match update {
                        Ok(u) => match u.leader {
                            Some(kv) => println!(
                                "[{id}] sees leader {:?} ({}) at rev {}",
                                kv.value_str(),
                                kv.key_str(),
                                u.revision
                            ),
                            None => println!("[{id}] sees no leader at rev {}", u.revision),
                        },
                        Err(e) => println!("[{id}] observe ended: {e}"),
                    }
                }
            });
        }
        "query" => match node.election.leader().await {
            Ok(kv) => println!("[{id}] leader is {:?} ({})", kv.value_str(), kv.key_str()),
            Err(Error::NoLeader { .. }) => println!("[{id}] no leader"),
            Err(e) => return Err(e),
        },
        "rev" => match node.leadership.lock().await.as_ref() {
            Some(l) => println!("[{id}] leader rev {}", l.rev()),
            None => println!("[{id}] not the leader"),
        },
        "crash" => {
            let lease = node.session.lease();
            match backend.memory() {
                Some(memory) => {
                    memory.expire_lease_now(lease)?;
                    println!("[{id}] lease {lease:x} expired");
                }
                // A server cannot be told to expire a lease early; a process that dies just
                // stops refreshing it, which is what orphaning does.
                None => {
                    node.session.orphan();
                    println!(
                        "[{id}] stopped keeping lease {lease:x} alive: it expires within {:?}",
                        node.session.ttl()
                    );
                }
            }
        }
        other => println!("[{id}] unknown command {other:?}"),
    }
    Ok(())
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
