//! The public HTTP API, one module per resource.

pub mod events;
pub mod health;
pub mod index;
pub mod publish;
pub mod topics;

use axum::{
    extract::rejection::PathRejection,
    http::{Method, Uri},
};
use herald_core::TopicName;

use crate::error::{ApiError, ErrorCode};

/// A topic from the path, or a 400 that says what is wrong with it.
pub fn topic_from_path(path: Result<axum::extract::Path<String>, PathRejection>) -> Result<TopicName, ApiError> {
    let text = path_text(path)?;
    text.parse().map_err(|e| ApiError::new(ErrorCode::InvalidTopic, format!("`{}`: {e}", shorten(&text))))
}

/// The topic segment of the path, decoded but not yet checked.
pub fn path_text(path: Result<axum::extract::Path<String>, PathRejection>) -> Result<String, ApiError> {
    let axum::extract::Path(text) =
        path.map_err(|e| ApiError::new(ErrorCode::InvalidTopic, format!("the topic in the path is unreadable: {e}")))?;
    Ok(text)
}

/// The first 64 characters of `text`, to echo user input safely.
pub fn shorten(text: &str) -> String {
    let mut short: String = text.chars().take(64).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short.escape_debug().to_string()
}

/// 404 for every unknown route.
pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no route for {method} {}", uri.path()))
}

/// 405 for a known route with another method.
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, format!("{method} is not allowed on {}", uri.path()))
}
