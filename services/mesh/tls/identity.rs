//! Service identities: who a certificate says its holder is.
//!
//! An identity is a service name, written in a certificate as a SPIFFE-style
//! URI SAN (`spiffe://gradebook.local/service/grading`). Every certificate
//! of service `S` also carries the DNS name `S.gradebook.local`: a client
//! dialing an instance of `S` verifies the server under that name, so only a
//! holder of an `S` certificate can answer as `S`, whatever address it is at.
//! The name [`ADMIN`] is the operators' identity (the tools use it).

use std::fmt;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::model::registry::validate_service_name;

/// The trust domain of every identity in the mesh.
pub const TRUST_DOMAIN: &str = "gradebook.local";
/// The operators' identity: the tools (`services`, `logs`, ...) present it,
/// and it may do what a service may do only for itself.
pub const ADMIN: &str = "admin";

/// A certificate that does not name exactly one mesh identity, or is not a
/// certificate at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the certificate names no mesh identity: {0}")]
pub struct NoIdentity(pub String);

/// A service identity: the service a certificate was issued to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    service: String,
}

impl Identity {
    /// The identity of `service`, which must be a valid service name.
    pub fn new(service: &str) -> Result<Self, NoIdentity> {
        validate_service_name("service", service).map_err(|e| NoIdentity(e.to_string()))?;
        Ok(Identity {
            service: service.to_owned(),
        })
    }

    /// The operators' identity.
    pub fn admin() -> Self {
        Identity {
            service: ADMIN.to_owned(),
        }
    }

    /// The service this identity belongs to.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Whether this is the operators' identity.
    pub fn is_admin(&self) -> bool {
        self.service == ADMIN
    }

    /// The SPIFFE-style URI written in the certificate.
    pub fn uri(&self) -> String {
        format!("spiffe://{TRUST_DOMAIN}/service/{}", self.service)
    }

    /// The DNS name a client verifies the server's certificate under.
    pub fn server_name(&self) -> String {
        server_name(&self.service)
    }

    /// The identity a URI such as `spiffe://gradebook.local/service/log` names.
    pub fn from_uri(uri: &str) -> Option<Self> {
        let service = uri
            .strip_prefix("spiffe://")?
            .strip_prefix(TRUST_DOMAIN)?
            .strip_prefix("/service/")?;
        Identity::new(service).ok()
    }

    /// The one identity a DER certificate names.
    pub fn from_certificate(der: &[u8]) -> Result<Self, NoIdentity> {
        let (_, certificate) = X509Certificate::from_der(der)
            .map_err(|e| NoIdentity(format!("not a certificate: {e}")))?;
        let names = certificate
            .subject_alternative_name()
            .map_err(|e| NoIdentity(format!("unreadable subject alternative names: {e}")))?
            .map(|ext| ext.value.general_names.clone())
            .unwrap_or_default();
        let mut identities = names.iter().filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(*uri),
            _ => None,
        });
        match (identities.next(), identities.next()) {
            (Some(uri), None) => Identity::from_uri(uri)
                .ok_or_else(|| NoIdentity(format!("{uri:?} is not a {TRUST_DOMAIN} service"))),
            (None, _) => Err(NoIdentity("it has no spiffe:// URI".into())),
            (Some(_), Some(_)) => Err(NoIdentity("it has more than one spiffe:// URI".into())),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

/// The DNS name instances of `service` are verified under.
pub fn server_name(service: &str) -> String {
    format!("{service}.{TRUST_DOMAIN}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip_and_foreign_ones_are_refused() {
        let grading = Identity::new("grading").unwrap();
        assert_eq!(grading.uri(), "spiffe://gradebook.local/service/grading");
        assert_eq!(Identity::from_uri(&grading.uri()), Some(grading.clone()));
        assert_eq!(grading.server_name(), "grading.gradebook.local");
        for foreign in [
            "spiffe://example.org/service/grading",
            "spiffe://gradebook.local/user/grading",
            "spiffe://gradebook.local/service/Grading",
            "https://gradebook.local/service/grading",
        ] {
            assert_eq!(Identity::from_uri(foreign), None, "{foreign}");
        }
        assert!(Identity::admin().is_admin() && !grading.is_admin());
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        let err = Identity::from_certificate(b"not der").unwrap_err();
        assert!(err.to_string().contains("not a certificate"), "{err}");
    }
}
