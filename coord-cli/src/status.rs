//! `coord status NAME [--kind K] [--permits N] [--watch]`: who holds a lock, read/write lock,
//! semaphore or election, and who waits, in order.

use std::collections::HashMap;
use std::time::Duration;

use clap::{Args, ValueEnum};
use coord::{
    CoordinationBackend, Error, EventKind, LeaseState, NameStatus, Participant, PrimitiveKind,
    Revision, RwMode, WatchRequest,
};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::output::{json_bytes, printable};
use super::signals::Signals;
use super::{CliError, Ctx, Out, code};

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The name of the lock, read/write lock, semaphore or election (its keys are
    /// NAME/<lease id in hex>, or NAME/read/… and NAME/write/… for a read/write lock).
    #[arg(value_parser = parse_status_name)]
    name: String,

    /// How to read the keys. Default: guessed from them: rw when only NAME/read/ and
    /// NAME/write/ keys are there, election when a key has a value (a proposal), else lock.
    /// A semaphore looks like a lock: give --permits.
    #[arg(long, value_enum)]
    kind: Option<KindArg>,

    /// A semaphore of N permits (implies --kind semaphore): the N oldest keys hold.
    #[arg(long, short = 'n', value_name = "N", value_parser = super::lock::parse_permits)]
    permits: Option<usize>,

    /// Keep watching: print the status again on every change of holders or waiters, until
    /// SIGINT/SIGTERM (exit 0). "held for" is then measured from when this watch first saw
    /// the holder: no backend records when a key was created.
    #[arg(long)]
    watch: bool,
}

/// `--kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum KindArg {
    /// A lock (`coord lock`, `etcdctl lock`): the oldest key holds.
    Lock,
    /// A read/write lock (`coord lock --read/--write`).
    Rw,
    /// A semaphore (`coord lock --permits N`); needs --permits.
    Semaphore,
    /// An election (`coord elect`, `etcdctl elect`): the oldest key leads.
    Election,
}

/// A name whose keys can be looked at: not empty, not ending with `/`, no control
/// characters.
pub(crate) fn parse_status_name(s: &str) -> Result<String, String> {
    let name = super::parse_name(s)?;
    if name.is_empty() {
        return Err(
            "the name is empty: give the name of a lock, rw lock, semaphore or \
                    election"
                .into(),
        );
    }
    if name.ends_with('/') {
        return Err(format!(
            "{name:?} ends with '/': give the name without it (its keys are NAME/<lease id \
             in hex>)"
        ));
    }
    Ok(name)
}

impl StatusArgs {
    fn kind(&self) -> Result<Option<PrimitiveKind>, CliError> {
        let usage = |m: &str| Err(CliError::new(code::USAGE, m));
        Ok(match (self.kind, self.permits) {
            (None | Some(KindArg::Semaphore), Some(permits)) => {
                Some(PrimitiveKind::Semaphore { permits })
            }
            (Some(KindArg::Semaphore), None) => {
                return usage("--kind semaphore needs --permits N (the semaphore's permits)");
            }
            (Some(_), Some(_)) => {
                return usage(
                    "--permits is for a semaphore only; drop --kind or use --kind semaphore",
                );
            }
            (Some(KindArg::Lock), None) => Some(PrimitiveKind::Lock),
            (Some(KindArg::Rw), None) => Some(PrimitiveKind::RwLock),
            (Some(KindArg::Election), None) => Some(PrimitiveKind::Election),
            (None, None) => None,
        })
    }
}

pub(crate) async fn run(ctx: &Ctx, args: StatusArgs) -> Result<u8, CliError> {
    let kind = args.kind()?;
    let mut signals = if args.watch {
        Some(Signals::install()?)
    } else {
        None
    };
    let conn = ctx.connect().await?;
    let backend = conn.backend().as_ref();
    let status = coord::inspect(backend, &args.name, kind).await?;
    let Some(signals) = signals.as_mut() else {
        // A reader that went away has nothing left to miss.
        let _ = print(ctx.out, &status, None);
        return Ok(code::OK);
    };
    watch(ctx.out, backend, &args.name, kind, status, signals).await
}

/// Prints the status, then again after every change of the name's keys that changes who
/// holds or waits (or an election's proposals), until a signal.
async fn watch(
    out: Out,
    backend: &dyn CoordinationBackend,
    name: &str,
    kind: Option<PrimitiveKind>,
    mut status: NameStatus,
    signals: &mut Signals,
) -> Result<u8, CliError> {
    let mut seen = Seen::default();
    seen.update(&status, true);
    if print(out, &status, Some(&seen)).is_err() {
        return Ok(code::BROKEN_PIPE);
    }
    // The kind guessed first stays: a lock that empties and fills again is still a lock.
    let kind = Some(kind.unwrap_or(status.kind));
    loop {
        let from = status.revision + 1;
        let mut events = tokio::select! {
            _ = signals.recv() => return Ok(code::OK),
            w = backend.watch(WatchRequest::prefix(format!("{name}/")).from_revision(from)) => w?,
        };
        loop {
            let next = tokio::select! {
                _ = signals.recv() => return Ok(code::OK),
                next = events.next() => next,
            };
            match next {
                Some(Ok(resp)) => {
                    if !resp.events.iter().any(|e| matters(e.kind)) {
                        continue;
                    }
                    let now = tokio::select! {
                        _ = signals.recv() => return Ok(code::OK),
                        s = coord::inspect(backend, name, kind) => s?,
                    };
                    let changed = !same_participants(&status, &now);
                    status = now;
                    if changed {
                        seen.update(&status, false);
                        if print(out, &status, Some(&seen)).is_err() {
                            return Ok(code::BROKEN_PIPE);
                        }
                    }
                }
                // Resume from the last status read: a compacted start is read afresh.
                Some(Err(Error::Compacted { .. })) => {
                    status = coord::inspect(backend, name, kind).await?;
                    break;
                }
                Some(Err(e)) if e.is_retryable() => break,
                Some(Err(e)) => return Err(e.into()),
                None => break,
            }
        }
        // A watch that keeps ending at once must not spin: watch again a moment later.
        tokio::select! {
            _ = signals.recv() => return Ok(code::OK),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

fn matters(kind: EventKind) -> bool {
    matches!(kind, EventKind::Put | EventKind::Delete)
}

/// Whether the same keys (incarnations) hold and wait, with the same values.
fn same_participants(a: &NameStatus, b: &NameStatus) -> bool {
    let ids = |s: &NameStatus| -> Vec<(Vec<u8>, Revision, Vec<u8>, bool)> {
        let holders = s.holders.iter().map(|p| (p, true));
        let waiters = s.waiters.iter().map(|p| (p, false));
        holders
            .chain(waiters)
            .map(|(p, h)| (p.kv.key.clone(), p.fencing_token(), p.kv.value.clone(), h))
            .collect()
    };
    ids(a) == ids(b)
}

/// When a watch first saw each key incarnation hold, or wait.
#[derive(Default)]
struct Seen {
    /// (key, create revision, holding) -> first seen, and whether in the first read (so
    /// it began earlier).
    first: HashMap<(Vec<u8>, Revision, bool), (Instant, bool)>,
}

impl Seen {
    fn update(&mut self, status: &NameStatus, initial: bool) {
        let now = Instant::now();
        let mut live = HashMap::new();
        let all = status
            .holders
            .iter()
            .map(|p| (p, true))
            .chain(status.waiters.iter().map(|p| (p, false)));
        for (p, holding) in all {
            let id = (p.kv.key.clone(), p.fencing_token(), holding);
            let first = self.first.get(&id).copied().unwrap_or((now, initial));
            live.insert(id, first);
        }
        self.first = live;
    }

    /// How long `p` has held (or waited), and whether it began before the watch did.
    fn since(&self, p: &Participant, holding: bool) -> Option<(Duration, bool)> {
        let id = (p.kv.key.clone(), p.fencing_token(), holding);
        self.first
            .get(&id)
            .map(|(at, before)| (at.elapsed(), *before))
    }
}

fn print(out: Out, status: &NameStatus, seen: Option<&Seen>) -> std::io::Result<()> {
    out.emit_or_closed(text(status, seen), to_json(status, seen))
}

fn kind_words(status: &NameStatus) -> (&'static str, &'static str) {
    match status.kind {
        PrimitiveKind::Election => ("leader", "candidate"),
        _ => ("holder", "waiter"),
    }
}

fn text(status: &NameStatus, seen: Option<&Seen>) -> String {
    let name = printable(status.name.as_bytes());
    let head = match (&status.kind, status.is_free()) {
        (PrimitiveKind::Election, true) => format!("election {name}: no leader"),
        (PrimitiveKind::Election, false) => format!(
            "election {name}: led, {} candidate(s) waiting",
            status.waiters.len()
        ),
        (PrimitiveKind::Semaphore { permits }, _) => format!(
            "semaphore {name} ({permits} permits): {} held, {} waiting",
            status.holders.len(),
            status.waiters.len()
        ),
        (kind, true) => format!("{} {name}: free", kind.as_str()),
        (kind, false) => format!(
            "{} {name}: held, {} waiting",
            kind.as_str(),
            status.waiters.len()
        ),
    };
    let mut lines = vec![format!("{head} (revision {})", status.revision)];
    let (holder, waiter) = kind_words(status);
    let election = status.kind == PrimitiveKind::Election;
    for p in &status.holders {
        let role = match p.mode {
            Some(RwMode::Read) => "reader",
            Some(RwMode::Write) => "writer",
            None => holder,
        };
        lines.push(format!(
            "  {role:<9} {}",
            entry_text(p, seen, true, election)
        ));
    }
    for (i, p) in status.waiters.iter().enumerate() {
        let role = match p.mode {
            Some(RwMode::Read) => format!("{waiter} {} (read)", i + 1),
            Some(RwMode::Write) => format!("{waiter} {} (write)", i + 1),
            None => format!("{waiter} {}", i + 1),
        };
        lines.push(format!(
            "  {role:<9} {}",
            entry_text(p, seen, false, election)
        ));
    }
    lines.join("\n")
}

fn secs(d: Duration) -> String {
    let tenths = d.as_millis().div_ceil(100);
    if tenths.is_multiple_of(10) {
        format!("{}s", tenths / 10)
    } else {
        format!("{}.{}s", tenths / 10, tenths % 10)
    }
}

fn entry_text(p: &Participant, seen: Option<&Seen>, holding: bool, election: bool) -> String {
    let lease = match (p.lease_id(), p.lease) {
        (None, _) => "no lease (stays until deleted)".to_owned(),
        (Some(id), LeaseState::Live { granted, remaining }) => {
            format!(
                "lease {id:x}, {} of {} left",
                secs(remaining),
                secs(granted)
            )
        }
        (Some(id), LeaseState::Gone) => format!("lease {id:x}, ended (key about to go)"),
        (Some(id), _) => format!("lease {id:x}"),
    };
    let mut s = format!(
        "{}  token {}  {lease}  since revision {}",
        printable(&p.kv.key),
        p.fencing_token(),
        p.fencing_token()
    );
    if let Some((d, before)) = seen.and_then(|s| s.since(p, holding)) {
        let what = if holding { "held" } else { "waiting" };
        let at_least = if before { "at least " } else { "" };
        s.push_str(&format!(", {what} for {at_least}{}", secs(d)));
    }
    if election {
        s.push_str(&format!("  proposal {}", printable(p.value())));
    }
    s
}

fn to_json(status: &NameStatus, seen: Option<&Seen>) -> Value {
    let mut j = json!({
        "name": status.name,
        "kind": status.kind.as_str(),
        "revision": status.revision,
        "state": if status.is_free() { "free" } else { "held" },
        "holders": status.holders.iter().map(|p| entry_json(status, p, seen, true)).collect::<Vec<_>>(),
        "waiters": status.waiters.iter().map(|p| entry_json(status, p, seen, false)).collect::<Vec<_>>(),
    });
    if let PrimitiveKind::Semaphore { permits } = status.kind {
        j["permits"] = json!(permits);
    }
    j
}

fn entry_json(status: &NameStatus, p: &Participant, seen: Option<&Seen>, holding: bool) -> Value {
    let mut j = json!({
        "fencing_token": p.fencing_token(),
        "since_revision": p.fencing_token(),
        "lease": p.lease_id().map(|id| format!("{id:x}")),
    });
    json_bytes(&mut j, "key", &p.kv.key);
    match p.lease {
        LeaseState::Live { granted, remaining } => {
            j["lease_state"] = json!("live");
            j["ttl_remaining_ms"] = json!(remaining.as_millis() as u64);
            j["ttl_granted_ms"] = json!(granted.as_millis() as u64);
        }
        LeaseState::NoLease => j["lease_state"] = json!("none"),
        LeaseState::Gone => j["lease_state"] = json!("ended"),
        LeaseState::Unknown => j["lease_state"] = json!("unknown"),
    }
    if let Some(mode) = p.mode {
        j["mode"] = json!(if mode == RwMode::Read {
            "read"
        } else {
            "write"
        });
    }
    if status.kind == PrimitiveKind::Election {
        json_bytes(&mut j, "proposal", p.value());
    }
    if let Some((d, before)) = seen.and_then(|s| s.since(p, holding)) {
        let field = if holding {
            "held_for_ms"
        } else {
            "waiting_for_ms"
        };
        j[field] = json!(d.as_millis() as u64);
        j["began_before_watch"] = json!(before);
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_that_are_empty_or_end_with_a_slash_are_refused() {
        assert!(parse_status_name("").is_err());
        assert!(
            parse_status_name("a/")
                .unwrap_err()
                .contains("ends with '/'")
        );
        assert_eq!(parse_status_name("a/b").unwrap(), "a/b");
    }

    #[test]
    fn seconds_are_shown_to_a_tenth_rounded_up() {
        assert_eq!(secs(Duration::from_secs(10)), "10s");
        assert_eq!(secs(Duration::from_millis(9_040)), "9.1s");
        assert_eq!(secs(Duration::ZERO), "0s");
    }
}
