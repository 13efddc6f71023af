//! What the command line adds to the backend URL: a default request timeout, and
//! credentials given as `--user` / `--password-file` rather than in the URL, where every
//! user of the machine can read them in `ps`.
//!
//! Both go into the URL's query string (`request_timeout=`, `user=`, `password=`,
//! percent-encoded), which the etcd and Redis backends read; the backend's parser then
//! checks them as if the user had typed them, and never repeats the password.

use std::path::Path;
use std::time::Duration;

use coord::ConnectOptions;
use coord::backend_url::{Query, encode};

use super::{CliError, code};

/// The request timeout of the commands that coordinate processes, unless the URL sets
/// `request_timeout` (etcdctl's `--command-timeout` is 5 s too). Without one, a request to
/// a black-holed server never returns, and coord would hang on release instead of exiting.
pub(crate) const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The options `--user` and `--password-file` set.
#[derive(Debug, Default)]
pub(crate) struct Credentials<'a> {
    pub(crate) user: Option<&'a str>,
    pub(crate) password_file: Option<&'a Path>,
}

/// Parsed connection options, and the request timeout they use.
pub(crate) struct Prepared {
    pub(crate) options: ConnectOptions,
    pub(crate) request_timeout: Duration,
}

/// Parses `url` with the command line's additions: `request_timeout=5s` when
/// `default_timeout` and the URL's backend takes a request timeout but the URL sets none,
/// and the credentials.
///
/// Errors in the URL itself are reported as [`ConnectOptions::parse`] words them, for the
/// URL as given (exit 1); a credential option that cannot be used is bad usage (exit 2).
pub(crate) fn prepare(
    url: &str,
    credentials: &Credentials<'_>,
    default_timeout: bool,
) -> Result<Prepared, CliError> {
    // The URL is parsed once, whole: a URL with `USER@` alone is incomplete until the
    // password from the file is added.
    let scheme = url
        .split_once("://")
        .map(|(scheme, _)| scheme.to_ascii_lowercase())
        .unwrap_or_default();
    let Some(backend) = coord::known_backends()
        .iter()
        .find(|b| b.is_enabled() && b.schemes().contains(&scheme.as_str()))
    else {
        // Not a scheme of this build: `parse` says what is wrong.
        let options = ConnectOptions::parse(url)?;
        return Ok(Prepared {
            options,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        });
    };
    let takes = |parameter: &str| backend.query_parameters().contains(&parameter);
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut query = Query::parse(query)?;
    let mut extra: Vec<(&str, String)> = Vec::new();
    let request_timeout = match query.take_duration("request_timeout")? {
        Some(timeout) => timeout,
        None => {
            if default_timeout && takes("request_timeout") {
                extra.push(("request_timeout", "5s".to_owned()));
            }
            DEFAULT_REQUEST_TIMEOUT
        }
    };
    if credentials.user.is_some() || credentials.password_file.is_some() {
        let option = if credentials.password_file.is_some() {
            "--password-file"
        } else {
            "--user"
        };
        if !takes("password") {
            return Err(CliError::new(
                code::USAGE,
                format!(
                    "{option}: {scheme}:// takes no credentials; use it with etcd:// or \
                     redis:// URLs"
                ),
            ));
        }
        let (url_user, url_password) = userinfo(base);
        let url_user = url_user || query.take_or_empty("user").is_some();
        let url_password = url_password || query.take_or_empty("password").is_some();
        if let Some(path) = credentials.password_file {
            if url_password {
                return Err(CliError::new(
                    code::USAGE,
                    "--password-file: the backend URL has a password too; give it in one \
                     place only (the file keeps it out of `ps`)",
                ));
            }
            extra.push(("password", read_password(path)?));
        }
        if let Some(user) = credentials.user {
            if url_user {
                return Err(CliError::new(
                    code::USAGE,
                    "--user: the backend URL names a user too; give the user name in one \
                     place only",
                ));
            }
            extra.push(("user", user.to_owned()));
        }
    }
    if extra.is_empty() {
        return Ok(Prepared {
            options: ConnectOptions::parse(url)?,
            request_timeout,
        });
    }
    let separator = if url.contains('?') { "&" } else { "?" };
    let added: Vec<String> = extra
        .iter()
        .map(|(name, value)| format!("{name}={}", encode(value)))
        .collect();
    let full = format!("{url}{separator}{}", added.join("&"));
    Ok(Prepared {
        options: ConnectOptions::parse(&full)?,
        request_timeout,
    })
}

/// Whether the part of `base` (a URL without its query) before `@` names a user, and a
/// password.
fn userinfo(base: &str) -> (bool, bool) {
    let after_scheme = base.split_once("://").map_or(base, |(_, rest)| rest);
    let authority = after_scheme.split('/').next().unwrap_or_default();
    match authority.rsplit_once('@') {
        Some((info, _)) => match info.split_once(':') {
            Some((user, _)) => (!user.is_empty(), true),
            None => (!info.is_empty(), false),
        },
        None => (false, false),
    }
}

/// The password: the first line of the file at `path`, without its line ending.
fn read_password(path: &Path) -> Result<String, CliError> {
    let unusable = |why: String| {
        CliError::new(
            code::USAGE,
            format!("--password-file {}: {why}", path.display()),
        )
    };
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => unusable("no such file".into()),
        std::io::ErrorKind::InvalidData => {
            unusable("not UTF-8 text; the first line must be the password".into())
        }
        _ => unusable(format!("cannot read it: {e}")),
    })?;
    let line = text.lines().next().unwrap_or_default();
    if line.is_empty() {
        return Err(unusable(
            "the first line is empty; it must be the password".into(),
        ));
    }
    Ok(line.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_tells_user_and_password_apart() {
        assert_eq!(userinfo("etcd://h:1,h2"), (false, false));
        assert_eq!(userinfo("etcd://app@h"), (true, false));
        assert_eq!(userinfo("redis://:pw@h/0"), (false, true));
        assert_eq!(userinfo("etcd://app:p%40ss@h:1,h2:2"), (true, true));
    }

    #[test]
    fn memory_gets_no_request_timeout_and_refuses_credentials() {
        let p = prepare("memory://", &Credentials::default(), true).unwrap();
        assert_eq!(p.options.redacted_url(), "memory://");
        assert_eq!(p.request_timeout, DEFAULT_REQUEST_TIMEOUT);
        let e = prepare(
            "memory://",
            &Credentials {
                user: Some("u"),
                password_file: None,
            },
            true,
        )
        .err()
        .unwrap();
        assert_eq!(e.code, code::USAGE);
        assert!(
            e.message.contains("memory:// takes no credentials"),
            "{}",
            e.message
        );
    }
}
