//! Domain types of `gradebook.supervisor.v1`, the control contract of
//! `gradebook up`: a rollout as asked ([`RolloutPlan`], checked), and its
//! progress, with the conversions from and to [`crate::pb::supervisor::v1`].

use std::path::PathBuf;
use std::time::Duration;

use crate::model::InvalidField;
use crate::model::registry::validate_service_name;
use crate::pb::supervisor::v1 as pb;
use crate::rollout::FailureLimit;
use crate::rollout::rolling::RollingSettings;

/// The longest wait a rollout setting may ask for.
pub const MAX_SETTING: Duration = Duration::from_secs(3600);

/// A rolling update as asked, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutPlan {
    /// The service.
    pub service: String,
    /// The new binary, an absolute path.
    pub binary: PathBuf,
    /// How new instances are judged.
    pub settings: RollingSettings,
    /// Flags for the new instances, as (flag, value), each replacing the
    /// old instances' same flag.
    pub args: Vec<(String, String)>,
}

/// The flags of a daemon's command line that `up` sets itself.
pub const MANAGED_FLAGS: [&str; 4] = ["--listen", "--registry", "--certs", "--insecure"];

/// Reads flags given as pairs (`--report-version`, `2.0.0`).
fn flags_from_pb(args: Vec<String>) -> Result<Vec<(String, String)>, InvalidField> {
    if !args.len().is_multiple_of(2) {
        return Err(InvalidField::new(
            "args",
            "must come in pairs of a flag and its value",
        ));
    }
    args.chunks(2)
        .enumerate()
        .map(|(i, pair)| {
            let (flag, value) = (&pair[0], &pair[1]);
            if !flag.starts_with("--") || flag.len() < 3 {
                return Err(InvalidField::new(
                    format!("args[{}]", 2 * i),
                    format!("{flag:?} is not a --flag"),
                ));
            }
            if MANAGED_FLAGS.contains(&flag.as_str()) {
                return Err(InvalidField::new(
                    format!("args[{}]", 2 * i),
                    format!("{flag} is set by gradebook up itself"),
                ));
            }
            Ok((flag.clone(), value.clone()))
        })
        .collect()
}

/// How a rollout ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every old instance was replaced.
    Done,
    /// A new instance failed; the old ones were put back.
    RolledBack,
}

/// One step of a rollout, for a person; the last one says how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// What happened.
    pub message: String,
    /// How it ended, on the last message.
    pub outcome: Option<Outcome>,
}

fn duration_from_pb(
    field: &str,
    duration: Option<prost_types::Duration>,
    default: Duration,
) -> Result<Duration, InvalidField> {
    let Some(duration) = duration else {
        return Ok(default);
    };
    let converted = Duration::try_from(duration)
        .map_err(|_| InvalidField::new(field, "must be a positive duration"))?;
    if converted.is_zero() || converted > MAX_SETTING {
        return Err(InvalidField::new(
            field,
            format!("{converted:?} is not between 0 and {MAX_SETTING:?}"),
        ));
    }
    Ok(converted)
}

fn duration_to_pb(duration: Duration) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(duration).ok()
}

impl TryFrom<pb::RolloutRequest> for RolloutPlan {
    type Error = InvalidField;

    fn try_from(request: pb::RolloutRequest) -> Result<Self, InvalidField> {
        validate_service_name("service", &request.service)?;
        let binary = PathBuf::from(&request.binary);
        if !binary.is_absolute() {
            return Err(InvalidField::new(
                "binary",
                format!("{:?} is not an absolute path", request.binary),
            ));
        }
        let defaults = RollingSettings::default();
        let given = request.settings.unwrap_or_default();
        let max_error_ratio = match given.max_error_ratio {
            0.0 => defaults.failures.max_error_ratio,
            ratio if (0.0..=1.0).contains(&ratio) => ratio,
            ratio => {
                return Err(InvalidField::new(
                    "settings.max_error_ratio",
                    format!("{ratio} is not between 0 and 1"),
                ));
            }
        };
        let settings = RollingSettings {
            ready_timeout: duration_from_pb(
                "settings.ready_timeout",
                given.ready_timeout,
                defaults.ready_timeout,
            )?,
            observe: duration_from_pb("settings.observe", given.observe, defaults.observe)?,
            failures: FailureLimit {
                min_requests: given.min_requests,
                max_error_ratio,
            },
            drain_timeout: defaults.drain_timeout,
        };
        Ok(RolloutPlan {
            service: request.service,
            binary,
            settings,
            args: flags_from_pb(request.args)?,
        })
    }
}

impl From<&RolloutPlan> for pb::RolloutRequest {
    fn from(plan: &RolloutPlan) -> Self {
        pb::RolloutRequest {
            service: plan.service.clone(),
            binary: plan.binary.display().to_string(),
            settings: Some(pb::RollingSettings {
                ready_timeout: duration_to_pb(plan.settings.ready_timeout),
                observe: duration_to_pb(plan.settings.observe),
                min_requests: plan.settings.failures.min_requests,
                max_error_ratio: plan.settings.failures.max_error_ratio,
            }),
            args: plan
                .args
                .iter()
                .flat_map(|(flag, value)| [flag.clone(), value.clone()])
                .collect(),
        }
    }
}

impl From<&Progress> for pb::RolloutProgress {
    fn from(progress: &Progress) -> Self {
        let outcome = match progress.outcome {
            None => pb::Outcome::Unspecified,
            Some(Outcome::Done) => pb::Outcome::Done,
            Some(Outcome::RolledBack) => pb::Outcome::RolledBack,
        };
        pb::RolloutProgress {
            message: progress.message.clone(),
            outcome: outcome as i32,
        }
    }
}

impl From<pb::RolloutProgress> for Progress {
    fn from(progress: pb::RolloutProgress) -> Self {
        let outcome = match pb::Outcome::try_from(progress.outcome) {
            Ok(pb::Outcome::Done) => Some(Outcome::Done),
            Ok(pb::Outcome::RolledBack) => Some(Outcome::RolledBack),
            _ => None,
        };
        Progress {
            message: progress.message,
            outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_cross_the_wire_and_bad_ones_name_their_field() {
        let plan = RolloutPlan {
            service: "grading".into(),
            binary: "/opt/gradebook-2".into(),
            settings: RollingSettings {
                observe: Duration::from_secs(2),
                ..RollingSettings::default()
            },
            args: vec![("--report-version".into(), "2.0.0".into())],
        };
        assert_eq!(
            RolloutPlan::try_from(pb::RolloutRequest::from(&plan)),
            Ok(plan.clone())
        );
        let relative = pb::RolloutRequest {
            binary: "gradebook".into(),
            ..pb::RolloutRequest::from(&plan)
        };
        assert_eq!(RolloutPlan::try_from(relative).unwrap_err().field, "binary");
        let mut bad_ratio = pb::RolloutRequest::from(&plan);
        bad_ratio.settings.as_mut().unwrap().max_error_ratio = 2.0;
        assert_eq!(
            RolloutPlan::try_from(bad_ratio).unwrap_err().field,
            "settings.max_error_ratio"
        );
        let mut zero = pb::RolloutRequest::from(&plan);
        zero.settings.as_mut().unwrap().observe = Some(prost_types::Duration::default());
        assert_eq!(
            RolloutPlan::try_from(zero).unwrap_err().field,
            "settings.observe"
        );
        for (args, field) in [
            (vec!["--report-version"], "args"),
            (vec!["report-version", "2"], "args[0]"),
            (vec!["--listen", "x:1"], "args[0]"),
        ] {
            let request = pb::RolloutRequest {
                args: args.into_iter().map(String::from).collect(),
                ..pb::RolloutRequest::from(&plan)
            };
            assert_eq!(RolloutPlan::try_from(request).unwrap_err().field, field);
        }
        let progress = Progress {
            message: "done".into(),
            outcome: Some(Outcome::RolledBack),
        };
        assert_eq!(
            Progress::from(pb::RolloutProgress::from(&progress)),
            progress
        );
    }
}
