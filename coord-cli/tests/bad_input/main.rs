//! The bad-input catalogue: every row of `docs/bad-input.md` is checked here, through the
//! library (`coord::connect`, the recipes) and through the `coord` binary, against real
//! servers started by coord-testkit where a server matters. Each case asserts the error's
//! kind (and so whether it is retryable), that its message names what was wrong, that
//! nothing hangs, and, where a key could have been written, that none is left behind.
//!
//! A test is named `bNN_<behaviour>` after its row; `the_catalogue_and_the_tests_agree`
//! keeps the document and this file in step.

#[path = "../cli_support/mod.rs"]
mod cli_support;

mod support;

mod credentials;
mod durations;
mod holds;
mod names;
mod servers;
mod urls;
mod usage;

/// The test sources, scanned for `bNN_` test names.
const SOURCES: [&str; 7] = [
    include_str!("credentials.rs"),
    include_str!("durations.rs"),
    include_str!("holds.rs"),
    include_str!("names.rs"),
    include_str!("servers.rs"),
    include_str!("urls.rs"),
    include_str!("usage.rs"),
];

const CATALOGUE: &str = include_str!("../../../docs/bad-input.md");

/// `B07` for `async fn b07_…` or `fn b07_…`.
fn tested_ids() -> Vec<String> {
    let mut ids: Vec<String> = SOURCES
        .iter()
        .flat_map(|src| src.lines())
        .filter_map(|line| {
            let rest = line
                .trim_start()
                .strip_prefix("async fn b")
                .or_else(|| line.trim_start().strip_prefix("fn b"))?;
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            (digits.len() == 2 && rest[2..].starts_with('_')).then(|| format!("B{digits}"))
        })
        .collect();
    ids.sort();
    ids
}

/// The IDs in the first column of the catalogue's table rows.
fn catalogued_ids() -> Vec<String> {
    let mut ids: Vec<String> = CATALOGUE
        .lines()
        .filter_map(|row| {
            let first = row.strip_prefix('|')?.split('|').next()?.trim();
            (first.len() == 3
                && first.starts_with('B')
                && first[1..].chars().all(|c| c.is_ascii_digit()))
            .then(|| first.to_owned())
        })
        .collect();
    ids.sort();
    ids
}

#[test]
fn the_catalogue_and_the_tests_agree() {
    let tested = tested_ids();
    let catalogued = catalogued_ids();
    assert!(
        catalogued.len() >= 40,
        "the catalogue has {} rows",
        catalogued.len()
    );
    let mut unique = tested.clone();
    unique.dedup();
    assert_eq!(unique, tested, "a row is tested by two functions");
    assert_eq!(
        tested, catalogued,
        "every row of docs/bad-input.md has exactly one bNN_ test, and every test a row"
    );
}
