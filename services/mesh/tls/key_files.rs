//! A certificate chain and its private key in two PEM files, reloaded when
//! the files change (a renewal), so that whoever presents it always
//! presents the current one: a daemon's mesh certificate, and the portal's
//! certificate for browsers (`--web-tls-cert`/`--web-tls-key`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::mesh::Shutdown;
use crate::mesh::tls::TlsError;
use crate::mesh::tls::identity::Identity;

/// How often the files are checked for a renewal.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// What identifies a version of a file on disk.
type FileStamp = Option<(SystemTime, u64)>;

/// The certificate and key in use, and the files they came from.
struct Current {
    key: Arc<CertifiedKey>,
    stamp: (FileStamp, FileStamp),
}

/// A certificate and key, as their files hold them now.
pub struct KeyFiles {
    cert: PathBuf,
    key: PathBuf,
    /// The identity the certificate must name (a mesh certificate); `None`
    /// for any certificate (a web certificate, from any authority).
    expected: Option<Identity>,
    provider: Arc<CryptoProvider>,
    current: RwLock<Current>,
}

impl std::fmt::Debug for KeyFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyFiles")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl KeyFiles {
    /// Loads the chain in `cert` and the key in `key`, checking that they
    /// belong together and, when `expected` is set, that the certificate
    /// names that identity.
    pub fn load(
        cert: &Path,
        key: &Path,
        expected: Option<Identity>,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let current = read(cert, key, expected.as_ref(), &provider)?;
        Ok(KeyFiles {
            cert: cert.to_owned(),
            key: key.to_owned(),
            expected,
            provider,
            current: RwLock::new(current),
        })
    }

    /// The certificate file.
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }

    /// Reloads the certificate and key if their files changed; `Ok(true)`
    /// when a new certificate is now in use. A failed reload keeps the
    /// current one.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let stamp = (stamp(&self.cert), stamp(&self.key));
        if self.read_current().stamp == stamp {
            return Ok(false);
        }
        let loaded = read(
            &self.cert,
            &self.key,
            self.expected.as_ref(),
            &self.provider,
        )?;
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
                    tracing::info!(certificate = %self.cert.display(), "loaded a renewed certificate")
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, "could not load the renewed certificate; keeping the current one")
                }
            }
        }
    }

    /// The certificate and key in use.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.read_current().key.clone()
    }

    fn read_current(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        self.current.read().unwrap_or_else(|e| e.into_inner())
    }
}

fn stamp(path: &Path) -> FileStamp {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

/// Reads the files (see [`KeyFiles::load`]).
fn read(
    cert: &Path,
    key: &Path,
    expected: Option<&Identity>,
    provider: &CryptoProvider,
) -> Result<Current, TlsError> {
    let stamps = (stamp(cert), stamp(key));
    for path in [cert, key] {
        if !path.exists() {
            return Err(match expected {
                Some(identity) => TlsError::Missing {
                    path: path.to_owned(),
                    identity: identity.service().to_owned(),
                },
                None => TlsError::io(path, std::io::ErrorKind::NotFound.into()),
            });
        }
    }
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsError::pem(cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::pem(cert, e))?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::Invalid(format!(
            "{} holds no certificate",
            cert.display()
        )));
    };
    if let Some(expected) = expected {
        let named = Identity::from_certificate(leaf)
            .map_err(|e| TlsError::Invalid(format!("{}: {e}", cert.display())))?;
        if named != *expected {
            return Err(TlsError::Invalid(format!(
                "{} is {named}, not {}",
                cert.display(),
                expected.service()
            )));
        }
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::pem(key, e))?;
    let certified = CertifiedKey::from_der(chain, private, provider).map_err(|e| {
        TlsError::Invalid(format!("{} with {}: {e}", cert.display(), key.display()))
    })?;
    Ok(Current {
        key: Arc::new(certified),
        stamp: stamps,
    })
}
