//! Every delivery of the social corpus (`tests/corpus/social`, copied from
//! `../shared`), posted to a running daemon with the signature headers of
//! `SIGNATURES.tsv` (computed independently of Switchboard), in the file's
//! order, each checked against its documented outcome in Redis: contacts,
//! messages, edits, receipts, duplicates, refusals. Between the WhatsApp
//! text and the status row an agent answers the WhatsApp customer, and the
//! reply goes out through a local stand-in for the Graph API, which names it
//! `wamid.OUR-REPLY-1`: the status row then marks that reply delivered.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchboard_e2e::*;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/social");
const AGENT_TOKEN: &str = "social-agent-token-0123456789";

struct Row {
    file: String,
    header: String,
    value: String,
    what: String,
}

/// The rows of SIGNATURES.tsv and the two secrets in its comments.
fn signatures() -> (Vec<Row>, String, String) {
    let text = std::fs::read_to_string(format!("{CORPUS}/SIGNATURES.tsv")).unwrap();
    let secret = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap()
            .trim()
            .to_owned()
    };
    let meta = secret("# Meta app secret:");
    let telegram = secret("# Telegram secret_token:");
    let rows = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("file\t") && !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            Row {
                file: cols[0].trim_end_matches(" (again)").to_owned(),
                header: cols[1].to_owned(),
                value: cols[2].to_owned(),
                what: cols[3].to_owned(),
            }
        })
        .collect();
    (rows, meta, telegram)
}

/// What a local Graph API stand-in received: (path, authorization, body).
type Sent = Arc<Mutex<Vec<(String, String, Value)>>>;

/// A stand-in for the Graph API's WhatsApp send endpoint
/// (`POST /{version}/{phone-number-id}/messages`), answering as documented.
/// A slow provider: while the test holds `stall` for writing, media
/// downloads wait; `entered` counts the downloads begun.
struct Stall {
    stall: Arc<tokio::sync::RwLock<()>>,
    entered: Arc<std::sync::atomic::AtomicUsize>,
}

async fn graph_stand_in() -> (String, Sent, Stall) {
    async fn send(
        State(sent): State<Sent>,
        Path((version, phone)): Path<(String, String)>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> Json<Value> {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let to = body["to"].clone();
        sent.lock()
            .unwrap()
            .push((format!("/{version}/{phone}/messages"), auth, body));
        Json(json!({
            "messaging_product": "whatsapp",
            "contacts": [{ "input": to, "wa_id": to }],
            "messages": [{ "id": "wamid.OUR-REPLY-1" }]
        }))
    }
    let sent: Sent = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Media: `GET /{version}/{media-id}` names a short-lived URL, which
    // serves the file to the same bearer token.
    let media_info = move |Path((_version, id)): Path<(String, String)>, headers: HeaderMap| async move {
        if headers.get("authorization").and_then(|v| v.to_str().ok())
            != Some("Bearer whatsapp-access-token")
            || id != "MEDIA-ID-1"
        {
            return (
                axum::http::StatusCode::NOT_FOUND,
                Json(json!({"error": {"code": 100}})),
            );
        }
        (
            axum::http::StatusCode::OK,
            Json(json!({
                "messaging_product": "whatsapp",
                "url": format!("http://{addr}/files/{id}"),
                "mime_type": "image/jpeg",
                "file_size": 9,
                "id": id
            })),
        )
    };
    let stall = Stall {
        stall: Arc::new(tokio::sync::RwLock::new(())),
        entered: Arc::default(),
    };
    let (gate, entered) = (stall.stall.clone(), stall.entered.clone());
    let file = move |Path(id): Path<String>, headers: HeaderMap| async move {
        entered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _open = gate.read().await;
        let authorized = headers.get("authorization").and_then(|v| v.to_str().ok())
            == Some("Bearer whatsapp-access-token");
        if authorized && id == "MEDIA-ID-1" {
            (axum::http::StatusCode::OK, b"\xff\xd8JPEGDATA".to_vec())
        } else {
            (axum::http::StatusCode::NOT_FOUND, Vec::new())
        }
    };
    let app = axum::Router::new()
        .route("/{version}/{phone}/messages", axum::routing::post(send))
        .route("/{version}/{id}", axum::routing::get(media_info))
        .route("/files/{id}", axum::routing::get(file))
        .with_state(sent.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/v21.0"), sent, stall)
}

fn config(meta_secret: &str, telegram_secret: &str, graph_url: &str) -> String {
    format!(
        r#"
[routing]
wrap_up_secs = 0

[agent_api]
media_fetches = 1

[[routing.agents]]
id = "olha"
capacity = {{ social = 20 }}
token = "{AGENT_TOKEN}"

[[channels]]
type = "meta"
name = "meta"
app_secret = "{meta_secret}"
verify_token = "verify-token-42"
graph_url = "{graph_url}"

[[channels.accounts]]
name = "shop-page"
id = "105550001"
access_token = "page-access-token"

[[channels.accounts]]
name = "shop-instagram"
id = "178410000"
access_token = "instagram-access-token"

[[channels.accounts]]
name = "shop-whatsapp"
id = "106540352242922"
access_token = "whatsapp-access-token"

[[channels]]
type = "telegram"
name = "telegram"
bot = "shop_bot"
bot_token = "123456:telegram-bot-token"
secret_token = "{telegram_secret}"
"#
    )
}

/// Everything Redis holds about contacts and conversation logs.
struct Snapshot {
    /// customer → contact hashes
    contacts: Vec<HashMap<String, String>>,
    /// (dir, message JSON) of every log entry
    log: Vec<(String, Value)>,
}

async fn snapshot(redis_url: &str) -> Snapshot {
    let client = redis::Client::open(redis_url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("sb:{p*}:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut contacts = Vec::new();
    let mut log = Vec::new();
    for key in keys {
        if key.contains(":contact:") {
            let map: HashMap<String, String> = redis::AsyncCommands::hgetall(&mut conn, &key)
                .await
                .unwrap();
            contacts.push(map);
        } else if key.ends_with(":log") {
            let reply: redis::streams::StreamRangeReply =
                redis::AsyncCommands::xrange_all(&mut conn, &key)
                    .await
                    .unwrap();
            for entry in reply.ids {
                let dir: String = entry.get("dir").unwrap();
                let msg: String = entry.get("msg").unwrap();
                log.push((dir, serde_json::from_str(&msg).unwrap()));
            }
        }
    }
    Snapshot { contacts, log }
}

impl Snapshot {
    fn customers(&self) -> Vec<String> {
        let mut c: Vec<String> = self
            .contacts
            .iter()
            .map(|c| c["customer"].clone())
            .collect();
        c.sort();
        c
    }

    fn inbound(&self) -> Vec<&Value> {
        self.log
            .iter()
            .filter(|(dir, _)| dir == "in")
            .map(|(_, m)| m)
            .collect()
    }

    fn inbound_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .inbound()
            .iter()
            .map(|m| m["provider_message_id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    }
}

async fn reply_status(redis_url: &str) -> Vec<String> {
    let client = redis::Client::open(redis_url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("sb:{p*}:conv:*:status")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut out = Vec::new();
    for key in keys {
        let map: HashMap<String, String> = redis::AsyncCommands::hgetall(&mut conn, &key)
            .await
            .unwrap();
        out.extend(map.into_values());
    }
    out
}

#[tokio::test]
async fn every_corpus_delivery_has_its_documented_outcome() {
    let (rows, meta_secret, telegram_secret) = signatures();
    assert_eq!(rows.len(), 12, "SIGNATURES.tsv rows");
    let (graph_url, sent, stall) = graph_stand_in().await;
    let redis = RedisServer::start();
    let daemon = Daemon::start(
        env!("CARGO_BIN_EXE_switchboard-under-test"),
        &redis.url(),
        &config(&meta_secret, &telegram_secret, &graph_url),
    );
    let http = Http::new();
    let base = daemon.base();

    // Meta's subscription handshake.
    let ok = http
        .get(&format!(
            "{base}/channels/meta/webhook?hub.mode=subscribe&hub.verify_token=verify-token-42&hub.challenge=1158201444"
        ))
        .await
        .unwrap();
    assert_eq!((ok.status, ok.body.as_str()), (200, "1158201444"));
    let bad = http
        .get(&format!(
            "{base}/channels/meta/webhook?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1"
        ))
        .await
        .unwrap();
    assert_eq!(bad.status, 403);

    let mut agent = AgentSocket::connect_when_ready(&base, AGENT_TOKEN).await;
    agent.next(Duration::from_secs(5)).await.expect("hello");
    agent
        .send(json!({"type": "presence", "presence": "available"}))
        .await;

    let mut whatsapp_contact = String::new();
    for (n, row) in rows.iter().enumerate() {
        let body = std::fs::read(format!("{CORPUS}/{}", row.file)).unwrap();
        let channel = if row.file.starts_with("telegram") {
            "telegram"
        } else {
            "meta"
        };
        let before = snapshot(&redis.url()).await;
        let reply = http
            .post(
                &format!("{base}/channels/{channel}/webhook"),
                &[
                    (row.header.as_str(), row.value.as_str()),
                    ("content-type", "application/json"),
                ],
                body,
            )
            .await
            .unwrap();
        let after = snapshot(&redis.url()).await;
        let context = format!("row {} ({}: {}): {}", n + 1, row.file, row.what, reply.body);
        let new_contacts = after.contacts.len() - before.contacts.len();
        let new_inbound = after.inbound().len() - before.inbound().len();
        match n + 1 {
            1 => {
                assert_eq!(reply.status, 200, "{context}");
                assert_eq!(after.customers(), ["messenger:6001002003"], "{context}");
                assert_eq!(after.inbound_ids(), ["m_AbC123-messenger-1"], "{context}");
                assert_eq!(after.contacts[0]["address"], "105550001", "{context}");
            }
            2 => {
                // Two messages: 6001002003's is appended to their open
                // conversation, 6001002004 is a new contact; the read
                // receipt and the echo make nothing.
                assert_eq!(reply.status, 200, "{context}");
                assert_eq!((new_contacts, new_inbound), (1, 2), "{context}");
                assert_eq!(
                    after.customers(),
                    ["messenger:6001002003", "messenger:6001002004"],
                    "{context}"
                );
                assert!(
                    !after.inbound_ids().contains(&"m_batch-3".to_owned()),
                    "the echo is not a customer message: {context}"
                );
            }
            3 => {
                assert_eq!(reply.status, 200, "{context}");
                assert_eq!((new_contacts, new_inbound), (1, 1), "{context}");
                assert!(
                    after
                        .customers()
                        .contains(&"instagram:IGSID-9911".to_owned()),
                    "{context}"
                );
            }
            4 => {
                assert_eq!(reply.status, 200, "{context}");
                assert_eq!((new_contacts, new_inbound), (1, 1), "{context}");
                let wa = after
                    .contacts
                    .iter()
                    .find(|c| c["customer"] == "whatsapp:380501234567")
                    .expect("the WhatsApp contact");
                assert_eq!(wa["customer_name"], "Іван", "{context}");
                assert_eq!(wa["address"], "106540352242922", "{context}");
                // The agent takes it and answers; the reply goes out through
                // the Graph stand-in, which names it wamid.OUR-REPLY-1.
                let contact = wa["id"].clone();
                whatsapp_contact = contact.clone();
                answer_whatsapp(&mut agent, &contact).await;
                assert!(
                    eventually(Duration::from_secs(10), || async {
                        !sent.lock().unwrap().is_empty()
                    })
                    .await,
                    "the reply reached the Graph stand-in"
                );
                let (path, auth, body) = sent.lock().unwrap()[0].clone();
                assert_eq!(path, "/v21.0/106540352242922/messages");
                assert_eq!(auth, "Bearer whatsapp-access-token");
                assert_eq!(body["messaging_product"], "whatsapp");
                assert_eq!(body["to"], "380501234567");
                assert_eq!(body["text"]["body"], "Добрий день! Чим допомогти?");
                // Its provider id is remembered once the outbox settles it.
                assert!(
                    eventually(Duration::from_secs(5), || async {
                        redis_has_reply_ref(&redis.url()).await
                    })
                    .await
                );
            }
            5 => {
                assert_eq!(reply.status, 200, "{context}");
                assert_eq!((new_contacts, new_inbound), (0, 0), "{context}");
                let statuses = reply_status(&redis.url()).await;
                assert_eq!(statuses.len(), 1, "{context}: {statuses:?}");
                assert!(
                    statuses[0].contains("\"status\":\"delivered\""),
                    "{context}: {statuses:?}"
                );
                // The agent sees it on the reply in the transcript.
                let view = http
                    .call(
                        "GET",
                        &format!("{base}/api/v1/contacts/{whatsapp_contact}"),
                        Some(AGENT_TOKEN),
                        None,
                    )
                    .await
                    .unwrap()
                    .json();
                let reply = view["transcript"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|e| e["dir"] == "out")
                    .expect("the reply in the transcript")
                    .clone();
                assert_eq!(
                    reply["delivery"]["outcome"]["state"], "delivered",
                    "{reply}"
                );
                assert_eq!(
                    reply["delivery"]["outcome"]["provider_message_id"],
                    "wamid.OUR-REPLY-1"
                );
                assert_eq!(reply["status"]["status"], "delivered", "{reply}");
            }
            6 => {
                assert_eq!(reply.status, 200, "{context}");
                assert_eq!(new_contacts, 0, "appended to the open conversation");
                assert_eq!(new_inbound, 1, "{context}");
                let image = after
                    .inbound()
                    .into_iter()
                    .find(|m| m["attributes"]["attachments"] == "image")
                    .expect("the image message")
                    .clone();
                let text = image["text"].as_str().unwrap();
                assert!(text.contains("media id MEDIA-ID-1"), "{context}: {text}");
                assert!(text.contains("image/jpeg"), "{context}: {text}");
                // The agent opens it: fetched through the Graph API.
                let url = format!("{base}/api/v1/contacts/{whatsapp_contact}/media/MEDIA-ID-1");
                let got = http
                    .call("GET", &url, Some(AGENT_TOKEN), None)
                    .await
                    .unwrap();
                assert_eq!(got.status, 200, "{}", got.body);
                assert!(got.body.ends_with("JPEGDATA"), "{}", got.body);
                // Never shown in the console's origin: a download, not
                // sniffed, and sandboxed should a browser render it.
                assert!(got.header("content-disposition").starts_with("attachment"));
                assert_eq!(got.header("x-content-type-options"), "nosniff");
                assert_eq!(got.header("content-security-policy"), "sandbox");
                let other = format!("{base}/api/v1/contacts/{whatsapp_contact}/media/MEDIA-ID-2");
                let missing = http
                    .call("GET", &other, Some(AGENT_TOKEN), None)
                    .await
                    .unwrap();
                assert_eq!(missing.status, 404, "only media the conversation received");
                // With the provider slow, one fetch at a time
                // (`media_fetches = 1`): the next waits, then gets 503.
                let held = stall.stall.write().await;
                let begun = stall.entered.load(std::sync::atomic::Ordering::SeqCst);
                let first = tokio::spawn({
                    let (http, url) = (http.clone(), url.clone());
                    async move { http.call("GET", &url, Some(AGENT_TOKEN), None).await }
                });
                // The first holds the one permit once its download began.
                let entered = stall.entered.clone();
                let holding = || {
                    let entered = entered.clone();
                    async move { entered.load(std::sync::atomic::Ordering::SeqCst) > begun }
                };
                assert!(eventually(Duration::from_secs(5), holding).await);
                let busy = http
                    .call("GET", &url, Some(AGENT_TOKEN), None)
                    .await
                    .unwrap();
                busy.assert_refused(503, "unavailable");
                drop(held);
                let first = first.await.unwrap().unwrap();
                assert_eq!(
                    first.status, 200,
                    "the first is served once the provider answers"
                );
            }
            7 => {
                assert_eq!(reply.status, 200, "{context}");
                assert_eq!(
                    (new_contacts, new_inbound),
                    (0, 0),
                    "a repeated delivery stores nothing: {context}"
                );
            }
            8 => {
                assert!(reply.status == 401 || reply.status == 403, "{context}");
                assert_eq!((new_contacts, new_inbound), (0, 0), "{context}");
                assert_eq!(before.log.len(), after.log.len(), "{context}");
            }
            9 => {
                assert_eq!(reply.status, 200, "{context}");
                assert_eq!((new_contacts, new_inbound), (1, 1), "{context}");
                let tg = after
                    .contacts
                    .iter()
                    .find(|c| c["customer"] == "telegram:5550001")
                    .expect("the Telegram contact");
                assert_eq!(tg["address"], "shop_bot", "{context}");
                assert_eq!(tg["language"], "uk", "{context}");
            }
            10 => {
                assert_eq!(reply.status, 200, "{context}");
                assert_eq!((new_contacts, new_inbound), (0, 1), "{context}");
                let photo = after.inbound().into_iter().find(|m| {
                    m["attributes"]["attachments"] == "image"
                        && m["customer"]["scheme"] == "telegram"
                });
                let text = photo.expect("the Telegram photo")["text"].as_str().unwrap();
                assert!(text.starts_with("чек"), "the caption: {text}");
                assert!(text.contains("AgAD-large"), "the largest size: {text}");
            }
            11 => {
                assert_eq!(reply.status, 200, "{context}");
                assert_eq!((new_contacts, new_inbound), (0, 0), "{context}");
                let edits: Vec<&Value> = after
                    .log
                    .iter()
                    .filter(|(dir, _)| dir == "edit")
                    .map(|(_, m)| m)
                    .collect();
                assert_eq!(edits.len(), 1, "{context}");
                assert_eq!(edits[0]["of_provider_message_id"], "5550001:1365");
            }
            12 => {
                assert!(reply.status == 401 || reply.status == 403, "{context}");
                assert_eq!(before.log.len(), after.log.len(), "{context}");
            }
            _ => unreachable!(),
        }
    }

    // Malformed and oversized bodies: a clear error each, and counted.
    let sig = |body: &[u8]| meta_signature(&meta_secret, body);

    // A batch with one unreadable event (a message without its `mid`): the
    // good event is stored and the delivery acknowledged; the bad one is
    // counted. The whole batch was refused before, and Meta's retries of
    // it lost the good event too.
    let batch = br#"{"object":"page","entry":[{"id":"105550001","time":1,"messaging":[
        {"sender":{"id":"7100000000000001"},"recipient":{"id":"105550001"},"timestamp":1764100000000,"message":{"text":"no mid"}},
        {"sender":{"id":"7100000000000002"},"recipient":{"id":"105550001"},"timestamp":1764100000001,"message":{"mid":"m_batch_good","text":"the good one"}}]}]}"#.to_vec();
    let before = snapshot(&redis.url()).await;
    let reply = http
        .post(
            &format!("{base}/channels/meta/webhook"),
            &[("x-hub-signature-256", sig(&batch).as_str())],
            batch,
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let after = snapshot(&redis.url()).await;
    let new: Vec<&Value> = after
        .inbound()
        .into_iter()
        .filter(|m| !before.inbound().contains(m))
        .collect();
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(new[0]["text"], "the good one");
    let metrics = metrics_text(&base).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchboard_social_items_total")
                && l.contains("kind=\"unreadable\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );

    let broken = b"{\"object\": \"page\", \"entry\": [".to_vec();
    let reply = http
        .post(
            &format!("{base}/channels/meta/webhook"),
            &[("x-hub-signature-256", sig(&broken).as_str())],
            broken,
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 400, "{}", reply.body);
    // A batch of 1.6 MB (400 messages of 4,000 bytes) is taken whole: the
    // default limit was 1 MiB, and Meta's payloads reach 3 MB.
    let items: Vec<String> = (0..400)
        .map(|i| {
            format!(
                r#"{{"sender":{{"id":"72000000000{i:05}"}},"recipient":{{"id":"105550001"}},"timestamp":1764100000000,"message":{{"mid":"m_big_{i}","text":"{}"}}}}"#,
                "b".repeat(4000)
            )
        })
        .collect();
    let big = format!(
        r#"{{"object":"page","entry":[{{"id":"105550001","time":1,"messaging":[{}]}}]}}"#,
        items.join(",")
    )
    .into_bytes();
    assert!(big.len() > 1_600_000, "{}", big.len());
    let before = snapshot(&redis.url()).await;
    let reply = http
        .post(
            &format!("{base}/channels/meta/webhook"),
            &[("x-hub-signature-256", sig(&big).as_str())],
            big,
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let after = snapshot(&redis.url()).await;
    let stored = after
        .inbound()
        .into_iter()
        .filter(|m| !before.inbound().contains(m))
        .count();
    assert_eq!(stored, 400);
    let huge = vec![b' '; 4 * 1024 * 1024];
    let reply = http
        .post(
            &format!("{base}/channels/meta/webhook"),
            &[("x-hub-signature-256", "sha256=00")],
            huge,
        )
        .await;
    // The daemon answers 413 as soon as the limit is passed and may close
    // the connection before the client has sent the rest: the client then
    // sees the connection end, not the answer. Either way it is counted.
    if let Ok(reply) = reply {
        assert_eq!(reply.status, 413);
    }
    // A new client: the pooled connection may be the one the daemon closed.
    let metrics = metrics_text(&base).await;
    for outcome in ["accepted", "bad_signature", "bad_payload", "too_large"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("switchboard_social_deliveries_total")
                    && l.contains(&format!("outcome=\"{outcome}\""))),
            "{outcome} not counted:\n{metrics}"
        );
    }
}

/// Accepts the offer of `contact` and replies to it.
async fn answer_whatsapp(agent: &mut AgentSocket, contact: &str) {
    let (offer, _) = agent.until("offer", Duration::from_secs(10)).await;
    let offer = offer.expect("an offer");
    // Earlier Messenger and Instagram contacts are offered first; accept
    // offers until the WhatsApp one comes.
    let mut offer = offer;
    loop {
        let id = offer["contact_id"].as_str().unwrap().to_owned();
        agent
            .send(json!({"type": "accept", "contact_id": id}))
            .await;
        if id == contact {
            break;
        }
        offer = agent
            .until("offer", Duration::from_secs(10))
            .await
            .0
            .expect("the WhatsApp offer");
    }
    let (assigned, _) = agent.until("assigned", Duration::from_secs(5)).await;
    assert!(assigned.is_some());
    agent
        .send(
            json!({"type": "reply", "contact_id": contact, "text": "Добрий день! Чим допомогти?"}),
        )
        .await;
}

async fn redis_has_reply_ref(redis_url: &str) -> bool {
    let client = redis::Client::open(redis_url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("sb:{p*}:reply:meta:wamid.OUR-REPLY-1")
        .query_async(&mut conn)
        .await
        .unwrap();
    !keys.is_empty()
}

/// `sha256=<hex>` of Meta's signature (the test's own HMAC, not
/// Switchboard's code).
fn meta_signature(secret: &str, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}
