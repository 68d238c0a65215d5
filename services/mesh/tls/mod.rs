//! Mutual TLS for every hop of the mesh: a local certificate authority,
//! service identities in certificates, and the server and client sides the
//! SDK's one server builder and one client stack use.
//!
//! # Layout
//!
//! - [`identity`]: service identities (SPIFFE-style URIs) and the DNS name
//!   servers are verified under.
//! - [`authority`]: the local certificate authority (`rcgen`): create,
//!   issue, renew.
//! - [`renewal`]: renewing certificates while the mesh runs.
//! - [`credentials`]: a process's certificate, reloaded when renewed, and
//!   the rustls configurations made from it.
//! - [`key_files`]: a certificate and key in files, reloaded when they
//!   change.
//! - [`connect`]: the client side of a connection.
//! - [`accept`]: the server side: connection limit, handshake timeout, the
//!   peer's identity.
//! - [`verify`]: how a client verifies a server: chain and identity.
//! - [`caller`]: who made a request, for a service's authorization.
//! - [`require`]: the per-request check that a gRPC caller has an identity.

pub mod accept;
pub mod authority;
pub mod caller;
pub mod connect;
pub mod credentials;
pub mod identity;
pub mod key_files;
pub mod renewal;
pub mod require;
pub mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::task::JoinHandle;

pub use accept::Peer;
pub use caller::Caller;
pub use connect::MeshConnector;
pub use credentials::{ClientAuth, Credentials};
pub use identity::Identity;

use crate::mesh::Shutdown;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file is not there.
    #[error(
        "{path} is missing: create the mesh's certificates with `gradebook certs init --dir DIR` and `gradebook certs issue {identity} --dir DIR` and pass --certs DIR (or GRADEBOOK_CERTS), or turn TLS off with --insecure"
    )]
    Missing {
        /// The missing file.
        path: PathBuf,
        /// Whose file it is.
        identity: String,
    },
    /// `certs init` on a directory that already has an authority.
    #[error("{0} already exists: the certificate authority is there already")]
    AlreadyExists(PathBuf),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// A certificate or key is malformed, or does not fit.
    #[error("invalid certificate or key: {0}")]
    Invalid(String),
    /// A certificate could not be generated.
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[source] rustls::Error),
}

impl TlsError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        TlsError::Io {
            path: path.to_owned(),
            source,
        }
    }

    fn pem(path: &Path, error: rustls::pki_types::pem::Error) -> Self {
        TlsError::Invalid(format!("{}: {error}", path.display()))
    }

    fn generate(error: impl std::fmt::Display) -> Self {
        TlsError::Generate(error.to_string())
    }
}

/// How a process's connections are secured: the one value the server
/// builder, the client stack, the registry's health probes and the tools
/// are given.
#[derive(Debug, Clone)]
pub enum Tls {
    /// Plaintext everywhere (`--insecure`), for local debugging.
    Off,
    /// Mutual TLS with these credentials.
    Mutual(Arc<Credentials>),
}

impl Tls {
    /// Mutual TLS as `identity`, with the certificates in `dir`.
    pub fn load(dir: &Path, identity: Identity) -> Result<Tls, TlsError> {
        Ok(Tls::Mutual(Credentials::load(dir, identity)?))
    }

    /// Whether connections are encrypted.
    pub fn is_on(&self) -> bool {
        matches!(self, Tls::Mutual(_))
    }

    /// The identity this process presents, when TLS is on.
    pub fn identity(&self) -> Option<&Identity> {
        self.credentials().map(|credentials| credentials.identity())
    }

    /// The credentials, when TLS is on.
    pub fn credentials(&self) -> Option<&Arc<Credentials>> {
        match self {
            Tls::Off => None,
            Tls::Mutual(credentials) => Some(credentials),
        }
    }

    /// A connector for instances of `service`: it accepts only a server
    /// holding a certificate of `service`.
    pub fn connector(&self, service: &str) -> MeshConnector {
        match Identity::new(service) {
            Ok(expected) => self.connector_for(Some(expected), &identity::server_name(service)),
            // Never "anyone" by mistake: no connection at all.
            Err(error) if self.is_on() => MeshConnector::failing(error.to_string()),
            Err(_) => MeshConnector::plaintext(),
        }
    }

    /// A connector that accepts a server of any mesh identity (for
    /// `gradebook health-check`, which may not know whom it asks).
    pub fn connector_to_anyone(&self) -> MeshConnector {
        self.connector_for(None, identity::TRUST_DOMAIN)
    }

    fn connector_for(&self, expected: Option<Identity>, server_name: &str) -> MeshConnector {
        let Tls::Mutual(credentials) = self else {
            return MeshConnector::plaintext();
        };
        match (
            credentials.client_config(expected),
            ServerName::try_from(server_name.to_owned()),
        ) {
            (Ok(config), Ok(name)) => MeshConnector::tls(Arc::new(config), name),
            // Neither happens with the fixed TLS 1.3 and a service name;
            // a connector that cannot connect is the safe answer.
            (Err(error), _) => MeshConnector::failing(error.to_string()),
            (_, Err(error)) => MeshConnector::failing(error.to_string()),
        }
    }

    /// Reloads renewed certificates until `shutdown` (nothing to do when off).
    pub fn keep_fresh(&self, shutdown: &Shutdown) -> Option<JoinHandle<()>> {
        self.credentials()
            .map(|credentials| tokio::spawn(credentials.clone().keep_fresh(shutdown.clone())))
    }
}
