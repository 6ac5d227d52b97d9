//! TwiML answers for Twilio's voice webhooks.
//!
//! **The hold is a loop we drive.** [`twiml_hold`] answers with a message
//! (`<Say>`), then hold music (`<Play>`) or silence (`<Pause>`), then
//! `<Redirect method="POST">` back to a URL we serve. Each time Twilio
//! follows the redirect (a signed request like the first) we decide again:
//! hold once more, connect to the agent routing chose ([`twiml_connect`]),
//! or end the call. We chose this over `<Enqueue>` (Twilio's own queues)
//! because routing stays ours alone: no second queue at Twilio to keep in
//! step with the routing state, and no REST call with account credentials
//! to dequeue a caller. The price is latency: a caller is connected at the
//! next redirect, up to one pause (or one music file) after the agent is
//! chosen. Keep the music short ([`HOLD_PAUSE_SECS`] of silence by
//! default); an adapter may redirect a waiting call at once through
//! Twilio's Calls API later. If we cannot answer a redirect, Twilio plays
//! its error message and uses the number's fallback URL, if one is set.
//!
//! **Connecting** is a `<Dial>` with a ring `timeout` and an `action` URL:
//! when the agent's leg ends (not answered within the timeout, busy,
//! failed, or after the conversation), Twilio requests the action URL with
//! `DialCallStatus`, and the call continues with what we answer there (hold
//! again for the next agent, or [`twiml_hangup`]). With a `status_url`, the
//! agent's leg also reports `answered` and `completed` as it happens, so we
//! learn at once that the agent picked up.
//!
//! **Escaping.** Every value goes through `escape`, which writes `&`, `<`,
//! `>`, `"` and `'` as entities and drops characters XML 1.0 cannot carry
//! (control characters other than tab, line feed and carriage return;
//! U+FFFE, U+FFFF). Five fixed documents do not need an XML library; the
//! helper is small enough to check by eye and is tested on every special
//! character.

use super::{RejectReason, ReplyError, Target, checked_url};
use std::fmt::Write as _;

/// Seconds of silence between two hold redirects without music.
pub const HOLD_PAUSE_SECS: u32 = 10;
/// The longest `<Say>` text Twilio takes, in characters.
pub const MAX_SAY_CHARS: usize = 4096;

const HEADER: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>";

/// A hold: what the waiting caller hears before Twilio asks us again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold<'a> {
    /// Said first (`<Say>`); nothing when blank (e.g. on every redirect
    /// after the first).
    pub message: &'a str,
    /// `<Say language>`, e.g. `uk-UA`, `en-US`; Twilio's default when
    /// `None`.
    pub language: Option<&'a str>,
    /// Hold music (`<Play>`): an absolute URL of an audio file. Without it,
    /// `pause_secs` of silence.
    pub music_url: Option<&'a str>,
    /// Seconds of `<Pause>` when there is no music, 1 to 600.
    pub pause_secs: u32,
    /// Where Twilio comes back to (`<Redirect method="POST">`).
    pub redirect_url: &'a str,
}

impl<'a> Hold<'a> {
    /// A hold saying `message`, then [`HOLD_PAUSE_SECS`] of silence.
    pub fn new(message: &'a str, redirect_url: &'a str) -> Self {
        Hold {
            message,
            language: None,
            music_url: None,
            pause_secs: HOLD_PAUSE_SECS,
            redirect_url,
        }
    }

    /// The TwiML document.
    pub fn to_twiml(&self) -> Result<String, ReplyError> {
        let redirect = checked_url("redirect_url", self.redirect_url)?;
        let music = self
            .music_url
            .map(|u| checked_url("music_url", u))
            .transpose()?;
        if self.message.chars().count() > MAX_SAY_CHARS {
            return Err(ReplyError::TooLong {
                field: "message",
                max: MAX_SAY_CHARS,
            });
        }
        let language = self.language.map(checked_language).transpose()?;
        if !(1..=600).contains(&self.pause_secs) {
            return Err(ReplyError::Invalid {
                field: "pause_secs",
                reason: "must be 1 to 600",
            });
        }
        let mut xml = open();
        let message = self.message.trim();
        if !message.is_empty() {
            xml.push_str("<Say");
            if let Some(language) = language {
                attribute(&mut xml, "language", language);
            }
            xml.push('>');
            escape(&mut xml, message);
            xml.push_str("</Say>");
        }
        match music {
            Some(url) => element(&mut xml, "Play", url),
            None => {
                let _ = write!(xml, "<Pause length=\"{}\"/>", self.pause_secs);
            }
        }
        xml.push_str("<Redirect method=\"POST\">");
        escape(&mut xml, redirect);
        xml.push_str("</Redirect>");
        Ok(close(xml))
    }
}

/// Holds the caller: `message`, then the music at `wait_url` (or
/// [`HOLD_PAUSE_SECS`] of silence), then a redirect to `redirect_url`.
pub fn twiml_hold(
    message: &str,
    wait_url: Option<&str>,
    redirect_url: &str,
) -> Result<String, ReplyError> {
    Hold {
        music_url: wait_url,
        ..Hold::new(message, redirect_url)
    }
    .to_twiml()
}

/// How to ring an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DialOptions<'a> {
    /// `<Dial timeout>`: seconds to let the agent's phone ring, 5 to 600.
    pub ring_timeout_secs: u32,
    /// `<Dial action>` (POST): requested when the agent's leg ends, with
    /// `DialCallStatus`; the call continues with what it answers.
    pub action_url: &'a str,
    /// The noun's `statusCallback` (POST) for the agent's leg, with
    /// `statusCallbackEvent="answered completed"`: tells us the moment the
    /// agent answers.
    pub status_url: Option<&'a str>,
    /// The noun's `url` (POST): TwiML Twilio runs on the agent's leg once
    /// they answer, before the two are connected. An empty `<Response/>`
    /// connects them; `<Hangup/>` hangs up the agent and leaves the caller
    /// unconnected (the `<Dial>` ends and its `action` is requested).
    pub answer_url: Option<&'a str>,
    /// `<Dial callerId>`: the number the agent's phone shows (for a
    /// `<Number>` it must be one of the account's numbers; Twilio shows the
    /// caller's by default).
    pub caller_id: Option<&'a str>,
}

/// Connects the caller to `target`, ringing for `dial.ring_timeout_secs`.
pub fn twiml_connect(target: &Target, dial: &DialOptions<'_>) -> Result<String, ReplyError> {
    let address = target.checked()?;
    let action = checked_url("action_url", dial.action_url)?;
    let status = dial
        .status_url
        .map(|u| checked_url("status_url", u))
        .transpose()?;
    let answer = dial
        .answer_url
        .map(|u| checked_url("answer_url", u))
        .transpose()?;
    if !(5..=600).contains(&dial.ring_timeout_secs) {
        return Err(ReplyError::Invalid {
            field: "ring_timeout_secs",
            reason: "must be 5 to 600",
        });
    }
    let caller_id = dial
        .caller_id
        .map(|c| Target::Number(c.to_owned()).checked().map(|_| c))
        .transpose()
        .map_err(|_| ReplyError::Invalid {
            field: "caller_id",
            reason: "not a phone number",
        })?;
    let mut xml = open();
    let _ = write!(xml, "<Dial timeout=\"{}\"", dial.ring_timeout_secs);
    attribute(&mut xml, "action", action);
    attribute(&mut xml, "method", "POST");
    if let Some(caller_id) = caller_id {
        attribute(&mut xml, "callerId", caller_id);
    }
    xml.push('>');
    let noun = match target {
        Target::Sip(_) => "Sip",
        Target::Number(_) => "Number",
        Target::Client(_) => "Client",
    };
    let _ = write!(xml, "<{noun}");
    if let Some(answer) = answer {
        attribute(&mut xml, "url", answer);
        attribute(&mut xml, "method", "POST");
    }
    if let Some(status) = status {
        attribute(&mut xml, "statusCallbackEvent", "answered completed");
        attribute(&mut xml, "statusCallback", status);
        attribute(&mut xml, "statusCallbackMethod", "POST");
    }
    xml.push('>');
    escape(&mut xml, address);
    let _ = write!(xml, "</{noun}></Dial>");
    Ok(close(xml))
}

/// Refuses the call without answering it (`<Reject>`): the caller hears a
/// busy tone or a not-in-service message, and the call is not billed.
pub fn twiml_reject(reason: RejectReason) -> String {
    let mut xml = open();
    xml.push_str("<Reject");
    attribute(&mut xml, "reason", reason.as_str());
    xml.push_str("/>");
    close(xml)
}

/// Nothing to do: on an agent's leg (the noun's `url`), connects them to
/// the caller.
pub fn twiml_proceed() -> String {
    close(open())
}

/// Ends the call (`<Hangup/>`), e.g. as the `<Dial>` action's answer after
/// the conversation.
pub fn twiml_hangup() -> String {
    close(open() + "<Hangup/>")
}

fn open() -> String {
    format!("{HEADER}<Response>")
}

fn close(mut xml: String) -> String {
    xml.push_str("</Response>");
    xml
}

fn element(xml: &mut String, name: &str, text: &str) {
    let _ = write!(xml, "<{name}>");
    escape(xml, text);
    let _ = write!(xml, "</{name}>");
}

fn attribute(xml: &mut String, name: &str, value: &str) {
    let _ = write!(xml, " {name}=\"");
    escape(xml, value);
    xml.push('"');
}

/// Writes `text` as XML character data or attribute value.
pub(crate) fn escape(xml: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => xml.push_str("&amp;"),
            '<' => xml.push_str("&lt;"),
            '>' => xml.push_str("&gt;"),
            '"' => xml.push_str("&quot;"),
            '\'' => xml.push_str("&apos;"),
            '\t' | '\n' | '\r' => xml.push(c),
            c if c < ' ' || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => xml.push(c),
        }
    }
}

/// A BCP 47-looking tag: 2 to 35 ASCII letters, digits and `-`.
fn checked_language(tag: &str) -> Result<&str, ReplyError> {
    let ok = (2..=35).contains(&tag.len())
        && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(tag)
    } else {
        Err(ReplyError::Invalid {
            field: "language",
            reason: "not a language tag",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD_URL: &str = "https://sb.example/channels/voice/twilio/hold?call=CA1&n=2";
    const ACTION_URL: &str = "https://sb.example/channels/voice/twilio/dial?call=CA1";

    #[test]
    fn escaping_covers_every_special_character() {
        let mut out = String::new();
        escape(
            &mut out,
            "a&b<c>d\"e'f\u{0}g\u{1b}h\ti\nj\r\u{fffe}k\u{ffff}я😀",
        );
        assert_eq!(out, "a&amp;b&lt;c&gt;d&quot;e&apos;fgh\ti\nj\rkя😀");
        let mut twice = String::new();
        escape(&mut twice, "&amp;");
        assert_eq!(twice, "&amp;amp;");
    }

    #[test]
    fn hold_with_silence() {
        let xml = twiml_hold("Please hold & wait <3", None, HOLD_URL).expect("valid");
        assert_eq!(
            xml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>\
             <Say>Please hold &amp; wait &lt;3</Say><Pause length=\"10\"/>\
             <Redirect method=\"POST\">https://sb.example/channels/voice/twilio/hold?call=CA1&amp;n=2</Redirect>\
             </Response>"
        );
    }

    #[test]
    fn hold_with_music_and_language() {
        let hold = Hold {
            language: Some("uk-UA"),
            music_url: Some("https://cdn.example/hold.mp3"),
            ..Hold::new("Зачекайте, будь ласка", HOLD_URL)
        };
        let xml = hold.to_twiml().expect("valid");
        assert_eq!(
            xml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>\
             <Say language=\"uk-UA\">Зачекайте, будь ласка</Say>\
             <Play>https://cdn.example/hold.mp3</Play>\
             <Redirect method=\"POST\">https://sb.example/channels/voice/twilio/hold?call=CA1&amp;n=2</Redirect>\
             </Response>"
        );
        // A blank message says nothing.
        let quiet = twiml_hold("  ", None, HOLD_URL).expect("valid");
        assert!(!quiet.contains("<Say"));
    }

    #[test]
    fn hold_refuses_bad_values() {
        assert_eq!(
            twiml_hold("x", None, "/hold").map_err(|e| e.kind()),
            Err("url")
        );
        assert_eq!(
            twiml_hold("x", Some("javascript:alert(1)"), HOLD_URL).map_err(|e| e.kind()),
            Err("url")
        );
        assert_eq!(
            twiml_hold(&"x".repeat(MAX_SAY_CHARS + 1), None, HOLD_URL).map_err(|e| e.kind()),
            Err("too_long")
        );
        for (language, pause) in [
            (Some("en US"), 10),
            (Some("\"x"), 10),
            (None, 0),
            (None, 601),
        ] {
            let hold = Hold {
                language,
                pause_secs: pause,
                ..Hold::new("x", HOLD_URL)
            };
            assert_eq!(hold.to_twiml().map_err(|e| e.kind()), Err("invalid"));
        }
    }

    fn dial() -> DialOptions<'static> {
        DialOptions {
            ring_timeout_secs: 20,
            action_url: ACTION_URL,
            status_url: None,
            answer_url: None,
            caller_id: None,
        }
    }

    #[test]
    fn connect_to_a_sip_agent() {
        let target = Target::Sip("sip:olena@pbx.example.com;transport=tls".into());
        let options = DialOptions {
            status_url: Some("https://sb.example/channels/voice/twilio/status?leg=agent&c=1"),
            answer_url: Some("https://sb.example/channels/voice/twilio/bridge?c=1&a=o"),
            ..dial()
        };
        assert_eq!(
            twiml_connect(&target, &options).expect("valid"),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>\
             <Dial timeout=\"20\" action=\"https://sb.example/channels/voice/twilio/dial?call=CA1\" method=\"POST\">\
             <Sip url=\"https://sb.example/channels/voice/twilio/bridge?c=1&amp;a=o\" method=\"POST\" \
             statusCallbackEvent=\"answered completed\" \
             statusCallback=\"https://sb.example/channels/voice/twilio/status?leg=agent&amp;c=1\" \
             statusCallbackMethod=\"POST\">sip:olena@pbx.example.com;transport=tls</Sip>\
             </Dial></Response>"
        );
    }

    #[test]
    fn connect_to_a_number_or_client() {
        let number = twiml_connect(
            &Target::Number("+380501234567".into()),
            &DialOptions {
                caller_id: Some("+15550783881"),
                ..dial()
            },
        )
        .expect("valid");
        assert!(number.contains(
            "<Dial timeout=\"20\" action=\"https://sb.example/channels/voice/twilio/dial?call=CA1\" \
             method=\"POST\" callerId=\"+15550783881\"><Number>+380501234567</Number></Dial>"
        ));
        let client = twiml_connect(&Target::Client("agent_olena".into()), &dial()).expect("valid");
        assert!(client.contains("<Client>agent_olena</Client>"));
    }

    #[test]
    fn connect_refuses_bad_values() {
        let sip = Target::Sip("sip:olena@pbx.example.com".into());
        for (options, kind) in [
            (
                DialOptions {
                    ring_timeout_secs: 4,
                    ..dial()
                },
                "invalid",
            ),
            (
                DialOptions {
                    ring_timeout_secs: 601,
                    ..dial()
                },
                "invalid",
            ),
            (
                DialOptions {
                    action_url: "dial",
                    ..dial()
                },
                "url",
            ),
            (
                DialOptions {
                    status_url: Some("x"),
                    ..dial()
                },
                "url",
            ),
            (
                DialOptions {
                    answer_url: Some("javascript:x"),
                    ..dial()
                },
                "url",
            ),
            (
                DialOptions {
                    caller_id: Some("\"><Hangup/>"),
                    ..dial()
                },
                "invalid",
            ),
        ] {
            assert_eq!(
                twiml_connect(&sip, &options).map_err(|e| e.kind()),
                Err(kind)
            );
        }
        assert_eq!(
            twiml_connect(&Target::Sip("sip:a\"/><Hangup/>@x".into()), &dial())
                .map(|x| x.contains("<Hangup")),
            Ok(false),
            "quotes and brackets in a SIP URI are escaped, not interpreted"
        );
    }

    #[test]
    fn reject_and_hangup() {
        assert_eq!(
            twiml_reject(RejectReason::Busy),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Reject reason=\"busy\"/></Response>"
        );
        assert!(twiml_reject(RejectReason::Rejected).contains("reason=\"rejected\""));
        assert_eq!(
            twiml_hangup(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Hangup/></Response>"
        );
    }
}
