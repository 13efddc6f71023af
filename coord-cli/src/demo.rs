//! `coord demo`: three nodes in one process on an in-memory store, each step explained in
//! one plain sentence for someone who has never used etcd.
//!
//! Only the main task prints, each line after the event it tells of has happened (the
//! observer's updates are awaited, not printed from a task of their own), so every run
//! prints the same lines in the same order: causes before their effects.
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

/// One sentence of the story, by `who` (a node, or the observer; empty for the narrator):
/// as text, or as a JSON object with `fields` added so that scripts need not parse the text.
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

/// Awaits the observer's report of `leader` (a proposal, or `None` for no leader) and tells
/// it. Updates in between (the observer may first see an older state) are passed over.
async fn observe(out: Out, updates: &mut LeaderUpdates, leader: Option<&str>) -> Result<(), Error> {
    let wait = async {
        while let Some(update) = updates.next().await {
            let update = update?;
            let seen = update.leader.as_ref().map(|kv| kv.value_str().into_owned());
            if seen.as_deref() == leader {
                return Ok(update);
            }
        }
        Err(Error::contract("the demo's observer stopped"))
    };
    let update = tokio::time::timeout(STEP_LIMIT, wait)
        .await
        .map_err(|_| Error::contract("the demo's observer saw no change within 10s"))??;
    match (leader, update.leader) {
        (Some(name), Some(kv)) => say(
            out,
            "observer",
            format_args!("sees that the leader is now {name}."),
            json!({"leader": name, "key": kv.key_str(), "rev": kv.create_revision}),
        ),
        _ => say(
            out,
            "observer",
            "sees that there is no leader now.",
            json!({"leader": null}),
        ),
    }
    Ok(())
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

/// Refuses a backend other than memory://: the demo's three nodes live in this process, on
/// a store of their own, and a demo that said nothing while ignoring `--backend
/// etcd://…` would let the user believe it ran there.
pub(crate) fn check_backend(given: Option<&str>) -> Result<(), CliError> {
    match given {
        Some(url) if !url.trim().to_ascii_lowercase().starts_with("memory:") => Err(CliError::new(
            code::USAGE,
            "demo runs its three nodes in this process on an in-memory store, so its \
                 --backend (or COORD_BACKEND) can only be memory://; on a server, try `coord \
                 lock`, `coord elect` and `coord leader` (the demo's last lines show how)",
        )),
        _ => Ok(()),
    }
}

pub(crate) async fn run(args: &DemoArgs, out: Out) -> Result<u8, CliError> {
    demo(args.pace, out).await?;
    Ok(code::OK)
}

/// How long any one step may take before the demo gives up rather than hang.
const STEP_LIMIT: Duration = Duration::from_secs(10);

/// The stream of leader changes an observer reads.
type LeaderUpdates = futures::stream::BoxStream<'static, coord::Result<coord::LeaderUpdate>>;

async fn demo(pace: Duration, out: Out) -> Result<(), Error> {
    let pause = || tokio::time::sleep(pace);
    let store = MemoryBackend::new();
    out.emit(
        "coord demo: three programs (nodes a, b and c) coordinate through one shared store, \
         as they would through etcd or Redis; here the store is kept in memory.",
        json!({"event": "start", "nodes": ["a", "b", "c"], "ttl_ms": TTL.as_millis() as u64}),
    );

    step(out, "1. Sessions and leases");
    let a = Node::start(&store, "a").await?;
    let b = Node::start(&store, "b").await?;
    let c = Node::start(&store, "c").await?;
    say(
        out,
        "",
        format_args!(
            "a, b and c each open a session: the store gives each a lease, a promise that \
             lasts a TTL (time to live) of {}s and that the node renews while it runs.",
            TTL.as_secs()
        ),
        json!({}),
    );
    say(
        out,
        "",
        "Whatever a node holds is tied to its lease, so when a node dies and stops renewing, \
         the store lets go of it by itself once the TTL has passed.",
        json!({}),
    );
    pause().await;

    step(out, &format!("2. Electing a leader ({ELECTION:?})"));
    let mut updates = coord::observe(Arc::new(store.new_client()), ELECTION.to_owned());
    observe(out, &mut updates, None).await?;
    let a_leads = Election::new(&a.session, ELECTION).campaign("a").await?;
    say(
        out,
        "a",
        "runs for leader and wins at once, since nobody else is running.",
        json!({}),
    );
    say(
        out,
        "a",
        format_args!(
            "is leader: its key {} was written at revision {}, the number the store gives \
             each change (it only ever goes up).",
            a_leads.key(),
            a_leads.rev()
        ),
        json!({"elected": true, "key": a_leads.key(), "rev": a_leads.rev()}),
    );
    observe(out, &mut updates, Some("a")).await?;
    pause().await;
    let mut campaigns = Vec::new();
    for (node, behind) in [(&b, "a"), (&c, "b")] {
        let election = Election::new(&node.session, ELECTION);
        let name = node.name;
        campaigns.push(tokio::spawn(async move { election.campaign(name).await }));
        // Its place in line is its key's revision: b must be in line before c asks.
        node.wait_for_candidacy().await?;
        say(
            out,
            node.name,
            format_args!("runs for leader too, and waits in line behind {behind}."),
            json!({}),
        );
        pause().await;
    }

    step(out, "3. The leader dies, and the next in line takes over");
    let a_lost = a_leads.lost();
    a.die()?;
    say(
        out,
        "a",
        format_args!(
            "crashes; the demo ends its lease at once, where a real store would end it {}s \
             after the last renewal.",
            TTL.as_secs()
        ),
        json!({"lease_ended": true}),
    );
    let b_leads = next_leader(&mut campaigns).await?;
    tokio::time::timeout(STEP_LIMIT, a_lost)
        .await
        .map_err(|_| Error::contract("a was never told it lost its leadership"))?;
    say(
        out,
        "",
        "With a's lease gone the store deleted a's key, so a is leader no more.",
        json!({}),
    );
    say(
        out,
        "b",
        format_args!(
            "was next in line, so b is leader now (revision {}).",
            b_leads.rev()
        ),
        json!({"elected": true, "key": b_leads.key(), "rev": b_leads.rev()}),
    );
    observe(out, &mut updates, Some("b")).await?;
    pause().await;

    step(out, "4. The leader steps down on purpose");
    b_leads.resign().await?;
    say(
        out,
        "b",
        "resigns: it deletes its key itself, without waiting for its lease to end.",
        json!({}),
    );
    let c_leads = next_leader(&mut campaigns).await?;
    say(
        out,
        "c",
        format_args!(
            "was next in line, so c is leader now (revision {}).",
            c_leads.rev()
        ),
        json!({"elected": true, "key": c_leads.key(), "rev": c_leads.rev()}),
    );
    observe(out, &mut updates, Some("c")).await?;
    c_leads.resign().await?;
    say(
        out,
        "c",
        "resigns too, and nobody is left in line.",
        json!({}),
    );
    observe(out, &mut updates, None).await?;
    drop(a_leads);
    pause().await;

    step(out, &format!("5. A lock ({LOCK:?}) and its fencing tokens"));
    say(
        out,
        "",
        "A lock lets one node at a time do a job; each holder gets a fencing token, the \
         revision at which it took the lock, so every later holder has a higher token.",
        json!({}),
    );
    let a = Node::start(&store, "a").await?;
    say(
        out,
        "a",
        "restarts, with a new session and a new lease.",
        json!({}),
    );
    let mut last = 0;
    let mut all_rose = true;
    for node in [&b, &c, &a] {
        let guard = Mutex::new(&node.session, LOCK).lock().await?;
        let token = guard.fencing_token();
        all_rose &= token > last;
        let written = fenced_write(node, &guard, node.name).await?;
        guard.unlock().await?;
        say(
            out,
            node.name,
            format_args!(
                "takes the lock with fencing token {token}, writes {:?} to {RESOURCE} ({}), \
                 and unlocks.",
                node.name,
                if written { "accepted" } else { "REFUSED" }
            ),
            json!({"key": guard_key(&node.session), "fencing_token": token, "write_accepted": written}),
        );
        last = token;
        pause().await;
    }

    step(out, "6. Fencing stops a holder that stalled");
    let c_guard = Mutex::new(&c.session, LOCK).lock().await?;
    let c_token = c_guard.fencing_token();
    say(
        out,
        "c",
        format_args!("takes the lock with fencing token {c_token}."),
        json!({"key": c_guard.key(), "fencing_token": c_token}),
    );
    c.die()?;
    say(
        out,
        "c",
        "stalls (think of a long garbage-collection pause), and meanwhile its lease ends, \
         so the store deletes c's lock key and the lock is free.",
        json!({"lease_ended": true}),
    );
    let b_guard = Mutex::new(&b.session, LOCK).lock().await?;
    let b_token = b_guard.fencing_token();
    all_rose &= b_token > c_token;
    say(
        out,
        "b",
        format_args!("takes the lock with fencing token {b_token}, higher than c's {c_token}."),
        json!({"key": b_guard.key(), "fencing_token": b_token}),
    );
    let stale = fenced_write(&c, &c_guard, "c (stale)").await?;
    say(
        out,
        "c",
        format_args!(
            "wakes up and writes, on the condition that it still holds the lock: {}.",
            if stale {
                "ACCEPTED (a bug!)"
            } else {
                "the store refuses the write"
            }
        ),
        json!({"write_accepted": stale}),
    );
    let fresh = fenced_write(&b, &b_guard, "b").await?;
    say(
        out,
        "b",
        format_args!(
            "writes on the same condition: {}.",
            if fresh {
                "the store accepts the write"
            } else {
                "REFUSED (a bug!)"
            }
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
        format_args!("{RESOURCE} = {value:?}: c's late write never landed."),
        json!({"key": RESOURCE, "value": value}),
    );
    say(
        out,
        "",
        format_args!(
            "A resource that remembers the highest token it has seen ({b_token}) would \
             refuse c's token {c_token} just the same."
        ),
        json!({}),
    );
    drop(c_guard);
    b_guard.unlock().await?;
    for node in [&a, &b] {
        node.session.close().await?;
    }
    // The demo doubles as a smoke test: it must not print a happy story over a broken one.
    if stale || !fresh || !all_rose {
        return Err(Error::contract(
            "the demo's fencing check did not behave as expected",
        ));
    }

    step(out, "What to try next, on a real server");
    for (command, what) in NEXT {
        out.emit(
            format_args!("   {command}\n       {what}"),
            json!({"event": "try", "command": command, "what": what}),
        );
    }
    Ok(())
}

/// The demo's last lines: the same steps with `coord` on a real etcd (started with
/// `etcd`, listening on 127.0.0.1:2379); Redis works the same with `redis://127.0.0.1:6379`.
const NEXT: [(&str, &str); 5] = [
    (
        "coord lock --backend etcd://127.0.0.1:2379 jobs -- CMD",
        "runs CMD while holding lock \"jobs\"; run it in two terminals and the second waits",
    ),
    (
        "coord elect --backend etcd://127.0.0.1:2379 web node-1",
        "runs for leader of election \"web\" as \"node-1\" and leads until Ctrl-C",
    ),
    (
        "coord elect --backend etcd://127.0.0.1:2379 --listen web",
        "prints every change of leader",
    ),
    (
        "coord leader --backend etcd://127.0.0.1:2379 web",
        "prints the current leader's value",
    ),
    (
        "coord repl --backend etcd://127.0.0.1:2379 web",
        "plays several nodes by hand (type `help`); redis://127.0.0.1:6379 works as well",
    ),
];

/// The next campaign in line, once it has won.
async fn next_leader(
    campaigns: &mut Vec<tokio::task::JoinHandle<coord::Result<coord::Leadership>>>,
) -> Result<coord::Leadership, Error> {
    let campaign = campaigns.remove(0);
    tokio::time::timeout(STEP_LIMIT, campaign)
        .await
        .map_err(|_| Error::contract("the next in line was not elected within 10s"))?
        .map_err(|e| Error::contract(format!("a campaign task failed: {e}")))?
}

/// The key a node's lock has: `demo/lock/<lease hex>`.
fn guard_key(session: &Session) -> String {
    format!("{LOCK}/{:x}", session.lease())
}
