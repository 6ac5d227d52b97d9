//! `parse_generic` (Switchboard's own webhook format) on arbitrary bytes,
//! then every message through `into_inbound` and `validate`. Must not
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_social::{MAX_EVENTS, parse_generic};

fuzz_target!(|data: &[u8]| {
    if let Ok(items) = parse_generic(data) {
        // Exactly one item per `events[]` element, at most MAX_EVENTS of them.
        assert!(items.len() <= MAX_EVENTS, "{} items", items.len());
        switchboard_fuzz::check_items(items);
    }
});
