//! The interactive election program: several nodes in one process, each with its own
//! session, driven by lines `<node> <command> [argument]` on standard input. `coord repl
//! NAME` and the `election` example both run it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use coord::{Connection, Election, Error, Leadership, Session};
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Mutex as AsyncMutex;

/// The commands, as `help` prints them.
pub const HELP: &str =
    "<node> elect [value] | proclaim <value> | resign | watch | query | rev | crash; help; quit";

/// One participant: its connection and session, and its candidacy or leadership.
struct Node {
    conn: Connection,
    session: Session,
    election: Election,
    leadership: Arc<AsyncMutex<Option<Leadership>>>,
    campaign: Option<tokio::task::JoinHandle<()>>,
    watch: Option<tokio::task::JoinHandle<()>>,
}

/// Reads commands from standard input until it ends or says `quit`, then resigns every
/// leadership and closes every session, so no key lingers on a server. `new_node` makes a
/// node's connection and session the first time the node is named; every node takes part
/// in the election `name`.
///
/// # Errors
/// Reading standard input, or making a node. A failed command is printed, not returned.
pub async fn run<F, Fut>(
    name: &str,
    mut new_node: F,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = coord::Result<(Connection, Session)>>,
{
    let mut nodes: HashMap<String, Node> = HashMap::new();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    println!("commands: {HELP}");
    while let Some(line) = lines
        .next_line()
        .await
        .map_err(|e| format!("reading stdin: {e}"))?
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [] => continue,
            ["quit"] | ["exit"] => break,
            ["help"] => {
                println!("{HELP}");
                continue;
            }
            [id, verb, rest @ ..] => {
                if !nodes.contains_key(*id) {
                    let (conn, session) = new_node().await?;
                    let election = Election::new(&session, name);
                    nodes.insert(
                        id.to_string(),
                        Node {
                            conn,
                            session,
                            election,
                            leadership: Arc::new(AsyncMutex::new(None)),
                            campaign: None,
                            watch: None,
                        },
                    );
                }
                let node = nodes.get_mut(*id).expect("inserted above");
                if let Err(e) = command(id, node, verb, &rest.join(" ")).await {
                    println!("[{id}] {verb} failed: {e}");
                }
            }
            [word] => println!("unknown command {word:?}: say <node> <command>, e.g. `1 elect`"),
        }
        // Let background campaigns and observers print before the next command.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for (_, node) in nodes {
        if let Some(w) = node.watch {
            w.abort();
        }
        if let Some(c) = node.campaign {
            c.abort();
        }
        if let Some(l) = node.leadership.lock().await.take() {
            let _ = l.resign().await;
        }
        let _ = node.session.close().await;
    }
    Ok(())
}

async fn command(id: &str, node: &mut Node, command: &str, arg: &str) -> Result<(), Error> {
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
                        let lost = leadership.lost();
                        *slot.lock().await = Some(leadership);
                        lost.await;
                        if slot.lock().await.is_some() {
                            println!("[{id}] leadership lost");
                        }
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
            let leadership = node.leadership.lock().await.take();
            if let Some(campaign) = node.campaign.take() {
                campaign.abort(); // a pending campaign's candidacy is withdrawn
            }
            match leadership {
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
            node.watch = Some(tokio::spawn(async move {
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
            }));
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
            match node.conn.backend_as::<coord::memory::MemoryBackend>() {
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
