//! New clients while a server fault may have taken the server away.

use std::time::Duration;

/// How long a new client waits for a server that a fault took away (killed and not yet
/// restarted, paused): well past the longest server fault the injector holds.
pub const RECONNECT_BOUND: Duration = Duration::from_secs(60);

/// Calls `connect` until it succeeds, as a restarted application would while the server
/// is away, for up to [`RECONNECT_BOUND`]; `what` names the server in the log and in the
/// panic that ends a run whose server never came back.
pub async fn connect_through_faults<B, Fut>(what: &str, mut connect: impl FnMut() -> Fut) -> B
where
    Fut: Future<Output = coord_core::Result<B>>,
{
    let deadline = tokio::time::Instant::now() + RECONNECT_BOUND;
    loop {
        match connect().await {
            Ok(backend) => return backend,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("connect to {what}: {e}; trying again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{what} was away for {RECONNECT_BOUND:?}: {e}"),
        }
    }
}
