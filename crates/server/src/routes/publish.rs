//! `POST /topics/{topic}/events` and `POST /publish` (batch).

use axum::{
    Json,
    body::Body,
    extract::{Path, State, rejection::PathRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use herald_core::{
    EventDraft, EventType, EventTypeError, Grants, IdempotencyKey, Publish, PublishError, Published, StoreError,
    TopicName,
};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use serde::Deserialize;
use serde_json::Value;

use crate::{
    error::{ApiError, ErrorCode},
    extract::Caller,
    routes::{path_text, shorten},
    state::AppState,
};

/// Longest accepted `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// What a JSON body of the single-event route looks like, for messages.
const EVENT_SHAPE: &str = r#"{"data": ..., "event"?: "type", "retry"?: ms}"#;

/// What a batch looks like, for messages.
const BATCH_SHAPE: &str = r#"a JSON array of {"topic": "name", "data": ..., "event"?: "type", "retry"?: ms}"#;

/// A JSON publish body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    data: Option<Value>,
    event: Option<String>,
    retry: Option<u64>,
}

/// One item of a batch publish.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchItem {
    topic: String,
    data: Option<Value>,
    event: Option<String>,
    retry: Option<u64>,
}

/// Where in a request an error is: nothing for a single publish, the item's
/// index in a batch. Formatted only when there is an error to report.
#[derive(Debug, Clone, Copy)]
struct At(Option<usize>);

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(index) => write!(f, "item {index}: "),
            None => Ok(()),
        }
    }
}

/// What a publisher hears of each event: its id and topic.
#[derive(serde::Serialize)]
struct Receipt<'a> {
    id: String,
    topic: &'a TopicName,
}

impl<'a> From<&'a Published> for Receipt<'a> {
    fn from(published: &'a Published) -> Self {
        Self { id: published.id.to_string(), topic: &published.topic }
    }
}

enum Payload {
    Json(bytes::Bytes),
    Text(String),
}

/// Publishes one event.
pub async fn one(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    counted(publish_one(&state, caller, path, &headers, body).await)
}

/// Publishes several events in one durable commit: all or none.
pub async fn batch(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    counted(publish_batch(&state, caller, &headers, body).await)
}

/// Counts a publish request that did not succeed, by whose fault it is: the
/// request's (`rejected`, 4xx) or the server's (`failed`, 5xx). Events
/// created and duplicates are the hub's counts.
fn counted(result: Result<Response, ApiError>) -> Result<Response, ApiError> {
    if let Err(error) = &result {
        let outcome = if error.code().status().is_client_error() { "rejected" } else { "failed" };
        metrics::counter!("herald_events_published_total", "result" => outcome).increment(1);
    }
    result
}

async fn publish_one(
    state: &AppState,
    caller: Result<Caller, ApiError>,
    path: Result<Path<String>, PathRejection>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = caller?;
    let grants = caller.require()?;
    let topic = exact_topic(&path_text(path)?, At(None))?;
    if !grants.may_publish(&topic) {
        return Err(caller.refuse(format!("this token may not publish to `{topic}`")));
    }
    let key = idempotency_key(headers)?;
    let draft = match read_payload(state, headers, body).await? {
        Payload::Text(data) => EventDraft::new(topic, data),
        Payload::Json(bytes) => {
            let body = event_body(&bytes)?;
            draft(topic, body.data, body.event, body.retry, At(None))?
        }
    };
    check_size(state, &draft, At(None))?;
    let published = submit(state, grants, key, vec![draft]).await?;
    let Some(published) = published.first() else {
        return Err(publish_error(PublishError::ShuttingDown));
    };
    Ok(receipt_response(published.duplicate, Json(Receipt::from(published))))
}

/// Commits `drafts` as one request under the caller's idempotency key.
async fn submit(
    state: &AppState,
    grants: &Grants,
    key: Option<String>,
    drafts: Vec<EventDraft>,
) -> Result<Vec<Published>, ApiError> {
    let key = key.map(|key| IdempotencyKey::new(grants, key, &drafts));
    let started = std::time::Instant::now();
    let published = state.hub.submit(Publish { drafts, key }).await.map_err(publish_error)?;
    crate::metrics::hot_path().publish_latency.record(started.elapsed().as_secs_f64());
    Ok(published)
}

/// 201 with `body`; a replay of an earlier request says so in a header.
fn receipt_response(replayed: bool, body: impl IntoResponse) -> Response {
    let mut response = (StatusCode::CREATED, body).into_response();
    if replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

async fn publish_batch(
    state: &AppState,
    caller: Result<Caller, ApiError>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = caller?;
    let grants = caller.require()?;
    let key = idempotency_key(headers)?;
    let Payload::Json(bytes) = read_payload(state, headers, body).await? else {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!("a batch is {BATCH_SHAPE}: send Content-Type: application/json"),
        ));
    };
    if first_byte(&bytes) != Some(b'[') {
        return Err(ApiError::new(ErrorCode::InvalidJson, format!("a batch is {BATCH_SHAPE}")));
    }
    let items: Vec<BatchItem> = parse_json(&bytes, BATCH_SHAPE)?;
    if items.is_empty() {
        return Err(ApiError::new(ErrorCode::EmptyBatch, "the batch is empty; send at least one event"));
    }
    if items.len() > state.config.max_batch_events {
        return Err(ApiError::new(
            ErrorCode::BatchTooLarge,
            format!(
                "the batch has {} events; the limit is {} (--max-batch-events)",
                items.len(),
                state.config.max_batch_events
            ),
        ));
    }
    let mut drafts = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let at = At(Some(index));
        let topic = exact_topic(&item.topic, at)?;
        if !grants.may_publish(&topic) {
            return Err(caller.refuse(format!("{at}this token may not publish to `{topic}`")));
        }
        let draft = draft(topic, item.data, item.event, item.retry, at)?;
        check_size(state, &draft, at)?;
        drafts.push(draft);
    }
    let published = submit(state, grants, key, drafts).await?;
    let receipts: Vec<Receipt<'_>> = published.iter().map(Receipt::from).collect();
    Ok(receipt_response(published.iter().any(|p| p.duplicate), Json(receipts)))
}

/// The topic to publish to: one exact name. Only subscriptions take patterns.
fn exact_topic(text: &str, at: At) -> Result<TopicName, ApiError> {
    let topic: TopicName = text.parse().map_err(|e| {
        let shown = shorten(text);
        let message = if text.contains('*') {
            format!(
                "{at}`{shown}` is a pattern; publishing needs one exact topic name \
                 (patterns are for subscribing: GET /events?topic={shown})"
            )
        } else {
            format!("{at}`{shown}`: {e}")
        };
        ApiError::new(ErrorCode::InvalidTopic, message)
    })?;
    if topic.is_hub_owned() {
        return Err(ApiError::new(
            ErrorCode::InvalidTopic,
            format!("{at}`{topic}` belongs to the hub; Mercure updates are published on /.well-known/mercure"),
        ));
    }
    Ok(topic)
}

/// The JSON body of the single-event route: an object. An array is a batch,
/// which has a route of its own.
fn event_body(bytes: &[u8]) -> Result<PublishBody, ApiError> {
    match first_byte(bytes) {
        Some(b'{') => parse_json(bytes, EVENT_SHAPE),
        Some(b'[') => Err(ApiError::new(
            ErrorCode::InvalidJson,
            format!(
                "a JSON array is a batch: send it to POST /publish as {BATCH_SHAPE}; this route takes one event, {EVENT_SHAPE}"
            ),
        )),
        _ => Err(ApiError::new(
            ErrorCode::InvalidJson,
            format!(
                "the body must be a JSON object, {EVENT_SHAPE}; to publish a bare value, wrap it \
                 (like {{\"data\": \"hello\"}}) or send it as text/plain"
            ),
        )),
    }
}

fn first_byte(bytes: &[u8]) -> Option<u8> {
    bytes.iter().copied().find(|b| !b.is_ascii_whitespace())
}

fn draft(
    topic: TopicName,
    data: Option<Value>,
    event: Option<String>,
    retry: Option<u64>,
    at: At,
) -> Result<EventDraft, ApiError> {
    let data = match data {
        None => {
            return Err(ApiError::new(
                ErrorCode::MissingData,
                format!("{at}the JSON body needs a `data` field (a string or any JSON value)"),
            ));
        }
        Some(Value::String(text)) => text,
        Some(value) => value.to_string(),
    };
    let event_type = event
        .map(|name| {
            EventType::new(&name).map_err(|e| {
                let code = if e == EventTypeError::Reserved {
                    ErrorCode::ReservedEventType
                } else {
                    ErrorCode::InvalidEventType
                };
                ApiError::new(code, format!("{at}event type `{}`: {e}", shorten(&name)))
            })
        })
        .transpose()?;
    Ok(EventDraft { topic, event_type, data, retry_ms: retry, mercure: None })
}

fn check_size(state: &AppState, draft: &EventDraft, at: At) -> Result<(), ApiError> {
    if draft.data.len() > state.config.max_event_bytes {
        return Err(ApiError::new(
            ErrorCode::EventTooLarge,
            format!(
                "{at}the event data is {} bytes; the limit is {} (--max-event-bytes)",
                draft.data.len(),
                state.config.max_event_bytes
            ),
        ));
    }
    Ok(())
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], shape: &str) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        // serde names the Rust type it wanted; the client knows JSON shapes.
        let why = e.to_string().replace("struct PublishBody", "an object").replace("struct BatchItem", "an object");
        ApiError::new(ErrorCode::InvalidJson, format!("the body is not {shape}: {why}"))
    })
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let bad = || {
        ApiError::new(
            ErrorCode::InvalidIdempotencyKey,
            format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"),
        )
    };
    let text = value.to_str().map_err(|_| bad())?;
    if text.is_empty() || text.len() > MAX_IDEMPOTENCY_KEY_LEN || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(Some(text.to_owned()))
}

/// The request body, within `--max-body-bytes` (413 past it).
pub(crate) async fn read_body(state: &AppState, headers: &HeaderMap, body: Body) -> Result<bytes::Bytes, ApiError> {
    let limit = state.config.max_body_bytes;
    let too_large = || {
        metrics::counter!("herald_rejected_total", "limit" => "body_size").increment(1);
        ApiError::new(
            ErrorCode::BodyTooLarge,
            format!("the request body is over the {limit}-byte limit (--max-body-bytes)"),
        )
    };
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(ApiError::new(ErrorCode::UnreadableBody, format!("the request body could not be read: {e}"))),
    }
}

/// Reads the body within `--max-body-bytes` and sorts it by content type.
async fn read_payload(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Payload, ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let is_json = essence == "application/json" || essence.ends_with("+json");
    let is_text = essence == "text/plain";
    if !is_json && !is_text {
        let got = if content_type.is_empty() {
            "no Content-Type".to_owned()
        } else {
            format!("Content-Type `{}`", shorten(content_type))
        };
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!("got {got}; send application/json ({{\"data\": ...}}) or text/plain (the body is the data)"),
        ));
    }
    let bytes = read_body(state, headers, body).await?;
    if is_json {
        return Ok(Payload::Json(bytes));
    }
    String::from_utf8(bytes.to_vec())
        .map(Payload::Text)
        .map_err(|_| ApiError::new(ErrorCode::InvalidUtf8, "a text/plain body must be UTF-8"))
}

/// The answer to a publish the hub could not take. Not logged here: the hub
/// reports store failures once for all the requests they refuse.
pub(crate) fn publish_error(error: PublishError) -> ApiError {
    match error {
        PublishError::Store(StoreError::InDoubt(_)) => ApiError::new(
            ErrorCode::StoreInDoubt,
            "the store failed after taking the request: the outcome is unknown; retry with the same Idempotency-Key \
             (a request without one may then be published twice)",
        ),
        PublishError::Store(_) => ApiError::new(
            ErrorCode::StoreUnavailable,
            "the store cannot take events right now; retry shortly (nothing was published)",
        ),
        PublishError::ShuttingDown => {
            ApiError::new(ErrorCode::ShuttingDown, "the server is shutting down; retry on another node or shortly")
        }
        PublishError::KeyReused => ApiError::new(
            ErrorCode::IdempotencyKeyReused,
            "this Idempotency-Key was already used by this caller for a different request (another topic or body); use a new key for a new request",
        ),
    }
}
