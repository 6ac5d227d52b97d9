//! `GET /api/v1/contacts/{id}/media/{media_id}`: a customer's attachment,
//! fetched through the provider's API by the contact's channel when an
//! agent opens it. Only media ids the conversation received are served, and
//! always as a download (`Content-Disposition: attachment`, `nosniff`,
//! `Content-Security-Policy: sandbox`), so
//! a customer's file never runs in the console's origin.

use crate::Inner;
use crate::actions::{contact_id, conversation_of};
use crate::error::ApiError;
use crate::http::who;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use switchboard_channel::{MediaError, MediaSource};
use tracing::info;

/// The channels that keep attachments as references, by channel name.
#[derive(Debug, Default)]
pub struct MediaSources(RwLock<HashMap<String, Arc<dyn MediaSource>>>);

impl MediaSources {
    pub fn register(&self, channel: &str, source: Arc<dyn MediaSource>) {
        if let Ok(mut map) = self.0.write() {
            map.insert(channel.to_owned(), source);
        }
    }

    fn get(&self, channel: &str) -> Option<Arc<dyn MediaSource>> {
        self.0.read().ok().and_then(|m| m.get(channel).cloned())
    }
}

fn id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_.".contains(c)
}

/// Whether a customer's stored message brought `media_id`: its `media`
/// list names it. A message stored before messages had that list (an older
/// version; since then it is always written, empty too) is trusted by its
/// attachment line instead. A customer cannot write a stored message
/// without the list, so a `media id …` typed into a text opens nothing.
fn brought(msg: &str, media_id: &str) -> bool {
    if !msg.contains(media_id) {
        return false;
    }
    match serde_json::from_str::<serde_json::Value>(msg) {
        Ok(value) => match value.get("media") {
            Some(serde_json::Value::Array(ids)) => {
                ids.iter().any(|id| id.as_str() == Some(media_id))
            }
            Some(_) => false,
            None => mentions(msg, media_id),
        },
        Err(_) => false,
    }
}

/// Whether `text` names `media_id` as a whole (`media id X]`, not `X0`).
fn mentions(text: &str, media_id: &str) -> bool {
    let needle = format!("media id {media_id}");
    text.match_indices(&needle).any(|(at, _)| {
        text[at + needle.len()..]
            .chars()
            .next()
            .is_none_or(|c| !id_char(c))
    })
}

/// Log entries read per page, and pages at most, when looking for the
/// message that brought an attachment (a long conversation's later
/// attachments are found too).
const PAGE: usize = 1000;
const MAX_PAGES: usize = 100;

/// Attachment requests one caller (an agent, or the supervisors) may have
/// in flight on one instance: the shared permits, held through the
/// look-up, are not all taken by one agent's console stuck in a loop.
const PER_CALLER: usize = 2;

/// Requests of one kind in flight, by caller: attachments, records.
#[derive(Debug, Default)]
pub(crate) struct InFlight(std::sync::Mutex<HashMap<String, usize>>);

/// One caller's request in flight; ends when dropped (it may be moved
/// into a task that streams the answer).
pub(crate) struct Slot {
    of: std::sync::Arc<InFlight>,
    caller: String,
}

impl InFlight {
    /// A slot for `caller`, unless they have [`PER_CALLER`] in flight.
    pub(crate) fn take(self: &std::sync::Arc<Self>, caller: &str) -> Option<Slot> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(caller.to_owned()).or_default();
        if *n >= PER_CALLER {
            return None;
        }
        *n += 1;
        Some(Slot {
            of: self.clone(),
            caller: caller.to_owned(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.of.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.caller) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.caller);
            }
        }
    }
}

/// How long a fetch waits for one of the `agent_api.media_fetches` permits.
const PERMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether a customer's message in the conversation names `media_id`.
async fn received(
    inner: &Inner,
    conv: &switchboard_core::ConversationId,
    media_id: &str,
) -> Result<bool, ApiError> {
    let mut after = "-".to_owned();
    for _ in 0..MAX_PAGES {
        let page = inner.conversations.transcript(conv, &after, PAGE).await?;
        if page
            .iter()
            .any(|e| e.dir == "in" && brought(&e.msg, media_id))
        {
            return Ok(true);
        }
        match page.last() {
            Some(last) if page.len() == PAGE => after = last.seq.clone(),
            _ => return Ok(false),
        }
    }
    Ok(false)
}

pub async fn media(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path((id, media_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let caller = who(&inner, &headers).await?;
    let cid = contact_id(&id)?;
    inner.visible(&caller, &cid).await?;
    let unknown = || {
        ApiError::not_found(
            "unknown_media",
            "this conversation received no such attachment",
        )
    };
    if media_id.is_empty() || media_id.len() > 512 || !media_id.chars().all(id_char) {
        return Err(unknown());
    }
    // The permit covers the look-up too: it reads up to 100,000 log
    // entries of a long conversation, and an agent repeating requests
    // for ids that are not there would otherwise load Redis unbounded.
    // Each caller has a share of the permits, not all of them.
    let Some(_slot) = inner.media_callers.take(caller.name()) else {
        metrics::counter!("switchboard_agent_media_busy_total").increment(1);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("{PER_CALLER} attachments of yours are being fetched; wait for them"),
        ));
    };
    let Ok(Ok(_permit)) = tokio::time::timeout(PERMIT_WAIT, inner.media_permits.acquire()).await
    else {
        metrics::counter!("switchboard_agent_media_busy_total").increment(1);
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "too many attachments are being fetched; try again",
        ));
    };
    let fields = inner.contact_fields(&cid).await?;
    let conv = conversation_of(&fields)?;
    if !received(&inner, &conv, &media_id).await? {
        return Err(unknown());
    }
    let pick = |k: &str| fields.get(k).cloned().unwrap_or_default();
    let source = inner.media.get(&pick("source")).ok_or_else(unknown)?;
    let media = source
        .fetch(&pick("address"), &media_id)
        .await
        .map_err(|e| match e {
            MediaError::NotFound => unknown(),
            MediaError::TooLarge(_) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string())
            }
            MediaError::Unavailable(_) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "provider_unavailable",
                e.to_string(),
            ),
        })?;
    info!(contact_id = %cid, media_id = %media_id, bytes = media.bytes.len(), "Attachment fetched for an agent.");
    let content_type = HeaderValue::from_str(&media.content_type)
        .ok()
        .filter(|_| media.content_type.contains('/'))
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{media_id}\""))
        .unwrap_or(HeaderValue::from_static("attachment"));
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_DISPOSITION, disposition),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            // Should a browser render it all the same (an old one, a
            // plug-in), it runs in an origin of its own.
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("sandbox"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, no-store"),
            ),
        ],
        media.bytes,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::{InFlight, PER_CALLER, brought, mentions};

    /// Each caller may have two attachment requests in flight; a third is
    /// refused until one ends; another caller is not held up.
    #[test]
    fn each_caller_has_a_share_of_the_fetches() {
        let in_flight = std::sync::Arc::new(InFlight::default());
        let first = in_flight.take("olena").expect("one");
        let second = in_flight.take("olena").expect("two");
        assert_eq!(PER_CALLER, 2);
        assert!(in_flight.take("olena").is_none(), "a third");
        assert!(in_flight.take("petro").is_some(), "another caller");
        drop(first);
        let third = in_flight.take("olena").expect("one ended");
        drop((second, third));
        assert!(
            in_flight
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
        );
    }

    /// A customer who writes `media id X` into a text (or a name, or a
    /// subject) does not open attachment X to the agent of their contact.
    #[test]
    fn only_the_media_a_message_brought_is_served() {
        let forged = r#"{"text":"see media id AAAAAAAAAAAAAAAAAAAAAA]","media":[]}"#;
        assert!(!brought(forged, "AAAAAAAAAAAAAAAAAAAAAA"));
        let real = r#"{"text":"hi\n[attachment: a.png, image/png, 5 bytes, media id BBBBBBBBBBBBBBBBBBBBBB]","media":["BBBBBBBBBBBBBBBBBBBBBB"]}"#;
        assert!(brought(real, "BBBBBBBBBBBBBBBBBBBBBB"));
        assert!(!brought(real, "BBBBBBBBBBBBBBBBBBBBB"));
        // Stored by an older version (no list): the attachment line.
        let old = r#"{"text":"[attachment: a.png, image/png, 5 bytes, media id CCCCCCCCCCCCCCCCCCCCCC]"}"#;
        assert!(brought(old, "CCCCCCCCCCCCCCCCCCCCCC"));
        assert!(!brought(
            "not json media id CCCCCCCCCCCCCCCCCCCCCC]",
            "CCCCCCCCCCCCCCCCCCCCCC"
        ));
    }

    #[test]
    fn a_media_id_is_matched_whole() {
        let text = "[attachment: image, image/jpeg, media id MEDIA-ID-1]";
        assert!(mentions(text, "MEDIA-ID-1"));
        assert!(!mentions(text, "MEDIA-ID"));
        assert!(!mentions("media id MEDIA-ID-10]", "MEDIA-ID-1"));
        assert!(mentions(
            "[attachment: photo, media id AgAD-large]",
            "AgAD-large"
        ));
    }
}
