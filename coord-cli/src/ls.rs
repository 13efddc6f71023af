//! `coord ls [PREFIX]`: the locks, read/write locks, semaphores and elections under a prefix
//! that have holders or waiters.

use std::collections::BTreeMap;

use clap::Args;
use coord::{KeyValue, NO_LEASE, NameStatus, RangeRequest};
use serde_json::json;

use super::output::printable;
use super::{CliError, Ctx, code};

#[derive(Debug, Args)]
pub(crate) struct LsArgs {
    /// Only names whose keys start with this (default: every key of the backend, within
    /// the namespace).
    #[arg(value_parser = super::parse_name, default_value = "")]
    prefix: String,
}

/// The name a key on a lease belongs to: the part before its last `/<id>` (a lease id in
/// hex, or Go's recipe key: digits), without a read/write lock's `/read` or `/write`.
fn name_of(key: &[u8]) -> Option<&[u8]> {
    let slash = key.iter().rposition(|&b| b == b'/')?;
    let (name, id) = (&key[..slash], &key[slash + 1..]);
    if name.is_empty() || id.is_empty() || !id.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let name = name
        .strip_suffix(b"/read")
        .or_else(|| name.strip_suffix(b"/write"))
        .filter(|n| !n.is_empty())
        .unwrap_or(name);
    Some(name)
}

/// Groups the keys on a lease under their names.
fn group(kvs: &[KeyValue]) -> BTreeMap<Vec<u8>, Vec<KeyValue>> {
    let mut names: BTreeMap<Vec<u8>, Vec<KeyValue>> = BTreeMap::new();
    for kv in kvs.iter().filter(|kv| kv.lease != NO_LEASE) {
        if let Some(name) = name_of(&kv.key) {
            names.entry(name.to_vec()).or_default().push(kv.clone());
        }
    }
    names
}

pub(crate) async fn run(ctx: &Ctx, args: LsArgs) -> Result<u8, CliError> {
    let conn = ctx.connect().await?;
    let read = conn
        .backend()
        .range(RangeRequest::prefix(args.prefix.as_str()))
        .await?;
    for (name, kvs) in group(&read.kvs) {
        // A name that is not UTF-8 cannot be given to `coord status`; skip it.
        let Ok(name) = String::from_utf8(name) else {
            continue;
        };
        let Ok(status) = NameStatus::from_keys(&name, None, read.revision, &kvs) else {
            continue;
        };
        if status.is_free() {
            continue;
        }
        let kind = status.kind.as_str();
        let (held, waiting) = (status.holders.len(), status.waiters.len());
        ctx.out.emit(
            format!(
                "{}  {kind}  {held} held  {waiting} waiting",
                printable(name.as_bytes())
            ),
            json!({
                "name": name,
                "kind": kind,
                "holders": held,
                "waiters": waiting,
                "revision": read.revision,
            }),
        );
    }
    Ok(code::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_group_under_the_part_before_the_last_hex_segment() {
        assert_eq!(
            name_of(b"jobs/nightly/694d8225"),
            Some(&b"jobs/nightly"[..])
        );
        assert_eq!(name_of(b"rw/read/694d8225"), Some(&b"rw"[..]));
        assert_eq!(name_of(b"rw/write/1"), Some(&b"rw"[..]));
        assert_eq!(name_of(b"read/1"), Some(&b"read"[..]));
        assert_eq!(name_of(b"config/port"), None);
        assert_eq!(name_of(b"toplevel"), None);
        assert_eq!(name_of(b"/1"), None);
    }
}
