//! The live event feed: a ring of the last [`RING_SIZE`] events plus a broadcast channel,
//! so a subscriber can replay what it missed (Last-Event-ID) and then follow.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;

/// Events kept for replay.
pub const RING_SIZE: usize = 1024;

/// One event. `id` increases by one per event for the life of a warden process.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventEnvelope {
    pub id: u64,
    /// `request.pending`, `request.decided`, `request.started`, `request.finished`,
    /// `control`, `policy.reloaded`.
    pub kind: String,
    pub data: Value,
}

/// What a new subscriber gets.
#[derive(Debug)]
pub struct Subscription {
    /// Events newer than the given id still in the ring, oldest first.
    pub replay: Vec<EventEnvelope>,
    /// Everything emitted after the replay.
    pub live: broadcast::Receiver<EventEnvelope>,
    /// The given id is older than the ring (or from another warden run): events were
    /// missed and the client should start over.
    pub reset: bool,
}

pub(crate) struct EventHub {
    inner: Mutex<Ring>,
    tx: broadcast::Sender<EventEnvelope>,
}

struct Ring {
    next_id: u64,
    events: VecDeque<EventEnvelope>,
}

impl EventHub {
    pub(crate) fn new() -> EventHub {
        EventHub {
            inner: Mutex::new(Ring {
                next_id: 1,
                events: VecDeque::with_capacity(RING_SIZE),
            }),
            tx: broadcast::channel(RING_SIZE).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends an event and sends it to subscribers. Ring and channel are updated under
    /// one lock, so a subscriber's replay and live stream never overlap or leave a gap.
    pub(crate) fn emit(&self, kind: &str, data: Value) -> u64 {
        let mut ring = self.lock();
        let id = ring.next_id;
        ring.next_id += 1;
        let ev = EventEnvelope {
            id,
            kind: kind.to_owned(),
            data,
        };
        if ring.events.len() == RING_SIZE {
            ring.events.pop_front();
        }
        ring.events.push_back(ev.clone());
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(ev);
        id
    }

    pub(crate) fn subscribe(&self, last_event_id: Option<u64>) -> Subscription {
        let ring = self.lock();
        let live = self.tx.subscribe();
        let newest = ring.next_id - 1;
        let oldest = ring.events.front().map_or(ring.next_id, |e| e.id);
        let (replay, reset) = match last_event_id {
            None => (Vec::new(), false),
            // An id this run never handed out: another run's; start over.
            Some(last) if last > newest => (ring.events.iter().cloned().collect(), true),
            Some(last) => {
                let reset = last + 1 < oldest;
                let replay = ring
                    .events
                    .iter()
                    .filter(|e| e.id > last)
                    .cloned()
                    .collect();
                (replay, reset)
            }
        };
        Subscription {
            replay,
            live,
            reset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_returns_newer_events_and_resets_past_the_ring() {
        let hub = EventHub::new();
        for i in 0..(RING_SIZE as u64 + 10) {
            hub.emit("control", serde_json::json!({ "n": i }));
        }
        let s = hub.subscribe(Some(RING_SIZE as u64 + 5));
        assert!(!s.reset);
        let ids: Vec<u64> = s.replay.iter().map(|e| e.id).collect();
        assert_eq!(
            ids,
            (RING_SIZE as u64 + 6..=RING_SIZE as u64 + 10).collect::<Vec<_>>()
        );
        // Event 11 is the oldest kept; a client that saw 10 missed nothing.
        let s = hub.subscribe(Some(10));
        assert!(!s.reset);
        assert_eq!(s.replay.len(), RING_SIZE);
        let s = hub.subscribe(Some(9));
        assert!(s.reset);
        assert_eq!(s.replay.first().unwrap().id, 11);
        let s = hub.subscribe(Some(99_999));
        assert!(s.reset);
        let s = hub.subscribe(None);
        assert!(s.replay.is_empty() && !s.reset);
    }

    #[tokio::test]
    async fn live_events_follow_the_replay_without_gap() {
        let hub = EventHub::new();
        hub.emit("a", Value::Null);
        let mut s = hub.subscribe(Some(0));
        hub.emit("b", Value::Null);
        assert_eq!(s.replay.len(), 1);
        assert_eq!(s.live.recv().await.unwrap().id, 2);
    }
}
