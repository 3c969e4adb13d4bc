//! Herald's domain: topics, ring buffers, subscriptions, grants and SSE
//! encoding. No HTTP and no SQL live here: where a request carries its token
//! is a rule over plain text ([`find_token`]), shared by the API and the
//! dashboard.
//!
//! Data flow: a publish enters [`Hub::publish`]; the hub's writer makes it
//! durable through the [`EventStore`] (which assigns the [`EventId`]),
//! pushes the encoded [`Event`] into its [`Topic`]'s [`RingBuffer`], and wakes
//! that topic's subscribers. Each [`Subscription`] then takes every frame past
//! its cursor, from the rings or, when it has fallen behind them, the store
//! (through pages shared by the readers of a topic).

mod catch_up;
mod event;
mod grants;
mod hub;
mod id;
mod idempotency;
mod log_throttle;
mod memory_store;
mod name;
mod request_token;
mod ring;
pub mod sse;
mod store;
mod subscription;
mod topic;

pub use event::{Event, EventDraft, EventType, EventTypeError, MAX_EVENT_TYPE_LEN, RESERVED_PREFIX, now_ms};
pub use grants::Grants;
pub use hub::{ConnectionSnapshot, Hub, HubConfig, HubStats, PublishError, Published, SubscribeError, TopicStats};
pub use id::{Epoch, EventId, MalformedId, Resume};
pub use idempotency::{Fingerprint, IdempotencyKey, Publish};
pub use log_throttle::{LOG_REPEAT_INTERVAL, LogThrottle};
pub use memory_store::{MemoryStore, Retention};
pub use name::{MAX_TOPIC_NAME_LEN, TopicError, TopicName, TopicPattern};
pub use request_token::{FoundToken, MalformedAuthorization, TokenSource, find_token};
pub use ring::{RingBuffer, RingLimits, Since};
pub use store::{Appended, EventStore, Gap, ReadLimit, Selection, StoreError, StoreRead, StoredTopic};
pub use subscription::{Delivery, GAP_EVENT, Subscription};
pub use topic::Topic;
