//! One round: what came in after the checkpoint, in UID order; sizes and
//! flags first, then each body, the sink, the after-intake action and the
//! checkpoint.

use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::checked;
use super::checkpoint::{self, Checkpoint};
use super::conn::ImapSession;
use super::session::{COMMAND_TIMEOUT, End};
use super::{AfterIntake, Ctx, Delivered, SinkError, error_metric};

/// The longest wait for one message's body.
const BODY_TIMEOUT: Duration = Duration::from_secs(300);
/// UIDs listed at most in one round while going through mail that was in
/// the folder when it was selected (small in tests, to exercise windows).
#[cfg(not(test))]
const LIST_WINDOW: u32 = 5000;
#[cfg(test)]
const LIST_WINDOW: u32 = 3;
/// UIDs searched at most for the next message after an empty window.
const SEARCH_SPAN: u32 = LIST_WINDOW * 1000;

/// What the server can do.
#[derive(Debug, Clone, Copy)]
pub(super) struct Caps {
    pub(super) idle: bool,
    pub(super) mv: bool,
    pub(super) uidplus: bool,
}

/// How a round ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Round {
    /// Everything after the checkpoint was taken in; `progress` when there
    /// was anything; `exists`: the mailbox's size, when the listing's
    /// answer announced it.
    Done { progress: bool, exists: Option<u32> },
    /// The sink asked to try again later; the checkpoint stays before the
    /// message.
    Temporary,
}

/// A message's UID, size and flags.
#[derive(Debug)]
struct Meta {
    uid: u32,
    size: Option<u32>,
    seen: bool,
    deleted: bool,
}

/// The UIDs a round lists after `last`: below `next` (the folder's UIDNEXT
/// when it was selected, so every UID there is given out) a window of at
/// most [`LIST_WINDOW`], ending at `Some(end)`; from `next` on, all to the
/// end (`None`). A folder of any size is then listed in commands that end
/// in time, each window's mail checkpointed before the next is listed.
fn listing(last: u32, next: u32) -> (String, Option<u32>) {
    let from = last.saturating_add(1);
    if from < next {
        let end = from.saturating_add(LIST_WINDOW - 1).min(next - 1);
        (format!("{from}:{end}"), Some(end))
    } else {
        (format!("{from}:*"), None)
    }
}

/// One round from the checkpoint `cp`; `next` is the folder's UIDNEXT when
/// it was selected.
pub(super) async fn run(
    ctx: &Ctx,
    session: &mut ImapSession,
    caps: &Caps,
    cp: &mut Checkpoint,
    next: u32,
    stop: &CancellationToken,
) -> Result<Round, End> {
    let s = &ctx.settings;
    let (set, window_end) = listing(cp.last, next);
    // A listing the server cut short (a tagged NO) fails the round: the
    // UIDs it left out would be passed over by the checkpoint.
    let fetches = End::guard(stop, "fetch", COMMAND_TIMEOUT, async {
        checked::uid_fetch_noting(session, &set, "(UID RFC822.SIZE FLAGS)").await
    })
    .await?;
    // The mailbox's size, if the server announced it during the listing
    // (the session looks again at once when it grew).
    let (fetches, exists) = fetches;
    // `N:*` includes the last message even when its UID is below N.
    let mut metas: Vec<Meta> = fetches
        .iter()
        .filter_map(|f| {
            let uid = f
                .uid
                .filter(|uid| *uid > cp.last && window_end.is_none_or(|end| *uid <= end))?;
            Some(Meta {
                uid,
                size: f.size,
                seen: f.seen,
                deleted: f.deleted,
            })
        })
        .collect();
    metas.sort_by_key(|m| m.uid);
    metas.dedup_by_key(|m| m.uid);
    let progress = !metas.is_empty();
    let mut unsaved = false;
    for m in metas {
        if stop.is_cancelled() {
            if unsaved {
                checkpoint::save(ctx, *cp).await?;
            }
            return Err(End::Stopped);
        }
        // Of what was in the folder when the checkpoint was set (after a
        // UIDVALIDITY change, or the first time), only what is still new:
        // see the module's documentation.
        if cp.was_there(m.uid) && (m.deleted || (s.after == AfterIntake::Seen && m.seen)) {
            debug!(uid = m.uid, "Passing over a message taken in before.");
            outcome(ctx, "old");
            (cp.last, unsaved) = (m.uid, true);
            continue;
        }
        if let Some(size) = m.size.filter(|n| *n as usize > s.max_message_bytes) {
            too_large(ctx, m.uid, size as usize);
            (cp.last, unsaved) = (m.uid, true);
            continue;
        }
        // A message whose fetch failed session after session (a server that
        // cannot give it, a body too slow or too large for one response):
        // passed over, counted, left in the mailbox.
        if gave_up_on(ctx, cp.validity, m.uid) {
            outcome(ctx, "unreadable");
            warn!(
                uid = m.uid,
                tries = super::BODY_FAILURES,
                "Fetching the message failed every time; passing over it and leaving it in the mailbox."
            );
            (cp.last, unsaved) = (m.uid, true);
            continue;
        }
        // A failed fetch, the first or the second, counts towards passing
        // over the message: one the server never gives (a `NO` or a
        // timeout every session) must not hold up later mail for ever.
        let mut raw = match fetch_body(session, stop, m.uid).await {
            Ok(raw) => raw,
            Err(end) => return Err(fetch_failed(ctx, cp, unsaved, m.uid, end).await),
        };
        if find_body(raw.iter().map(|f| (f.uid, f.body.as_deref())), m.uid) == Found::Bodiless {
            // Once more: a flags update that came first, or a passing NIL.
            raw = match fetch_body(session, stop, m.uid).await {
                Ok(raw) => raw,
                Err(end) => return Err(fetch_failed(ctx, cp, unsaved, m.uid, end).await),
            };
        }
        let raw = match find_body(raw.iter().map(|f| (f.uid, f.body.as_deref())), m.uid) {
            Found::Body(raw) => raw,
            Found::Gone => {
                // Expunged since it was listed (another client, or `after`
                // of another instance): nothing left to take in.
                outcome(ctx, "gone");
                info!(uid = m.uid, "A listed message was gone when fetched.");
                (cp.last, unsaved) = (m.uid, true);
                continue;
            }
            Found::Bodiless => {
                // Twice answered for this UID without the message: one
                // the server cannot give (damaged, or an answer we cannot
                // read). Passed over, counted and left in the mailbox for
                // a person to look at, rather than hold up every later one.
                outcome(ctx, "unreadable");
                warn!(
                    uid = m.uid,
                    "The server answered twice without the message's body; passing over it and leaving it in the mailbox."
                );
                (cp.last, unsaved) = (m.uid, true);
                continue;
            }
        };
        if raw.len() > s.max_message_bytes {
            too_large(ctx, m.uid, raw.len());
            (cp.last, unsaved) = (m.uid, true);
            continue;
        }
        let fallback = format!(
            "{}{}:{}:{}",
            crate::ingest::IMAP_ID,
            s.label,
            cp.validity,
            m.uid
        );
        match ctx.sink.deliver(s, m.uid, raw, &fallback).await {
            Ok(Delivered::Taken) => {
                outcome(ctx, "stored");
                info!(uid = m.uid, bytes = raw.len(), "Took in a message.");
            }
            Ok(Delivered::Left(kind)) => {
                // Nothing of it is kept (bulk mail not routed, an automatic
                // mail about no reply of ours): `after` would delete or
                // move the only copy, so it is left as it is.
                outcome(ctx, kind);
                info!(
                    uid = m.uid,
                    "A fetched message was not kept; passing over it and leaving it in the mailbox."
                );
                (cp.last, unsaved) = (m.uid, true);
                continue;
            }
            Err(SinkError::Rejected(e)) => {
                // Not stored: left in the mailbox as it is (never deleted
                // or moved by `after`), for a person to look at.
                outcome(ctx, "rejected");
                warn!(uid = m.uid, error = %e, "A fetched message was rejected; passing over it and leaving it in the mailbox.");
                (cp.last, unsaved) = (m.uid, true);
                continue;
            }
            Err(SinkError::Temporary(e)) => {
                outcome(ctx, "temporary");
                warn!(uid = m.uid, error = %e, "Could not store a fetched message; will try again.");
                if unsaved {
                    checkpoint::save(ctx, *cp).await?;
                }
                return Ok(Round::Temporary);
            }
        }
        // Stored: the checkpoint moves on whatever the action does.
        let after = after_intake(ctx, session, caps, m.uid).await;
        cp.last = m.uid;
        checkpoint::save(ctx, *cp).await?;
        unsaved = false;
        after?;
    }
    // Every UID of a window was given out before the folder was selected:
    // those not listed were expunged, and none can come later. The next
    // round lists the next window at once.
    // (RFC 3501 2.3.1.1: UIDs are given out in ascending order, and every
    // UID below UIDNEXT was given out before it was announced.) A window
    // that listed nothing is followed by a search for the next UID there
    // is, so that a folder whose UIDs are sparse (a server that numbers
    // items across folders) is not gone through window by empty window.
    if let Some(end) = window_end
        && cp.last < end
    {
        let last = if progress || end.saturating_add(1) >= next {
            end
        } else {
            // A server that refuses the search: the windows go on one by
            // one, as without it. One that does not answer (or a broken
            // connection): the window's advance is saved and the session
            // ends, as after any command that fails that way.
            match skip_empty(session, stop, end, next).await {
                Ok(Some(last)) => last,
                Ok(None) => {
                    error_metric(ctx, "search");
                    warn!(
                        after_uid = end,
                        "The server refused to search for the next message; going on window by window."
                    );
                    end
                }
                Err(failed) => {
                    cp.last = end;
                    checkpoint::save(ctx, *cp).await?;
                    return Err(failed);
                }
            }
        };
        (cp.last, unsaved) = (last, true);
    }
    if unsaved {
        checkpoint::save(ctx, *cp).await?;
    }
    Ok(Round::Done {
        progress: progress || window_end.is_some(),
        exists,
    })
}

/// After the empty window ending at `end`: the UID just before the next
/// message below `next` (searched for up to [`SEARCH_SPAN`] UIDs on), or
/// the end of the span searched when there is none; `None` when the server
/// refused the search (`NO`, `BAD`).
async fn skip_empty(
    session: &mut ImapSession,
    stop: &CancellationToken,
    end: u32,
    next: u32,
) -> Result<Option<u32>, End> {
    use async_imap::error::Error;
    let to = end.saturating_add(SEARCH_SPAN).min(next - 1);
    let criteria = format!("UID {}:{to}", end + 1);
    let found = End::guard(stop, "search", COMMAND_TIMEOUT, async {
        match checked::uid_search(session, &criteria).await {
            Ok(found) => Ok(Some(found)),
            Err(Error::No(_) | Error::Bad(_)) => Ok(None),
            Err(other) => Err(other),
        }
    })
    .await?;
    Ok(found.map(|found| {
        found
            .into_iter()
            .filter(|uid| *uid > end && *uid <= to)
            .min()
            .map_or(to, |first| first - 1)
    }))
}

/// How a round ends when fetching message `uid` ended with `end`: a
/// failure is noted against the message (see [`gave_up_on`]), and the
/// checkpoint of the messages passed over before it saved.
async fn fetch_failed(ctx: &Ctx, cp: &Checkpoint, unsaved: bool, uid: u32, end: End) -> End {
    if let End::Failed { .. } = end {
        failed_fetch(ctx, cp.validity, uid);
        if unsaved && let Err(end) = checkpoint::save(ctx, *cp).await {
            return end;
        }
    }
    end
}

/// Whether fetching message `uid` failed [`super::BODY_FAILURES`] sessions
/// in a row over at least `pass_over_after`.
fn gave_up_on(ctx: &Ctx, validity: u32, uid: u32) -> bool {
    match *ctx.failing.lock().unwrap_or_else(|e| e.into_inner()) {
        Some(f) if f.validity == validity && f.uid == uid => {
            f.times >= super::BODY_FAILURES && f.since.elapsed() >= ctx.settings.pass_over_after
        }
        _ => false,
    }
}

fn failed_fetch(ctx: &Ctx, validity: u32, uid: u32) {
    let mut failing = ctx.failing.lock().unwrap_or_else(|e| e.into_inner());
    *failing = match *failing {
        Some(f) if f.validity == validity && f.uid == uid => Some(super::Failing {
            times: f.times.saturating_add(1),
            ..f
        }),
        _ => Some(super::Failing {
            validity,
            uid,
            times: 1,
            since: std::time::Instant::now(),
        }),
    };
}

/// `UID FETCH <uid> BODY.PEEK[]`: every response the server gave, once it
/// answered OK (a NO or a dropped connection ends the session: the message
/// is fetched again, not taken for expunged).
async fn fetch_body(
    session: &mut ImapSession,
    stop: &CancellationToken,
    uid: u32,
) -> Result<Vec<checked::Fetched>, End> {
    End::guard(stop, "fetch", BODY_TIMEOUT, async {
        checked::uid_fetch(session, &uid.to_string(), "BODY.PEEK[]").await
    })
    .await
}

/// What a `UID FETCH … BODY.PEEK[]` returned for one message.
#[derive(Debug, PartialEq, Eq)]
enum Found<'a> {
    Body(&'a [u8]),
    /// Responses for the UID, none with the body.
    Bodiless,
    /// No response for the UID: the message was expunged.
    Gone,
}

/// The body of message `uid` among a fetch's responses (`(uid, body)` of
/// each): any of them may be an unsolicited one of another message, or a
/// flags update of this one, before or after the body.
fn find_body<'a>(
    responses: impl Iterator<Item = (Option<u32>, Option<&'a [u8]>)>,
    uid: u32,
) -> Found<'a> {
    let mut found = Found::Gone;
    for (of, body) in responses {
        if of != Some(uid) {
            continue;
        }
        match body {
            Some(body) => return Found::Body(body),
            None => found = Found::Bodiless,
        }
    }
    found
}

fn outcome(ctx: &Ctx, outcome: &'static str) {
    metrics::counter!("switchboard_email_imap_messages_total",
        "mailbox" => ctx.settings.label.clone(), "outcome" => outcome)
    .increment(1);
}

fn too_large(ctx: &Ctx, uid: u32, size: usize) {
    outcome(ctx, "too_large");
    let max = ctx.settings.max_message_bytes;
    warn!(
        uid,
        size, max, "Passing over a message over the size limit; it stays in the mailbox."
    );
}

/// Applies the after-intake action. A refusal (NO, BAD: say, a missing
/// folder) is logged and counted; a broken connection ends the session.
async fn after_intake(
    ctx: &Ctx,
    session: &mut ImapSession,
    caps: &Caps,
    uid: u32,
) -> Result<(), End> {
    let uid_set = uid.to_string();
    let action = async {
        match &ctx.settings.after {
            AfterIntake::Seen => store(session, &uid_set, "+FLAGS.SILENT (\\Seen)").await,
            AfterIntake::Move(folder) if caps.mv => session.uid_mv(&uid_set, folder).await,
            AfterIntake::Move(folder) => {
                session.uid_copy(&uid_set, folder).await?;
                delete(session, caps, &uid_set).await
            }
            AfterIntake::Delete => delete(session, caps, &uid_set).await,
        }
    };
    let result = match tokio::time::timeout(COMMAND_TIMEOUT, action).await {
        Ok(result) => result,
        Err(_) => return Err(End::failed("after", "timed out")),
    };
    match result {
        Ok(()) => Ok(()),
        Err(async_imap::error::Error::No(e) | async_imap::error::Error::Bad(e)) => {
            error_metric(ctx, "after");
            warn!(uid, error = %e, after = ?ctx.settings.after, "The server refused the after-intake action.");
            Ok(())
        }
        Err(e) => Err(End::failed("after", e)),
    }
}

/// `UID STORE`, failing on a refusal (async-imap's own took a NO for done).
async fn store(
    session: &mut ImapSession,
    uid_set: &str,
    query: &str,
) -> async_imap::error::Result<()> {
    checked::ok(session, &format!("UID STORE {uid_set} {query}")).await
}

/// `\Deleted`, then `UID EXPUNGE` (UIDPLUS) or a plain `EXPUNGE`.
async fn delete(
    session: &mut ImapSession,
    caps: &Caps,
    uid_set: &str,
) -> async_imap::error::Result<()> {
    store(session, uid_set, "+FLAGS.SILENT (\\Deleted)").await?;
    if caps.uidplus {
        checked::ok(session, &format!("UID EXPUNGE {uid_set}")).await
    } else {
        checked::ok(session, "EXPUNGE").await
    }
}

#[cfg(test)]
mod tests {
    use super::{Found, LIST_WINDOW, find_body, listing};

    /// Below the UIDNEXT of the selection, windows; from it, to the end.
    #[test]
    fn old_mail_is_listed_a_window_at_a_time() {
        assert_eq!(LIST_WINDOW, 3);
        assert_eq!(listing(0, 10), ("1:3".to_owned(), Some(3)));
        assert_eq!(listing(3, 10), ("4:6".to_owned(), Some(6)));
        assert_eq!(listing(7, 10), ("8:9".to_owned(), Some(9)));
        assert_eq!(listing(9, 10), ("10:*".to_owned(), None));
        assert_eq!(listing(12, 10), ("13:*".to_owned(), None));
        assert_eq!(listing(0, 1), ("1:*".to_owned(), None));
        assert_eq!(
            listing(u32::MAX - 1, u32::MAX),
            ("4294967295:*".to_owned(), None)
        );
    }

    /// The body is found whatever comes before it; a flags-only answer is
    /// not a message that is gone (its UID was skipped for good).
    #[test]
    fn the_body_is_found_among_other_responses() {
        let body: &[u8] = b"Subject: hi\r\n\r\nhello";
        let flags_first = [
            (Some(7), None),
            (Some(3), Some(&b"other"[..])),
            (Some(7), Some(body)),
        ];
        assert_eq!(find_body(flags_first.into_iter(), 7), Found::Body(body));
        let only_flags = [(Some(7), None), (None, None)];
        assert_eq!(find_body(only_flags.into_iter(), 7), Found::Bodiless);
        let others = [(Some(8), Some(body))];
        assert_eq!(find_body(others.into_iter(), 7), Found::Gone);
        assert_eq!(find_body(std::iter::empty(), 7), Found::Gone);
    }
}
