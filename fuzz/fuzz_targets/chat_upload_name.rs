//! The chat channel's upload file names: `file_name` (`http.rs`, reached
//! through `switchboard_chat::fuzzing`) on arbitrary `X-Filename` header
//! values (the input as a `&str` when it is UTF-8, and read as lossy
//! UTF-8), and the name through the attachment line a message carries
//! (`attachment_line`, `split_attachments`). Must not panic.
//!
//! Besides: the name is 1 to 200 characters, not blank, has no `/`, `\`
//! or control characters, and is not `.` or `..`; the attachment line for
//! it is one line and reads back as the same attachment (its name with the
//! `]` that would end the line as a blank, as `attachment_line` writes it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_chat::fuzzing::file_name;
use switchboard_chat::protocol::Attachment;
use switchboard_chat::uploads::{attachment_line, split_attachments};

fn check(raw: &str) {
    let name = file_name(raw);
    let chars = name.chars().count();
    assert!(
        (1..=200).contains(&chars),
        "{chars} characters from {raw:?}"
    );
    assert!(!name.trim().is_empty(), "blank name {name:?} from {raw:?}");
    assert!(!name.contains(['/', '\\']), "a path {name:?} from {raw:?}");
    assert!(
        !name.chars().any(char::is_control),
        "a control character in {name:?} from {raw:?}"
    );
    assert!(name != "." && name != "..", "{name:?} from {raw:?}");

    let attachment = Attachment {
        id: "AAAAAAAAAAAAAAAAAAAAAA".into(),
        name: name.clone(),
        content_type: "image/png".into(),
        size: raw.len() as u64,
    };
    let line = attachment_line(&attachment);
    assert_eq!(line.lines().count(), 1, "{line:?}");
    let expected = Attachment {
        name: name.replace(']', " "),
        ..attachment
    };
    assert_eq!(split_attachments(&line), (String::new(), vec![expected]));
}

fuzz_target!(|data: &[u8]| {
    match std::str::from_utf8(data) {
        Ok(raw) => check(raw),
        Err(_) => check(&String::from_utf8_lossy(data)),
    }
});
