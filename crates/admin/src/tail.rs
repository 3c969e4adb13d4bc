//! `GET /admin/topics/{topic}/tail`: a topic's live events for the topic
//! page, authorised by the operator's sign-in, not by the public API.
//!
//! The tail is an observer in the hub (`Subscription::observe`): it gets
//! every event, in the hub's own SSE frames, but does not count as one of the
//! topic's subscribers, and it is not listed among the open streams. It
//! resumes from `Last-Event-ID` like any stream, and ends with the sign-in.

use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::BytesMut;
use futures_util::StreamExt as _;
use herald_core::{Resume, Selection, Subscription, TopicName, TopicPattern, sse};

use crate::{
    Admin,
    auth::Operator,
    session::{self, Session},
};

/// `GET /admin/topics/{topic}/tail`.
pub(crate) async fn stream(
    State(admin): State<Admin>,
    Operator(grants): Operator,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let topic = match name.parse::<TopicName>() {
        Ok(topic) => topic,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("not a topic name: {e}")).into_response(),
    };
    let last_id = headers.get("last-event-id").map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let selection = Selection::new([TopicPattern::Exact(topic)]);
    let subscription = match Subscription::observe(admin.source.hub(), selection, Resume::parse(last_id)) {
        Ok(subscription) => subscription,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    };
    let opening = sse::comment("herald topic tail open");
    let frames = futures_util::stream::unfold(Some(subscription), |subscription| async move {
        let mut subscription = subscription?;
        match subscription.next().await {
            Ok(delivery) => {
                let mut out = BytesMut::new();
                delivery.frames().for_each(|frame| out.extend_from_slice(frame));
                Some((out.freeze(), Some(subscription)))
            }
            Err(error) => {
                tracing::warn!(%error, "topic tail ended: the store failed while catching up");
                Some((sse::comment("store unavailable; reconnect to resume"), None))
            }
        }
    });
    let frames = futures_util::stream::iter([opening]).chain(frames);
    let session = Session::new(&grants, admin.source.shutdown(), admin.options.heartbeat);
    session::respond(Box::pin(frames), session)
}
