//! The widget protocol, version 1 (`docs/widget-protocol.md`): JSON text
//! frames with a `type`. No I/O here.

use serde::{Deserialize, Serialize};

/// The protocol version this server speaks.
pub const VERSION: u32 = 1;

/// What a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    Hello {
        v: u32,
        widget: String,
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        locale: Option<String>,
        #[serde(default)]
        after: Option<String>,
        /// The conversation `after` is in (the widget's), so that a
        /// visitor whose conversation closed while away still gets what
        /// was said before it closed.
        #[serde(default)]
        conversation: Option<String>,
    },
    Prechat {
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        email: Option<String>,
        #[serde(default)]
        topic: Option<String>,
    },
    Message {
        client_id: String,
        text: String,
        #[serde(default)]
        attachments: Vec<String>,
    },
    Typing {
        on: bool,
    },
    Read {
        seq: String,
    },
    Rating {
        score: u8,
        #[serde(default)]
        comment: Option<String>,
        /// The closed conversation rated, as `closed` named it: lets a
        /// visitor who reloaded the page (whose session no longer has it)
        /// rate it.
        #[serde(default)]
        conversation: Option<String>,
    },
    Offline {
        /// Optional, as the protocol says (absent or `null`): a form
        /// without it is no less a message to answer.
        #[serde(default)]
        name: Option<String>,
        email: String,
        text: String,
        /// Names the form like a message's `client_id`: the same form sent
        /// again (after a reconnect that lost its `result`) is stored once.
        #[serde(default)]
        client_id: Option<String>,
    },
    /// A struct variant, not a unit one: serde lets an internally tagged
    /// unit variant carry any other field, whatever `deny_unknown_fields`.
    Ping {},
}

/// What the server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Welcome {
        v: u32,
        token: String,
        expires_at: u64,
        visitor: String,
        conversation: Option<String>,
        online: bool,
        form: Option<&'static str>,
        /// The largest frame this server reads (`max_frame_bytes`): a
        /// client keeps its messages under it.
        max_frame_bytes: usize,
    },
    Ack {
        client_id: String,
        seq: String,
        conversation: String,
    },
    Message {
        seq: String,
        id: String,
        from: &'static str,
        #[serde(skip_serializing_if = "String::is_empty")]
        name: String,
        text: String,
        at: u64,
        attachments: Vec<Attachment>,
        /// The visitor's own message: the `client_id` it was sent with.
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
        /// The conversation the message belongs to: a tab that joined it
        /// through another tab of the visitor learns it here.
        #[serde(skip_serializing_if = "String::is_empty")]
        conversation: String,
    },
    Typing {
        on: bool,
        name: String,
    },
    Read {
        seq: String,
    },
    Agent {
        state: &'static str,
        name: String,
    },
    Queue {
        position: u32,
        estimated_wait_secs: Option<u64>,
    },
    Closed {
        reason: &'static str,
        conversation: String,
    },
    Result {
        of: &'static str,
        ok: bool,
    },
    Error {
        code: &'static str,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
    },
    Pong,
}

/// An attachment as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub content_type: String,
    pub size: u64,
}

impl ServerFrame {
    pub fn error(code: &'static str, message: impl Into<String>) -> ServerFrame {
        ServerFrame::Error {
            code,
            message: message.into(),
            client_id: None,
        }
    }
}

/// The `client_id` of a `message` frame, read without the rest of it: a
/// message refused before it is parsed (over the rate limit) still names
/// the message, so the widget retries it.
pub fn message_client_id(text: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Peek {
        #[serde(rename = "type")]
        kind: String,
        client_id: Option<String>,
    }
    let peek: Peek = serde_json::from_str(text).ok()?;
    let id = peek.client_id.filter(|id| client_id_ok(id))?;
    (peek.kind == "message").then_some(id)
}

/// Parses a client frame; the error is the `bad_frame` message.
pub fn parse(text: &str) -> Result<ClientFrame, String> {
    switchboard_channel::parse_json_object(text)
}

/// A `client_id`: 1–64 printable ASCII characters without `|` or `:`
/// (it becomes part of the provider message id `<visitor>:<client_id>`).
pub fn client_id_ok(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'|' && b != b':')
}

pub use switchboard_channel::live::seq_ok;

/// The BCP 47 tag of a widget locale, when it looks like one.
pub fn language(locale: Option<&str>) -> Option<String> {
    let l = locale?.trim();
    let ok = !l.is_empty()
        && l.len() <= 35
        && l.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| l.replace('_', "-"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn client_frames_parse_strictly() {
        assert_eq!(
            parse(r#"{"type":"hello","v":1,"widget":"shop"}"#).unwrap(),
            ClientFrame::Hello {
                v: 1,
                widget: "shop".into(),
                token: None,
                locale: None,
                after: None,
                conversation: None,
            }
        );
        assert!(parse(r#"{"type":"message","client_id":"c1","text":"hi","x":1}"#).is_err());
        assert!(parse(r#"{"type":"explode"}"#).is_err());
        assert!(parse("not json").is_err());
        assert!(parse(r#"{"type":"rating","score":300}"#).is_err());
    }

    /// A message the parser refuses (a lone surrogate, which browsers'
    /// `JSON.stringify` writes) still names its `client_id`, so the
    /// widget learns which message failed.
    #[test]
    fn an_unreadable_message_still_names_its_client_id() {
        let text = r#"{"type":"message","client_id":"c7","text":"\ud83d"}"#;
        assert!(parse(text).is_err());
        assert_eq!(message_client_id(text), Some("c7".into()));
        assert_eq!(
            message_client_id(r#"{"type":"rating","client_id":"c7"}"#),
            None
        );
    }

    #[test]
    fn server_frames_serialize_as_documented() {
        let f = ServerFrame::Ack {
            client_id: "c1".into(),
            seq: "1-0".into(),
            conversation: "0-X".into(),
        };
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"type":"ack","client_id":"c1","seq":"1-0","conversation":"0-X"}"#
        );
        let q = ServerFrame::Queue {
            position: 2,
            estimated_wait_secs: None,
        };
        assert_eq!(
            serde_json::to_string(&q).unwrap(),
            r#"{"type":"queue","position":2,"estimated_wait_secs":null}"#
        );
    }

    #[test]
    fn ids_and_seqs_are_checked() {
        assert!(client_id_ok("m-1"));
        assert!(!client_id_ok(""));
        assert!(!client_id_ok("a:b"));
        assert!(!client_id_ok(&"x".repeat(65)));
        assert!(seq_ok("1795389528425-0"));
        assert!(!seq_ok("1795389528425"));
        assert!(!seq_ok("a-0"));
        assert_eq!(language(Some("pt_BR")), Some("pt-BR".into()));
        assert_eq!(language(Some("<b>")), None);
    }

    /// The offline form's `name` is optional (docs/widget-protocol.md): a
    /// form without it was refused as `bad_frame`.
    #[test]
    fn an_offline_form_needs_no_name() {
        let form = parse(r#"{"type":"offline","email":"a@b.example","text":"Call me"}"#);
        assert!(
            matches!(form, Ok(ClientFrame::Offline { name: None, .. })),
            "{form:?}"
        );
        let form = parse(r#"{"type":"offline","name":null,"email":"a@b.example","text":"x"}"#);
        assert!(
            matches!(form, Ok(ClientFrame::Offline { name: None, .. })),
            "{form:?}"
        );
    }

    /// Found by the `chat_frames` fuzz target (27 bytes, as found): `ping`
    /// took unknown fields.
    #[test]
    fn ping_takes_no_fields() {
        assert!(parse(r#"{"type":"ping","nnnn":true}"#).is_err());
        assert_eq!(parse(r#"{"type":"ping"}"#), Ok(ClientFrame::Ping {}));
    }

    /// Found by the `chat_frames` fuzz target (11 bytes, as found): a JSON
    /// array read as a frame, its first element as the type.
    #[test]
    fn frames_are_objects_only() {
        assert!(parse(r#"["prechat"]"#).is_err());
        assert!(parse(r#" ["typing",true]"#).is_err());
        assert!(parse("\r\n {\"type\":\"ping\"}").is_ok());
    }

    /// Found by the `chat_frames` fuzz target (input minimized by `tmin`):
    /// 20 digits beyond `u64::MAX` passed as a seq, which Redis refuses as a
    /// stream id, so the session could never read the log after it.
    #[test]
    fn seqs_beyond_u64_are_refused() {
        let frame = r#"{"type":"hello","v":1,"widget":"","after":"18446744073709551616-0"}"#;
        let Ok(ClientFrame::Hello {
            after: Some(after), ..
        }) = parse(frame)
        else {
            panic!("{frame} does not parse");
        };
        assert!(!seq_ok(&after));
        assert!(!seq_ok("0-18446744073709551616"));
        assert!(!seq_ok("99999999999999999999-0"));
        assert!(seq_ok("18446744073709551615-0"));
        assert!(seq_ok("0-0"));
    }

    /// The last stream id there is: Redis refuses it as the start of a
    /// read after it (`XRANGE key (id +`: "invalid start ID"), so a
    /// session resumed after it would never read its log.
    #[test]
    fn the_last_stream_id_is_refused() {
        assert!(!seq_ok("18446744073709551615-18446744073709551615"));
        assert!(seq_ok("18446744073709551615-18446744073709551614"));
        assert!(seq_ok("18446744073709551614-18446744073709551615"));
    }
}
