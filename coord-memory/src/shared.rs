//! `memory://NAME`: process-wide stores found by name.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use async_trait::async_trait;
use coord_core::Result;
use coord_core::backend_url::{self, Query, Url, UrlOptions, invalid};

use crate::store::DEFAULT_HISTORY_REVISIONS;
use crate::{LeaseRules, MemoryBackend};

/// The name of the store `memory://` (without a name) reaches.
pub const DEFAULT_STORE: &str = "default";

impl MemoryBackend {
    /// A new client of the process-wide store named `name`, made on first use: every call
    /// with the same name, anywhere in the process, reaches the same store. This is what a
    /// `memory://NAME` URL names. The stores live as long as the process.
    pub fn shared(name: &str) -> MemoryBackend {
        static STORES: OnceLock<Mutex<HashMap<String, MemoryBackend>>> = OnceLock::new();
        let mut stores = STORES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        stores.entry(name.to_owned()).or_default().new_client()
    }

    /// A new client of the store a `memory://[NAME]` URL names (see [`MemoryOptions`]).
    ///
    /// # Errors
    /// As [`MemoryOptions::from_url`].
    pub fn from_url(url: &Url) -> Result<MemoryBackend> {
        Ok(MemoryOptions::from_url(url)?.client())
    }
}

/// What a `memory://[NAME][?history=N|all][&min_ttl=DURATION]` URL names: one of the process-wide stores of
/// [`MemoryBackend::shared`], [`DEFAULT_STORE`] when the URL gives no name. The name is
/// percent-decoded and case-sensitive.
///
/// `history` bounds the history the store keeps for watches that start in the past: the
/// last `N` revisions (older starts get [`Error::Compacted`](coord_core::Error::Compacted),
/// as after an explicit compaction), or `all` for no bound. Without it a new store keeps
/// [`DEFAULT_HISTORY_REVISIONS`] revisions and an existing store keeps its setting; with it
/// the setting applies to the whole store, for every client (as
/// [`MemoryBackend::set_history_retention`] does).
///
/// `min_ttl` opts the store out of etcd's lease rules (TTLs in whole seconds, at least
/// 2 s): leases are then granted in milliseconds, at least `min_ttl` ([`LeaseRules::fine`]),
/// for tests on real time that want short leases. No server grants such leases, so a test
/// that relies on them does not carry over to etcd. Like `history`, it applies to the
/// whole store.
///
/// ```
/// use coord_core::UrlOptions;
/// use coord_memory::{DEFAULT_HISTORY_REVISIONS, MemoryOptions};
///
/// let options = MemoryOptions::parse_url("memory://my%20tests").unwrap();
/// assert_eq!(options.store(), "my tests");
/// assert_eq!(options.history(), Some(DEFAULT_HISTORY_REVISIONS));
/// assert!(options.client().same_store(&MemoryOptions::parse_url("memory://my%20tests").unwrap().client()));
/// assert!(MemoryOptions::parse_url("memory://u:secret@x").is_err());
///
/// let options = MemoryOptions::parse_url("memory://bench?history=100").unwrap();
/// assert_eq!(options.history(), Some(100));
/// assert_eq!(options.client().history_retention(), Some(100));
/// let everything = MemoryOptions::new("audit").history_retention(None);
/// assert_eq!(everything.redacted_url(), "memory://audit?history=all");
///
/// let short = MemoryOptions::parse_url("memory://short-leases?min_ttl=50ms").unwrap();
/// assert_eq!(short.redacted_url(), "memory://short-leases?min_ttl=50ms");
/// assert_eq!(short.client().lease_rules(), coord_memory::LeaseRules::fine(std::time::Duration::from_millis(50)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryOptions {
    store: String,
    /// `None`: not given (a new store gets the default, an existing one keeps its own).
    history: Option<Option<u64>>,
    /// `None`: not given (a new store gets etcd's rules, an existing one keeps its own).
    lease_rules: Option<LeaseRules>,
}

impl Default for MemoryOptions {
    /// The [`DEFAULT_STORE`], with the default history bound.
    fn default() -> Self {
        MemoryOptions::new(DEFAULT_STORE)
    }
}

impl MemoryOptions {
    /// The options of the process-wide store named `store`, with the default history bound.
    pub fn new(store: impl Into<String>) -> Self {
        MemoryOptions {
            store: store.into(),
            history: None,
            lease_rules: None,
        }
    }

    /// Grants leases by `rules` instead of etcd's (see [`LeaseRules`]). Applies to the
    /// whole store when a client is made.
    #[must_use]
    pub fn lease_rules(mut self, rules: LeaseRules) -> Self {
        self.lease_rules = Some(rules);
        self
    }

    /// Keeps history for the last `revisions` revisions (`Some(0)` counts as 1), or all of
    /// it since the last explicit compaction (`None`, as etcd without auto-compaction).
    /// Applies to the whole store when a client is made.
    #[must_use]
    pub fn history_retention(mut self, revisions: Option<u64>) -> Self {
        self.history = Some(revisions);
        self
    }

    /// Parses a `memory://[NAME][?history=N|all][&min_ttl=DURATION]` URL.
    ///
    /// # Errors
    /// [`coord_core::Error::InvalidArgument`] for another scheme, credentials, a port, a
    /// path, a query parameter other than `history` and `min_ttl`, a `history` that is
    /// neither a positive number nor `all`, a `min_ttl` that is not a positive duration, or
    /// bad percent-encoding in the name.
    pub fn from_url(url: &Url) -> Result<MemoryOptions> {
        if url.scheme() != "memory" {
            return Err(invalid(format!(
                "not a memory:// URL (scheme {:?})",
                url.scheme()
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid("memory:// takes no credentials"));
        }
        if url.port().is_some() {
            return Err(invalid("memory:// takes a store name, not a port"));
        }
        if !matches!(url.path(), "" | "/") {
            return Err(invalid(format!(
                "memory:// takes a store name, not a path (got {:?})",
                url.path()
            )));
        }
        let mut query = Query::of(url)?;
        let history = query
            .take("history")?
            .map(|value| parse_history(&value))
            .transpose()?;
        let lease_rules = query
            .take("min_ttl")?
            .map(|value| parse_min_ttl(&value))
            .transpose()?;
        query.finish("memory", Self::QUERY_PARAMETERS)?;
        let store = match url.host_str().unwrap_or_default() {
            "" => DEFAULT_STORE.to_owned(),
            name => backend_url::decode(name, "memory store name")?,
        };
        Ok(MemoryOptions {
            store,
            history,
            lease_rules,
        })
    }

    /// The store's name.
    pub fn store(&self) -> &str {
        &self.store
    }

    /// The history bound these options ask for, in revisions (`None`: unbounded), the
    /// default ([`DEFAULT_HISTORY_REVISIONS`]) when not given.
    pub fn history(&self) -> Option<u64> {
        self.history.unwrap_or(Some(DEFAULT_HISTORY_REVISIONS))
    }

    /// A new client of the store (made on first use), with the history bound applied to
    /// the store when these options give one.
    pub fn client(&self) -> MemoryBackend {
        let client = MemoryBackend::shared(&self.store);
        if let Some(history) = self.history {
            client.set_history_retention(history);
        }
        if let Some(rules) = self.lease_rules {
            client.set_lease_rules(rules);
        }
        client
    }
}

/// `min_ttl=DURATION`: millisecond leases of at least that.
fn parse_min_ttl(value: &str) -> Result<LeaseRules> {
    match backend_url::parse_duration(value) {
        Ok(d) if !d.is_zero() => Ok(LeaseRules::fine(d)),
        Ok(_) => Err(invalid(
            "query parameter `min_ttl` must be a positive duration, got 0",
        )),
        Err(e) => Err(invalid(format!("query parameter `min_ttl`: {e}"))),
    }
}

/// `history=N` (a positive number of revisions) or `history=all`.
fn parse_history(value: &str) -> Result<Option<u64>> {
    if value.eq_ignore_ascii_case("all") {
        return Ok(None);
    }
    match value.parse::<u64>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(invalid(format!(
            "query parameter `history` must be a positive number of revisions or `all`, got {value:?}"
        ))),
    }
}

#[async_trait]
impl UrlOptions for MemoryOptions {
    type Backend = MemoryBackend;
    const URL_FORMS: &'static [&'static str] = &["memory://[STORE]"];
    const QUERY_PARAMETERS: &'static [&'static str] = &["history", "min_ttl"];

    fn parse_url(url: &str) -> Result<Self> {
        MemoryOptions::from_url(&backend_url::parse(url)?)
    }

    fn redacted_url(&self) -> String {
        let base = match self.store.as_str() {
            DEFAULT_STORE => "memory://".to_owned(),
            name => format!("memory://{}", backend_url::encode(name)),
        };
        let mut query: Vec<(&str, String)> = match self.history {
            None => Vec::new(),
            Some(None) => vec![("history", "all".to_owned())],
            Some(Some(n)) => vec![("history", n.to_string())],
        };
        if let Some(rules) = self.lease_rules {
            query.push(("min_ttl", format!("{}ms", rules.min_ttl.as_millis())));
        }
        backend_url::join_url(&base, &query)
    }

    async fn connect(&self) -> Result<MemoryBackend> {
        Ok(self.client())
    }
}

#[cfg(test)]
mod tests {
    use coord_core::Error;

    use super::*;

    fn err(url: &str) -> String {
        match MemoryOptions::parse_url(url) {
            Ok(o) => panic!("{url} parsed: {o:?}"),
            Err(e) => {
                assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
                e.to_string()
            }
        }
    }

    #[test]
    fn a_url_names_a_store_default_when_it_gives_none() {
        for (url, store, redacted) in [
            ("memory://", "default", "memory://"),
            ("memory:///", "default", "memory://"),
            ("MEMORY://tests", "tests", "memory://tests"),
            ("memory://My_Store", "My_Store", "memory://My_Store"),
            ("memory://a%20b", "a b", "memory://a%20b"),
        ] {
            let o = MemoryOptions::parse_url(url).unwrap();
            assert_eq!(
                (o.store(), o.redacted_url().as_str()),
                (store, redacted),
                "{url}"
            );
        }
    }

    #[test]
    fn clients_of_one_name_share_a_store_and_other_names_do_not() {
        let a = MemoryBackend::shared("shared-test");
        let b = MemoryBackend::from_url(&Url::parse("memory://shared-test").unwrap()).unwrap();
        assert!(a.same_store(&b));
        assert_ne!(a.client_id(), b.client_id());
        assert!(!a.same_store(&MemoryBackend::shared("shared-test-2")));
    }

    #[test]
    fn history_is_a_bound_in_revisions_or_all_and_round_trips() {
        for (url, history, redacted) in [
            ("memory://h", Some(DEFAULT_HISTORY_REVISIONS), "memory://h"),
            ("memory://h?history=5", Some(5), "memory://h?history=5"),
            ("memory://?history=ALL", None, "memory://?history=all"),
        ] {
            let o = MemoryOptions::parse_url(url).unwrap();
            assert_eq!(
                (o.history(), o.redacted_url().as_str()),
                (history, redacted)
            );
            assert_eq!(MemoryOptions::parse_url(redacted).unwrap(), o, "{url}");
        }
    }

    #[test]
    fn a_history_bound_applies_to_the_whole_store_and_its_absence_keeps_it() {
        let first = MemoryOptions::new("history-test").client();
        assert_eq!(first.history_retention(), Some(DEFAULT_HISTORY_REVISIONS));
        let bounded = MemoryOptions::parse_url("memory://history-test?history=7")
            .unwrap()
            .client();
        assert_eq!(first.history_retention(), Some(7));
        assert!(bounded.same_store(&first));
        MemoryOptions::new("history-test").client();
        assert_eq!(first.history_retention(), Some(7), "not given: kept");
        MemoryOptions::new("history-test")
            .history_retention(None)
            .client();
        assert_eq!(first.history_retention(), None);
    }

    #[test]
    fn anything_but_a_name_is_refused() {
        assert!(err("memory://x/y").contains("not a path"));
        assert!(err("memory://x:1").contains("not a port"));
        assert!(err("memory://a%zz").contains("percent-encoding"));
        assert!(err("etcd://x").contains("not a memory:// URL"));
        assert!(err("memory://x#y").contains("fragment"));
        let e = err("memory://?colour=blue");
        assert!(e.contains("unknown query parameter `colour`"), "{e}");
        assert!(e.contains("it takes history"), "{e}");
        assert!(err("memory://x?min_ttl=0").contains("positive duration"));
        assert!(err("memory://x?min_ttl=soon").contains("min_ttl"));
        for bad in ["0", "-1", "lots", "1.5"] {
            let e = err(&format!("memory://x?history={bad}"));
            assert!(e.contains("positive number of revisions or `all`"), "{e}");
        }
        assert!(err("memory://x?history=").contains("needs a value"));
        let e = err("memory://u:hunter2@x");
        assert!(e.contains("credentials") && !e.contains("hunter2"), "{e}");
    }
}
