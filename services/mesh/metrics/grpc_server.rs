//! The server half of the RED metrics: every gRPC call a daemon serves is
//! counted when it starts and when it ends (by status code), timed from
//! its arrival to the end of its response (a stream's whole life), and
//! counted while in flight. The names are go-grpc-prometheus's, which
//! dashboards already know: `grpc_server_started_total`,
//! `grpc_server_handled_total`, `grpc_server_handling_seconds`, and
//! `grpc_server_in_flight`.
//!
//! Labels name only methods the mesh's contracts define (`proto/`, health
//! and reflection); any other path counts as `unknown`, so a caller cannot
//! grow the metrics without bound by inventing method names.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;
use prost::Message;
use tonic::body::Body;
use tonic::codegen::http;

use crate::mesh::call_end::{self, code_name};
use crate::mesh::metrics::{Metrics, latency_histogram};
use crate::mesh::tls::require::is_grpc;

/// A method, as labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Method {
    grpc_service: String,
    grpc_method: String,
}

/// A method and how its call ended, as labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Handled {
    grpc_service: String,
    grpc_method: String,
    grpc_code: &'static str,
}

/// The server's call metrics, registered once per process.
#[derive(Debug, Clone)]
pub struct GrpcServerMetrics {
    started: Family<Method, Counter>,
    handled: Family<Handled, Counter>,
    handling: Family<Method, Histogram, fn() -> Histogram>,
    in_flight: Family<Method, Gauge>,
    /// Every `/package.Service/Method` path the contracts define.
    known: Arc<HashSet<String>>,
}

impl GrpcServerMetrics {
    /// Registers the server's call metrics in `metrics`.
    pub fn register(metrics: &Metrics) -> Self {
        let this = GrpcServerMetrics {
            started: Family::default(),
            handled: Family::default(),
            handling: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            in_flight: Family::default(),
            known: Arc::new(known_methods()),
        };
        metrics.register(
            "grpc_server_started",
            "gRPC calls the server has started to handle",
            this.started.clone(),
        );
        metrics.register(
            "grpc_server_handled",
            "gRPC calls the server has completed, by status code",
            this.handled.clone(),
        );
        metrics.register_with_unit(
            "grpc_server_handling",
            "Time from a call's arrival to the end of its response (a stream's whole life)",
            Unit::Seconds,
            this.handling.clone(),
        );
        metrics.register(
            "grpc_server_in_flight",
            "gRPC calls being handled now",
            this.in_flight.clone(),
        );
        this
    }

    /// The layer that measures every gRPC call of a server.
    pub fn layer(&self) -> MeasureCallsLayer {
        MeasureCallsLayer {
            metrics: self.clone(),
        }
    }

    /// The labels of the gRPC call `request` makes, if it is one.
    fn method_of<B>(&self, request: &http::Request<B>) -> Option<Method> {
        if !is_grpc(request) {
            return None;
        }
        let path = request.uri().path();
        let method = match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
            Some((service, method)) if self.known.contains(path) => Method {
                grpc_service: service.to_owned(),
                grpc_method: method.to_owned(),
            },
            _ => Method {
                grpc_service: "unknown".to_owned(),
                grpc_method: "unknown".to_owned(),
            },
        };
        Some(method)
    }
}

/// Every method path of the mesh's contracts, health and reflection.
fn known_methods() -> HashSet<String> {
    let sets = [
        crate::pb::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut known = HashSet::new();
    for set in sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(set) else {
            continue;
        };
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let service_name = service.name.unwrap_or_default();
                for method in service.method {
                    known.insert(format!(
                        "/{package}.{service_name}/{}",
                        method.name.unwrap_or_default()
                    ));
                }
            }
        }
    }
    known
}

/// One call being measured.
struct Call {
    metrics: GrpcServerMetrics,
    method: Method,
    started: Instant,
}

impl Call {
    fn start(metrics: GrpcServerMetrics, method: Method) -> Self {
        metrics.started.get_or_create(&method).inc();
        metrics.in_flight.get_or_create(&method).inc();
        Call {
            metrics,
            method,
            started: Instant::now(),
        }
    }

    fn finish(self, code: &'static str) {
        let metrics = &self.metrics;
        metrics.in_flight.get_or_create(&self.method).dec();
        metrics
            .handling
            .get_or_create(&self.method)
            .observe(self.started.elapsed().as_secs_f64());
        metrics
            .handled
            .get_or_create(&Handled {
                grpc_service: self.method.grpc_service,
                grpc_method: self.method.grpc_method,
                grpc_code: code,
            })
            .inc();
    }
}

/// Wraps a server's services with [`MeasureCalls`].
#[derive(Debug, Clone)]
pub struct MeasureCallsLayer {
    metrics: GrpcServerMetrics,
}

impl<S> tower::Layer<S> for MeasureCallsLayer {
    type Service = MeasureCalls<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MeasureCalls {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// Measures the gRPC calls that pass through; other requests pass as they are.
#[derive(Debug, Clone)]
pub struct MeasureCalls<S> {
    inner: S,
    metrics: GrpcServerMetrics,
}

impl<S, B> tower::Service<http::Request<B>> for MeasureCalls<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let Some(method) = self.metrics.method_of(&request) else {
            return Box::pin(self.inner.call(request));
        };
        let call = Call::start(self.metrics.clone(), method);
        let response = self.inner.call(request);
        Box::pin(async move {
            match response.await {
                Ok(response) => Ok(call_end::on_end(response, move |code| {
                    call.finish(code_name(code))
                })),
                Err(error) => {
                    call.finish("UNKNOWN");
                    Err(error)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contracts_methods_are_known_and_others_are_not() {
        let metrics = GrpcServerMetrics::register(&Metrics::new());
        let request = |path: &str| {
            http::Request::builder()
                .uri(path)
                .header(http::header::CONTENT_TYPE, "application/grpc")
                .body(())
                .unwrap()
        };
        let list = metrics
            .method_of(&request("/gradebook.registry.v1.Registry/List"))
            .unwrap();
        assert_eq!(list.grpc_service, "gradebook.registry.v1.Registry");
        assert_eq!(list.grpc_method, "List");
        let health = metrics
            .method_of(&request("/grpc.health.v1.Health/Check"))
            .unwrap();
        assert_eq!(health.grpc_method, "Check");
        let invented = metrics
            .method_of(&request("/gradebook.registry.v1.Registry/Invented"))
            .unwrap();
        assert_eq!(invented.grpc_service, "unknown");
        let page = http::Request::builder().uri("/metrics").body(()).unwrap();
        assert!(metrics.method_of(&page).is_none(), "not a gRPC call");
    }
}
