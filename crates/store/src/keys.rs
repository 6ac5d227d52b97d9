//! The Redis key layout.
//!
//! Every key of a partition starts with `<prefix>:{p<N>}`; the braces are a
//! Redis Cluster hash tag, so one atomic script can touch all keys of a
//! partition on a single Redis and on a cluster alike. Keys that are not per
//! partition carry their own tag (an outbox is `<prefix>:{o:<source>}:…`).

use crate::StoreError;
use switchboard_core::{ContactId, ConversationId, CustomerIdentity, Partition};

/// Builds key names: the Rust side of the layout (docs/architecture.md
/// "Key layout"). The Lua scripts derive the names of a key's siblings
/// from the keys they are given (`tag .. ':conv:'`, `sibling(...)`).
#[derive(Debug, Clone)]
pub struct KeySpace {
    prefix: String,
    partitions: u16,
}

impl KeySpace {
    pub fn new(prefix: &str, partitions: u16) -> Result<KeySpace, StoreError> {
        let ok = !prefix.is_empty()
            && prefix.len() <= 32
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
        if !ok {
            return Err(StoreError::Config(format!(
                "redis.key_prefix {prefix:?} must be 1 to 32 characters of A-Za-z0-9_.-"
            )));
        }
        if partitions == 0 || partitions > 1024 {
            return Err(StoreError::Config(
                "redis.partitions must be between 1 and 1024".into(),
            ));
        }
        Ok(KeySpace {
            prefix: prefix.to_owned(),
            partitions,
        })
    }

    pub fn partitions(&self) -> u16 {
        self.partitions
    }

    pub fn all_partitions(&self) -> impl Iterator<Item = Partition> + use<> {
        (0..self.partitions).map(Partition)
    }

    /// The partition of a customer on a source: all their contacts live there.
    pub fn partition_of(&self, source: &str, customer: &CustomerIdentity) -> Partition {
        let key = format!("{source}\0{}\0{}", customer.scheme, customer.value);
        Partition::of(key.as_bytes(), self.partitions)
    }

    /// `<prefix>:{p<N>}`: what every key of the partition starts with.
    pub fn tag(&self, p: Partition) -> String {
        format!("{}:{{p{}}}", self.prefix, p.0)
    }

    pub fn meta(&self) -> String {
        format!("{}:meta", self.prefix)
    }

    /// The mark of a message seen from `customer` on `source` with the
    /// provider's id: `msgseen:<source>:<length>:<customer>:<id>`. The
    /// customer is part of it (since 2026-11-27): two customers whose
    /// messages carry the same id (a mail generator with poor
    /// Message-IDs, a forged one) are two messages, never one stored and
    /// the other acknowledged as its duplicate. The customer's length keeps
    /// the key unambiguous whatever the customer and the id contain, and
    /// the name apart from the older `dedupe:` marks, whose ids an older
    /// instance takes as they come (an id shaped like `<length>:<customer>:
    /// <id>` cannot stand for another customer's new mark).
    pub fn dedupe(
        &self,
        p: Partition,
        source: &str,
        customer: &CustomerIdentity,
        provider_message_id: &str,
    ) -> String {
        let customer = customer.to_string();
        format!(
            "{}:msgseen:{source}:{}:{customer}:{provider_message_id}",
            self.tag(p),
            customer.len()
        )
    }

    /// Where a message's mark was kept before the customer was part of it
    /// (`dedupe:<source>:<id>`), and updates' marks before 2026-11-26: read
    /// only, until the last of them expires (one dedupe window after the
    /// upgrade).
    pub fn dedupe_before_2026_11_27(
        &self,
        p: Partition,
        source: &str,
        provider_message_id: &str,
    ) -> String {
        format!("{}:dedupe:{source}:{provider_message_id}", self.tag(p))
    }

    /// How many automatic answers the customer got on `source` in the
    /// current hour (a counter that expires an hour after the first).
    pub fn auto_answers(&self, p: Partition, source: &str, customer: &CustomerIdentity) -> String {
        format!("{}:autoans:{source}:{customer}", self.tag(p))
    }

    /// The mark of an update (edit, receipt) applied, by its `update_id`: a
    /// namespace of its own, apart from messages' ids.
    pub fn update_seen(&self, p: Partition, source: &str, update_id: &str) -> String {
        format!("{}:updseen:{source}:{update_id}", self.tag(p))
    }

    /// A reply's id at the provider → `"<conversation>|<message>"`, written
    /// when the provider accepts the reply, so that its receipts find it.
    pub fn reply_ref(&self, p: Partition, source: &str, provider_message_id: &str) -> String {
        format!("{}:reply:{source}:{provider_message_id}", self.tag(p))
    }

    /// Set while replies to `customer` on `source` may be on their way
    /// (queued or handed out in the last minutes): only then is a receipt
    /// for a reply not recorded yet kept as early. Written in the
    /// receipts' own partition.
    pub fn replying(&self, p: Partition, source: &str, customer: &CustomerIdentity) -> String {
        format!(
            "{}:replying:{source}:{}:{}",
            self.tag(p),
            customer.scheme,
            customer.value
        )
    }

    /// Where a reply's receipts are applied when its conversation lives in
    /// another partition than the one the receipts arrive in (a chat
    /// offline form answered by email: the conversation is the chat
    /// source's, the bounce comes to the email source) → the partition's
    /// number. Written next to [`Self::reply_ref`], in the receipts' own
    /// partition.
    pub fn reply_home(&self, p: Partition, source: &str, provider_message_id: &str) -> String {
        format!("{}:replyhome:{source}:{provider_message_id}", self.tag(p))
    }

    /// Each reply's latest status at the provider (`<rank>|<JSON>` by
    /// message id).
    pub fn conversation_status(&self, id: &ConversationId) -> String {
        format!("{}:conv:{id}:status", self.tag(id.partition()))
    }

    pub fn open_conversation(
        &self,
        p: Partition,
        source: &str,
        customer: &CustomerIdentity,
    ) -> String {
        format!("{}:open:{source}:{customer}", self.tag(p))
    }

    pub fn contact(&self, id: &ContactId) -> String {
        format!("{}:contact:{id}", self.tag(id.partition()))
    }

    pub fn conversation(&self, id: &ConversationId) -> String {
        format!("{}:conv:{id}", self.tag(id.partition()))
    }

    pub fn conversation_log(&self, id: &ConversationId) -> String {
        format!("{}:conv:{id}:log", self.tag(id.partition()))
    }

    /// Delivery states of outbound messages, a hash by message id.
    pub fn conversation_delivery(&self, id: &ConversationId) -> String {
        format!("{}:conv:{id}:delivery", self.tag(id.partition()))
    }

    /// Contacts created and not yet taken by a router.
    pub fn routing(&self, p: Partition) -> String {
        format!("{}:routing", self.tag(p))
    }

    /// The partition's event feed for outbound webhooks (`docs/webhooks.md`):
    /// every webhook event of the partition's contacts, in causal order.
    pub fn feed(&self, p: Partition) -> String {
        format!("{}:feed", self.tag(p))
    }

    /// Marks a routing event (by its webhook event id,
    /// `<contact>:<kind>:<n>`) as copied into the partition's feed, so that
    /// it is copied once. Not by its number alone: routing's numbering may
    /// start again (its counter deleted, or rolled back by a failover of
    /// the routing node), and another contact's event of a number seen
    /// before was then taken for a copy and never sent.
    pub fn feed_seen(&self, p: Partition, event_id: &str) -> String {
        format!("{}:hookseen:{event_id}", self.tag(p))
    }

    /// Who delivers webhook `name` from the partition's feed (a lease).
    pub fn feed_holder(&self, p: Partition, name: &str) -> String {
        format!("{}:hook:{name}:holder", self.tag(p))
    }

    /// `<prefix>:{r}`: every key of the routing state (agents, queues,
    /// offers, the lease) carries this one hash tag, so each assignment is
    /// one atomic script on one Redis Cluster slot. Routing is a few small
    /// writes per contact; one shard carries it easily, while the bulky
    /// per-customer data stays spread over the partitions.
    pub fn route_tag(&self) -> String {
        format!("{}:{{r}}", self.prefix)
    }

    pub fn route(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.route_tag())
    }

    pub fn route_agent(&self, agent: &str) -> String {
        self.route(&format!("agent:{agent}"))
    }

    /// The agent's live sessions: holder (an instance's websockets, or
    /// `http` for heartbeats) → until when (ms).
    pub fn route_sessions(&self, agent: &str) -> String {
        self.route(&format!("sessions:{agent}"))
    }

    pub fn route_held(&self, agent: &str) -> String {
        self.route(&format!("held:{agent}"))
    }

    pub fn route_contact(&self, contact: &ContactId) -> String {
        self.route(&format!("c:{contact}"))
    }

    pub fn route_decisions(&self, contact: &ContactId) -> String {
        self.route(&format!("why:{contact}"))
    }

    pub fn route_sticky(&self, customer_key: &str) -> String {
        self.route(&format!("sticky:{customer_key}"))
    }

    pub fn outbox(&self, source: &str) -> String {
        format!("{}:{{o:{source}}}:outbox", self.prefix)
    }

    /// `<prefix>:{c:<source>}:state:<key>`: one value of an adapter's own
    /// state (checkpoints, leases).
    pub fn channel_state(&self, source: &str, key: &str) -> String {
        format!("{}:{{c:{source}}}:state:{key}", self.prefix)
    }

    /// `<prefix>:live`: the base of the live doorbell's pub/sub channels
    /// (`<prefix>:live:<contact>`, [`crate::live`]). Not keys: `PUBLISH`
    /// on a cluster reaches every node whatever the name's slot.
    pub fn live(&self) -> String {
        format!("{}:live", self.prefix)
    }

    pub fn outbox_deferred(&self, source: &str) -> String {
        format!("{}:{{o:{source}}}:deferred", self.prefix)
    }

    /// Outbox entries that could not be read, set aside for inspection.
    pub fn outbox_unreadable(&self, source: &str) -> String {
        format!("{}:{{o:{source}}}:unreadable", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_a_contact_share_its_partition_tag() {
        let ks = KeySpace::new("sb", 8).expect("valid");
        let customer = CustomerIdentity::new("email", "a@b.example").expect("valid");
        let p = ks.partition_of("mail", &customer);
        let contact = ContactId::new(p);
        let conv = ConversationId::new(p);
        let tag = ks.tag(p);
        for key in [
            ks.dedupe(p, "mail", &customer, "<x@y>"),
            ks.dedupe_before_2026_11_27(p, "mail", "<x@y>"),
            ks.auto_answers(p, "mail", &customer),
            ks.open_conversation(p, "mail", &customer),
            ks.contact(&contact),
            ks.conversation(&conv),
            ks.conversation_log(&conv),
            ks.routing(p),
            ks.feed(p),
            ks.feed_seen(p, &format!("{contact}:closed:7")),
            ks.feed_holder(p, "crm"),
        ] {
            assert!(key.starts_with(&tag), "{key} outside {tag}");
        }
        assert_eq!(ks.tag(Partition(3)), "sb:{p3}");
    }

    #[test]
    fn bad_prefixes_and_counts_are_refused() {
        assert!(KeySpace::new("", 1).is_err());
        assert!(KeySpace::new("a{b}", 1).is_err());
        assert!(KeySpace::new("sb", 0).is_err());
        assert!(KeySpace::new("sb", 1025).is_err());
    }
}
