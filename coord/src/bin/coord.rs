//! `coord`: locks, leader election and benchmarks from the shell, on any backend.
//!
//! Run `coord --help` (or see the `cli` module) for the commands and exit codes.

#[path = "../cli/mod.rs"]
mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
