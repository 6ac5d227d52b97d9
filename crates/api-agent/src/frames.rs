//! The agent websocket protocol, version 1 (`docs/agent-api.md`): JSON
//! text frames with a `type`.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use switchboard_store::RouteEvent;

/// The protocol version, sent in `hello`. A client that does not know it
/// should not go on.
pub const PROTOCOL_VERSION: u32 = 1;

/// What the server sends.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// First frame of a session: who you are and what you hold.
    Hello { version: u32, me: serde_json::Value },
    /// A contact is offered to you until `until` (ms since the epoch).
    Offer {
        contact_id: String,
        channel: String,
        until: u64,
    },
    /// An offer was withdrawn: `declined`, `expired`, `revoked` or `abandoned`.
    OfferWithdrawn { contact_id: String, reason: String },
    /// A contact is yours (accepted, or assigned without asking).
    Assigned { contact_id: String, channel: String },
    /// A contact you held went back to a queue (`transfer`,
    /// `agent_disconnected`, `unreachable`).
    Requeued { contact_id: String, reason: String },
    /// A contact you held was closed.
    Closed {
        contact_id: String,
        disposition: String,
    },
    /// Your presence or load changed.
    Presence {
        presence: String,
        reason: String,
        loads: Loads,
    },
    /// The answer to a client command with a `ref`.
    Result {
        #[serde(rename = "ref")]
        reference: String,
        ok: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<ErrorBody>,
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<serde_json::Value>,
    },
    /// The answer to `ping`, with its `ref` when it had one.
    Pong {
        #[serde(rename = "ref", skip_serializing_if = "String::is_empty")]
        reference: String,
    },
    /// A new entry in the log of a contact you hold (`in`, `out`, `note`,
    /// `rating`, …): the customer's messages live, and what other tabs sent.
    Message {
        contact_id: String,
        seq: String,
        dir: String,
        text: String,
        at: u64,
        /// A customer's message (`in`): the media ids it brought, the
        /// attachments `GET /contacts/{id}/media/{media_id}` serves.
        #[serde(skip_serializing_if = "Option::is_none")]
        media: Option<Vec<String>>,
    },
    /// The customer types (chat).
    Typing { contact_id: String, on: bool },
    /// The customer has read up to `seq` (chat).
    Read { contact_id: String, seq: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// Contacts held per channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Loads {
    pub chat: u32,
    pub email: u32,
    pub social: u32,
    pub voice: u32,
}

impl From<[u32; 4]> for Loads {
    fn from(l: [u32; 4]) -> Self {
        Loads {
            chat: l[0],
            email: l[1],
            social: l[2],
            voice: l[3],
        }
    }
}

/// What a client sends. Every command may carry a `ref`; the server answers
/// it with a `result` frame of the same `ref`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    Presence {
        #[serde(rename = "ref", default)]
        reference: String,
        presence: String,
        #[serde(default)]
        reason: String,
    },
    Accept {
        #[serde(rename = "ref", default)]
        reference: String,
        contact_id: String,
    },
    Decline {
        #[serde(rename = "ref", default)]
        reference: String,
        contact_id: String,
    },
    Reply {
        #[serde(rename = "ref", default)]
        reference: String,
        contact_id: String,
        text: String,
        /// The client's name for this reply: a retry with the same one is
        /// sent and logged once.
        #[serde(default)]
        client_id: Option<String>,
    },
    Note {
        #[serde(rename = "ref", default)]
        reference: String,
        contact_id: String,
        text: String,
    },
    Close {
        #[serde(rename = "ref", default)]
        reference: String,
        contact_id: String,
        #[serde(default)]
        disposition: String,
    },
    /// You type (or stopped) in a contact you hold: the customer sees it
    /// (chat).
    Typing {
        #[serde(rename = "ref", default)]
        reference: String,
        contact_id: String,
        on: bool,
    },
    /// You have read the customer's messages up to `seq` (an entry's
    /// `seq`) in a contact you hold: the customer sees them as read (chat).
    Read {
        #[serde(rename = "ref", default)]
        reference: String,
        contact_id: String,
        seq: String,
    },
    /// A struct variant, not a unit one: serde lets an internally tagged
    /// unit variant carry any other field, whatever `deny_unknown_fields`.
    Ping {
        #[serde(rename = "ref", default)]
        reference: String,
    },
}

/// Parses a client frame; the error is the `bad_frame` message.
pub fn parse(text: &str) -> Result<ClientFrame, String> {
    switchboard_channel::parse_json_object(text)
}

pub use switchboard_channel::entry_text;

/// The frames a routing event means for the agent it concerns: the event's
/// own frame, then (when the event carries the agent's state) a `presence`
/// frame with the agent's presence and load after it.
pub fn frames_for(event: &RouteEvent) -> Vec<(String, ServerFrame)> {
    let Some((agent, frame)) = frame_for(event) else {
        return Vec::new();
    };
    let mut out = vec![(agent.clone(), frame)];
    if !matches!(event.kind.as_str(), "presence" | "agent")
        && let Some(live) = &event.live
    {
        out.push((
            agent,
            ServerFrame::Presence {
                presence: live.presence.clone(),
                reason: live.reason.clone(),
                loads: live.loads.into(),
            },
        ));
    }
    out
}

fn frame_for(event: &RouteEvent) -> Option<(String, ServerFrame)> {
    let agent = event.agent.clone()?;
    let f = |k: &str| event.fields.get(k).cloned().unwrap_or_default();
    let contact = || event.contact.clone().unwrap_or_default();
    let frame = match event.kind.as_str() {
        "offered" => ServerFrame::Offer {
            contact_id: contact(),
            channel: f("channel"),
            until: f("until").parse().unwrap_or(0),
        },
        "declined" | "expired" | "revoked" | "abandoned" => ServerFrame::OfferWithdrawn {
            contact_id: contact(),
            reason: event.kind.clone(),
        },
        "assigned" | "accepted" => ServerFrame::Assigned {
            contact_id: contact(),
            channel: f("channel"),
        },
        "requeued" => ServerFrame::Requeued {
            contact_id: contact(),
            reason: f("reason"),
        },
        "closed" => ServerFrame::Closed {
            contact_id: contact(),
            disposition: f("disposition"),
        },
        "presence" | "agent" => {
            let live = event.live.as_ref()?;
            ServerFrame::Presence {
                presence: live.presence.clone(),
                reason: live.reason.clone(),
                loads: live.loads.into(),
            }
        }
        _ => return None,
    };
    Some((agent, frame))
}

/// Fields of an event, for tests.
pub fn event(kind: &str, agent: &str, fields: &[(&str, &str)]) -> RouteEvent {
    let fields: HashMap<String, String> = fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    RouteEvent {
        id: "1-0".into(),
        kind: kind.into(),
        contact: fields.get("contact").cloned(),
        agent: Some(agent.into()),
        live: None,
        record: None,
        fields,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn events_become_frames_for_their_agent() {
        let e = event(
            "offered",
            "olena",
            &[("contact", "1-ABC"), ("channel", "chat"), ("until", "99")],
        );
        assert_eq!(
            frame_for(&e),
            Some((
                "olena".into(),
                ServerFrame::Offer {
                    contact_id: "1-ABC".into(),
                    channel: "chat".into(),
                    until: 99
                }
            ))
        );
        let json = serde_json::to_string(&frame_for(&e).map(|f| f.1)).expect("json");
        assert_eq!(
            json,
            r#"{"type":"offer","contact_id":"1-ABC","channel":"chat","until":99}"#
        );
        assert!(frames_for(&event("enqueued", "x", &[])).is_empty());
    }

    #[test]
    fn live_frames_serialize_as_documented() {
        let f = ServerFrame::Message {
            contact_id: "1-ABC".into(),
            seq: "5-0".into(),
            dir: "in".into(),
            text: "hi".into(),
            at: 7,
            media: Some(vec!["M-1".into()]),
        };
        assert_eq!(
            serde_json::to_string(&f).expect("json"),
            r#"{"type":"message","contact_id":"1-ABC","seq":"5-0","dir":"in","text":"hi","at":7,"media":["M-1"]}"#
        );
        let t: ClientFrame =
            serde_json::from_str(r#"{"type":"typing","contact_id":"1-ABC","on":true}"#)
                .expect("valid");
        assert!(matches!(t, ClientFrame::Typing { on: true, .. }));
        assert_eq!(entry_text(r#"{"text":"a"}"#), "a");
        assert_eq!(entry_text(r#"{"author":"x","message":{"text":"b"}}"#), "b");
        assert_eq!(entry_text("not json"), "");
    }

    #[test]
    fn client_frames_parse_strictly() {
        let f: ClientFrame =
            serde_json::from_str(r#"{"type":"accept","ref":"7","contact_id":"1-ABC"}"#)
                .expect("valid");
        assert_eq!(
            f,
            ClientFrame::Accept {
                reference: "7".into(),
                contact_id: "1-ABC".into()
            }
        );
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"accept"}"#).is_err());
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"explode"}"#).is_err());
        assert!(
            serde_json::from_str::<ClientFrame>(
                r#"{"type":"accept","contact_id":"1-ABC","extra":1}"#
            )
            .is_err(),
            "unknown fields are refused"
        );
        assert_eq!(
            parse(r#"{"type":"ping"}"#),
            Ok(ClientFrame::Ping {
                reference: String::new()
            })
        );
        // Every command may carry a `ref` (docs/agent-api.md); `pong`
        // echoes it, and leaves it out when there was none.
        assert_eq!(
            parse(r#"{"type":"ping","ref":"p1"}"#),
            Ok(ClientFrame::Ping {
                reference: "p1".into()
            })
        );
        let pong = |r: &str| {
            serde_json::to_string(&ServerFrame::Pong {
                reference: r.into(),
            })
            .unwrap()
        };
        assert_eq!(pong("p1"), r#"{"type":"pong","ref":"p1"}"#);
        assert_eq!(pong(""), r#"{"type":"pong"}"#);
        assert!(
            parse(r#"{"type":"ping","junk":1}"#).is_err(),
            "a ping carries nothing else"
        );
        assert!(
            parse(r#"["accept","7","1-ABC"]"#).is_err(),
            "a frame is an object, not an array"
        );
    }
}
