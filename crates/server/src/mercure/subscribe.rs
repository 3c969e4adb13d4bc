//! `GET /.well-known/mercure?topic=…`: a Mercure subscriber's stream.
//!
//! The stream is a subscription to the door's topic, registered before the
//! headers go out, that sends an update when one of its topics matches one
//! of the subscriber's selectors and, for a private update, one of its
//! token's `subscribe` selectors. A resume id is the door's own
//! (`urn:herald:…`, or a bare Herald id) or a publisher's, found through the
//! store's index of them.

use std::sync::Arc;

use axum::{
    extract::State,
    http::{HeaderMap, HeaderValue, Method, Uri, header},
    response::{IntoResponse as _, Response},
};
use herald_core::{Event, EventId, ReadLimit, Resume, Selection, StoreError, TopicPattern, parse_mercure_id};

use super::{
    Door, TheDoor,
    presence::PresenceGuard,
    selectors::{SelectorKind, SharedSelector},
    token::{MercureToken, Role},
};
use crate::{
    error::{ApiError, ErrorCode},
    event_stream::EventFilter,
    extract::ClientIp,
    routes::{
        events::{self, StreamSpec},
        shorten,
    },
    state::AppState,
};

/// The query parameters a resume id may come in, after the header: the
/// spec's, Symfony's and the polyfill's spellings, and Herald's own.
const RESUME_PARAMETERS: [&str; 4] = ["lastEventID", "Last-Event-ID", "lastEventId", "last_event_id"];

/// What the `Last-Event-ID` response header says when no retained event
/// precedes the first one sent.
const EARLIEST: &str = "earliest";

/// What a stream's `Cache-Control` says, as Mercure's hub says it.
const NO_CACHE: &str = "private, no-cache, no-store, must-revalidate, max-age=0";

/// Opens a subscriber's stream.
pub(super) async fn subscribe(
    State(state): State<AppState>,
    TheDoor(door): TheDoor,
    ClientIp(ip): ClientIp,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let selectors = selectors(&door, &uri, state.config.max_topics_per_subscription)?;
    let token = match super::token::find_token(&headers, uri.query(), &door.places)? {
        Some(found) => Some(super::token::verify_found(&door.verifier, &found, Role::Subscriber)?),
        None if door.config.anonymous => None,
        None => {
            return Err(ApiError::new(
                ErrorCode::MissingToken,
                "this hub serves no anonymous subscribers: send a token (Authorization: Bearer, or the \
                 mercureAuthorization cookie), or start Herald with --mercure-anonymous",
            ));
        }
    };
    if method == Method::HEAD {
        // What a GET would answer, without a stream (nor presence updates).
        let mut response = axum::http::StatusCode::OK.into_response();
        let h = response.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(NO_CACHE));
        return Ok(response);
    }
    let requested = resume_id(&headers, &uri);
    let (resume, said) = resolve(&state, &door, requested.as_deref()).await?;
    let selection = Selection::new([TopicPattern::Exact(door.topic.clone())]);
    let admitted = events::admit(&state, ip, selection, resume)?;
    let listed: Vec<String> = selectors.iter().map(|s| s.as_str().to_owned()).collect();
    let presence = match door.config.subscriptions {
        true => {
            let payload = token.as_ref().and_then(|t| t.grants.payload.clone());
            let guard = PresenceGuard::open(&door, &state.hub, &state.tasks, &listed, payload).await;
            Some(Box::new(guard) as Box<dyn std::any::Any + Send>)
        }
        false => None,
    };
    let expires_at = token.as_ref().and_then(|t| t.expires_at);
    let filter = UpdateFilter { selectors, token, gap_event: door.config.gap_event };
    let stream = StreamSpec {
        headers: &headers,
        subject: None,
        topics: listed,
        expires_at,
        filter: Some(Box::new(filter)),
        held: presence,
    };
    let mut response = events::respond(&state, ip, admitted, stream);
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(NO_CACHE));
    if let Some(value) = said.and_then(|said| HeaderValue::from_str(&said).ok()) {
        h.insert("last-event-id", value.clone());
        h.insert("mercure-last-event-id", value);
    }
    Ok(response)
}

/// The subscriber's selectors: 0.x `topic=` and 1.0 `match=`/`match_exact=`.
fn selectors(door: &Door, uri: &Uri, max: usize) -> Result<Vec<Arc<SharedSelector>>, ApiError> {
    let mut selectors = Vec::new();
    for (key, value) in form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
        let kind = match &*key {
            "topic" => SelectorKind::Topic,
            "match" | "match_exact" => SelectorKind::Exact,
            "match_urlpattern" => SelectorKind::UrlPattern,
            other if other.to_ascii_lowercase().starts_with("match") => {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "unknown matcher `{}`: use topic=, match=, match_exact= or match_urlpattern=",
                        shorten(other)
                    ),
                ));
            }
            _ => continue,
        };
        if selectors.len() == max {
            return Err(ApiError::new(
                ErrorCode::TooManyTopics,
                format!("more than {max} selectors in one subscription (--max-topics-per-subscription)"),
            ));
        }
        let selector = door.selectors.get(kind, &value);
        selectors.push(selector.map_err(|error| ApiError::new(ErrorCode::InvalidRequest, error.to_string()))?);
    }
    if selectors.is_empty() {
        return Err(ApiError::new(
            ErrorCode::MissingTopic,
            "missing \"topic\" parameter: name what to receive, like ?topic=https://example.com/books/{id}",
        ));
    }
    Ok(selectors)
}

/// The id to resume after: the `Last-Event-ID` header, or a query parameter.
fn resume_id(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    if let Some(value) = headers.get("last-event-id") {
        return Some(value.to_str().unwrap_or("\u{fffd}").to_owned());
    }
    let query = uri.query().unwrap_or_default().as_bytes();
    RESUME_PARAMETERS.iter().find_map(|name| {
        form_urlencoded::parse(query).find(|(key, _)| key == name).map(|(_, value)| value.into_owned())
    })
}

/// Where the stream starts, and what its `Last-Event-ID` header says (only
/// when the request named an id): the id itself when the history still
/// holds it, else `earliest`, as everything retained follows.
async fn resolve(state: &AppState, door: &Door, requested: Option<&str>) -> Result<(Resume, Option<String>), ApiError> {
    let text = match requested.map(str::trim) {
        None | Some("") => return Ok((Resume::Live, None)),
        Some(EARLIEST) => return Ok((Resume::Earliest, Some(EARLIEST.to_owned()))),
        Some(text) => text,
    };
    let store = state.hub.store();
    let unavailable = |error: StoreError| ApiError::new(ErrorCode::StoreUnavailable, error.to_string());
    let id = match parse_mercure_id(text) {
        Some(id) => Some(id),
        None => store.find_mercure_id(&door.topic, text).await.map_err(unavailable)?,
    };
    let Some(id) = id else { return Ok((Resume::Unknown, Some(EARLIEST.to_owned()))) };
    // Another node may have acknowledged it, ahead of this one's feed.
    let _ = state.hub.learn_committed(id).await;
    let held = retained(state, door, id).await.map_err(unavailable)?;
    Ok((Resume::After(id), Some(if held { text.to_owned() } else { EARLIEST.to_owned() })))
}

/// Whether the store still holds every update after `id`: else the stream
/// starts at the earliest one it holds, after a gap notice.
async fn retained(state: &AppState, door: &Door, id: EventId) -> Result<bool, StoreError> {
    if id.epoch != state.hub.epoch() {
        return Ok(false);
    }
    let selection = Selection::new([TopicPattern::Exact(door.topic.clone())]);
    let nothing = ReadLimit { events: 1, bytes: 0 };
    let read = state.hub.store().read(&selection, id.seq, id.seq, nothing).await?;
    Ok(read.gaps.is_empty())
}

/// Which updates one subscriber receives.
struct UpdateFilter {
    selectors: Vec<Arc<SharedSelector>>,
    token: Option<Arc<MercureToken>>,
    gap_event: bool,
}

impl EventFilter for UpdateFilter {
    fn admits(&self, event: &Event) -> bool {
        let Some(meta) = &event.mercure else { return false };
        let routed = self.selectors.iter().any(|selector| selector.routes(meta));
        routed
            && (!meta.private
                || self
                    .token
                    .as_ref()
                    .is_some_and(|t| t.grants.may_receive_private(meta.topics.iter().map(String::as_str))))
    }

    fn notices(&self) -> bool {
        self.gap_event
    }
}
