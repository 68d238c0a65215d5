//! Domain types of `gradebook.supervisor.v1`, the control contract of
//! `gradebook up`: a rollout as asked ([`RolloutPlan`], checked), and its
//! progress, with the conversions from and to [`crate::pb::supervisor::v1`].

use std::path::PathBuf;
use std::time::Duration;

use crate::model::InvalidField;
use crate::model::registry::validate_service_name;
use crate::pb::supervisor::v1 as pb;
use crate::rollout::FailureLimit;
use crate::rollout::canary::CanarySettings;
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
    /// How the traffic moves to the new version.
    pub strategy: Strategy,
}

/// How a rollout moves the traffic to the new version.
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// Instances replaced one at a time.
    Rolling,
    /// A full new set, every request switched at once, the old set kept
    /// until concluded.
    BlueGreen,
    /// A full new set, given a growing share step by step.
    Canary(CanarySettings),
}

/// How a blue-green switch ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conclusion {
    /// The old set drains.
    Finish,
    /// Every request back to the old set; the new one stops.
    RollBack,
}

/// The steps of a canary unless told.
pub const DEFAULT_CANARY_STEPS: [u32; 4] = [5, 25, 50, 100];
/// How long a canary step lasts unless told.
pub const DEFAULT_CANARY_INTERVAL: Duration = Duration::from_secs(30);

impl TryFrom<pb::ConcludeRequest> for (String, Conclusion) {
    type Error = InvalidField;

    fn try_from(request: pb::ConcludeRequest) -> Result<Self, InvalidField> {
        validate_service_name("service", &request.service)?;
        let conclusion = match pb::Conclusion::try_from(request.conclusion) {
            Ok(pb::Conclusion::Finish) => Conclusion::Finish,
            Ok(pb::Conclusion::RollBack) => Conclusion::RollBack,
            _ => {
                return Err(InvalidField::new(
                    "conclusion",
                    "must be FINISH or ROLL_BACK",
                ));
            }
        };
        Ok((request.service, conclusion))
    }
}

/// The wire form of a conclusion of `service`.
pub fn conclude_request(service: &str, conclusion: Conclusion) -> pb::ConcludeRequest {
    let conclusion = match conclusion {
        Conclusion::Finish => pb::Conclusion::Finish,
        Conclusion::RollBack => pb::Conclusion::RollBack,
    };
    pb::ConcludeRequest {
        service: service.to_owned(),
        conclusion: conclusion as i32,
    }
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
    /// A new instance failed (or the operator asked); the old ones serve
    /// again.
    RolledBack,
    /// Every request goes to the new set; the old one runs until concluded.
    Switched,
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
        let strategy = match pb::Strategy::try_from(request.strategy) {
            Ok(pb::Strategy::Unspecified | pb::Strategy::Rolling) => Strategy::Rolling,
            Ok(pb::Strategy::BlueGreen) => Strategy::BlueGreen,
            Ok(pb::Strategy::Canary) => {
                let steps = if request.steps.is_empty() {
                    DEFAULT_CANARY_STEPS.to_vec()
                } else {
                    request.steps
                };
                let interval =
                    duration_from_pb("interval", request.interval, DEFAULT_CANARY_INTERVAL)?;
                let mut canary = CanarySettings::new(steps, interval)
                    .map_err(|e| InvalidField::new("steps", e.to_string()))?;
                canary.min_requests = settings.failures.min_requests;
                Strategy::Canary(canary)
            }
            Err(_) => {
                return Err(InvalidField::new(
                    "strategy",
                    format!("unknown value {}", request.strategy),
                ));
            }
        };
        Ok(RolloutPlan {
            service: request.service,
            binary,
            settings,
            args: flags_from_pb(request.args)?,
            strategy,
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
            strategy: match plan.strategy {
                Strategy::Rolling => pb::Strategy::Rolling,
                Strategy::BlueGreen => pb::Strategy::BlueGreen,
                Strategy::Canary(_) => pb::Strategy::Canary,
            } as i32,
            steps: match &plan.strategy {
                Strategy::Canary(canary) => canary.steps().to_vec(),
                _ => Vec::new(),
            },
            interval: match &plan.strategy {
                Strategy::Canary(canary) => duration_to_pb(canary.interval()),
                _ => None,
            },
        }
    }
}

impl From<&Progress> for pb::RolloutProgress {
    fn from(progress: &Progress) -> Self {
        let outcome = match progress.outcome {
            None => pb::Outcome::Unspecified,
            Some(Outcome::Done) => pb::Outcome::Done,
            Some(Outcome::RolledBack) => pb::Outcome::RolledBack,
            Some(Outcome::Switched) => pb::Outcome::Switched,
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
            Ok(pb::Outcome::Switched) => Some(Outcome::Switched),
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
            strategy: Strategy::Rolling,
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
        let canary = RolloutPlan {
            strategy: Strategy::Canary({
                let mut settings =
                    CanarySettings::new(vec![10, 100], Duration::from_secs(3)).unwrap();
                settings.min_requests = plan.settings.failures.min_requests;
                settings
            }),
            ..plan.clone()
        };
        assert_eq!(
            RolloutPlan::try_from(pb::RolloutRequest::from(&canary)),
            Ok(canary.clone())
        );
        let mut falling = pb::RolloutRequest::from(&canary);
        falling.steps = vec![50, 10, 100];
        let error = RolloutPlan::try_from(falling).unwrap_err();
        assert_eq!(error.field, "steps", "{error}");
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
