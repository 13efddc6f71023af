//! Running CMD while a lock, permit or leadership is held: `coord lock NAME -- CMD` and
//! `coord elect NAME VALUE -- CMD` give CMD the same guarantees through this one runner.
//! CMD is terminated when the hold is lost, killed by a guardian if coord itself dies, gets
//! the signals coord receives, and the session counts the hold lost `--kill-after` early so
//! that CMD is dead before another process can take over.

use std::time::Duration;

use tokio::process::Child;

use coord::Session;
use serde_json::json;

use super::signals::{Signals, interrupted};
use super::{CliError, Ctx, close_lost, code, release_within};

/// How a CMD run under a hold ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// CMD exited by itself with this exit code (128+N when killed by signal N).
    Exited(u8),
    /// The hold was lost first; CMD was terminated (SIGTERM, SIGKILL after `kill_after`)
    /// and has exited.
    Lost,
}

/// What CMD runs under: the hold's name and key for the JSON events, how to say it in a
/// message (`lock "jobs"`), and the event that ends it normally (`released`, `resigned`).
pub(crate) struct Under<'a> {
    pub(crate) name: &'a str,
    pub(crate) key: &'a str,
    pub(crate) what: String,
    pub(crate) ended_event: &'static str,
}

/// Runs CMD under a hold (see [`run`]) and lets go of the hold afterwards, as `lock NAME --
/// CMD` and `elect NAME VALUE -- CMD` both do: when CMD exits, `release` (bounded by the
/// request timeout; a failure is a warning) and CMD's exit code; when the hold is lost,
/// `lost_error` (exit 5) after closing the session; when CMD cannot run, its error after
/// releasing.
///
/// # Errors
/// As [`run`], and `lost_error` when the hold is lost.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_under(
    ctx: &Ctx,
    under: Under<'_>,
    argv: &[String],
    env: &[(&str, String)],
    kill_after: Duration,
    lost: impl Future<Output = ()>,
    release: impl Future<Output = coord::Result<()>>,
    session: &Session,
    signals: &mut Signals,
    lost_error: impl FnOnce(&str) -> CliError,
) -> Result<u8, CliError> {
    let (name, key) = (under.name, under.key);
    let release = async {
        let released = release.await;
        let closed = session.close().await;
        released.and(closed)
    };
    match run(argv, env, kill_after, lost, signals).await {
        Ok(Ended::Exited(exit)) => {
            ctx.out
                .json(json!({"event": "exited", "name": name, "key": key, "exit_code": exit}));
            if let Err(e) = release_within(&under.what, session.ttl(), release).await {
                super::output::warn(ctx.out, e.message);
            }
            ctx.out
                .json(json!({"event": under.ended_event, "name": name, "key": key}));
            Ok(exit)
        }
        Ok(Ended::Lost) => {
            ctx.out
                .json(json!({"event": "lost", "name": name, "key": key}));
            close_lost(session).await;
            Err(lost_error(&format!("; terminated {:?}", argv[0])))
        }
        Err(e) => {
            let _ = release_within(&under.what, session.ttl(), release).await;
            Err(e)
        }
    }
}

/// Runs `argv` with `env` until it exits or `lost` resolves, passing on the signals coord
/// receives meanwhile. The caller lets go of the hold afterwards, whatever the outcome.
///
/// # Errors
/// Exit 127 when CMD is not found, 126 when it cannot be started, 1 when waiting for it
/// fails.
///
/// # Cancel safety
/// Not cancel safe: a dropped call kills CMD (`kill_on_drop`).
pub(crate) async fn run(
    argv: &[String],
    env: &[(&str, String)],
    kill_after: Duration,
    lost: impl Future<Output = ()>,
    signals: &mut Signals,
) -> Result<Ended, CliError> {
    let program = &argv[0];
    let mut command = tokio::process::Command::new(program);
    command
        .args(&argv[1..])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .kill_on_drop(true);
    // Started before CMD, so that no moment passes with CMD running and no guardian.
    let guardian = Guardian::start();
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                code::NOT_FOUND
            } else {
                code::CANNOT_EXECUTE
            };
            return Err(CliError::new(code, format!("cannot run {program:?}: {e}")));
        }
    };
    let guardian = child.id().map(|pid| guardian.watch(pid));
    let stand_down = move || guardian.map(Guardian::stand_down);
    tokio::pin!(lost);
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.map_err(|e| CliError::new(code::FAILURE, format!("waiting for {program:?}: {e}")))?;
                stand_down();
                return Ok(Ended::Exited(exit_code(status)));
            }
            _ = &mut lost => {
                terminate(&mut child, kill_after).await;
                stand_down();
                return Ok(Ended::Lost);
            }
            signo = signals.recv() => forward(&child, signo),
        }
    }
}

/// Refuses (exit 2) a `--ttl` / `--kill-after` pair whose [`margin`] the session would
/// refuse, saying what would fit. Checked before connecting, so nothing is left behind.
pub(crate) fn command_margin(ttl: Duration, kill_after: Duration) -> Result<Duration, CliError> {
    margin(ttl, kill_after).ok_or_else(|| {
        CliError::new(
            code::USAGE,
            format!(
                "--kill-after {} does not fit in the session TTL {} (--ttl): coord gives up \
                 the lock or leadership TTL/10 + kill-after before the lease can end, and that must stay \
                 below two thirds of the TTL; use --kill-after {} or less, or --ttl {} or more",
                flag(kill_after),
                flag(ttl),
                flag(max_kill_after(ttl)),
                flag(min_ttl(kill_after)),
            ),
        )
    })
}

/// The session's drift margin while CMD runs: the usual tenth of the TTL for clock drift,
/// plus CMD's SIGTERM grace. `lost()` then fires early enough that the SIGKILL after
/// `kill_after` still lands while the lease is ours, before anybody else can acquire; with
/// the default margin alone a CMD ignoring SIGTERM outlives the lease.
///
/// `None` when the session would refuse it: the margin must stay below two thirds of the
/// TTL (`SessionBuilder::start`'s rule, in its arithmetic), so that the keep-alive, every
/// third of the TTL, renews the lease before `lost()` fires.
fn margin(ttl: Duration, kill_after: Duration) -> Option<Duration> {
    let margin = kill_after.checked_add(ttl / 10)?;
    (margin.checked_mul(3)? < ttl.checked_mul(2)?).then_some(margin)
}

/// The largest whole-millisecond `--kill-after` that fits `ttl`.
fn max_kill_after(ttl: Duration) -> Duration {
    let limit = ttl.as_nanos() * 2 - (ttl / 10).as_nanos() * 3;
    let ms = u64::try_from((limit - 1) / 3 / 1_000_000).unwrap_or(u64::MAX);
    Duration::from_millis(ms)
}

/// The smallest whole-second TTL (etcd grants whole seconds) that `kill_after` fits.
fn min_ttl(kill_after: Duration) -> Duration {
    // kill_after < 2/3 ttl - ttl/10 = 17/30 ttl; start just below and step up to be exact.
    let secs = kill_after.as_nanos() * 30 / 17 / 1_000_000_000;
    let mut ttl = Duration::from_secs(u64::try_from(secs).unwrap_or(u64::MAX));
    while margin(ttl, kill_after).is_none() {
        match ttl.checked_add(Duration::from_secs(1)) {
            Some(next) => ttl = next,
            None => break,
        }
    }
    ttl
}

/// A duration as it can be typed back as one argument: `4s`, `1133ms`.
fn flag(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        humantime::format_duration(d).to_string().replace(' ', "")
    }
}

/// Kills CMD (SIGKILL) if coord dies without saying so: killed by SIGKILL or the OOM
/// killer, coord cannot terminate CMD itself, and CMD would go on running without the lock,
/// which another process takes once the lease ends. A small `sh` waits on a pipe that only
/// coord holds: coord writes CMD's PID as soon as CMD is spawned, and `done` once CMD has
/// exited, while a coord that dies just closes it, and then the guardian kills CMD. The
/// guardian is started before CMD: started after, a coord killed in between (a load spike
/// makes that window long) left CMD running unguarded. It runs in its own process group
/// and ignores the terminal's signals, so a Ctrl-C meant for coord and CMD does not end
/// it. It reaches CMD's own process only, not processes CMD starts (a shell pipeline's
/// members): `exec` the last command of a shell CMD so that it is that process.
struct Guardian(Option<std::process::ChildStdin>);

impl Guardian {
    fn start() -> Guardian {
        use std::os::unix::process::CommandExt as _;
        let spawned = std::process::Command::new("sh")
            .args([
                "-c",
                "trap '' INT TERM HUP QUIT; read cmd || exit 0; read said; [ \"$said\" = done ] || kill -KILL \"$cmd\" 2>/dev/null",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn();
        match spawned {
            Ok(mut guardian) => Guardian(guardian.stdin.take()),
            Err(e) => {
                eprintln!(
                    "coord: warning: cannot start the guardian that kills CMD if coord is killed: {e}"
                );
                Guardian(None)
            }
        }
    }

    /// Tells the guardian CMD's PID: from now on it kills CMD if coord dies.
    fn watch(mut self, cmd: u32) -> Guardian {
        use std::io::Write as _;
        if let Some(pipe) = &mut self.0 {
            let _ = writeln!(pipe, "{cmd}");
        }
        self
    }

    /// CMD has exited: the guardian stands down (its PID may be reused from now on).
    fn stand_down(mut self) {
        if let Some(mut pipe) = self.0.take() {
            use std::io::Write as _;
            let _ = pipe.write_all(b"done\n");
        }
    }
}

/// The exit code of a finished child, 128+N when killed by signal N.
fn exit_code(status: std::process::ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        return (code & 0xff) as u8;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signo) = status.signal() {
            return interrupted(signo);
        }
    }
    code::FAILURE
}

/// Passes a signal coord received on to the child.
fn forward(child: &Child, signo: i32) {
    #[cfg(unix)]
    if let (Some(pid), Ok(signal)) = (child.id(), nix::sys::signal::Signal::try_from(signo)) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
    }
    #[cfg(not(unix))]
    let _ = (child, signo);
}

/// SIGTERM, then SIGKILL after `grace`.
async fn terminate(child: &mut Child, grace: Duration) {
    #[cfg(unix)]
    if child.id().is_some() {
        forward(child, nix::sys::signal::Signal::SIGTERM as i32);
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            return;
        }
    }
    #[cfg(not(unix))]
    let _ = grace;
    let _ = child.start_kill();
    let _ = child.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn margin_adds_the_kill_grace_to_a_tenth_of_the_ttl() {
        let ttl = Duration::from_secs(2);
        assert_eq!(margin(ttl, Duration::from_secs(1)), Some(1200 * MS));
        assert_eq!(margin(ttl, Duration::from_secs(2)), None);
        assert_eq!(margin(Duration::from_secs(1), Duration::from_secs(1)), None);
    }

    #[test]
    fn suggested_kill_after_is_the_largest_that_fits() {
        for ttl in [1, 2, 3, 10, 60]
            .map(Duration::from_secs)
            .into_iter()
            .chain([1500 * MS])
        {
            let k = max_kill_after(ttl);
            assert!(margin(ttl, k).is_some(), "{ttl:?}: {k:?}");
            assert!(margin(ttl, k + MS).is_none(), "{ttl:?}: {k:?}");
        }
        assert_eq!(max_kill_after(Duration::from_secs(2)), 1133 * MS);
    }

    #[test]
    fn suggested_ttl_is_the_smallest_whole_second_that_fits() {
        for kill_after in [1, 500, 1000, 1133, 1134, 2000, 17_000].map(|ms| ms * MS) {
            let ttl = min_ttl(kill_after);
            assert_eq!(ttl.subsec_nanos(), 0);
            assert!(margin(ttl, kill_after).is_some(), "{kill_after:?}: {ttl:?}");
            let less = ttl.saturating_sub(Duration::from_secs(1));
            assert!(
                less.is_zero() || margin(less, kill_after).is_none(),
                "{kill_after:?}: {ttl:?}"
            );
        }
        assert_eq!(min_ttl(Duration::from_secs(2)), Duration::from_secs(4));
    }

    #[test]
    fn refusal_names_both_values_and_what_fits() {
        let e = command_margin(Duration::from_secs(2), Duration::from_secs(2)).unwrap_err();
        assert_eq!(e.code, code::USAGE);
        for part in [
            "--kill-after 2s",
            "TTL 2s",
            "--kill-after 1133ms or less",
            "--ttl 4s or more",
        ] {
            assert!(e.message.contains(part), "{part:?} in {}", e.message);
        }
    }

    #[test]
    fn absurd_durations_are_refused_not_overflowed() {
        let huge = Duration::MAX;
        assert_eq!(margin(Duration::from_secs(2), huge), None);
        assert!(command_margin(Duration::from_secs(2), huge).is_err());
        assert!(command_margin(huge, huge).is_err());
    }
}
