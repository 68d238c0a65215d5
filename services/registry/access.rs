//! Who may change which catalog record, as a pure rule the core applies
//! under its lock: a caller registers, re-registers and deregisters only
//! instances of the service its certificate names; an instance id belongs
//! to the service that registered it first, so no other identity can take
//! it over; the operators' identity (`admin`) may deregister anything.
//! With TLS off every caller is unverified and everything is allowed.

use crate::mesh::tls::Caller;

/// Why a change was refused (PERMISSION_DENIED, with this message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The caller holds another identity than the service it registers.
    #[error("{caller} may register only instances of its own service, not of {service:?}")]
    OtherService {
        /// Who asked.
        caller: String,
        /// The service it tried to register.
        service: String,
    },
    /// The instance id belongs to another service.
    #[error(
        "instance {instance_id:?} is registered by service {owner:?}; {caller} cannot take it over"
    )]
    TakenOver {
        /// The instance.
        instance_id: String,
        /// The service that holds it.
        owner: String,
        /// Who asked.
        caller: String,
    },
    /// The caller may not remove this instance.
    #[error(
        "{caller} may deregister only instances of its own service, not {instance_id:?} of {owner:?}"
    )]
    NotOwner {
        /// The instance.
        instance_id: String,
        /// The service that holds it.
        owner: String,
        /// Who asked.
        caller: String,
    },
    /// Only the operators set traffic policies.
    #[error(
        "{caller} may not set the traffic policy of {service:?}: only the operators' identity (admin) may"
    )]
    NotOperator {
        /// Who asked.
        caller: String,
        /// The service.
        service: String,
    },
}

/// May `caller` set a service's traffic policy? Only the operators.
pub fn may_route(caller: &Caller, service: &str) -> Result<(), Denied> {
    if caller.is_admin() {
        return Ok(());
    }
    Err(Denied::NotOperator {
        caller: caller.to_string(),
        service: service.to_owned(),
    })
}

/// May `caller` register `instance_id` (when given) as an instance of
/// `service`, the id now held by `owner` (if registered)?
pub fn may_register(
    caller: &Caller,
    service: &str,
    instance_id: Option<&str>,
    owner: Option<&str>,
) -> Result<(), Denied> {
    if !caller.acts_for(service) {
        return Err(Denied::OtherService {
            caller: caller.to_string(),
            service: service.to_owned(),
        });
    }
    match (instance_id, owner) {
        (Some(instance_id), Some(owner)) if !caller.acts_for(owner) => Err(Denied::TakenOver {
            instance_id: instance_id.to_owned(),
            owner: owner.to_owned(),
            caller: caller.to_string(),
        }),
        _ => Ok(()),
    }
}

/// May `caller` deregister `instance_id`, held by `owner` (if registered)?
pub fn may_deregister(
    caller: &Caller,
    instance_id: &str,
    owner: Option<&str>,
) -> Result<(), Denied> {
    match owner {
        Some(owner) if !caller.acts_for(owner) && !caller.is_admin() => Err(Denied::NotOwner {
            instance_id: instance_id.to_owned(),
            owner: owner.to_owned(),
            caller: caller.to_string(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::tls::Identity;

    fn service(name: &str) -> Caller {
        Caller::Service(Identity::new(name).unwrap())
    }

    #[test]
    fn a_service_registers_only_itself_and_keeps_its_ids() {
        let grading = service("grading");
        assert_eq!(may_register(&grading, "grading", Some("g-1"), None), Ok(()));
        assert_eq!(
            may_register(&grading, "grading", Some("g-1"), Some("grading")),
            Ok(())
        );
        assert!(matches!(
            may_register(&grading, "log", None, None),
            Err(Denied::OtherService { .. })
        ));
        let takeover = may_register(&service("log"), "log", Some("g-1"), Some("grading"));
        assert!(
            matches!(takeover, Err(Denied::TakenOver { .. })),
            "{takeover:?}"
        );
        let message = takeover.unwrap_err().to_string();
        assert!(
            message.contains("g-1") && message.contains("grading"),
            "{message}"
        );
        // Nobody registers without a certificate; the operators do not
        // register instances either.
        assert!(may_register(&Caller::Anonymous, "grading", None, None).is_err());
        assert!(may_register(&Caller::Service(Identity::admin()), "grading", None, None).is_err());
        // With TLS off, anything goes.
        assert_eq!(
            may_register(&Caller::Unverified, "log", Some("g-1"), Some("grading")),
            Ok(())
        );
    }

    #[test]
    fn the_owner_or_an_operator_deregisters() {
        assert_eq!(
            may_deregister(&service("grading"), "g-1", Some("grading")),
            Ok(())
        );
        assert_eq!(
            may_deregister(&Caller::Service(Identity::admin()), "g-1", Some("grading")),
            Ok(())
        );
        assert!(matches!(
            may_deregister(&service("log"), "g-1", Some("grading")),
            Err(Denied::NotOwner { .. })
        ));
        assert!(may_deregister(&Caller::Anonymous, "g-1", Some("grading")).is_err());
        // An unknown id: nothing to protect; the answer is "not removed".
        assert_eq!(may_deregister(&service("log"), "g-9", None), Ok(()));
    }

    #[test]
    fn only_operators_route() {
        assert_eq!(
            may_route(&Caller::Service(Identity::admin()), "grading"),
            Ok(())
        );
        assert_eq!(may_route(&Caller::Unverified, "grading"), Ok(()));
        let denied = may_route(&service("grading"), "grading").unwrap_err();
        assert!(denied.to_string().contains("admin"), "{denied}");
        assert!(may_route(&Caller::Anonymous, "grading").is_err());
    }
}
