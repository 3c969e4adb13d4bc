//! HTTP/1.1 responses written by hand, outside hyper: by the hand-written
//! stream path (`h1_stream`) and to connections over the bound (`accept`).
//! Every one closes its connection, and says so.

use std::{io::Write as _, time::SystemTime};

use axum::{
    http::{header, response::Parts},
    response::Response,
};
use http_body_util::BodyExt as _;

/// The status line and headers, with `date`, `connection: close`, and the
/// body's framing: chunked for a stream, else its length.
pub(super) fn encode_head(response: &Parts, length: Option<usize>) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    let status = response.status;
    let _ = write!(head, "HTTP/1.1 {} {}\r\n", status.as_str(), status.canonical_reason().unwrap_or(""));
    for (name, value) in &response.headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING || name == header::CONNECTION {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    let _ = write!(head, "date: {}\r\n", httpdate::fmt_http_date(SystemTime::now()));
    match length {
        // The connection ends with the stream: say so, or a keep-alive client
        // would send its next request into a closing socket.
        None => head.extend_from_slice(b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"),
        Some(length) => {
            let _ = write!(head, "connection: close\r\ncontent-length: {length}\r\n\r\n");
        }
    }
    head
}

/// A whole response, head and body, ready to write.
pub(super) async fn encode_whole(parts: &Parts, body: axum::body::Body) -> Result<Vec<u8>, axum::Error> {
    let body = body.collect().await?.to_bytes();
    let mut response = encode_head(parts, Some(body.len()));
    response.extend_from_slice(&body);
    Ok(response)
}

/// `response`, whose body is whole already (an error's JSON), ready to write.
pub(super) async fn encode(response: Response) -> Result<Vec<u8>, axum::Error> {
    let (parts, body) = response.into_parts();
    encode_whole(&parts, body).await
}

#[cfg(test)]
mod tests {
    use axum::{
        http::{HeaderValue, StatusCode},
        response::IntoResponse as _,
    };

    use super::*;
    use crate::error::ApiError;
    use crate::error::ErrorCode;

    #[test]
    fn heads_close_the_connection_and_frame_the_body() {
        let (mut parts, ()) = Response::new(()).into_parts();
        parts.status = StatusCode::OK;
        parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("99"));
        let stream = String::from_utf8(encode_head(&parts, None)).unwrap();
        assert!(stream.starts_with("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ndate: "), "{stream}");
        assert!(stream.ends_with("transfer-encoding: chunked\r\nconnection: close\r\n\r\n"), "{stream}");
        assert!(!stream.contains("content-length"), "{stream}");
        let whole = String::from_utf8(encode_head(&parts, Some(12))).unwrap();
        assert!(whole.ends_with("connection: close\r\ncontent-length: 12\r\n\r\n"), "{whole}");
    }

    #[tokio::test]
    async fn an_error_is_its_json_behind_a_head_that_frames_it() {
        let error = ApiError::new(ErrorCode::TooManyConnections, "full");
        let text = String::from_utf8(encode(error.into_response()).await.unwrap()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{head}");
        assert!(head.contains("\r\ncontent-type: application/json\r\n"), "{head}");
        assert!(head.contains("\r\nretry-after: 1\r\n"), "{head}");
        assert!(head.ends_with(&format!("\r\nconnection: close\r\ncontent-length: {}", body.len())), "{head}");
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["code"], "too_many_connections");
    }
}
