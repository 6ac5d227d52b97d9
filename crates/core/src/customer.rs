//! Who the customer is, as a channel sees them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A customer's identity on one channel: a scheme saying what kind of address
/// it is and the address itself, e.g. `email:olena@customer.example`,
/// `whatsapp:380501234567`, `messenger:6001002003`, `phone:+15551234567`,
/// `visitor:vs_…`. The same identity seen again is the same customer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerIdentity {
    /// 1 to 32 characters of `a-z0-9_-`.
    pub scheme: String,
    /// 1 to 320 bytes (the longest email address), no control characters.
    pub value: String,
}

/// Why an identity was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("customer scheme must be 1 to 32 characters of a-z, 0-9, '_' or '-'")]
    Scheme,
    #[error("customer value must be 1 to 320 bytes without control characters")]
    Value,
}

impl CustomerIdentity {
    pub const MAX_VALUE_BYTES: usize = 320;

    /// A checked identity. Email addresses are compared case-insensitively in
    /// practice, so email values are lower-cased here, once, for everyone.
    pub fn new(scheme: &str, value: &str) -> Result<Self, IdentityError> {
        let scheme_ok = !scheme.is_empty()
            && scheme.len() <= 32
            && scheme
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !scheme_ok {
            return Err(IdentityError::Scheme);
        }
        let value = value.trim();
        if value.is_empty()
            || value.len() > Self::MAX_VALUE_BYTES
            || value.chars().any(char::is_control)
        {
            return Err(IdentityError::Value);
        }
        let value = if scheme == "email" {
            value.to_lowercase()
        } else {
            value.to_owned()
        };
        // Lower-casing can make a value longer (`İ`, 2 bytes, becomes
        // `i̇`, 3): checked again, or a stored identity would not pass
        // `new` when read back.
        if value.len() > Self::MAX_VALUE_BYTES {
            return Err(IdentityError::Value);
        }
        Ok(CustomerIdentity {
            scheme: scheme.to_owned(),
            value,
        })
    }

    /// The key that recognises the same person across channels: email
    /// addresses as they are (`email:…`), phone numbers of any channel that
    /// identifies by one (`phone`, `whatsapp`, `sms`, `caller`, `tel`) as
    /// `tel:+<digits>`, so a WhatsApp user who calls is one customer;
    /// anything else (`messenger:…`, `visitor:…`) only matches itself.
    pub fn person_key(&self) -> String {
        if matches!(
            self.scheme.as_str(),
            "phone" | "whatsapp" | "sms" | "caller" | "tel"
        ) {
            let digits: String = self.value.chars().filter(char::is_ascii_digit).collect();
            let plausible = self
                .value
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '(' | ')' | '.'));
            if plausible && (7..=15).contains(&digits.len()) {
                return format!("tel:+{digits}");
            }
        }
        self.to_string()
    }

    /// Re-checks an identity that came from outside (e.g. deserialized).
    pub fn validated(self) -> Result<Self, IdentityError> {
        Self::new(&self.scheme, &self.value)
    }
}

impl fmt::Display for CustomerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.scheme, self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value within the limit that lower-casing makes longer is refused:
    /// stored, it would not pass `new` when read back (closes and replies
    /// failed on it).
    #[test]
    fn an_email_value_longer_once_lower_cased_is_refused() {
        let at = "@example.com";
        let fits = format!(
            "{}{at}",
            "a".repeat(CustomerIdentity::MAX_VALUE_BYTES - at.len())
        );
        assert!(CustomerIdentity::new("email", &fits).is_ok());
        // 'İ' is 2 bytes, lower-cased 3: 150 of them are 300 bytes, 450 once
        // lower-cased.
        let grows = format!("{}{at}", "İ".repeat(150));
        assert!(grows.len() <= CustomerIdentity::MAX_VALUE_BYTES);
        assert_eq!(
            CustomerIdentity::new("email", &grows),
            Err(IdentityError::Value)
        );
        // Read back, every identity `new` made passes it again.
        let small = CustomerIdentity::new("email", &format!("{}{at}", "İ".repeat(10)));
        assert!(small.is_ok());
        assert_eq!(small.clone().and_then(CustomerIdentity::validated), small);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let ok: Result<CustomerIdentity, _> =
            serde_json::from_str(r#"{"scheme":"visitor","value":"v1"}"#);
        assert!(ok.is_ok());
        let extra: Result<CustomerIdentity, _> =
            serde_json::from_str(r#"{"scheme":"visitor","value":"v1","vip":true}"#);
        assert!(extra.is_err());
    }

    #[test]
    fn email_is_normalised() {
        let id = CustomerIdentity::new("email", " Olena@Customer.Example ").expect("valid");
        assert_eq!(id.to_string(), "email:olena@customer.example");
    }

    #[test]
    fn bad_identities_are_refused() {
        assert_eq!(CustomerIdentity::new("", "x"), Err(IdentityError::Scheme));
        assert_eq!(
            CustomerIdentity::new("E-mail", "x"),
            Err(IdentityError::Scheme)
        );
        assert_eq!(
            CustomerIdentity::new("email", " "),
            Err(IdentityError::Value)
        );
        assert_eq!(
            CustomerIdentity::new("phone", "1\n2"),
            Err(IdentityError::Value)
        );
        assert_eq!(
            CustomerIdentity::new("phone", &"1".repeat(321)),
            Err(IdentityError::Value)
        );
    }
}

#[cfg(test)]
mod person_tests {
    use super::CustomerIdentity;

    fn key(scheme: &str, value: &str) -> String {
        CustomerIdentity::new(scheme, value)
            .expect("valid")
            .person_key()
    }

    #[test]
    fn phone_numbers_meet_across_channels() {
        assert_eq!(key("whatsapp", "380501234567"), "tel:+380501234567");
        assert_eq!(key("phone", "+380 50 123-45-67"), "tel:+380501234567");
        assert_eq!(key("caller", "+1 (555) 123.4567"), "tel:+15551234567");
    }

    #[test]
    fn other_identities_match_only_themselves() {
        assert_eq!(
            key("email", "Olena@Customer.Example"),
            "email:olena@customer.example"
        );
        assert_eq!(key("messenger", "6001002003"), "messenger:6001002003");
        assert_eq!(key("phone", "anonymous"), "phone:anonymous");
        assert_eq!(key("phone", "12345"), "phone:12345");
    }
}
