//! Herald's domain: topics, ring buffers, subscriptions, grants and SSE
//! encoding. No HTTP and no SQL live here: where a request carries its token
//! is a rule over plain text ([`find_token`]), shared by the API and the
//! dashboard.
//!
//! Data flow: a publish enters [`Hub::publish`]; the hub's writer makes it
//! durable through the [`EventStore`] (which assigns the [`EventId`]), then
//! [`Hub::apply`] pushes the encoded [`Event`] into its [`Topic`]'s
//! [`RingBuffer`] and wakes that topic's subscribers. Each [`Subscription`]
//! then takes every frame past its cursor, from the rings or, when it has
//! fallen behind them, the store (through pages shared by the readers of a
//! topic).
//!
//! The core emits no metrics: it counts (see [`HubStats`]) and reports
//! commits to a [`CommitObserver`]; the server exports the figures.

mod catch_up;
mod event;
mod events;
mod grants;
mod hub;
mod id;
mod idempotency;
mod log_throttle;
mod memory_store;
mod mercure_grants;
mod mercure_update;
mod name;
mod registry;
mod request_token;
mod ring;
pub mod sse;
mod stats;
mod store;
mod subscription;
mod topic;
mod topic_selector;
mod writer;

pub use event::{Event, EventDraft, EventType, EventTypeError, MAX_EVENT_TYPE_LEN, RESERVED_PREFIX, now_ms};
pub use events::Events;
pub use grants::Grants;
pub use hub::{Hub, HubConfig};
pub use id::{Epoch, EventId, MalformedId, Resume};
pub use idempotency::{Fingerprint, IdempotencyKey, Publish};
pub use log_throttle::{LOG_REPEAT_INTERVAL, LogThrottle};
pub use memory_store::{MemoryStore, Retention, TopicRetention};
pub use mercure_grants::{MAX_TOKEN_SELECTORS, MERCURE_AUTHORIZATION_DETAIL, MercureClaimError, MercureGrants};
pub use mercure_update::{MERCURE_ID_PREFIX, MercureMeta, ROUTE_MEMO_SLOTS, RouteMemo, parse_mercure_id};
pub use name::{MAX_TOPIC_NAME_LEN, TopicError, TopicName, TopicPattern, is_hub_owned};
pub use registry::SubscribeError;
pub use request_token::{FoundToken, MalformedAuthorization, TokenSource, find_token};
pub use ring::{RingBuffer, RingLimits, Since};
pub use stats::{ConnectionSnapshot, HubStats, TopicStats};
pub use store::{Appended, EventStore, Gap, ReadLimit, Selection, StoreError, StoreRead, StoredTopic};
pub use subscription::{Delivery, GAP_EVENT, Subscription};
pub use topic::Topic;
pub use topic_selector::{CompiledUrlPattern, MAX_TEMPLATE_BYTES, SelectorError, TopicSelector};
pub use writer::{CommitObserver, PublishError, Published};
