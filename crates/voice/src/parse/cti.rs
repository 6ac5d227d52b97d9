//! The generic CTI API, as Zammad documents it: a PBX POSTs one event per
//! request, as JSON or as a form, to a URL that carries a shared token
//! ([`verify_token`](crate::verify_token)).
//!
//! | field | events | meaning |
//! |---|---|---|
//! | `event` | all | `newCall`, `answer` or `hangup` |
//! | `callId` | all | the PBX's id of the call, the same in all its events (1 to 250 bytes, so that it is never cut when it becomes a message id or an anonymous caller's identity) |
//! | `from` | all | the calling number (`493055571600`, `02214710334`, `anonymous`) |
//! | `to` | all | the called number |
//! | `direction` | all | `in` or `out` |
//! | `user` | optional | the user(s) involved: for `in`, those the call rings or who answered; for `out`, the caller. A form repeats `user[]` per user; JSON gives a string or an array |
//! | `queue` | optional | the PBX's queue name |
//! | `answeringNumber` | `answer`, `hangup`, optional | who answered (a phone number, login or id) |
//! | `cause` | `hangup` | `normalClearing`, `busy`, `cancel`, `noAnswer`, `congestion`, `notFound`, `forwarded` |
//!
//! ```json
//! {"event": "newCall", "from": "493023125741", "to": "492214710334",
//!  "direction": "in", "callId": "307fa962-de8d-4ffc-817b-7f6993204159",
//!  "user": ["Christopher Miller", "Emma Taylor"]}
//! ```
//!
//! ```text
//! event=hangup&from=493023125741&to=492214710334&direction=in
//!   &callId=307fa962-de8d-4ffc-817b-7f6993204159&cause=cancel
//! ```
//!
//! Numbers sent as JSON numbers are taken as their digits. Unknown fields
//! are ignored. A `cause` we do not know is kept as
//! [`HangupCause::Other`]. `multipart/form-data` is not read (send
//! `application/x-www-form-urlencoded` or JSON).

use super::{Form, MAX_BODY_BYTES, ParseError, clip, parse_form, text};
use crate::call::{CallEvent, CallEventKind, Direction, EndCause, Provider};
use serde::Deserialize;

/// The longest `callId` (Zammad's documented maximum).
pub const MAX_CALL_ID_BYTES: usize = 250;
/// The most `user` entries we keep.
pub const MAX_USERS: usize = 32;
/// The longest `from`, `to`, `user`, `queue`, `answeringNumber`.
const MAX_TEXT_BYTES: usize = 256;

/// How the body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtiFormat {
    /// `application/json`
    Json,
    /// `application/x-www-form-urlencoded`
    Form,
}

impl CtiFormat {
    /// The format a `Content-Type` header names (parameters such as
    /// `charset` are ignored), or `None` for any other type.
    pub fn from_content_type(content_type: Option<&str>) -> Option<Self> {
        let media = content_type?.split(';').next()?.trim();
        if media.eq_ignore_ascii_case("application/json") {
            Some(Self::Json)
        } else if media.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            Some(Self::Form)
        } else {
            None
        }
    }
}

/// One CTI event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtiEvent {
    /// `event`, with the hangup's `cause`.
    pub kind: CtiEventKind,
    /// `callId`.
    pub call_id: String,
    /// `from` (may be `anonymous`).
    pub from: String,
    /// `to`.
    pub to: String,
    /// `direction`: `in` or `out`.
    pub direction: Direction,
    /// `user` / `user[]`: the PBX users involved (names), the first
    /// [`MAX_USERS`]; none for a hangup (not read).
    pub users: Vec<String>,
    /// `queue` (not read for a hangup).
    pub queue: Option<String>,
    /// `answeringNumber` (not read for a hangup).
    pub answering_number: Option<String>,
}

/// `event`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CtiEventKind {
    /// `newCall`
    NewCall,
    /// `answer`
    Answer,
    /// `hangup`, with its `cause` when given.
    Hangup { cause: Option<HangupCause> },
}

/// `cause` of a `hangup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HangupCause {
    /// `normalClearing`: one party hung up after the call was established.
    NormalClearing,
    /// `busy`: the called party was busy.
    Busy,
    /// `cancel`: the caller hung up before the called party picked up.
    Cancel,
    /// `noAnswer`: the called party did not answer (or rejected the call,
    /// e.g. do-not-disturb).
    NoAnswer,
    /// `congestion`: the called party could not be reached.
    Congestion,
    /// `notFound`: the number does not exist or the party is offline.
    NotFound,
    /// `forwarded`: the call was forwarded to another party.
    Forwarded,
    /// Any other cause, as sent (at most 64 bytes).
    Other(String),
}

impl HangupCause {
    fn parse(value: &str) -> Self {
        match value {
            "normalClearing" => Self::NormalClearing,
            "busy" => Self::Busy,
            "cancel" => Self::Cancel,
            "noAnswer" => Self::NoAnswer,
            "congestion" => Self::Congestion,
            "notFound" => Self::NotFound,
            "forwarded" => Self::Forwarded,
            // Clipping may end on a blank: trim again, so the cause reads
            // the same when sent again.
            other => Self::Other(clip(other, 64).trim_end().to_owned()),
        }
    }

    /// The normalized cause: `congestion` and `notFound` are
    /// [`EndCause::Failed`], `forwarded` is `Other("forwarded")`.
    pub fn end_cause(&self) -> EndCause {
        match self {
            Self::NormalClearing => EndCause::Completed,
            Self::Busy => EndCause::Busy,
            Self::Cancel => EndCause::Canceled,
            Self::NoAnswer => EndCause::NoAnswer,
            Self::Congestion | Self::NotFound => EndCause::Failed,
            Self::Forwarded => EndCause::Other("forwarded".to_owned()),
            Self::Other(other) => EndCause::Other(other.clone()),
        }
    }
}

/// Reads one CTI event from a request body in `format`.
pub fn parse_cti(body: &[u8], format: CtiFormat) -> Result<CtiEvent, ParseError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ParseError::TooLarge {
            max: MAX_BODY_BYTES,
        });
    }
    let raw = match format {
        CtiFormat::Json => from_json(body)?,
        CtiFormat::Form => from_form(&parse_form(body)?)?,
    };
    raw.validate()
}

impl CtiEvent {
    /// What this event means for the call: `newCall` →
    /// [`CallEventKind::Ringing`], `answer` → [`CallEventKind::Answered`] by
    /// `answeringNumber` (else the first `user`), `hangup` →
    /// [`CallEventKind::Ended`] (no cause given: `Other("unspecified")`).
    pub fn call_event(&self) -> CallEvent {
        let kind = match &self.kind {
            CtiEventKind::NewCall => CallEventKind::Ringing {
                from: self.from.clone(),
                to: self.to.clone(),
                direction: self.direction,
                caller_name: None,
                queue: self.queue.clone(),
            },
            CtiEventKind::Answer => CallEventKind::Answered {
                by: self
                    .answering_number
                    .clone()
                    .or_else(|| self.users.first().cloned()),
            },
            CtiEventKind::Hangup { cause } => CallEventKind::Ended {
                cause: cause.as_ref().map_or_else(
                    || EndCause::Other("unspecified".into()),
                    HangupCause::end_cause,
                ),
                duration_secs: None,
            },
        };
        CallEvent {
            provider: Provider::Cti,
            call_id: self.call_id.clone(),
            kind,
            sequence: None,
            at: None,
        }
    }
}

/// The fields as sent, before their values are checked.
#[derive(Debug, Default)]
struct Raw {
    event: Option<String>,
    call_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    direction: Option<String>,
    users: Vec<String>,
    queue: Option<String>,
    answering_number: Option<String>,
    cause: Option<String>,
}

impl Raw {
    fn validate(self) -> Result<CtiEvent, ParseError> {
        let event = required("event", self.event)?;
        let kind = match event.as_str() {
            "newCall" => CtiEventKind::NewCall,
            "answer" => CtiEventKind::Answer,
            "hangup" => CtiEventKind::Hangup {
                cause: optional(self.cause).map(|c| HangupCause::parse(c.trim())),
            },
            other => {
                return Err(ParseError::invalid(
                    "event",
                    format!("{:?} is not newCall, answer or hangup", clip(other, 32)),
                ));
            }
        };
        let call_id = required("callId", self.call_id)?;
        if call_id.len() > MAX_CALL_ID_BYTES {
            return Err(ParseError::invalid(
                "callId",
                format!("longer than {MAX_CALL_ID_BYTES} bytes"),
            ));
        }
        let call_id = text("callId", &call_id, usize::MAX)?;
        let direction = match required("direction", self.direction)?.as_str() {
            "in" => Direction::Inbound,
            "out" => Direction::Outbound,
            other => {
                return Err(ParseError::invalid(
                    "direction",
                    format!("{:?} is not in or out", clip(other, 32)),
                ));
            }
        };
        let from = text(
            "from",
            &self.from.ok_or(ParseError::Missing("from"))?,
            MAX_TEXT_BYTES,
        )?;
        let to = text("to", &required("to", self.to)?, MAX_TEXT_BYTES)?;
        // A hangup ends the call whatever else it says: its users, queue
        // and answering number are not read, so they cannot get it refused
        // (a PBX does not send a refused event again, and the caller, gone,
        // would be offered on).
        let hangup = matches!(kind, CtiEventKind::Hangup { .. });
        // A ring group larger than we keep: the first users, not a refusal
        // (the answer names its user first).
        let mut users = if hangup {
            Vec::new()
        } else {
            self.users
                .iter()
                .take(MAX_USERS)
                .map(|u| text("user", u, MAX_TEXT_BYTES))
                .collect::<Result<Vec<_>, _>>()?
        };
        users.retain(|u| !u.is_empty());
        let queue = optional(self.queue)
            .filter(|_| !hangup)
            .map(|q| text("queue", &q, MAX_TEXT_BYTES))
            .transpose()?;
        let answering_number = optional(self.answering_number)
            .filter(|_| !hangup)
            .map(|a| text("answeringNumber", &a, MAX_TEXT_BYTES))
            .transpose()?;
        Ok(CtiEvent {
            kind,
            call_id,
            from,
            to,
            direction,
            users,
            queue,
            answering_number,
        })
    }
}

/// A value given and not blank, trimmed.
fn optional(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

fn required(field: &'static str, value: Option<String>) -> Result<String, ParseError> {
    optional(value).ok_or(ParseError::Missing(field))
}

fn from_form(params: &[(String, String)]) -> Result<Raw, ParseError> {
    let form = Form::new(params);
    let owned = |name: &'static str| Ok::<_, ParseError>(form.get(name)?.map(str::to_owned));
    // Zammad documents `user[]` for forms; a PBX sending one `user` is read
    // the same way.
    let event = owned("event")?;
    // A hangup's users, queue and answering number are not read (a
    // repeated queue would refuse it otherwise).
    let hangup = event.as_deref().map(str::trim) == Some("hangup");
    let users: Vec<String> = form
        .all("user[]")
        .chain(form.all("user"))
        .take(if hangup { 0 } else { MAX_USERS })
        .map(str::to_owned)
        .collect();
    let unless_hangup = |name: &'static str| {
        if hangup { Ok(None) } else { owned(name) }
    };
    Ok(Raw {
        event,
        call_id: owned("callId")?,
        from: owned("from")?,
        to: owned("to")?,
        direction: owned("direction")?,
        users,
        queue: unless_hangup("queue")?,
        answering_number: unless_hangup("answeringNumber")?,
        cause: owned("cause")?,
    })
}

/// A JSON scalar a PBX may send for a number or id.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Unsigned(u64),
    Signed(i64),
}

impl Scalar {
    fn into_string(self) -> String {
        match self {
            Self::Text(s) => s,
            Self::Unsigned(n) => n.to_string(),
            Self::Signed(n) => n.to_string(),
        }
    }
}

/// `user`: one name or a list of names.
#[derive(Deserialize)]
#[serde(untagged)]
enum Users {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct JsonBody {
    event: Option<String>,
    #[serde(rename = "callId")]
    call_id: Option<Scalar>,
    from: Option<Scalar>,
    to: Option<Scalar>,
    direction: Option<String>,
    #[serde(alias = "user[]")]
    user: Option<Users>,
    queue: Option<String>,
    #[serde(rename = "answeringNumber")]
    answering_number: Option<Scalar>,
    cause: Option<String>,
}

/// A hangup, read without the fields it does not use (`user`, `queue`,
/// `answeringNumber`), whatever their shape.
#[derive(Deserialize)]
struct JsonHangup {
    event: Option<String>,
    #[serde(rename = "callId")]
    call_id: Option<Scalar>,
    from: Option<Scalar>,
    to: Option<Scalar>,
    direction: Option<String>,
    cause: Option<String>,
}

fn from_json(body: &[u8]) -> Result<Raw, ParseError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed: JsonBody = match serde_path_to_error::deserialize(&mut de) {
        Ok(parsed) => parsed,
        Err(e) => {
            // A hangup is not refused over the shape of a field it does not
            // read (`"queue": 600`, `"user": [201]`): the call would stay
            // open with the caller gone.
            if let Ok(hangup) = serde_json::from_slice::<JsonHangup>(body)
                && hangup.event.as_deref().map(str::trim) == Some("hangup")
            {
                return Ok(Raw {
                    event: hangup.event,
                    call_id: hangup.call_id.map(Scalar::into_string),
                    from: hangup.from.map(Scalar::into_string),
                    to: hangup.to.map(Scalar::into_string),
                    direction: hangup.direction,
                    users: Vec::new(),
                    queue: None,
                    answering_number: None,
                    cause: hangup.cause,
                });
            }
            return Err(ParseError::Json {
                path: e.path().to_string(),
                message: e.into_inner().to_string(),
            });
        }
    };
    de.end().map_err(|e| ParseError::Json {
        path: ".".into(),
        message: e.to_string(),
    })?;
    let users = match parsed.user {
        None => Vec::new(),
        Some(Users::One(u)) => vec![u],
        Some(Users::Many(list)) => list,
    };
    Ok(Raw {
        event: parsed.event,
        call_id: parsed.call_id.map(Scalar::into_string),
        from: parsed.from.map(Scalar::into_string),
        to: parsed.to.map(Scalar::into_string),
        direction: parsed.direction,
        users,
        queue: parsed.queue,
        answering_number: parsed.answering_number.map(Scalar::into_string),
        cause: parsed.cause,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(body: &str) -> Result<CtiEvent, ParseError> {
        parse_cti(body.as_bytes(), CtiFormat::Json)
    }

    fn form(body: &str) -> Result<CtiEvent, ParseError> {
        parse_cti(body.as_bytes(), CtiFormat::Form)
    }

    #[test]
    fn content_types() {
        for (ct, want) in [
            (Some("application/json"), Some(CtiFormat::Json)),
            (
                Some("Application/JSON; charset=utf-8"),
                Some(CtiFormat::Json),
            ),
            (
                Some("application/x-www-form-urlencoded"),
                Some(CtiFormat::Form),
            ),
            (Some("multipart/form-data; boundary=x"), None),
            (Some(""), None),
            (None, None),
        ] {
            assert_eq!(CtiFormat::from_content_type(ct), want, "{ct:?}");
        }
    }

    #[test]
    fn json_user_may_be_a_string_or_a_list() {
        let one = json(
            r#"{"event":"answer","from":"493023125741","to":"492214710334","direction":"in",
                "callId":"c-1","user":"Emma Taylor"}"#,
        )
        .expect("parses");
        assert_eq!(one.users, ["Emma Taylor"]);
        assert_eq!(
            one.call_event().kind,
            CallEventKind::Answered {
                by: Some("Emma Taylor".into())
            }
        );
        let many = json(
            r#"{"event":"newCall","from":"493023125741","to":"492214710334","direction":"in",
                "callId":"c-1","user":["A","B"],"queue":"support"}"#,
        )
        .expect("parses");
        assert_eq!(many.users, ["A", "B"]);
        assert_eq!(many.queue.as_deref(), Some("support"));
    }

    #[test]
    fn numbers_may_be_json_numbers() {
        let event = json(
            r#"{"event":"answer","from":493023125741,"to":492214710334,"direction":"in",
                "callId":123456789,"answeringNumber":42}"#,
        )
        .expect("parses");
        assert_eq!(event.from, "493023125741");
        assert_eq!(event.call_id, "123456789");
        assert_eq!(
            event.call_event().kind,
            CallEventKind::Answered {
                by: Some("42".into())
            }
        );
    }

    #[test]
    fn form_users_repeat() {
        let event = form(
            "event=newCall&from=493023125741&to=492214710334&direction=in&callId=c-2\
             &user%5B%5D=Christopher+Miller&user[]=Emma+Taylor",
        )
        .expect("parses");
        assert_eq!(event.users, ["Christopher Miller", "Emma Taylor"]);
        let single =
            form("event=newCall&from=1&to=2&direction=out&callId=c&user=Chris").expect("parses");
        assert_eq!(single.users, ["Chris"]);
        assert_eq!(single.direction, Direction::Outbound);
    }

    #[test]
    fn hangup_causes() {
        for (raw, want) in [
            ("normalClearing", EndCause::Completed),
            ("busy", EndCause::Busy),
            ("cancel", EndCause::Canceled),
            ("noAnswer", EndCause::NoAnswer),
            ("congestion", EndCause::Failed),
            ("notFound", EndCause::Failed),
            ("forwarded", EndCause::Other("forwarded".into())),
            ("exploded", EndCause::Other("exploded".into())),
        ] {
            let event = form(&format!(
                "event=hangup&from=1&to=2&direction=in&callId=c&cause={raw}"
            ))
            .expect(raw);
            assert_eq!(
                event.call_event().kind,
                CallEventKind::Ended {
                    cause: want,
                    duration_secs: None
                },
                "{raw}"
            );
        }
        let no_cause = form("event=hangup&from=1&to=2&direction=in&callId=c").expect("parses");
        assert_eq!(no_cause.kind, CtiEventKind::Hangup { cause: None });
        assert_eq!(
            no_cause.call_event().kind,
            CallEventKind::Ended {
                cause: EndCause::Other("unspecified".into()),
                duration_secs: None
            }
        );
    }

    #[test]
    fn a_long_cause_clipped_after_a_blank_is_trimmed() {
        // Found by the voice_cti fuzz target (minimized input, a form): the
        // cause is clipped to 64 bytes right after a newline, which was kept,
        // so the cause as we read it read differently when sent again.
        let found = parse_cti(
            b"event=hangup&from&callId=493055571600&to=4917110&dir922&direction=in\
              &ca48-880b3-fc57gup&frob&cause=can0c{\"event\":tionom2\":\"forwarded741\",\
              \"toringinggingl2147aus\0\0\0\n10334\",\"dio",
            CtiFormat::Form,
        )
        .expect("parses");
        let cause = "can0c{\"event\":tionom2\":\"forwarded741\",\"toringinggingl2147aus\0\0\0";
        assert_eq!(
            found.kind,
            CtiEventKind::Hangup {
                cause: Some(HangupCause::Other(cause.into()))
            }
        );
        // The same with a blank, in either format.
        let body =
            |cause: &str| format!("event=hangup&from=1&to=2&direction=in&callId=c&cause={cause}");
        let clipped = Some(HangupCause::Other("c".repeat(63)));
        for sent in [format!("{}+x", "c".repeat(63)), "c".repeat(63)] {
            let event = form(&body(&sent)).expect("parses");
            assert_eq!(
                event.kind,
                CtiEventKind::Hangup {
                    cause: clipped.clone()
                },
                "{sent}"
            );
        }
        let event = json(&format!(
            r#"{{"event":"hangup","from":"1","to":"2","direction":"in","callId":"c","cause":"{} x"}}"#,
            "c".repeat(63)
        ))
        .expect("parses");
        assert_eq!(event.kind, CtiEventKind::Hangup { cause: clipped });
    }

    #[test]
    fn refusals() {
        let ok = "event=newCall&from=1&to=2&direction=in&callId=c";
        assert!(form(ok).is_ok());
        for (from, to, kind) in [
            ("event=newCall", "event=ringing", "invalid"),
            ("event=newCall", "event=NEWCALL", "invalid"),
            ("event=newCall&", "", "missing"),
            ("&callId=c", "", "missing"),
            ("&callId=c", "&callId=", "missing"),
            ("direction=in", "direction=inbound", "invalid"),
            ("direction=in", "direction=in&direction=out", "repeated"),
            ("&to=2", "", "missing"),
            ("from=1&", "", "missing"),
            ("callId=c", "callId=a%00b", "invalid"),
        ] {
            let body = ok.replace(from, to);
            assert_eq!(form(&body).map_err(|e| e.kind()), Err(kind), "{body}");
        }
        // Bytes, not characters: 126 two-byte letters are too long (two
        // such ids cut to the same prefix would merge two calls).
        let long_id = ok.replace("callId=c", &format!("callId={}", "я".repeat(126)));
        assert_eq!(form(&long_id).map_err(|e| e.kind()), Err("invalid"));
        let max_id = ok.replace("callId=c", &format!("callId={}", "я".repeat(125)));
        assert!(form(&max_id).is_ok());
        // A ring group larger than kept: its first users.
        let users: String = (0..=MAX_USERS).map(|n| format!("&user[]=u{n}")).collect();
        let many = form(&format!("{ok}{users}")).expect("a large ring group");
        assert_eq!(many.users.len(), MAX_USERS);
        assert_eq!(many.users[0], "u0");
        // A hangup is read whatever its users, queue and answering number
        // say: they cannot get it refused.
        let hangup = ok.replace("event=newCall", "event=hangup");
        let odd = format!(
            "{hangup}&user[]=a%00b&queue={}&answeringNumber=%01",
            "q".repeat(MAX_TEXT_BYTES + 1)
        );
        let ended = form(&odd).expect("a hangup with odd fields");
        assert_eq!(
            (ended.users.len(), ended.queue, ended.answering_number),
            (0, None, None)
        );
        let odd_call = odd.replace("event=hangup", "event=newCall");
        assert_eq!(form(&odd_call).map_err(|e| e.kind()), Err("invalid"));
        // Nor by their shape: a repeated queue in a form, numbers in JSON.
        let repeated = format!("{hangup}&queue=a&queue=b&answeringNumber=1&answeringNumber=2");
        assert!(form(&repeated).is_ok(), "{repeated}");
        assert_eq!(
            form(&repeated.replace("event=hangup", "event=newCall")).map_err(|e| e.kind()),
            Err("repeated")
        );
        let numbers = r#"{"event":"hangup","from":"1","to":"2","direction":"in","callId":"c","user":[201],"queue":600,"answeringNumber":{"x":1},"cause":"busy"}"#;
        let ended = json(numbers).expect("a hangup with numbers for names");
        assert_eq!(
            ended.kind,
            CtiEventKind::Hangup {
                cause: Some(HangupCause::Busy)
            }
        );
        assert_eq!(
            json(&numbers.replace("hangup", "newCall")).map_err(|e| e.kind()),
            Err("json")
        );
        for bad in [
            "",
            "[]",
            "{",
            r#"{"event":"newCall"} x"#,
            r#"{"event":1,"from":"1","to":"2","direction":"in","callId":"c"}"#,
            r#"{"event":"newCall","from":"1","to":"2","direction":"in","callId":{}}"#,
            r#"{"event":"newCall","from":"1","to":"2","direction":"in","callId":"c","user":[1]}"#,
        ] {
            assert_eq!(json(bad).map_err(|e| e.kind()), Err("json"), "{bad}");
        }
        let huge = format!("{ok}&x={}", "y".repeat(MAX_BODY_BYTES));
        assert_eq!(form(&huge).map_err(|e| e.kind()), Err("too_large"));
        assert_eq!(
            parse_cti(huge.as_bytes(), CtiFormat::Json).map_err(|e| e.kind()),
            Err("too_large")
        );
    }

    #[test]
    fn unknown_json_fields_are_ignored_even_deep_ones() {
        let nested = format!(
            r#"{{"event":"newCall","from":"1","to":"2","direction":"in","callId":"c","x":{}{}}}"#,
            "[".repeat(5000),
            "]".repeat(5000)
        );
        // Deep nesting is refused by serde_json's recursion limit, or skipped;
        // never a stack overflow.
        let _ = json(&nested);
        let event = json(
            r#"{"event":"newCall","from":"1","to":"2","direction":"in","callId":"c","pbx":"asterisk"}"#,
        )
        .expect("parses");
        assert_eq!(event.call_id, "c");
    }
}
