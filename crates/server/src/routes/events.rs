//! `GET /topics/{topic}/events` and `GET /events?topic=…`: event streams.

use std::net::IpAddr;

use axum::{
    extract::{Path, State, rejection::PathRejection},
    http::{HeaderMap, Uri, header},
    response::Response,
};
use herald_core::{Resume, Selection, Subscription, TopicPattern};

use crate::{
    error::{ApiError, ErrorCode},
    event_stream::{self, EventFilter, StreamOptions, StreamTies},
    extract::{Caller, ClientIp, query_values},
    routes::{shorten, topic_from_path},
    state::AppState,
    transport::limits::StreamPermit,
};

/// One topic's stream (a `POST` there publishes).
pub const ONE_TOPIC_PATH: &str = "/topics/{topic}/events";
/// A stream of several topics and patterns.
pub const MANY_TOPICS_PATH: &str = "/events";
/// Every route whose `GET` answers with an event stream: the router is built
/// from these, and the hand-written stream path recognises them.
pub const STREAM_PATHS: [&str; 2] = [ONE_TOPIC_PATH, MANY_TOPICS_PATH];

/// A stream of one topic.
pub async fn one_topic(
    State(state): State<AppState>,
    caller: Caller,
    ClientIp(ip): ClientIp,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let topic = topic_from_path(path)?;
    let request = StreamRequest { ip, headers: &headers, uri: &uri };
    open(&state, &caller, &request, vec![TopicPattern::Exact(topic)]).await
}

/// A stream of several topics and patterns: `?topic=a&topic=orders.*`.
pub async fn many(
    State(state): State<AppState>,
    caller: Caller,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let mut patterns = Vec::new();
    for text in query_values(uri.query(), "topic") {
        let pattern = text
            .parse::<TopicPattern>()
            .map_err(|e| ApiError::new(ErrorCode::InvalidTopic, format!("topic `{}`: {e}", shorten(&text))))?;
        patterns.push(pattern);
    }
    if patterns.is_empty() {
        return Err(ApiError::new(
            ErrorCode::MissingTopic,
            "name at least one topic: /events?topic=NAME (repeat it; patterns like orders.* are allowed)",
        ));
    }
    let request = StreamRequest { ip, headers: &headers, uri: &uri };
    open(&state, &caller, &request, patterns).await
}

/// Where a stream request came from and what it said.
struct StreamRequest<'a> {
    ip: IpAddr,
    headers: &'a HeaderMap,
    uri: &'a Uri,
}

async fn open(
    state: &AppState,
    caller: &Caller,
    request: &StreamRequest<'_>,
    patterns: Vec<TopicPattern>,
) -> Result<Response, ApiError> {
    let StreamRequest { ip, headers, uri } = *request;
    let max = state.config.max_topics_per_subscription;
    if patterns.len() > max {
        metrics::counter!("herald_rejected_total", "limit" => "topics_per_subscription").increment(1);
        return Err(ApiError::new(
            ErrorCode::TooManyTopics,
            format!("{} topics in one subscription; the limit is {max}", patterns.len()),
        ));
    }
    let grants = caller.with_public(state);
    if let Some(denied) = patterns.iter().find(|p| !grants.may_subscribe(p)) {
        return Err(caller.refuse(format!("this token may not subscribe to `{denied}`")));
    }
    // The header wins over the query parameter, as the browser sets it on reconnect.
    let header_id = headers.get("last-event-id").map(|v| v.to_str().unwrap_or("\u{fffd}").to_owned());
    let last_id = header_id.or_else(|| query_values(uri.query(), "last_event_id").next());
    let resume = Resume::parse(last_id.as_deref());
    if let Resume::After(id) = resume {
        // Another node may have acknowledged it, ahead of this one's feed:
        // still an exact resume. A store that cannot answer leaves the
        // judgement to what this node has seen.
        let _ = state.hub.learn_committed(id).await;
    }
    let topics: Vec<String> = patterns.iter().map(ToString::to_string).collect();
    let admitted = admit(state, ip, Selection::new(patterns), resume)?;
    let stream = StreamSpec {
        headers,
        subject: caller.0.as_ref().and_then(|g| g.subject.clone()),
        topics,
        expires_at: caller.0.as_ref().and_then(|g| g.expires_at),
        filter: None,
        held: None,
    };
    Ok(respond(state, ip, admitted, stream))
}

/// A stream let in: its place among the client's streams, and its
/// subscription, registered.
pub(crate) struct Admitted {
    permit: StreamPermit,
    subscription: Subscription,
}

/// Lets a stream of `selection` in for `ip`, or says which limit refuses it.
pub(crate) fn admit(state: &AppState, ip: IpAddr, selection: Selection, resume: Resume) -> Result<Admitted, ApiError> {
    let Some(permit) = state.streams.acquire(ip) else {
        metrics::counter!("herald_rejected_total", "limit" => "streams_per_ip").increment(1);
        warn_if_behind_a_proxy(ip, &state.config.trusted_proxies);
        return Err(ApiError::new(
            ErrorCode::TooManyRequests,
            format!(
                "{ip} has {} streams open, the limit (--max-streams-per-ip); close one or subscribe to several topics in one stream",
                state.config.max_streams_per_ip
            ),
        ));
    };
    let subscription = Subscription::open(&state.hub, selection, resume).map_err(|e| {
        metrics::counter!("herald_rejected_total", "limit" => "topics").increment(1);
        ApiError::new(ErrorCode::HubFull, e.to_string())
    })?;
    Ok(Admitted { permit, subscription })
}

/// What a stream is, beyond its subscription: for the dashboard, its end
/// and what it sends.
pub(crate) struct StreamSpec<'a> {
    /// The request's headers (its user agent is listed).
    pub headers: &'a HeaderMap,
    /// The token's subject.
    pub subject: Option<String>,
    /// What it selects, as listed on the dashboard.
    pub topics: Vec<String>,
    /// When its token expires.
    pub expires_at: Option<u64>,
    /// Which events it sends (all when `None`).
    pub filter: Option<Box<dyn EventFilter>>,
    /// What lives as long as it does.
    pub held: Option<Box<dyn std::any::Any + Send>>,
}

/// The response of an admitted stream.
pub(crate) fn respond(state: &AppState, ip: IpAddr, admitted: Admitted, stream: StreamSpec<'_>) -> Response {
    let options = StreamOptions {
        heartbeat: state.config.heartbeat,
        retry: state.config.retry,
        expires_at: stream.expires_at,
        max_duration: state.config.stream_max_duration,
    };
    let user_agent = stream.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let user_agent = user_agent.chars().take(200).collect();
    let registration = state.registry.register(&state.shutdown, ip, user_agent, stream.subject, stream.topics);
    let ties = StreamTies { permit: admitted.permit, registration, held: stream.held };
    let shutdown = state.shutdown.clone();
    event_stream::response(admitted.subscription, stream.filter, options, shutdown, ties)
}

/// A loopback or private peer that hits the per-IP limit is most likely a
/// proxy speaking for many clients: say so once, as every stream behind it
/// counts against one address until `--trusted-proxies` names it.
fn warn_if_behind_a_proxy(ip: IpAddr, trusted: &[IpAddr]) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let local = match ip.to_canonical() {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unique_local() || v6.is_unicast_link_local(),
    };
    if local && !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        let proxies = if trusted.is_empty() { "no --trusted-proxies are set" } else { "it is not a trusted proxy" };
        tracing::warn!(
            "{ip} reached --max-streams-per-ip; it is a loopback or private address and {proxies}: if Herald is \
             behind a proxy, name it with --trusted-proxies so that clients are counted by their own address \
             (X-Forwarded-For); otherwise raise --max-streams-per-ip. Said once."
        );
    }
}
