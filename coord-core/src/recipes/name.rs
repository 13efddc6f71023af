//! What a lock, semaphore or election name may be.
//!
//! A name is the prefix of its holders' keys (`<name>/<lease id>`), so a name that is empty,
//! ends with `/` or holds a NUL byte makes keys nobody means: `/<lease>` at the root of the
//! namespace, `jobs//<lease>` beside `jobs/<lease>`, or a key that C-string tools (and
//! `etcdctl`) cut short. These are refused before any request is sent.

use crate::{Error, Result};

/// `Ok` when `name` can name a primitive of `kind` ("lock", "election", ...).
pub(crate) fn check_name(kind: &str, name: &str) -> Result<()> {
    let problem = if name.is_empty() {
        "is empty"
    } else if name.ends_with('/') {
        "ends with '/' (its keys would be \"<name>//<lease>\"); drop the trailing '/'"
    } else if name.contains('\0') {
        "contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(Error::invalid_argument(format!(
        "{kind} name {name:?} {problem}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_make_keys_nobody_means_are_refused() {
        for (name, says) in [
            ("", "is empty"),
            ("jobs/", "ends with '/'"),
            ("a\0b", "NUL"),
        ] {
            let err = check_name("lock", name).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
            assert!(err.to_string().contains(says), "{name:?}: {err}");
        }
    }

    #[test]
    fn ordinary_names_pass() {
        for name in ["jobs", "/app/jobs", "a/b/c", "with space", "ünïcode"] {
            check_name("lock", name).unwrap();
        }
    }
}
