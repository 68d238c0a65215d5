//! The mesh's local certificate authority, with `rcgen`: create it, issue a
//! service its certificate, and renew certificates before they expire.
//!
//! A certificate directory holds `ca.crt` and `ca.key` (the authority) and
//! `SERVICE.crt` and `SERVICE.key` per identity. Private keys are written
//! readable by their owner only, and every file is replaced atomically (a
//! temporary file renamed over it), so a daemon reloading its certificate
//! never reads half of one.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::mesh::tls::TlsError;
use crate::mesh::tls::identity::Identity;

/// The authority's certificate in a certificate directory.
pub const CA_CERT: &str = "ca.crt";
/// The authority's private key in a certificate directory.
pub const CA_KEY: &str = "ca.key";
/// How long the authority is valid.
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a service certificate is valid unless told otherwise (as
/// Linkerd's workload certificates): short, and renewed well before.
pub const DEFAULT_CERT_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// How far back a new certificate's validity starts, for clocks that
/// differ a little (at most a quarter of its lifetime, so that a short-lived
/// certificate is not due for renewal the moment it is issued).
const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// What a certificate directory holds for `service`: its certificate and key.
pub fn cert_path(dir: &Path, service: &str) -> PathBuf {
    dir.join(format!("{service}.crt"))
}

/// The private key of `service` in `dir`.
pub fn key_path(dir: &Path, service: &str) -> PathBuf {
    dir.join(format!("{service}.key"))
}

/// Creates the authority in `dir` (made if missing, readable by its owner
/// only). Refuses to replace an existing one: every certificate it issued
/// would stop being trusted.
pub fn init(dir: &Path) -> Result<PathBuf, TlsError> {
    let cert = dir.join(CA_CERT);
    if cert.exists() {
        return Err(TlsError::AlreadyExists(cert));
    }
    create_private_dir(dir)?;
    let key = KeyPair::generate().map_err(TlsError::generate)?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(
        DnType::CommonName,
        "Gradebook Mesh local certificate authority",
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, SystemTime::now(), CA_LIFETIME);
    let certificate = params.self_signed(&key).map_err(TlsError::generate)?;
    write_file(&dir.join(CA_KEY), key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&cert, certificate.pem().as_bytes(), 0o644)?;
    Ok(cert)
}

/// Issues `identity` a certificate valid for `lifetime`, signed by the
/// authority in `dir`, replacing any it had. `extra_names` are further DNS
/// names or IP addresses the certificate is valid for (a browser-facing
/// portal's host name); `localhost` and the loopback addresses always are.
pub fn issue(
    dir: &Path,
    identity: &Identity,
    lifetime: Duration,
    extra_names: &[String],
) -> Result<PathBuf, TlsError> {
    let ca_key_pem = read(&dir.join(CA_KEY))?;
    let ca_cert_pem = read(&dir.join(CA_CERT))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(TlsError::generate)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert_pem, ca_key).map_err(TlsError::generate)?;

    let mut names = vec![
        identity.server_name(),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    for name in extra_names {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let mut params = CertificateParams::new(names).map_err(TlsError::generate)?;
    params.subject_alt_names.push(SanType::URI(
        identity.uri().try_into().map_err(TlsError::generate)?,
    ));
    params
        .distinguished_name
        .push(DnType::CommonName, identity.service());
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(SerialNumber::from_slice(uuid::Uuid::new_v4().as_bytes()));
    set_validity(&mut params, SystemTime::now(), lifetime);
    let key = KeyPair::generate().map_err(TlsError::generate)?;
    let certificate = params
        .signed_by(&key, &issuer)
        .map_err(TlsError::generate)?;

    // The key first: a reader that sees the new certificate finds its key.
    // (A reader between the two renames sees a new key with the old
    // certificate and retries at its next reload.)
    write_file(
        &key_path(dir, identity.service()),
        key.serialize_pem().as_bytes(),
        0o600,
    )?;
    let cert = cert_path(dir, identity.service());
    write_file(&cert, certificate.pem().as_bytes(), 0o644)?;
    Ok(cert)
}

/// What [`ensure`] did for one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// The certificate is valid for long enough.
    Kept,
    /// There was none: one was issued.
    Issued,
    /// It was past two thirds of its life (or unreadable): a new one was issued.
    Renewed,
}

/// Makes sure `dir` holds an authority (created if missing) and a
/// certificate for each of `identities` with at least a third of its life
/// left (issued or renewed for `lifetime` otherwise). `gradebook up` calls
/// this at start and then periodically.
pub fn ensure(
    dir: &Path,
    identities: &[Identity],
    lifetime: Duration,
    now: SystemTime,
) -> Result<Vec<(Identity, Renewal)>, TlsError> {
    if !dir.join(CA_CERT).exists() {
        init(dir)?;
    }
    identities
        .iter()
        .map(|identity| {
            let cert = cert_path(dir, identity.service());
            let renewal = if !cert.exists() || !key_path(dir, identity.service()).exists() {
                Renewal::Issued
            } else if needs_renewal(&cert, now) {
                Renewal::Renewed
            } else {
                return Ok((identity.clone(), Renewal::Kept));
            };
            // A renewal keeps the names the certificate was issued for
            // (`certs issue portal --name HOST`).
            let names = match renewal {
                Renewal::Renewed => names_of(&cert).unwrap_or_default(),
                _ => Vec::new(),
            };
            issue(dir, identity, lifetime, &names)?;
            Ok((identity.clone(), renewal))
        })
        .collect()
}

/// Whether the certificate at `path` is past two thirds of its validity at
/// `now`, or cannot be read.
pub fn needs_renewal(path: &Path, now: SystemTime) -> bool {
    match validity(path) {
        Ok((not_before, not_after)) => {
            let renew_at = not_before + (not_after - not_before) * 2 / 3;
            unix_seconds(now) >= renew_at
        }
        Err(_) => true,
    }
}

/// The validity of the PEM certificate at `path`, in Unix seconds.
pub fn validity(path: &Path) -> Result<(i64, i64), TlsError> {
    with_certificate(path, |certificate| {
        let validity = certificate.validity();
        Ok((
            validity.not_before.timestamp(),
            validity.not_after.timestamp(),
        ))
    })
}

/// The DNS names and IP addresses the PEM certificate at `path` is valid
/// for.
pub fn names_of(path: &Path) -> Result<Vec<String>, TlsError> {
    use x509_parser::extensions::GeneralName;
    with_certificate(path, |certificate| {
        let names = certificate
            .subject_alternative_name()
            .map_err(|e| TlsError::Invalid(format!("{}: {e}", path.display())))?
            .map(|san| san.value.general_names.clone())
            .unwrap_or_default();
        Ok(names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                GeneralName::IPAddress(bytes) => ip_of(bytes).map(|ip| ip.to_string()),
                _ => None,
            })
            .collect())
    })
}

/// The address of an IP address SAN (4 or 16 bytes).
fn ip_of(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}

/// Reads the PEM certificate at `path` and hands it to `read`.
fn with_certificate<T>(
    path: &Path,
    read: impl FnOnce(&X509Certificate<'_>) -> Result<T, TlsError>,
) -> Result<T, TlsError> {
    let pem = fs::read(path).map_err(|source| TlsError::io(path, source))?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", path.display())))?;
    let (_, certificate) = X509Certificate::from_der(&pem.contents)
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", path.display())))?;
    read(&certificate)
}

fn unix_seconds(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn set_validity(params: &mut CertificateParams, now: SystemTime, lifetime: Duration) {
    params.not_before = (now - CLOCK_SKEW.min(lifetime / 4)).into();
    params.not_after = (now + lifetime).into();
}

fn read(path: &Path) -> Result<String, TlsError> {
    fs::read_to_string(path).map_err(|source| TlsError::io(path, source))
}

/// Creates `dir` (and its parents) and makes it accessible to its owner only.
fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    fs::create_dir_all(dir).map_err(|source| TlsError::io(dir, source))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|source| TlsError::io(dir, source))
}

/// Writes `contents` to `path` with `mode`, atomically.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    let temporary = path.with_extension(format!("tmp-{}", std::process::id()));
    let written = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temporary)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    })();
    written.map_err(|source| {
        let _ = fs::remove_file(&temporary);
        TlsError::io(path, source)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_authority_issues_identities_and_renews_them_late_in_life() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        init(&certs).unwrap();
        assert!(matches!(init(&certs), Err(TlsError::AlreadyExists(_))));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&certs), 0o700);
        assert_eq!(mode(&certs.join(CA_KEY)), 0o600);

        let grading = Identity::new("grading").unwrap();
        let lifetime = Duration::from_secs(3600);
        let extra = ["gradebook.example.org".to_owned(), "10.1.2.3".to_owned()];
        let cert = issue(&certs, &grading, lifetime, &extra).unwrap();
        assert_eq!(mode(&key_path(&certs, "grading")), 0o600);
        let pem = fs::read(&cert).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        assert_eq!(Identity::from_certificate(&pem.contents).unwrap(), grading);

        let now = SystemTime::now();
        let log = Identity::new("log").unwrap();
        let done = ensure(&certs, &[grading.clone(), log.clone()], lifetime, now).unwrap();
        assert_eq!(
            done,
            [(grading.clone(), Renewal::Kept), (log, Renewal::Issued)]
        );
        // Past two thirds of its life: renewed.
        let later = now + Duration::from_secs(2400);
        assert!(needs_renewal(&cert, later));
        let done = ensure(&certs, std::slice::from_ref(&grading), lifetime, later).unwrap();
        assert_eq!(done, [(grading, Renewal::Renewed)]);
        let names = names_of(&cert).unwrap();
        for name in [
            "grading.gradebook.local",
            "localhost",
            "::1",
            &extra[0],
            &extra[1],
        ] {
            assert!(names.iter().any(|n| n == name), "{name} kept: {names:?}");
        }
    }
}
