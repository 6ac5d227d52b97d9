//! A ringing inbound call → the `InboundEvent` the intake stores (and so a
//! voice contact for routing).
//!
//! - `channel`: `voice`; `source`: the adapter's name.
//! - `customer`: `phone:<number>` with the number normalized
//!   ([`normalize_phone`]), so a caller is the same
//!   customer on every call. A withheld number is `call:<provider>:<call id>`:
//!   one customer per call, because every anonymous caller sharing one
//!   identity would share one open conversation, and a second anonymous
//!   call would be appended to the first instead of being routed. Anything
//!   else (a SIP URI, a `client:` identity) is `caller:<as given>`.
//! - `address`: the number called (normalized the same way when it is a
//!   number): routing rules match on it.
//! - `provider_message_id`: the call id (Twilio `CallSid`, CTI `callId`): a
//!   repeated incoming-call request is stored once.
//! - `text`: `Incoming call from <caller> to <called>`.
//! - `attributes`: `provider` (`twilio`, `cti`), and the PBX's `queue` when
//!   it names one.

use crate::call::{CallEvent, CallEventKind, Direction};
use crate::parse::clip;
use crate::phone::{Caller, classify_caller, normalize_phone};
use std::collections::BTreeMap;
use switchboard_core::{ChannelKind, CustomerIdentity, IdentityError, InboundEvent};

/// Why a call event is not a new inbound contact.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotInbound {
    /// Only a ringing call starts a contact; other events update one.
    #[error("only a ringing call starts a contact")]
    NotRinging,
    /// An outbound call (an agent calling out) is not a customer's contact.
    #[error("an outbound call is not a customer contact")]
    Outbound,
    /// The caller gives no usable identity.
    #[error("caller: {0}")]
    Caller(#[from] IdentityError),
}

/// The intake event for a ringing inbound call, received by the adapter
/// named `source`.
pub fn inbound_event(event: &CallEvent, source: &str) -> Result<InboundEvent, NotInbound> {
    let CallEventKind::Ringing {
        from,
        to,
        direction,
        caller_name,
        queue,
    } = &event.kind
    else {
        return Err(NotInbound::NotRinging);
    };
    if *direction != Direction::Inbound {
        return Err(NotInbound::Outbound);
    }
    let provider = event.provider.as_str();
    let (customer, caller_text) = match classify_caller(from) {
        Caller::Phone(number) => (CustomerIdentity::new("phone", &number)?, number),
        Caller::Anonymous => (
            CustomerIdentity::new(
                "call",
                clip(
                    &format!("{provider}:{}", event.call_id),
                    CustomerIdentity::MAX_VALUE_BYTES,
                ),
            )?,
            "a withheld number".to_owned(),
        ),
        Caller::Other(other) => {
            let value = clip(&other, CustomerIdentity::MAX_VALUE_BYTES);
            (CustomerIdentity::new("caller", value)?, value.to_owned())
        }
    };
    let address = normalize_phone(to).unwrap_or_else(|| clip(to.trim(), 320).to_owned());
    let mut attributes = BTreeMap::new();
    attributes.insert("provider".to_owned(), provider.to_owned());
    if let Some(queue) = queue {
        attributes.insert("queue".to_owned(), clip(queue, 1024).to_owned());
    }
    let text = if address.is_empty() {
        format!("Incoming call from {caller_text}")
    } else {
        format!("Incoming call from {caller_text} to {address}")
    };
    Ok(InboundEvent {
        channel: ChannelKind::Voice,
        source: source.to_owned(),
        address,
        customer,
        customer_name: caller_name
            .as_deref()
            .map(|n| clip(n.trim(), 256).trim_end().to_owned())
            .filter(|n| !n.is_empty()),
        provider_message_id: Some(clip(&event.call_id, 512).to_owned()),
        subject: None,
        text,
        language: None,
        attributes,
        sent_at: event.at,
        // Every call is a contact of its own (two calls from one number are two).
        new_contact: true,
        media: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::{EndCause, Provider};
    use switchboard_core::Timestamp;

    fn ringing(from: &str, to: &str, direction: Direction) -> CallEvent {
        CallEvent {
            provider: Provider::Cti,
            call_id: "307fa962-de8d-4ffc-817b-7f6993204159".into(),
            kind: CallEventKind::Ringing {
                from: from.into(),
                to: to.into(),
                direction,
                caller_name: None,
                queue: Some("support".into()),
            },
            sequence: None,
            at: Some(Timestamp(1_795_341_600_000)),
        }
    }

    #[test]
    fn a_ringing_inbound_call_becomes_a_voice_contact() {
        let event = inbound_event(
            &ringing("493023125741", "492214710334", Direction::Inbound),
            "pbx",
        )
        .expect("inbound");
        assert_eq!(event.channel, ChannelKind::Voice);
        assert_eq!(event.source, "pbx");
        assert_eq!(event.customer.to_string(), "phone:+493023125741");
        assert_eq!(event.address, "+492214710334");
        assert_eq!(
            event.provider_message_id.as_deref(),
            Some("307fa962-de8d-4ffc-817b-7f6993204159")
        );
        assert_eq!(
            event.text,
            "Incoming call from +493023125741 to +492214710334"
        );
        assert_eq!(
            event.attributes.get("provider").map(String::as_str),
            Some("cti")
        );
        assert_eq!(
            event.attributes.get("queue").map(String::as_str),
            Some("support")
        );
        assert_eq!(event.sent_at, Some(Timestamp(1_795_341_600_000)));
        assert!(event.validate(Default::default()).is_ok());
    }

    #[test]
    fn withheld_and_odd_callers() {
        let anonymous = inbound_event(
            &ringing("anonymous", "492214710334", Direction::Inbound),
            "pbx",
        )
        .expect("inbound");
        assert_eq!(
            anonymous.customer.to_string(),
            "call:cti:307fa962-de8d-4ffc-817b-7f6993204159"
        );
        assert_eq!(
            anonymous.text,
            "Incoming call from a withheld number to +492214710334"
        );
        assert!(anonymous.validate(Default::default()).is_ok());

        let sip = inbound_event(
            &ringing(
                "sip:olena@example.com",
                "sip:support@pbx.example",
                Direction::Inbound,
            ),
            "pbx",
        )
        .expect("inbound");
        assert_eq!(sip.customer.to_string(), "caller:sip:olena@example.com");
        assert_eq!(sip.address, "sip:support@pbx.example");

        let long = "x".repeat(400);
        let clipped =
            inbound_event(&ringing(&long, &long, Direction::Inbound), "pbx").expect("inbound");
        assert_eq!(clipped.customer.value.len(), 320);
        assert!(clipped.validate(Default::default()).is_ok());
    }

    #[test]
    fn only_ringing_inbound_calls() {
        assert_eq!(
            inbound_event(&ringing("1", "2", Direction::Outbound), "pbx"),
            Err(NotInbound::Outbound)
        );
        let mut ended = ringing("1", "2", Direction::Inbound);
        ended.kind = CallEventKind::Ended {
            cause: EndCause::Completed,
            duration_secs: None,
        };
        assert_eq!(inbound_event(&ended, "pbx"), Err(NotInbound::NotRinging));
    }
}
