//! Telegram replies and generic-bridge replies against local stand-ins
//! speaking the Bot API's and our documented formats.

mod send_support;

use send_support::*;
use serde_json::json;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use switchboard_social::Platform;
use switchboard_social::send::{FailureKind, SendConfig, SendOutcome, Sender, http_client};
use switchboard_social::verify::{GENERIC_SIGNATURE_HEADER, GENERIC_TIMESTAMP_HEADER};

const BOT_TOKEN: &str = "7012345678:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";

fn telegram(base: &str) -> Sender {
    let mut config = SendConfig::new(Platform::Telegram, "shop_bot", secret(BOT_TOKEN));
    config.url = Some(base.to_owned());
    config.timeout = Duration::from_secs(2);
    Sender::new(config, http_client(Duration::from_secs(1)).expect("client")).expect("sender")
}

#[tokio::test]
async fn telegram_reply_is_the_documented_send_message_request() {
    let provider = StandIn::start(Kind::Telegram).await;
    let sender = telegram(&provider.base);
    let msg = reply(
        conversation(),
        "telegram",
        "123456789",
        "shop_bot",
        "Hello from support",
    );

    let outcome = sender.send(&msg).await;

    let seen = provider.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, format!("/bot{BOT_TOKEN}/sendMessage"));
    assert_eq!(
        seen[0].body,
        json!({"chat_id": 123_456_789, "text": "Hello from support"})
    );
    assert!(!seen[0].headers.contains_key("authorization"));
    let id = seen[0].id.clone().expect("an id");
    assert!(id.starts_with("123456789:"));
    assert_eq!(
        outcome,
        SendOutcome::Delivered {
            provider_message_id: Some(id)
        }
    );
    assert!(!format!("{sender:?}").contains(BOT_TOKEN));
}

#[tokio::test]
async fn telegram_flood_control_is_retried_after_retry_after() {
    let provider = StandIn::start(Kind::Telegram).await;
    provider.script(
        "busy",
        vec![Canned::new(
            429,
            json!({"ok": false, "error_code": 429,
                   "description": "Too Many Requests: retry after 3",
                   "parameters": {"retry_after": 3}}),
        )],
    );
    let sender = telegram(&provider.base);
    let msg = reply(conversation(), "telegram", "123456789", "shop_bot", "busy");
    let outcome = sender.send(&msg).await;
    let SendOutcome::Retry { after, reason } = &outcome else {
        panic!("not retried: {outcome:?}");
    };
    assert_eq!(*after, Some(Duration::from_secs(3)));
    assert!(reason.contains("retry after 3"));
}

#[tokio::test]
async fn telegram_blocked_bot_fails_for_good() {
    let provider = StandIn::start(Kind::Telegram).await;
    provider.script(
        "anyone?",
        vec![Canned::new(
            403,
            json!({"ok": false, "error_code": 403,
                   "description": "Forbidden: bot was blocked by the user"}),
        )],
    );
    let sender = telegram(&provider.base);
    let msg = reply(
        conversation(),
        "telegram",
        "123456789",
        "shop_bot",
        "anyone?",
    );
    assert_eq!(
        sender.send(&msg).await,
        SendOutcome::Failed {
            kind: FailureKind::Blocked,
            code: Some(403),
            reason: "Not delivered: the customer blocked the Telegram bot.".into(),
        }
    );
}

#[tokio::test]
async fn the_bot_token_never_reaches_a_reason() {
    let provider = StandIn::start(Kind::Telegram).await;
    provider.script(
        "who am I",
        vec![Canned::new(
            401,
            json!({"ok": false, "error_code": 401, "description": "Unauthorized"}),
        )],
    );
    provider.script(
        "slow",
        vec![Canned::new(200, json!({"ok": true})).after(Duration::from_secs(5))],
    );
    let mut config = SendConfig::new(Platform::Telegram, "shop_bot", secret(BOT_TOKEN));
    config.url = Some(provider.base.clone());
    config.timeout = Duration::from_millis(300);
    let client = http_client(Duration::from_millis(300)).expect("client");
    let sender = Sender::new(config, client.clone()).expect("sender");
    let mut reasons = Vec::new();
    // A proxy or a self-hosted Bot API server behind Apache answering a
    // wrong path with a page that names it: the body went into the reason
    // (logs, the agent's transcript) with the token in it.
    provider.script("lost", vec![Canned::echoing_path(404)]);
    provider.script("gateway", vec![Canned::echoing_path(502)]);
    // The token right where the reason's excerpt is cut (300 characters).
    provider.script("cut", vec![Canned::echoing_path_after(404, 230)]);
    for text in ["who am I", "slow", "lost", "gateway", "cut"] {
        let msg = reply(conversation(), "telegram", "42", "", text);
        reasons.push(format!("{:?}", sender.send(&msg).await));
    }
    let mut config = SendConfig::new(Platform::Telegram, "shop_bot", secret(BOT_TOKEN));
    config.url = Some("http://127.0.0.1:9".into());
    let refused = Sender::new(config, client).expect("sender");
    let msg = reply(conversation(), "telegram", "42", "", "hello");
    reasons.push(format!("{:?}", refused.send(&msg).await));

    assert!(reasons[0].contains("BadToken"), "{}", reasons[0]);
    assert!(reasons[1].contains("timed out"), "{}", reasons[1]);
    for (reason, status) in [(&reasons[2], "HTTP 404"), (&reasons[3], "HTTP 502")] {
        assert!(
            reason.contains(status) && reason.contains("/bot<redacted>/sendMessage"),
            "{reason}"
        );
    }
    assert!(reasons[4].contains("HTTP 404"), "{}", reasons[4]);
    assert!(reasons[5].contains("could not connect"), "{}", reasons[5]);
    for reason in &reasons {
        assert!(!reason.contains(BOT_TOKEN), "{reason}");
        assert!(!reason.contains("AAHdqTcv"), "{reason}");
        assert!(!reason.contains("7012345678:"), "{reason}");
    }
    // A token that could change the path is refused up front.
    let bad = SendConfig::new(Platform::Telegram, "x", secret("1:abc/../other"));
    assert!(Sender::new(bad, http_client(Duration::from_secs(1)).expect("client")).is_err());
}

#[tokio::test]
async fn generic_replies_are_signed_like_inbound_deliveries() {
    let provider = StandIn::start(Kind::Generic).await;
    let mut config = SendConfig::new(Platform::Generic, "shop-1", secret("bridge-secret-42"));
    config.url = Some(format!("{}/switchboard/replies", provider.base));
    let sender =
        Sender::new(config, http_client(Duration::from_secs(1)).expect("client")).expect("sender");
    let mut msg = reply(conversation(), "generic", "u-42", "shop-1", "Thanks!");
    msg.in_reply_to = Some("m-1".into());

    let outcome = sender.send(&msg).await;

    let seen = provider.seen();
    let request = &seen[0];
    assert_eq!(request.path, "/switchboard/replies");
    assert_eq!(
        request.body,
        json!({"type": "reply", "id": msg.message_id.to_string(), "account": "shop-1",
               "customer": {"id": "u-42"}, "text": "Thanks!", "in_reply_to": "m-1",
               "created_at": msg.created_at.as_millis()})
    );
    assert_eq!(
        request.headers["idempotency-key"].to_str().expect("ascii"),
        msg.message_id.to_string()
    );
    let header = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert_eq!(
        switchboard_social::verify_generic(
            b"bridge-secret-42",
            header(GENERIC_TIMESTAMP_HEADER),
            header(GENERIC_SIGNATURE_HEADER),
            &request.raw,
            now,
            60,
        ),
        Ok(())
    );
    assert_eq!(
        outcome,
        SendOutcome::Delivered {
            provider_message_id: request.id.clone()
        }
    );

    provider.script(
        "nope",
        vec![Canned::new(
            422,
            json!({"error": "The customer unsubscribed."}),
        )],
    );
    let refused = reply(conversation(), "generic", "u-42", "shop-1", "nope");
    assert_eq!(
        sender.send(&refused).await,
        SendOutcome::Failed {
            kind: FailureKind::Rejected,
            code: None,
            reason: "Not delivered: The customer unsubscribed.".into(),
        }
    );
}

/// Telegram took the message (200) but the answer broke off while it was
/// read: the reply is delivered, not sent again (it was, so the customer
/// got it twice).
#[tokio::test]
async fn an_answer_broken_off_after_a_success_status_is_delivered() {
    let provider = StandIn::start(Kind::Telegram).await;
    provider.script(
        "once",
        vec![
            Canned::new(
                200,
                json!({"ok": true, "result": {"message_id": 77, "chat": {"id": 123456789}}}),
            )
            .cut(),
        ],
    );
    let sender = telegram(&provider.base);
    let msg = reply(conversation(), "telegram", "123456789", "shop_bot", "once");
    let outcome = sender.send(&msg).await;
    assert_eq!(
        outcome,
        SendOutcome::Delivered {
            provider_message_id: None
        }
    );
    // A 5xx broken off the same way is still tried again.
    provider.script(
        "again",
        vec![Canned::new(502, json!({"ok": false, "error_code": 502})).cut()],
    );
    let msg = reply(conversation(), "telegram", "123456789", "shop_bot", "again");
    assert!(
        matches!(sender.send(&msg).await, SendOutcome::Retry { .. }),
        "retried"
    );
}

/// The bridge's id for our reply is kept exactly, however long (up to the
/// intake's 512 bytes): its receipts name it. An excerpt (300 characters
/// and "…") matched none of them.
#[tokio::test]
async fn a_long_bridge_id_is_kept_whole() {
    let provider = StandIn::start(Kind::Generic).await;
    let mut config = SendConfig::new(Platform::Generic, "shop-1", secret("bridge-secret-42"));
    config.url = Some(format!("{}/switchboard/replies", provider.base));
    let sender =
        Sender::new(config, http_client(Duration::from_secs(1)).expect("client")).expect("sender");
    let long = format!("chat-7:{}", "9".repeat(400));
    provider.script("long", vec![Canned::new(200, json!({"id": long}))]);
    let msg = reply(conversation(), "generic", "u-42", "shop-1", "long");
    assert_eq!(
        sender.send(&msg).await,
        SendOutcome::Delivered {
            provider_message_id: Some(long)
        }
    );
    provider.script(
        "too long",
        vec![Canned::new(200, json!({"id": "x".repeat(600)}))],
    );
    let msg = reply(conversation(), "generic", "u-42", "shop-1", "too long");
    assert_eq!(
        sender.send(&msg).await,
        SendOutcome::Delivered {
            provider_message_id: None
        }
    );
}
