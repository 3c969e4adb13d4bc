//! A subscriber's view of the hub: a cursor over the topics it selected.
//!
//! The cursor is a hub-wide sequence number. Each step hands out every event
//! of the selected topics with `cursor < seq <= watermark`, in id order, and
//! moves the cursor to the watermark. The subscription is registered before
//! its cursor is read, so replay and live events splice with no gap and no
//! duplicate. Rings serve the common case; when one no longer reaches back
//! (or a pattern subscription resumes and the registry cannot say which
//! topics matched), the step reads the store instead. History the store no
//! longer has becomes a `herald.gap` notice, never a silent hole.
//!
//! A subscription buffers nothing: a reader that stops costs the hub nothing
//! but its place in the topics' waiter lists.

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
};

use bytes::Bytes;

use crate::{
    EventId, Events, Gap, Hub, Resume, Selection, Since, StoreError, SubscribeError, Topic, TopicName,
    catch_up::CaughtUp,
    hub::HubInner,
    registry::{History, Subscriber},
    sse,
};

/// How long a reader waits before it asks a failed store again.
const STORE_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

/// The event type of the notice that history was lost.
pub const GAP_EVENT: &str = "herald.gap";

/// What one step of a subscription hands out.
#[derive(Debug, Default)]
pub struct Delivery {
    /// Hub notices (`herald.gap`) to send before the events.
    pub notices: Vec<Bytes>,
    /// Events in id order, shared with the other readers.
    pub events: Events,
}

impl Delivery {
    /// Every frame to write, notices first.
    pub fn frames(&self) -> impl Iterator<Item = &Bytes> {
        self.notices.iter().chain(self.events.iter().map(|e| &e.frame))
    }

    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.notices.is_empty() && self.events.is_empty()
    }
}

/// An open subscription. Dropping it detaches it from the hub.
#[derive(Debug)]
pub struct Subscription {
    hub: Arc<HubInner>,
    subscriber: Arc<Subscriber>,
    /// The history the cursor belongs to.
    history: History,
    selection: Selection,
    topics: HashMap<TopicName, Arc<Topic>>,
    /// Every event up to here has been handed out (or was before the start).
    cursor: u64,
    /// The hub's watermark when the subscription opened: events above it are
    /// live, those at or below it replayed history.
    opened_at: u64,
    /// A pattern subscription that resumed must read the store until its
    /// cursor reaches this point: topics it matched may have left the registry.
    store_until: u64,
    /// The start is no position the subscriber saw (an id not of ours,
    /// which a notice reports, or `earliest`): per-topic gaps relative to it
    /// would mean nothing, so the first store read's are left out.
    unknown_resume: bool,
    /// The next step is a resume's catch-up (counted as ring or store replay).
    catching_up: bool,
    /// Topics whose events were just handed out: their wake took this
    /// reader, so it must arm them again before it sleeps.
    to_rearm: Vec<TopicName>,
    notices: Vec<Bytes>,
}

impl Subscription {
    /// Subscribes to `selection`, resuming as `resume` says.
    pub fn open(hub: &Hub, selection: Selection, resume: Resume) -> Result<Self, SubscribeError> {
        Self::open_as(hub, selection, resume, false)
    }

    /// As [`Subscription::open`], for an operator watching (the dashboard's
    /// topic tail): it receives the same events, but is not counted as a
    /// subscriber of its topics nor among the hub's open subscriptions.
    pub fn observe(hub: &Hub, selection: Selection, resume: Resume) -> Result<Self, SubscribeError> {
        Self::open_as(hub, selection, resume, true)
    }

    fn open_as(hub: &Hub, selection: Selection, resume: Resume, observer: bool) -> Result<Self, SubscribeError> {
        let inner = Arc::clone(&hub.inner);
        let subscriber = inner.registry.new_subscriber(selection.patterns.clone(), observer);
        let history = inner.registry.history();
        let mut subscription = Self {
            hub: inner,
            subscriber,
            history,
            selection,
            topics: HashMap::new(),
            cursor: 0,
            opened_at: 0,
            store_until: 0,
            unknown_resume: false,
            catching_up: false,
            to_rearm: Vec::new(),
            notices: Vec::new(),
        };
        for name in subscription.selection.topics.clone() {
            let topic = subscription.hub.registry.attach(&name, &subscription.subscriber)?;
            subscription.topics.insert(name, topic);
        }
        // Read only now that every topic would wake us.
        let watermark = subscription.hub.registry.watermark_for(&subscription.subscriber);
        subscription.opened_at = watermark;
        // With a feed, an id this hub knows the store assigned may be above
        // the watermark: the cursor waits there for the feed to catch up.
        let committed = watermark.max(subscription.hub.committed.load(Ordering::Acquire));
        subscription.cursor = match resume {
            Resume::Live => watermark,
            Resume::Earliest => {
                // History trimmed before the start is no news to it.
                subscription.unknown_resume = true;
                0
            }
            Resume::After(id) if id.epoch == history.epoch && id.seq <= committed => id.seq,
            // Gaps relative to the lost history's position would mean nothing.
            Resume::After(id) if Some(id.epoch) == subscription.hub.store.previous_epoch() => {
                subscription.unknown_resume = true;
                subscription.notices.push(subscription.history_lost_notice(id));
                0
            }
            Resume::After(_) | Resume::Unknown => {
                subscription.unknown_resume = true;
                subscription.notices.push(subscription.unknown_resume_notice());
                0
            }
        };
        subscription.subscriber.handed_through.store(subscription.cursor, Ordering::Relaxed);
        subscription.catching_up = subscription.cursor < watermark;
        if !subscription.selection.patterns.is_empty() && subscription.cursor < watermark {
            subscription.store_until = watermark;
        }
        Ok(subscription)
    }

    /// Waits for the next events (or notices) and hands them out. Cancel-safe:
    /// dropping the future loses nothing.
    pub async fn next(&mut self) -> Result<Delivery, StoreError> {
        loop {
            // Arm before reading the watermark: an event after that point
            // either is seen now or wakes us.
            self.rearm();
            let history = self.hub.registry.history();
            if history != self.history {
                self.restart_in(history);
                continue;
            }
            let watermark = self.hub.registry.watermark();
            // After reading the watermark: a topic a pattern attached us to
            // before that point is in `joined` by now.
            self.adopt_joined();
            if watermark > self.cursor {
                let delivery = match self.step(watermark).await {
                    Ok(delivery) => delivery,
                    // A store that recovers by itself (a server it reaches
                    // over the network): the stream waits for it, on its
                    // heartbeats, rather than send every reader to reconnect.
                    Err(_) if self.hub.store.available().is_some() => {
                        tokio::time::sleep(STORE_RETRY).await;
                        continue;
                    }
                    Err(error) => return Err(error),
                };
                if !delivery.is_empty() {
                    return Ok(delivery);
                }
                continue;
            }
            if !self.notices.is_empty() {
                return Ok(Delivery { notices: std::mem::take(&mut self.notices), events: Events::default() });
            }
            self.subscriber.signal.notified().await;
        }
    }

    /// The id of the last event handed out (or of the start position).
    pub fn cursor(&self) -> EventId {
        EventId::new(self.history.epoch, self.cursor)
    }

    /// The store lost history, or may have (a Redis that restarted empty):
    /// says so, then goes on from the start of the new history.
    fn restart_in(&mut self, history: History) {
        let notice = self.history_lost_notice(self.cursor());
        self.notices.push(notice);
        self.history = history;
        self.cursor = 0;
        self.subscriber.handed_through.store(0, Ordering::Relaxed);
        self.catching_up = true;
        self.unknown_resume = false;
        // The registry has pattern subscribers read the store as far as
        // the new history went when it switched.
        self.store_until = 0;
        // Armed with the old history's cursor, which new events may not pass.
        self.to_rearm = self.topics.keys().cloned().collect();
    }

    /// The sequence of the last event published before the subscription
    /// opened: events with a higher `id.seq` were delivered live.
    pub fn opened_at(&self) -> u64 {
        self.opened_at
    }

    /// Events published hub-wide that this subscription has not caught up
    /// with yet (an upper bound on its backlog).
    pub fn lag(&self) -> u64 {
        self.hub.registry.watermark().saturating_sub(self.cursor)
    }

    fn rearm(&mut self) {
        for name in self.to_rearm.drain(..) {
            if let Some(topic) = self.topics.get(&name) {
                topic.arm(self.subscriber.id, &self.subscriber.signal, self.cursor);
            }
        }
    }

    fn adopt_joined(&mut self) {
        let joined = std::mem::take(&mut *self.subscriber.joined.lock());
        for topic in joined {
            self.topics.entry(topic.name().clone()).or_insert(topic);
        }
    }

    /// Collects events in `(cursor, watermark]`, from rings when they all
    /// reach back, else from the store; then moves the cursor.
    async fn step(&mut self, watermark: u64) -> Result<Delivery, StoreError> {
        let after = self.cursor;
        let limit = self.hub.config.delivery_limit();
        let mut events = Events::default();
        let mut from_store =
            after < self.store_until || after < self.subscriber.bypassed_through.load(Ordering::Acquire);
        if !from_store {
            for topic in self.topics.values() {
                if let Since::Behind { .. } = topic.ring().since(after, watermark, &mut events) {
                    from_store = true;
                    break;
                }
            }
        }
        let mut gaps = Vec::new();
        let mut upto = watermark;
        if from_store {
            let read = match self.single_topic() {
                // Boxed: a rare path, kept out of the size of every reader's future.
                Some(topic) => {
                    Box::pin(self.hub.catch_up.read(&*self.hub.store, topic, after, watermark, limit)).await?
                }
                None => {
                    let read = self.hub.store.read(&self.selection, after, watermark, limit).await?;
                    CaughtUp { through: read.reaches(watermark), events: read.events.into(), gaps: read.gaps }
                }
            };
            if read.events.iter().any(|e| e.id.epoch != self.history.epoch) {
                // The store moved to another history before the hub did;
                // the next step sees the switch.
                tokio::task::yield_now().await;
                return Ok(Delivery::default());
            }
            upto = read.through;
            if !self.unknown_resume {
                gaps = read.gaps.iter().map(|gap| self.gap_notice(gap, after)).collect();
            }
            events = read.events;
        } else {
            events.sort_by_seq();
            let fitting = limit.fitting(events.iter());
            if fitting < events.len() {
                events.truncate(fitting);
                upto = events.last().map_or(watermark, |e| e.id.seq);
            }
        }
        if self.hub.registry.history() != self.history {
            // Some of this may be of the new history: dropped, and the next
            // step restarts.
            return Ok(Delivery::default());
        }
        // Taken only now: a step dropped while it read the store keeps them.
        let mut notices = std::mem::take(&mut self.notices);
        notices.extend(gaps);
        let counters = &self.hub.counters;
        if self.catching_up {
            let replays = if from_store { &counters.replays_store } else { &counters.replays_ring };
            replays.fetch_add(1, Ordering::Relaxed);
            self.catching_up = false;
        }
        counters.delivered.fetch_add(events.len() as u64, Ordering::Relaxed);
        counters.gaps.fetch_add(notices.len() as u64, Ordering::Relaxed);
        self.unknown_resume = false;
        self.cursor = upto;
        self.subscriber.handed_through.store(upto, Ordering::Relaxed);
        for event in events.iter() {
            // A step's events are of few topics, and names compare by pointer first.
            if !self.to_rearm.contains(&event.topic) {
                self.to_rearm.push(event.topic.clone());
            }
        }
        Ok(Delivery { notices, events })
    }

    /// The topic, when the subscription is to exactly one: its catch-up
    /// reads are shared with the topic's other readers.
    fn single_topic(&self) -> Option<&TopicName> {
        match (&self.selection.topics[..], &self.selection.patterns[..]) {
            ([topic], []) => Some(topic),
            _ => None,
        }
    }

    fn id_text(&self, seq: u64) -> String {
        EventId::new(self.history.epoch, seq).to_string()
    }

    fn gap_notice(&self, gap: &Gap, after: u64) -> Bytes {
        let data = serde_json::json!({
            "reason": "history_trimmed",
            "topic": gap.topic,
            "after": self.id_text(after),
            "through": self.id_text(gap.through),
            "message": "events of this topic after `after` up to and including `through` are no longer retained",
        });
        sse::event_frame(None, Some(GAP_EVENT), &data.to_string(), None)
    }

    /// The store lost the history `after` belongs to.
    fn history_lost_notice(&self, after: EventId) -> Bytes {
        let data = serde_json::json!({
            "reason": "history_lost",
            "topics": self.selection.describe(),
            "epoch_before": after.epoch.to_string(),
            "after": after.to_string(),
            "message": "the store lost history (it restarted without it, or rolled back); \
                        every event of its new history follows",
        });
        sse::event_frame(None, Some(GAP_EVENT), &data.to_string(), None)
    }

    fn unknown_resume_notice(&self) -> Bytes {
        let data = serde_json::json!({
            "reason": "unknown_last_event_id",
            "topics": self.selection.describe(),
            "message": "the Last-Event-ID is not from this hub's history; every retained event follows",
        });
        sse::event_frame(None, Some(GAP_EVENT), &data.to_string(), None)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.registry.release(&self.subscriber, self.topics.drain().map(|(_, topic)| topic));
    }
}
