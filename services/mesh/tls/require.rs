//! The per-request half of authentication: with TLS on, a gRPC call on a
//! connection whose peer presented no certificate (a browser's HTTPS
//! connection or a plaintext one to the portal) is answered UNAUTHENTICATED
//! before it reaches a service. Plain HTTP requests pass: the web app has
//! its own sign-in.

use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http;

use crate::mesh::tls::Peer;

/// Wraps a server's services with [`RequireIdentity`].
#[derive(Debug, Clone, Copy)]
pub struct RequireIdentityLayer {
    /// Whether to check at all (TLS on).
    pub enabled: bool,
}

impl<S> tower::Layer<S> for RequireIdentityLayer {
    type Service = RequireIdentity<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireIdentity {
            inner,
            enabled: self.enabled,
        }
    }
}

/// Refuses gRPC calls from peers without an identity.
#[derive(Debug, Clone)]
pub struct RequireIdentity<S> {
    inner: S,
    enabled: bool,
}

impl<S, B> tower::Service<http::Request<B>> for RequireIdentity<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = futures::future::Either<
        S::Future,
        futures::future::Ready<Result<http::Response<Body>, S::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if self.enabled && is_grpc(&request) && !has_identity(&request) {
            let status = tonic::Status::unauthenticated(
                "a gRPC caller must present a client certificate from the mesh's authority",
            );
            return futures::future::Either::Right(futures::future::ready(Ok(status.into_http())));
        }
        futures::future::Either::Left(self.inner.call(request))
    }
}

/// Whether `request` is a gRPC call (by its content type).
pub(crate) fn is_grpc<B>(request: &http::Request<B>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// Whether the peer of `request`'s connection proved a mesh identity.
pub(crate) fn has_identity<B>(request: &http::Request<B>) -> bool {
    request
        .extensions()
        .get::<Peer>()
        .is_some_and(|peer| peer.identity.is_some())
}
