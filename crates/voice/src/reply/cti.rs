//! Answers to the generic CTI API, in the form Zammad gives them (a JSON
//! body with HTTP 200):
//!
//! - `{}`: nothing to do; the PBX goes on with the call as it planned (for
//!   an inbound call: its own queue, until we tell it otherwise).
//! - `{"action":"reject","reason":"busy"}`: refuse a blocked caller. The
//!   PBX still reports the `hangup`.
//! - `{"action":"dial","caller_id":"…","number":"…"}`: dial `number`,
//!   showing `caller_id`. Zammad uses it to set an outbound call's caller
//!   id; we also use it to steer an inbound call to the chosen agent's
//!   extension or SIP URI. (Zammad's own code writes `caller_id`; one page
//!   of its documentation shows `callerId`, which its code never sent.)
//! - `{"action":"release","agent":"…"}`: our own addition, the answer to an
//!   `answer` by an agent the call is no longer offered to (her phone rang
//!   past the offer's end, and the offer moved on): hang up that agent's
//!   leg and keep the caller held where they are. A PBX that ignores it
//!   leaves the agent talking to a caller routing has offered to someone
//!   else.

use super::{RejectReason, ReplyError, Target};
use serde_json::{Map, Value};

/// One answer to a CTI event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CtiReply {
    /// `{}`
    Continue,
    /// `{"action":"reject","reason":…}`
    Reject { reason: RejectReason },
    /// `{"action":"dial","caller_id":…,"number":…}` (`caller_id` left out
    /// when `None`).
    Dial {
        caller_id: Option<String>,
        target: Target,
    },
    /// `{"action":"release","agent":…}`: hang up the leg of the agent who
    /// answered; the caller stays held.
    Release { agent: String },
}

impl CtiReply {
    /// The JSON body.
    pub fn to_json(&self) -> Result<String, ReplyError> {
        let mut body = Map::new();
        match self {
            Self::Continue => {}
            Self::Reject { reason } => {
                body.insert("action".into(), "reject".into());
                body.insert("reason".into(), reason.as_str().into());
            }
            Self::Dial { caller_id, target } => {
                let number = match target {
                    Target::Number(_) | Target::Sip(_) => target.checked()?,
                    Target::Client(_) => {
                        return Err(ReplyError::Invalid {
                            field: "target",
                            reason: "a PBX dials numbers and SIP URIs, not Twilio clients",
                        });
                    }
                };
                body.insert("action".into(), "dial".into());
                if let Some(caller_id) = caller_id {
                    let ok = Target::Number(caller_id.clone()).checked().is_ok();
                    if !ok {
                        return Err(ReplyError::Invalid {
                            field: "caller_id",
                            reason: "not a phone number",
                        });
                    }
                    body.insert("caller_id".into(), caller_id.as_str().into());
                }
                body.insert("number".into(), number.into());
            }
            Self::Release { agent } => {
                body.insert("action".into(), "release".into());
                body.insert("agent".into(), agent.as_str().into());
            }
        }
        Ok(Value::Object(body).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(reply: &CtiReply) -> Value {
        let text = reply.to_json().expect("valid");
        serde_json::from_str(&text).expect("JSON")
    }

    #[test]
    fn documented_answers() {
        assert_eq!(CtiReply::Continue.to_json(), Ok("{}".to_owned()));
        assert_eq!(
            json(&CtiReply::Reject {
                reason: RejectReason::Busy
            }),
            serde_json::json!({"action": "reject", "reason": "busy"})
        );
        assert_eq!(
            json(&CtiReply::Dial {
                caller_id: Some("496990009111".into()),
                target: Target::Number("492214710334".into()),
            }),
            serde_json::json!({"action": "dial", "caller_id": "496990009111", "number": "492214710334"})
        );
        assert_eq!(
            json(&CtiReply::Dial {
                caller_id: None,
                target: Target::Sip("sip:201@pbx.example.com".into()),
            }),
            serde_json::json!({"action": "dial", "number": "sip:201@pbx.example.com"})
        );
        assert_eq!(
            json(&CtiReply::Release {
                agent: "olha".into()
            }),
            serde_json::json!({"action": "release", "agent": "olha"})
        );
    }

    #[test]
    fn bad_dials_are_refused() {
        for reply in [
            CtiReply::Dial {
                caller_id: None,
                target: Target::Client("agent".into()),
            },
            CtiReply::Dial {
                caller_id: Some("anonymous".into()),
                target: Target::Number("201".into()),
            },
            CtiReply::Dial {
                caller_id: None,
                target: Target::Number("2 01".into()),
            },
        ] {
            assert_eq!(
                reply.to_json().map_err(|e| e.kind()),
                Err("invalid"),
                "{reply:?}"
            );
        }
    }
}
