//! `coord elect NAME PROPOSAL`, `coord elect --listen NAME`, `coord leader NAME`.

use clap::Args;
use coord::{Election, Error, KeyValue, LeaderUpdate};
use futures::StreamExt;
use serde_json::{Value, json};

use super::output::{json_bytes, printable};
use super::signals::{Signals, acquire_unless_interrupted};
use super::{CliError, Ctx, Out, WaitArgs, close_lost, code};

#[derive(Debug, Args)]
pub(crate) struct ElectArgs {
    /// Election name (no control characters). Candidate keys are NAME/<lease id in hex>,
    /// as etcdctl elect makes them.
    #[arg(value_parser = super::parse_name)]
    pub(crate) name: String,

    /// The value to lead with (what `coord leader` and observers print; no control
    /// characters).
    #[arg(required_unless_present = "listen", conflicts_with = "listen", value_parser = super::parse_name)]
    pub(crate) proposal: Option<String>,

    /// Don't campaign: print every leader change, and "no leader" when there is none.
    #[arg(long, short = 'l', conflicts_with = "timeout")]
    pub(crate) listen: bool,

    #[command(flatten)]
    pub(crate) wait: WaitArgs,
}

#[derive(Debug, Args)]
pub(crate) struct LeaderArgs {
    /// Election name.
    #[arg(value_parser = super::parse_name)]
    pub(crate) name: String,
}

pub(crate) async fn run(ctx: &Ctx, args: ElectArgs) -> Result<u8, CliError> {
    if args.listen {
        return listen(ctx, &args.name).await;
    }
    let proposal = args.proposal.clone().unwrap_or_default();
    let mut signals = Signals::install()?;
    let conn = ctx.connect().await?;
    let session = conn.session().await?;
    super::warn_if_ttl_raised(ctx, &session);
    let election = Election::new(&session, args.name.clone());
    let campaign = async {
        match args.wait.timeout {
            Some(limit) => election.campaign_timeout(proposal.clone(), limit).await,
            None => election.campaign(proposal.clone()).await,
        }
    };
    let leadership = match acquire_unless_interrupted(campaign, &session, &mut signals).await? {
        Ok(leadership) => leadership,
        Err(exit) => return Ok(exit),
    };
    let key = leadership.key().to_owned();
    ctx.out.emit(
        format!("{key}\n{proposal}"),
        json!({
            "event": "elected",
            "name": args.name,
            "key": key,
            "proposal": proposal,
            "rev": leadership.rev(),
            "lease": format!("{:x}", session.lease()),
        }),
    );
    tokio::select! {
        _ = signals.recv() => {
            let what = format!("the leadership of election {:?}", args.name);
            super::release_within(&what, session.ttl(), async {
                let resigned = leadership.resign().await;
                let closed = session.close().await;
                resigned.and(closed)
            })
            .await?;
            ctx.out.json(json!({"event": "resigned", "name": args.name, "key": key}));
            Ok(code::OK)
        }
        _ = leadership.lost() => {
            ctx.out.json(json!({"event": "lost", "name": args.name, "key": key}));
            close_lost(&session).await;
            Err(CliError::new(
                code::LOST,
                format!("leadership of election {:?} lost (key {key:?} is gone: the session expired or the key was deleted)", args.name),
            ))
        }
    }
}

/// The JSON fields of a leader.
fn leader_json(name: &str, kv: &KeyValue) -> Value {
    let mut j = json!({
        "event": "leader",
        "name": name,
        "rev": kv.create_revision,
        "lease": format!("{:x}", kv.lease),
    });
    json_bytes(&mut j, "key", &kv.key);
    json_bytes(&mut j, "proposal", &kv.value);
    j
}

fn print_update(out: &Out, name: &str, update: &LeaderUpdate) -> std::io::Result<()> {
    match &update.leader {
        Some(kv) => {
            let mut j = leader_json(name, kv);
            j["revision"] = json!(update.revision);
            out.emit_or_closed(
                format!("{}\n{}", printable(&kv.key), printable(&kv.value)),
                j,
            )
        }
        None => out.emit_or_closed(
            "no leader",
            json!({"event": "no_leader", "name": name, "revision": update.revision}),
        ),
    }
}

async fn listen(ctx: &Ctx, name: &str) -> Result<u8, CliError> {
    let mut signals = Signals::install()?;
    let conn = ctx.connect().await?;
    let mut updates = coord::observe(conn.backend().clone(), name.to_owned());
    loop {
        tokio::select! {
            _ = signals.recv() => return Ok(code::OK),
            next = updates.next() => match next {
                Some(Ok(update)) => if let Err(e) = print_update(&ctx.out, name, &update) {
                    // The reader went away (`| head -n 2`): stop, as a process killed by
                    // SIGPIPE would, with 128 + 13.
                    return if e.kind() == std::io::ErrorKind::BrokenPipe {
                        Ok(code::BROKEN_PIPE)
                    } else {
                        Err(CliError::new(code::FAILURE, format!("writing to stdout: {e}")))
                    };
                },
                Some(Err(e)) => return Err(CliError::new(code::FAILURE, format!("observer of election {name:?} ended: {e}"))),
                None => return Err(CliError::new(code::FAILURE, format!("observer of election {name:?} ended"))),
            }
        }
    }
}

pub(crate) async fn leader(ctx: &Ctx, args: LeaderArgs) -> Result<u8, CliError> {
    let conn = ctx.connect().await?;
    match coord::leader(conn.backend().as_ref(), &args.name).await {
        Ok(kv) => {
            ctx.out
                .emit(printable(&kv.value), leader_json(&args.name, &kv));
            Ok(code::OK)
        }
        Err(e @ Error::NoLeader { .. }) => {
            ctx.out
                .json(json!({"event": "no_leader", "name": args.name}));
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}
