//! The server side of every connection a daemon accepts: at most
//! `max_connections` at once (the rest wait in the listen backlog), a
//! bounded time for the TLS handshake, and the peer's verified identity
//! attached to the connection, where every request's handler can read it
//! ([`Peer`]).
//!
//! A server that also serves browsers (the portal) may accept plain HTTP
//! on the same port: a connection whose first byte is not a TLS handshake
//! record is served as plaintext, as linkerd2-proxy detects TLS by peeking
//! at the ClientHello.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::either::Either;
use tonic::transport::server::Connected;

use crate::mesh::tls::identity::Identity;
use crate::mesh::tls::key_files::KeyFiles;
use crate::mesh::tls::{ClientAuth, Tls, TlsError};

/// How long a new connection may take to send its first byte and complete
/// its TLS handshake; a silent or slow one is closed then.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The most connections a daemon holds open at once, by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// How long to wait after the listener fails (out of file descriptors).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Who is on the other end of a connection, for every request on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The peer's address.
    pub remote: Option<SocketAddr>,
    /// The identity its verified certificate names; `None` over plaintext
    /// or when it presented none.
    pub identity: Option<Identity>,
    /// Whether the connection is TLS (a browser's HTTPS included).
    pub encrypted: bool,
}

/// How a server treats the connections it accepts.
#[derive(Clone)]
pub enum Accepting {
    /// Plaintext only (`--insecure`).
    Plaintext,
    /// TLS, with plaintext too when `plaintext_too` (browsers on loopback).
    Tls {
        /// The handshake side.
        acceptor: TlsAcceptor,
        /// Serve connections that do not start a TLS handshake as plaintext.
        plaintext_too: bool,
    },
}

impl Accepting {
    /// How a server secured by `tls` accepts: plaintext when TLS is off;
    /// otherwise TLS with client certificates as `clients` says (and
    /// `web_certificate` for clients that do not ask for a mesh name), and
    /// plain HTTP too when `plaintext_too`.
    pub fn new(
        tls: &Tls,
        clients: ClientAuth,
        plaintext_too: bool,
        web_certificate: Option<Arc<KeyFiles>>,
    ) -> Result<Self, TlsError> {
        let Some(credentials) = tls.credentials() else {
            return Ok(Accepting::Plaintext);
        };
        let config = credentials.server_config(clients, web_certificate)?;
        Ok(Accepting::Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            plaintext_too,
        })
    }
}

/// An accepted connection: plaintext or TLS, holding its slot of the
/// connection limit until it closes.
pub struct MeshStream {
    io: Either<TcpStream, TlsStream<TcpStream>>,
    peer: Peer,
    _slot: OwnedSemaphorePermit,
}

impl Connected for MeshStream {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for MeshStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for MeshStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The connections accepted on `listener`, ready to serve, until the
/// returned stream is dropped (the server stopped).
pub fn incoming(
    listener: TcpListener,
    accepting: Accepting,
    max_connections: usize,
) -> ReceiverStream<io::Result<MeshStream>> {
    let (ready, incoming) = mpsc::channel(64);
    tokio::spawn(accept_loop(listener, accepting, max_connections, ready));
    ReceiverStream::new(incoming)
}

async fn accept_loop(
    listener: TcpListener,
    accepting: Accepting,
    max_connections: usize,
    ready: mpsc::Sender<io::Result<MeshStream>>,
) {
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    loop {
        let slot = tokio::select! {
            _ = ready.closed() => return,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        let (tcp, remote) = tokio::select! {
            _ = ready.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "could not accept a connection");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (accepting, ready) = (accepting.clone(), ready.clone());
        tokio::spawn(async move {
            let peer = Peer {
                remote: Some(remote),
                identity: None,
                encrypted: false,
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(tcp, peer, &accepting)).await {
                Ok(Ok((io, peer))) => {
                    let _ = ready
                        .send(Ok(MeshStream {
                            io,
                            peer,
                            _slot: slot,
                        }))
                        .await;
                }
                Ok(Err(error)) => {
                    tracing::debug!(%error, %remote, "connection refused at the handshake")
                }
                Err(_) => tracing::debug!(%remote, "connection closed: no handshake in time"),
            }
        });
    }
}

async fn handshake(
    tcp: TcpStream,
    mut peer: Peer,
    accepting: &Accepting,
) -> io::Result<(Either<TcpStream, TlsStream<TcpStream>>, Peer)> {
    // Nothing is served to a connection that says nothing: its first byte
    // must come within the handshake deadline, TLS or not.
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
    }
    let (acceptor, plaintext_too) = match accepting {
        Accepting::Plaintext => return Ok((Either::Left(tcp), peer)),
        Accepting::Tls {
            acceptor,
            plaintext_too,
        } => (acceptor, *plaintext_too),
    };
    if plaintext_too && first[0] != TLS_HANDSHAKE_RECORD {
        return Ok((Either::Left(tcp), peer));
    }
    let tls = acceptor.accept(tcp).await?;
    peer.encrypted = true;
    let (_, session) = tls.get_ref();
    if let Some(leaf) = session.peer_certificates().and_then(|chain| chain.first()) {
        // The chain was verified against the authority; an identity-less
        // certificate from it is refused.
        peer.identity = Some(
            Identity::from_certificate(leaf)
                .map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e))?,
        );
    }
    Ok((Either::Right(tls), peer))
}
