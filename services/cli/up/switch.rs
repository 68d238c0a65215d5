//! Blue-green switches and canary releases carried out by `up`: both start
//! a full set of the new version beside the old one, with the service's
//! traffic policy holding every request on the old version until the new
//! set is SERVING; then the policy moves the traffic, at once
//! ([`blue_green`], around [`BlueGreen`]) or step by step ([`canary`],
//! around [`Canary`]), and the old set drains once the new one serves
//! alone. A rollback sends every request back to the old version and
//! stops the new set. The policy is cleared at the end either way.

use std::collections::VecDeque;
use std::net::SocketAddr;

use futures::StreamExt;
use tonic::transport::Channel;

use crate::cli::up::fleet::ChildInfo;
use crate::cli::up::rollout::{Conclusions, Readiness, Steps, TICK};
use crate::mesh::Shutdown;
use crate::mesh::metrics::scrape::{Counters, quantile};
use crate::model::supervisor::{Conclusion, Outcome};
use crate::model::traffic::{TOTAL_WEIGHT, TrafficPolicy};
use crate::rollout::Lifecycle;
use crate::rollout::blue_green::{self, BlueGreen, BlueGreenSettings, Side};
use crate::rollout::canary::{self, Canary, CanarySettings, Figures, Report, Sample};

/// The old set and the version it runs, once checked; `None` (said, and
/// ended) when a switch cannot start.
async fn old_set(steps: &Steps<'_>) -> Option<(Vec<ChildInfo>, String)> {
    let rollout = steps.rollout;
    let old = rollout.fleet.running(rollout.kind);
    let refuse = |why: String| {
        steps.end(Outcome::RolledBack, format!("nothing changed: {why}"));
        None
    };
    let version = match steps.version_of(&old).await {
        Ok(version) => version,
        Err(why) => return refuse(why),
    };
    if version == rollout.version {
        return refuse(format!(
            "the new set would run {version}, the version running; the traffic policy tells \
             versions apart, so the new set needs another (-- --report-version ...)"
        ));
    }
    steps.say(format!(
        "starting {n} instance(s) of {} beside the {n} of {version}; every request stays on {version} meanwhile",
        rollout.version,
        n = old.len(),
    ));
    if !steps.route(TrafficPolicy::Only(version.clone())).await {
        return refuse("the traffic policy cannot be set".to_owned());
    }
    Some((old, version))
}

/// Starts a child of the new version like each of `old`.
fn start_set(steps: &Steps<'_>, old: &[ChildInfo]) -> Result<Vec<ChildInfo>, String> {
    let mut started = Vec::new();
    for child in old {
        match steps.start_new(child) {
            Ok(new) => {
                steps.say(format!("started {} at {}", new.name, new.address));
                started.push(new);
            }
            Err(error) => return Err(format!("{error:#}")),
        }
    }
    Ok(started)
}

/// The children's addresses with a channel to each, for their counters.
fn reachable(steps: &Steps<'_>, children: &[ChildInfo]) -> Vec<(SocketAddr, Channel)> {
    children
        .iter()
        .filter_map(|c| steps.channel_to(c.address).map(|ch| (c.address, ch)))
        .collect()
}

/// Ends a switch with every request on the old version: the new set
/// stopped, the policy cleared.
async fn back_to_old(steps: &Steps<'_>, old_version: &str, new: &[ChildInfo], reason: &str) {
    steps
        .route(TrafficPolicy::Only(old_version.to_owned()))
        .await;
    let names: Vec<String> = new.iter().map(|c| c.name.clone()).collect();
    steps.say(format!("stopping {}", names.join(", ")));
    steps.drain_all(&names).await;
    steps.route(TrafficPolicy::Equal).await;
    steps.end(Outcome::RolledBack, format!("rolled back: {reason}"));
}

/// Ends a switch with the new set serving alone: the old set drained, the
/// policy cleared.
async fn new_alone(steps: &Steps<'_>, old: &[ChildInfo]) {
    let rollout = steps.rollout;
    steps
        .route(TrafficPolicy::Only(rollout.version.clone()))
        .await;
    let names: Vec<String> = old.iter().map(|c| c.name.clone()).collect();
    steps.say(format!("draining {}", names.join(", ")));
    steps.drain_all(&names).await;
    steps.route(TrafficPolicy::Equal).await;
    steps.end(
        Outcome::Done,
        format!(
            "done: {} instance(s) of {} serve {} alone",
            old.len(),
            rollout.version,
            rollout.plan.service
        ),
    );
}

/// Runs a blue-green switch: the new set started, every request switched
/// to it at once, the old set kept until the operator concludes (or the
/// new set fails within its first requests and is switched back).
pub async fn blue_green(steps: &mut Steps<'_>, mut conclusions: Conclusions, shutdown: &Shutdown) {
    let Some((old, old_version)) = old_set(steps).await else {
        return;
    };
    let plan = &steps.rollout.plan;
    let settings = BlueGreenSettings {
        ready_timeout: plan.settings.ready_timeout,
        observe: plan.settings.observe,
        failures: plan.settings.failures,
    };
    let Some(mut watch) = steps.watch().await else {
        steps.route(TrafficPolicy::Equal).await;
        steps.end(
            Outcome::RolledBack,
            "nothing changed: the registry cannot be watched".to_owned(),
        );
        return;
    };
    let names = old.iter().map(|c| c.name.clone()).collect();
    let (mut machine, effects) = BlueGreen::start(names, settings, std::time::Instant::now());
    let mut queue: VecDeque<blue_green::Effect> = effects.into();
    let mut new: Vec<ChildInfo> = Vec::new();
    let mut at_switch: Option<Counters> = None;
    let mut readiness = Readiness::default();
    let mut tick = tokio::time::interval(TICK);
    loop {
        while let Some(effect) = queue.pop_front() {
            let now = std::time::Instant::now();
            match effect {
                blue_green::Effect::Start { .. } => match start_set(steps, &old) {
                    Ok(started) => {
                        for child in &started {
                            queue.extend(machine.on_event(Lifecycle::started(&child.name), now));
                        }
                        new = started;
                    }
                    Err(reason) => {
                        queue.extend(machine.on_event(Lifecycle::start_failed(&reason), now))
                    }
                },
                blue_green::Effect::Switch { to: Side::New } => {
                    steps
                        .route(TrafficPolicy::Only(steps.rollout.version.clone()))
                        .await;
                    at_switch = steps.counters(&reachable(steps, &new)).await;
                    steps.end(
                        Outcome::Switched,
                        format!(
                            "switched: every request goes to {}; the {} instance(s) of {old_version} keep running until \
                             `gradebook rollout {service} --finish` retires them or `--rollback` switches back",
                            steps.rollout.version,
                            old.len(),
                            service = steps.rollout.plan.service,
                        ),
                    );
                }
                blue_green::Effect::Switch { to: Side::Old } => {
                    steps.route(TrafficPolicy::Only(old_version.clone())).await;
                }
                blue_green::Effect::Drain { .. } => {}
                blue_green::Effect::Done => {
                    new_alone(steps, &old).await;
                    return;
                }
                blue_green::Effect::RolledBack { reason, .. } => {
                    back_to_old(steps, &old_version, &new, &reason).await;
                    return;
                }
            }
        }
        let now = std::time::Instant::now();
        tokio::select! {
            update = watch.next() => match update {
                Some(Ok(update)) => {
                    for child in &new {
                        for event in readiness.lifecycle(&update, &child.name, child.address) {
                            queue.extend(machine.on_event(event, now));
                        }
                    }
                }
                Some(Err(_)) | None => {
                    tokio::time::sleep(TICK).await;
                    if let Some(fresh) = steps.watch().await {
                        watch = fresh;
                    }
                }
            },
            Some((conclusion, progress)) = conclusions.recv() => {
                steps.tell(progress);
                let event = match conclusion {
                    Conclusion::Finish => blue_green::Event::Finish,
                    Conclusion::RollBack => blue_green::Event::RollBack,
                };
                let effects = machine.on_event(event, now);
                if effects.is_empty() {
                    steps.end(Outcome::Switched, "nothing to conclude yet: the new set is not switched to".to_owned());
                }
                queue.extend(effects);
            }
            _ = tick.tick() => {
                queue.extend(machine.on_tick(now));
                if let Some(baseline) = &at_switch
                    && let Some(seen) = steps.counters(&reachable(steps, &new)).await
                {
                    let since = seen.since(baseline);
                    queue.extend(machine.on_event(
                        blue_green::Event::Traffic { requests: since.requests as u64, failed: since.errors as u64 },
                        now,
                    ));
                }
            }
            _ = shutdown.cancelled() => {
                steps.end(Outcome::RolledBack, "stopped: gradebook up is stopping".to_owned());
                return;
            }
        }
    }
}

/// One version's figures from its counters since a step began.
fn figures(counters: &Counters) -> Figures {
    Figures {
        requests: counters.requests as u64,
        failed: counters.errors as u64,
        p99: quantile(&counters.buckets, 0.99).unwrap_or_default(),
    }
}

/// The canary's report, a line per step.
fn report_lines(report: &Report) -> Vec<String> {
    report
        .iter()
        .map(|step| {
            let Sample { canary, stable } = step.sample;
            let verdict = match &step.verdict {
                canary::Verdict::Passed => "passed".to_owned(),
                canary::Verdict::Extended => "held: too few requests to judge".to_owned(),
                canary::Verdict::RolledBack(why) => format!("rolled back: {why}"),
            };
            let yardstick = match step.earlier_stable {
                None => String::new(),
                Some(earlier) => format!(
                    " (too few: errors compared with its {} requests, {} failed, in the earlier steps; latency not compared)",
                    earlier.requests, earlier.failed
                ),
            };
            format!(
                "  at {:>3} %: canary {} requests, {} failed, p99 {:?}; stable {} requests, {} failed, p99 {:?}{yardstick}: {verdict}",
                step.percent,
                canary.requests,
                canary.failed,
                canary.p99,
                stable.requests,
                stable.failed,
                stable.p99,
            )
        })
        .collect()
}

/// Runs a canary release: the new set started, then given a growing share
/// of the requests step by step, each step compared with the old set's;
/// rolled back on its own when it fails or is slower by more than allowed.
pub async fn canary(steps: &mut Steps<'_>, settings: CanarySettings, shutdown: &Shutdown) {
    let Some((old, old_version)) = old_set(steps).await else {
        return;
    };
    let new = match start_set(steps, &old) {
        Ok(new) => new,
        Err(reason) => {
            steps.route(TrafficPolicy::Equal).await;
            steps.end(
                Outcome::RolledBack,
                format!("rolled back: a new instance did not start: {reason}"),
            );
            return;
        }
    };
    let ready_timeout = steps.rollout.plan.settings.ready_timeout;
    for child in &new {
        if !steps.serving(child.address, ready_timeout).await {
            let reason = format!(
                "the new instance {} was not SERVING within {ready_timeout:?}",
                child.name
            );
            back_to_old(steps, &old_version, &new, &reason).await;
            return;
        }
    }
    let Some(mut watch) = steps.watch().await else {
        back_to_old(steps, &old_version, &new, "the registry cannot be watched").await;
        return;
    };
    let (old_reach, new_reach) = (reachable(steps, &old), reachable(steps, &new));
    let (mut machine, effects) = Canary::start(settings, std::time::Instant::now());
    let mut queue: VecDeque<canary::Effect> = effects.into();
    let mut baseline: (Counters, Counters) = Default::default();
    // Every new instance has been SERVING (waited for above).
    let mut readiness = Readiness::default();
    if let Some(update) = watch.next().await.and_then(Result::ok) {
        for child in &new {
            readiness.lifecycle(&update, &child.name, child.address);
        }
    }
    let mut tick = tokio::time::interval(TICK);
    loop {
        while let Some(effect) = queue.pop_front() {
            match effect {
                canary::Effect::Shift { percent } => {
                    let weights = vec![
                        (steps.rollout.version.clone(), percent),
                        (old_version.clone(), TOTAL_WEIGHT - percent),
                    ];
                    match TrafficPolicy::weights(weights) {
                        Ok(policy) => {
                            steps.route(policy).await;
                        }
                        Err(error) => steps.say(format!("cannot shift to {percent} %: {error}")),
                    }
                    baseline = (
                        steps.counters(&old_reach).await.unwrap_or_default(),
                        steps.counters(&new_reach).await.unwrap_or_default(),
                    );
                }
                canary::Effect::RollBack { reason, report } => {
                    for line in report_lines(&report) {
                        steps.say(line);
                    }
                    back_to_old(steps, &old_version, &new, &reason).await;
                    return;
                }
                canary::Effect::Done { report } => {
                    for line in report_lines(&report) {
                        steps.say(line);
                    }
                    new_alone(steps, &old).await;
                    return;
                }
            }
        }
        tokio::select! {
            update = watch.next() => match update {
                Some(Ok(update)) => {
                    for child in &new {
                        for event in readiness.lifecycle(&update, &child.name, child.address) {
                            if let Lifecycle::Unhealthy { instance_id, reason } = event {
                                queue.extend(machine.on_unhealthy(&format!("{instance_id} is {reason}")));
                            }
                        }
                    }
                }
                Some(Err(_)) | None => {
                    tokio::time::sleep(TICK).await;
                    if let Some(fresh) = steps.watch().await {
                        watch = fresh;
                    }
                }
            },
            _ = tick.tick() => {
                let (old_now, new_now) = (steps.counters(&old_reach).await, steps.counters(&new_reach).await);
                if let (Some(old_now), Some(new_now)) = (old_now, new_now) {
                    let sample = Sample {
                        canary: figures(&new_now.since(&baseline.1)),
                        stable: figures(&old_now.since(&baseline.0)),
                    };
                    queue.extend(machine.on_sample(sample));
                }
                queue.extend(machine.on_tick(std::time::Instant::now()));
            }
            _ = shutdown.cancelled() => {
                steps.end(Outcome::RolledBack, "stopped: gradebook up is stopping".to_owned());
                return;
            }
        }
    }
}
