//! `parse_telegram` (one Bot API update) on arbitrary bytes, then the
//! message through `into_inbound` and `validate`. Must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_social::parse_telegram;

fuzz_target!(|data: &[u8]| {
    if let Ok(items) = parse_telegram(data) {
        // One update, one item (a message, an edit or an ignored event).
        assert_eq!(items.len(), 1, "{items:?}");
        switchboard_fuzz::check_items(items);
    }
});
