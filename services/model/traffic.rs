//! Traffic policies (the routing part of the registry package): how the
//! callers of a service split their requests between the versions its
//! instances run. The default sends to every healthy instance alike; a
//! weighted policy splits by version (a canary: `2.0.0=10, 1.4.0=90`); a
//! single active version is a blue-green switch.
//!
//! The policy picks a version group once per request ([`TrafficPolicy::choose`],
//! given a roll the caller draws), so that a request's retries stay within
//! one version; the balancer then picks an instance within the group. A
//! policy never makes a request fail that could be served: a version with
//! no healthy instance gets none of the traffic, its share going to the
//! others in proportion, and when none of the policy's versions has one,
//! every healthy instance serves (the caller counts that as a fallback).

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::model::InvalidField;
use crate::model::registry::{MAX_VERSION, RecordVersion, validate_service_name};
use crate::model::time::{timestamp_from_pb, timestamp_to_pb};
use crate::pb::registry::v1 as pb;

/// How the key of a service's policy begins among the replicated catalog's
/// keys (instance ids cannot contain `/`, so the two never meet).
pub const POLICY_KEY_PREFIX: &str = "policy/";

/// The largest weight of one version; weights are shares of this total.
pub const TOTAL_WEIGHT: u32 = 100;

/// How a service's callers split their requests between versions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TrafficPolicy {
    /// Every healthy instance, alike.
    #[default]
    Equal,
    /// Shares by version, sorted by version, each version once, adding up
    /// to [`TOTAL_WEIGHT`]. A version may have 0 (it gets no traffic).
    Weights(Vec<(String, u32)>),
    /// Only the instances of one version.
    Only(String),
}

/// Why a policy was refused; the message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPolicy {
    /// A `VERSION=WEIGHT` that does not parse.
    #[error("weight {given:?}: expected VERSION=WEIGHT, for example 2.0.0=10")]
    Syntax {
        /// What was given.
        given: String,
    },
    /// An empty, too long or non-printable version.
    #[error(
        "version {given:?}: must be 1 to {MAX_VERSION} printable ASCII characters without spaces"
    )]
    Version {
        /// What was given.
        given: String,
    },
    /// A version named twice.
    #[error("version {version:?} is given twice")]
    Repeated {
        /// The version.
        version: String,
    },
    /// Weights that do not add up to the total.
    #[error("the weights add up to {sum}, not {TOTAL_WEIGHT}")]
    Sum {
        /// What they add up to.
        sum: u64,
    },
    /// No weight at all.
    #[error("a weighted policy needs at least one VERSION=WEIGHT")]
    Empty,
    /// A version no instance of the service runs.
    #[error("version {version:?}: no instance of {service:?} runs it (running: {running})")]
    Unknown {
        /// The service.
        service: String,
        /// The version.
        version: String,
        /// The versions its instances run, comma-separated.
        running: String,
    },
}

/// A service's traffic policy as the registry holds it: versioned like any
/// catalog record, the newest winning across registry nodes. Clearing a
/// policy sets [`TrafficPolicy::Equal`], a record like the others, so that
/// an older policy held elsewhere cannot come back.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRecord {
    /// The service.
    pub service: String,
    /// The policy.
    pub policy: TrafficPolicy,
    /// The version of the change that set it.
    pub version: RecordVersion,
    /// When it was set.
    pub set_at: SystemTime,
}

/// The key of `service`'s policy among the replicated catalog's keys.
pub fn policy_key(service: &str) -> String {
    format!("{POLICY_KEY_PREFIX}{service}")
}

/// The service whose policy `key` is, when it is a policy's key.
pub fn policy_service(key: &str) -> Option<&str> {
    key.strip_prefix(POLICY_KEY_PREFIX)
}

/// Which instances serve one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice<'a> {
    /// Every healthy instance.
    Any,
    /// The healthy instances of this version.
    Version(&'a str),
    /// Every healthy instance, because no version of the policy has one.
    Fallback,
}

/// Refuses a version a policy (or `--report-version`) cannot name: empty,
/// longer than [`MAX_VERSION`], or not printable ASCII without spaces.
pub fn check_version(version: &str) -> Result<(), InvalidPolicy> {
    let printable = version.bytes().all(|b| b.is_ascii_graphic());
    if version.is_empty() || version.len() > MAX_VERSION || !printable {
        return Err(InvalidPolicy::Version {
            given: version.chars().take(80).collect(),
        });
    }
    Ok(())
}

/// Parses one `VERSION=WEIGHT` (the `--weight` of `gradebook route`).
pub fn parse_weight(text: &str) -> Result<(String, u32), InvalidPolicy> {
    let syntax = || InvalidPolicy::Syntax {
        given: text.chars().take(80).collect(),
    };
    let (version, weight) = text.rsplit_once('=').ok_or_else(syntax)?;
    let weight: u32 = weight.trim().parse().map_err(|_| syntax())?;
    let version = version.trim();
    check_version(version)?;
    Ok((version.to_owned(), weight))
}

impl TrafficPolicy {
    /// A weighted policy, checked: valid versions, each once, weights
    /// adding up to [`TOTAL_WEIGHT`].
    pub fn weights(mut weights: Vec<(String, u32)>) -> Result<Self, InvalidPolicy> {
        if weights.is_empty() {
            return Err(InvalidPolicy::Empty);
        }
        for (version, _) in &weights {
            check_version(version)?;
        }
        weights.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(pair) = weights.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(InvalidPolicy::Repeated {
                version: pair[0].0.clone(),
            });
        }
        let sum: u64 = weights.iter().map(|(_, w)| u64::from(*w)).sum();
        if sum != u64::from(TOTAL_WEIGHT) {
            return Err(InvalidPolicy::Sum { sum });
        }
        Ok(TrafficPolicy::Weights(weights))
    }

    /// A blue-green policy: only `version`.
    pub fn only(version: &str) -> Result<Self, InvalidPolicy> {
        check_version(version)?;
        Ok(TrafficPolicy::Only(version.to_owned()))
    }

    /// The versions the policy names.
    pub fn versions(&self) -> Vec<&str> {
        match self {
            TrafficPolicy::Equal => Vec::new(),
            TrafficPolicy::Weights(weights) => weights.iter().map(|(v, _)| v.as_str()).collect(),
            TrafficPolicy::Only(version) => vec![version.as_str()],
        }
    }

    /// The share of [`TOTAL_WEIGHT`] the policy gives `version` (while
    /// every version it names is available); `None` for the default, which
    /// shares by instance, not by version.
    pub fn share(&self, version: &str) -> Option<u32> {
        match self {
            TrafficPolicy::Equal => None,
            TrafficPolicy::Weights(weights) => Some(
                weights
                    .iter()
                    .find(|(v, _)| v == version)
                    .map_or(0, |(_, w)| *w),
            ),
            TrafficPolicy::Only(only) => Some(if only == version { TOTAL_WEIGHT } else { 0 }),
        }
    }

    /// Refuses a policy that names a version no instance of `service` runs
    /// (`running`: the versions of its registered instances).
    pub fn check_known(
        &self,
        service: &str,
        running: &BTreeSet<&str>,
    ) -> Result<(), InvalidPolicy> {
        match self.versions().into_iter().find(|v| !running.contains(v)) {
            None => Ok(()),
            Some(version) => Err(InvalidPolicy::Unknown {
                service: service.to_owned(),
                version: version.to_owned(),
                running: running.iter().copied().collect::<Vec<_>>().join(", "),
            }),
        }
    }

    /// The instances that serve a request, given the versions that have a
    /// healthy instance now (`available`) and the request's `roll`, drawn
    /// uniformly by the caller (any `u32`). Shares of versions that are not
    /// available go to the others in proportion.
    pub fn choose<'a>(&'a self, available: &BTreeSet<&str>, roll: u32) -> Choice<'a> {
        match self {
            TrafficPolicy::Equal => Choice::Any,
            TrafficPolicy::Only(version) if available.contains(version.as_str()) => {
                Choice::Version(version)
            }
            TrafficPolicy::Only(_) => Choice::Fallback,
            TrafficPolicy::Weights(weights) => {
                let live = || {
                    weights
                        .iter()
                        .filter(|(v, w)| *w > 0 && available.contains(v.as_str()))
                };
                let total: u64 = live().map(|(_, w)| u64::from(*w)).sum();
                if total == 0 {
                    return Choice::Fallback;
                }
                let mut point = u64::from(roll) % total;
                for (version, weight) in live() {
                    let weight = u64::from(*weight);
                    if point < weight {
                        return Choice::Version(version);
                    }
                    point -= weight;
                }
                Choice::Fallback
            }
        }
    }
}

impl std::fmt::Display for TrafficPolicy {
    /// `every healthy instance`, `2.0.0=10, 1.4.0=90` or `only 2.0.0`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrafficPolicy::Equal => f.write_str("every healthy instance"),
            TrafficPolicy::Weights(weights) => {
                let pairs: Vec<String> = weights.iter().map(|(v, w)| format!("{v}={w}")).collect();
                f.write_str(&pairs.join(", "))
            }
            TrafficPolicy::Only(version) => write!(f, "only {version}"),
        }
    }
}

impl From<&PolicyRecord> for pb::TrafficPolicy {
    fn from(record: &PolicyRecord) -> Self {
        let rule = match &record.policy {
            TrafficPolicy::Equal => None,
            TrafficPolicy::Weights(weights) => {
                Some(pb::traffic_policy::Rule::Weights(pb::VersionWeights {
                    weights: weights
                        .iter()
                        .map(|(version, weight)| pb::VersionWeight {
                            version: version.clone(),
                            weight: *weight,
                        })
                        .collect(),
                }))
            }
            TrafficPolicy::Only(version) => Some(pb::traffic_policy::Rule::Only(version.clone())),
        };
        pb::TrafficPolicy {
            service: record.service.clone(),
            rule,
            record_version: Some(pb::RecordVersion {
                counter: record.version.counter,
                origin: record.version.origin.clone(),
            }),
            set_at: Some(timestamp_to_pb(record.set_at)),
        }
    }
}

/// The service and rule of a policy as a client sends it (`field` names
/// the message in errors); its version and time are left out.
pub fn policy_from_pb(
    field: &str,
    policy: &pb::TrafficPolicy,
) -> Result<(String, TrafficPolicy), InvalidField> {
    validate_service_name(&format!("{field}.service"), &policy.service)?;
    let rule = match &policy.rule {
        None => Ok(TrafficPolicy::Equal),
        Some(pb::traffic_policy::Rule::Weights(weights)) => TrafficPolicy::weights(
            weights
                .weights
                .iter()
                .map(|w| (w.version.clone(), w.weight))
                .collect(),
        )
        .map_err(|e| InvalidField::new(format!("{field}.weights"), e.to_string())),
        Some(pb::traffic_policy::Rule::Only(version)) => TrafficPolicy::only(version)
            .map_err(|e| InvalidField::new(format!("{field}.only"), e.to_string())),
    }?;
    Ok((policy.service.clone(), rule))
}

impl PolicyRecord {
    /// A record as the registry sent it (in a watch or to a peer); `field`
    /// names the message in errors.
    pub fn from_pb(field: &str, policy: pb::TrafficPolicy) -> Result<Self, InvalidField> {
        let (service, rule) = policy_from_pb(field, &policy)?;
        let version = policy
            .record_version
            .ok_or_else(|| InvalidField::new(format!("{field}.record_version"), "missing"))?;
        let set_at = match &policy.set_at {
            Some(ts) => timestamp_from_pb(ts)
                .map_err(|e| InvalidField::new(format!("{field}.set_at"), e.to_string()))?,
            None => UNIX_EPOCH,
        };
        Ok(PolicyRecord {
            service,
            policy: rule,
            version: RecordVersion {
                counter: version.counter,
                origin: version.origin,
            },
            set_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_cross_the_wire_unchanged_and_bad_rules_name_their_field() {
        for policy in [
            TrafficPolicy::Equal,
            canary(),
            TrafficPolicy::only("2.0.0").unwrap(),
        ] {
            let record = PolicyRecord {
                service: "grading".into(),
                policy,
                version: RecordVersion {
                    counter: 7,
                    origin: "registry-1".into(),
                },
                set_at: UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
            };
            let wire = pb::TrafficPolicy::from(&record);
            assert_eq!(PolicyRecord::from_pb("policy", wire), Ok(record));
        }
        let bad = pb::TrafficPolicy {
            service: "grading".into(),
            rule: Some(pb::traffic_policy::Rule::Weights(pb::VersionWeights {
                weights: vec![pb::VersionWeight {
                    version: "2.0.0".into(),
                    weight: 50,
                }],
            })),
            ..Default::default()
        };
        let error = policy_from_pb("policy", &bad).unwrap_err();
        assert_eq!(
            error.to_string(),
            "policy.weights: the weights add up to 50, not 100"
        );
        let unnamed = pb::TrafficPolicy::default();
        assert_eq!(
            policy_from_pb("policy", &unnamed).unwrap_err().field,
            "policy.service"
        );
        assert_eq!(policy_service(&policy_key("grading")), Some("grading"));
        assert_eq!(policy_service("grading-1"), None);
    }

    fn set<'a>(versions: &[&'a str]) -> BTreeSet<&'a str> {
        versions.iter().copied().collect()
    }

    fn canary() -> TrafficPolicy {
        TrafficPolicy::weights(vec![("2.0.0".into(), 10), ("1.4.0".into(), 90)]).unwrap()
    }

    #[test]
    fn weights_parse_and_bad_ones_say_what_is_wrong() {
        assert_eq!(parse_weight("2.0.0=10"), Ok(("2.0.0".into(), 10)));
        assert_eq!(parse_weight(" 1.4.0 = 90"), Ok(("1.4.0".into(), 90)));
        assert!(matches!(
            parse_weight("2.0.0"),
            Err(InvalidPolicy::Syntax { .. })
        ));
        assert!(matches!(
            parse_weight("2.0.0=-1"),
            Err(InvalidPolicy::Syntax { .. })
        ));
        assert!(matches!(
            parse_weight("=10"),
            Err(InvalidPolicy::Version { .. })
        ));
        assert!(matches!(
            parse_weight("a b=10"),
            Err(InvalidPolicy::Version { .. })
        ));

        let sum = TrafficPolicy::weights(vec![("2.0.0".into(), 10), ("1.4.0".into(), 80)]);
        assert_eq!(sum, Err(InvalidPolicy::Sum { sum: 90 }));
        assert_eq!(
            sum.unwrap_err().to_string(),
            "the weights add up to 90, not 100"
        );
        let twice = TrafficPolicy::weights(vec![("2.0.0".into(), 50), ("2.0.0".into(), 50)]);
        assert_eq!(
            twice,
            Err(InvalidPolicy::Repeated {
                version: "2.0.0".into()
            })
        );
        assert_eq!(TrafficPolicy::weights(vec![]), Err(InvalidPolicy::Empty));
        assert_eq!(canary().to_string(), "1.4.0=90, 2.0.0=10");
        assert_eq!(TrafficPolicy::Equal.to_string(), "every healthy instance");
    }

    #[test]
    fn a_policy_naming_a_version_nobody_runs_is_refused() {
        let running = set(&["1.4.0"]);
        let error = canary().check_known("grading", &running).unwrap_err();
        assert_eq!(
            error.to_string(),
            "version \"2.0.0\": no instance of \"grading\" runs it (running: 1.4.0)"
        );
        assert!(
            canary()
                .check_known("grading", &set(&["1.4.0", "2.0.0"]))
                .is_ok()
        );
        assert!(
            TrafficPolicy::Equal
                .check_known("grading", &set(&[]))
                .is_ok()
        );
    }

    #[test]
    fn rolls_split_by_weight_and_missing_versions_give_their_share_away() {
        let policy = canary();
        let both = set(&["1.4.0", "2.0.0"]);
        let mut canary_share = 0;
        for roll in 0..1000 {
            if policy.choose(&both, roll) == Choice::Version("2.0.0") {
                canary_share += 1;
            }
        }
        assert_eq!(canary_share, 100);
        // The canary down: every request to the stable version.
        let stable = set(&["1.4.0"]);
        assert!((0..1000).all(|roll| policy.choose(&stable, roll) == Choice::Version("1.4.0")));
        // Neither version healthy: every healthy instance, as a fallback.
        assert_eq!(policy.choose(&set(&["3.0.0"]), 7), Choice::Fallback);
        // A weight of 0 gets nothing, even alone.
        let drained =
            TrafficPolicy::weights(vec![("2.0.0".into(), 0), ("1.4.0".into(), 100)]).unwrap();
        assert_eq!(drained.choose(&set(&["2.0.0"]), 3), Choice::Fallback);
        assert_eq!(drained.choose(&both, u32::MAX), Choice::Version("1.4.0"));
    }

    #[test]
    fn only_one_version_or_every_instance() {
        let blue_green = TrafficPolicy::only("2.0.0").unwrap();
        assert_eq!(
            blue_green.choose(&set(&["1.4.0", "2.0.0"]), 1),
            Choice::Version("2.0.0")
        );
        assert_eq!(blue_green.choose(&set(&["1.4.0"]), 1), Choice::Fallback);
        assert_eq!(
            TrafficPolicy::Equal.choose(&set(&["1.4.0"]), 1),
            Choice::Any
        );
        assert!(TrafficPolicy::only("").is_err());
        assert_eq!(blue_green.share("2.0.0"), Some(100));
        assert_eq!(blue_green.share("1.4.0"), Some(0));
        assert_eq!(canary().share("2.0.0"), Some(10));
        assert_eq!(canary().share("9.9.9"), Some(0));
        assert_eq!(TrafficPolicy::Equal.share("1.4.0"), None);
    }
}
