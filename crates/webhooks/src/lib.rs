//! Outbound webhooks to CRMs and helpdesks (`docs/webhooks.md`).
//!
//! `contact.created`, `message.created`, `contact.assigned` and
//! `contact.closed` (with the transcript) are POSTed as JSON to each
//! configured URL, signed with HMAC-SHA256 over a timestamp and the body,
//! from the durable per-partition event feed in Redis
//! ([`switchboard_store::feed`]): in causal order per contact, retried with
//! backoff while the receiver is away, each with an event id the receiver
//! deduplicates by (delivery is at least once).
//!
//! - [`config`]: the `[[webhooks]]` tables and their checks.
//! - [`event`], [`payload`]: what a feed entry means, and its JSON body.
//! - [`sign`]: the `Switchboard-Signature` header (and its verification).
//! - [`deliver`]: one HTTP attempt and the backoff.
//! - the mover (routing events into the feeds) and the per-(webhook,
//!   partition) dispatchers, started by [`Webhooks::run`].
#![forbid(unsafe_code)]

pub mod config;
pub mod deliver;
mod dispatch;
pub mod event;
mod mover;
pub mod payload;
pub mod sign;

pub use config::{ConfigProblem, EventType, Target, WebhookConfig, check};
pub use event::{Event, EventError};

use std::sync::Arc;
use std::time::Duration;
use switchboard_store::{Conversations, EventFeed, Store};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// How much longer than the longest `max_age_hours` the feeds keep events.
pub const RETENTION_MARGIN: Duration = Duration::from_secs(24 * 3600);

/// Why the webhooks cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Config(#[from] ConfigProblem),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// The webhooks of one instance: the mover and one dispatcher per
/// (webhook, partition).
#[derive(Debug)]
pub struct Webhooks {
    store: Store,
    targets: Vec<Arc<Target>>,
    client: reqwest::Client,
    holder: String,
}

impl Webhooks {
    /// Checks `configs` (reading secrets) and prepares the HTTP client.
    /// `holder` names this instance in leases and consumer groups. `store`
    /// should have its event feed on ([`Store::with_event_feed`]).
    pub fn new(
        store: Store,
        configs: &[WebhookConfig],
        holder: &str,
    ) -> Result<Webhooks, WebhookError> {
        let targets = check(configs)?.into_iter().map(Arc::new).collect();
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("switchboard-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WebhookError::Client(e.without_url().to_string()))?;
        Ok(Webhooks {
            store,
            targets,
            client,
            holder: holder.to_owned(),
        })
    }

    /// How long the feeds keep events: a day longer than the longest
    /// `max_age_hours`, so that a webhook far behind reaches its old events
    /// and drops them by age (counted) before the trim removes them.
    pub fn retention(&self) -> Duration {
        self.targets
            .iter()
            .map(|t| t.max_age)
            .max()
            .unwrap_or(Duration::from_secs(168 * 3600))
            + RETENTION_MARGIN
    }

    /// Runs until `shutdown`. Does nothing without webhooks.
    pub async fn run(self, shutdown: CancellationToken) {
        if self.targets.is_empty() {
            return;
        }
        let feed = EventFeed::new(self.store.clone());
        let conversations = Conversations::new(self.store.clone());
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(
            mover::Mover {
                feed: feed.clone(),
                holder: self.holder.clone(),
                retention: self.retention(),
            }
            .run(shutdown.clone()),
        );
        for target in &self.targets {
            let backlog = dispatch::Backlog::new(&target.name, self.store.keys().partitions());
            for partition in self.store.keys().all_partitions() {
                tasks.spawn(
                    dispatch::Worker {
                        feed: feed.clone(),
                        conversations: conversations.clone(),
                        client: self.client.clone(),
                        target: target.clone(),
                        partition,
                        holder: self.holder.clone(),
                        backlog: backlog.clone(),
                    }
                    .run(shutdown.clone()),
                );
            }
            info!(webhook = %target.name, events = target.events.len(), "Webhook started.");
        }
        while let Some(joined) = tasks.join_next().await {
            if let Err(failed) = joined
                && failed.is_panic()
            {
                // One worker fewer would leave its partition undelivered
                // here with nothing to show for it: the essential task
                // ends instead, which stops the instance (and the others).
                error!(error = %failed, "A webhook task failed; stopping the webhooks.");
                return;
            }
        }
    }
}
