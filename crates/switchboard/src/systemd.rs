//! sd_notify: READY, STOPPING and WATCHDOG for `Type=notify` units. Without
//! `NOTIFY_SOCKET` (not under systemd) every call does nothing.
//!
//! The crate sends on a blocking socket: when nobody reads the other end
//! (a queue of `net.unix.max_dgram_qlen` datagrams, 10 by default), a send
//! waits for room. So every notification goes from a blocking thread, and
//! the async threads wait for one at most [`SEND_WAIT`].

use sd_notify::NotifyState;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long READY or STOPPING is waited for before the daemon goes on
/// without knowing it was sent.
const SEND_WAIT: Duration = Duration::from_secs(1);

/// Held while a notification is sent: one waiting for room holds it, so
/// the next (STOPPING after a READY that waited) goes after it, in order.
static IN_ORDER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Sends `states` as one notification, after any still waiting for room.
fn notify(states: &[NotifyState<'_>]) {
    let _turn = IN_ORDER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let _ = sd_notify::notify(false, states);
}

/// Sends what `f` sends from a blocking thread, waiting for it at most
/// [`SEND_WAIT`].
async fn send_off_thread(f: impl FnOnce() + Send + 'static) {
    if tokio::time::timeout(SEND_WAIT, tokio::task::spawn_blocking(f))
        .await
        .is_err()
    {
        tracing::warn!("A notification to systemd is still waiting for room in its socket.");
    }
}

pub async fn ready(status: &str) {
    let status = status.to_owned();
    send_off_thread(move || {
        notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    })
    .await;
}

/// STOPPING, and how long the stop may take: requests get `drain`, then
/// the channels' deliveries as long again (at least 5 s), plus 5 s to exit.
/// systemd (`EXTEND_TIMEOUT_USEC`, v236 and later) then waits that long
/// even past the unit's `TimeoutStopSec`, rather than killing a drain the
/// configuration asked for while replies are in flight.
pub async fn stopping(drain: Duration) {
    // Written out: the crate's `ExtendTimeoutUsec` takes a u32 (71 min),
    // shorter than the longest drain the configuration allows.
    let extend = format!("EXTEND_TIMEOUT_USEC={}", stop_takes(drain).as_micros());
    send_off_thread(move || {
        notify(&[
            NotifyState::Stopping,
            NotifyState::Status("draining"),
            NotifyState::Custom(&extend),
        ]);
    })
    .await;
}

/// The longest a stop takes with `drain` (`shutdown.drain_timeout_secs`).
fn stop_takes(drain: Duration) -> Duration {
    drain + drain.max(Duration::from_secs(5)) + Duration::from_secs(5)
}

/// Pings the watchdog at half the interval systemd asked for, until
/// `shutdown`, while `alive(interval)` says the work it stands for moved
/// within the whole interval (the router's loop made a pass, even a failed
/// one: a Redis outage is not a reason to restart). A runtime so stuck that
/// this task cannot run, or a loop stuck for a whole interval, gets
/// restarted.
pub fn spawn_watchdog(
    shutdown: CancellationToken,
    alive: impl Fn(Duration) -> bool + Send + 'static,
) -> Option<tokio::task::JoinHandle<()>> {
    let usec = watchdog_usec()?;
    let interval = Duration::from_micros(usec);
    let period = interval / 2;
    tracing::info!(period_ms = period.as_millis() as u64, "Watchdog enabled.");
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        let mut withheld = false;
        // The ping on its way: no second one while it waits for room.
        let mut sending: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    if alive(interval) {
                        withheld = false;
                        if sending.as_ref().is_none_or(tokio::task::JoinHandle::is_finished) {
                            sending = Some(tokio::task::spawn_blocking(|| {
                                notify(&[NotifyState::Watchdog]);
                            }));
                        }
                    } else if !withheld {
                        withheld = true;
                        tracing::error!(interval_ms = interval.as_millis() as u64,
                            "The router's loop made no pass for a whole watchdog interval; no more watchdog pings, so systemd restarts the service.");
                    }
                }
            }
        }
    }))
}

/// The watchdog interval systemd asked for, as `sd_watchdog_enabled(3)`
/// reads it: `WATCHDOG_USEC`, for this process unless `WATCHDOG_PID` names
/// another. (The sd-notify crate also requires `WATCHDOG_PID` to be set,
/// which libsystemd does not.)
fn watchdog_usec() -> Option<u64> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then_some(usec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_takes_twice_the_drain_at_least_drain_and_5_s_plus_5_s() {
        assert_eq!(stop_takes(Duration::from_secs(10)), Duration::from_secs(25));
        assert_eq!(stop_takes(Duration::from_secs(1)), Duration::from_secs(11));
        // The longest drain allowed: more than a u32 of microseconds.
        assert_eq!(
            stop_takes(Duration::from_secs(3600)).as_micros(),
            7_205_000_000
        );
    }
}
