//! The command/answer loop on one byte stream.

use super::MAX_ERRORS;
use super::commands::{Flow, Session};
use super::session::Outcome;
use super::wire::{close, farewell, flush};
use smtp_proto::request::receiver::{
    DataReceiver, DummyLineReceiver, MAX_LINE_LENGTH, RequestReceiver,
};
use smtp_proto::{Error, Request};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Bytes read from the client at a time (also the most a body can grow past
/// the size limit before it is dropped).
const READ_CHUNK: usize = 16 * 1024;

pub(super) enum Ended<T> {
    Closed(Outcome),
    /// STARTTLS was answered with 220: the handshake follows on `T`.
    Upgrade(T),
}

/// Input that must arrive within one `command_timeout`: a whole command
/// line, or this many bytes of a message body (or of a line or body being
/// dropped). A read that brings less does not extend the time, so a client
/// dribbling a byte at a time cannot hold a session slot for ever
/// (slowloris; Postfix's `smtpd_per_record_deadline` does the same).
const PROGRESS_BYTES: usize = 1024;

/// The most of an over-long command line dropped before the session is
/// ended: no client sends a megabyte line by mistake.
const MAX_SKIPPED_LINE: usize = 1024 * 1024;

/// The most of a body over the size limit dropped (beyond the limit, as a
/// multiple of it; at least a megabyte) before the session is ended with
/// the message's 552: a client streaming without end would otherwise hold
/// a session slot for ever, every kilobyte renewing its time.
fn max_discarded(max_bytes: usize) -> usize {
    max_bytes.saturating_mul(4).max(1024 * 1024)
}

/// What the incoming bytes are.
enum Mode {
    Command,
    /// The rest of an over-long command line, dropped.
    SkipLine(DummyLineReceiver),
    Data {
        rx: DataReceiver,
        body: Vec<u8>,
        /// The body's share of the listener's budget, in KiB.
        held: Option<OwnedSemaphorePermit>,
    },
    /// The rest of a body over the size limit, dropped; its last two
    /// bytes kept in `tail` to check how it ends ([`smuggled_end`]).
    Discard {
        rx: DataReceiver,
        tail: Vec<u8>,
    },
    /// The rest of a body that did not fit the listener's budget, read
    /// and dropped, its size (unstuffed) counted: answered 452 if it is
    /// within the size limit, else 552. `counted` bytes so far, and the last
    /// two kept in `tail` (a CR that may turn out to start the end, which
    /// the receiver then takes back, and the byte before it, which tells
    /// how the body ended).
    Drain {
        rx: DataReceiver,
        counted: usize,
        tail: Vec<u8>,
    },
}

/// The command/answer loop on one stream (plain, then again under TLS).
/// Replies are collected in `out` and written whenever all input at hand is
/// processed (PIPELINING).
pub(super) async fn dialogue<T>(
    mut io: T,
    s: &mut Session,
    shutdown: &CancellationToken,
    mut out: Vec<u8>,
) -> Ended<T>
where
    T: AsyncRead + AsyncWrite + Unpin + Send,
{
    let timeout = s.settings.command_timeout;
    let max_bytes = s.settings.max_message_bytes;
    let mut receiver = RequestReceiver::default();
    let mut mode = Mode::Command;
    let mut buf = vec![0u8; READ_CHUNK];
    let mut deadline = tokio::time::Instant::now() + timeout;
    let mut progress = 0usize;
    // Bytes of the line or body being dropped (SkipLine, Discard).
    let mut dropped = 0usize;
    // When the body (or part dropped) being read began: progress renews
    // the timeout within it, but not past `max_session` from its start,
    // or a client sending a kilobyte per timeout held a slot for months.
    let mut body_since: Option<tokio::time::Instant> = None;
    loop {
        if let Err(outcome) = flush(&mut io, &mut out, timeout).await {
            return Ended::Closed(outcome);
        }
        // Between commands a shutdown ends the session; within DATA the
        // message is taken first.
        let idle = matches!(mode, Mode::Command | Mode::SkipLine(_));
        let read = tokio::select! {
            biased;
            () = shutdown.cancelled(), if idle => None,
            read = tokio::time::timeout_at(deadline, io.read(&mut buf)) => Some(read),
        };
        let n = match read {
            None => {
                return farewell(
                    io,
                    s,
                    out,
                    "4.3.2",
                    "Service shutting down",
                    Outcome::Shutdown,
                )
                .await;
            }
            Some(Err(_)) => {
                return farewell(
                    io,
                    s,
                    out,
                    "4.4.2",
                    "Error: timeout exceeded",
                    Outcome::Timeout,
                )
                .await;
            }
            Some(Ok(Ok(0))) => return Ended::Closed(Outcome::Disconnected),
            Some(Ok(Ok(n))) => n,
            Some(Ok(Err(e))) => {
                debug!(error = %e, "Read failed.");
                return Ended::Closed(Outcome::Disconnected);
            }
        };
        let mut bytes = buf[..n].iter();
        while !bytes.as_slice().is_empty() {
            let before = bytes.as_slice().len();
            let was_command = matches!(mode, Mode::Command);
            // A command that moves the session on; not a refused one, nor
            // NOOP, RSET, VRFY or HELP (which a client could send now and
            // then to hold a session slot for ever).
            let mut moved_on = false;
            match &mut mode {
                Mode::Command => {
                    if shutdown.is_cancelled() {
                        return farewell(
                            io,
                            s,
                            out,
                            "4.3.2",
                            "Service shutting down",
                            Outcome::Shutdown,
                        )
                        .await;
                    }
                    if s.started.elapsed() >= s.settings.max_session {
                        return farewell(
                            io,
                            s,
                            out,
                            "4.4.2",
                            "Error: session too long",
                            Outcome::Timeout,
                        )
                        .await;
                    }
                    // The receiver caps a line it buffers, not one it gets
                    // whole: the same limit for both. It is given one line
                    // at a time: smtp-proto 0.2 looks past the end of a
                    // `MAIL FROM` or `RCPT TO` line without a colon into the
                    // next one (found by fuzz/fuzz_targets/email_lmtp.rs).
                    let input = bytes.as_slice();
                    let line_end = input.iter().position(|&b| b == b'\n').map(|lf| lf + 1);
                    let ingested = if line_too_long(input) {
                        Err(Error::ResponseTooLong)
                    } else {
                        let mut line = input[..line_end.unwrap_or(input.len())].iter();
                        let result = receiver.ingest(&mut line).map(|r| r.into_owned());
                        let used = line_end.unwrap_or(input.len()) - line.as_slice().len();
                        bytes = input[used..].iter();
                        result
                    };
                    let flow = match ingested {
                        Ok(request) => {
                            let before = (s.errors, s.refusals);
                            moved_on = !is_idle_command(&request);
                            let flow = s.command(request, &mut out);
                            moved_on &= (s.errors, s.refusals) == before;
                            flow
                        }
                        // A whole line that is still not a command: refuse
                        // it rather than read the next line as its end.
                        Err(Error::NeedsMoreData { .. }) if line_end.is_some() => {
                            receiver = RequestReceiver::default();
                            s.error(&mut out, 501, "5.5.4", "Syntax error");
                            Flow::Continue
                        }
                        Err(Error::NeedsMoreData { .. }) => break,
                        Err(Error::ResponseTooLong) => {
                            s.error(&mut out, 500, "5.5.2", "Error: line too long");
                            receiver = RequestReceiver::default();
                            mode = Mode::SkipLine(DummyLineReceiver::default());
                            Flow::Continue
                        }
                        Err(e) => {
                            s.syntax_error(e, &mut out);
                            Flow::Continue
                        }
                    };
                    if s.errors >= MAX_ERRORS {
                        return farewell(
                            io,
                            s,
                            out,
                            "4.7.0",
                            "Error: too many errors",
                            Outcome::TooManyErrors,
                        )
                        .await;
                    }
                    match flow {
                        Flow::Continue => {}
                        Flow::Data => {
                            mode = Mode::Data {
                                rx: data_receiver(),
                                body: Vec::new(),
                                held: None,
                            }
                        }
                        Flow::StartTls => {
                            // Whatever was pipelined after STARTTLS is
                            // dropped with `buf` (command injection).
                            return match flush(&mut io, &mut out, timeout).await {
                                Ok(()) => Ended::Upgrade(io),
                                Err(outcome) => Ended::Closed(outcome),
                            };
                        }
                        Flow::Quit => {
                            if flush(&mut io, &mut out, timeout).await.is_ok() {
                                close(&mut io).await;
                            }
                            return Ended::Closed(Outcome::Quit);
                        }
                    }
                }
                Mode::SkipLine(skip) => {
                    if skip.ingest(&mut bytes) {
                        mode = Mode::Command;
                    } else if dropped + (before - bytes.as_slice().len()) > MAX_SKIPPED_LINE {
                        return farewell(
                            io,
                            s,
                            out,
                            "4.7.0",
                            "Error: line too long",
                            Outcome::TooLarge,
                        )
                        .await;
                    }
                }
                Mode::Data { rx, body, held } => {
                    let done = rx.ingest(&mut bytes, body);
                    if done && smuggled_end(body) {
                        return bad_end_of_data(io, s, out, timeout).await;
                    }
                    // Until the end is seen, the body may hold a CR that
                    // turns out to start the final CRLF.
                    let too_large = body.len() > max_bytes + usize::from(!done);
                    if too_large || !reserve(&s.settings.budget, held, body.len()) {
                        if !too_large {
                            switchboard_channel::warn_throttled!(NO_ROOM, source = %s.settings.name, "Message bodies held at once reached max_mib_in_flight; a message is answered 452 (try again later).");
                        }
                        // The body and its share of the budget go now
                        // (its last two bytes kept, in a vector of their
                        // own: the body's memory goes with its share).
                        let counted = body.len().saturating_sub(2);
                        let tail = body.get(counted..).unwrap_or_default().to_vec();
                        let rx = std::mem::replace(rx, DataReceiver::new());
                        mode = if done {
                            Mode::Command
                        } else if too_large {
                            Mode::Discard { rx, tail }
                        } else {
                            Mode::Drain { rx, counted, tail }
                        };
                        if done && too_large {
                            s.too_large(&mut out);
                        } else if done {
                            s.no_room(&mut out);
                        }
                    } else if done {
                        let body = std::mem::take(body);
                        let held = held.take();
                        mode = Mode::Command;
                        s.deliver(body, &mut out).await;
                        drop(held);
                    }
                }
                Mode::Drain { rx, counted, tail } => {
                    let done = rx.ingest(&mut bytes, tail);
                    if done && smuggled_end(tail) {
                        return bad_end_of_data(io, s, out, timeout).await;
                    }
                    *counted += keep_last_two(tail);
                    let seen = *counted + tail.len();
                    if seen > max_bytes + usize::from(!done) {
                        // Over the size limit after all: 552, not 452.
                        if done {
                            mode = Mode::Command;
                            s.too_large(&mut out);
                        } else {
                            mode = Mode::Discard {
                                rx: std::mem::replace(rx, DataReceiver::new()),
                                tail: std::mem::take(tail),
                            };
                        }
                    } else if done {
                        mode = Mode::Command;
                        s.no_room(&mut out);
                    }
                }
                Mode::Discard { rx, tail } => {
                    let done = rx.ingest(&mut bytes, tail);
                    if done && smuggled_end(tail) {
                        return bad_end_of_data(io, s, out, timeout).await;
                    }
                    keep_last_two(tail);
                    if done {
                        mode = Mode::Command;
                        s.too_large(&mut out);
                    } else if dropped + (before - bytes.as_slice().len()) > max_discarded(max_bytes)
                    {
                        // The message's answer (552: do not send it again),
                        // then the end of the session.
                        s.too_large(&mut out);
                        if flush(&mut io, &mut out, timeout).await.is_ok() {
                            close(&mut io).await;
                        }
                        return Ended::Closed(Outcome::TooLarge);
                    }
                }
            }
            // A command that moves the session on answered (the loop
            // `break`s above while a line is incomplete), a body or a
            // dropped part finished, or enough of one arrived: the next
            // record gets a whole timeout again.
            // Body bytes (a message, a dropped part or line) are
            // progress; command lines are not (NOOPs padded to a kilobyte
            // would otherwise renew the timeout).
            if !was_command {
                progress += before - bytes.as_slice().len();
            }
            if matches!(
                mode,
                Mode::SkipLine(_) | Mode::Discard { .. } | Mode::Drain { .. }
            ) {
                dropped += before - bytes.as_slice().len();
            } else {
                dropped = 0;
            }
            let finished = !was_command && matches!(mode, Mode::Command);
            if moved_on || finished || progress >= PROGRESS_BYTES {
                let now = tokio::time::Instant::now();
                deadline = now + timeout;
                progress = 0;
                if matches!(mode, Mode::Command) {
                    body_since = None;
                } else {
                    let body_end = *body_since.get_or_insert(now) + s.settings.max_session;
                    deadline = deadline.min(body_end);
                }
            }
        }
    }
}

/// Drops all but the last two bytes of `tail` (what a dropped body's end
/// is checked on); how many went.
fn keep_last_two(tail: &mut Vec<u8>) -> usize {
    let gone = tail.len().saturating_sub(2);
    tail.drain(..gone);
    gone
}

/// Whether a body the DATA receiver saw end was ended by
/// `<CRLF>.<CR>…<CR><LF>` rather than `<CRLF>.<CRLF>`. smtp-proto takes
/// both for the end; a body properly ended always ends with the CRLF
/// before the dot (or is empty), while the other form leaves a CR at its
/// end. An MTA in front that does not dot-stuff such a line would let a
/// sender smuggle a second message (with its own MAIL FROM) behind it.
fn smuggled_end(body: &[u8]) -> bool {
    body.last() == Some(&b'\r')
}

/// Refuses the message (every recipient) and ends the session: the bytes
/// after such an end may be a smuggled transaction, not the sender's next
/// command.
async fn bad_end_of_data<T>(
    mut io: T,
    s: &mut Session,
    mut out: Vec<u8>,
    timeout: std::time::Duration,
) -> Ended<T>
where
    T: AsyncWrite + Unpin,
{
    switchboard_channel::warn_throttled!(BAD_END, source = %s.settings.name, peer = %s.peer, "A message ended in <CRLF>.<CR>...<CR><LF> (SMTP smuggling?): refused, and the session closed.");
    s.bad_end_of_data(&mut out);
    if flush(&mut io, &mut out, timeout).await.is_ok() {
        close(&mut io).await;
    }
    Ended::Closed(Outcome::BadEndOfData)
}

/// Logs a smuggling-like end of data at most once a minute.
static BAD_END: switchboard_channel::logs::LogThrottle =
    switchboard_channel::logs::LogThrottle::new(std::time::Duration::from_secs(60));

/// Logs a full budget at most once a minute.
static NO_ROOM: switchboard_channel::logs::LogThrottle =
    switchboard_channel::logs::LogThrottle::new(std::time::Duration::from_secs(60));

/// Grows `held` to cover a body of `len` bytes from `budget` (KiB
/// permits); false, and nothing more taken, when the budget has no room.
fn reserve(budget: &Arc<Semaphore>, held: &mut Option<OwnedSemaphorePermit>, len: usize) -> bool {
    let need = u32::try_from(len.div_ceil(1024)).unwrap_or(u32::MAX);
    let have = held.as_ref().map_or(0, |p| p.num_permits() as u32);
    if need <= have {
        return true;
    }
    match budget.clone().try_acquire_many_owned(need - have) {
        Ok(more) => {
            match held {
                Some(held) => held.merge(more),
                None => *held = Some(more),
            }
            true
        }
        Err(_) => false,
    }
}

/// A DATA receiver that has seen the CRLF ending the DATA command, so that
/// a body starting with "." (a stuffed first line, or the end of an empty
/// body) is read right.
fn data_receiver() -> DataReceiver {
    let mut rx = DataReceiver::new();
    let mut scratch = Vec::new();
    rx.ingest(&mut b"\r\n".iter(), &mut scratch);
    rx
}

/// NOOP, RSET, VRFY and HELP: answered, but they do not give the session
/// more time (as Postfix counts them as junk commands).
fn is_idle_command(request: &Request<String>) -> bool {
    matches!(
        request,
        Request::Noop { .. } | Request::Rset | Request::Vrfy { .. } | Request::Help { .. }
    )
}

/// The next line, complete in `input`, is longer than smtp-proto's limit.
fn line_too_long(input: &[u8]) -> bool {
    input
        .iter()
        .position(|&b| b == b'\n')
        .is_some_and(|lf| lf >= MAX_LINE_LENGTH)
}
