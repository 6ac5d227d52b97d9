//! One agent's websocket session.
//!
//! Opening it starts the agent's session (online); closing it ends it, and
//! the routing leader takes back pending offers at once and requeues held
//! contacts after the grace period unless the agent reconnects. The server
//! pings every 20 s; a client silent for 60 s is disconnected. A session
//! whose token no longer names its agent (a supervisor gave the agent a new
//! one) is closed with 1008 before its next action, and within
//! [`TOKEN_RECHECK`] when it only listens.

use crate::Inner;
use crate::actions::Caller;
use crate::error::ApiError;
use crate::frames::{ClientFrame, ErrorBody, PROTOCOL_VERSION, ServerFrame};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::{SinkExt, StreamExt};
use metrics::counter;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

const PING_EVERY: Duration = Duration::from_secs(20);
const IDLE_LIMIT: Duration = Duration::from_secs(60);
/// How long one write may wait for a client that does not read: then the
/// session ends (its socket, task and buffers with it).
const WRITE_LIMIT: Duration = Duration::from_secs(10);

/// How often a session checks that its token is still its agent's.
const TOKEN_RECHECK: Duration = Duration::from_secs(5);

type Sink = futures::stream::SplitSink<WebSocket, Message>;

/// Why a session ended, for `switchboard_agent_ws_closed_total{reason}`.
fn closed(reason: &'static str) {
    counter!("switchboard_agent_ws_closed_total", "reason" => reason).increment(1);
}

/// Runs one write under [`WRITE_LIMIT`]; false when it failed (counted as
/// `write_error`: the connection broke) or took too long (`write_timeout`).
async fn written<F>(write: F) -> bool
where
    F: std::future::Future<Output = bool>,
{
    match tokio::time::timeout(WRITE_LIMIT, write).await {
        Ok(true) => true,
        Ok(false) => {
            closed("write_error");
            debug!("Could not write to the agent's client; closing.");
            false
        }
        Err(_) => {
            closed("write_timeout");
            debug!("The agent's client does not read; closing.");
            false
        }
    }
}

/// Whether the token the session signed in with (its SHA-256, `digest`)
/// still belongs to `agent`. A Redis error counts as yes: the next check
/// decides, and every action needs Redis anyway.
async fn still_signed_in(inner: &Inner, agent: &str, digest: &str) -> bool {
    match inner.state.agent_by_token(digest).await {
        Ok(owner) => owner.as_deref() == Some(agent),
        Err(error) => {
            debug!(%error, "Could not check the session's token; checking again later.");
            true
        }
    }
}

pub async fn session(inner: Arc<Inner>, agent: String, digest: String, socket: WebSocket) {
    let span = info_span!("agent_session", agent_id = %agent);
    async move {
        let (mut sink, mut stream) = socket.split();
        let Some((session_id, mut frames)) = inner.hub.register(
            &agent,
            inner.settings.ws_send_buffer,
            inner.settings.ws_sessions_per_agent,
        ) else {
            closed("too_many_sessions");
            info!("Agent refused: too many sessions on this instance.");
            close(&mut sink, 1008, "too many sessions for this agent").await;
            return;
        };
        counter!("switchboard_agent_sessions_opened_total").increment(1);
        info!("Agent connected.");
        let mut allowance = switchboard_channel::limits::Bucket::new(inner.settings.ws_frames_per_minute);
        let started = async {
            inner.keep_session(&agent, inner.hub.session_holder()).await?;
            inner.me(&agent).await
        }
        .await;
        let hello = match started {
            Ok(me) => ServerFrame::Hello {
                version: PROTOCOL_VERSION,
                me,
            },
            Err(e) => {
                closed("start_failed");
                warn!(error = %e.message, "Could not start the agent's session (Redis?); closing with 1011.");
                let close = Message::Close(Some(CloseFrame {
                    code: 1011,
                    reason: Utf8Bytes::from(e.message.chars().take(100).collect::<String>()),
                }));
                // Counted once, as start_failed, whatever the write does.
                let _ = tokio::time::timeout(WRITE_LIMIT, sink.send(close)).await;
                if inner.hub.unregister(&agent, session_id) {
                    inner
                        .hub
                        .end_session(&inner.state, &agent, inner.session_ttl())
                        .await;
                }
                return;
            }
        };
        let mut ok = written(send(&mut sink, &hello)).await;
        let mut going_away = false;
        let mut last_heard = Instant::now();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        let mut recheck = tokio::time::interval(TOKEN_RECHECK);
        recheck.tick().await;
        let revoked = |sink| async {
            closed("revoked");
            info!("The agent's token was replaced; closing the session.");
            close(sink, 1008, "token revoked: sign in again").await;
        };
        while ok {
            tokio::select! {
                frame = frames.recv() => match frame {
                    Some(frame) => ok = written(send_queued(&mut sink, frame, &mut frames)).await,
                    None => {
                        // Dropped by the hub: the client stopped reading.
                        closed("too_slow");
                        close(&mut sink, 1008, "too slow: frames were not read").await;
                        break;
                    }
                },
                message = stream.next() => {
                    let message = match message {
                        Some(Ok(message)) => message,
                        Some(Err(error)) => {
                            // A frame over the size limit, or one that is not
                            // websocket: said to the client, counted.
                            let too_large = error.to_string().contains("too long");
                            closed(if too_large { "too_large" } else { "bad_frame" });
                            debug!(%error, "Unreadable frame from the agent's client; closing.");
                            let (code, why) = if too_large {
                                (1009, "frame too large")
                            } else {
                                (1002, "unreadable frame")
                            };
                            close(&mut sink, code, why).await;
                            break;
                        }
                        None => {
                            closed("gone");
                            break;
                        }
                    };
                    last_heard = Instant::now();
                    match message {
                        Message::Text(text) => {
                            if !allowance.take(std::time::Instant::now()) {
                                counter!("switchboard_agent_ws_rejected_total", "reason" => "rate_limited").increment(1);
                                let refused = result(&reference_of(text.as_str()), Err(ApiError::new(
                                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                                    "rate_limited",
                                    format!("more than {} frames a minute; this one was not acted on", inner.settings.ws_frames_per_minute),
                                )));
                                ok = written(send(&mut sink, &refused)).await;
                                continue;
                            }
                            if !still_signed_in(&inner, &agent, &digest).await {
                                revoked(&mut sink).await;
                                break;
                            }
                            if let Some(reply) = handle(&inner, &agent, text.as_str()).await {
                                ok = written(send(&mut sink, &reply)).await;
                            }
                        }
                        Message::Binary(_) => {
                            // Counted against the frame allowance like any
                            // other frame.
                            if !allowance.take(std::time::Instant::now()) {
                                counter!("switchboard_agent_ws_rejected_total", "reason" => "rate_limited").increment(1);
                                let refused = result("", Err(ApiError::new(
                                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                                    "rate_limited",
                                    format!("more than {} frames a minute; this one was not acted on", inner.settings.ws_frames_per_minute),
                                )));
                                ok = written(send(&mut sink, &refused)).await;
                                continue;
                            }
                            counter!("switchboard_agent_ws_rejected_total", "reason" => "binary").increment(1);
                            let refused = result("", Err(ApiError::bad_request("bad_frame", "text frames only")));
                            ok = written(send(&mut sink, &refused)).await;
                        }
                        Message::Close(_) => {
                            closed("client");
                            break;
                        }
                        Message::Ping(_) | Message::Pong(_) => {}
                    }
                }
                () = inner.closing.cancelled() => {
                    closed("shutdown");
                    close(&mut sink, 1001, "server going away: connect again").await;
                    going_away = true;
                    break;
                }
                _ = recheck.tick() => {
                    if !still_signed_in(&inner, &agent, &digest).await {
                        revoked(&mut sink).await;
                        break;
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > IDLE_LIMIT {
                        closed("idle");
                        debug!("Agent silent too long; closing.");
                        break;
                    }
                    ok = written(async { sink.send(Message::Ping(Default::default())).await.is_ok() }).await;
                }
            }
        }
        // The instance stopping does not end the session: it lapses by its
        // TTL unless the agent connects again (to this instance restarted,
        // or another), so a restart shorter than the TTL takes nothing back.
        if inner.hub.unregister(&agent, session_id) && !going_away {
            // The last session here: the agent is gone unless another
            // instance's socket or a heartbeat keeps them.
            inner
                .hub
                .end_session(&inner.state, &agent, inner.session_ttl())
                .await;
        }
        info!("Agent disconnected.");
    }
    .instrument(span)
    .await;
}

/// Frames written before one flush at most: an event's frames (an offer
/// and the presence after it) and whatever else is queued leave in one
/// write, not one system call each.
const SEND_BATCH: usize = 32;

/// Sends a close frame, waiting at most [`WRITE_LIMIT`].
async fn close(sink: &mut Sink, code: u16, reason: &'static str) {
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }));
    let _ = tokio::time::timeout(WRITE_LIMIT, sink.send(frame)).await;
}

/// Sends `first` and the frames queued behind it, then flushes once.
async fn send_queued(
    sink: &mut Sink,
    first: ServerFrame,
    queued: &mut tokio::sync::mpsc::Receiver<ServerFrame>,
) -> bool {
    let mut next = Some(first);
    let mut written = 0;
    while let Some(frame) = next.take() {
        if let Ok(text) = serde_json::to_string(&frame)
            && sink.feed(Message::Text(text.into())).await.is_err()
        {
            return false;
        }
        written += 1;
        if written < SEND_BATCH {
            next = queued.try_recv().ok();
        }
    }
    sink.flush().await.is_ok()
}

async fn send(sink: &mut Sink, frame: &ServerFrame) -> bool {
    match serde_json::to_string(frame) {
        Ok(text) => sink.send(Message::Text(text.into())).await.is_ok(),
        Err(_) => true,
    }
}

/// The `ref` of a client frame, for a refusal of a frame not acted on.
fn reference_of(text: &str) -> std::borrow::Cow<'_, str> {
    #[derive(serde::Deserialize)]
    struct Ref<'a> {
        #[serde(rename = "ref", borrow, default)]
        reference: std::borrow::Cow<'a, str>,
    }
    serde_json::from_str::<Ref<'_>>(text).map_or(std::borrow::Cow::Borrowed(""), |r| r.reference)
}

fn result(reference: &str, outcome: Result<Option<serde_json::Value>, ApiError>) -> ServerFrame {
    match outcome {
        Ok(data) => ServerFrame::Result {
            reference: reference.to_owned(),
            ok: true,
            error: None,
            data,
        },
        Err(e) => {
            // Counted as over HTTP (`IntoResponse`).
            counter!("switchboard_agent_api_errors_total", "code" => e.code).increment(1);
            ServerFrame::Result {
                reference: reference.to_owned(),
                ok: false,
                error: Some(ErrorBody {
                    code: e.code.to_owned(),
                    message: e.message,
                }),
                data: None,
            }
        }
    }
}

/// What an agent signals in a contact they hold, for the customer's
/// channel (chat) to show: typing (`on`), or read up to `seq`.
enum Signal {
    Typing { on: bool },
    Read { seq: String },
}

/// Publishes the agent's `signal` as a live event on the contact's
/// channel: the widget shows the agent typing, or its messages as read.
async fn signal(
    inner: &Inner,
    caller: &Caller,
    agent: &str,
    contact: &str,
    signal: Signal,
) -> Result<(), ApiError> {
    let id = crate::actions::contact_id(contact)?;
    if let Signal::Read { seq } = &signal
        && !switchboard_channel::live::seq_ok(seq)
    {
        return Err(ApiError::bad_request(
            "bad_frame",
            "seq must be an entry's seq (<ms>-<n>)",
        ));
    }
    inner.handled(caller, &id).await?;
    let fields = inner.contact_fields(&id).await?;
    let conv = crate::actions::conversation_of(&fields)?;
    let (kind, on, seq, name) = match signal {
        Signal::Typing { on } => {
            let name = inner
                .state
                .agent(agent)
                .await?
                .map(|(profile, _)| profile.name)
                .unwrap_or_default();
            (
                switchboard_channel::LiveKind::Typing,
                on,
                String::new(),
                name,
            )
        }
        Signal::Read { seq } => (
            switchboard_channel::LiveKind::Read,
            false,
            seq,
            String::new(),
        ),
    };
    let event = switchboard_channel::LiveEvent {
        conv: conv.to_string(),
        // The id as routing spells it (its channel's name), whatever
        // spelling the client used.
        contact: id.to_string(),
        source: fields.get("source").cloned().unwrap_or_default(),
        kind,
        seq,
        dir: String::new(),
        on,
        who: "agent".into(),
        name,
        text: None,
        at: 0,
    };
    switchboard_store::Live::new(inner.state.store().clone())
        .publish(&event)
        .await;
    Ok(())
}

async fn handle(inner: &Inner, agent: &str, text: &str) -> Option<ServerFrame> {
    // Frames over `wire_limit` (6 × `max_text_bytes` + 4 KiB) close the socket (1009)
    // before they get here; a text over `max_text_bytes` is refused by
    // the command, with its `ref`.
    let frame: ClientFrame = match crate::frames::parse(text) {
        Ok(f) => f,
        Err(e) => {
            counter!("switchboard_agent_ws_rejected_total", "reason" => "bad_json").increment(1);
            // Its `ref` when it has one: a client waits for that answer.
            return Some(result(
                &reference_of(text),
                Err(ApiError::bad_request("bad_frame", e)),
            ));
        }
    };
    let caller = Caller::Agent(agent.to_owned());
    let (reference, outcome) = match frame {
        ClientFrame::Typing {
            reference,
            contact_id,
            on,
        } => (
            reference,
            signal(inner, &caller, agent, &contact_id, Signal::Typing { on })
                .await
                .map(|()| None),
        ),
        ClientFrame::Read {
            reference,
            contact_id,
            seq,
        } => (
            reference,
            signal(inner, &caller, agent, &contact_id, Signal::Read { seq })
                .await
                .map(|()| None),
        ),
        ClientFrame::Ping { reference } => return Some(ServerFrame::Pong { reference }),
        ClientFrame::Presence {
            reference,
            presence,
            reason,
        } => (
            reference,
            inner
                .set_presence(agent, &presence, &reason)
                .await
                .map(|()| None),
        ),
        ClientFrame::Accept {
            reference,
            contact_id,
        } => (
            reference,
            inner.answer(agent, &contact_id, true).await.map(|()| None),
        ),
        ClientFrame::Decline {
            reference,
            contact_id,
        } => (
            reference,
            inner.answer(agent, &contact_id, false).await.map(|()| None),
        ),
        ClientFrame::Reply {
            reference,
            contact_id,
            text,
            client_id,
        } => (
            reference,
            inner
                .reply(agent, &contact_id, &text, client_id.as_deref())
                .await
                .map(|(id, seq)| Some(serde_json::json!({ "message_id": id, "seq": seq }))),
        ),
        ClientFrame::Note {
            reference,
            contact_id,
            text,
        } => (
            reference,
            inner
                .note(&caller, &contact_id, &text)
                .await
                .map(|seq| Some(serde_json::json!({ "seq": seq }))),
        ),
        ClientFrame::Close {
            reference,
            contact_id,
            disposition,
        } => (
            reference,
            inner
                .close(agent, &contact_id, &disposition)
                .await
                .map(|()| None),
        ),
    };
    Some(result(&reference, outcome))
}

#[cfg(test)]
mod tests {
    use super::{WRITE_LIMIT, written};

    /// A write that waits past the limit ends the socket as
    /// `write_timeout`; one that fails (the connection broke) as
    /// `write_error` (it ended uncounted).
    #[tokio::test(start_paused = true)]
    async fn a_write_the_client_never_takes_gives_up_after_the_limit() {
        let counters = switchboard_testkit::counters::Counters::default();
        let _recorder = metrics::set_default_local_recorder(&counters);
        let started = tokio::time::Instant::now();
        assert!(!written(std::future::pending::<bool>()).await);
        assert_eq!(started.elapsed(), WRITE_LIMIT);
        assert!(written(async { true }).await);
        assert!(!written(async { false }).await, "a failed write");
        let closed = |reason: &str| {
            counters.get(&format!(
                "switchboard_agent_ws_closed_total{{reason={reason}}}"
            ))
        };
        assert_eq!(
            (closed("write_timeout"), closed("write_error")),
            (1, 1),
            "{}",
            counters.dump()
        );
    }
}
