//! A provider stand-in for the send tests: a local HTTP server speaking the
//! documented answer formats of the Graph Send API, WhatsApp Cloud, the
//! Telegram Bot API and the generic bridge. It records every request and
//! answers from a per-text script, else with the provider's success answer.
#![allow(dead_code)]

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchboard_channel::{Secret, SecretValue};
use switchboard_core::{
    ChannelKind, ContactId, ConversationId, CustomerIdentity, MessageId, OutboundMessage,
    Partition, Timestamp,
};

/// Which provider the stand-in plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Messenger and Instagram (the Send API).
    Graph,
    WhatsApp,
    Telegram,
    Generic,
}

/// One request the stand-in received, and what it answered.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
    pub raw: Vec<u8>,
    /// The message text in the body, wherever the provider keeps it.
    pub text: String,
    pub status: u16,
    /// The provider id it answered with, on success.
    pub id: Option<String>,
    pub at: Instant,
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Value,
    /// Answer only after this long (to provoke timeouts).
    pub delay: Option<Duration>,
    /// Send the status and the first bytes of the body, then break the
    /// connection off.
    pub cut: bool,
    /// Answer an HTML page naming the request's path (and its path
    /// percent-encoded), as Apache's and many proxies' error pages do,
    /// instead of `body`.
    pub echo_path: bool,
    /// Characters of filler before the echoed path.
    pub echo_after: usize,
}

impl Canned {
    pub fn new(status: u16, body: Value) -> Canned {
        Canned {
            status,
            headers: Vec::new(),
            body,
            delay: None,
            cut: false,
            echo_path: false,
            echo_after: 0,
        }
    }

    /// [`Canned::echoing_path`] with `filler` characters before the path.
    pub fn echoing_path_after(status: u16, filler: usize) -> Canned {
        Canned {
            echo_after: filler,
            ..Canned::echoing_path(status)
        }
    }

    /// An HTML error page that names the request's path.
    pub fn echoing_path(status: u16) -> Canned {
        Canned {
            echo_path: true,
            ..Canned::new(status, Value::Null)
        }
    }

    pub fn cut(mut self) -> Canned {
        self.cut = true;
        self
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Canned {
        self.headers.push((name, value.to_owned()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Canned {
        self.delay = Some(delay);
        self
    }
}

struct Inner {
    kind: Kind,
    log: Mutex<Vec<Seen>>,
    script: Mutex<HashMap<String, VecDeque<Canned>>>,
    next_id: AtomicU64,
}

/// The running stand-in; stops when dropped.
pub struct StandIn {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StandIn {
    pub async fn start(kind: Kind) -> StandIn {
        let inner = Arc::new(Inner {
            kind,
            log: Mutex::new(Vec::new()),
            script: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the stand-in");
        let addr = listener.local_addr().expect("stand-in address");
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("stand-in serves");
        });
        StandIn {
            base: format!("http://{addr}"),
            inner,
            task,
        }
    }

    /// Answers the next requests carrying `text` with `answers`, in order.
    pub fn script(&self, text: &str, answers: Vec<Canned>) {
        self.inner
            .script
            .lock()
            .expect("script lock")
            .entry(text.to_owned())
            .or_default()
            .extend(answers);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.inner.log.lock().expect("log lock").clone()
    }

    /// The texts the stand-in accepted (2xx), in the order it received them.
    pub fn accepted(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter(|s| (200..300).contains(&s.status))
            .map(|s| s.text)
            .collect()
    }

    /// Every request for `text`.
    pub fn requests_for(&self, text: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.text == text).collect()
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let text = match inner.kind {
        Kind::Graph => json["message"]["text"].as_str(),
        Kind::WhatsApp => json["text"]["body"].as_str(),
        Kind::Telegram | Kind::Generic => json["text"].as_str(),
    }
    .unwrap_or_default()
    .to_owned();
    let canned = inner
        .script
        .lock()
        .expect("script lock")
        .get_mut(&text)
        .and_then(VecDeque::pop_front);
    let n = inner.next_id.fetch_add(1, Ordering::SeqCst);
    let (canned, id) = match canned {
        Some(c) => (c, None),
        None => success(inner.kind, &json, n),
    };
    inner.log.lock().expect("log lock").push(Seen {
        path: uri.path().to_owned(),
        headers,
        body: json,
        raw: body.to_vec(),
        text,
        status: canned.status,
        id,
        at: Instant::now(),
    });
    if let Some(delay) = canned.delay {
        tokio::time::sleep(delay).await;
    }
    let status = StatusCode::from_u16(canned.status).expect("status");
    let mut response = if canned.echo_path {
        let path = uri.path();
        let encoded = path.replace(':', "%3A");
        let filler = ".".repeat(canned.echo_after);
        let page = format!(
            "<html><body><h1>Not Found</h1><p>{filler}The requested URL {path} was not found \
             on this server.</p><!-- {encoded} --></body></html>"
        );
        (status, [("content-type", "text/html")], page).into_response()
    } else if canned.cut {
        let json = canned.body.to_string().into_bytes();
        let half = Bytes::from(json[..json.len() / 2].to_vec());
        // The first half goes out with the head; the break comes after.
        let broken = futures::stream::unfold(Some(half), |half| async move {
            match half {
                Some(half) => Some((Ok(half), None)),
                None => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Some((Err(std::io::Error::other("connection broken off")), None))
                }
            }
        });
        (status, axum::body::Body::from_stream(broken)).into_response()
    } else {
        (status, axum::Json(canned.body)).into_response()
    };
    for (name, value) in canned.headers {
        response
            .headers_mut()
            .insert(name, value.parse().expect("header value"));
    }
    response
}

/// The provider's documented success answer, and the id in it.
fn success(kind: Kind, request: &Value, n: u64) -> (Canned, Option<String>) {
    match kind {
        Kind::Graph => {
            let id = format!("m_{n}");
            let body = json!({"recipient_id": request["recipient"]["id"], "message_id": id});
            (Canned::new(200, body), Some(id))
        }
        Kind::WhatsApp => {
            let id = format!("wamid.HBgM{n}");
            let body = json!({
                "messaging_product": "whatsapp",
                "contacts": [{"input": request["to"], "wa_id": request["to"]}],
                "messages": [{"id": id}],
            });
            (Canned::new(200, body), Some(id))
        }
        Kind::Telegram => {
            let chat = request["chat_id"].clone();
            let body = json!({"ok": true, "result": {
                "message_id": n, "date": 1_795_341_600u64,
                "chat": {"id": chat, "type": "private"}, "text": request["text"],
            }});
            (Canned::new(200, body), Some(format!("{chat}:{n}")))
        }
        Kind::Generic => {
            let id = format!("g-{n}");
            (Canned::new(200, json!({"id": id})), Some(id))
        }
    }
}

/// A Graph API error body.
pub fn graph_error(code: i64, subcode: Option<i64>, message: &str) -> Value {
    let mut error = json!({"message": message, "type": "OAuthException", "code": code,
        "fbtrace_id": "AbCdEf123"});
    if let Some(sub) = subcode {
        error["error_subcode"] = json!(sub);
    }
    json!({ "error": error })
}

/// A WhatsApp Cloud API error body.
pub fn whatsapp_error(code: i64, title: &str, details: &str) -> Value {
    json!({"error": {
        "message": format!("(#{code}) {title}"), "type": "OAuthException", "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": details},
        "fbtrace_id": "Az8or2yhqkZfEZ-_4Qn_Bam",
    }})
}

pub fn secret(value: &str) -> SecretValue {
    Secret::Inline(value.to_owned())
        .resolve()
        .expect("an inline secret")
}

/// A reply to `scheme:to` from `from`, in `conversation`.
pub fn reply(
    conversation: ConversationId,
    scheme: &str,
    to: &str,
    from: &str,
    text: &str,
) -> OutboundMessage {
    OutboundMessage {
        message_id: MessageId::new(),
        contact_id: ContactId::new(conversation.partition()),
        conversation_id: conversation,
        channel: ChannelKind::Social,
        source: "social".into(),
        from_address: from.into(),
        to: CustomerIdentity::new(scheme, to).expect("identity"),
        subject: None,
        text: text.into(),
        in_reply_to: None,
        references: Vec::new(),
        created_at: Timestamp::now(),
        automatic: false,
    }
}

pub fn conversation() -> ConversationId {
    ConversationId::new(Partition(0))
}
