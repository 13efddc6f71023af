//! `coord repl NAME`: the interactive election of `examples/election.rs`, on any backend.

use clap::Args;

use super::interactive;
use super::{CliError, Ctx, code};

#[derive(Debug, Args)]
pub(crate) struct ReplArgs {
    /// Election name.
    #[arg(value_parser = super::parse_name)]
    pub(crate) name: String,
}

pub(crate) async fn run(ctx: &Ctx, args: ReplArgs) -> Result<u8, CliError> {
    println!("election {:?} on {}", args.name, ctx.options.redacted_url());
    interactive::run(&args.name, || async {
        let conn = ctx.options.clone().connect().await?;
        let session = conn.session().await?;
        Ok((conn, session))
    })
    .await
    // A backend error keeps its exit code (timeout, ...); anything else is a failure.
    .map_err(|e| match e.downcast::<coord::Error>() {
        Ok(e) => CliError::from(*e),
        Err(e) => CliError::new(code::FAILURE, e.to_string()),
    })?;
    Ok(code::OK)
}
