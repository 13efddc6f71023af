//! `memory://NAME`: process-wide stores found by name.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use async_trait::async_trait;
use coord_core::Result;
use coord_core::backend_url::{self, Query, Url, UrlOptions, invalid};

use crate::MemoryBackend;

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

/// What a `memory://[NAME]` URL names: one of the process-wide stores of
/// [`MemoryBackend::shared`], [`DEFAULT_STORE`] when the URL gives no name. The name is
/// percent-decoded and case-sensitive.
///
/// ```
/// use coord_core::UrlOptions;
/// use coord_memory::MemoryOptions;
///
/// let options = MemoryOptions::parse_url("memory://my%20tests").unwrap();
/// assert_eq!(options.store(), "my tests");
/// assert!(options.client().same_store(&MemoryOptions::parse_url("memory://my%20tests").unwrap().client()));
/// assert!(MemoryOptions::parse_url("memory://u:secret@x").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryOptions {
    store: String,
}

impl MemoryOptions {
    /// Parses a `memory://[NAME]` URL.
    ///
    /// # Errors
    /// [`coord_core::Error::InvalidArgument`] for another scheme, credentials, a port, a
    /// path, any query parameter, or bad percent-encoding in the name.
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
        Query::of(url)?.finish("memory", Self::QUERY_PARAMETERS)?;
        let store = match url.host_str().unwrap_or_default() {
            "" => DEFAULT_STORE.to_owned(),
            name => backend_url::decode(name, "memory store name")?,
        };
        Ok(MemoryOptions { store })
    }

    /// The store's name.
    pub fn store(&self) -> &str {
        &self.store
    }

    /// A new client of the store.
    pub fn client(&self) -> MemoryBackend {
        MemoryBackend::shared(&self.store)
    }
}

#[async_trait]
impl UrlOptions for MemoryOptions {
    type Backend = MemoryBackend;
    const URL_FORMS: &'static [&'static str] = &["memory://[STORE]"];
    const QUERY_PARAMETERS: &'static [&'static str] = &[];

    fn parse_url(url: &str) -> Result<Self> {
        MemoryOptions::from_url(&backend_url::parse(url)?)
    }

    fn redacted_url(&self) -> String {
        match self.store.as_str() {
            DEFAULT_STORE => "memory://".to_owned(),
            name => format!("memory://{}", backend_url::encode(name)),
        }
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
    fn anything_but_a_name_is_refused() {
        assert!(err("memory://x/y").contains("not a path"));
        assert!(err("memory://x:1").contains("not a port"));
        assert!(err("memory://a%zz").contains("percent-encoding"));
        assert!(err("etcd://x").contains("not a memory:// URL"));
        assert!(err("memory://x#y").contains("fragment"));
        let e = err("memory://?colour=blue");
        assert!(e.contains("unknown query parameter `colour`"), "{e}");
        assert!(e.contains("none of its own"), "{e}");
        let e = err("memory://u:hunter2@x");
        assert!(e.contains("credentials") && !e.contains("hunter2"), "{e}");
    }
}
