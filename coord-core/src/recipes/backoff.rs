//! `Backoff`: the one retry pacing of the recipes' background work.

use std::time::Duration;

use super::session::LostSignal;

/// Growing pauses between retries: 10 ms, doubling up to a cap (1 s by default), so that
/// a failing backend is not hammered and a brief failure costs little.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    first: Duration,
    next: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::up_to(Duration::from_secs(1))
    }
}

impl Backoff {
    /// Pauses from 10 ms up to `max`.
    pub(crate) fn up_to(max: Duration) -> Self {
        let first = Duration::from_millis(10).min(max);
        Backoff {
            first,
            next: first,
            max,
        }
    }

    /// The next pause (and doubles the one after).
    pub(crate) fn pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(self.max);
        pause
    }

    /// Starts again from the shortest pause, after a success.
    pub(crate) fn reset(&mut self) {
        self.next = self.first;
    }

    /// Sleeps the next pause; returns false at once if the session is lost first.
    pub(crate) async fn sleep_unless_lost(&mut self, lost: &LostSignal) -> bool {
        let pause = self.pause();
        tokio::select! {
            biased;
            _ = lost.clone().wait() => false,
            _ = tokio::time::sleep(pause) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_cap_and_reset() {
        let mut b = Backoff::up_to(Duration::from_millis(50));
        let pauses: Vec<_> = (0..5).map(|_| b.pause().as_millis()).collect();
        assert_eq!(pauses, [10, 20, 40, 50, 50]);
        b.reset();
        assert_eq!(b.pause(), Duration::from_millis(10));
    }
}
