//! `POST /.well-known/mercure`: a Mercure update, as a form.
//!
//! The update becomes one event of the door's topic, durable before the
//! answer: `200 text/plain` with the update's id, as Mercure's clients
//! expect. A publisher needs a token whose `publish` selectors match every
//! one of the update's topics.

use std::sync::Arc;

use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use herald_core::{EventDraft, EventType, EventTypeError, MERCURE_ID_PREFIX, MercureMeta, Publish};

use super::{
    TheDoor,
    token::{Dialect, Role},
};
use crate::{
    error::{ApiError, ErrorCode},
    routes::{publish::publish_error, shorten},
    state::AppState,
};

/// Most topics of one update, as Mercure's hub allows.
pub const MAX_UPDATE_TOPICS: usize = 1000;
/// Longest topic of an update, in bytes.
pub const MAX_TOPIC_BYTES: usize = 4096;
/// Longest publisher-chosen id, in bytes.
pub const MAX_ID_BYTES: usize = 1024;

/// The fields of an update form.
#[derive(Debug, Default)]
struct Form {
    topics: Vec<String>,
    data: Option<String>,
    private: bool,
    id: Option<String>,
    event_type: Option<String>,
    retry: Option<String>,
}

/// Publishes one update.
pub(super) async fn publish(
    State(state): State<AppState>,
    TheDoor(door): TheDoor,
    headers: HeaderMap,
    uri: axum::http::Uri,
    body: Body,
) -> Result<Response, ApiError> {
    let found = super::token::find_token(&headers, uri.query(), &door.places)?;
    let Some(found) = found else {
        return Err(ApiError::new(
            ErrorCode::MissingToken,
            "publishing needs a token with a `mercure.publish` claim: send `Authorization: Bearer <token>`",
        ));
    };
    let token = super::token::verify_found(&door.verifier, &found, Role::Publisher)?;
    if token.grants.publish.is_none() {
        return Err(ApiError::new(
            ErrorCode::InvalidToken,
            "this token has no `mercure.publish` claim (or, at+jwt, no publish action): it cannot publish",
        ));
    }
    if found.from_cookie {
        super::cors::check_publish_origin(&headers, &door.config.publish_origins)?;
    }
    let form = read_form(&state, &headers, body).await?;
    let (draft, meta) = draft(form, token.dialect, &door.topic)?;
    if !token.grants.may_publish(meta.topics.iter().map(String::as_str)) {
        let denied = meta.topics.iter().find(|t| !token.grants.may_publish(std::iter::once(t.as_str())));
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "this token's `mercure.publish` selectors do not match topic `{}`",
                shorten(denied.map_or("", String::as_str))
            ),
        ));
    }
    let max = state.config.max_event_bytes;
    if draft.data.len() > max {
        return Err(ApiError::new(
            ErrorCode::EventTooLarge,
            format!("`data` is {} bytes; the limit is {max} (--max-event-bytes)", draft.data.len()),
        ));
    }
    let started = std::time::Instant::now();
    let published = state.hub.submit(Publish::new(vec![draft])).await.map_err(publish_error)?;
    crate::metrics::hot_path().publish_latency.record(started.elapsed().as_secs_f64());
    metrics::counter!("herald_mercure_updates_total").increment(1);
    let Some(published) = published.first() else {
        return Err(publish_error(herald_core::PublishError::ShuttingDown));
    };
    let mut response = (StatusCode::OK, meta.wire_id(published.id)).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    Ok(response)
}

/// The body as a form, within `--max-body-bytes`. Any content type is read
/// as a form: older Symfony clients sent none.
async fn read_form(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Form, ApiError> {
    let bytes = crate::routes::publish::read_body(state, headers, body).await?;
    let mut form = Form::default();
    for pair in bytes.split(|&b| b == b'&').filter(|pair| !pair.is_empty()) {
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &b""[..]),
        };
        let (key, value) = (decode(key)?, decode(value)?);
        match &*key {
            "topic" => {
                if form.topics.len() == MAX_UPDATE_TOPICS {
                    return Err(ApiError::new(
                        ErrorCode::TooManyTopics,
                        format!("an update has at most {MAX_UPDATE_TOPICS} topics"),
                    ));
                }
                form.topics.push(value);
            }
            "data" => form.data = Some(value),
            "private" => form.private = true,
            "id" => form.id = Some(value),
            "type" => form.event_type = Some(value),
            "retry" => form.retry = Some(value),
            _ => {}
        }
    }
    Ok(form)
}

/// One form field's text: `+` is a space, `%XX` a byte (a malformed escape
/// stays as it is, as browsers send it), and the bytes must be UTF-8: an
/// update is never stored with characters replaced.
fn decode(field: &[u8]) -> Result<String, ApiError> {
    let hex = |b: u8| char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok());
    let mut bytes = Vec::with_capacity(field.len());
    let mut i = 0;
    while let Some(&b) = field.get(i) {
        match (b, field.get(i + 1).copied().and_then(hex), field.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(high), Some(low)) => {
                bytes.push(high << 4 | low);
                i += 3;
                continue;
            }
            (b'+', ..) => bytes.push(b' '),
            (b, ..) => bytes.push(b),
        }
        i += 1;
    }
    String::from_utf8(bytes).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidUtf8,
            "a form field is not UTF-8 once decoded; send UTF-8 text, percent-encoded",
        )
    })
}

/// The event an update form stands for, every field checked, and its
/// Mercure metadata.
fn draft(
    form: Form,
    dialect: Dialect,
    door_topic: &herald_core::TopicName,
) -> Result<(EventDraft, Arc<MercureMeta>), ApiError> {
    if form.topics.is_empty() {
        return Err(ApiError::new(ErrorCode::MissingTopic, "missing \"topic\" parameter"));
    }
    for topic in &form.topics {
        if topic.len() > MAX_TOPIC_BYTES {
            return Err(ApiError::new(
                ErrorCode::InvalidTopic,
                format!("topic `{}` is {} bytes; the limit is {MAX_TOPIC_BYTES}", shorten(topic), topic.len()),
            ));
        }
        if topic.contains(super::PATH) {
            // Subscription events are the hub's to publish.
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("topic `{}`: topics under {} belong to the hub", shorten(topic), super::PATH),
            ));
        }
        if dialect == Dialect::Draft08 && topic == "*" {
            return Err(ApiError::new(ErrorCode::InvalidTopic, "`*` is not a topic"));
        }
    }
    if let Some(id) = &form.id {
        check_id(id)?;
    }
    let event_type = match form.event_type.as_deref() {
        None => None,
        Some("mercure") if dialect == Dialect::Draft08 => {
            return Err(ApiError::new(ErrorCode::ReservedEventType, "the type `mercure` belongs to the hub"));
        }
        Some(text) => Some(EventType::new(text).map_err(|error| {
            let code = match error {
                EventTypeError::Reserved => ErrorCode::ReservedEventType,
                _ => ErrorCode::InvalidEventType,
            };
            ApiError::new(code, format!("`type`: {error}"))
        })?),
    };
    let retry_ms = match form.retry.as_deref() {
        None => None,
        Some(text) => Some(text.trim().parse::<u64>().map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidRetry,
                format!("`retry` `{}` is not a number of milliseconds", shorten(text)),
            )
        })?),
    };
    let meta = Arc::new(MercureMeta::new(form.topics, form.private, form.id));
    let draft = EventDraft {
        topic: door_topic.clone(),
        event_type,
        data: form.data.unwrap_or_default(),
        retry_ms,
        mercure: Some(Arc::clone(&meta)),
    };
    Ok((draft, meta))
}

/// A publisher's id: one SSE field, not the hub's own forms.
fn check_id(id: &str) -> Result<(), ApiError> {
    let invalid = |why: &str| Err(ApiError::new(ErrorCode::InvalidId, format!("`id` `{}`: {why}", shorten(id))));
    if id.is_empty() {
        return invalid("is empty; leave it out and the hub assigns one");
    }
    if id.len() > MAX_ID_BYTES {
        return invalid("is longer than 1024 bytes");
    }
    if id.chars().any(|c| c.is_control() || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{feff}'))
    {
        return invalid("holds a control or format character");
    }
    if id.starts_with('#') {
        return invalid("starts with `#`, which Mercure keeps for the hub's ids");
    }
    if id == "earliest" {
        return invalid("`earliest` asks for the whole history; it cannot be an id");
    }
    if id.starts_with(MERCURE_ID_PREFIX) || herald_core::parse_mercure_id(id).is_some() {
        return invalid("has the form of the hub's own ids (urn:herald:…)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_decode_strictly() {
        assert_eq!(decode(b"a+b%20c%2Bd").unwrap(), "a b c+d");
        assert_eq!(decode(b"%C3%A9").unwrap(), "é");
        assert_eq!(decode(b"100%").unwrap(), "100%");
        assert_eq!(decode(b"%zz%4").unwrap(), "%zz%4");
        assert!(decode(b"%C3").is_err(), "half a character");
        assert!(decode(b"%FF").is_err());
    }

    #[test]
    fn ids_are_checked() {
        for ok in ["a", "https://example.com/updates/1", "ü-1", "#x"[1..].as_ref()] {
            assert!(check_id(ok).is_ok(), "{ok}");
        }
        for bad in
            ["", "a\nb", "a\rb", "a\0b", "#frag", "earliest", "urn:herald:x", "00000001-0000000000000002", "a\u{200b}"]
        {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
        assert!(check_id(&"x".repeat(MAX_ID_BYTES + 1)).is_err());
    }
}
