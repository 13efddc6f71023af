//! `coord demo`: several nodes in one process on the memory backend, printed as it happens.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use coord::memory::MemoryBackend;
use coord::{BackendExt, Election, Error, Mutex, MutexGuard, Session, TxnOp, TxnRequest};
use futures::StreamExt;
use serde_json::{Value, json};

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

    /// Returns once this node's candidate key is in the election (its place in line).
    async fn wait_for_candidacy(&self) -> Result<(), Error> {
        let key = format!("{ELECTION}/{:x}", self.session.lease());
        while self.client.get(key.as_bytes()).await?.is_none() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }

    /// The process dies: its lease expires now (the memory backend's fault hook), so every
    /// key it held is deleted, as the server would do a TTL after a real crash.
    fn die(&self) -> Result<(), Error> {
        self.client.expire_lease_now(self.session.lease())
    }
}

fn step(out: Out, title: &str) {
    out.emit(
        format_args!("\n== {title}"),
        json!({"event": "step", "title": title}),
    );
}

/// One line of the story, by `who` (a node, or the observer): as text, or as a JSON object
/// with `fields` added so that scripts need not parse the text.
fn say(out: Out, who: &str, text: impl std::fmt::Display, fields: Value) {
    let text = text.to_string();
    let mut j = json!({"event": "say", "who": who, "text": text});
    if let (Some(j), Value::Object(extra)) = (j.as_object_mut(), fields) {
        j.extend(extra);
    }
    if who.is_empty() {
        out.emit(format_args!("   {text}"), j);
    } else {
        out.emit(format_args!("   [{who}] {text}"), j);
    }
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

pub(crate) async fn run(args: &DemoArgs, out: Out) -> Result<u8, CliError> {
    demo(args.pace, out).await?;
    Ok(code::OK)
}

async fn demo(pace: Duration, out: Out) -> Result<(), Error> {
    let pause = || tokio::time::sleep(pace);
    let store = MemoryBackend::new();
    out.emit(
        format_args!(
            "coord demo: nodes a, b and c, each with its own client and session (TTL {TTL:?}), on one in-memory store"
        ),
        json!({"event": "start", "nodes": ["a", "b", "c"], "ttl_ms": TTL.as_millis() as u64}),
    );

    step(out, &format!("1. Leader election {ELECTION:?}"));
    let mut observer = coord::observe(Arc::new(store.new_client()), ELECTION.to_owned());
    tokio::spawn(async move {
        while let Some(update) = observer.next().await {
            match update {
                Ok(u) => match u.leader {
                    Some(kv) => say(
                        out,
                        "observer",
                        format_args!(
                            "leader is {:?} (key {}, rev {})",
                            kv.value_str(),
                            kv.key_str(),
                            kv.create_revision
                        ),
                        json!({"leader": kv.value_str(), "key": kv.key_str(), "rev": kv.create_revision}),
                    ),
                    None => say(out, "observer", "no leader", json!({"leader": null})),
                },
                Err(e) => say(out, "observer", format_args!("stopped: {e}"), json!({})),
            }
        }
    });
    pause().await;
    let a = Node::start(&store, "a").await?;
    let b = Node::start(&store, "b").await?;
    let c = Node::start(&store, "c").await?;
    say(out, "a", "campaigns", json!({}));
    let a_leads = Election::new(&a.session, ELECTION).campaign("a").await?;
    elected(out, "a", a_leads.key(), a_leads.rev());
    let lost = a_leads.lost();
    tokio::spawn(async move {
        lost.await;
        say(out, "a", "is told: leadership lost", json!({"lost": true}));
    });
    pause().await;
    let mut campaigns = Vec::new();
    for node in [&b, &c] {
        say(out, node.name, "campaigns (and waits)", json!({}));
        let election = Election::new(&node.session, ELECTION);
        let name = node.name;
        campaigns.push(tokio::spawn(async move {
            let leadership = election.campaign(name).await?;
            elected(out, name, leadership.key(), leadership.rev());
            Ok::<_, Error>(leadership)
        }));
        // The story needs b in line before c; a spawned campaign might otherwise run late.
        node.wait_for_candidacy().await?;
        pause().await;
    }

    step(
        out,
        "2. Leader a dies: its lease expires (memory fault hook), as if the process were killed",
    );
    a.die()?;
    let b_leads = campaigns.remove(0).await.expect("campaign task")?;
    pause().await;

    step(out, "3. Leader b resigns; c takes over");
    b_leads.resign().await?;
    say(out, "b", "resigned", json!({}));
    let c_leads = campaigns.remove(0).await.expect("campaign task")?;
    pause().await;
    c_leads.resign().await?;
    say(out, "c", "resigned", json!({}));
    drop(a_leads);
    pause().await;

    step(
        out,
        &format!("4. Lock {LOCK:?} passes between nodes; fencing tokens rise"),
    );
    let a = Node::start(&store, "a").await?; // a restarts with a new session
    say(
        out,
        "a",
        format_args!(
            "restarted with a new session (lease {:x})",
            a.session.lease()
        ),
        json!({"lease": format!("{:x}", a.session.lease())}),
    );
    let mut last = 0;
    let mut all_rose = true;
    for node in [&b, &c, &a] {
        let guard = Mutex::new(&node.session, LOCK).lock().await?;
        let token = guard.fencing_token();
        all_rose &= token > last;
        let written = fenced_write(node, &guard, node.name).await?;
        let rising = if last == 0 {
            String::new()
        } else {
            format!(" (> {last})")
        };
        say(
            out,
            node.name,
            format_args!(
                "locked: key {}, fencing token {token}{rising}; fenced write {}",
                guard.key(),
                if written { "accepted" } else { "REFUSED" }
            ),
            json!({"key": guard.key(), "fencing_token": token, "write_accepted": written}),
        );
        last = token;
        guard.unlock().await?;
        say(out, node.name, "unlocked", json!({}));
        pause().await;
    }

    step(
        out,
        "5. A stale holder: c holds the lock, stalls (think GC pause), its lease expires",
    );
    let c_guard = Mutex::new(&c.session, LOCK).lock().await?;
    say(
        out,
        "c",
        format_args!("locked: fencing token {}", c_guard.fencing_token()),
        json!({"key": c_guard.key(), "fencing_token": c_guard.fencing_token()}),
    );
    c.die()?;
    say(
        out,
        "c",
        "...stalled; meanwhile its lease expired and its lock key was deleted",
        json!({}),
    );
    let b_guard = Mutex::new(&b.session, LOCK).lock().await?;
    say(
        out,
        "b",
        format_args!(
            "locked: fencing token {} (> c's {})",
            b_guard.fencing_token(),
            c_guard.fencing_token()
        ),
        json!({"key": b_guard.key(), "fencing_token": b_guard.fencing_token()}),
    );
    all_rose &= b_guard.fencing_token() > c_guard.fencing_token();
    let stale = fenced_write(&c, &c_guard, "c (stale)").await?;
    say(
        out,
        "c",
        format_args!(
            "wakes up and writes, guarded by is_owner(): {}",
            if stale {
                "ACCEPTED (bug!)"
            } else {
                "refused, the compare failed"
            }
        ),
        json!({"write_accepted": stale}),
    );
    let fresh = fenced_write(&b, &b_guard, "b").await?;
    say(
        out,
        "b",
        format_args!(
            "writes, guarded by is_owner(): {}",
            if fresh { "accepted" } else { "REFUSED (bug!)" }
        ),
        json!({"write_accepted": fresh}),
    );
    let value = store
        .get(RESOURCE.as_bytes())
        .await?
        .map(|kv| kv.value_str().into_owned())
        .unwrap_or_default();
    say(
        out,
        "",
        format_args!("{RESOURCE} = {value:?}"),
        json!({"key": RESOURCE, "value": value}),
    );
    say(
        out,
        "",
        format_args!(
            "(a resource that remembers the highest token it has seen, {}, would refuse c's token {} too)",
            b_guard.fencing_token(),
            c_guard.fencing_token()
        ),
        json!({}),
    );
    drop(c_guard);
    b_guard.unlock().await?;
    pause().await;

    step(out, "done");
    for node in [&a, &b] {
        node.session.close().await?;
    }
    // The demo doubles as a smoke test: it must not print a happy story over a broken one.
    if stale || !fresh || !all_rose {
        return Err(Error::invalid_argument(
            "the demo's fencing check did not behave as expected",
        ));
    }
    Ok(())
}

fn elected(out: Out, who: &str, key: &str, rev: i64) {
    say(
        out,
        who,
        format_args!("elected: key {key}, rev {rev}"),
        json!({"elected": true, "key": key, "rev": rev}),
    );
}
