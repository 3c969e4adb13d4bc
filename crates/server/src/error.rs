//! The one error type of the HTTP API, and its one mapping to responses:
//! `{"error": {"code": "...", "message": "..."}}` with a fitting status.
//! Internal details are logged, never sent.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use crate::auth::AuthError;

/// Everything a handler can answer with besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No token, or one that cannot be accepted (401).
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    /// The token does not allow this (403).
    #[error("{0}")]
    Forbidden(String),
    /// The request is malformed (400).
    #[error("{message}")]
    BadRequest {
        /// Machine-readable code.
        code: &'static str,
        /// What was wrong, and how to fix it.
        message: String,
    },
    /// No such route or thing (404).
    #[error("{0}")]
    NotFound(String),
    /// The route exists, the method does not (405).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// Too big (413).
    #[error("{message}")]
    TooLarge {
        /// Machine-readable code.
        code: &'static str,
        /// What limit was hit.
        message: String,
    },
    /// Well-formed but refused as it stands (422).
    #[error("{message}")]
    Unprocessable {
        /// Machine-readable code.
        code: &'static str,
        /// Why, and what to send instead.
        message: String,
    },
    /// Wrong content type (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The client was too slow to send its request (408).
    #[error("{message}")]
    TimedOut {
        /// Machine-readable code.
        code: &'static str,
        /// What was late, and which setting bounds it.
        message: String,
    },
    /// A per-client limit was hit (429).
    #[error("{0}")]
    TooManyRequests(String),
    /// The server cannot take this now (503); the client may retry.
    #[error("{message}")]
    Unavailable {
        /// Machine-readable code.
        code: &'static str,
        /// Why.
        message: String,
    },
}

impl ApiError {
    /// A 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest { code, message: message.into() }
    }

    /// A 503 with `code`.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::Unavailable { code, message: message.into() }
    }

    /// The status and machine-readable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unauthorized(AuthError::Missing) => (StatusCode::UNAUTHORIZED, "missing_token"),
            Self::Unauthorized(AuthError::Invalid { .. }) => (StatusCode::UNAUTHORIZED, "invalid_token"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::TooLarge { code, .. } => (StatusCode::PAYLOAD_TOO_LARGE, code),
            Self::Unprocessable { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
            Self::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            Self::TimedOut { code, .. } => (StatusCode::REQUEST_TIMEOUT, code),
            Self::TooManyRequests(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            Self::Unavailable { code, .. } => (StatusCode::SERVICE_UNAVAILABLE, code),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = serde_json::json!({ "error": { "code": code, "message": self.to_string() } });
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            Self::Unauthorized(AuthError::Missing) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"herald\""));
            }
            Self::Unauthorized(AuthError::Invalid { .. }) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"herald\", error=\"invalid_token\""),
                );
            }
            Self::Unavailable { .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}
