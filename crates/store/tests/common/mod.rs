//! Shared helpers for the store's tests against a real redis-server.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;
use switchboard_core::{ChannelKind, CustomerIdentity, InboundEvent};
use switchboard_store::{IntakeSettings, RedisIntake, Store, StoreConfig};
use switchboard_testkit::RedisServer;

pub fn store_for(redis: &RedisServer, partitions: u16) -> Store {
    Store::new(StoreConfig::local(redis.url(), partitions)).unwrap()
}

pub fn intake_for(store: &Store) -> RedisIntake {
    RedisIntake::new(
        store.clone(),
        IntakeSettings {
            dedupe_window: Duration::from_secs(7 * 24 * 3600),
            limits: Default::default(),
        },
    )
}

pub fn event(customer: &str, provider_id: Option<&str>, text: &str) -> InboundEvent {
    InboundEvent {
        channel: ChannelKind::Chat,
        source: "website".into(),
        address: "widget-1".into(),
        customer: CustomerIdentity::new("visitor", customer).unwrap(),
        customer_name: Some("Olena".into()),
        provider_message_id: provider_id.map(str::to_owned),
        subject: None,
        text: text.into(),
        language: Some("uk".into()),
        attributes: BTreeMap::new(),
        sent_at: None,
        new_contact: false,
        media: Vec::new(),
    }
}

pub async fn raw(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}
