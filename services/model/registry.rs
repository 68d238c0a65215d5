//! Domain types of `gradebook.registry.v1`: instances, their health, record
//! versions and catalog changes, with validation of what clients send and the
//! conversions from and to [`crate::pb::registry::v1`].

use std::collections::BTreeMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

pub use crate::model::InvalidField;
use crate::model::time::{timestamp_from_pb, timestamp_to_pb};
use crate::model::traffic::PolicyRecord;
use crate::pb::registry::v1 as pb;

/// Longest accepted service name.
pub const MAX_SERVICE_NAME: usize = 63;
/// Longest accepted instance id.
pub const MAX_INSTANCE_ID: usize = 128;
/// Longest accepted advertised address.
pub const MAX_ADDRESS: usize = 261;
/// Longest accepted version string.
pub const MAX_VERSION: usize = 64;
/// Most metadata entries per instance.
pub const MAX_METADATA_ENTRIES: usize = 32;
/// Longest metadata key.
pub const MAX_METADATA_KEY: usize = 64;
/// Longest metadata value.
pub const MAX_METADATA_VALUE: usize = 256;
/// Most required services per instance.
pub const MAX_REQUIRES: usize = 32;
/// The metadata key naming the grpc.health.v1 service the registry checks
/// for an instance ("" when absent: the server as a whole). The SDK sets it
/// to the instance id, so that another process that later takes over the
/// same address is not mistaken for this instance.
pub const HEALTH_SERVICE_METADATA: &str = "grpc.health.service";

/// The health of an instance as the registry last observed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// Registered; no health check has answered yet.
    Unknown,
    /// Answers its health checks with SERVING.
    Serving,
    /// Answers, but reports NOT_SERVING (for example while draining).
    NotServing,
    /// Does not answer: connection refused or reset, or checks time out.
    Unreachable,
}

impl Health {
    /// Whether callers should send traffic to the instance.
    pub fn is_healthy(self) -> bool {
        self == Health::Serving
    }

    /// The name shown to people: `SERVING`, `UNREACHABLE`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "UNKNOWN",
            Health::Serving => "SERVING",
            Health::NotServing => "NOT_SERVING",
            Health::Unreachable => "UNREACHABLE",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The version of one catalog record: a hybrid logical clock reading and the
/// registry node that made the change. Versions of the same record are
/// totally ordered by `(counter, origin)`, so replicas can merge records
/// without any global counter.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RecordVersion {
    /// Microseconds since the Unix epoch, bumped past the previous version.
    pub counter: u64,
    /// The id of the registry node that made the change.
    pub origin: String,
}

/// A catalog record as registry nodes replicate it: an instance, or the
/// mark that it was removed, versioned like any change, so that an older
/// record of the instance held elsewhere cannot come back; or a service's
/// traffic policy (under its own key, see [`crate::model::traffic::policy_key`]).
#[derive(Debug, Clone, PartialEq)]
pub enum CatalogRecord {
    /// The instance as last changed.
    Live(Box<Instance>),
    /// The instance was removed by this version's change.
    Removed(RecordVersion),
    /// A service's traffic policy.
    Policy(Box<PolicyRecord>),
}

impl CatalogRecord {
    /// The version of the change the record holds.
    pub fn version(&self) -> &RecordVersion {
        match self {
            CatalogRecord::Live(instance) => &instance.record_version,
            CatalogRecord::Removed(version) => version,
            CatalogRecord::Policy(policy) => &policy.version,
        }
    }

    /// The instance, unless removed (or a policy).
    pub fn instance(&self) -> Option<&Instance> {
        match self {
            CatalogRecord::Live(instance) => Some(instance.as_ref()),
            CatalogRecord::Removed(_) | CatalogRecord::Policy(_) => None,
        }
    }

    /// The traffic policy, when the record is one.
    pub fn policy(&self) -> Option<&PolicyRecord> {
        match self {
            CatalogRecord::Policy(policy) => Some(policy.as_ref()),
            CatalogRecord::Live(_) | CatalogRecord::Removed(_) => None,
        }
    }
}

/// One registered instance of a service.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// The service's name.
    pub service: String,
    /// The instance's id, unique in the mesh.
    pub instance_id: String,
    /// Where peers reach it, `host:port`.
    pub address: String,
    /// The version of the software it runs.
    pub version: String,
    /// Free-form metadata.
    pub metadata: BTreeMap<String, String>,
    /// The services it requires.
    pub requires: Vec<String>,
    /// Its health as last observed.
    pub health: Health,
    /// The version of this record.
    pub record_version: RecordVersion,
    /// When it was first registered.
    pub registered_at: SystemTime,
    /// When its health service last answered or failed.
    pub last_check: Option<SystemTime>,
    /// Since when `health` has held.
    pub health_since: SystemTime,
    /// Why the last check failed, if it did.
    pub last_error: Option<String>,
}

impl Instance {
    /// A minimal instance at `{id}:1`, for tests.
    #[cfg(test)]
    pub(crate) fn for_test(service: &str, id: &str, health: Health) -> Self {
        Instance {
            service: service.into(),
            instance_id: id.into(),
            address: format!("{id}:1"),
            version: String::new(),
            metadata: BTreeMap::new(),
            requires: vec![],
            health,
            record_version: RecordVersion::default(),
            registered_at: UNIX_EPOCH,
            last_check: None,
            health_since: UNIX_EPOCH,
            last_error: None,
        }
    }
}

/// What a client asks to register, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    /// The service's name.
    pub service: String,
    /// The instance id, or `None` for the registry to generate one.
    pub instance_id: Option<String>,
    /// The advertised address, `host:port`.
    pub address: String,
    /// The software version.
    pub version: String,
    /// Free-form metadata.
    pub metadata: BTreeMap<String, String>,
    /// Required services, sorted and without duplicates.
    pub requires: Vec<String>,
}

impl Registration {
    /// The grpc.health.v1 service name to check for this instance.
    pub fn health_service(&self) -> String {
        self.metadata
            .get(HEALTH_SERVICE_METADATA)
            .cloned()
            .unwrap_or_default()
    }
}

/// What happened to an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// Newly registered.
    Added,
    /// Deregistered or evicted.
    Removed,
    /// Its health changed.
    HealthChanged,
    /// Re-registered with other details.
    Updated,
}

impl ChangeKind {
    /// The name shown to people.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "ADDED",
            ChangeKind::Removed => "REMOVED",
            ChangeKind::HealthChanged => "HEALTH_CHANGED",
            ChangeKind::Updated => "UPDATED",
        }
    }
}

/// One change to one instance, carrying the record after the change.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// What happened.
    pub kind: ChangeKind,
    /// The record after the change (for removals: as it was, with the
    /// removal's version).
    pub instance: Instance,
}

/// One message of a watch stream, as the SDK sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchUpdate {
    /// Everything about the watched services; replaces what was known.
    Snapshot {
        /// Every instance of the watched services.
        instances: Vec<Instance>,
        /// The registry node serving the stream.
        registry_node: String,
        /// The node has not caught up with its peers yet: instances may be
        /// missing, so nothing should be dropped for lacking here.
        catching_up: bool,
        /// The traffic policies of the watched services that have one.
        policies: Vec<PolicyRecord>,
    },
    /// One change after the snapshot.
    Change(Box<Change>),
    /// A watched service's traffic policy was set or cleared.
    Policy(Box<PolicyRecord>),
}

/// A message from the registry that the SDK cannot make sense of.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed registry message: {0}")]
pub struct MalformedMessage(pub String);

/// Checks a service name: 1 to 63 characters of `a-z`, `0-9` and `-`,
/// starting with a letter and not ending with `-`.
pub fn validate_service_name(field: &str, name: &str) -> Result<(), InvalidField> {
    if name.is_empty() {
        return Err(InvalidField::new(field, "must not be empty"));
    }
    if name.len() > MAX_SERVICE_NAME {
        return Err(InvalidField::new(
            field,
            format!(
                "{} characters is over the limit of {MAX_SERVICE_NAME}",
                name.len()
            ),
        ));
    }
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let starts_with_letter = name.as_bytes()[0].is_ascii_lowercase();
    if !valid_chars || !starts_with_letter || name.ends_with('-') {
        return Err(InvalidField::new(
            field,
            format!(
                "{name:?} is not a valid service name (lowercase letters, digits and '-', starting with a letter)"
            ),
        ));
    }
    Ok(())
}

/// Checks an instance id: 1 to 128 characters of letters, digits, `.`, `_`, `-`, `:`.
pub fn validate_instance_id(field: &str, id: &str) -> Result<(), InvalidField> {
    if id.is_empty() {
        return Err(InvalidField::new(field, "must not be empty"));
    }
    if id.len() > MAX_INSTANCE_ID {
        return Err(InvalidField::new(
            field,
            format!(
                "{} characters is over the limit of {MAX_INSTANCE_ID}",
                id.len()
            ),
        ));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
    {
        return Err(InvalidField::new(
            field,
            format!("{id:?} may only hold letters, digits, '.', '_', '-' and ':'"),
        ));
    }
    Ok(())
}

/// Checks an advertised address: `host:port` with a DNS name, an IPv4
/// address or a bracketed IPv6 address, and a port from 1 to 65535. Names
/// may hold `_`, as container names resolved by Docker's DNS do
/// (`gradebook_grading.2.xyz`).
pub fn validate_address(field: &str, address: &str) -> Result<(), InvalidField> {
    let invalid = |why: &str| InvalidField::new(field, format!("{address:?} {why}"));
    if address.is_empty() {
        return Err(InvalidField::new(field, "must not be empty"));
    }
    if address.len() > MAX_ADDRESS {
        return Err(invalid("is too long"));
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(invalid("is not host:port"));
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(invalid("has no valid port (1 to 65535)")),
    }
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    && !label.starts_with('-')
            })
    };
    if !host_ok {
        return Err(invalid(
            "has no valid host (a DNS name, an IPv4 address or [IPv6])",
        ));
    }
    Ok(())
}

fn check_len(field: &str, value: &str, max: usize) -> Result<(), InvalidField> {
    if value.len() > max {
        return Err(InvalidField::new(
            field,
            format!("{} bytes is over the limit of {max}", value.len()),
        ));
    }
    Ok(())
}

impl TryFrom<pb::RegisterRequest> for Registration {
    type Error = InvalidField;

    fn try_from(req: pb::RegisterRequest) -> Result<Self, InvalidField> {
        validate_service_name("service", &req.service)?;
        let instance_id = if req.instance_id.is_empty() {
            None
        } else {
            validate_instance_id("instance_id", &req.instance_id)?;
            Some(req.instance_id)
        };
        validate_address("address", &req.address)?;
        check_len("version", &req.version, MAX_VERSION)?;
        if req.metadata.len() > MAX_METADATA_ENTRIES {
            return Err(InvalidField::new(
                "metadata",
                format!(
                    "{} entries is over the limit of {MAX_METADATA_ENTRIES}",
                    req.metadata.len()
                ),
            ));
        }
        for (key, value) in &req.metadata {
            if key.is_empty() {
                return Err(InvalidField::new("metadata", "keys must not be empty"));
            }
            check_len("metadata key", key, MAX_METADATA_KEY)?;
            check_len(&format!("metadata[{key}]"), value, MAX_METADATA_VALUE)?;
        }
        if req.requires.len() > MAX_REQUIRES {
            return Err(InvalidField::new(
                "requires",
                format!(
                    "{} services is over the limit of {MAX_REQUIRES}",
                    req.requires.len()
                ),
            ));
        }
        for (i, name) in req.requires.iter().enumerate() {
            validate_service_name(&format!("requires[{i}]"), name)?;
        }
        let mut requires = req.requires;
        requires.sort();
        requires.dedup();
        Ok(Registration {
            service: req.service,
            instance_id,
            address: req.address,
            version: req.version,
            metadata: req.metadata.into_iter().collect(),
            requires,
        })
    }
}

impl From<&Registration> for pb::RegisterRequest {
    fn from(reg: &Registration) -> Self {
        pb::RegisterRequest {
            service: reg.service.clone(),
            instance_id: reg.instance_id.clone().unwrap_or_default(),
            address: reg.address.clone(),
            version: reg.version.clone(),
            metadata: reg.metadata.clone().into_iter().collect(),
            requires: reg.requires.clone(),
        }
    }
}

impl From<Health> for pb::HealthStatus {
    fn from(health: Health) -> Self {
        match health {
            Health::Unknown => pb::HealthStatus::Unknown,
            Health::Serving => pb::HealthStatus::Serving,
            Health::NotServing => pb::HealthStatus::NotServing,
            Health::Unreachable => pb::HealthStatus::Unreachable,
        }
    }
}

fn health_from_pb(value: i32) -> Result<Health, MalformedMessage> {
    match pb::HealthStatus::try_from(value) {
        Ok(pb::HealthStatus::Unknown) => Ok(Health::Unknown),
        Ok(pb::HealthStatus::Serving) => Ok(Health::Serving),
        Ok(pb::HealthStatus::NotServing) => Ok(Health::NotServing),
        Ok(pb::HealthStatus::Unreachable) => Ok(Health::Unreachable),
        _ => Err(MalformedMessage(format!("health: unknown value {value}"))),
    }
}

impl From<ChangeKind> for pb::ChangeKind {
    fn from(kind: ChangeKind) -> Self {
        match kind {
            ChangeKind::Added => pb::ChangeKind::Added,
            ChangeKind::Removed => pb::ChangeKind::Removed,
            ChangeKind::HealthChanged => pb::ChangeKind::HealthChanged,
            ChangeKind::Updated => pb::ChangeKind::Updated,
        }
    }
}

impl From<&Instance> for pb::Instance {
    fn from(i: &Instance) -> Self {
        pb::Instance {
            service: i.service.clone(),
            instance_id: i.instance_id.clone(),
            address: i.address.clone(),
            version: i.version.clone(),
            metadata: i.metadata.clone().into_iter().collect(),
            requires: i.requires.clone(),
            health: pb::HealthStatus::from(i.health) as i32,
            record_version: Some(pb::RecordVersion {
                counter: i.record_version.counter,
                origin: i.record_version.origin.clone(),
            }),
            registered_at: Some(timestamp_to_pb(i.registered_at)),
            last_check: i.last_check.map(timestamp_to_pb),
            health_since: Some(timestamp_to_pb(i.health_since)),
            last_error: i.last_error.clone().unwrap_or_default(),
        }
    }
}

impl TryFrom<pb::Instance> for Instance {
    type Error = MalformedMessage;

    fn try_from(i: pb::Instance) -> Result<Self, MalformedMessage> {
        let time = |field: &str, ts: Option<prost_types::Timestamp>| {
            ts.as_ref()
                .map(|ts| {
                    timestamp_from_pb(ts).map_err(|e| MalformedMessage(format!("{field}: {e}")))
                })
                .transpose()
        };
        let version = i.record_version.unwrap_or_default();
        Ok(Instance {
            health: health_from_pb(i.health)?,
            registered_at: time("registered_at", i.registered_at)?.unwrap_or(UNIX_EPOCH),
            last_check: time("last_check", i.last_check)?,
            health_since: time("health_since", i.health_since)?.unwrap_or(UNIX_EPOCH),
            service: i.service,
            instance_id: i.instance_id,
            address: i.address,
            version: i.version,
            metadata: i.metadata.into_iter().collect(),
            requires: i.requires,
            record_version: RecordVersion {
                counter: version.counter,
                origin: version.origin,
            },
            last_error: Some(i.last_error).filter(|e| !e.is_empty()),
        })
    }
}

impl From<&Change> for pb::WatchEvent {
    fn from(change: &Change) -> Self {
        pb::WatchEvent {
            event: Some(pb::watch_event::Event::Change(pb::InstanceChange {
                kind: pb::ChangeKind::from(change.kind) as i32,
                instance: Some(pb::Instance::from(&change.instance)),
            })),
        }
    }
}

/// Builds the snapshot message that starts (or restarts) a watch stream.
pub fn snapshot_event(
    instances: &[Instance],
    policies: &[&PolicyRecord],
    registry_node: &str,
    catching_up: bool,
) -> pb::WatchEvent {
    pb::WatchEvent {
        event: Some(pb::watch_event::Event::Snapshot(pb::Snapshot {
            instances: instances.iter().map(pb::Instance::from).collect(),
            registry_node: registry_node.to_owned(),
            catching_up,
            policies: policies
                .iter()
                .map(|p| pb::TrafficPolicy::from(*p))
                .collect(),
        })),
    }
}

/// The watch message that tells a policy's change.
pub fn policy_event(policy: &PolicyRecord) -> pb::WatchEvent {
    pb::WatchEvent {
        event: Some(pb::watch_event::Event::Policy(pb::TrafficPolicy::from(
            policy,
        ))),
    }
}

impl TryFrom<pb::WatchEvent> for WatchUpdate {
    type Error = MalformedMessage;

    fn try_from(event: pb::WatchEvent) -> Result<Self, MalformedMessage> {
        match event.event {
            Some(pb::watch_event::Event::Snapshot(snapshot)) => Ok(WatchUpdate::Snapshot {
                instances: snapshot
                    .instances
                    .into_iter()
                    .map(Instance::try_from)
                    .collect::<Result<_, _>>()?,
                registry_node: snapshot.registry_node,
                catching_up: snapshot.catching_up,
                policies: snapshot
                    .policies
                    .into_iter()
                    .enumerate()
                    .map(|(i, p)| PolicyRecord::from_pb(&format!("snapshot.policies[{i}]"), p))
                    .collect::<Result<_, _>>()
                    .map_err(|e| MalformedMessage(e.to_string()))?,
            }),
            Some(pb::watch_event::Event::Policy(policy)) => Ok(WatchUpdate::Policy(Box::new(
                PolicyRecord::from_pb("policy", policy)
                    .map_err(|e| MalformedMessage(e.to_string()))?,
            ))),
            Some(pb::watch_event::Event::Change(change)) => {
                let kind = match pb::ChangeKind::try_from(change.kind) {
                    Ok(pb::ChangeKind::Added) => ChangeKind::Added,
                    Ok(pb::ChangeKind::Removed) => ChangeKind::Removed,
                    Ok(pb::ChangeKind::HealthChanged) => ChangeKind::HealthChanged,
                    Ok(pb::ChangeKind::Updated) => ChangeKind::Updated,
                    _ => {
                        return Err(MalformedMessage(format!(
                            "change.kind: unknown value {}",
                            change.kind
                        )));
                    }
                };
                let instance = change
                    .instance
                    .ok_or_else(|| MalformedMessage("change.instance: missing".into()))?;
                Ok(WatchUpdate::Change(Box::new(Change {
                    kind,
                    instance: Instance::try_from(instance)?,
                })))
            }
            None => Err(MalformedMessage("event: empty".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn request() -> pb::RegisterRequest {
        pb::RegisterRequest {
            service: "grading".into(),
            address: "127.0.0.1:50053".into(),
            requires: vec!["log".into(), "log".into(), "audit".into()],
            ..Default::default()
        }
    }

    #[test]
    fn valid_registration_sorts_and_dedups_requires() {
        let reg = Registration::try_from(request()).unwrap();
        assert_eq!(reg.requires, vec!["audit", "log"]);
        assert_eq!(reg.instance_id, None);
    }

    #[test]
    fn invalid_fields_are_named() {
        type Mutation = fn(&mut pb::RegisterRequest);
        let cases: Vec<(Mutation, &str)> = vec![
            (|r| r.service.clear(), "service: must not be empty"),
            (
                |r| r.service = "Grading".into(),
                "service: \"Grading\" is not a valid service name",
            ),
            (|r| r.address.clear(), "address: must not be empty"),
            (
                |r| r.address = "localhost".into(),
                "address: \"localhost\" is not host:port",
            ),
            (|r| r.address = "host:0".into(), "has no valid port"),
            (|r| r.address = "ho st:80".into(), "has no valid host"),
            (|r| r.instance_id = "a/b".into(), "instance_id:"),
            (
                |r| r.requires = vec!["ok".into(), "".into()],
                "requires[1]: must not be empty",
            ),
            (
                |r| r.version = "v".repeat(65),
                "version: 65 bytes is over the limit of 64",
            ),
        ];
        for (mutate, expected) in cases {
            let mut req = request();
            mutate(&mut req);
            let err = Registration::try_from(req).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{err:?} should contain {expected:?}"
            );
        }
    }

    #[test]
    fn addresses() {
        for ok in [
            "a:1",
            "grading:50053",
            "10.0.0.1:80",
            "[::1]:50051",
            "my-host.example.com:443",
            "gradebook_grading.2.tv8x3lq1ldc4:50053",
        ] {
            assert!(validate_address("address", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ":80",
            "a:",
            "a:65536",
            "[::1:80",
            "-a:80",
            "a..b:80",
            "http://a:80",
        ] {
            assert!(validate_address("address", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn instance_round_trips_through_protobuf() {
        let instance = Instance {
            service: "log".into(),
            instance_id: "log-1".into(),
            address: "127.0.0.1:1".into(),
            version: "0.1.0".into(),
            metadata: [("zone".to_string(), "a".to_string())].into(),
            requires: vec!["registry".into()],
            health: Health::NotServing,
            record_version: RecordVersion {
                counter: 42,
                origin: "node".into(),
            },
            registered_at: UNIX_EPOCH + Duration::from_secs(10),
            last_check: Some(UNIX_EPOCH + Duration::from_millis(12_345)),
            health_since: UNIX_EPOCH + Duration::from_secs(11),
            last_error: Some("refused".into()),
        };
        let back = Instance::try_from(pb::Instance::from(&instance)).unwrap();
        assert_eq!(back, instance);
        let change = Change {
            kind: ChangeKind::HealthChanged,
            instance,
        };
        let update = WatchUpdate::try_from(pb::WatchEvent::from(&change)).unwrap();
        assert_eq!(update, WatchUpdate::Change(Box::new(change)));
    }
}
