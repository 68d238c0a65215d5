//! `GET /metrics`: the process's metrics for Prometheus, on the daemon's
//! own port. With TLS on, only a caller with a certificate from the mesh's
//! authority may read them (Prometheus gets one of its own: `gradebook
//! certs ensure prometheus`); on the portal's port, browsers without one
//! get 401.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::mesh::metrics::{CONTENT_TYPE, Metrics};
use crate::mesh::tls::require::has_identity;

/// The `/metrics` route over `metrics`; `tls_on` says whether a caller must
/// present a mesh certificate.
pub fn route(metrics: Metrics, tls_on: bool) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |request: axum::extract::Request| {
            let metrics = metrics.clone();
            async move { scrape(&metrics, tls_on, &request) }
        }),
    )
}

fn scrape(metrics: &Metrics, tls_on: bool, request: &axum::extract::Request) -> Response {
    if tls_on && !has_identity(request) {
        return (
            StatusCode::UNAUTHORIZED,
            "metrics are for callers with a certificate from the mesh's authority\n",
        )
            .into_response();
    }
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics.encode()).into_response()
}
