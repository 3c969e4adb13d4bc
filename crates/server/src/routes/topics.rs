//! `GET /topics` and `GET /topics/{topic}`: what the store holds and who is
//! listening, topic by topic.

use axum::{
    Json,
    extract::{Path, State, rejection::PathRejection},
    http::{HeaderValue, Uri, header},
    response::{IntoResponse as _, Response},
};
use herald_core::{StoreError, TopicName, TopicPattern, TopicStats};

use crate::{
    error::{ApiError, ErrorCode},
    extract::{Caller, query_values},
    routes::{shorten, topic_from_path},
    state::AppState,
};

/// Most topics in one answer of `GET /topics`, and its default.
pub const MAX_TOPICS_LISTED: usize = 1000;

/// Pages of topics read from the store for one answer, at most: a token
/// that may see few of many topics gets a short page and a `next` link
/// rather than a scan of every topic.
const MAX_PAGES_SCANNED: usize = 10;

/// Every topic with stored events or subscribers that the caller may
/// subscribe to, in name order, a page at a time: `?limit=N` (at most 1000),
/// and while more may follow, a `Link: <…?after=NAME…>; rel="next"` header
/// to continue. Needs a token: public subscribe patterns open topics'
/// streams, not the list of topics.
pub async fn list(State(state): State<AppState>, caller: Caller, uri: Uri) -> Result<Response, ApiError> {
    caller.require()?;
    let grants = caller.with_public(&state);
    let after = match query_values(uri.query(), "after").next() {
        Some(text) => Some(
            text.parse::<TopicName>()
                .map_err(|e| ApiError::new(ErrorCode::InvalidTopic, format!("after=`{}`: {e}", shorten(&text))))?,
        ),
        None => None,
    };
    let limit = match query_values(uri.query(), "limit").next() {
        Some(text) => match text.parse::<usize>() {
            Ok(n @ 1..=MAX_TOPICS_LISTED) => n,
            _ => {
                return Err(ApiError::new(
                    ErrorCode::InvalidLimit,
                    format!("limit=`{}` must be a whole number from 1 to {MAX_TOPICS_LISTED}", shorten(&text)),
                ));
            }
        },
        None => MAX_TOPICS_LISTED,
    };
    let visible = |t: &TopicStats| grants.may_subscribe(&TopicPattern::Exact(t.name.clone()));
    let (mut topics, mut cursor, mut more) = (Vec::new(), after, true);
    for _ in 0..MAX_PAGES_SCANNED {
        let page = state.hub.topic_list(cursor.as_ref(), limit).await.map_err(store_error)?;
        more = page.len() == limit;
        cursor = page.last().map(|t| t.name.clone()).or(cursor);
        topics.extend(page.into_iter().filter(visible));
        if !more || topics.len() >= limit {
            break;
        }
    }
    if topics.len() > limit {
        topics.truncate(limit);
        cursor = topics.last().map(|t| t.name.clone());
        more = true;
    }
    let mut response = Json(topics).into_response();
    if let Some(next) = cursor.filter(|_| more) {
        let link = format!("</topics?after={next}&limit={limit}>; rel=\"next\"");
        if let Ok(value) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    Ok(response)
}

/// One topic's figures.
pub async fn one(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<TopicStats>, ApiError> {
    let topic = topic_from_path(path)?;
    if !caller.with_public(&state).may_subscribe(&TopicPattern::Exact(topic.clone())) {
        return Err(caller.refuse(format!("this token may not subscribe to `{topic}`")));
    }
    state.hub.topic(&topic).await.map_err(store_error)?.map(Json).ok_or_else(|| {
        ApiError::new(ErrorCode::NotFound, format!("topic `{topic}` has no stored events and no subscribers"))
    })
}

fn store_error(error: StoreError) -> ApiError {
    tracing::warn!(%error, "topic figures: the store failed");
    ApiError::new(ErrorCode::StoreUnavailable, "the store cannot be read right now; retry shortly")
}
