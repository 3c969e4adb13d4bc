//! Events: what a publisher hands in ([`EventDraft`]) and what the hub hands
//! out ([`Event`], with its SSE frame encoded once and shared by every reader).

use std::{fmt, str::FromStr, sync::Arc};

use bytes::Bytes;

use crate::{EventId, MercureMeta, TopicName, sse};

/// The longest event type, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 128;

/// The prefix of the hub's own event types (`herald.gap`, `herald.expired`).
pub const RESERVED_PREFIX: &str = "herald.";

/// Why a string is not a usable event type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventTypeError {
    /// Empty; leave the type out instead (it then is `message`).
    #[error("event type is empty; leave it out to send a plain `message`")]
    Empty,
    /// Longer than [`MAX_EVENT_TYPE_LEN`].
    #[error("event type is {0} bytes long; the limit is 128")]
    TooLong(usize),
    /// Holds CR, LF or NUL, which would end or corrupt the SSE field.
    #[error("event type contains CR, LF or NUL, which cannot appear in an SSE field")]
    ControlChar,
    /// Starts with `herald.`, which belongs to the hub.
    #[error("event types starting with `herald.` are reserved for the hub")]
    Reserved,
}

/// A validated SSE event type: never empty, never CR, LF or NUL.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EventType(Arc<str>);

impl EventType {
    /// Validates a type a publisher sent; rejects the reserved `herald.` ones.
    pub fn new(name: &str) -> Result<Self, EventTypeError> {
        if name.starts_with(RESERVED_PREFIX) {
            return Err(EventTypeError::Reserved);
        }
        Self::any(name)
    }

    /// Validates a type, allowing the hub's own `herald.` types.
    pub(crate) fn any(name: &str) -> Result<Self, EventTypeError> {
        if name.is_empty() {
            return Err(EventTypeError::Empty);
        }
        if name.len() > MAX_EVENT_TYPE_LEN {
            return Err(EventTypeError::TooLong(name.len()));
        }
        if name.bytes().any(|b| matches!(b, b'\r' | b'\n' | b'\0')) {
            return Err(EventTypeError::ControlChar);
        }
        Ok(Self(Arc::from(name)))
    }

    /// The type as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for EventType {
    type Err = EventTypeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Debug for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// An event as a publisher hands it in, before it has an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventDraft {
    /// Where it goes.
    pub topic: TopicName,
    /// The SSE `event:` field; `None` means the default `message`.
    pub event_type: Option<EventType>,
    /// The payload. May hold any characters; line breaks become several
    /// `data:` lines.
    pub data: String,
    /// An optional `retry:` hint for clients, in milliseconds.
    pub retry_ms: Option<u64>,
    /// What a Mercure update carries beside its frame (the door's events only).
    pub mercure: Option<Arc<MercureMeta>>,
}

impl EventDraft {
    /// A plain `message` event with `data` for `topic`.
    pub fn new(topic: TopicName, data: impl Into<String>) -> Self {
        Self { topic, event_type: None, data: data.into(), retry_ms: None, mercure: None }
    }
}

/// A stored event: its id, topic, time and ready-to-send SSE frame.
/// Cloning is cheap; the frame bytes are shared.
#[derive(Clone, PartialEq, Eq)]
pub struct Event {
    /// Its position in the hub's history.
    pub id: EventId,
    /// Its topic.
    pub topic: TopicName,
    /// When it was published, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The complete SSE frame, ending in a blank line. Its `id:` line is
    /// the Mercure update's id for the door's events.
    pub frame: Bytes,
    /// What a Mercure update carries beside its frame (the door's events only).
    pub mercure: Option<Arc<MercureMeta>>,
}

impl Event {
    /// Encodes `draft` under `id`.
    pub fn new(id: EventId, draft: &EventDraft, time_ms: u64) -> Self {
        let (topic, event_type, mercure) = (draft.topic.clone(), draft.event_type.as_ref(), draft.mercure.clone());
        Self::from_parts(id, topic, event_type, &draft.data, draft.retry_ms, time_ms, mercure)
    }

    /// Encodes an event from its stored fields (used when reading a store).
    pub fn from_parts(
        id: EventId,
        topic: TopicName,
        event_type: Option<&EventType>,
        data: &str,
        retry_ms: Option<u64>,
        time_ms: u64,
        mercure: Option<Arc<MercureMeta>>,
    ) -> Self {
        let frame = match &mercure {
            Some(meta) => sse::event_frame(Some(&meta.wire_id(id)), event_type.map(EventType::as_str), data, retry_ms),
            None => {
                let id_text = id.encode();
                let id_text = std::str::from_utf8(&id_text).ok();
                sse::event_frame(id_text, event_type.map(EventType::as_str), data, retry_ms)
            }
        };
        Self { id, topic, time_ms, frame, mercure }
    }

    /// The frame without its `id:` line: what a shared store keeps and
    /// sends to other nodes, so that data lines are split once per event.
    pub fn body(&self) -> &[u8] {
        let id_line = if self.frame.starts_with(b"id: ") { first_line_len(&self.frame) } else { 0 };
        &self.frame[id_line..]
    }

    /// An event from the `body` of its frame ([`Event::body`]): one
    /// allocation, the `id:` line and the body.
    pub fn from_body(
        id: EventId,
        topic: TopicName,
        time_ms: u64,
        body: &[u8],
        mercure: Option<Arc<MercureMeta>>,
    ) -> Self {
        let native = id.encode();
        let wire = mercure.as_ref().map(|meta| meta.wire_id(id));
        let id_text = wire.as_ref().map_or(&native[..], String::as_bytes);
        let mut frame = bytes::BytesMut::with_capacity(id_text.len() + 5 + body.len());
        frame.extend_from_slice(b"id: ");
        frame.extend_from_slice(id_text);
        frame.extend_from_slice(b"\n");
        frame.extend_from_slice(body);
        Self { id, topic, time_ms, frame: frame.freeze(), mercure }
    }

    /// The frame's length in bytes (what the ring budget counts).
    pub fn size(&self) -> usize {
        self.frame.len()
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("id", &self.id.to_string())
            .field("topic", &self.topic)
            .field("frame", &String::from_utf8_lossy(&self.frame))
            .finish()
    }
}

/// The length of the first line of `frame`, its newline included.
fn first_line_len(frame: &[u8]) -> usize {
    frame.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_rebuilt_from_its_body_is_the_same() {
        let topic = TopicName::new("t").unwrap();
        let mut draft = EventDraft::new(topic.clone(), "a\nb");
        draft.event_type = Some(EventType::new("k").unwrap());
        let id = EventId::new(crate::Epoch(7), 42);
        let event = Event::new(id, &draft, 5);
        assert_eq!(event.body(), b"event: k\ndata: a\ndata: b\n\n");
        assert_eq!(Event::from_body(id, topic.clone(), 5, event.body(), None), event);

        let meta = MercureMeta::new(vec!["/a".into()], false, Some("c".into()));
        draft.mercure = Some(Arc::new(meta));
        let update = Event::new(id, &draft, 5);
        assert!(update.frame.starts_with(b"id: c\nevent: k\n"), "{update:?}");
        assert_eq!(Event::from_body(id, topic, 5, update.body(), draft.mercure.clone()), update);
    }

    #[test]
    fn event_types_are_checked() {
        assert!(EventType::new("order.created").is_ok());
        assert_eq!(EventType::new(""), Err(EventTypeError::Empty));
        assert_eq!(EventType::new("a\nb"), Err(EventTypeError::ControlChar));
        assert_eq!(EventType::new("a\rb"), Err(EventTypeError::ControlChar));
        assert_eq!(EventType::new("a\0b"), Err(EventTypeError::ControlChar));
        assert_eq!(EventType::new("herald.gap"), Err(EventTypeError::Reserved));
        assert_eq!(EventType::new(&"t".repeat(129)), Err(EventTypeError::TooLong(129)));
        assert!(EventType::any("herald.gap").is_ok());
    }
}
