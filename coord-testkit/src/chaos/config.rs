//! What a chaos run does: its seed, its length and how many clients, from the environment.

use std::time::Duration;

use crate::conformance::{Clock, TestBackend};

/// The number of clients of a run.
pub const CLIENTS: usize = 8;

/// How long a bare `cargo test` runs each chaos test, in seconds (virtual seconds on a
/// paused clock); `COORD_CHAOS_SECONDS` overrides it.
pub const DEFAULT_SECONDS: u64 = 10;

/// The settings of one chaos run.
#[derive(Debug, Clone)]
pub struct Config {
    /// What the run is called in its report and replay line: the `--backend` of
    /// `scripts/chaos.sh` (`memory`, `etcd`, `etcd-cluster`, `redis`, `redis-cluster`).
    pub backend: String,
    /// Seeds every random choice: operations, names, hold times and faults. On a paused
    /// clock the same seed gives the same run; on real servers timing still differs.
    pub seed: u64,
    /// How long clients work and faults are injected (then the final liveness round).
    pub duration: Duration,
    /// The number of clients (each with its own backend client and session).
    pub clients: usize,
}

impl Config {
    /// The settings from `COORD_CHAOS_SEED` (decimal or `0x` hex; a random seed when unset)
    /// and `COORD_CHAOS_SECONDS` (default [`DEFAULT_SECONDS`]), for the run named
    /// `backend`.
    ///
    /// # Panics
    ///
    /// When either variable is set to something else than a number, naming it and what it
    /// accepts.
    pub fn from_env(backend: &str) -> Config {
        let seed = match std::env::var("COORD_CHAOS_SEED") {
            Ok(s) if !s.trim().is_empty() => parse_seed(&s).unwrap_or_else(|| {
                panic!("COORD_CHAOS_SEED={s:?}: expected a decimal or 0x-prefixed hex u64")
            }),
            _ => random_seed(),
        };
        let seconds = match std::env::var("COORD_CHAOS_SECONDS") {
            Ok(s) if !s.trim().is_empty() => match s.trim().parse::<u64>() {
                Ok(n) if n > 0 => n,
                _ => panic!("COORD_CHAOS_SECONDS={s:?}: expected a whole number of seconds >= 1"),
            },
            _ => DEFAULT_SECONDS,
        };
        Config {
            backend: backend.to_owned(),
            seed,
            duration: Duration::from_secs(seconds),
            clients: CLIENTS,
        }
    }

    /// The line that replays this run.
    pub fn replay_line(&self) -> String {
        format!(
            "scripts/chaos.sh --backend {} --seconds {} --seed {:#x}",
            self.backend,
            self.duration.as_secs(),
            self.seed
        )
    }
}

fn parse_seed(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 40)
}

/// The time scales of a run, derived from the backend's short TTL.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scales {
    pub(crate) ttl: Duration,
    /// What a blocking acquisition is given (`*_timeout`).
    pub(crate) wait_limit: Duration,
    /// The longest a hold lasts by choice.
    pub(crate) max_hold: Duration,
    /// The longest a client fault (partition, latency, paused client) lasts.
    pub(crate) max_fault: Duration,
    /// An operation that neither finishes nor fails within this is hung: its own limit,
    /// plus the longest fault that may hold it up, plus a few TTLs for the recipe to notice.
    pub(crate) hung: Duration,
    /// The gap between fault injections, at most.
    pub(crate) fault_gap: Duration,
}

impl Scales {
    pub(crate) fn of(backend: &dyn TestBackend) -> Scales {
        let ttl = backend.short_ttl();
        let wait_limit = ttl;
        let max_fault = ttl * 2;
        Scales {
            ttl,
            wait_limit,
            max_hold: ttl / 4,
            max_fault,
            hung: wait_limit + max_fault + ttl * 6,
            // On a paused clock waiting is free but a TTL is long (10 s): more faults per
            // TTL there.
            fault_gap: match backend.clock() {
                Clock::Paused => ttl / 10,
                Clock::Real => ttl / 2,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_in_decimal_and_hex() {
        assert_eq!(parse_seed("42"), Some(42));
        assert_eq!(parse_seed(" 0x2a "), Some(42));
        assert_eq!(parse_seed("0X2A"), Some(42));
        assert_eq!(parse_seed("forty-two"), None);
    }

    #[test]
    fn the_replay_line_names_backend_seconds_and_seed() {
        let c = Config {
            backend: "etcd".into(),
            seed: 255,
            duration: Duration::from_secs(60),
            clients: CLIENTS,
        };
        assert_eq!(
            c.replay_line(),
            "scripts/chaos.sh --backend etcd --seconds 60 --seed 0xff"
        );
    }
}
