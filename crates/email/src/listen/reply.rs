//! Replies: what the sink answers and how a reply is written on the wire.

use smtp_proto::Response;
use std::borrow::Cow;

/// One SMTP/LMTP reply: `code status text`, e.g. `250 2.0.0 stored`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The reply code (`250`, `451`, `550`...).
    pub code: u16,
    /// The enhanced status code (RFC 3463), e.g. `"2.0.0"`; empty for none.
    pub status: String,
    /// Free text; line breaks and control characters are written as spaces.
    pub text: String,
}

impl Reply {
    /// Any reply.
    pub fn new(code: u16, status: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            code,
            status: status.into(),
            text: text.into(),
        }
    }

    /// `250 2.0.0 <text>`: the message is stored.
    pub fn ok(text: &str) -> Self {
        Self::new(250, "2.0.0", text)
    }

    /// `451 4.3.0 <text>`: try again later.
    pub fn temporary(text: &str) -> Self {
        Self::new(451, "4.3.0", text)
    }

    /// `552 5.3.4`: the message is over the size limit.
    pub fn too_large() -> Self {
        Self::new(552, "5.3.4", "Error: message size exceeds fixed limit")
    }

    /// `550 5.5.2`: the end of data was `<CRLF>.<CR>…<CR><LF>`, not
    /// `<CRLF>.<CRLF>`: what follows cannot be told apart from a smuggled
    /// message, so the session ends after this answer.
    pub fn bad_end_of_data() -> Self {
        Self::new(550, "5.5.2", "Error: bare <CR> in the end-of-data sequence")
    }

    /// `452 4.3.1`: no room for the message just now (the listener holds
    /// `max_mib_in_flight` of bodies); the sender tries again later.
    pub fn no_room() -> Self {
        Self::new(
            452,
            "4.3.1",
            "Error: insufficient system storage, try again later",
        )
    }

    /// `550 5.6.0 <text>`: the message can never be taken.
    pub fn rejected(text: &str) -> Self {
        Self::new(550, "5.6.0", text)
    }

    /// `550 5.1.1`: not an address of ours.
    pub fn unknown_recipient(address: &str) -> Self {
        Self::new(
            550,
            "5.1.1",
            format!("<{address}>: Recipient address rejected: User unknown"),
        )
    }

    /// A 2xx reply.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// A 4xx reply.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// Appends the reply, one line ending in CRLF, to `out`. The enhanced
    /// status is written only when it is well formed and agrees with the
    /// code's class; a code outside 200..=599 is written as 451.
    pub(super) fn write(&self, out: &mut Vec<u8>) {
        let code = if (200..600).contains(&self.code) {
            self.code
        } else {
            451
        };
        let text = one_line(&self.text);
        let write = match parse_status(&self.status).filter(|s| u16::from(s[0]) == code / 100) {
            Some([a, b, c]) => Response::new(code, a, b, c, text).write(&mut *out),
            None => {
                out.extend_from_slice(format!("{code} {text}\r\n").as_bytes());
                Ok(())
            }
        };
        // Writing to a Vec cannot fail.
        debug_assert!(write.is_ok());
    }
}

/// A reply line without an enhanced status code (the greeting, HELO, 354).
pub(super) fn plain(code: u16, text: &str) -> Reply {
    Reply::new(code, "", text)
}

/// SMTP's one reply for a message from the sink's replies per recipient:
/// 250 when all are 2xx, else the first 4xx, else the first 5xx.
pub(super) fn combine(replies: &[Reply]) -> Reply {
    if let Some(r) = replies.iter().find(|r| r.is_transient()) {
        return r.clone();
    }
    if let Some(r) = replies.iter().find(|r| !r.is_positive()) {
        return r.clone();
    }
    match replies.first() {
        Some(first) => first.clone(),
        None => Reply::temporary("Error: no answer for the message"),
    }
}

/// `"2.1.5"` → `[2, 1, 5]`.
fn parse_status(status: &str) -> Option<[u8; 3]> {
    let mut parts = status.split('.').map(|p| p.parse::<u8>().ok());
    let status = [parts.next()??, parts.next()??, parts.next()??];
    (parts.next().is_none() && (2..=5).contains(&status[0])).then_some(status)
}

/// The text on one line: control characters become spaces.
fn one_line(text: &str) -> Cow<'_, str> {
    if text.chars().any(char::is_control) {
        Cow::Owned(
            text.chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(r: &Reply) -> String {
        let mut out = Vec::new();
        r.write(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn replies_are_one_line_with_status() {
        assert_eq!(line(&Reply::ok("stored")), "250 2.0.0 stored\r\n");
        assert_eq!(
            line(&Reply::new(550, "5.7.26", "dmarc")),
            "550 5.7.26 dmarc\r\n"
        );
        assert_eq!(line(&Reply::temporary("a\r\nb")), "451 4.3.0 a  b\r\n");
        assert_eq!(line(&Reply::new(250, "4.0.0", "x")), "250 x\r\n");
        assert_eq!(line(&plain(354, "go ahead")), "354 go ahead\r\n");
        assert_eq!(line(&Reply::new(99, "", "x")), "451 x\r\n");
    }

    #[test]
    fn smtp_combines_transient_first() {
        let ok = Reply::ok("a");
        let tmp = Reply::temporary("b");
        let bad = Reply::rejected("c");
        assert_eq!(combine(&[ok.clone(), ok.clone()]), ok);
        assert_eq!(combine(&[ok.clone(), bad.clone(), tmp.clone()]), tmp);
        assert_eq!(combine(&[ok.clone(), bad.clone()]), bad);
        assert_eq!(combine(&[]).code, 451);
    }
}
