//! The one error type of the HTTP API, and its one mapping to responses:
//! `{"error": {"code": "...", "message": "..."}}` with a fitting status.
//! Internal details are logged, never sent.
//!
//! Every code the API answers with is an [`ErrorCode`], and each code says
//! its status in one table ([`ErrorCode::parts`]); handlers name a code and
//! a message, never a status.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use crate::auth::AuthError;

/// A machine-readable error code of the public API. The strings are public
/// (clients and tests outside the crates read them): never change one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// No token where one is needed (401).
    MissingToken,
    /// A token that cannot be accepted (401).
    InvalidToken,
    /// The token does not allow this (403).
    Forbidden,
    /// A topic name or pattern that is not one (400).
    InvalidTopic,
    /// `GET /events` without a `topic` (400).
    MissingTopic,
    /// `?limit=` out of range (400).
    InvalidLimit,
    /// A JSON body that is not the expected shape (400).
    InvalidJson,
    /// A batch without events (400).
    EmptyBatch,
    /// A JSON event without `data` (400).
    MissingData,
    /// An event type that is not one (400).
    InvalidEventType,
    /// An event type in the hub's own `herald.` namespace (400).
    ReservedEventType,
    /// An `Idempotency-Key` that is not one (400).
    InvalidIdempotencyKey,
    /// A body that failed while being read (400).
    UnreadableBody,
    /// A text body that is not UTF-8 (400).
    InvalidUtf8,
    /// More topics in one subscription than `--max-topics-per-subscription` (400).
    TooManyTopics,
    /// No such route or thing (404).
    NotFound,
    /// The route exists, the method does not (405).
    MethodNotAllowed,
    /// The body did not arrive within `--body-timeout` (408).
    BodyTimeout,
    /// More events in a batch than `--max-batch-events` (413).
    BatchTooLarge,
    /// Event data over `--max-event-bytes` (413).
    EventTooLarge,
    /// A body over `--max-body-bytes` (413).
    BodyTooLarge,
    /// A body that is neither JSON nor text (415).
    UnsupportedMediaType,
    /// An `Idempotency-Key` the caller used for another request (422).
    IdempotencyKeyReused,
    /// A per-client limit was hit (429).
    TooManyRequests,
    /// The store cannot take or give events now (503).
    StoreUnavailable,
    /// The server is draining (503).
    ShuttingDown,
    /// The hub holds its maximum of topics (503). Its string is
    /// `too_many_topics`, as [`Self::TooManyTopics`]'s is: both were
    /// published under that name before codes were typed, so the status
    /// tells them apart.
    HubFull,
    /// The server is at `--max-connections` (503).
    TooManyConnections,
}

impl ErrorCode {
    /// The status and the string of this code: the one table of both.
    pub fn parts(self) -> (StatusCode, &'static str) {
        match self {
            Self::MissingToken => (StatusCode::UNAUTHORIZED, "missing_token"),
            Self::InvalidToken => (StatusCode::UNAUTHORIZED, "invalid_token"),
            Self::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            Self::InvalidTopic => (StatusCode::BAD_REQUEST, "invalid_topic"),
            Self::MissingTopic => (StatusCode::BAD_REQUEST, "missing_topic"),
            Self::InvalidLimit => (StatusCode::BAD_REQUEST, "invalid_limit"),
            Self::InvalidJson => (StatusCode::BAD_REQUEST, "invalid_json"),
            Self::EmptyBatch => (StatusCode::BAD_REQUEST, "empty_batch"),
            Self::MissingData => (StatusCode::BAD_REQUEST, "missing_data"),
            Self::InvalidEventType => (StatusCode::BAD_REQUEST, "invalid_event_type"),
            Self::ReservedEventType => (StatusCode::BAD_REQUEST, "reserved_event_type"),
            Self::InvalidIdempotencyKey => (StatusCode::BAD_REQUEST, "invalid_idempotency_key"),
            Self::UnreadableBody => (StatusCode::BAD_REQUEST, "unreadable_body"),
            Self::InvalidUtf8 => (StatusCode::BAD_REQUEST, "invalid_utf8"),
            Self::TooManyTopics => (StatusCode::BAD_REQUEST, "too_many_topics"),
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            Self::BatchTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large"),
            Self::EventTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "event_too_large"),
            Self::BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Self::UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            Self::IdempotencyKeyReused => (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
            Self::TooManyRequests => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            Self::StoreUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            Self::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            Self::HubFull => (StatusCode::SERVICE_UNAVAILABLE, "too_many_topics"),
            Self::TooManyConnections => (StatusCode::SERVICE_UNAVAILABLE, "too_many_connections"),
        }
    }

    /// The HTTP status this code is answered with.
    pub fn status(self) -> StatusCode {
        self.parts().0
    }

    /// The code as clients read it.
    pub fn as_str(self) -> &'static str {
        self.parts().1
    }
}

/// Everything a handler can answer with besides success: a code, and a
/// message that says what was wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    code: ErrorCode,
    message: String,
}

impl ApiError {
    /// An answer with `code` and its status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// The machine-readable code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The JSON body: `{"error": {"code": "...", "message": "..."}}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": { "code": self.code.as_str(), "message": self.message } })
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        let code = match error {
            AuthError::Missing => ErrorCode::MissingToken,
            AuthError::Invalid { .. } => ErrorCode::InvalidToken,
        };
        Self::new(code, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.code.status(), Json(self.body())).into_response();
        let headers = response.headers_mut();
        match self.code {
            ErrorCode::MissingToken => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"herald\""));
            }
            ErrorCode::InvalidToken => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"herald\", error=\"invalid_token\""),
                );
            }
            code if code.status() == StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_too_many_topics_names_two_codes() {
        use ErrorCode::*;
        let all = [
            MissingToken,
            InvalidToken,
            Forbidden,
            InvalidTopic,
            MissingTopic,
            InvalidLimit,
            InvalidJson,
            EmptyBatch,
            MissingData,
            InvalidEventType,
            ReservedEventType,
            InvalidIdempotencyKey,
            UnreadableBody,
            InvalidUtf8,
            TooManyTopics,
            NotFound,
            MethodNotAllowed,
            BodyTimeout,
            BatchTooLarge,
            EventTooLarge,
            BodyTooLarge,
            UnsupportedMediaType,
            IdempotencyKeyReused,
            TooManyRequests,
            StoreUnavailable,
            ShuttingDown,
            HubFull,
            TooManyConnections,
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                if a.as_str() == b.as_str() {
                    assert_eq!((*a, *b), (TooManyTopics, HubFull), "{a:?} and {b:?} share a string");
                    assert_ne!(a.status(), b.status(), "{a:?} and {b:?} must differ by status");
                }
            }
        }
    }
}
