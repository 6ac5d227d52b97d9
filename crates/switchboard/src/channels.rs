//! The channel registry: one line per channel type.
//!
//! Adding a channel touches its own crate and one line of the `channels!`
//! list below; the macro makes the `[[channels]]` configuration enum and its
//! dispatch from it.

use serde::Deserialize;
use switchboard_channel::ChannelConfig;

macro_rules! channels {
    ($($variant:ident = $type_name:literal => $config:ty,)*) => {
        /// One `[[channels]]` entry; `type` selects the adapter. Each
        /// configuration is boxed: they differ a lot in size.
        #[derive(Debug, Deserialize)]
        #[serde(tag = "type")]
        pub enum ChannelSettings {
            $(#[serde(rename = $type_name)] $variant(Box<$config>),)*
        }

        impl ChannelSettings {
            /// The channel's configuration behind the plug-in contract.
            pub fn config(&self) -> &dyn ChannelConfig {
                match self {
                    $(Self::$variant(c) => c.as_ref(),)*
                }
            }

            /// The `type` it was configured with.
            pub fn type_name(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $type_name,)*
                }
            }
        }

        /// Every registered `type`.
        pub const CHANNEL_TYPES: &[&str] = &[$($type_name,)*];
    };
}

channels! {
    IntakeApi = "intake_api" => switchboard_api_intake::IntakeApiConfig,
    Meta = "meta" => switchboard_social::MetaConfig,
    Telegram = "telegram" => switchboard_social::TelegramConfig,
    Webhook = "webhook" => switchboard_social::GenericConfig,
    Twilio = "twilio" => switchboard_voice::TwilioConfig,
    Cti = "cti" => switchboard_voice::CtiConfig,
    Email = "email" => switchboard_email::EmailConfig,
    Chat = "chat" => switchboard_chat::ChatConfig,
}
