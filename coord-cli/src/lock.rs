//! `coord lock NAME [--try] [--timeout DUR] [--read|--write|--permits N] [-- CMD ARGS...]`.

use std::time::Duration;

use clap::Args;
use coord::{
    Mutex, MutexGuard, RwMode, RwMutex, RwMutexGuard, Semaphore, SemaphorePermit, Session,
};
use serde_json::json;

use super::runner::{self, command_margin};
use super::signals::{Signals, acquire_unless_interrupted};
use super::{CliError, Ctx, WaitArgs, close_lost, code, parse_duration, release_within};

#[derive(Debug, Args)]
pub(crate) struct LockArgs {
    /// Lock name (no control characters). The lock key is NAME/<lease id in hex>, as
    /// etcdctl lock makes it.
    #[arg(value_parser = super::parse_name)]
    pub(crate) name: String,

    /// Fail at once (exit 3) when the lock is held by another session.
    #[arg(long = "try", conflicts_with = "timeout")]
    pub(crate) try_lock: bool,

    #[command(flatten)]
    pub(crate) wait: WaitArgs,

    /// Take a shared read lock of a read/write lock (keys NAME/read/<lease>).
    #[arg(long, conflicts_with = "write")]
    pub(crate) read: bool,

    /// Take the exclusive write lock of a read/write lock (keys NAME/write/<lease>).
    #[arg(long)]
    pub(crate) write: bool,

    /// Take one of N permits of the semaphore NAME (as `consul lock -n N`): up to N holders
    /// at once, each key NAME/<lease>. Every holder of NAME must give the same N.
    #[arg(
        long,
        short = 'n',
        value_name = "N",
        value_parser = parse_permits,
        conflicts_with_all = ["read", "write"]
    )]
    pub(crate) permits: Option<usize>,

    /// When the lock is lost while CMD runs: how long CMD gets after SIGTERM before SIGKILL.
    /// coord gives the lock up this much earlier, so that CMD is dead before the lease can
    /// end; TTL/10 + this must stay below two thirds of the TTL (1s fits --ttl 2 and more).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration, requires = "command")]
    pub(crate) kill_after: Duration,

    /// Command to run while holding the lock (after `--`, or directly after NAME). A
    /// CMD whose first word starts with `-` must come after `--`: otherwise a mistyped
    /// option (`--timout 1s`) would run as a command, with no timeout, once the lock was
    /// taken.
    #[arg(value_name = "CMD", trailing_var_arg = true)]
    pub(crate) command: Vec<String>,
}

impl LockArgs {
    fn mode(&self) -> &'static str {
        if self.permits.is_some() {
            "semaphore"
        } else if self.read {
            "read"
        } else if self.write {
            "write"
        } else {
            "exclusive"
        }
    }
}

/// `--permits`: a positive count that a server's range limit (an i64) can carry.
pub(crate) fn parse_permits(s: &str) -> Result<usize, String> {
    const MAX: usize = i64::MAX as usize;
    match s.parse::<usize>() {
        Ok(0) => Err("a semaphore needs at least 1 permit (0 would let nobody in)".into()),
        Ok(n) if n > MAX => Err(format!(
            "{n} permits is more than the most a server can count, {MAX}"
        )),
        Ok(n) => Ok(n),
        Err(e) => Err(format!(
            "{s:?} is not a number of permits ({e}): give a whole number, 1 or more"
        )),
    }
}

/// A held plain lock, read/write lock or semaphore permit.
enum Held {
    Mutex(MutexGuard),
    Rw(RwMutexGuard),
    Permit(SemaphorePermit),
}

impl Held {
    fn key(&self) -> &str {
        match self {
            Held::Mutex(g) => g.key(),
            Held::Rw(g) => g.key(),
            Held::Permit(p) => p.key(),
        }
    }

    fn fencing_token(&self) -> i64 {
        match self {
            Held::Mutex(g) => g.fencing_token(),
            Held::Rw(g) => g.fencing_token(),
            Held::Permit(p) => p.fencing_token(),
        }
    }

    fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let lost: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = match self {
            Held::Mutex(g) => Box::pin(g.lost()),
            Held::Rw(g) => Box::pin(g.lost()),
            Held::Permit(p) => Box::pin(p.lost()),
        };
        lost
    }

    async fn release(self) -> coord::Result<()> {
        match self {
            Held::Mutex(g) => g.unlock().await,
            Held::Rw(g) => g.unlock().await,
            Held::Permit(p) => p.release().await,
        }
    }
}

async fn acquire(session: &Session, args: &LockArgs) -> coord::Result<Held> {
    let name = args.name.clone();
    if let Some(permits) = args.permits {
        let semaphore = Semaphore::new(session, name, permits)?;
        let permit = match (args.try_lock, args.wait.timeout) {
            (true, _) => semaphore.try_acquire().await?,
            (false, Some(limit)) => semaphore.acquire_timeout(limit).await?,
            (false, None) => semaphore.acquire().await?,
        };
        Ok(Held::Permit(permit))
    } else if args.read || args.write {
        let rw = RwMutex::new(session, name);
        let mode = if args.read {
            RwMode::Read
        } else {
            RwMode::Write
        };
        let guard = match (args.try_lock, args.wait.timeout, mode) {
            (true, _, RwMode::Read) => rw.try_read().await?,
            (true, _, RwMode::Write) => rw.try_write().await?,
            (false, Some(limit), mode) => rw.lock_timeout(mode, limit).await?,
            (false, None, RwMode::Read) => rw.read().await?,
            (false, None, RwMode::Write) => rw.write().await?,
        };
        Ok(Held::Rw(guard))
    } else {
        let m = Mutex::new(session, name);
        let guard = match (args.try_lock, args.wait.timeout) {
            (true, _) => m.try_lock().await?,
            (false, Some(limit)) => m.lock_timeout(limit).await?,
            (false, None) => m.lock().await?,
        };
        Ok(Held::Mutex(guard))
    }
}

pub(crate) async fn run(ctx: &Ctx, args: LockArgs) -> Result<u8, CliError> {
    let drift = if args.command.is_empty() {
        None
    } else {
        Some(command_margin(ctx.ttl(), args.kill_after)?)
    };
    let mut signals = Signals::install()?;
    let conn = ctx.connect().await?;
    let mut builder = conn.session_builder();
    if let Some(drift) = drift {
        builder = builder.drift_margin(drift);
    }
    let session = builder.start().await?;
    super::warn_if_ttl_raised(ctx, &session);
    let acquired = acquire_unless_interrupted(acquire(&session, &args), &session, &mut signals)
        .await
        .map_err(|e| taken(e, &args))?;
    let held = match acquired {
        Ok(held) => held,
        Err(exit) => return Ok(exit),
    };
    let key = held.key().to_owned();
    let token = held.fencing_token();
    let mut locked = json!({
        "event": "locked",
        "name": args.name,
        "key": key,
        "fencing_token": token,
        "lease": format!("{:x}", session.lease()),
        "mode": args.mode(),
    });
    if let Some(permits) = args.permits {
        locked["permits"] = json!(permits);
    }
    ctx.out.emit(format!("{key}\n{token}"), locked);
    if args.command.is_empty() {
        hold(ctx, &args, held, &session, &mut signals).await
    } else {
        exec(ctx, &args, held, &session, &mut signals).await
    }
}

/// Holds the lock until a signal (release, exit 0) or until it is lost (exit 5).
async fn hold(
    ctx: &Ctx,
    args: &LockArgs,
    held: Held,
    session: &Session,
    signals: &mut Signals,
) -> Result<u8, CliError> {
    let key = held.key().to_owned();
    tokio::select! {
        _ = signals.recv() => {
            release_within(&format!("lock {:?}", args.name), session.ttl(), async {
                let released = held.release().await;
                let closed = session.close().await;
                released.and(closed)
            })
            .await?;
            ctx.out.json(json!({"event": "released", "name": args.name, "key": key}));
            Ok(code::OK)
        }
        _ = held.lost() => {
            ctx.out.json(json!({"event": "lost", "name": args.name, "key": key}));
            close_lost(session).await;
            Err(lost_error(&args.name, &key, ""))
        }
    }
}

/// `--try` on a semaphore: "held by another session" would be wrong, all N are.
fn taken(e: CliError, args: &LockArgs) -> CliError {
    match args.permits {
        Some(n) if e.code == code::LOCKED => CliError::new(
            code::LOCKED,
            format!(
                "all {n} permits of semaphore {:?} are held by other sessions",
                args.name
            ),
        ),
        _ => e,
    }
}

fn lost_error(name: &str, key: &str, what_then: &str) -> CliError {
    CliError::new(
        code::LOST,
        format!(
            "lock {name:?} lost (key {key:?} is gone: the session expired or the key was deleted){what_then}"
        ),
    )
}

/// Runs CMD under the lock; terminates it if the lock is lost.
async fn exec(
    ctx: &Ctx,
    args: &LockArgs,
    held: Held,
    session: &Session,
    signals: &mut Signals,
) -> Result<u8, CliError> {
    let key = held.key().to_owned();
    let namespace = ctx.options.namespace_prefix().unwrap_or("");
    let mut env = vec![
        ("COORD_LOCK_NAME", args.name.clone()),
        ("COORD_LOCK_KEY", key.clone()),
        ("COORD_FENCING_TOKEN", held.fencing_token().to_string()),
        ("COORD_LEASE_ID", format!("{:x}", session.lease())),
        ("ETCD_LOCK_KEY", format!("{namespace}{key}")),
        ("ETCD_LOCK_REV", held.fencing_token().to_string()),
    ];
    if let Some(permits) = args.permits {
        env.push(("COORD_PERMITS", permits.to_string()));
    }
    let lost = held.lost();
    let under = runner::Under {
        name: &args.name,
        key: &key,
        what: format!("lock {:?}", args.name),
        ended_event: "released",
    };
    runner::run_under(
        ctx,
        under,
        &args.command,
        &env,
        args.kill_after,
        lost,
        held.release(),
        session,
        signals,
        |then| lost_error(&args.name, &key, then),
    )
    .await
}
