//! Whole calls through the Twilio channel of a running daemon: the test
//! plays Twilio, posting signed form requests exactly as Twilio does
//! (signatures of the corpus rows from `tests/corpus/voice/SIGNATURES.tsv`,
//! computed independently of Switchboard; the others with this file's own
//! HMAC-SHA1), and follows the TwiML answers.
//!
//! Calls: answered (the agent's phone rings, is answered, the call ends,
//! the agent wraps up); abandoned in queue (never offered again);
//! ring-no-answer (the next agent's phone rings); an agent busy on another
//! call (the next call waits for them); a blocked caller (rejected, nothing
//! stored); wrong signatures (refused, nothing stored).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hmac::Mac;
use serde_json::json;
use std::time::Duration;
use switchboard_e2e::*;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/voice");
const PUBLIC: &str = "https://switchboard.example.com/voice/twilio";
const TOKEN_OLHA: &str = "olha-agent-token-0123456789";
const TOKEN_PETRO: &str = "petro-agent-token-0123456789";
const SUPERVISOR: &str = "supervisor-token-0123456789";

fn auth_token() -> String {
    let text = std::fs::read_to_string(format!("{CORPUS}/SIGNATURES.tsv")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("# Twilio auth token:"))
        .unwrap()
        .trim()
        .to_owned()
}

fn config(agents: &str) -> String {
    format!(
        r#"
[routing]
wrap_up_secs = 2
missed_offers_before_away = 1

[routing.offer_timeout_secs]
voice = 60
{agents}

[agent_api]
supervisor_token = "{SUPERVISOR}"

[[channels]]
type = "twilio"
name = "phone"
auth_token = "{}"
public_url = "{PUBLIC}"
hold_pause_secs = 1
ring_timeout_secs = 15
blocked = ["+48 22 000 00 00"]

[channels.agents]
olha = "sip:olha@pbx.example.com"
petro = "+380441234567"
"#,
        auth_token()
    )
}

fn agent(id: &str, token: &str) -> String {
    format!(
        "\n[[routing.agents]]\nid = \"{id}\"\ncapacity = {{ voice = 1, chat = 2 }}\ntoken = \"{token}\"\n"
    )
}

/// Twilio's `X-Twilio-Signature`: base64(HMAC-SHA1(token, url + every
/// parameter's name and value, sorted by name)).
fn sign(url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut data = url.to_owned();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(auth_token().as_bytes()).unwrap();
    mac.update(data.as_bytes());
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn form(params: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    s.finish()
}

/// Plays Twilio against the daemon at `base`.
/// A private Redis, the daemon with a Twilio channel and `agents`, and a
/// client that speaks Twilio's side of the calls.
fn start(agents: &str) -> (RedisServer, Daemon, Twilio) {
    start_with(&config(agents))
}

fn start_with(config: &str) -> (RedisServer, Daemon, Twilio) {
    let redis = RedisServer::start();
    let daemon = Daemon::start(
        env!("CARGO_BIN_EXE_switchboard-under-test"),
        &redis.url(),
        config,
    );
    let twilio = Twilio {
        http: Http::new(),
        base: daemon.base(),
    };
    (redis, daemon, twilio)
}

struct Twilio {
    http: Http,
    base: String,
}

impl Twilio {
    /// Posts `params` to `path` (relative to the channel, with its query),
    /// signed for the public URL, as Twilio does.
    async fn post(&self, path: &str, params: &[(&str, &str)]) -> Reply {
        let signature = sign(&format!("{PUBLIC}{path}"), params);
        self.post_signed(path, params, &signature).await
    }

    async fn post_signed(&self, path: &str, params: &[(&str, &str)], signature: &str) -> Reply {
        self.http
            .post(
                &format!("{}/channels/phone{path}", self.base),
                &[
                    ("x-twilio-signature", signature),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
                form(params),
            )
            .await
            .unwrap()
    }

    /// A new inbound call: the hold TwiML, and the `/wait…` path it
    /// redirects to.
    async fn call(&self, sid: &str, from: &str) -> String {
        let reply = self.post("/incoming", &incoming(sid, from)).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(reply.body.contains("<Say"), "{}", reply.body);
        redirect(&reply.body)
    }

    /// The agent's phone is picked up (leg `child` of the caller's
    /// `parent`): Twilio asks the bridge, which must connect them, then
    /// reports the leg answered to the dial's status callback `status`.
    async fn pick_up(&self, status: &str, parent: &str, child: &str) {
        let mut leg = leg(child, "in-progress");
        leg.push(("ParentCallSid", parent));
        let r = self.post(&bridge_of(status), &leg).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(!r.body.contains("<Hangup"), "connected: {}", r.body);
        let r = self.post(status, &leg).await;
        assert!(r.status < 300, "{}", r.body);
    }

    /// Follows the hold loop until the TwiML dials someone; the dialled
    /// target and the `/dialed…` and `/agent…` paths.
    async fn until_dialed(&self, wait: &str, sid: &str) -> (String, String, String) {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let reply = self.post(wait, &leg(sid, "in-progress")).await;
            assert_eq!(reply.status, 200, "{}", reply.body);
            if reply.body.contains("<Dial") {
                // <Sip …>uri</Sip> or <Number …>number</Number>
                let noun = if reply.body.contains("<Sip") {
                    "Sip"
                } else {
                    "Number"
                };
                let start = reply.body.find(&format!("<{noun}")).unwrap();
                let target = between(&reply.body[start..], ">", &format!("</{noun}>")).unwrap();
                let action = path_of(&attr(&reply.body, "action"));
                let status = path_of(&attr(&reply.body, "statusCallback"));
                // The agent's pick-up asks first whether to connect them.
                assert_eq!(
                    path_of(&attr(&reply.body, "url")),
                    bridge_of(&status),
                    "{}",
                    reply.body
                );
                return (target, action, status);
            }
            assert!(reply.body.contains("<Redirect"), "{}", reply.body);
            assert!(std::time::Instant::now() < deadline, "never dialled");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn incoming<'a>(sid: &'a str, from: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", sid),
        ("CallStatus", "ringing"),
        ("Direction", "inbound"),
        ("From", from),
        ("To", "+15550783881"),
    ]
}

/// The bridge question of a dial (the noun's `url`), from its agent
/// callback's path: the same contact and agent.
fn bridge_of(agent_status: &str) -> String {
    agent_status.replacen("/agent?", "/bridge?", 1)
}

fn leg<'a>(sid: &'a str, status: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
        ("CallSid", sid),
        ("CallStatus", status),
        ("Direction", "inbound"),
        ("From", "+380501234567"),
        ("To", "+15550783881"),
    ]
}

fn between(text: &str, open: &str, close: &str) -> Option<String> {
    let start = text.find(open)? + open.len();
    let end = text[start..].find(close)? + start;
    Some(text[start..end].to_owned())
}

fn attr(text: &str, name: &str) -> String {
    between(text, &format!(" {name}=\""), "\"")
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .replace("&amp;", "&")
}

/// Where a hold TwiML sends Twilio next.
fn redirect(twiml: &str) -> String {
    let start = twiml
        .find("<Redirect")
        .unwrap_or_else(|| panic!("no redirect in {twiml}"));
    let url = between(&twiml[start..], ">", "</Redirect>").unwrap();
    path_of(&url.replace("&amp;", "&"))
}

/// The part of one of our public URLs after the channel's prefix.
fn path_of(url: &str) -> String {
    url.strip_prefix(PUBLIC)
        .unwrap_or_else(|| panic!("{url} is not under {PUBLIC}"))
        .to_owned()
}

/// The contact id in one of our URLs.
fn contact_in(path: &str) -> String {
    between(&format!("{path}&"), "contact=", "&").unwrap()
}

async fn route(http: &Http, base: &str, contact: &str) -> serde_json::Value {
    http.routing(base, SUPERVISOR, contact).await
}

async fn online(base: &str, token: &str) -> AgentSocket {
    // Once the presence is answered, not after a guessed pause.
    AgentSocket::connect_available(base, token).await
}

#[tokio::test]
async fn corpus_rows_and_an_answered_call() {
    let (redis, _daemon, twilio) = start(&agent("olha", TOKEN_OLHA));
    let rows: Vec<Vec<String>> = std::fs::read_to_string(format!("{CORPUS}/SIGNATURES.tsv"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("file\t"))
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect();
    assert_eq!(rows.len(), 4);
    let corpus = |file: &str| std::fs::read_to_string(format!("{CORPUS}/{file}")).unwrap();
    let post_row = |row: &Vec<String>| {
        let body = corpus(&row[0]);
        let path = path_of(&row[1]);
        let signature = row[2].clone();
        let http = twilio.http.clone();
        let base = twilio.base.clone();
        async move {
            http.post(
                &format!("{base}/channels/phone{path}"),
                &[
                    ("x-twilio-signature", signature.as_str()),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
                body,
            )
            .await
            .unwrap()
        }
    };

    // Row 4: the wrong signature (signed for another URL) is refused and
    // nothing is stored.
    let refused = post_row(&rows[3]).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(stored_messages(&redis.url()).await.is_empty());

    // Row 1: the incoming call is queued and the caller held.
    let reply = post_row(&rows[0]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body.contains("<Say"), "{}", reply.body);
    let wait = redirect(&reply.body);
    let contact = contact_in(&wait);
    assert_eq!(stored_messages(&redis.url()).await.len(), 1);

    // The agent comes online: the next wait rings her SIP phone.
    let mut olha = online(&twilio.base, TOKEN_OLHA).await;
    let sid = "CA11111111111111111111111111111111";
    let (target, dialed, agent_status) = twilio.until_dialed(&wait, sid).await;
    assert_eq!(target, "sip:olha@pbx.example.com");
    let (offer, _) = olha.until("offer", Duration::from_secs(5)).await;
    assert_eq!(offer.unwrap()["channel"], "voice");

    // Her phone is answered: the bridge accepts the offer and connects her.
    twilio
        .pick_up(&agent_status, sid, "CA99999999999999999999999999999999")
        .await;
    let routed = route(&twilio.http, &twilio.base, &contact).await;
    assert_eq!(routed["state"], "assigned", "{routed}");

    // The conversation ends: the Dial action hangs up; row 3 (the caller's
    // completed status) finds the contact closed.
    let mut done = leg(sid, "completed");
    done.push(("DialCallStatus", "completed"));
    done.push(("DialCallDuration", "95"));
    let r = twilio.post(&dialed, &done).await;
    assert!(r.body.contains("<Hangup"), "{}", r.body);
    let r = post_row(&rows[1]).await;
    assert!(r.status < 300, "{}", r.body);
    let (closed, _) = olha.until("closed", Duration::from_secs(5)).await;
    assert!(closed.is_some(), "the agent is told the call is over");
    let (presence, _) = olha.until("presence", Duration::from_secs(5)).await;
    assert_eq!(presence.unwrap()["presence"], "wrap_up");

    // Row 3 (CA2222…): a caller who hangs up while queued. Nobody is free
    // (the agent wraps up), so the call waits; the cancel abandons it.
    let wait2 = twilio
        .call("CA22222222222222222222222222222222", "+48221234567")
        .await;
    let second = contact_in(&wait2);
    let r = post_row(&rows[2]).await;
    assert!(r.status < 300, "{}", r.body);
    let routed = route(&twilio.http, &twilio.base, &second).await;
    assert_eq!(routed["state"], "closed", "{routed}");
    // Once the agent is free again, the abandoned call is never offered.
    let (offer, _) = olha.until("offer", Duration::from_secs(4)).await;
    assert!(offer.is_none(), "an abandoned call was offered: {offer:?}");
    let metrics = metrics_text(&twilio.base).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchboard_voice_calls_total") && l.contains("abandoned")),
        "{metrics}"
    );
    // The answered call, closed at its /dialed, is counted there (its
    // /status found it closed already: it was counted nowhere as closed).
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchboard_voice_calls_total")
                && l.contains("outcome=\"closed\"")),
        "{metrics}"
    );
}

#[tokio::test]
async fn ring_no_answer_busy_agents_and_blocked_callers() {
    let (redis, _daemon, twilio) = start(&format!(
        "{}{}",
        agent("olha", TOKEN_OLHA),
        agent("petro", TOKEN_PETRO)
    ));

    // A blocked caller is rejected and nothing is stored.
    let r = twilio
        .post(
            "/incoming",
            &incoming("CA00000000000000000000000000000001", "+48220000000"),
        )
        .await;
    assert!(r.body.contains("<Reject"), "{}", r.body);
    assert!(stored_messages(&redis.url()).await.is_empty());
    // Its final status is no call we lost track of: not counted
    // `unknown_call`, nothing remembered.
    let mut ended = incoming("CA00000000000000000000000000000001", "+48220000000");
    ended.retain(|(k, _)| *k != "CallStatus");
    ended.push(("CallStatus", "busy"));
    let r = twilio.post("/status", &ended).await;
    assert!(r.status == 200 || r.status == 204, "{}", r.body);
    let metrics = metrics_text(&twilio.base).await;
    assert!(!metrics.contains("unknown_call"), "{metrics}");
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let remembered: bool = redis::AsyncCommands::exists(
        &mut conn,
        "sb:{c:phone}:state:hungup:CA00000000000000000000000000000001",
    )
    .await
    .unwrap();
    assert!(!remembered);

    let _olha = online(&twilio.base, TOKEN_OLHA).await;
    let _petro = online(&twilio.base, TOKEN_PETRO).await;

    // Ring, no answer: the call goes to the other agent's phone.
    let a = "CA00000000000000000000000000000002";
    let wait = twilio.call(a, "+380501111111").await;
    let (first, dialed, _) = twilio.until_dialed(&wait, a).await;
    let mut missed = leg(a, "in-progress");
    missed.push(("DialCallStatus", "no-answer"));
    let r = twilio.post(&dialed, &missed).await;
    assert!(r.body.contains("<Redirect"), "held again: {}", r.body);
    let (second, _, status) = twilio.until_dialed(&wait, a).await;
    assert_ne!(first, second, "the next agent's phone rings");
    twilio
        .pick_up(&status, a, "CA00000000000000000000000000000009")
        .await;

    // The agent who answered is on a call (voice capacity 1) and the one who
    // missed was set away (missed_offers_before_away = 1): a second call
    // waits for someone free.
    let b = "CA00000000000000000000000000000003";
    let wait_b = twilio.call(b, "+380502222222").await;
    let contact_b = contact_in(&wait_b);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = twilio.post(&wait_b, &leg(b, "in-progress")).await;
    assert!(
        r.body.contains("<Redirect") && !r.body.contains("<Dial"),
        "no free agent: held, not dialled: {}",
        r.body
    );
    let routed = route(&twilio.http, &twilio.base, &contact_b).await;
    assert_eq!(routed["state"], "waiting", "{routed}");
}

/// An agent's phone rang for an offer that was then taken back (their
/// session ended) and made again when they came back: the first dial's late
/// "no answer" leaves the new offer standing.
#[tokio::test]
async fn a_late_no_answer_of_an_earlier_offer_leaves_the_new_one() {
    let (_redis, daemon, twilio) = start(&agent("olha", TOKEN_OLHA));
    let olha = online(&twilio.base, TOKEN_OLHA).await;
    let sid = "CA00000000000000000000000000000021";
    let wait = twilio.call(sid, "+380503333333").await;
    let contact = contact_in(&wait);
    let (_, first_dial, _) = twilio.until_dialed(&wait, sid).await;
    assert!(first_dial.contains("&offer="), "{first_dial}");

    // Her session ends: the offer is taken back; she returns: offered again.
    drop(olha);
    let offered_again = |want: &'static str| {
        let (http, base, contact) = (twilio.http.clone(), twilio.base.clone(), contact.clone());
        async move {
            let r = route(&http, &base, &contact).await;
            r["state"] == want
        }
    };
    assert!(
        eventually(Duration::from_secs(10), || offered_again("waiting")).await,
        "{}",
        daemon.log()
    );
    let _olha = online(&twilio.base, TOKEN_OLHA).await;
    assert!(
        eventually(Duration::from_secs(10), || offered_again("offered")).await,
        "{}",
        daemon.log()
    );

    // The first dial rang out only now.
    let mut missed = leg(sid, "in-progress");
    missed.push(("DialCallStatus", "no-answer"));
    let r = twilio.post(&first_dial, &missed).await;
    assert!(r.body.contains("<Redirect"), "held again: {}", r.body);
    let now = route(&twilio.http, &twilio.base, &contact).await;
    assert_eq!(now["state"], "offered", "{now}");
    assert_eq!(now["agent"], "olha", "{now}");
    // The hold loop rings her again for the offer standing.
    let (target, _, _) = twilio.until_dialed(&wait, sid).await;
    assert!(target.contains("olha"), "{target}");
}

/// An agent who picks up after the offer left her (her session ended while
/// the phone rang) is not connected: the bridge question hangs her up, the
/// call stays in its queue, and the dial's end holds the caller instead of
/// ending the call. Once the call is hers again, her pick-up connects her.
/// Before, Twilio connected whoever picked up, and the dial's end closed a
/// call that routing had given to someone else.
#[tokio::test]
async fn an_agent_picking_up_after_the_offer_left_her_is_not_connected() {
    let (_redis, daemon, twilio) = start(&agent("olha", TOKEN_OLHA));
    let olha = online(&twilio.base, TOKEN_OLHA).await;
    let sid = "CA00000000000000000000000000000025";
    let wait = twilio.call(sid, "+380505555555").await;
    let contact = contact_in(&wait);
    let (_, dialed, status) = twilio.until_dialed(&wait, sid).await;
    let state_is = |want: &'static str| {
        let (http, base, contact) = (twilio.http.clone(), twilio.base.clone(), contact.clone());
        async move { route(&http, &base, &contact).await["state"] == want }
    };
    drop(olha);
    assert!(
        eventually(Duration::from_secs(10), || state_is("waiting")).await,
        "{}",
        daemon.log()
    );

    // Her phone is picked up only now.
    let mut pick_up = leg("CA99999999999999999999999999999925", "in-progress");
    pick_up.push(("ParentCallSid", sid));
    let r = twilio.post(&bridge_of(&status), &pick_up).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("<Hangup"), "not connected: {}", r.body);
    let now = route(&twilio.http, &twilio.base, &contact).await;
    assert_eq!(now["state"], "waiting", "{now}");
    // Twilio ends the dial; the caller is held, the call not ended.
    let mut over = leg(sid, "in-progress");
    over.push(("DialCallStatus", "completed"));
    let r = twilio.post(&dialed, &over).await;
    assert!(r.body.contains("<Redirect"), "held again: {}", r.body);
    let now = route(&twilio.http, &twilio.base, &contact).await;
    assert_eq!(now["state"], "waiting", "{now}");
    let metrics = metrics_text(&twilio.base).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchboard_voice_late_answers_total") && l.ends_with(" 1")),
        "{metrics}"
    );

    // She is back: the call is offered to her. The agent leg's callback
    // alone accepts nothing (the bridge decides); her pick-up connects.
    let _olha = online(&twilio.base, TOKEN_OLHA).await;
    let (_, dialed, status) = twilio.until_dialed(&wait, sid).await;
    let r = twilio.post(&status, &pick_up).await;
    assert!(r.status < 300, "{}", r.body);
    let now = route(&twilio.http, &twilio.base, &contact).await;
    assert_eq!(now["state"], "offered", "{now}");
    let r = twilio.post(&bridge_of(&status), &pick_up).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body.contains("<Hangup"), "connected: {}", r.body);
    let now = route(&twilio.http, &twilio.base, &contact).await;
    assert_eq!(
        (now["state"].as_str(), now["agent"].as_str()),
        (Some("assigned"), Some("olha")),
        "{now}"
    );
    // The conversation ends: the call is closed, completed.
    let r = twilio.post(&dialed, &over).await;
    assert!(r.body.contains("<Hangup"), "{}", r.body);
    let now = route(&twilio.http, &twilio.base, &contact).await;
    assert_eq!(now["state"], "closed", "{now}");
}

/// A call assigned to the agent (accepted in the console) whose dial ends
/// "answered" without the bridge having connected them (its answer lost,
/// or its note of the bridge): nobody talked to the caller, so it goes
/// back to its queue without her and the caller is held, rather than
/// being closed as completed.
#[tokio::test]
async fn an_answered_dial_the_bridge_never_connected_does_not_close_the_call() {
    let (_redis, daemon, twilio) = start(&agent("olha", TOKEN_OLHA));
    let mut olha = online(&twilio.base, TOKEN_OLHA).await;
    let sid = "CA00000000000000000000000000000027";
    let wait = twilio.call(sid, "+380507777777").await;
    let contact = contact_in(&wait);
    let (offer, _) = olha.until("offer", Duration::from_secs(10)).await;
    assert_eq!(offer.expect("an offer")["contact_id"], contact.as_str());
    olha.send(json!({"type": "accept", "contact_id": contact}))
        .await;
    let (assigned, _) = olha.until("assigned", Duration::from_secs(5)).await;
    assert!(assigned.is_some(), "{}", daemon.log());
    let (_, dialed, _) = twilio.until_dialed(&wait, sid).await;
    let mut over = leg(sid, "in-progress");
    over.push(("DialCallStatus", "completed"));
    let r = twilio.post(&dialed, &over).await;
    assert!(r.body.contains("<Redirect"), "held: {}", r.body);
    let now = route(&twilio.http, &twilio.base, &contact).await;
    assert_ne!(now["state"], "closed", "{now}");
    assert_ne!(now["agent"], "olha", "{now}");
}

/// A dial made before the bridge existed (no `b=1` in its URLs, e.g. by
/// an instance not yet upgraded): the agent leg's callback accepts, and
/// an answered end closes the call, as before; an answered end whose
/// callback was lost accepts and closes too.
#[tokio::test]
async fn a_dial_from_before_the_bridge_is_accepted_and_closed_as_before() {
    let (_redis, _daemon, twilio) = start(&agent("olha", TOKEN_OLHA));
    let _olha = online(&twilio.base, TOKEN_OLHA).await;
    let sid = "CA00000000000000000000000000000026";
    let wait = twilio.call(sid, "+380506666666").await;
    let contact = contact_in(&wait);
    let (_, dialed, _) = twilio.until_dialed(&wait, sid).await;
    let old = dialed.replace("&b=1", "");
    assert_ne!(old, dialed);
    let mut over = leg(sid, "in-progress");
    over.push(("DialCallStatus", "completed"));
    let r = twilio.post(&old, &over).await;
    assert!(r.body.contains("<Hangup"), "{}", r.body);
    let now = route(&twilio.http, &twilio.base, &contact).await;
    assert_eq!(now["state"], "closed", "{now}");
}

/// A call assigned to an agent this channel has no phone for (she took it
/// in the console before any dial) goes back to its queue and reaches an
/// agent with a phone. It was held for ever: a dial that could never come.
#[tokio::test]
async fn a_call_assigned_to_an_agent_without_a_phone_goes_back_to_its_queue() {
    let (_redis, daemon, twilio) = start(&format!(
        "{}{}",
        agent("taras", TOKEN_PETRO),
        agent("olha", TOKEN_OLHA)
    ));
    let mut taras = online(&twilio.base, TOKEN_PETRO).await;
    let sid = "CA00000000000000000000000000000031";
    let wait = twilio.call(sid, "+380504444444").await;
    let contact = contact_in(&wait);
    let (offer, _) = taras.until("offer", Duration::from_secs(10)).await;
    assert_eq!(offer.expect("an offer")["contact_id"], contact.as_str());
    taras
        .send(json!({"type": "accept", "contact_id": contact}))
        .await;
    let (assigned, _) = taras.until("assigned", Duration::from_secs(5)).await;
    assert!(assigned.is_some(), "{}", daemon.log());
    let _olha = online(&twilio.base, TOKEN_OLHA).await;
    let (target, _, _) = twilio.until_dialed(&wait, sid).await;
    assert!(target.contains("olha"), "{target}");
    let (requeued, _) = taras.until("requeued", Duration::from_secs(5)).await;
    let requeued = requeued.expect("taras is told the call left him");
    assert_eq!(
        (requeued["contact_id"].as_str(), requeued["reason"].as_str()),
        (Some(contact.as_str()), Some("unreachable"))
    );
}

/// A call the agent accepted in the console whose phone then rings out is
/// redirected on no answer: back to its queue without her, and the next
/// agent's phone rings. It was dialled to her again at every hold, for as
/// long as the caller waited.
#[tokio::test]
async fn an_assigned_call_whose_phone_rings_out_goes_to_the_next_agent() {
    let (_redis, daemon, twilio) = start(&format!(
        "{}{}",
        agent("olha", TOKEN_OLHA),
        agent("petro", TOKEN_PETRO)
    ));
    let mut olha = online(&twilio.base, TOKEN_OLHA).await;
    let sid = "CA00000000000000000000000000000041";
    let wait = twilio.call(sid, "+380505555555").await;
    let contact = contact_in(&wait);
    let (offer, _) = olha.until("offer", Duration::from_secs(10)).await;
    assert_eq!(offer.expect("an offer")["contact_id"], contact.as_str());
    olha.send(json!({"type": "accept", "contact_id": contact}))
        .await;
    let (assigned, _) = olha.until("assigned", Duration::from_secs(5)).await;
    assert!(assigned.is_some(), "{}", daemon.log());
    let (target, dialed, _) = twilio.until_dialed(&wait, sid).await;
    assert!(target.contains("olha"), "{target}");
    // The assignment's stamp (its offer's) comes back with the dial's
    // result: a late "no answer" of it is told from a newer offer's.
    assert!(
        dialed.contains("&offer=") && !dialed.contains("&offer=0&"),
        "{dialed}"
    );
    let _petro = online(&twilio.base, TOKEN_PETRO).await;
    let mut missed = leg(sid, "in-progress");
    missed.push(("DialCallStatus", "no-answer"));
    let r = twilio.post(&dialed, &missed).await;
    assert!(r.body.contains("<Redirect"), "held again: {}", r.body);
    let (requeued, _) = olha.until("requeued", Duration::from_secs(5)).await;
    let requeued = requeued.expect("olha is told the call left her");
    assert_eq!(requeued["contact_id"], contact.as_str());
    let (target, _, _) = twilio.until_dialed(&wait, sid).await;
    assert!(target.contains("+380441234567"), "petro's phone: {target}");
}

/// The caller hangs up while `/incoming` is still storing the call, and
/// the final status arrives first: the status finds no contact, so the
/// call is remembered as over, and the `/incoming` that finishes after it
/// ends the contact instead of queueing it. It waited for ever: offered to
/// agent after agent, none rung (no `/wait` came), each a missed offer.
#[tokio::test]
async fn a_call_whose_status_came_before_it_was_stored_is_ended() {
    let (_redis, _daemon, twilio) = start(&agent("olha", TOKEN_OLHA));
    let sid = "CA00000000000000000000000000000061";
    let mut ended = incoming(sid, "+380509999999");
    ended.retain(|(k, _)| *k != "CallStatus");
    ended.push(("CallStatus", "completed"));
    let r = twilio.post("/status", &ended).await;
    assert!(r.status == 200 || r.status == 204, "{}", r.body);
    let r = twilio
        .post("/incoming", &incoming(sid, "+380509999999"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("<Hangup"), "not queued: {}", r.body);
    // Nothing is offered to an agent who signs in now.
    let mut olha = online(&twilio.base, TOKEN_OLHA).await;
    let (offer, _) = olha.until("offer", Duration::from_secs(2)).await;
    assert!(offer.is_none(), "{offer:?}");
}

/// While Redis is away, a held caller's `/wait` and a dial's result are
/// answered with the hold, not 503: Twilio does not retry those requests,
/// it plays its error message and ends the call. The call is dialled once
/// Redis is back.
#[tokio::test]
async fn a_held_caller_stays_on_hold_while_redis_is_away() {
    let (mut redis, daemon, twilio) = start(&agent("olha", TOKEN_OLHA));
    let sid = "CA00000000000000000000000000000051";
    let wait = twilio.call(sid, "+380508888888").await;
    redis.stop();
    for path in [
        wait.clone(),
        format!("/dialed?contact={}&agent=olha&offer=1", contact_in(&wait)),
    ] {
        let mut params = leg(sid, "in-progress");
        params.push(("DialCallStatus", "no-answer"));
        let r = twilio.post(&path, &params).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert!(r.body.contains("<Redirect"), "{path}: held: {}", r.body);
    }
    redis.restart();
    let _olha = online(&twilio.base, TOKEN_OLHA).await;
    let (target, _, _) = twilio.until_dialed(&wait, sid).await;
    assert!(target.contains("olha"), "{target}\n{}", daemon.log());
}

/// The phone rings no longer than the offer lasts: with a voice offer of
/// 9 s, the dial's timeout is at most 8 s. It was the ring timeout (15 s),
/// so an agent answering after the deadline found the call offered to the
/// next agent, and the call ended as abandoned.
#[tokio::test]
async fn the_phone_rings_no_longer_than_the_offer_lasts() {
    // A one-word hold message: its speaking time (1 s) counts towards
    // the shortest offer the configuration takes (1 + 1 + 7 s).
    let short = config(&agent("olha", TOKEN_OLHA))
        .replace("voice = 60", "voice = 9")
        .replace(
            "hold_pause_secs = 1",
            "hold_pause_secs = 1\nhold_message = \"Hold.\"",
        );
    let (_redis, _daemon, twilio) = start_with(&short);
    let _olha = online(&twilio.base, TOKEN_OLHA).await;
    let wait = twilio
        .call("CA0123456789abcdef0123456789abcdef", "+380501112233")
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let timeout: u32 = loop {
        let reply = twilio
            .post(
                &wait,
                &leg("CA0123456789abcdef0123456789abcdef", "in-progress"),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        if reply.body.contains("<Dial") {
            break attr(&reply.body, "timeout").parse().unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "never dialled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        (5..=8).contains(&timeout),
        "rings {timeout} s of a 9 s offer"
    );
}

/// The caller hangs up while the agent's phone rings: Twilio asks the
/// `<Dial>` action with the caller's call `completed`. The contact ends;
/// the agent missed nothing (with `missed_offers_before_away = 1` a
/// missed offer sets her away, and she would get no next call).
#[tokio::test]
async fn a_caller_hanging_up_during_the_ring_is_not_the_agents_miss() {
    let (_redis, daemon, twilio) = start(&agent("olha", TOKEN_OLHA));
    let _olha = online(&twilio.base, TOKEN_OLHA).await;
    let sid = "CA00000000000000000000000000000031";
    let wait = twilio.call(sid, "+380506666666").await;
    let contact = contact_in(&wait);
    let (_, dialed, _) = twilio.until_dialed(&wait, sid).await;
    let mut gone = leg(sid, "completed");
    gone.push(("DialCallStatus", "no-answer"));
    let r = twilio.post(&dialed, &gone).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("<Hangup"), "nobody to hold: {}", r.body);
    let ended = route(&twilio.http, &twilio.base, &contact).await;
    assert_eq!(ended["state"], "closed", "{ended}");

    // She is still available: the next call rings her.
    let next = "CA00000000000000000000000000000032";
    let wait = twilio.call(next, "+380507777777").await;
    let (target, _, _) = twilio.until_dialed(&wait, next).await;
    assert!(target.contains("olha"), "{target}\n{}", daemon.log());
}

/// A body over the voice channel's limit is refused before its signature
/// is checked, and counted; nothing is stored.
#[tokio::test]
async fn an_oversized_body_is_refused_and_counted() {
    let (redis, _daemon, twilio) = start(&agent("olha", TOKEN_OLHA));
    // Over the channel's 64 KiB.
    let padding = "x".repeat(70_000);
    let mut params = incoming("CA00000000000000000000000000000041", "+380508888888");
    params.push(("Pad", &padding));
    let r = twilio.post("/incoming", &params).await;
    assert_eq!(r.status, 413, "{}", r.body);
    let metrics = metrics_text(&twilio.base).await;
    assert!(
        metrics.contains(
            "switchboard_voice_requests_total{source=\"phone\",endpoint=\"incoming\",outcome=\"too_large\"} 1"
        ),
        "{metrics}"
    );
    assert!(stored_messages(&redis.url()).await.is_empty());
}

/// Whether a stored call ended already cannot be read (its `hungup:` key
/// holds the wrong type, as Redis refusing the read would): the caller is
/// held, counted, not answered 503, which Twilio does not retry (the
/// caller heard an error while routing offered their call to agent after
/// agent).
#[tokio::test]
async fn a_new_call_whose_hangup_cannot_be_read_is_held() {
    let (redis, daemon, twilio) = start(&agent("olha", TOKEN_OLHA));
    let sid = "CA00000000000000000000000000000077";
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg(format!("sb:{{c:phone}}:state:hungup:{sid}"))
        .arg("not")
        .arg("a string")
        .query_async(&mut conn)
        .await
        .unwrap();
    let wait = twilio.call(sid, "+380507777777").await;
    assert!(wait.contains("/wait?contact="), "{wait}\n{}", daemon.log());
    let metrics = metrics_text(&daemon.base()).await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("switchboard_voice_held_unavailable_total{")
                && l.contains("endpoint=\"incoming\"")
                && l.ends_with(" 1")
        ),
        "{metrics}"
    );
}

/// A caller gone whose final `/status` was lost (Twilio does not send it
/// again when we answer 503: Redis away, every instance restarting): the
/// call, without a sign of life for three holds and a ring, is ended
/// (`caller_lost`, counted), and never offered again. It waited for ever,
/// offered to agent after agent, each a missed offer. A caller still held,
/// whose call asks `/wait` at every hold, and one connected to an agent
/// (asking nothing while the call lasts) are not touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_final_status_was_lost_is_ended_once_nobody_asks() {
    let (_redis, daemon, twilio) = start_with(
        &config(&agent("olha", TOKEN_OLHA))
            .replace("ring_timeout_secs = 15", "ring_timeout_secs = 5")
            .replace(
                "hold_pause_secs = 1",
                "hold_pause_secs = 1\nhold_message = \"Hold.\"\nlost_calls_grace_secs = 0",
            ),
    );
    let _olha = online(&twilio.base, TOKEN_OLHA).await;
    let on_call_sid = "CA00000000000000000000000000000090";
    let wait = twilio.call(on_call_sid, "+380501110000").await;
    let (_, _, status) = twilio.until_dialed(&wait, on_call_sid).await;
    twilio
        .pick_up(&status, on_call_sid, "CA00000000000000000000000000000099")
        .await;
    let on_call = contact_in(&wait);
    let gone = twilio
        .call("CA00000000000000000000000000000091", "+380501110001")
        .await;
    let held = twilio
        .call("CA00000000000000000000000000000092", "+380501110002")
        .await;
    let (gone_contact, held_contact) = (contact_in(&gone), contact_in(&held));
    // Three holds of 2 s and a ring of 5 s, and 10 s: 21 s without a sign
    // of life, watched every 5 s.
    let started = std::time::Instant::now();
    let mut ended = false;
    while started.elapsed() < Duration::from_secs(60) {
        let r = twilio
            .post(
                &held,
                &leg("CA00000000000000000000000000000092", "in-progress"),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.contains("<Redirect"), "still held: {}", r.body);
        let routed = route(&twilio.http, &twilio.base, &gone_contact).await;
        if routed["state"] == "closed" {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(ended, "never ended: {}", daemon.log());
    assert!(
        started.elapsed() >= Duration::from_secs(15),
        "ended too soon: {:?}",
        started.elapsed()
    );
    // Another round of the watch for the connected call, quiet as long.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let routed = route(&twilio.http, &twilio.base, &held_contact).await;
    assert_eq!(routed["state"], "waiting", "{routed}");
    let routed = route(&twilio.http, &twilio.base, &on_call).await;
    assert_eq!(routed["state"], "assigned", "{routed}");
    let metrics = metrics_text(&twilio.base).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchboard_voice_calls_total")
                && l.contains("outcome=\"lost\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );
}
