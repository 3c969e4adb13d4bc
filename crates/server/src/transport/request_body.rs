//! A request body that must arrive within `--body-timeout` of the end of
//! its head. Late, it fails, whichever handler reads it; the connection then
//! answers 408 `body_timeout` in place of whatever the handler made of the
//! failure, and closes. A client that announces a body and never sends it
//! holds its connection no longer than that.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use axum::{
    body::Body,
    http::{HeaderValue, header},
    response::{IntoResponse as _, Response},
};
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep, sleep_until};

use super::deadline;
use crate::error::{ApiError, ErrorCode};

/// Set once a request's body missed its deadline.
#[derive(Debug, Clone, Default)]
pub struct BodyLate(Arc<AtomicBool>);

impl BodyLate {
    /// Whether the body missed its deadline.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// `body` as the router's body, failing if it is not whole within `timeout`
/// from now; with the flag that says it was late. Bodiless requests cost
/// nothing.
pub fn with_deadline(body: Incoming, timeout: Duration) -> (Body, Option<BodyLate>) {
    if body.is_end_stream() {
        return (Body::new(body), None);
    }
    let late = BodyLate::default();
    let deadline = deadline::after(Instant::now(), timeout);
    let body = Timed { body, deadline, timer: None, late: late.clone() };
    (Body::new(body), Some(late))
}

/// The answer to a request whose body was late: 408, and the connection closes.
pub fn late_response(timeout: Duration) -> Response {
    let message = format!(
        "the request body did not arrive within {} of its head; send it at once, or raise --body-timeout",
        humantime::format_duration(timeout)
    );
    let mut response = ApiError::new(ErrorCode::BodyTimeout, message).into_response();
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

struct Timed {
    body: Incoming,
    deadline: Instant,
    /// Made only when the body is not there at once.
    timer: Option<Pin<Box<Sleep>>>,
    late: BodyLate,
}

impl http_body::Body for Timed {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.late.is_set() {
            return Poll::Ready(Some(Err("request body timed out".into())));
        }
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        let deadline = self.deadline;
        ready!(self.timer.get_or_insert_with(|| Box::pin(sleep_until(deadline))).as_mut().poll(cx));
        self.late.0.store(true, Ordering::Release);
        Poll::Ready(Some(Err("request body timed out".into())))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
