//! Feeds a balancer from the dependency view without ever making the view
//! wait. The view publishes each service's [`Route`] (its healthy endpoints
//! and its traffic policy) as a whole into a `watch` channel (the newest
//! replaces the last, so publishing never blocks, however many changes come
//! and whether or not anyone calls the service); the balancer of one
//! version group, when it next looks, turns the difference between the
//! newest set of that version's endpoints and what it holds into insert
//! and remove changes.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tower::discover::Change;

use crate::model::registry::Instance;
use crate::model::traffic::TrafficPolicy;

/// One healthy instance, as a balancer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Where it is reached, `host:port`.
    pub address: String,
    /// The version it runs.
    pub version: String,
}

/// The healthy endpoints of one service, by instance id.
pub type EndpointSet = BTreeMap<String, Endpoint>;

/// What a channel routes by: the service's healthy endpoints and its
/// traffic policy, published together so that they always agree.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Route {
    /// The healthy endpoints.
    pub endpoints: EndpointSet,
    /// How calls split between their versions.
    pub policy: TrafficPolicy,
}

impl Route {
    /// The route over `instances` (taken as healthy) with `policy`.
    pub fn new<'a>(
        instances: impl IntoIterator<Item = &'a Instance>,
        policy: TrafficPolicy,
    ) -> Self {
        let endpoints = instances
            .into_iter()
            .map(|i| {
                let endpoint = Endpoint {
                    address: i.address.clone(),
                    version: i.version.clone(),
                };
                (i.instance_id.clone(), endpoint)
            })
            .collect();
        Route { endpoints, policy }
    }
}

/// The key of an endpoint in the balancer: instance id and address (an
/// instance that moves is a new endpoint).
pub type EndpointKey = (String, String);

/// A `Discover` over the endpoints of one version in the newest [`Route`]
/// of a `watch` channel, building each new endpoint with `make` (from its
/// instance id and address).
pub struct WatchDiscover<S, F> {
    routes: WatchStream<Arc<Route>>,
    version: String,
    held: BTreeMap<String, String>,
    changes: VecDeque<Change<EndpointKey, S>>,
    make: F,
}

impl<S, F> WatchDiscover<S, F>
where
    F: FnMut(&str, &str) -> Option<S>,
{
    /// Discovers the endpoints running `version` in the routes published
    /// on `routes`; `make` builds the endpoint of an instance id and
    /// address (or `None` to skip an unusable one).
    pub fn new(routes: watch::Receiver<Arc<Route>>, version: &str, make: F) -> Self {
        WatchDiscover {
            routes: WatchStream::new(routes),
            version: version.to_owned(),
            held: BTreeMap::new(),
            changes: VecDeque::new(),
            make,
        }
    }

    /// Queues the changes that take the balancer from what it holds to the
    /// endpoints of its version in `set`.
    fn diff(&mut self, set: &EndpointSet) {
        let version = &self.version;
        let wanted = |id: &String| set.get(id).filter(|e| e.version == *version);
        let gone: Vec<(String, String)> = self
            .held
            .iter()
            .filter(|(id, address)| wanted(id).is_none_or(|e| e.address != **address))
            .map(|(id, address)| (id.clone(), address.clone()))
            .collect();
        for key in gone {
            self.held.remove(&key.0);
            self.changes.push_back(Change::Remove(key));
        }
        for (id, endpoint) in set {
            if self.held.contains_key(id) || endpoint.version != self.version {
                continue;
            }
            let address = &endpoint.address;
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
            // Only the newest route matters: older ones are skipped.
            let mut newest = None;
            while let Poll::Ready(next) = Pin::new(&mut self.routes).poll_next(cx) {
                match next {
                    Some(route) => newest = Some(route),
                    // The view is gone (shutdown): keep what is held.
                    None => break,
                }
            }
            match newest {
                Some(route) => self.diff(&route.endpoints),
                None => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    /// A route over endpoints of version 1, or of the version after `@`
    /// in the address.
    fn set(entries: &[(&str, &str)]) -> Arc<Route> {
        let endpoints = entries
            .iter()
            .map(|(id, address)| {
                let (address, version) = address.split_once('@').unwrap_or((address, "1"));
                let endpoint = Endpoint {
                    address: address.to_owned(),
                    version: version.to_owned(),
                };
                (id.to_string(), endpoint)
            })
            .collect();
        Arc::new(Route {
            endpoints,
            policy: TrafficPolicy::Equal,
        })
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
            WatchDiscover::new(rx, "1", |_: &str, address: &str| Some(address.to_owned()));
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
        // Only the group's version: another version's instances stay out,
        // and one that changes version leaves.
        tx.send_replace(set(&[("b", "h:8"), ("c", "bad@2"), ("d", "h:9@2")]));
        assert_eq!(drain(&mut discover).await, ["-c"]);
    }

    #[tokio::test]
    async fn unusable_addresses_are_skipped() {
        let (_tx, rx) = watch::channel(set(&[("a", "ok:1"), ("b", "bad")]));
        let mut discover = WatchDiscover::new(rx, "1", |_: &str, address: &str| {
            address.starts_with("ok").then(|| address.to_owned())
        });
        assert_eq!(drain(&mut discover).await, ["+a=ok:1"]);
    }
}
