//! A canary release as a plain state machine: the new version gets a
//! growing share of the traffic, step by step (`--steps 5,25,50,100`, each
//! held for `--interval`), through the service's traffic policy. During
//! each step the shell reports what both versions answered in that step
//! ([`Sample`]); the canary is rolled back at once when its error ratio
//! exceeds the stable version's by more than the allowed margin, and at
//! the end of a step when its p99 latency is worse than the stable
//! version's by more than the allowed factor. A step without enough of the
//! canary's requests to judge is held longer, up to a limit. A step where
//! the stable version answers too few requests to be a yardstick (the last
//! one, at 100 %) compares the canary's error ratio with what the stable
//! version answered in the earlier steps, and its latency with nothing:
//! latencies are only comparable side by side, under the same load. The
//! [`Report`] says, step by step, what was compared and what was decided.

use std::time::{Duration, Instant};

use crate::model::traffic::TOTAL_WEIGHT;

/// How a canary is stepped and judged.
#[derive(Debug, Clone, PartialEq)]
pub struct CanarySettings {
    /// The canary's share at each step, in percent, rising, the last 100.
    steps: Vec<u32>,
    /// How long each step lasts.
    interval: Duration,
    /// How many of the canary's requests a step needs before it is judged.
    pub min_requests: u64,
    /// How much higher than the stable version's the canary's error ratio
    /// may be (0.02: two percentage points).
    pub max_error_margin: f64,
    /// How many times the stable version's p99 the canary's may be.
    pub max_p99_factor: f64,
    /// How much slower than the stable version's the canary's p99 must
    /// also be to condemn it, so that milliseconds of noise on a busy
    /// machine do not.
    pub min_p99_excess: Duration,
    /// How many intervals a step may be held for want of traffic.
    pub max_extensions: u32,
}

/// Why canary settings were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidCanary {
    /// No step.
    #[error("steps: give at least one, for example 5,25,50,100")]
    NoSteps,
    /// Steps that are not rising percentages ending at 100.
    #[error("steps: {given} must rise from 1 to 100 and end at 100")]
    Steps {
        /// The steps given, comma-separated.
        given: String,
    },
    /// An interval of zero.
    #[error("interval: must be longer than 0")]
    Interval,
}

impl CanarySettings {
    /// Checked settings with the default judgement: at least 20 requests a
    /// step, an error ratio at most 2 points above the stable version's, a
    /// p99 at most 1.5 times its (or at most 50 ms more), and a step held
    /// at most 3 intervals more.
    pub fn new(steps: Vec<u32>, interval: Duration) -> Result<Self, InvalidCanary> {
        if steps.is_empty() {
            return Err(InvalidCanary::NoSteps);
        }
        let rising = steps.windows(2).all(|pair| pair[0] < pair[1]);
        let in_range = steps.iter().all(|step| (1..=TOTAL_WEIGHT).contains(step));
        if !rising || !in_range || steps.last() != Some(&TOTAL_WEIGHT) {
            let given: Vec<String> = steps.iter().map(u32::to_string).collect();
            return Err(InvalidCanary::Steps {
                given: given.join(","),
            });
        }
        if interval.is_zero() {
            return Err(InvalidCanary::Interval);
        }
        Ok(CanarySettings {
            steps,
            interval,
            min_requests: 20,
            max_error_margin: 0.02,
            max_p99_factor: 1.5,
            min_p99_excess: Duration::from_millis(50),
            max_extensions: 3,
        })
    }

    /// The steps, in percent.
    pub fn steps(&self) -> &[u32] {
        &self.steps
    }

    /// How long each step lasts.
    pub fn interval(&self) -> Duration {
        self.interval
    }
}

/// What one version answered during a step.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Figures {
    /// Requests answered.
    pub requests: u64,
    /// Of those, failed.
    pub failed: u64,
    /// Their p99 latency.
    pub p99: Duration,
}

impl Figures {
    /// The share of failed requests (0 with no request).
    pub fn error_ratio(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.failed as f64 / self.requests as f64
        }
    }
}

/// Both versions' figures since the current step began.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sample {
    /// The new version.
    pub canary: Figures,
    /// The version it is compared with.
    pub stable: Figures,
}

/// What was decided at the end of a step.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Good: on to the next step, or done.
    Passed,
    /// Held for another interval: too few of the canary's requests.
    Extended,
    /// Rolled back, and why.
    RolledBack(String),
}

/// One step of the [`Report`].
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// The canary's share, in percent.
    pub percent: u32,
    /// What was compared.
    pub sample: Sample,
    /// When the stable version answered too few requests in the step: what
    /// it answered in the earlier steps, which the canary's errors were
    /// compared with instead (its latency was not compared).
    pub earlier_stable: Option<Figures>,
    /// What was decided.
    pub verdict: Verdict,
}

/// What a canary compared and decided, step by step.
pub type Report = Vec<StepReport>;

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Set the traffic policy: the canary gets `percent`, the stable
    /// version the rest.
    Shift {
        /// The canary's share.
        percent: u32,
    },
    /// Send every request to the stable version again and stop the canary.
    RollBack {
        /// Why.
        reason: String,
        /// What was compared.
        report: Report,
    },
    /// The canary has all the traffic and passed: make it the only
    /// version and retire the stable one.
    Done {
        /// What was compared.
        report: Report,
    },
}

/// A canary release in progress. See the module documentation.
#[derive(Debug, Clone)]
pub struct Canary {
    settings: CanarySettings,
    /// The index of the current step.
    step: usize,
    /// When it began (or was last extended).
    since: Instant,
    /// How many times it was extended.
    extensions: u32,
    /// The newest sample of the step.
    sample: Sample,
    /// What the stable version answered in the steps passed so far.
    earlier_stable: Figures,
    report: Report,
    over: bool,
}

impl Canary {
    /// Starts at `now` with the first step's share.
    pub fn start(settings: CanarySettings, now: Instant) -> (Self, Vec<Effect>) {
        let percent = settings.steps[0];
        let canary = Canary {
            settings,
            step: 0,
            since: now,
            extensions: 0,
            sample: Sample::default(),
            earlier_stable: Figures::default(),
            report: Vec::new(),
            over: false,
        };
        (canary, vec![Effect::Shift { percent }])
    }

    /// Whether the canary is over (done or rolled back).
    pub fn is_over(&self) -> bool {
        self.over
    }

    /// The canary's share now, in percent.
    pub fn percent(&self) -> u32 {
        self.settings.steps[self.step]
    }

    /// Takes in both versions' figures since the step began; rolls back
    /// at once when the canary already fails too much more than the stable
    /// version.
    pub fn on_sample(&mut self, sample: Sample) -> Vec<Effect> {
        if self.over {
            return Vec::new();
        }
        self.sample = sample;
        match self.errors_too_high() {
            Some(reason) => self.roll_back(reason),
            None => Vec::new(),
        }
    }

    /// The canary came down (its instances unhealthy or gone).
    pub fn on_unhealthy(&mut self, reason: &str) -> Vec<Effect> {
        if self.over {
            return Vec::new();
        }
        self.roll_back(format!("the canary is unhealthy: {reason}"))
    }

    /// Lets time pass: at the end of a step, judges it.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Effect> {
        if self.over || now.saturating_duration_since(self.since) < self.settings.interval {
            return Vec::new();
        }
        if self.sample.canary.requests < self.settings.min_requests {
            if self.extensions < self.settings.max_extensions {
                self.extensions += 1;
                self.since = now;
                self.note(Verdict::Extended);
                return Vec::new();
            }
            let reason = format!(
                "the canary answered {} requests at {} % in {} intervals, too few to judge (at least {})",
                self.sample.canary.requests,
                self.percent(),
                self.extensions + 1,
                self.settings.min_requests
            );
            return self.roll_back(reason);
        }
        if let Some(reason) = self.errors_too_high().or_else(|| self.latency_too_high()) {
            return self.roll_back(reason);
        }
        self.note(Verdict::Passed);
        if self.step + 1 == self.settings.steps.len() {
            self.over = true;
            return vec![Effect::Done {
                report: self.report.clone(),
            }];
        }
        self.earlier_stable.requests += self.sample.stable.requests;
        self.earlier_stable.failed += self.sample.stable.failed;
        self.step += 1;
        self.since = now;
        self.extensions = 0;
        self.sample = Sample::default();
        vec![Effect::Shift {
            percent: self.percent(),
        }]
    }

    /// Whether the stable version answered enough in this step to be
    /// compared with.
    fn stable_is_a_yardstick(&self) -> bool {
        self.sample.stable.requests >= self.settings.min_requests
    }

    /// Why the canary's errors condemn it, if they do: compared with the
    /// stable version's in this step, or in the earlier ones when it
    /// answered too few in this one.
    fn errors_too_high(&self) -> Option<String> {
        let canary = self.sample.canary;
        if canary.requests < self.settings.min_requests {
            return None;
        }
        let (stable, when) = if self.stable_is_a_yardstick() {
            (self.sample.stable, "")
        } else {
            (self.earlier_stable, " in the earlier steps")
        };
        let margin = canary.error_ratio() - stable.error_ratio();
        (margin > self.settings.max_error_margin).then(|| {
            format!(
                "at {} %, the canary failed {:.1} % of {} requests, the stable version {:.1} % of {}{when} (at most {:.1} points more allowed)",
                self.percent(),
                canary.error_ratio() * 100.0,
                canary.requests,
                stable.error_ratio() * 100.0,
                stable.requests,
                self.settings.max_error_margin * 100.0
            )
        })
    }

    /// Why the canary's latency condemns it, if it does. A stable version
    /// with too few requests in the step (the last one) is no yardstick.
    fn latency_too_high(&self) -> Option<String> {
        let Sample { canary, stable } = self.sample;
        if !self.stable_is_a_yardstick() || stable.p99.is_zero() {
            return None;
        }
        let factor = canary.p99.as_secs_f64() / stable.p99.as_secs_f64();
        let excess = canary.p99.saturating_sub(stable.p99);
        (factor > self.settings.max_p99_factor && excess > self.settings.min_p99_excess).then(|| {
            format!(
                "at {} %, the canary's p99 was {:?}, {factor:.2} times the stable version's {:?} (at most {:.2} allowed)",
                self.percent(),
                canary.p99,
                stable.p99,
                self.settings.max_p99_factor
            )
        })
    }

    fn note(&mut self, verdict: Verdict) {
        self.report.push(StepReport {
            percent: self.percent(),
            sample: self.sample,
            earlier_stable: (!self.stable_is_a_yardstick()).then_some(self.earlier_stable),
            verdict,
        });
    }

    fn roll_back(&mut self, reason: String) -> Vec<Effect> {
        self.note(Verdict::RolledBack(reason.clone()));
        self.over = true;
        vec![Effect::RollBack {
            reason,
            report: self.report.clone(),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn settings() -> CanarySettings {
        CanarySettings::new(vec![5, 25, 50, 100], 30 * SECOND).unwrap()
    }

    fn figures(requests: u64, failed: u64, p99_ms: u64) -> Figures {
        Figures {
            requests,
            failed,
            p99: Duration::from_millis(p99_ms),
        }
    }

    fn sample(canary: Figures, stable: Figures) -> Sample {
        Sample { canary, stable }
    }

    #[test]
    fn settings_are_checked() {
        assert_eq!(
            CanarySettings::new(vec![], SECOND),
            Err(InvalidCanary::NoSteps)
        );
        for steps in [
            vec![5, 25],
            vec![25, 5, 100],
            vec![0, 100],
            vec![50, 50, 100],
            vec![5, 101],
        ] {
            assert!(
                matches!(
                    CanarySettings::new(steps.clone(), SECOND),
                    Err(InvalidCanary::Steps { .. })
                ),
                "{steps:?}"
            );
        }
        assert_eq!(
            CanarySettings::new(vec![5, 25], SECOND)
                .unwrap_err()
                .to_string(),
            "steps: 5,25 must rise from 1 to 100 and end at 100"
        );
        assert_eq!(
            CanarySettings::new(vec![100], Duration::ZERO),
            Err(InvalidCanary::Interval)
        );
    }

    #[test]
    fn a_healthy_canary_steps_up_to_all_the_traffic() {
        let mut now = Instant::now();
        let (mut canary, effects) = Canary::start(settings(), now);
        assert_eq!(effects, vec![Effect::Shift { percent: 5 }]);
        for next in [25, 50, 100] {
            let stable = figures(1000, 2, 10);
            assert!(
                canary
                    .on_sample(sample(figures(50, 1, 12), stable))
                    .is_empty()
            );
            assert!(canary.on_tick(now + 29 * SECOND).is_empty());
            now += 30 * SECOND;
            assert_eq!(canary.on_tick(now), vec![Effect::Shift { percent: next }]);
        }
        // The last step: the stable version answers too few requests to
        // compare latencies with.
        canary.on_sample(sample(figures(500, 0, 300), figures(3, 0, 10)));
        now += 30 * SECOND;
        let effects = canary.on_tick(now);
        let [Effect::Done { report }] = &effects[..] else {
            panic!("{effects:?}");
        };
        assert_eq!(report.len(), 4);
        assert!(report.iter().all(|step| step.verdict == Verdict::Passed));
        assert!(canary.is_over());
    }

    #[test]
    fn a_failing_canary_is_rolled_back_in_its_first_step() {
        let now = Instant::now();
        let (mut canary, _) = Canary::start(settings(), now);
        // 20 % failed against the stable version's 0.2 %.
        let effects = canary.on_sample(sample(figures(25, 5, 10), figures(475, 1, 10)));
        let [Effect::RollBack { reason, report }] = &effects[..] else {
            panic!("{effects:?}");
        };
        assert!(
            reason.starts_with("at 5 %, the canary failed 20.0 % of 25 requests"),
            "{reason}"
        );
        assert_eq!(report.len(), 1);
        assert_eq!(report[0].sample.canary.failed, 5);
        assert!(canary.on_tick(now + 60 * SECOND).is_empty());
        // Fewer requests than needed to judge: not yet.
        let (mut canary, _) = Canary::start(settings(), now);
        assert!(
            canary
                .on_sample(sample(figures(5, 5, 10), figures(95, 0, 10)))
                .is_empty()
        );
    }

    #[test]
    fn the_last_step_compares_errors_with_the_earlier_steps() {
        let mut now = Instant::now();
        let (mut canary, _) =
            Canary::start(CanarySettings::new(vec![50, 100], SECOND).unwrap(), now);
        canary.on_sample(sample(figures(500, 1, 10), figures(500, 1, 10)));
        now += SECOND;
        assert_eq!(canary.on_tick(now), vec![Effect::Shift { percent: 100 }]);
        // 10 % failed; the stable version failed 0.2 % of 500 before.
        let effects = canary.on_sample(sample(figures(1000, 100, 10), figures(2, 0, 10)));
        let [Effect::RollBack { reason, .. }] = &effects[..] else {
            panic!("{effects:?}");
        };
        assert!(
            reason.contains("the stable version 0.2 % of 500 in the earlier steps"),
            "{reason}"
        );
        assert_eq!(canary.report[0].earlier_stable, None);
        assert_eq!(
            canary.report[1]
                .earlier_stable
                .map(|stable| stable.requests),
            Some(500)
        );
    }

    #[test]
    fn a_slow_canary_is_rolled_back_at_the_end_of_its_step() {
        let now = Instant::now();
        let (mut canary, _) = Canary::start(settings(), now);
        assert!(
            canary
                .on_sample(sample(figures(50, 0, 100), figures(950, 0, 10)))
                .is_empty()
        );
        let effects = canary.on_tick(now + 30 * SECOND);
        assert!(matches!(&effects[..], [Effect::RollBack { reason, .. }]
            if reason.contains("10.00 times the stable version's 10ms")));
        // Four times slower, but by 30 ms: noise on a busy machine, passed.
        let (mut canary, _) = Canary::start(settings(), now);
        canary.on_sample(sample(figures(50, 0, 40), figures(950, 0, 10)));
        let effects = canary.on_tick(now + 30 * SECOND);
        assert_eq!(effects, vec![Effect::Shift { percent: 25 }]);
    }

    #[test]
    fn a_step_without_traffic_is_held_then_given_up() {
        let mut now = Instant::now();
        let (mut canary, _) = Canary::start(settings(), now);
        canary.on_sample(sample(figures(3, 0, 10), figures(60, 0, 10)));
        for _ in 0..3 {
            now += 30 * SECOND;
            assert!(canary.on_tick(now).is_empty());
        }
        now += 30 * SECOND;
        let effects = canary.on_tick(now);
        assert!(matches!(&effects[..], [Effect::RollBack { reason, report }]
            if reason.contains("too few to judge") && report.len() == 4));
        let (mut canary, _) = Canary::start(settings(), now);
        let effects = canary.on_unhealthy("grading-9 exited");
        assert!(
            matches!(&effects[..], [Effect::RollBack { reason, .. }] if reason.contains("grading-9 exited"))
        );
    }
}
