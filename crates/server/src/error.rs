//! The one error type of the HTTP API, and its one mapping to responses:
//! `{"error": {"code": "...", "message": "..."}}` with a fitting status.
//! Internal details are logged, never sent.
//!
//! Every code the API answers with is an [`ErrorCode`], and each code says
//! its status in one table (`error_codes!` below); handlers name a code and
//! a message, never a status.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use crate::auth::AuthError;

/// Declares [`ErrorCode`] from one table: each row a variant, its status
/// and its string, so no second list can fall out of step.
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $variant:ident => $status:ident, $code:literal;)*) => {
        /// A machine-readable error code of the public API, with the one
        /// status it is answered with. The strings are public (clients and
        /// tests outside the crates read them): never change one.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode {
            $($(#[doc = $doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code.
            pub const ALL: &[Self] = &[$(Self::$variant),*];

            /// The HTTP status this code is answered with.
            pub fn status(self) -> StatusCode {
                match self {
                    $(Self::$variant => StatusCode::$status,)*
                }
            }

            /// The code as clients read it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $code,)*
                }
            }
        }
    };
}

error_codes! {
    /// No token where one is needed.
    MissingToken => UNAUTHORIZED, "missing_token";
    /// A token that cannot be accepted.
    InvalidToken => UNAUTHORIZED, "invalid_token";
    /// The token does not allow this.
    Forbidden => FORBIDDEN, "forbidden";
    /// A topic name or pattern that is not one.
    InvalidTopic => BAD_REQUEST, "invalid_topic";
    /// `GET /events` without a `topic`.
    MissingTopic => BAD_REQUEST, "missing_topic";
    /// `?limit=` out of range.
    InvalidLimit => BAD_REQUEST, "invalid_limit";
    /// A JSON body that is not the expected shape.
    InvalidJson => BAD_REQUEST, "invalid_json";
    /// A batch without events.
    EmptyBatch => BAD_REQUEST, "empty_batch";
    /// A JSON event without `data`.
    MissingData => BAD_REQUEST, "missing_data";
    /// An event type that is not one.
    InvalidEventType => BAD_REQUEST, "invalid_event_type";
    /// An event type in the hub's own `herald.` namespace.
    ReservedEventType => BAD_REQUEST, "reserved_event_type";
    /// An `Idempotency-Key` that is not one.
    InvalidIdempotencyKey => BAD_REQUEST, "invalid_idempotency_key";
    /// A Mercure update's `id` cannot be used.
    InvalidId => BAD_REQUEST, "invalid_id";
    /// A Mercure update's `retry` is not a number of milliseconds.
    InvalidRetry => BAD_REQUEST, "invalid_retry";
    /// A Mercure subscriber's parameter is unknown or malformed.
    InvalidRequest => BAD_REQUEST, "invalid_request";
    /// A body that failed while being read.
    UnreadableBody => BAD_REQUEST, "unreadable_body";
    /// A text body that is not UTF-8.
    InvalidUtf8 => BAD_REQUEST, "invalid_utf8";
    /// More topics in one subscription than `--max-topics-per-subscription`.
    TooManyTopics => BAD_REQUEST, "too_many_topics";
    /// No such route or thing.
    NotFound => NOT_FOUND, "not_found";
    /// The route exists, the method does not.
    MethodNotAllowed => METHOD_NOT_ALLOWED, "method_not_allowed";
    /// The body did not arrive within `--body-timeout`.
    BodyTimeout => REQUEST_TIMEOUT, "body_timeout";
    /// More events in a batch than `--max-batch-events`.
    BatchTooLarge => PAYLOAD_TOO_LARGE, "batch_too_large";
    /// Event data over `--max-event-bytes`.
    EventTooLarge => PAYLOAD_TOO_LARGE, "event_too_large";
    /// A body over `--max-body-bytes`.
    BodyTooLarge => PAYLOAD_TOO_LARGE, "body_too_large";
    /// A body that is neither JSON nor text.
    UnsupportedMediaType => UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type";
    /// An `Idempotency-Key` the caller used for another request.
    IdempotencyKeyReused => UNPROCESSABLE_ENTITY, "idempotency_key_reused";
    /// A per-client limit was hit.
    TooManyRequests => TOO_MANY_REQUESTS, "too_many_requests";
    /// The store cannot take or give events now.
    StoreUnavailable => SERVICE_UNAVAILABLE, "store_unavailable";
    /// The store lost its answer to a publish: it may or may not be stored.
    StoreInDoubt => SERVICE_UNAVAILABLE, "store_in_doubt";
    /// The server is draining.
    ShuttingDown => SERVICE_UNAVAILABLE, "shutting_down";
    /// The hub holds its maximum of topics. Its string is [`Self::TooManyTopics`]'s:
    /// both were published under `too_many_topics` before codes were typed,
    /// and clients read the code, so the status tells them apart.
    HubFull => SERVICE_UNAVAILABLE, "too_many_topics";
    /// The server is at `--max-connections`.
    TooManyConnections => SERVICE_UNAVAILABLE, "too_many_connections";
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
        for (i, a) in ErrorCode::ALL.iter().enumerate() {
            for b in &ErrorCode::ALL[i + 1..] {
                if a.as_str() == b.as_str() {
                    assert_eq!(
                        (*a, *b),
                        (ErrorCode::TooManyTopics, ErrorCode::HubFull),
                        "{a:?} and {b:?} share a string"
                    );
                    assert_ne!(a.status(), b.status(), "{a:?} and {b:?} must differ by status");
                }
            }
        }
    }
}
