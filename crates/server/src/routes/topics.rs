//! `GET /topics` and `GET /topics/{topic}`: what the hub holds now.

use axum::{
    Json,
    extract::{Path, State, rejection::PathRejection},
};
use herald_core::{TopicPattern, TopicStats};

use crate::{error::ApiError, extract::Caller, routes::topic_from_path, state::AppState};

/// Every topic in memory the caller may subscribe to. Needs a token: public
/// subscribe patterns open topics' streams, not the list of topics.
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<TopicStats>>, ApiError> {
    if caller.0.is_none() {
        return Err(ApiError::Unauthorized(crate::auth::AuthError::Missing));
    }
    let grants = caller.with_public(&state);
    let mut topics: Vec<TopicStats> = state
        .hub
        .all_topic_stats()
        .into_iter()
        .filter(|t| grants.may_subscribe(&TopicPattern::Exact(t.name.clone())))
        .collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(topics))
}

/// One topic's figures.
pub async fn one(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<TopicStats>, ApiError> {
    let topic = topic_from_path(path)?;
    if !caller.with_public(&state).may_subscribe(&TopicPattern::Exact(topic.clone())) {
        return Err(match caller.0 {
            None => ApiError::Unauthorized(crate::auth::AuthError::Missing),
            Some(_) => ApiError::Forbidden(format!("this token may not subscribe to `{topic}`")),
        });
    }
    state
        .hub
        .topic_stats(topic.as_str())
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("topic `{topic}` has no subscribers and no recent events")))
}
