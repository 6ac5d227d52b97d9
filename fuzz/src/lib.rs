//! What every social parser target checks on what a parser returns: the
//! rest of the untrusted path, `SocialMessage::into_inbound` and
//! `InboundEvent::validate`, must not panic either, and the intake may
//! refuse a parsed message only for a reason the parsers knowingly leave to
//! it (see `allowed_refusal`). The voice targets' shared checks are in
//! [`voice`].

use switchboard_core::InvalidEvent;
use switchboard_social::{Platform, SocialItem};

/// The `source` every target gives `into_inbound`.
pub const SOURCE: &str = "fuzz";

/// Runs every `Message` item through `into_inbound("fuzz")` and
/// `validate(Default::default())`.
///
/// The parsers build the customer identity with `CustomerIdentity::new`,
/// bound names (256 bytes) and languages (35 bytes), never return a message
/// without text or attachment (and an attachment always adds a line of
/// text), and `into_inbound` clips the attributes it adds. So `validate` can
/// only refuse a length the parser does not bound: the `text` (64 KiB),
/// the `address` (320 bytes: Meta's `entry[].id`, WhatsApp's
/// `phone_number_id`, the generic `account`) and, for Meta, the
/// `provider_message_id` (512 bytes: the `mid`/`wamid` as the provider sent
/// it). The intake refuses such a message and the webhook counts it as
/// invalid; anything else would be a parser bug.
pub fn check_items(items: Vec<SocialItem>) {
    for item in items {
        if let SocialItem::Message(m) = item {
            let platform = m.platform;
            let event = m.into_inbound(SOURCE);
            if let Err(e) = event.validate(Default::default()) {
                assert!(
                    allowed_refusal(platform, &e),
                    "{platform:?} message refused by the intake: {e:?}"
                );
            }
        }
    }
}

fn allowed_refusal(platform: Platform, e: &InvalidEvent) -> bool {
    let InvalidEvent::TooLong { field, .. } = e else {
        return false;
    };
    match platform {
        Platform::Messenger | Platform::Instagram | Platform::WhatsApp => {
            matches!(*field, "text" | "address" | "provider_message_id")
        }
        // "<chat id>:<message id>" and no account.
        Platform::Telegram => *field == "text",
        // The id is checked to be 1 to 512 bytes.
        Platform::Generic => matches!(*field, "text" | "address"),
    }
}

pub mod voice;
