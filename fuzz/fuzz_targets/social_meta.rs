//! `parse_meta` (Messenger, Instagram and WhatsApp Cloud bodies) on
//! arbitrary bytes, then every message through `into_inbound` and
//! `validate`. Must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_social::{MAX_EVENTS, parse_meta};

fuzz_target!(|data: &[u8]| {
    if let Ok(items) = parse_meta(data) {
        // One item per event, except a Messenger `delivery`, which gives one
        // per `mids[]` element: each of those is at least `"",` in the body.
        assert!(
            items.len() <= MAX_EVENTS + data.len() / 2,
            "{} items from {} bytes",
            items.len(),
            data.len()
        );
        switchboard_fuzz::check_items(items);
    }
});
