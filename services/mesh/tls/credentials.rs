//! A daemon's credentials: the authority it trusts and its own certificate
//! and key, loaded from a certificate directory and reloaded when the files
//! change (a renewal), so certificates rotate without a restart. From them
//! come the rustls configurations of the server and the client side, both
//! TLS 1.3 only, both presenting whatever certificate is current.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};

use crate::mesh::Shutdown;
use crate::mesh::tls::TlsError;
use crate::mesh::tls::authority::{CA_CERT, cert_path, key_path};
use crate::mesh::tls::identity::Identity;
use crate::mesh::tls::verify::IdentityVerifier;

/// How often the certificate files are checked for a renewal.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// Whether a server demands a client certificate at the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every peer presents a certificate from the authority (every daemon).
    Required,
    /// Peers may present one (the portal, which browsers reach too); gRPC
    /// calls without one are refused later, per request.
    Optional,
}

/// What identifies a version of the certificate files on disk.
type FileStamp = Option<(SystemTime, u64)>;

/// The certificate and key in use, and the files they came from.
struct Current {
    key: Arc<CertifiedKey>,
    stamp: (FileStamp, FileStamp),
}

/// A daemon's (or a tool's) credentials, shared by its server and clients.
pub struct Credentials {
    identity: Identity,
    dir: PathBuf,
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    current: RwLock<Current>,
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
        let current = load_current(dir, identity.service(), &provider)?;
        Ok(Arc::new(Credentials {
            identity,
            dir: dir.to_owned(),
            roots: Arc::new(roots),
            provider,
            current: RwLock::new(current),
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
        let service = self.identity.service();
        let stamp = (
            stamp(&cert_path(&self.dir, service)),
            stamp(&key_path(&self.dir, service)),
        );
        if self.read().stamp == stamp {
            return Ok(false);
        }
        let loaded = load_current(&self.dir, service, &self.provider)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = loaded;
        Ok(true)
    }

    /// Checks the files every [`RELOAD_INTERVAL`] until `shutdown`.
    pub async fn keep_fresh(self: Arc<Self>, shutdown: Shutdown) {
        let mut interval = tokio::time::interval(RELOAD_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            match self.reload_if_changed() {
                Ok(true) => {
                    tracing::info!(identity = %self.identity, "loaded a renewed certificate")
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, "could not load the renewed certificate; keeping the current one")
                }
            }
        }
    }

    /// The server side: TLS 1.3, this certificate, clients verified
    /// against the authority.
    pub fn server_config(self: &Arc<Self>, clients: ClientAuth) -> Result<ServerConfig, TlsError> {
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
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
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

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        self.current.read().unwrap_or_else(|e| e.into_inner())
    }

    fn certified_key(&self) -> Arc<CertifiedKey> {
        self.read().key.clone()
    }
}

/// Hands rustls the current certificate, on both sides.
#[derive(Debug)]
struct Resolver(Arc<Credentials>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.certified_key())
    }
}

impl ResolvesClientCert for Resolver {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.certified_key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn stamp(path: &Path) -> FileStamp {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

/// Loads `service`'s certificate and key from `dir`, checking they belong
/// together and that the certificate names `service`.
fn load_current(dir: &Path, service: &str, provider: &CryptoProvider) -> Result<Current, TlsError> {
    let (cert, key) = (cert_path(dir, service), key_path(dir, service));
    let stamps = (stamp(&cert), stamp(&key));
    for path in [&cert, &key] {
        if !path.exists() {
            return Err(TlsError::Missing {
                path: path.clone(),
                identity: service.to_owned(),
            });
        }
    }
    let chain = CertificateDer::pem_file_iter(&cert)
        .map_err(|e| TlsError::pem(&cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::pem(&cert, e))?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::Invalid(format!(
            "{} holds no certificate",
            cert.display()
        )));
    };
    let named = Identity::from_certificate(leaf)
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", cert.display())))?;
    if named.service() != service {
        return Err(TlsError::Invalid(format!(
            "{} is {named}, not {service}",
            cert.display()
        )));
    }
    let private = PrivateKeyDer::from_pem_file(&key).map_err(|e| TlsError::pem(&key, e))?;
    let certified = CertifiedKey::from_der(chain, private, provider).map_err(|e| {
        TlsError::Invalid(format!("{} with {}: {e}", cert.display(), key.display()))
    })?;
    Ok(Current {
        key: Arc::new(certified),
        stamp: stamps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::tls::authority;

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
