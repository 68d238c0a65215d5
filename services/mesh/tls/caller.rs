//! Who made a request, as a service's authorization sees it: read from the
//! connection's verified identity ([`Peer`]) and the server's TLS setting.

use crate::mesh::tls::{Identity, Peer, Tls};

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// TLS is off (`--insecure`): nobody is verified, everything is allowed.
    Unverified,
    /// TLS is on but the caller presented no certificate.
    Anonymous,
    /// A caller holding a certificate of this identity.
    Service(Identity),
}

impl Caller {
    /// The caller of `request` on a server secured by `tls`.
    pub fn of<T>(request: &tonic::Request<T>, tls: &Tls) -> Caller {
        if !tls.is_on() {
            return Caller::Unverified;
        }
        match request
            .extensions()
            .get::<Peer>()
            .and_then(|peer| peer.identity.clone())
        {
            Some(identity) => Caller::Service(identity),
            None => Caller::Anonymous,
        }
    }

    /// Whether this caller may act for `service`: it holds that identity
    /// (or nothing is verified).
    pub fn acts_for(&self, service: &str) -> bool {
        match self {
            Caller::Unverified => true,
            Caller::Anonymous => false,
            Caller::Service(identity) => identity.service() == service,
        }
    }

    /// Whether this caller is the operators' identity (or nothing is verified).
    pub fn is_admin(&self) -> bool {
        match self {
            Caller::Unverified => true,
            Caller::Anonymous => false,
            Caller::Service(identity) => identity.is_admin(),
        }
    }
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Unverified => f.write_str("an unverified caller"),
            Caller::Anonymous => f.write_str("a caller without a certificate"),
            Caller::Service(identity) => write!(f, "{identity}"),
        }
    }
}
