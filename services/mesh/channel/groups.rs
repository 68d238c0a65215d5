//! Version groups: a channel balances over each version of its service
//! apart, one balancer per version its healthy instances run, made when the
//! version first serves a call. A call's group is chosen once, before its
//! first attempt ([`group_for`], from the service's traffic policy), and
//! travels with the request as [`VersionGroup`], so that its retries stay
//! with the same version while it has a healthy instance. A retry whose
//! version has none left (its last instance drained meanwhile) chooses
//! again rather than wait on an empty balancer.
//!
//! With the default policy a call goes to a version in proportion to its
//! healthy instances, which is what one balancer over them all would do.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::watch;
use tonic::body::Body;
use tonic::codegen::http;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

use crate::mesh::channel::discover::Route;
use crate::mesh::channel::outcome::BoxError;
use crate::model::traffic::Choice;

/// The version whose instances serve a call, as a request extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionGroup(pub Arc<str>);

/// The version group chosen for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen<'a> {
    /// The version.
    pub version: &'a str,
    /// The policy named no version with a healthy instance: every healthy
    /// instance was eligible instead.
    pub fallback: bool,
}

/// The group that serves a call on `route`, from two rolls drawn uniformly
/// by the caller: `policy_roll` picks by the policy's weights, and
/// `instance_roll` picks an instance (so its version) when any instance
/// may serve. `None` when the route has no endpoint.
pub fn group_for(route: &Route, policy_roll: u32, instance_roll: u32) -> Option<Chosen<'_>> {
    let available: BTreeSet<&str> = route
        .endpoints
        .values()
        .map(|e| e.version.as_str())
        .collect();
    let fallback = match route.policy.choose(&available, policy_roll) {
        Choice::Version(version) => {
            return Some(Chosen {
                version,
                fallback: false,
            });
        }
        Choice::Any => false,
        Choice::Fallback => true,
    };
    let count = route.endpoints.len();
    let index = usize::try_from(instance_roll).ok()? % count.max(1);
    route.endpoints.values().nth(index).map(|e| Chosen {
        version: e.version.as_str(),
        fallback,
    })
}

/// One version's balanced stack.
pub type GroupStack = BoxCloneSyncService<http::Request<Bytes>, http::Response<Body>, BoxError>;

/// Sends each request to the balancer of its [`VersionGroup`], making it
/// with `make` on first use.
pub struct Groups<F> {
    groups: Arc<Mutex<HashMap<Arc<str>, GroupStack>>>,
    route: watch::Receiver<Arc<Route>>,
    make: Arc<F>,
}

impl<F> Clone for Groups<F> {
    fn clone(&self) -> Self {
        Groups {
            groups: self.groups.clone(),
            route: self.route.clone(),
            make: self.make.clone(),
        }
    }
}

impl<F> Groups<F>
where
    F: Fn(&str) -> GroupStack,
{
    /// Groups over the routes published on `route`, whose balancers `make`
    /// builds, from the version.
    pub fn new(route: watch::Receiver<Arc<Route>>, make: F) -> Self {
        Groups {
            groups: Arc::default(),
            route,
            make: Arc::new(make),
        }
    }

    /// The version that serves a request marked `marked`: that one while
    /// it has a healthy instance, else one chosen again (`None`: no
    /// instance at all).
    fn version_for(&self, marked: Option<Arc<str>>) -> Option<Arc<str>> {
        let route = self.route.borrow();
        let has = |version: &str| route.endpoints.values().any(|e| e.version == version);
        match marked {
            Some(version) if has(&version) => Some(version),
            _ => group_for(&route, rand::random(), rand::random()).map(|c| Arc::from(c.version)),
        }
    }

    /// The stack of `version`, made now if it has none yet.
    fn stack(&self, version: &Arc<str>) -> GroupStack {
        let mut groups = self
            .groups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        groups
            .entry(version.clone())
            .or_insert_with(|| (self.make)(version))
            .clone()
    }

    /// How many groups have been made.
    pub fn len(&self) -> usize {
        self.groups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }

    /// Whether none has.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<F> tower::Service<http::Request<Bytes>> for Groups<F>
where
    F: Fn(&str) -> GroupStack,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = futures::future::BoxFuture<'static, Result<http::Response<Body>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Each group's balancer is made ready inside the call, within the
        // attempt's deadline.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Bytes>) -> Self::Future {
        let marked = request
            .extensions()
            .get::<VersionGroup>()
            .map(|VersionGroup(v)| v.clone());
        let Some(version) = self.version_for(marked) else {
            return Box::pin(async {
                Err(BoxError::from(tonic::Status::unavailable(
                    "no healthy instance is available",
                )))
            });
        };
        let stack = self.stack(&version);
        Box::pin(stack.oneshot(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::channel::discover::Endpoint;
    use crate::model::traffic::TrafficPolicy;

    fn route(versions: &[&str], policy: TrafficPolicy) -> Route {
        Route {
            endpoints: versions
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let endpoint = Endpoint {
                        address: format!("h:{i}"),
                        version: (*v).to_owned(),
                    };
                    (format!("i-{i}"), endpoint)
                })
                .collect(),
            policy,
        }
    }

    /// How many of 1,000 calls (every pair of rolls) each version gets.
    fn shares(route: &Route) -> Vec<(String, usize, usize)> {
        let mut counts: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
        for policy_roll in 0..100 {
            for instance_roll in 0..10 {
                let chosen = group_for(route, policy_roll, instance_roll).unwrap();
                let entry = counts.entry(chosen.version.to_owned()).or_default();
                entry.0 += 1;
                entry.1 += usize::from(chosen.fallback);
            }
        }
        counts.into_iter().map(|(v, (n, f))| (v, n, f)).collect()
    }

    #[test]
    fn the_default_splits_by_instance_and_a_policy_by_weight() {
        let equal = route(&["1", "1", "2", "2", "2"], TrafficPolicy::Equal);
        assert_eq!(shares(&equal), [("1".into(), 400, 0), ("2".into(), 600, 0)]);
        let canary = TrafficPolicy::weights(vec![("1".into(), 90), ("2".into(), 10)]).unwrap();
        assert_eq!(
            shares(&route(&["1", "1", "2", "2", "2"], canary)),
            [("1".into(), 900, 0), ("2".into(), 100, 0)]
        );
        let switched = TrafficPolicy::only("2").unwrap();
        assert_eq!(
            shares(&route(&["1", "2"], switched.clone())),
            [("2".into(), 1000, 0)]
        );
        // The switched-to version gone: every healthy instance, marked.
        assert_eq!(
            shares(&route(&["1", "1"], switched)),
            [("1".into(), 1000, 1000)]
        );
        assert_eq!(group_for(&route(&[], TrafficPolicy::Equal), 1, 1), None);
    }

    #[tokio::test]
    async fn each_call_goes_to_its_groups_balancer_made_once() {
        let (publish, routes) = watch::channel(Arc::new(route(&["1", "2"], TrafficPolicy::Equal)));
        let groups = Groups::new(routes, |version: &str| {
            let version = version.to_owned();
            GroupStack::new(tower::service_fn(move |_: http::Request<Bytes>| {
                let version = version.clone();
                async move {
                    let mut response = http::Response::new(Body::empty());
                    response.headers_mut().insert(
                        "version",
                        http::HeaderValue::from_str(&version).expect("a header value"),
                    );
                    Ok::<_, BoxError>(response)
                }
            }))
        });
        for version in ["1", "2", "1", "1"] {
            let mut request = http::Request::new(Bytes::new());
            request
                .extensions_mut()
                .insert(VersionGroup(Arc::from(version)));
            let response = groups.clone().oneshot(request).await.unwrap();
            assert_eq!(response.headers()["version"], version);
        }
        assert_eq!(groups.len(), 2);
        // Version 1's last instance is gone: a retry marked for it goes to
        // the version that is left.
        publish.send_replace(Arc::new(route(&["2"], TrafficPolicy::Equal)));
        let mut retry = http::Request::new(Bytes::new());
        retry.extensions_mut().insert(VersionGroup(Arc::from("1")));
        let response = groups.clone().oneshot(retry).await.unwrap();
        assert_eq!(response.headers()["version"], "2");
        publish.send_replace(Arc::new(route(&[], TrafficPolicy::Equal)));
        let nowhere = groups.clone().oneshot(http::Request::new(Bytes::new()));
        let error = nowhere.await.unwrap_err();
        assert_eq!(
            error.downcast::<tonic::Status>().unwrap().code(),
            tonic::Code::Unavailable
        );
    }
}
