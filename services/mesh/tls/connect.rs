//! The client side of every connection the SDK makes: TCP with no delay,
//! then, unless TLS is off, a TLS 1.3 handshake that presents this
//! process's certificate and accepts only a server whose certificate the
//! authority issued to the service being dialed.

use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;
use tonic::codegen::http::Uri;

/// A connection the connector made: plain TCP or TLS over it.
pub type ClientStream = TokioIo<Either<TcpStream, TlsStream<TcpStream>>>;

/// Dials one service's instances (give it to
/// `Endpoint::connect_with_connector_lazy`; the endpoint's connect timeout
/// covers the handshake too).
#[derive(Clone)]
pub struct MeshConnector {
    mode: Mode,
}

#[derive(Clone)]
enum Mode {
    Plaintext,
    Tls(TlsConnector, ServerName<'static>),
    /// TLS could not be configured: every connection fails with this.
    Failing(Arc<str>),
}

impl std::fmt::Debug for MeshConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match &self.mode {
            Mode::Plaintext => "plaintext".to_owned(),
            Mode::Tls(_, name) => format!("TLS to {name:?}"),
            Mode::Failing(why) => format!("failing: {why}"),
        };
        f.debug_struct("MeshConnector")
            .field("mode", &mode)
            .finish()
    }
}

impl MeshConnector {
    /// A connector that speaks plaintext (`--insecure`).
    pub fn plaintext() -> Self {
        MeshConnector {
            mode: Mode::Plaintext,
        }
    }

    /// A connector that speaks TLS with `config` (which verifies the
    /// server), sending `server_name` as SNI.
    pub fn tls(config: Arc<rustls::ClientConfig>, server_name: ServerName<'static>) -> Self {
        MeshConnector {
            mode: Mode::Tls(TlsConnector::from(config), server_name),
        }
    }

    /// A connector whose every connection fails with `why`.
    pub fn failing(why: String) -> Self {
        MeshConnector {
            mode: Mode::Failing(why.into()),
        }
    }
}

impl tower::Service<Uri> for MeshConnector {
    type Response = ClientStream;
    type Error = io::Error;
    type Future = BoxFuture<'static, io::Result<ClientStream>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let mode = self.mode.clone();
        Box::pin(async move {
            if let Mode::Failing(why) = &mode {
                return Err(io::Error::other(why.to_string()));
            }
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host to dial"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(80);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let stream = match mode {
                Mode::Tls(connector, name) => Either::Right(connector.connect(name, tcp).await?),
                Mode::Plaintext | Mode::Failing(_) => Either::Left(tcp),
            };
            Ok(TokioIo::new(stream))
        })
    }
}
