//! `GET /.well-known/mercure/subscriptions[/{topic}[/{subscriber}]]`: the
//! subscriptions open on this node, as Mercure's JSON-LD, for a token whose
//! `subscribe` selectors match the request's path. Its `lastEventID` (also
//! the `ETag`) is where a subscriber to the subscription topics resumes so
//! as to miss no change after this list.

use axum::{
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse as _, Response},
};
use herald_core::MERCURE_ID_PREFIX;
use serde_json::{Value, json};

use super::{
    TheDoor,
    presence::{Entry, subscription_topic},
    token::Role,
};
use crate::{
    error::{ApiError, ErrorCode},
    state::AppState,
};

/// Every open subscription.
pub(super) async fn all(
    state: State<AppState>,
    door: TheDoor,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    answer(&state, &door, &headers, &uri, None, None)
}

/// The open subscriptions of one selector.
pub(super) async fn of_topic(
    state: State<AppState>,
    door: TheDoor,
    headers: HeaderMap,
    uri: Uri,
    Path(topic): Path<String>,
) -> Result<Response, ApiError> {
    answer(&state, &door, &headers, &uri, Some(&topic), None)
}

/// One subscription.
pub(super) async fn one(
    state: State<AppState>,
    door: TheDoor,
    headers: HeaderMap,
    uri: Uri,
    Path((topic, subscriber)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    answer(&state, &door, &headers, &uri, Some(&topic), Some(&subscriber))
}

fn answer(
    State(state): &State<AppState>,
    TheDoor(door): &TheDoor,
    headers: &HeaderMap,
    uri: &Uri,
    topic: Option<&str>,
    subscriber: Option<&str>,
) -> Result<Response, ApiError> {
    if !door.config.subscriptions {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "the subscriptions API is off; start Herald with --mercure-subscriptions",
        ));
    }
    let Some(found) = super::token::find_token(headers, uri.query(), &door.places)? else {
        return Err(ApiError::new(ErrorCode::MissingToken, "the subscriptions API needs a subscriber's token"));
    };
    let token = super::token::verify_found(&door.verifier, &found, Role::Subscriber)?;
    if !token.grants.may_receive_private(std::iter::once(uri.path())) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("this token's `mercure.subscribe` selectors do not match `{}`", uri.path()),
        ));
    }
    let last_event_id = format!("{MERCURE_ID_PREFIX}{}", state.hub.last_id());
    let listed: Vec<Value> = door
        .presence
        .list()
        .into_iter()
        .filter(|(id, entry)| topic.is_none_or(|t| t == entry.selector) && subscriber.is_none_or(|s| s == id))
        .map(|(id, entry)| subscription(&id, &entry))
        .collect();
    let body = match subscriber {
        Some(_) => {
            let Some(Value::Object(mut one)) = listed.into_iter().next() else {
                return Err(ApiError::new(ErrorCode::NotFound, "no such subscription is open on this node"));
            };
            one.insert("@context".into(), json!("https://mercure.rocks/"));
            one.insert("lastEventID".into(), json!(last_event_id));
            Value::Object(one)
        }
        None => json!({
            "@context": "https://mercure.rocks/",
            "id": uri.path(),
            "type": "Subscriptions",
            "lastEventID": last_event_id,
            "subscriptions": listed,
        }),
    };
    let etag = HeaderValue::from_str(&format!("\"{last_event_id}\"")).ok();
    let unchanged = headers.get(header::IF_NONE_MATCH).zip(etag.as_ref()).is_some_and(|(sent, etag)| sent == etag);
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, body.to_string()).into_response()
    };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/ld+json"));
    if let Some(etag) = etag {
        h.insert(header::ETAG, etag);
    }
    Ok(response)
}

/// One open subscription, as its connect update said it.
fn subscription(subscriber: &str, entry: &Entry) -> Value {
    let mut value = json!({
        "id": subscription_topic(&entry.selector, subscriber),
        "type": "Subscription",
        "topic": entry.selector,
        "subscriber": subscriber,
        "active": true,
    });
    if let (Some(payload), Some(object)) = (&entry.payload, value.as_object_mut()) {
        object.insert("payload".into(), payload.clone());
    }
    value
}
