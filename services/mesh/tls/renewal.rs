//! Keeping the mesh's certificates renewed while it runs: certificates are
//! short-lived, so whatever holds the authority's key (`gradebook up`, or
//! the compose stack's renewer, `gradebook certs ensure --keep`) issues new
//! ones past two thirds of their life, and the daemons load them on their
//! own ([`crate::mesh::tls::Credentials::keep_fresh`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::mesh::Shutdown;
use crate::mesh::tls::TlsError;
use crate::mesh::tls::authority::{self, Renewal};
use crate::mesh::tls::identity::Identity;

/// The longest wait between two checks.
const MAX_CHECK_PERIOD: Duration = Duration::from_secs(600);

/// Creates the authority and the certificates of `identities` in `dir`
/// where missing, and renews those past two thirds of their life (for
/// `lifetime`); logs what it did and returns it.
pub async fn renew(
    dir: &Path,
    identities: &[Identity],
    lifetime: Duration,
) -> Result<Vec<(Identity, Renewal)>, TlsError> {
    let (owned_dir, owned) = (dir.to_owned(), identities.to_vec());
    let done = tokio::task::spawn_blocking(move || {
        authority::ensure(&owned_dir, &owned, lifetime, SystemTime::now())
    })
    .await
    .map_err(|e| TlsError::Generate(format!("the renewal task failed: {e}")))??;
    for (identity, renewal) in &done {
        match renewal {
            Renewal::Kept => {}
            Renewal::Issued => {
                tracing::info!(%identity, dir = %dir.display(), "issued a certificate")
            }
            Renewal::Renewed => {
                tracing::info!(%identity, dir = %dir.display(), "renewed a certificate")
            }
        }
    }
    Ok(done)
}

/// Renews the certificates before they expire, until `shutdown`: checks
/// every tenth of their lifetime (at least every second, at most every ten
/// minutes), so one is renewed well before the last third of its life ends.
pub async fn keep_renewed(
    dir: PathBuf,
    identities: Vec<Identity>,
    lifetime: Duration,
    shutdown: Shutdown,
) {
    let period = (lifetime / 10).clamp(Duration::from_secs(1), MAX_CHECK_PERIOD);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.cancelled() => return,
        }
        if let Err(error) = renew(&dir, &identities, lifetime).await {
            tracing::warn!(%error, "could not renew the certificates; will try again");
        }
    }
}
