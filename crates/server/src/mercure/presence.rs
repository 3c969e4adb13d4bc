//! Presence, Mercure's way (`--mercure-subscriptions`): every connect and
//! disconnect is a private update on
//! `/.well-known/mercure/subscriptions/{topic}/{subscriber}`, one per
//! selector, through the door's own history (so it has an id and can be
//! resumed like any update); and `GET /.well-known/mercure/subscriptions`
//! lists the subscriptions open on this node.
//!
//! The list holds open streams only, so it is bounded by the server's
//! connection and selector limits.

use std::{collections::BTreeMap, sync::Arc};

use herald_core::{EventDraft, Hub, MercureMeta, Publish};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio_util::task::TaskTracker;

use super::Door;

/// Where subscription topics live.
pub const SUBSCRIPTIONS_PATH: &str = "/.well-known/mercure/subscriptions";

/// One selector of one open stream.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The selector as the subscriber sent it.
    pub selector: String,
    /// The subscriber's token's `payload`.
    pub payload: Option<Value>,
}

/// The subscriptions open on this node, by subscriber.
#[derive(Debug, Default)]
pub struct Presence {
    open: Mutex<BTreeMap<String, Vec<Entry>>>,
}

impl Presence {
    /// Every open subscription: `(subscriber, entry)`, in subscriber order.
    pub fn list(&self) -> Vec<(String, Entry)> {
        let open = self.open.lock();
        open.iter().flat_map(|(subscriber, entries)| entries.iter().map(|e| (subscriber.clone(), e.clone()))).collect()
    }
}

/// A stream's presence: announced when it opens, withdrawn when it is
/// dropped (with the stream).
pub struct PresenceGuard {
    door: Arc<Door>,
    hub: Hub,
    tasks: TaskTracker,
    subscriber: String,
    entries: Vec<Entry>,
}

impl PresenceGuard {
    /// Lists the stream and publishes its connect updates; the guard
    /// withdraws both when dropped.
    pub async fn open(
        door: &Arc<Door>,
        hub: &Hub,
        tasks: &TaskTracker,
        selectors: &[String],
        payload: Option<Value>,
    ) -> Self {
        let subscriber = format!("urn:uuid:{}", uuid_v4());
        let entries: Vec<Entry> =
            selectors.iter().map(|selector| Entry { selector: selector.clone(), payload: payload.clone() }).collect();
        door.presence.open.lock().insert(subscriber.clone(), entries.clone());
        let guard = Self { door: Arc::clone(door), hub: hub.clone(), tasks: tasks.clone(), subscriber, entries };
        if let Err(error) = guard.hub.submit(guard.updates(true)).await {
            tracing::warn!(%error, "the Mercure door could not publish a subscription's connect updates");
        }
        guard
    }

    /// The connect (or disconnect) updates of every selector, in one request.
    fn updates(&self, active: bool) -> Publish {
        let drafts = self
            .entries
            .iter()
            .map(|entry| {
                let topic = subscription_topic(&entry.selector, &self.subscriber);
                let mut body = json!({
                    "@context": "https://mercure.rocks/",
                    "id": topic,
                    "type": "Subscription",
                    "topic": entry.selector,
                    "subscriber": self.subscriber,
                    "active": active,
                });
                if let (Some(payload), Some(body)) = (&entry.payload, body.as_object_mut()) {
                    body.insert("payload".into(), payload.clone());
                }
                let meta = MercureMeta::new(vec![topic], true, None);
                let mut draft = EventDraft::new(self.door.topic.clone(), body.to_string());
                draft.mercure = Some(Arc::new(meta));
                draft
            })
            .collect();
        Publish::new(drafts)
    }
}

impl Drop for PresenceGuard {
    fn drop(&mut self) {
        self.door.presence.open.lock().remove(&self.subscriber);
        let (hub, updates) = (self.hub.clone(), self.updates(false));
        if tokio::runtime::Handle::try_current().is_ok() {
            self.tasks.spawn(async move {
                if let Err(error) = hub.submit(updates).await {
                    tracing::debug!(%error, "the Mercure door could not publish a subscription's disconnect updates");
                }
            });
        }
    }
}

/// `/.well-known/mercure/subscriptions/{topic}/{subscriber}`, both
/// percent-encoded as an RFC 6570 simple expansion.
pub fn subscription_topic(selector: &str, subscriber: &str) -> String {
    format!("{SUBSCRIPTIONS_PATH}/{}/{}", encode(selector), encode(subscriber))
}

/// Percent-encodes all but RFC 3986's unreserved characters.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A random (version 4) UUID's text.
fn uuid_v4() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_encoded_as_simple_expansions() {
        assert_eq!(
            subscription_topic("https://example.com/books/{id}", "urn:uuid:1"),
            "/.well-known/mercure/subscriptions/https%3A%2F%2Fexample.com%2Fbooks%2F%7Bid%7D/urn%3Auuid%3A1"
        );
        assert_eq!(encode("é a"), "%C3%A9%20a");
        let id = uuid_v4();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
    }
}
