//! The backends `connect` knows: one entry per backend, made by [`backends!`] from one line
//! each in `lib.rs`, whether or not its cargo feature is on.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use coord_core::{CoordinationBackend, Result, UrlOptions};

/// A backend `coord::connect` knows of: its cargo feature, its URL schemes, and, when this
/// build has the feature, its URL forms and query parameters. See [`known_backends`].
#[derive(Debug)]
pub struct KnownBackend {
    feature: &'static str,
    schemes: &'static [&'static str],
    url_forms: &'static [&'static str],
    query_parameters: &'static [&'static str],
    pub(crate) parse: Option<ParseFn>,
}

/// Parses a URL (its common query parameters taken out) into the backend's options.
pub(crate) type ParseFn = fn(&str) -> Result<Arc<dyn ParsedUrl>>;

impl KnownBackend {
    // `enabled` is unused in a build without backend features, `disabled` in one with all.
    #[allow(dead_code)]
    pub(crate) const fn enabled<O: UrlOptions>(
        feature: &'static str,
        schemes: &'static [&'static str],
    ) -> Self {
        KnownBackend {
            feature,
            schemes,
            url_forms: O::URL_FORMS,
            query_parameters: O::QUERY_PARAMETERS,
            parse: Some(parse_as::<O>),
        }
    }

    #[allow(dead_code)]
    pub(crate) const fn disabled(feature: &'static str, schemes: &'static [&'static str]) -> Self {
        KnownBackend {
            feature,
            schemes,
            url_forms: &[],
            query_parameters: &[],
            parse: None,
        }
    }

    /// The cargo feature of `coord` (and of `coord-cli`) that adds the backend.
    pub fn feature(&self) -> &'static str {
        self.feature
    }

    /// Its URL schemes, lowercase: `["etcd", "etcds"]`.
    pub fn schemes(&self) -> &'static [&'static str] {
        self.schemes
    }

    /// Whether this build has the backend.
    pub fn is_enabled(&self) -> bool {
        self.parse.is_some()
    }

    /// Its URL forms, for help texts (`etcd://HOST[:PORT][,HOST[:PORT]…]`); empty when
    /// this build does not have it.
    pub fn url_forms(&self) -> &'static [&'static str] {
        self.url_forms
    }

    /// The query parameters it takes besides `namespace` and `ttl`; empty when this build
    /// does not have it.
    pub fn query_parameters(&self) -> &'static [&'static str] {
        self.query_parameters
    }
}

/// Every backend `connect` knows, in the order of the table in `lib.rs`, those this build
/// lacks included (a URL of theirs fails with the cargo feature to enable).
pub fn known_backends() -> &'static [KnownBackend] {
    crate::BACKENDS
}

/// The backend a URL names, and the feature that adds it.
pub(crate) fn find(scheme: &str) -> Option<(&'static KnownBackend, &'static str)> {
    known_backends().iter().find_map(|b| {
        let scheme = b.schemes.iter().find(|s| **s == scheme)?;
        Some((b, *scheme))
    })
}

/// A backend just connected: as the trait object recipes use, and as its own type.
pub(crate) struct Connected {
    pub(crate) backend: Arc<dyn CoordinationBackend>,
    pub(crate) concrete: Arc<dyn Any + Send + Sync>,
    /// Whether the backend took the namespace as its own key space
    /// ([`UrlOptions::with_own_namespace`]); if not, the caller prefixes the keys.
    pub(crate) owns_namespace: bool,
}

/// [`UrlOptions`] with the backend's type erased, so that one table holds every backend.
pub(crate) trait ParsedUrl: Send + Sync {
    fn redacted_url(&self) -> String;
    fn connect<'a>(
        &'a self,
        namespace: Option<&'a str>,
    ) -> Pin<Box<dyn Future<Output = Result<Connected>> + Send + 'a>>;
}

impl<O: UrlOptions> ParsedUrl for O {
    fn redacted_url(&self) -> String {
        UrlOptions::redacted_url(self)
    }

    fn connect<'a>(
        &'a self,
        namespace: Option<&'a str>,
    ) -> Pin<Box<dyn Future<Output = Result<Connected>> + Send + 'a>> {
        Box::pin(async move {
            let own = namespace
                .and_then(|ns| self.with_own_namespace(ns))
                .transpose()?;
            let owns_namespace = own.is_some();
            let backend = Arc::new(UrlOptions::connect(own.as_ref().unwrap_or(self)).await?);
            Ok(Connected {
                backend: backend.clone(),
                concrete: backend,
                owns_namespace,
            })
        })
    }
}

#[allow(dead_code)] // unused in a build without backend features
fn parse_as<O: UrlOptions>(url: &str) -> Result<Arc<dyn ParsedUrl>> {
    Ok(Arc::new(O::parse_url(url)?))
}

/// The table of backends: for each, a re-export module when its cargo feature is on, and a
/// [`KnownBackend`] entry either way. A line reads
/// `/// docs` `module: "feature" ["scheme", ...] => backend_crate::OptionsType;`, the
/// options type implementing [`UrlOptions`].
macro_rules! backends {
    ($(
        $(#[$doc:meta])*
        $module:ident: $feature:literal [$($scheme:literal),+ $(,)?] => $krate:ident :: $options:ident;
    )*) => {
        $(
            #[cfg(feature = $feature)]
            $(#[$doc])*
            pub mod $module {
                pub use $krate::*;
            }
        )*

        pub(crate) static BACKENDS: &[registry::KnownBackend] = &[$({
            #[cfg(feature = $feature)]
            let entry = registry::KnownBackend::enabled::<$krate::$options>(
                $feature,
                &[$($scheme),+],
            );
            #[cfg(not(feature = $feature))]
            let entry = registry::KnownBackend::disabled($feature, &[$($scheme),+]);
            entry
        }),*];
    };
}

pub(crate) use backends;
