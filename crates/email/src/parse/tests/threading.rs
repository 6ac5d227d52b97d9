//! Subject tags and signed plus-addresses.

use crate::parse::*;

#[test]
fn conversation_tag_finds_the_last_valid_tag() {
    assert_eq!(
        conversation_tag("Re: Refund [#SB-1234]").as_deref(),
        Some("SB-1234")
    );
    assert_eq!(
        conversation_tag("[#3-01JD3Y0V4B] hello").as_deref(),
        Some("3-01JD3Y0V4B")
    );
    assert_eq!(
        conversation_tag("Fwd: [#old] Re: x [#new]").as_deref(),
        Some("new")
    );
    assert_eq!(conversation_tag("[#[#SB-1]").as_deref(), Some("SB-1"));
    assert_eq!(
        conversation_tag("Замовлення [#SB-7] ✓").as_deref(),
        Some("SB-7")
    );
    assert_eq!(
        conversation_tag(&format!("[#{}]", "a".repeat(64))),
        Some("a".repeat(64))
    );
    for none in [
        "", "[#]", "[# SB-1]", "[#SB_1]", "[#SB-1", "#SB-1]", "[SB-1]", "[#SB-1 ]", "[#",
    ] {
        assert_eq!(conversation_tag(none), None, "{none:?}");
    }
    assert_eq!(conversation_tag(&format!("[#{}]", "a".repeat(65))), None);
}

#[test]
fn tagged_subject_does_not_stack() {
    let t = |s: Option<&str>| tagged_subject(s, "SB-1");
    assert_eq!(t(None), "Re: [#SB-1]");
    assert_eq!(t(Some("")), "Re: [#SB-1]");
    assert_eq!(t(Some("  Re:  ")), "Re: [#SB-1]");
    assert_eq!(t(Some("Hello")), "Re: Hello [#SB-1]");
    assert_eq!(t(Some("Re: Hello [#SB-1]")), "Re: Hello [#SB-1]");
    assert_eq!(t(Some("RE: re: AW: Hello")), "Re: Hello [#SB-1]");
    assert_eq!(t(Some("Re[2]: Re (3): Hello")), "Re: Hello [#SB-1]");
    assert_eq!(
        t(Some("Відп: Замовлення #4411")),
        "Re: Замовлення #4411 [#SB-1]"
    );
    assert_eq!(t(Some("回复：你好")), "Re: 你好 [#SB-1]");
    assert_eq!(t(Some("[#sb-1] Re: Hello")), "Re: Hello [#SB-1]");
    assert_eq!(t(Some("Fwd: Hello")), "Re: Fwd: Hello [#SB-1]");
    assert_eq!(t(Some("Time: 10:00")), "Re: Time: 10:00 [#SB-1]");
    assert_eq!(t(Some("Re: a [#OTHER] b")), "Re: a [#OTHER] b [#SB-1]");
    // One line, whatever came in: nothing can reach other header fields.
    assert_eq!(t(Some("Hi\r\nBcc: x@y")), "Re: Hi Bcc: x@y [#SB-1]");
    // A tag with foreign characters loses them; an empty one is left out.
    assert_eq!(tagged_subject(Some("Hi"), "SB 1]\r\n"), "Re: Hi [#SB1]");
    assert_eq!(tagged_subject(Some("Hi"), " "), "Re: Hi");
}

#[test]
fn tagged_subject_round_trips() {
    for subject in [
        None,
        Some("Re: Re: Замовлення #4411 не доставлено"),
        Some("x [#SB-9]"),
    ] {
        let tagged = tagged_subject(subject, "3-01JD3Y0V4B6N3A8K2M5P7Q9R1S");
        assert_eq!(
            conversation_tag(&tagged).as_deref(),
            Some("3-01JD3Y0V4B6N3A8K2M5P7Q9R1S")
        );
        assert_eq!(
            tagged_subject(Some(&tagged), "3-01JD3Y0V4B6N3A8K2M5P7Q9R1S"),
            tagged
        );
    }
}

const SECRET: &[u8] = b"top secret";

#[test]
fn plus_address_matches_an_independent_hmac() {
    // python3: hmac.new(b"top secret", b"7-01jd3y0v4b6n3a8k2m5p7q9r1s",
    //                   hashlib.sha256).hexdigest()[:16]
    let address = plus_address(
        "help@support.example.com",
        "7-01JD3Y0V4B6N3A8K2M5P7Q9R1S",
        SECRET,
    );
    assert_eq!(
        address,
        "help+7-01jd3y0v4b6n3a8k2m5p7q9r1s.6c1defc0486d55a3@support.example.com"
    );
    assert_eq!(
        verify_plus_address(&address, SECRET),
        Some((
            "help@support.example.com".into(),
            "7-01jd3y0v4b6n3a8k2m5p7q9r1s".into()
        ))
    );
}

#[test]
fn verify_plus_address_survives_case_and_brackets() {
    let address = plus_address("help@support.example.com", "7-ABC", SECRET);
    let expected = Some(("help@support.example.com".to_owned(), "7-abc".to_owned()));
    assert_eq!(
        verify_plus_address(&address.to_uppercase(), SECRET),
        expected
    );
    assert_eq!(
        verify_plus_address(&format!(" <{address}> "), SECRET),
        expected
    );
    // A base mailbox with a plus of its own.
    let address = plus_address("help+eu@support.example.com", "x.y", SECRET);
    assert_eq!(
        verify_plus_address(&address, SECRET),
        Some(("help+eu@support.example.com".into(), "x.y".into()))
    );
}

#[test]
fn verify_plus_address_refuses_forgeries() {
    let address = plus_address("help@support.example.com", "7-abc", SECRET);
    assert_eq!(verify_plus_address(&address, b"other secret"), None);
    assert_eq!(verify_plus_address(&address, b""), None);
    assert_eq!(
        verify_plus_address(&address.replace("7-abc", "7-abd"), SECRET),
        None
    );
    let (local, domain) = address.split_once('@').expect("an address");
    let sig = local.rsplit_once('.').expect("signed").1;
    let mut flipped = sig.to_owned();
    flipped.replace_range(0..1, if sig.starts_with('0') { "1" } else { "0" });
    let forged = [
        format!("{}@{domain}", local.replacen(sig, &flipped, 1)),
        format!("{}@{domain}", &local[..local.len() - 1]),
        format!("{local}0@{domain}"),
        format!("{}@{domain}", local.replacen(sig, "zzzzzzzzzzzzzzzz", 1)),
        format!("{local}@"),
        "help@support.example.com".to_owned(),
        "help+7-abc@support.example.com".to_owned(),
        format!("+7-abc.{sig}@{domain}"),
        format!("help+.{sig}@{domain}"),
        String::new(),
    ];
    for forged in forged {
        assert_eq!(verify_plus_address(&forged, SECRET), None, "{forged:?}");
    }
}
