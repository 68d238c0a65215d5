//! The watch fan-out: every watcher has a bounded queue. Publishing never
//! blocks: a watcher whose queue is full is sent a final RESOURCE_EXHAUSTED
//! status (into the one slot kept for it) and dropped, so a slow watcher
//! never holds up others nor grows memory; it reconnects and gets a fresh
//! snapshot, so it misses nothing.

use std::collections::HashSet;

use tokio::sync::mpsc;
use tonic::Status;

use crate::model::registry::Change;
use crate::pb::registry::v1 as pb;

/// What a watch stream carries.
pub type WatchItem = Result<pb::WatchEvent, Status>;

/// One connected watcher.
#[derive(Debug)]
struct Watcher {
    /// The watched services; `None` watches all.
    services: Option<HashSet<String>>,
    queue: mpsc::Sender<WatchItem>,
}

/// Every connected watcher.
#[derive(Debug)]
pub struct Watchers {
    watchers: Vec<Watcher>,
    queue_capacity: usize,
}

impl Watchers {
    /// No watchers yet; each will queue up to `queue_capacity` events.
    pub fn new(queue_capacity: usize) -> Self {
        Watchers {
            watchers: Vec::new(),
            queue_capacity: queue_capacity.max(1),
        }
    }

    /// How many watchers are connected.
    pub fn len(&self) -> usize {
        self.watchers.len()
    }

    /// Whether none is connected.
    pub fn is_empty(&self) -> bool {
        self.watchers.is_empty()
    }

    /// Adds a watcher of `services` (all when empty) whose stream starts
    /// with `snapshot`.
    pub fn add(
        &mut self,
        services: &[String],
        snapshot: pb::WatchEvent,
    ) -> mpsc::Receiver<WatchItem> {
        // One slot more than the queue holds, kept for the overflow status.
        let (tx, rx) = mpsc::channel(self.queue_capacity + 1);
        let _ = tx.try_send(Ok(snapshot));
        let services = (!services.is_empty()).then(|| services.iter().cloned().collect());
        self.watchers.push(Watcher {
            services,
            queue: tx,
        });
        rx
    }

    /// Queues `change` for every watcher of its service; drops watchers that
    /// are gone or overflowing. Returns how many watchers were overflowing.
    pub fn publish(&mut self, change: &Change) -> usize {
        self.publish_event(&change.instance.service, pb::WatchEvent::from(change))
    }

    /// Queues `event`, about `service`, for every watcher of the service;
    /// drops watchers that are gone or overflowing. Returns how many
    /// watchers were overflowing.
    pub fn publish_event(&mut self, service: &str, event: pb::WatchEvent) -> usize {
        let mut overflowed = 0;
        self.watchers.retain(|watcher| {
            if watcher
                .services
                .as_ref()
                .is_some_and(|s| !s.contains(service))
            {
                return !watcher.queue.is_closed();
            }
            watcher.offer(event.clone(), &mut overflowed)
        });
        overflowed
    }

    /// Queues a fresh snapshot for every watcher, made by `snapshot` from
    /// the services it watches (empty: all); drops watchers that are gone
    /// or overflowing. Returns how many watchers were overflowing.
    pub fn resend_snapshots(&mut self, snapshot: impl Fn(&[String]) -> pb::WatchEvent) -> usize {
        let mut overflowed = 0;
        self.watchers.retain(|watcher| {
            let services: Vec<String> = watcher.services.iter().flatten().cloned().collect();
            watcher.offer(snapshot(&services), &mut overflowed)
        });
        overflowed
    }
}

impl Watcher {
    /// Queues `event`; returns whether the watcher stays. A watcher with
    /// only the last slot left gets the overflow status instead (counted
    /// in `overflowed`) and goes.
    fn offer(&self, event: pb::WatchEvent, overflowed: &mut usize) -> bool {
        if self.queue.capacity() <= 1 {
            *overflowed += 1;
            let _ = self.queue.try_send(Err(Status::resource_exhausted(format!(
                "watch queue overflowed ({} events behind); reconnect to receive a fresh snapshot",
                self.queue.max_capacity() - 1
            ))));
            return false;
        }
        self.queue.try_send(Ok(event)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::registry::{ChangeKind, Health, Instance};

    fn change(service: &str) -> Change {
        Change {
            kind: ChangeKind::Added,
            instance: Instance::for_test(service, "i", Health::Unknown),
        }
    }

    #[test]
    fn watchers_get_only_their_services_after_the_snapshot() {
        let mut w = Watchers::new(8);
        let mut log_rx = w.add(&["log".into()], pb::WatchEvent::default());
        let mut all_rx = w.add(&[], pb::WatchEvent::default());
        w.publish(&change("grading"));
        w.publish(&change("log"));
        assert!(log_rx.try_recv().is_ok(), "snapshot");
        let event = log_rx.try_recv().unwrap().unwrap();
        assert!(
            matches!(event.event, Some(pb::watch_event::Event::Change(c)) if c.instance.as_ref().is_some_and(|i| i.service == "log"))
        );
        assert!(log_rx.try_recv().is_err());
        assert_eq!(std::iter::from_fn(|| all_rx.try_recv().ok()).count(), 3);
    }

    #[test]
    fn an_overflowing_watcher_gets_resource_exhausted_and_is_dropped_others_are_not_held_up() {
        let mut w = Watchers::new(2);
        let mut slow = w.add(&[], pb::WatchEvent::default());
        let mut fast = w.add(&[], pb::WatchEvent::default());
        let mut overflowed = 0;
        for _ in 0..5 {
            overflowed += w.publish(&change("log"));
            while fast.try_recv().is_ok() {}
        }
        assert_eq!(overflowed, 1);
        assert_eq!(w.len(), 1);
        let items: Vec<_> = std::iter::from_fn(|| slow.try_recv().ok()).collect();
        assert_eq!(items.len(), 3, "snapshot, one event, then the status");
        let status = items.last().unwrap().as_ref().unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    }

    #[test]
    fn closed_watchers_are_removed() {
        let mut w = Watchers::new(2);
        drop(w.add(&[], pb::WatchEvent::default()));
        w.publish(&change("log"));
        assert!(w.is_empty());
    }
}
