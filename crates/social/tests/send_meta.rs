//! Messenger, Instagram and WhatsApp replies against a local stand-in that
//! speaks the Graph API's documented formats.

mod send_support;

use send_support::*;
use serde_json::json;
use std::time::Duration;
use switchboard_social::Platform;
use switchboard_social::send::{
    FailureKind, Progress, SendConfig, SendOutcome, Sender, Senders, Unroutable, http_client,
};

const PAGE: &str = "104857600012345";
const PHONE_ID: &str = "106540352242922";
const TOKEN: &str = "EAAG-page-token-0123456789";

fn sender(platform: Platform, account: &str, base: &str) -> Sender {
    let mut config = SendConfig::new(platform, account, secret(TOKEN));
    config.url = Some(format!("{base}/v21.0"));
    config.timeout = Duration::from_secs(2);
    Sender::new(config, http_client(Duration::from_secs(1)).expect("client")).expect("sender")
}

#[tokio::test]
async fn messenger_reply_is_the_documented_send_api_request() {
    let provider = StandIn::start(Kind::Graph).await;
    let sender = sender(Platform::Messenger, PAGE, &provider.base);
    let msg = reply(
        conversation(),
        "messenger",
        "6001002003",
        PAGE,
        "Your order shipped.",
    );

    let outcome = sender.send(&msg).await;

    let seen = provider.seen();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!(request.path, format!("/v21.0/{PAGE}/messages"));
    assert_eq!(
        request.headers["authorization"].to_str().expect("ascii"),
        format!("Bearer {TOKEN}")
    );
    assert_eq!(request.headers["content-type"], "application/json");
    assert_eq!(
        request.body,
        json!({"recipient": {"id": "6001002003"}, "messaging_type": "RESPONSE",
               "message": {"text": "Your order shipped."}})
    );
    assert_eq!(
        outcome,
        SendOutcome::Delivered {
            provider_message_id: request.id.clone()
        }
    );
}

#[tokio::test]
async fn messenger_human_agent_tag_and_instagram_me_endpoint() {
    let provider = StandIn::start(Kind::Graph).await;
    let mut config = SendConfig::new(Platform::Messenger, PAGE, secret(TOKEN));
    config.url = Some(format!("{}/v21.0", provider.base));
    config.human_agent_tag = true;
    let client = http_client(Duration::from_secs(1)).expect("client");
    let tagged = Sender::new(config, client.clone()).expect("sender");
    let msg = reply(
        conversation(),
        "messenger",
        "6001002003",
        PAGE,
        "Late answer",
    );
    assert!(matches!(
        tagged.send(&msg).await,
        SendOutcome::Delivered { .. }
    ));

    let instagram = sender(Platform::Instagram, "17841400000000000", &provider.base);
    let msg = reply(
        conversation(),
        "instagram",
        "1789000111",
        "17841400000000000",
        "Hi",
    );
    assert!(matches!(
        instagram.send(&msg).await,
        SendOutcome::Delivered { .. }
    ));

    let seen = provider.seen();
    assert_eq!(
        seen[0].body,
        json!({"recipient": {"id": "6001002003"}, "messaging_type": "MESSAGE_TAG",
               "tag": "HUMAN_AGENT", "message": {"text": "Late answer"}})
    );
    assert_eq!(seen[1].path, "/v21.0/me/messages");
    assert_eq!(seen[1].body["recipient"]["id"], "1789000111");
}

#[tokio::test]
async fn whatsapp_reply_is_the_documented_cloud_api_request() {
    let provider = StandIn::start(Kind::WhatsApp).await;
    let sender = sender(Platform::WhatsApp, PHONE_ID, &provider.base);
    let msg = reply(
        conversation(),
        "whatsapp",
        "380501234567",
        PHONE_ID,
        "Привіт!",
    );

    let outcome = sender.send(&msg).await;

    let seen = provider.seen();
    assert_eq!(seen[0].path, format!("/v21.0/{PHONE_ID}/messages"));
    assert_eq!(
        seen[0].headers["authorization"].to_str().expect("ascii"),
        format!("Bearer {TOKEN}")
    );
    assert_eq!(
        seen[0].body,
        json!({"messaging_product": "whatsapp", "recipient_type": "individual",
               "to": "380501234567", "type": "text",
               "text": {"preview_url": false, "body": "Привіт!"}})
    );
    let id = seen[0].id.clone().expect("a wamid");
    assert!(id.starts_with("wamid."));
    assert_eq!(
        outcome,
        SendOutcome::Delivered {
            provider_message_id: Some(id)
        }
    );
}

#[tokio::test]
async fn whatsapp_closed_window_fails_with_a_sentence_for_the_agent() {
    let provider = StandIn::start(Kind::WhatsApp).await;
    provider.script(
        "Are you still there?",
        vec![Canned::new(
            400,
            whatsapp_error(
                131_047,
                "Re-engagement message",
                "Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
            ),
        )],
    );
    let sender = sender(Platform::WhatsApp, PHONE_ID, &provider.base);
    let msg = reply(
        conversation(),
        "whatsapp",
        "380501234567",
        PHONE_ID,
        "Are you still there?",
    );

    let outcome = sender.send(&msg).await;

    let SendOutcome::Failed { kind, code, reason } = outcome else {
        panic!("not failed: {outcome:?}");
    };
    assert_eq!((kind, code), (FailureKind::WindowClosed, Some(131_047)));
    assert_eq!(
        reason,
        "Not delivered: WhatsApp's 24-hour customer service window is closed. The customer \
         last wrote more than 24 hours ago; until they write again, WhatsApp accepts only \
         pre-approved template messages."
    );
}

#[tokio::test]
async fn graph_errors_map_to_retry_or_failure() {
    let provider = StandIn::start(Kind::Graph).await;
    let cases = [
        (
            "rate",
            Canned::new(
                429,
                graph_error(4, None, "(#4) Application request limit reached"),
            )
            .header("retry-after", "7"),
        ),
        (
            "busy",
            Canned::new(
                500,
                json!({"error": {"message": "An unexpected error has occurred. Please retry your request later.", "type": "OAuthException", "code": 2, "is_transient": true}}),
            ),
        ),
        (
            "gateway",
            Canned::new(502, json!("<html>Bad Gateway</html>")),
        ),
        (
            "window",
            Canned::new(
                400,
                graph_error(
                    10,
                    Some(2_018_278),
                    "(#10) This message is sent outside of allowed window.",
                ),
            ),
        ),
        (
            "away",
            Canned::new(
                400,
                graph_error(551, None, "This person isn't available right now."),
            ),
        ),
        (
            "token",
            Canned::new(
                401,
                graph_error(
                    190,
                    Some(463),
                    "Error validating access token: Session has expired",
                ),
            ),
        ),
        (
            "param",
            Canned::new(400, graph_error(100, None, "(#100) Invalid parameter")),
        ),
    ];
    for (text, canned) in cases.clone() {
        provider.script(text, vec![canned]);
    }
    let sender = sender(Platform::Messenger, PAGE, &provider.base);
    let mut outcomes = Vec::new();
    for (text, _) in &cases {
        let msg = reply(conversation(), "messenger", "6001002003", PAGE, text);
        outcomes.push(sender.send(&msg).await);
    }
    assert!(
        matches!(&outcomes[0], SendOutcome::Retry { after: Some(d), .. } if *d == Duration::from_secs(7))
    );
    assert!(matches!(
        &outcomes[1],
        SendOutcome::Retry { after: None, .. }
    ));
    assert!(
        matches!(&outcomes[2], SendOutcome::Retry { after: None, reason } if reason.contains("HTTP 502"))
    );
    let kinds: Vec<_> = outcomes[3..]
        .iter()
        .map(|o| match o {
            SendOutcome::Failed { kind, .. } => Some(*kind),
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds,
        [
            Some(FailureKind::WindowClosed),
            Some(FailureKind::InvalidRecipient),
            Some(FailureKind::BadToken),
            Some(FailureKind::Rejected),
        ]
    );
    for outcome in &outcomes {
        assert!(!format!("{outcome:?}").contains(TOKEN));
    }
}

#[tokio::test]
async fn a_long_reply_goes_out_in_parts_and_a_retry_resumes_after_the_accepted_ones() {
    let provider = StandIn::start(Kind::Graph).await;
    let parts = [
        "First. ".repeat(250).trim_end().to_owned(),
        "Second. ".repeat(220).trim_end().to_owned(),
        "Third. ".repeat(250).trim_end().to_owned(),
    ];
    let text = parts.join("\n\n");
    assert!(text.chars().count() > 5000);
    provider.script(
        &parts[1],
        vec![Canned::new(
            500,
            graph_error(2, None, "An unexpected error has occurred."),
        )],
    );
    let sender = sender(Platform::Messenger, PAGE, &provider.base);
    let msg = reply(conversation(), "messenger", "6001002003", PAGE, &text);
    let mut progress = Progress::default();

    let outcome = sender.send_resuming(&msg, &mut progress).await;
    assert!(matches!(outcome, SendOutcome::Retry { .. }), "{outcome:?}");
    assert_eq!(progress.parts_sent, 1);
    let outcome = sender.send_resuming(&msg, &mut progress).await;

    let seen = provider.seen();
    let sent: Vec<(&str, u16)> = seen.iter().map(|s| (s.text.as_str(), s.status)).collect();
    assert_eq!(
        sent,
        [
            (parts[0].as_str(), 200),
            (parts[1].as_str(), 500),
            (parts[1].as_str(), 200),
            (parts[2].as_str(), 200),
        ]
    );
    for request in &seen {
        assert!(request.text.encode_utf16().count() < 2000);
    }
    assert_eq!(progress.parts_sent, 3);
    assert_eq!(
        outcome,
        SendOutcome::Delivered {
            provider_message_id: seen[3].id.clone()
        }
    );
    // Every accepted part's id is recorded: receipts come for each.
    let earlier: Vec<String> = [&seen[0], &seen[2]]
        .iter()
        .map(|s| s.id.clone().expect("an id"))
        .collect();
    assert_eq!(progress.earlier_ids, earlier);
    assert_eq!(
        outcome.to_delivery_outcome(&progress),
        Some(switchboard_core::DeliveryOutcome::Delivered {
            provider_message_id: seen[3].id.clone(),
            earlier_ids: earlier,
        })
    );
}

#[tokio::test]
async fn empty_and_oversized_replies_are_refused_without_a_request() {
    let provider = StandIn::start(Kind::Graph).await;
    let sender = sender(Platform::Messenger, PAGE, &provider.base);
    let empty = reply(conversation(), "messenger", "6001002003", PAGE, "  \n ");
    assert!(matches!(
        sender.send(&empty).await,
        SendOutcome::Failed {
            kind: FailureKind::Empty,
            ..
        }
    ));
    let huge = reply(
        conversation(),
        "messenger",
        "6001002003",
        PAGE,
        &"x ".repeat(20_000),
    );
    assert!(matches!(
        sender.send(&huge).await,
        SendOutcome::Failed {
            kind: FailureKind::TooLong,
            ..
        }
    ));
    let wrong = reply(conversation(), "whatsapp", "380501234567", PAGE, "hi");
    assert!(matches!(
        sender.send(&wrong).await,
        SendOutcome::Failed {
            kind: FailureKind::Unroutable,
            ..
        }
    ));
    assert!(provider.seen().is_empty());
}

#[tokio::test]
async fn timeouts_and_refused_connections_are_retried() {
    let provider = StandIn::start(Kind::Graph).await;
    provider.script(
        "slow",
        vec![Canned::new(200, json!({"message_id": "m_late"})).after(Duration::from_secs(5))],
    );
    let mut config = SendConfig::new(Platform::Messenger, PAGE, secret(TOKEN));
    config.url = Some(format!("{}/v21.0", provider.base));
    config.timeout = Duration::from_millis(300);
    let client = http_client(Duration::from_millis(300)).expect("client");
    let slow = Sender::new(config, client.clone()).expect("sender");
    let msg = reply(conversation(), "messenger", "6001002003", PAGE, "slow");
    let outcome = slow.send(&msg).await;
    assert!(
        matches!(&outcome, SendOutcome::Retry { reason, .. } if reason.starts_with("the request timed out")),
        "{outcome:?}"
    );

    // Nothing listens on port 9 of the loopback.
    let mut config = SendConfig::new(Platform::Messenger, PAGE, secret(TOKEN));
    config.url = Some("http://127.0.0.1:9/v21.0".into());
    let refused = Sender::new(config, client).expect("sender");
    let outcome = refused.send(&msg).await;
    let SendOutcome::Retry { reason, .. } = &outcome else {
        panic!("not retried: {outcome:?}");
    };
    assert!(reason.starts_with("could not connect"), "{reason}");
    assert!(!reason.contains("127.0.0.1"), "{reason}");
}

#[tokio::test]
async fn senders_are_found_by_platform_and_account() {
    let client = http_client(Duration::from_secs(1)).expect("client");
    let build = |platform, account: &str, token: &str| {
        let mut config = SendConfig::new(platform, account, secret(token));
        if platform == Platform::Generic {
            config.url = Some("http://127.0.0.1:9/replies".into());
        }
        Sender::new(config, client.clone()).expect("sender")
    };
    let senders = Senders::new([
        build(Platform::Messenger, PAGE, TOKEN),
        build(Platform::WhatsApp, PHONE_ID, TOKEN),
        build(Platform::Telegram, "shop_bot", "123456:ABC-def_ghi"),
        build(Platform::Generic, "", "generic-secret"),
    ])
    .expect("senders");
    let c = conversation();
    let to = |scheme: &str, from: &str| {
        senders
            .for_message(&reply(c, scheme, "42", from, "hi"))
            .map(|s| (s.platform(), s.account().to_owned()))
    };
    assert_eq!(
        to("messenger", PAGE),
        Ok((Platform::Messenger, PAGE.into()))
    );
    assert_eq!(
        to("whatsapp", PHONE_ID),
        Ok((Platform::WhatsApp, PHONE_ID.into()))
    );
    assert_eq!(
        to("telegram", ""),
        Ok((Platform::Telegram, "shop_bot".into()))
    );
    assert_eq!(
        to("telegram", "shop_bot"),
        Ok((Platform::Telegram, "shop_bot".into()))
    );
    assert_eq!(to("generic", ""), Ok((Platform::Generic, String::new())));
    // The bridge's one sender replies for every account it posts for.
    assert_eq!(
        to("generic", "shop-1"),
        Ok((Platform::Generic, String::new()))
    );
    assert!(matches!(
        to("messenger", "999"),
        Err(Unroutable::Account { .. })
    ));
    assert!(matches!(
        to("messenger", ""),
        Err(Unroutable::Account { .. })
    ));
    assert!(matches!(to("visitor", PAGE), Err(Unroutable::Scheme(_))));
    assert!(matches!(
        to("instagram", PAGE),
        Err(Unroutable::Account { .. })
    ));

    let twice = Senders::new([
        build(Platform::Messenger, PAGE, TOKEN),
        build(Platform::Messenger, PAGE, TOKEN),
    ]);
    assert!(twice.is_err());
    let mut config = SendConfig::new(Platform::Messenger, "page-one", secret(TOKEN));
    config.url = None;
    assert!(Sender::new(config, client.clone()).is_err());
}
