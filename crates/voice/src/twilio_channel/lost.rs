//! Callers gone without a word. A waiting caller's call asks `/wait` at
//! every hold (and `/dialed` after each ring); its end comes once, in the
//! final `/status`, which Twilio does not send again when we cannot answer
//! it (Redis away, every instance restarting). Such a call stayed in
//! routing for ever: offered to agent after agent, none rung, each a missed
//! offer; or, in a queue that assigns at once, assigned to an agent for up
//! to `max_call_secs`.
//!
//! So every request about a caller writes a sign of life into the
//! channel's `held` map (contact → the time, or `on_call` while the caller
//! is connected to an agent: a connected call asks nothing while it
//! lasts). One instance (a lease) watches the map: an entry whose value
//! has not changed for [`TwilioState::lost_after`], by the watcher's own
//! clock (no comparison of clocks across instances), and is not `on_call`,
//! is a caller gone, and its contact is ended (`caller_lost`).
//!
//! The watch starts afresh whenever the watcher cannot read the map (signs
//! of life written meanwhile by other instances may be missing) or the
//! lease moves, and an instance ends nothing in its first
//! `lost_calls_grace_secs` (an hour by default): during a rolling upgrade,
//! instances of an older version serve requests without writing signs of
//! life.

use super::TwilioState;
use metrics::counter;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_core::{ContactId, Timestamp};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The channel-state map of callers followed: contact → sign of life.
const HELD: &str = "held";

/// The value of a caller connected to an agent.
const ON_CALL: &str = "on_call";

/// The lease of the instance that watches.
const WATCHER: &str = "held-watcher";

/// How often the map is read.
const WATCH_EVERY: Duration = Duration::from_secs(5);

/// How often a connected call's contact is looked at (one ended in
/// routing, by `max_call_secs`, is forgotten).
const RECHECK_CONNECTED: Duration = Duration::from_secs(60);

/// How long a caller may stay connected without a sign of life while
/// routing has the call elsewhere than with an agent (transferred or
/// requeued during the conversation: it goes on on the first agent's phone
/// until she hangs up). Past it, the dial's end and the final status were
/// both lost, and the call is a ghost that `max_call_secs` does not end (it
/// bounds assigned calls only). Routing's default `max_call_secs`, not its
/// configured value: a heuristic bound for calls routing no longer ties to
/// an agent.
const CONNECTED_LOST_AFTER: Duration = Duration::from_secs(4 * 3600);

/// The disposition of a call ended so.
pub(super) const LOST: &str = "caller_lost";

impl TwilioState {
    /// Notes a sign of life of `contact`'s caller. A failure (Redis away)
    /// is let go: the caller is served all the same, and the watch starts
    /// afresh when it can read the map again.
    pub(super) async fn seen(&self, contact: &ContactId) {
        let now = Timestamp::now().as_millis().to_string();
        self.note(contact, &now).await;
    }

    /// `contact`'s caller is connected to an agent (asks nothing until the
    /// dial ends). Unlike [`Self::seen`], a failure is the caller's: not
    /// connected, as when the bridge's own mark cannot be written.
    pub(super) async fn on_call(&self, contact: &ContactId) -> Result<(), String> {
        self.memory
            .put_entry(HELD, &contact.to_string(), ON_CALL)
            .await
            .map_err(|e| e.to_string())
    }

    async fn note(&self, contact: &ContactId, value: &str) {
        if let Err(error) = self
            .memory
            .put_entry(HELD, &contact.to_string(), value)
            .await
        {
            // Worth seeing: the watcher, reaching Redis, may take this
            // instance's callers for gone.
            switchboard_channel::warn_throttled!(UNNOTED, source = %self.name, contact_id = %contact, %error,
                "Could not note a sign of life of a caller (logged once a minute); if this instance cannot reach Redis for long, the lost-call watch may end its callers.");
        }
    }

    /// `contact`'s call is over: no longer followed.
    pub(super) async fn forget(&self, contact: &ContactId) {
        if let Err(error) = self.memory.remove_entry(HELD, &contact.to_string()).await {
            debug!(source = %self.name, contact_id = %contact, %error, "Could not forget a call; the watch will.");
        }
    }

    /// How long a caller may give no sign of life before the call is taken
    /// for over: three holds (the message, the pause) and a ring, and 10 s
    /// to spare; with hold music (whose length we do not know), an hour
    /// more.
    pub(super) fn lost_after(&self) -> Duration {
        let hold =
            u64::from(self.config.hold_pause_secs) + super::say_secs(&self.config.hold_message);
        let music = if self.config.hold_music_url.is_some() {
            3600
        } else {
            0
        };
        Duration::from_secs(3 * hold + u64::from(self.config.ring_timeout_secs) + 10 + music)
    }
}

/// Failed signs of life, logged at most once a minute.
static UNNOTED: switchboard_channel::logs::LogThrottle =
    switchboard_channel::logs::LogThrottle::new(Duration::from_secs(60));

/// What the watcher saw of one entry.
struct Seen {
    value: String,
    /// Since when (the watcher's clock) the value is unchanged.
    since: Instant,
    /// When a connected call's contact was last looked at.
    checked: Option<Instant>,
}

/// Watches the callers followed until `shutdown`; `grace`: how long after
/// the start no call is ended (`lost_calls_grace_secs`).
pub(super) async fn watch(state: Arc<TwilioState>, shutdown: CancellationToken, grace: Duration) {
    let started = Instant::now();
    let mut seen: HashMap<String, Seen> = HashMap::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(WATCH_EVERY) => {}
        }
        match state.memory.hold(WATCHER, WATCH_EVERY * 6).await {
            Ok(true) => {}
            Ok(false) => {
                seen.clear();
                continue;
            }
            Err(error) => {
                seen.clear();
                debug!(source = %state.name, %error, "Cannot watch the callers followed now.");
                continue;
            }
        }
        let may_end = started.elapsed() >= grace;
        if let Err(error) = watch_once(&state, &mut seen, may_end).await {
            seen.clear();
            debug!(source = %state.name, %error, "Watching the callers followed failed.");
        }
    }
    let _ = state.memory.release(WATCHER).await;
}

/// One look at the map; with `may_end`, calls without a sign of life for
/// [`TwilioState::lost_after`] are ended.
async fn watch_once(
    state: &TwilioState,
    seen: &mut HashMap<String, Seen>,
    may_end: bool,
) -> Result<(), String> {
    let entries: HashMap<String, String> = state
        .memory
        .entries(HELD)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .collect();
    seen.retain(|field, _| entries.contains_key(field));
    let lost_after = state.lost_after();
    for (field, value) in entries {
        let now = Instant::now();
        let entry = seen.entry(field.clone()).or_insert_with(|| Seen {
            value: value.clone(),
            since: now,
            checked: None,
        });
        if entry.value != value {
            *entry = Seen {
                value,
                since: now,
                checked: None,
            };
            continue;
        }
        let Ok(contact) = field.parse::<ContactId>() else {
            let _ = state.memory.remove_entry(HELD, &field).await;
            continue;
        };
        let connected = value == ON_CALL;
        if connected {
            // Asks nothing while it lasts; ended in routing (its final
            // status lost, `max_call_secs`), it is forgotten.
            if entry
                .checked
                .is_some_and(|t| t.elapsed() < RECHECK_CONNECTED)
            {
                continue;
            }
            entry.checked = Some(now);
        } else if entry.since.elapsed() < lost_after || !may_end {
            continue;
        }
        let quiet = entry.since.elapsed();
        // One contact's trouble is its own: the others are watched on (a
        // restart of the whole watch kept ghosts alive through any blip).
        let route = match state.routing.route(&contact).await {
            Ok(route) => route,
            Err(error) => {
                debug!(source = %state.name, contact_id = %contact, %error, "Cannot look at a followed call now.");
                continue;
            }
        };
        let where_now = route.as_ref().map(|r| r.state.as_str());
        if where_now == Some("closed") {
            state.forget(&contact).await;
            seen.remove(&field);
            continue;
        }
        if connected && (where_now == Some("assigned") || quiet < CONNECTED_LOST_AFTER || !may_end)
        {
            continue;
        }
        let outcome = match state.routing.end(&contact, LOST).await {
            Ok(outcome) => outcome,
            Err(error) => {
                debug!(source = %state.name, contact_id = %contact, %error, "Cannot end a lost call now.");
                continue;
            }
        };
        state.forget(&contact).await;
        seen.remove(&field);
        if matches!(outcome.as_str(), "abandoned" | "closed") {
            counter!("switchboard_voice_calls_total", "source" => state.name.clone(), "outcome" => "lost")
                .increment(1);
            warn!(source = %state.name, contact_id = %contact, outcome = %outcome,
                quiet_secs = quiet.as_secs(),
                "A call without a sign of life for a while is ended: its caller is gone (its final status was not taken).");
        }
    }
    Ok(())
}
