//! Callers gone without a word. A waiting caller's call asks `/wait` every
//! hold (and `/dialed` after each ring); its end comes once, in the final
//! `/status`, which Twilio does not send again when we cannot answer it
//! (Redis away, every instance restarting). Such a call stayed waiting for
//! ever: offered to agent after agent, none rung, each a missed offer; or,
//! in a queue that assigns at once, assigned to an agent for up to
//! `max_call_secs`. So each request about a caller notes the time in the
//! channel's `held` map, and one instance (a lease) ends the calls nobody
//! asked about for [`TwilioState::lost_after`]: waiting ones, and assigned
//! ones that were never connected (no bridge mark). A connected call asks
//! nothing while it lasts; routing's `max_call_secs` is its bound.

use super::{TwilioState, bridged_key};
use metrics::counter;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_core::{ContactId, Timestamp};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The channel-state map of callers held: contact → ms of the last request
/// about them.
const HELD: &str = "held";

/// The lease of the instance that sweeps.
const SWEEPER: &str = "held-sweeper";

/// How often the map is swept.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// The disposition of a call ended so.
pub(super) const LOST: &str = "caller_lost";

impl TwilioState {
    /// Notes that Twilio asked about `contact`'s caller now. A failure
    /// (Redis away) is let go: the caller is served all the same, and the
    /// sweep waits for Redis to have been back [`Self::lost_after`].
    pub(super) async fn seen(&self, contact: &ContactId) {
        let now = Timestamp::now().as_millis().to_string();
        if let Err(error) = self
            .memory
            .put_entry(HELD, &contact.to_string(), &now)
            .await
        {
            debug!(source = %self.name, contact_id = %contact, %error, "Could not note a held caller.");
        }
    }

    /// `contact`'s call is over: no longer followed.
    pub(super) async fn forget(&self, contact: &ContactId) {
        if let Err(error) = self.memory.remove_entry(HELD, &contact.to_string()).await {
            debug!(source = %self.name, contact_id = %contact, %error, "Could not forget a call; the sweep will.");
        }
    }

    /// How long a caller may go without a request before the call is taken
    /// for over: three holds (the message, the pause) and a ring, and 10 s
    /// to spare; with hold music (whose length we do not know), 5 minutes
    /// more.
    pub(super) fn lost_after(&self) -> Duration {
        let hold =
            u64::from(self.config.hold_pause_secs) + super::say_secs(&self.config.hold_message);
        let music = if self.config.hold_music_url.is_some() {
            300
        } else {
            0
        };
        Duration::from_secs(3 * hold + u64::from(self.config.ring_timeout_secs) + 10 + music)
    }
}

/// Sweeps the held callers until `shutdown`.
pub(super) async fn sweep(state: Arc<TwilioState>, shutdown: CancellationToken) {
    // Since when this instance has reached Redis without a break: notes
    // missed while it was away would make live callers look gone.
    let mut reachable_since: Option<Instant> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(SWEEP_EVERY) => {}
        }
        match state.memory.hold(SWEEPER, SWEEP_EVERY * 3).await {
            Ok(true) => {}
            Ok(false) => {
                reachable_since.get_or_insert_with(Instant::now);
                continue;
            }
            Err(error) => {
                reachable_since = None;
                debug!(source = %state.name, %error, "Cannot sweep the held callers now.");
                continue;
            }
        }
        let since = *reachable_since.get_or_insert_with(Instant::now);
        if let Err(error) = sweep_once(&state, since.elapsed() >= state.lost_after()).await {
            reachable_since = None;
            debug!(source = %state.name, %error, "Sweeping the held callers failed.");
        }
    }
    let _ = state.memory.release(SWEEPER).await;
}

/// One pass: calls over are forgotten; with `may_end`, calls nobody asked
/// about for [`TwilioState::lost_after`] are ended.
async fn sweep_once(state: &TwilioState, may_end: bool) -> Result<(), String> {
    let entries = state
        .memory
        .entries(HELD)
        .await
        .map_err(|e| e.to_string())?;
    let now = Timestamp::now().as_millis();
    let lost_ms = u64::try_from(state.lost_after().as_millis()).unwrap_or(u64::MAX);
    for (field, at) in entries {
        let Ok(contact) = field.parse::<ContactId>() else {
            let _ = state.memory.remove_entry(HELD, &field).await;
            continue;
        };
        let quiet = at
            .parse::<u64>()
            .map_or(true, |at| now.saturating_sub(at) >= lost_ms);
        if !quiet || !may_end {
            continue;
        }
        let route = state
            .routing
            .route(&contact)
            .await
            .map_err(|e| e.to_string())?;
        let lost = match route
            .as_ref()
            .map(|r| (r.state.as_str(), r.agent.as_deref()))
        {
            Some(("closed", _)) => {
                state.forget(&contact).await;
                continue;
            }
            // Ringing: the ring ends in `/dialed`, or the offer runs out.
            Some(("offered", _)) => false,
            // Connected calls ask nothing while they last.
            Some(("assigned", Some(agent))) => state
                .memory
                .get(&bridged_key(&contact, agent))
                .await
                .map_err(|e| e.to_string())?
                .is_none(),
            Some(("assigned", None)) => false,
            // Waiting, or not yet handed to routing after all this time.
            _ => true,
        };
        if !lost {
            continue;
        }
        let outcome = state
            .routing
            .end(&contact, LOST)
            .await
            .map_err(|e| e.to_string())?;
        state.forget(&contact).await;
        counter!("switchboard_voice_calls_total", "source" => state.name.clone(), "outcome" => "lost")
            .increment(1);
        warn!(source = %state.name, contact_id = %contact, outcome = %outcome,
            quiet_secs = state.lost_after().as_secs(),
            "A call nobody asked about for a while is ended: its caller is gone (its final status was not taken).");
    }
    Ok(())
}
