//! How many websocket tickets each agent may ask for: each is a Redis key
//! for 15 s, so an agent's script asking in a loop would otherwise fill
//! Redis with them. A console asks once per connect attempt, and backs off
//! between attempts; [`PER_MINUTE`] leaves it room for a burst of retries.
//! In memory, per instance, as the websocket's frame allowance is.

use switchboard_channel::limits::PerKey;

/// Tickets one agent may be issued per minute on one instance.
pub(crate) const PER_MINUTE: u32 = 30;

/// Agents' ticket buckets.
pub(crate) type Allowance = PerKey<String>;

/// A bucket of [`PER_MINUTE`] per agent; agents idle for a minute are
/// forgotten once 1,024 are kept.
pub(crate) fn allowance() -> Allowance {
    PerKey::with_keys(PER_MINUTE, 1024)
}
