//! `coord elect NAME PROPOSAL [--try] [-- CMD]`, `coord elect --listen NAME`,
//! `coord leader NAME`.

use std::time::Duration;

use clap::Args;
use coord::{Election, Error, KeyValue, LeaderUpdate, Leadership, Session};
use futures::StreamExt;
use serde_json::{Value, json};

use super::output::{json_bytes, printable};
use super::runner::{self, command_margin};
use super::signals::{Signals, acquire_unless_interrupted};
use super::{CliError, Ctx, Out, WaitArgs, close_lost, code, parse_duration};

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

    /// Become leader only if the election has none now; else exit 3 at once, leaving no
    /// candidacy behind.
    #[arg(long = "try", conflicts_with_all = ["timeout", "listen"])]
    pub(crate) try_elect: bool,

    /// When leadership is lost while CMD runs: how long CMD gets after SIGTERM before
    /// SIGKILL. coord counts leadership lost this much earlier, so that CMD is dead before
    /// the lease can end; TTL/10 + this must stay below two thirds of the TTL.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "1s",
        value_parser = parse_duration,
        requires = "command"
    )]
    pub(crate) kill_after: Duration,

    /// Command to run while leader, after `--` (always: so that `elect NAME -- CMD`, with
    /// the proposal forgotten, is refused rather than CMD taken for the proposal): coord
    /// campaigns, runs CMD once elected, resigns when it exits and exits with its code.
    #[arg(value_name = "CMD", last = true, conflicts_with = "listen")]
    pub(crate) command: Vec<String>,
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
    let drift = if args.command.is_empty() {
        None
    } else {
        Some(command_margin(ctx.ttl(), args.kill_after)?)
    };
    let proposal = args.proposal.clone().unwrap_or_default();
    let mut signals = Signals::install()?;
    let conn = ctx.connect().await?;
    if args.try_elect {
        // No candidacy at all when there is a leader already: the common case of --try
        // writes nothing. A leader arriving after this read is caught by `try_campaign`.
        match coord::leader(conn.backend().as_ref(), &args.name).await {
            Ok(leader) => return Err(has_leader(&args.name, &leader)),
            Err(Error::NoLeader { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut builder = conn.session_builder();
    if let Some(drift) = drift {
        builder = builder.drift_margin(drift);
    }
    let session = builder.start().await?;
    super::warn_if_ttl_raised(ctx, &session);
    let election = Election::new(&session, args.name.clone());
    let campaign = async {
        match (args.try_elect, args.wait.timeout) {
            (true, _) => try_campaign(&election, &session, &proposal).await,
            (false, Some(limit)) => election
                .campaign_timeout(proposal.clone(), limit)
                .await
                .map(Ok),
            (false, None) => election.campaign(proposal.clone()).await.map(Ok),
        }
    };
    let leadership = match acquire_unless_interrupted(campaign, &session, &mut signals).await? {
        Ok(Ok(leadership)) => leadership,
        Ok(Err(leader)) => {
            // Dropping the campaign withdrew the candidacy; closing the session revokes
            // its lease, so that nothing of it is left even if the withdrawal is late.
            let _ = super::release_within("the candidacy", session.ttl(), session.close()).await;
            return Err(has_leader(&args.name, &leader));
        }
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
    if args.command.is_empty() {
        lead(ctx, &args, leadership, &session, &mut signals).await
    } else {
        exec(ctx, &args, leadership, &session, &mut signals).await
    }
}

/// Campaigns, but gives up (returning the leader) as soon as the election is seen led by
/// another session: then this candidacy could only wait. The leader is the oldest
/// candidate, so once our candidacy exists the observer sees either us or someone older.
async fn try_campaign(
    election: &Election,
    session: &Session,
    proposal: &str,
) -> coord::Result<Result<Leadership, KeyValue>> {
    let mut updates = election.observe();
    let ours = session.lease();
    let other_leader = async {
        while let Some(update) = updates.next().await {
            if let Some(leader) = update?.leader
                && leader.lease != ours
            {
                return Ok(leader);
            }
        }
        Err(Error::unavailable(format!(
            "observer of election {:?} ended",
            election.name()
        )))
    };
    tokio::select! {
        // Elected and seen led by another in the same instant: the observer's view is the
        // older one.
        biased;
        elected = election.campaign(proposal.to_owned()) => elected.map(Ok),
        leader = other_leader => leader.map(Err),
    }
}

/// `--try` found a leader: exit 3, naming it.
fn has_leader(name: &str, leader: &KeyValue) -> CliError {
    CliError::new(
        code::LOCKED,
        format!(
            "election {name:?} has a leader (key {}, proposal {:?})",
            leader.key_str(),
            leader.value_str()
        ),
    )
}

/// Leads until a signal (resign, exit 0) or until leadership is lost (exit 5).
async fn lead(
    ctx: &Ctx,
    args: &ElectArgs,
    leadership: Leadership,
    session: &Session,
    signals: &mut Signals,
) -> Result<u8, CliError> {
    let key = leadership.key().to_owned();
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
            close_lost(session).await;
            Err(lost_error(&args.name, &key, ""))
        }
    }
}

fn lost_error(name: &str, key: &str, what_then: &str) -> CliError {
    CliError::new(
        code::LOST,
        format!(
            "leadership of election {name:?} lost (key {key:?} is gone: the session expired or the key was deleted){what_then}"
        ),
    )
}

/// Runs CMD while leader: resigns when it exits; terminates it if leadership is lost.
async fn exec(
    ctx: &Ctx,
    args: &ElectArgs,
    leadership: Leadership,
    session: &Session,
    signals: &mut Signals,
) -> Result<u8, CliError> {
    let key = leadership.key().to_owned();
    let namespace = ctx.options.namespace_prefix().unwrap_or("");
    let env = [
        ("COORD_ELECTION_NAME", args.name.clone()),
        ("COORD_LEADER_KEY", key.clone()),
        ("COORD_PROPOSAL", args.proposal.clone().unwrap_or_default()),
        (
            "COORD_FENCING_TOKEN",
            leadership.fencing_token().to_string(),
        ),
        ("COORD_LEASE_ID", format!("{:x}", session.lease())),
        ("ETCD_LEADER_KEY", format!("{namespace}{key}")),
    ];
    let lost = leadership.lost();
    let under = runner::Under {
        name: &args.name,
        key: &key,
        what: format!("the leadership of election {:?}", args.name),
        ended_event: "resigned",
    };
    runner::run_under(
        ctx,
        under,
        &args.command,
        &env,
        args.kill_after,
        lost,
        leadership.resign(),
        session,
        signals,
        |then| lost_error(&args.name, &key, then),
    )
    .await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn try_campaign_gives_up_behind_a_leader_and_withdraws() {
        let conn = coord::connect("memory://").await.unwrap();
        let (a, b) = (conn.session().await.unwrap(), conn.session().await.unwrap());
        let leading = Election::new(&a, "t").campaign("a").await.unwrap();
        // Past the pre-check of `run`: the campaign is under way when the observer sees a.
        let election = Election::new(&b, "t");
        let tried = tokio::time::timeout(Duration::from_secs(60), try_campaign(&election, &b, "b"));
        let leader = match tried.await.expect("try_campaign waited").unwrap() {
            Ok(_) => panic!("b was elected while a leads"),
            Err(leader) => leader,
        };
        assert_eq!(leader.key_str(), leading.key());
        assert_eq!(leader.value_str(), "a");
        b.close().await.unwrap();
        let left = conn
            .backend()
            .range(coord::RangeRequest::prefix("t/"))
            .await
            .unwrap();
        let keys: Vec<_> = left
            .kvs
            .iter()
            .map(|kv| kv.key_str().into_owned())
            .collect();
        assert_eq!(keys, [leading.key()], "b's candidacy is gone");

        leading.resign().await.unwrap();
        let c = conn.session().await.unwrap();
        let elected = try_campaign(&Election::new(&c, "t"), &c, "c")
            .await
            .unwrap()
            .expect("no leader: c leads");
        assert_eq!(elected.current().await.unwrap().value_str(), "c");
    }
}
