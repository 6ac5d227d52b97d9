//! Request bodies → typed provider events. No I/O; fuzzed.
//!
//! - [`parse_form`]: an `application/x-www-form-urlencoded` body → its
//!   decoded parameters, in order (what Twilio's signature covers), bounded
//!   by [`MAX_BODY_BYTES`], [`MAX_FIELDS`], [`MAX_NAME_BYTES`] and
//!   [`MAX_VALUE_BYTES`].
//! - [`twilio`]: Twilio's voice webhooks (incoming call, status callback,
//!   `<Dial>` action) → [`TwilioCall`](twilio::TwilioCall).
//! - [`cti`]: the generic CTI API (as Zammad's), JSON or form →
//!   [`CtiEvent`](cti::CtiEvent).
//!
//! Provider bodies are read leniently (unknown fields are ignored: providers
//! add fields), but the fields we read must have the documented form, and
//! [`ParseError`] names the one that does not. The parsers never panic.

pub mod cti;
pub mod twilio;

/// The largest body we read. Twilio's voice webhooks are a few hundred bytes
/// to a few kilobytes (add-on results can be larger); CTI events are
/// smaller still.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The most parameters one form body may hold (Twilio sends about 20).
pub const MAX_FIELDS: usize = 200;
/// The longest parameter name.
pub const MAX_NAME_BYTES: usize = 256;
/// The longest parameter value, decoded.
pub const MAX_VALUE_BYTES: usize = 16 * 1024;

/// Why a body could not be read. The request is refused (HTTP 400) as a
/// whole: the provider never sends these, so it is broken or forged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The body is longer than [`MAX_BODY_BYTES`].
    #[error("the body is larger than {max} bytes")]
    TooLarge { max: usize },
    /// More than [`MAX_FIELDS`] parameters.
    #[error("more than {max} fields")]
    TooManyFields { max: usize },
    /// A parameter name or value is too long; `field` is the name, clipped.
    #[error("{field}: longer than {max} bytes")]
    FieldTooLong { field: String, max: usize },
    /// The body is not a well-formed form or JSON document.
    #[error("malformed body: {0}")]
    Malformed(&'static str),
    /// A JSON body that does not have the documented shape. `path` is where
    /// (`.` for the root).
    #[error("{path}: {message}")]
    Json { path: String, message: String },
    /// A required field is absent (or blank).
    #[error("{0} is missing")]
    Missing(&'static str),
    /// A field that is read once is given more than once.
    #[error("{0} is given more than once")]
    Repeated(&'static str),
    /// A field is present but its value is not usable.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl ParseError {
    /// A short, bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::TooManyFields { .. } => "too_many_fields",
            Self::FieldTooLong { .. } => "field_too_long",
            Self::Malformed(_) => "malformed",
            Self::Json { .. } => "json",
            Self::Missing(_) => "missing",
            Self::Repeated(_) => "repeated",
            Self::Invalid { .. } => "invalid",
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        ParseError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// Decodes an `application/x-www-form-urlencoded` body into its parameters
/// (names and values percent-decoded, `+` read as a space), in body order,
/// repeated names kept. The body must be UTF-8 (form bodies are ASCII); a
/// percent-escape that decodes to invalid UTF-8 becomes U+FFFD, which can
/// never verify a signature computed over the real bytes. Empty pairs
/// (`a=1&&b=2`) are skipped; a pair without `=` has an empty value; a pair
/// without a name is refused.
pub fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, ParseError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ParseError::TooLarge {
            max: MAX_BODY_BYTES,
        });
    }
    if std::str::from_utf8(body).is_err() {
        return Err(ParseError::Malformed("the body is not UTF-8"));
    }
    let mut params = Vec::new();
    for (name, value) in form_urlencoded::parse(body) {
        if params.len() >= MAX_FIELDS {
            return Err(ParseError::TooManyFields { max: MAX_FIELDS });
        }
        if name.is_empty() {
            return Err(ParseError::Malformed("a parameter has no name"));
        }
        if name.len() > MAX_NAME_BYTES {
            return Err(ParseError::FieldTooLong {
                field: clip(&name, 64).to_owned(),
                max: MAX_NAME_BYTES,
            });
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(ParseError::FieldTooLong {
                field: clip(&name, 64).to_owned(),
                max: MAX_VALUE_BYTES,
            });
        }
        params.push((name.into_owned(), value.into_owned()));
    }
    Ok(params)
}

/// Named access to decoded form parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Form<'a> {
    params: &'a [(String, String)],
}

impl<'a> Form<'a> {
    pub(crate) fn new(params: &'a [(String, String)]) -> Self {
        Form { params }
    }

    /// Every value of `name`, in order.
    pub(crate) fn all(&self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.params
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name`, which may be given at most once.
    pub(crate) fn get(&self, name: &'static str) -> Result<Option<&'a str>, ParseError> {
        let mut values = self.all(name);
        let first = values.next();
        if values.next().is_some() {
            return Err(ParseError::Repeated(name));
        }
        Ok(first)
    }

    /// The value of `name`, given once and not blank.
    pub(crate) fn required(&self, name: &'static str) -> Result<&'a str, ParseError> {
        self.get(name)?
            .filter(|v| !v.trim().is_empty())
            .ok_or(ParseError::Missing(name))
    }

    /// The value of `name` when given and not blank.
    pub(crate) fn optional(&self, name: &'static str) -> Result<Option<&'a str>, ParseError> {
        Ok(self.get(name)?.filter(|v| !v.trim().is_empty()))
    }
}

/// A count of seconds or a sequence number: 1 to 20 ASCII digits that fit a
/// `u64`.
pub(crate) fn number(field: &'static str, value: &str) -> Result<u64, ParseError> {
    let value = value.trim();
    if value.is_empty() || value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::invalid(field, "not a non-negative integer"));
    }
    value
        .parse()
        .map_err(|_| ParseError::invalid(field, "out of range"))
}

/// A short text field (a number, a name, an id): trimmed, at most `max`
/// bytes, no control characters.
pub(crate) fn text(field: &'static str, value: &str, max: usize) -> Result<String, ParseError> {
    let value = value.trim();
    if value.len() > max {
        return Err(ParseError::invalid(
            field,
            format!("longer than {max} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ParseError::invalid(field, "contains control characters"));
    }
    Ok(value.to_owned())
}

pub(crate) use switchboard_core::clip;

#[cfg(test)]
pub(crate) mod corpus {
    //! The voice corpus (`tests/corpus/voice`, copied from `../shared`), read
    //! from disk, and this crate's own samples (`testdata/`).

    use std::path::PathBuf;

    pub(crate) fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpus/voice")
    }

    pub(crate) fn testdata() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata")
    }

    pub(crate) fn read(name: &str) -> Vec<u8> {
        let path = dir().join(name);
        std::fs::read(&path)
            .unwrap_or_else(|e| panic!("corpus file {} must be readable: {e}", path.display()))
    }

    pub(crate) fn read_testdata(name: &str) -> Vec<u8> {
        let path = testdata().join(name);
        std::fs::read(&path)
            .unwrap_or_else(|e| panic!("test file {} must be readable: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(body: &str) -> Vec<(String, String)> {
        parse_form(body.as_bytes()).expect("a valid form")
    }

    #[test]
    fn decodes_in_order_and_keeps_repeats() {
        assert_eq!(
            pairs("From=%2B380501234567&user%5B%5D=A+B&user[]=C&x="),
            [
                ("From".to_owned(), "+380501234567".to_owned()),
                ("user[]".to_owned(), "A B".to_owned()),
                ("user[]".to_owned(), "C".to_owned()),
                ("x".to_owned(), String::new()),
            ]
        );
        assert_eq!(pairs(""), []);
        assert_eq!(pairs("&&a=1&"), [("a".to_owned(), "1".to_owned())]);
        assert_eq!(pairs("flag"), [("flag".to_owned(), String::new())]);
    }

    #[test]
    fn malformed_bodies_are_refused() {
        assert_eq!(
            parse_form(b"CallSid=CA1\xff").map_err(|e| e.kind()),
            Err("malformed")
        );
        assert_eq!(
            parse_form(b"=value").map_err(|e| e.kind()),
            Err("malformed")
        );
        // A broken escape decodes as itself (the WHATWG rule); it cannot
        // verify a signature and no field we read accepts it.
        assert_eq!(pairs("a=%zz%2"), [("a".to_owned(), "%zz%2".to_owned())]);
        // Invalid UTF-8 inside an escape becomes U+FFFD.
        assert_eq!(pairs("a=%ff"), [("a".to_owned(), "\u{fffd}".to_owned())]);
    }

    #[test]
    fn bounds_are_enforced() {
        let huge = "a=".to_owned() + &"x".repeat(MAX_BODY_BYTES);
        assert_eq!(
            parse_form(huge.as_bytes()),
            Err(ParseError::TooLarge {
                max: MAX_BODY_BYTES
            })
        );
        let many = vec!["a=1"; MAX_FIELDS + 1].join("&");
        assert_eq!(
            parse_form(many.as_bytes()),
            Err(ParseError::TooManyFields { max: MAX_FIELDS })
        );
        let just = vec!["a=1"; MAX_FIELDS].join("&");
        assert_eq!(parse_form(just.as_bytes()).map(|p| p.len()), Ok(MAX_FIELDS));
        let long_value = format!("Caller={}", "1".repeat(MAX_VALUE_BYTES + 1));
        assert_eq!(
            parse_form(long_value.as_bytes()).map_err(|e| e.kind()),
            Err("field_too_long")
        );
        let long_name = format!("{}=1", "n".repeat(MAX_NAME_BYTES + 1));
        assert_eq!(
            parse_form(long_name.as_bytes()).map_err(|e| e.kind()),
            Err("field_too_long")
        );
    }

    #[test]
    fn form_access() {
        let params = pairs("a=1&b=&c=%20&d=1&d=2");
        let form = Form::new(&params);
        assert_eq!(form.get("a"), Ok(Some("1")));
        assert_eq!(form.required("a"), Ok("1"));
        assert_eq!(form.required("b"), Err(ParseError::Missing("b")));
        assert_eq!(form.required("c"), Err(ParseError::Missing("c")));
        assert_eq!(form.optional("c"), Ok(None));
        assert_eq!(form.get("d"), Err(ParseError::Repeated("d")));
        assert_eq!(form.all("d").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(form.get("z"), Ok(None));
    }

    #[test]
    fn numbers_and_texts() {
        assert_eq!(number("n", "95"), Ok(95));
        assert_eq!(number("n", " 0 "), Ok(0));
        assert_eq!(number("n", "18446744073709551615"), Ok(u64::MAX));
        for bad in ["", "-1", "+1", "1.5", "18446744073709551616", "1e3", "٣"] {
            assert!(number("n", bad).is_err(), "{bad}");
        }
        assert_eq!(text("t", " +1 555 ", 20), Ok("+1 555".to_owned()));
        assert!(text("t", "a\u{0}b", 20).is_err());
        assert!(text("t", "abc", 2).is_err());
        assert_eq!(clip("абв", 3), "а");
        assert_eq!(clip("abc", 5), "abc");
    }
}
