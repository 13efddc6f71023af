//! `coord`: locks, leader election and benchmarks from the shell, on any backend.
//!
//! Run `coord --help` for the commands and exit codes.

fn main() -> std::process::ExitCode {
    coord_cli::main()
}
