//! The LMTP/SMTP listener's dialogue, `switchboard_email::listen::session`,
//! with arbitrary client bytes. Must not panic or hang.
//!
//! Input: byte 0 picks the settings: bit 0 the protocol (0 LMTP, 1 SMTP),
//! bits 1–2 `max_recipients` − 1 (1 to 4), bits 3–5 `max_message_bytes`
//! (one of [`SIZES`], 256 to 4096); byte 1 the size of the pieces the
//! client's bytes arrive in the second time (see below); the rest is what
//! the client sends. No TLS (`STARTTLS` is refused), `require_tls` off.
//!
//! The bytes are written into one end of a `tokio::io::duplex` pipe whose
//! other end `session` gets, then the client shuts its side down for
//! writing and reads everything the server says until it closes. A
//! current-thread runtime with a paused clock runs it: a session waiting
//! for input that has all been sent meets its `command_timeout` at once
//! (a `421 4.4.2` the checks refuse), and one stuck past every timeout
//! trips the guard around it.
//!
//! The session runs twice: with all the bytes at once, and in pieces of the
//! size byte 1 gives (1 to 192 bytes, or a multiple of 128 up to 8 KiB), so
//! that lines, the `.` ending DATA and the limits fall across reads. The
//! server must answer both the same, byte for byte, and hand the sink the
//! same mail: how TCP cuts the stream does not change the dialogue.
//!
//! What the server says: CRLF-terminated lines, each a code 2xx to 5xx and
//! ` ` or `-` (a multi-line reply keeps its code and ends with ` `), no CR
//! or LF inside, UTF-8; first the `220` greeting; `221` only as the last
//! line; the protocol errors (500, 501, 502, 503, 530, 554, 555) at most
//! [`MAX_ERRORS`], and the `421 4.7.0` farewell right after the last of
//! them, exactly then (no other `421`: nothing times out or shuts down);
//! no `HELO` answer in LMTP.
//!
//! What the sink gets: each envelope has 1 to `max_recipients` recipients,
//! each one the sink accepted (`*@ok.example`, lower-cased), ASCII addresses
//! without SMTPUTF8, not TLS, the peer given; a body of at most
//! `max_message_bytes`; each after a `354`. The sink answers each recipient
//! by its local part (`tmp*` 451, `bad*` 550, else 250, each with a text of
//! its own) and, for a `MAIL FROM` starting with `short` or `long`, one
//! answer too few or too many. Those answers appear in the output in
//! order: in LMTP one per recipient (the missing one as the listener's own
//! 451, the extra one dropped), in SMTP one per message (the first 4xx,
//! else the first 5xx, else 250).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use switchboard_email::listen::{
    Envelope, ListenerSettings, MAX_ERRORS, MailSink, Protocol, RcptVerdict, Reply, session,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

/// The `max_message_bytes` bits 3–5 of byte 0 pick.
const SIZES: [usize; 8] = [256, 300, 512, 1000, 1024, 2048, 3000, 4096];

const HOSTNAME: &str = "fuzz.example";

/// The sink's answers, as the listener writes them.
const STORED: &str = "250 2.0.0 fuzz: stored";
const LATER: &str = "451 4.3.0 fuzz: later";
const REFUSED: &str = "550 5.6.0 fuzz: refused";
/// The listener's own answer for a recipient the sink did not answer.
const NO_ANSWER: &str = "451 4.3.0 Error: no answer for this recipient";

/// The replies `Session::error` writes (and counts towards `MAX_ERRORS`);
/// every other reply has another code.
const ERROR_CODES: [&str; 7] = ["500", "501", "502", "503", "530", "554", "555"];

/// Plenty for a session whose client has said everything: the session's own
/// timeouts (10 s, 5 s) come first.
const GUARD: Duration = Duration::from_secs(3600);

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a current-thread runtime")
    })
}

fn peer() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1], 2525))
}

/// Takes `*@ok.example`; refuses `busy*` with 450 and `odd*` with a reply
/// that is not valid as given (code 99, a line break in the text); records
/// every delivery.
#[derive(Default)]
struct FuzzSink {
    got: Mutex<Vec<(Envelope, Vec<u8>)>>,
}

fn accepted(address: &str) -> bool {
    address.ends_with("@ok.example")
}

/// The sink's answer for one recipient.
fn answer(recipient: &str) -> Reply {
    if recipient.starts_with("tmp") {
        Reply::temporary("fuzz: later")
    } else if recipient.starts_with("bad") {
        Reply::rejected("fuzz: refused")
    } else {
        Reply::ok("fuzz: stored")
    }
}

impl MailSink for FuzzSink {
    fn recipient(&self, address: &str) -> RcptVerdict {
        if accepted(address) {
            RcptVerdict::Accept
        } else if address.starts_with("busy") {
            RcptVerdict::Refuse(Reply::new(450, "4.2.1", "busy"))
        } else if address.starts_with("odd") {
            RcptVerdict::Refuse(Reply::new(99, "2.0.0", "odd\r\n-line"))
        } else {
            RcptVerdict::Unknown
        }
    }

    fn deliver<'a>(
        &'a self,
        envelope: &'a Envelope,
        data: &'a [u8],
    ) -> Pin<Box<dyn Future<Output = Vec<Reply>> + Send + 'a>> {
        Box::pin(async move {
            self.got
                .lock()
                .expect("sink lock")
                .push((envelope.clone(), data.to_vec()));
            let mut replies: Vec<Reply> = envelope.recipients.iter().map(|r| answer(r)).collect();
            if envelope.mail_from.starts_with("short") {
                replies.pop();
            } else if envelope.mail_from.starts_with("long") {
                replies.push(Reply::ok("fuzz: stored"));
            }
            replies
        })
    }
}

/// What one session produced: the server's bytes and the sink's mail.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    output: Vec<u8>,
    delivered: Vec<(Envelope, Vec<u8>)>,
}

/// One session over a pipe of `capacity` bytes each way, so that the server
/// reads the client's bytes at most `capacity` at a time.
fn run(settings: &Arc<ListenerSettings>, input: &[u8], capacity: usize) -> Run {
    let sink = Arc::new(FuzzSink::default());
    let (client, server) = tokio::io::duplex(capacity);
    let served = session(
        server,
        peer(),
        settings.clone(),
        sink.clone(),
        CancellationToken::new(),
    );
    let output = runtime().block_on(async {
        let (mut from_server, mut to_server) = tokio::io::split(client);
        let send = async move {
            // Fails only once the server has closed (after QUIT or 421).
            if to_server.write_all(input).await.is_ok() {
                let _ = to_server.shutdown().await;
            }
        };
        let receive = async move {
            let mut output = Vec::new();
            from_server
                .read_to_end(&mut output)
                .await
                .expect("reading from the pipe");
            output
        };
        let all = async {
            let ((), (), output) = tokio::join!(served, send, receive);
            output
        };
        tokio::time::timeout(GUARD, all)
            .await
            .expect("the session hung")
    });
    let delivered = std::mem::take(&mut *sink.got.lock().expect("sink lock"));
    Run { output, delivered }
}

fn code(line: &str) -> &str {
    &line[..3]
}

/// The sink's and the listener's answers to the delivered mail, in the order
/// the output must show them.
fn expected_answers(protocol: Protocol, delivered: &[(Envelope, Vec<u8>)]) -> Vec<&'static str> {
    let mut lines = Vec::new();
    for (envelope, _) in delivered {
        let mut replies: Vec<&'static str> = envelope
            .recipients
            .iter()
            .map(|r| match answer(r).code {
                250 => STORED,
                451 => LATER,
                _ => REFUSED,
            })
            .collect();
        if envelope.mail_from.starts_with("short") {
            replies.pop();
        }
        replies.resize(envelope.recipients.len(), NO_ANSWER);
        match protocol {
            Protocol::Lmtp => lines.extend(replies),
            Protocol::Smtp => {
                let first = |class: u8| replies.iter().find(|r| r.as_bytes()[0] == class);
                let one = first(b'4').or_else(|| first(b'5')).unwrap_or(&replies[0]);
                lines.push(*one);
            }
        }
    }
    lines
}

fn check(settings: &ListenerSettings, run: &Run) {
    let Run { output, delivered } = run;
    let text = std::str::from_utf8(output).expect("the replies are UTF-8");
    let lines: Vec<&str> = text
        .strip_suffix("\r\n")
        .expect("the output ends with CRLF")
        .split("\r\n")
        .collect();

    // Every line: `ddd ` or `ddd-`, 2xx to 5xx, on one line; a multi-line
    // reply keeps its code and ends.
    let mut open: Option<&str> = None;
    for line in &lines {
        let b = line.as_bytes();
        assert!(
            b.len() >= 4
                && (b'2'..=b'5').contains(&b[0])
                && b[1..3].iter().all(u8::is_ascii_digit)
                && (b[3] == b' ' || b[3] == b'-'),
            "malformed reply line {line:?}"
        );
        assert!(!line.contains(['\r', '\n']), "line break in {line:?}");
        if let Some(code) = open {
            assert_eq!(code, &line[..3], "multi-line reply changed code: {line:?}");
        }
        open = (b[3] == b'-').then_some(&line[..3]);
    }
    assert_eq!(open, None, "the output ends within a multi-line reply");

    let protocol = settings.protocol;
    let greeting = format!(
        "220 {HOSTNAME} {} Switchboard ready",
        protocol.as_str().to_uppercase()
    );
    assert_eq!(lines[0], greeting);

    // QUIT is the end.
    if let Some(quit) = lines.iter().position(|l| code(l) == "221") {
        assert_eq!(quit, lines.len() - 1, "replies after 221");
    }
    // Protocol errors: at most MAX_ERRORS, and the farewell right after the
    // last one, only then.
    let errors: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| ERROR_CODES.contains(&code(l)))
        .map(|(i, _)| i)
        .collect();
    assert!(errors.len() <= MAX_ERRORS, "{} errors", errors.len());
    let farewells: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| code(l) == "421")
        .map(|(i, _)| i)
        .collect();
    if errors.len() == MAX_ERRORS {
        let last = lines.len() - 1;
        assert_eq!(farewells, [last], "no farewell after {MAX_ERRORS} errors");
        assert_eq!(errors[MAX_ERRORS - 1] + 1, last);
        assert_eq!(
            lines[last],
            format!("421 4.7.0 {HOSTNAME} Error: too many errors")
        );
    } else {
        assert!(farewells.is_empty(), "421 without too many errors");
    }
    if protocol == Protocol::Lmtp {
        let helo = format!("250 {HOSTNAME}");
        assert!(!lines.contains(&helo.as_str()), "HELO answered in LMTP");
    }

    // The mail the sink got.
    for (envelope, body) in delivered {
        let n = envelope.recipients.len();
        assert!(
            (1..=settings.max_recipients).contains(&n),
            "{n} recipients: {envelope:?}"
        );
        for r in &envelope.recipients {
            assert!(accepted(r), "recipient the sink refused: {r:?}");
        }
        if !envelope.smtputf8 {
            assert!(envelope.mail_from.is_ascii(), "{envelope:?}");
            assert!(envelope.recipients.iter().all(|r| r.is_ascii()));
        }
        assert!(!envelope.tls);
        assert_eq!(envelope.peer, peer());
        assert!(
            body.len() <= settings.max_message_bytes,
            "{} bytes delivered, limit {}",
            body.len(),
            settings.max_message_bytes
        );
    }
    let go_aheads = lines.iter().filter(|l| code(l) == "354").count();
    assert!(go_aheads >= delivered.len());
    let answers: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| [STORED, LATER, REFUSED, NO_ANSWER].contains(l))
        .collect();
    assert_eq!(answers, expected_answers(protocol, delivered));
}

fuzz_target!(|data: &[u8]| {
    let [config, pieces, input @ ..] = data else {
        return;
    };
    let settings = Arc::new(ListenerSettings {
        name: "fuzz".into(),
        protocol: if config & 1 == 0 {
            Protocol::Lmtp
        } else {
            Protocol::Smtp
        },
        hostname: HOSTNAME.into(),
        max_message_bytes: SIZES[usize::from((config >> 3) & 7)],
        max_recipients: usize::from((config >> 1) & 3) + 1,
        command_timeout: Duration::from_secs(10),
        max_session: Duration::from_secs(3600),
        max_sessions: 1,
        tls: None,
        require_tls: false,
        budget: ListenerSettings::budget(1 << 30),
    });
    let whole = run(&settings, input, 64 * 1024);
    check(&settings, &whole);
    let piece = match usize::from(*pieces) {
        p @ 0..192 => p + 1,
        p => (p - 191) * 128,
    };
    let cut = run(&settings, input, piece);
    if cut != whole {
        let text = |r: &Run| String::from_utf8_lossy(&r.output).into_owned();
        panic!(
            "in pieces of {piece} bytes the session went otherwise:\n\
             at once: {}\n{:?}\nin pieces: {}\n{:?}",
            text(&whole),
            whole.delivered,
            text(&cut),
            cut.delivered
        );
    }
});
