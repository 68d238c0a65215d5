//! Feeds a balancer from the dependency view without ever making the view
//! wait. The view publishes each service's healthy endpoints as a whole set
//! into a `watch` channel (the newest set replaces the last, so publishing
//! never blocks, however many changes come and whether or not anyone calls
//! the service); the balancer, when it next looks, turns the difference
//! between the newest set and what it holds into insert and remove changes.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tower::discover::Change;

/// The healthy endpoints of one service: address by instance id.
pub type EndpointSet = BTreeMap<String, String>;

/// The key of an endpoint in the balancer: instance id and address (an
/// instance that moves is a new endpoint).
pub type EndpointKey = (String, String);

/// A `Discover` over the newest [`EndpointSet`] of a `watch` channel,
/// building each new endpoint with `make` (from its instance id and address).
pub struct WatchDiscover<S, F> {
    sets: WatchStream<Arc<EndpointSet>>,
    held: BTreeMap<String, String>,
    changes: VecDeque<Change<EndpointKey, S>>,
    make: F,
}

impl<S, F> WatchDiscover<S, F>
where
    F: FnMut(&str, &str) -> Option<S>,
{
    /// Discovers the sets published on `sets`; `make` builds the endpoint of
    /// an instance id and address (or `None` to skip an unusable one).
    pub fn new(sets: watch::Receiver<Arc<EndpointSet>>, make: F) -> Self {
        WatchDiscover {
            sets: WatchStream::new(sets),
            held: BTreeMap::new(),
            changes: VecDeque::new(),
            make,
        }
    }

    /// Queues the changes that take the balancer from what it holds to `set`.
    fn diff(&mut self, set: &EndpointSet) {
        let gone: Vec<(String, String)> = self
            .held
            .iter()
            .filter(|(id, address)| set.get(*id) != Some(address))
            .map(|(id, address)| (id.clone(), address.clone()))
            .collect();
        for key in gone {
            self.held.remove(&key.0);
            self.changes.push_back(Change::Remove(key));
        }
        for (id, address) in set {
            if self.held.contains_key(id) {
                continue;
            }
            match (self.make)(id, address) {
                Some(service) => {
                    self.held.insert(id.clone(), address.clone());
                    self.changes
                        .push_back(Change::Insert((id.clone(), address.clone()), service));
                }
                None => {
                    tracing::warn!(instance = %id, %address, "skipping an instance with an unusable address")
                }
            }
        }
    }
}

impl<S, F> Stream for WatchDiscover<S, F>
where
    F: FnMut(&str, &str) -> Option<S> + Unpin,
    S: Unpin,
{
    type Item = Result<Change<EndpointKey, S>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(change) = self.changes.pop_front() {
                return Poll::Ready(Some(Ok(change)));
            }
            // Only the newest set matters: older ones are skipped.
            let mut newest = None;
            while let Poll::Ready(next) = Pin::new(&mut self.sets).poll_next(cx) {
                match next {
                    Some(set) => newest = Some(set),
                    // The view is gone (shutdown): keep what is held.
                    None => break,
                }
            }
            match newest {
                Some(set) => self.diff(&set),
                None => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn set(entries: &[(&str, &str)]) -> Arc<EndpointSet> {
        Arc::new(
            entries
                .iter()
                .map(|(id, address)| (id.to_string(), address.to_string()))
                .collect(),
        )
    }

    fn describe(change: &Change<EndpointKey, String>) -> String {
        match change {
            Change::Insert((id, _), service) => format!("+{id}={service}"),
            Change::Remove((id, _)) => format!("-{id}"),
        }
    }

    async fn drain<F: FnMut(&str, &str) -> Option<String> + Unpin>(
        discover: &mut WatchDiscover<String, F>,
    ) -> Vec<String> {
        let mut seen = Vec::new();
        while let Some(Some(Ok(change))) = futures::FutureExt::now_or_never(discover.next()) {
            seen.push(describe(&change));
        }
        seen
    }

    #[tokio::test]
    async fn only_the_difference_to_the_newest_set_is_applied() {
        let (tx, rx) = watch::channel(set(&[("a", "h:1")]));
        let mut discover =
            WatchDiscover::new(rx, |_: &str, address: &str| Some(address.to_owned()));
        assert_eq!(drain(&mut discover).await, ["+a=h:1"]);
        // Many sets in a row, nobody looking: only the last counts.
        for port in 2..1_000 {
            tx.send_replace(set(&[("a", "h:1"), ("b", &format!("h:{port}"))]));
        }
        tx.send_replace(set(&[("b", "h:7"), ("c", "bad")]));
        assert_eq!(drain(&mut discover).await, ["-a", "+b=h:7", "+c=bad"]);
        // An instance that moved is removed, then inserted at its new address.
        tx.send_replace(set(&[("b", "h:8"), ("c", "bad")]));
        assert_eq!(drain(&mut discover).await, ["-b", "+b=h:8"]);
    }

    #[tokio::test]
    async fn unusable_addresses_are_skipped() {
        let (_tx, rx) = watch::channel(set(&[("a", "ok:1"), ("b", "bad")]));
        let mut discover = WatchDiscover::new(rx, |_: &str, address: &str| {
            address.starts_with("ok").then(|| address.to_owned())
        });
        assert_eq!(drain(&mut discover).await, ["+a=ok:1"]);
    }
}
