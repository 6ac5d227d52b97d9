//! Which sender a reply goes out through.

use super::{SendError, Sender};
use crate::Platform;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use switchboard_core::OutboundMessage;

/// The platform whose identity scheme is `scheme` (see
/// [`Platform::as_str`]).
pub fn platform_of(scheme: &str) -> Option<Platform> {
    [
        Platform::Messenger,
        Platform::Instagram,
        Platform::WhatsApp,
        Platform::Telegram,
        Platform::Generic,
    ]
    .into_iter()
    .find(|p| p.as_str() == scheme)
}

/// No sender fits a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unroutable {
    #[error("Not sent: {0:?} is not a social platform this channel replies on.")]
    Scheme(String),
    #[error("Not sent: no {platform} account {account:?} is configured to reply from.")]
    Account {
        platform: &'static str,
        account: String,
    },
}

/// Every sender of one adapter, found by the reply's platform (the scheme of
/// its recipient) and account (`from_address`).
///
/// Meta accounts must match exactly: a reply from the wrong page would reach
/// nobody, or the wrong business. Telegram may leave `from_address` empty (a
/// Telegram update does not name its bot); such a reply goes through the one
/// Telegram sender, when there is exactly one. A generic bridge has one
/// sender (its `reply_url`), which replies for every account it posts
/// messages for (the reply's body names the account): a generic reply goes
/// through it whatever its `from_address`.
#[derive(Debug, Clone, Default)]
pub struct Senders {
    by_account: HashMap<(Platform, String), Arc<Sender>>,
}

impl Senders {
    /// Refuses two senders for the same platform and account.
    pub fn new(senders: impl IntoIterator<Item = Sender>) -> Result<Senders, SendError> {
        let mut by_account = HashMap::new();
        for sender in senders {
            let key = (sender.platform(), sender.account().to_owned());
            if by_account.contains_key(&key) {
                return Err(SendError::Duplicate {
                    platform: key.0.as_str(),
                    account: key.1,
                });
            }
            by_account.insert(key, Arc::new(sender));
        }
        Ok(Senders { by_account })
    }

    /// The sender for `msg`.
    pub fn for_message(&self, msg: &OutboundMessage) -> Result<Arc<Sender>, Unroutable> {
        let platform =
            platform_of(&msg.to.scheme).ok_or_else(|| Unroutable::Scheme(msg.to.scheme.clone()))?;
        if let Some(sender) = self.by_account.get(&(platform, msg.from_address.clone())) {
            return Ok(sender.clone());
        }
        let lenient = match platform {
            Platform::Generic => true,
            Platform::Telegram => msg.from_address.is_empty(),
            _ => false,
        };
        if lenient {
            let mut candidates = self.by_account.iter().filter(|((p, _), _)| *p == platform);
            if let (Some((_, only)), None) = (candidates.next(), candidates.next()) {
                return Ok(only.clone());
            }
        }
        Err(Unroutable::Account {
            platform: platform.as_str(),
            account: msg.from_address.clone(),
        })
    }

    /// The longest timeout of any sender (zero when there is none).
    pub fn max_timeout(&self) -> Duration {
        self.by_account
            .values()
            .map(|s| s.timeout())
            .max()
            .unwrap_or(Duration::ZERO)
    }

    pub fn is_empty(&self) -> bool {
        self.by_account.is_empty()
    }
}
