//! A daemon's credentials: the authority it trusts and its own certificate
//! and key, loaded from a certificate directory and reloaded when the files
//! change (a renewal), so certificates rotate without a restart. From them
//! come the rustls configurations of the server and the client side, both
//! TLS 1.3 only, both presenting whatever certificate is current.
//!
//! A server that browsers reach too (the portal) may be given a web
//! certificate as well: it is presented to every client that does not ask
//! for a mesh name by SNI (browsers ask for the host they were pointed at;
//! mesh clients ask for `SERVICE.gradebook.local`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};

use crate::mesh::Shutdown;
use crate::mesh::tls::TlsError;
use crate::mesh::tls::authority::{CA_CERT, cert_path, key_path};
use crate::mesh::tls::identity::{Identity, TRUST_DOMAIN};
use crate::mesh::tls::key_files::KeyFiles;
use crate::mesh::tls::verify::IdentityVerifier;

/// Whether a server demands a client certificate at the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every peer presents a certificate from the authority (every daemon).
    Required,
    /// Peers may present one (the portal, which browsers reach too); gRPC
    /// calls without one are refused later, per request.
    Optional,
}

/// A daemon's (or a tool's) credentials, shared by its server and clients.
pub struct Credentials {
    identity: Identity,
    dir: PathBuf,
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    own: Arc<KeyFiles>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("identity", &self.identity)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Loads `identity`'s certificate and key and the authority's
    /// certificate from `dir`.
    pub fn load(dir: &Path, identity: Identity) -> Result<Arc<Self>, TlsError> {
        let ca = dir.join(CA_CERT);
        if !ca.exists() {
            return Err(TlsError::Missing {
                path: ca,
                identity: identity.service().to_owned(),
            });
        }
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&ca).map_err(|e| TlsError::pem(&ca, e))? {
            roots
                .add(cert.map_err(|e| TlsError::pem(&ca, e))?)
                .map_err(|e| TlsError::Invalid(format!("{}: {e}", ca.display())))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let own = KeyFiles::load(
            &cert_path(dir, identity.service()),
            &key_path(dir, identity.service()),
            Some(identity.clone()),
            provider.clone(),
        )?;
        Ok(Arc::new(Credentials {
            identity,
            dir: dir.to_owned(),
            roots: Arc::new(roots),
            provider,
            own: Arc::new(own),
        }))
    }

    /// Whose credentials these are.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The directory they are loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reloads the certificate and key if their files changed; `Ok(true)`
    /// when a new certificate is now in use. A failed reload keeps the
    /// current one.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        self.own.reload_if_changed()
    }

    /// Checks the files every few seconds until `shutdown`.
    pub async fn keep_fresh(self: Arc<Self>, shutdown: Shutdown) {
        self.own.clone().keep_fresh(shutdown).await
    }

    /// Loads a web certificate for browsers (any authority's), with the
    /// same provider; reload it with [`KeyFiles::keep_fresh`].
    pub fn load_web_certificate(&self, cert: &Path, key: &Path) -> Result<KeyFiles, TlsError> {
        KeyFiles::load(cert, key, None, self.provider.clone())
    }

    /// The server side: TLS 1.3, this certificate (or `web`, when given,
    /// to clients that do not ask for a mesh name), clients verified
    /// against the authority.
    pub fn server_config(
        self: &Arc<Self>,
        clients: ClientAuth,
        web: Option<Arc<KeyFiles>>,
    ) -> Result<ServerConfig, TlsError> {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(self.roots.clone(), self.provider.clone());
        let verifier = match clients {
            ClientAuth::Required => verifier,
            ClientAuth::Optional => verifier.allow_unauthenticated(),
        }
        .build()
        .map_err(|e| TlsError::Invalid(format!("the client verifier: {e}")))?;
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::Rustls)?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(ServerResolver {
                mesh: self.own.clone(),
                web,
            }));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    /// The client side: TLS 1.3, this certificate presented, servers
    /// verified against the authority and, when `expected` is set, required
    /// to be that identity.
    pub fn client_config(
        self: &Arc<Self>,
        expected: Option<Identity>,
    ) -> Result<ClientConfig, TlsError> {
        let verifier = IdentityVerifier::new(self.roots.clone(), self.provider.clone(), expected);
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::Rustls)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }

    fn certified_key(&self) -> Arc<CertifiedKey> {
        self.own.certified_key()
    }
}

/// Hands rustls the current certificate on the server side: the web
/// certificate, when there is one, to a client that does not ask for a
/// mesh name.
#[derive(Debug)]
struct ServerResolver {
    mesh: Arc<KeyFiles>,
    web: Option<Arc<KeyFiles>>,
}

impl ResolvesServerCert for ServerResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match &self.web {
            Some(web) if !hello.server_name().is_some_and(is_mesh_name) => {
                Some(web.certified_key())
            }
            _ => Some(self.mesh.certified_key()),
        }
    }
}

/// Whether `name` is one mesh clients ask for: the trust domain, or a
/// service's name in it.
fn is_mesh_name(name: &str) -> bool {
    name.strip_suffix(TRUST_DOMAIN)
        .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
}

/// Hands rustls the current certificate on the client side.
#[derive(Debug)]
struct Resolver(Arc<Credentials>);

impl ResolvesClientCert for Resolver {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.certified_key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::mesh::tls::authority;

    #[test]
    fn mesh_names_are_the_trust_domain_and_its_services() {
        for name in ["gradebook.local", "portal.gradebook.local"] {
            assert!(is_mesh_name(name), "{name}");
        }
        for name in [
            "localhost",
            "gradebook.example.org",
            "evilgradebook.local",
            "",
        ] {
            assert!(!is_mesh_name(name), "{name}");
        }
    }

    #[test]
    fn a_renewed_certificate_is_picked_up_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let grading = Identity::new("grading").unwrap();
        authority::ensure(
            dir.path(),
            std::slice::from_ref(&grading),
            authority::DEFAULT_CERT_LIFETIME,
            SystemTime::now(),
        )
        .unwrap();
        let credentials = Credentials::load(dir.path(), grading.clone()).unwrap();
        let before = credentials.certified_key();
        assert!(!credentials.reload_if_changed().unwrap(), "nothing changed");

        authority::issue(dir.path(), &grading, Duration::from_secs(3600), &[]).unwrap();
        assert!(credentials.reload_if_changed().unwrap());
        let after = credentials.certified_key();
        assert_ne!(before.cert, after.cert, "the new certificate is served");

        // A broken file keeps the current certificate.
        std::fs::write(authority::cert_path(dir.path(), "grading"), "garbage").unwrap();
        assert!(credentials.reload_if_changed().is_err());
        assert_eq!(credentials.certified_key().cert, after.cert);
        // Another identity's certificate is refused.
        let log = Identity::new("log").unwrap();
        authority::issue(dir.path(), &log, authority::DEFAULT_CERT_LIFETIME, &[]).unwrap();
        std::fs::copy(
            authority::cert_path(dir.path(), "log"),
            authority::cert_path(dir.path(), "grading"),
        )
        .unwrap();
        let error = credentials.reload_if_changed().unwrap_err().to_string();
        assert!(error.contains("not grading"), "{error}");
    }
}
