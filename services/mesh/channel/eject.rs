//! Outlier ejection (a circuit breaker per endpoint). An endpoint that fails
//! `failures` attempts in a row (timeouts, internal errors) is ejected, and
//! one whose connection fails or that answers UNAVAILABLE is ejected at
//! once (as a linkerd endpoint whose connection broke is not ready until it
//! reconnects): a dead instance fails fast, and fast failures would
//! otherwise look like the least loaded endpoint to the balancer. While
//! ejected, the balancer does not choose it, for a backoff that grows each
//! time it is ejected again; then exactly one probe request half-opens it:
//! an answer closes the circuit, a failure ejects it again for longer. At most half of a service's endpoints are
//! ejected at once (never the last one), so ejection can shift traffic but
//! never take a whole service away: a single instance behaves as without it.
//!
//! [`Breaker`] is the state machine (events and time in, decisions out,
//! tested under paused time); [`Ejecting`] is the thin tower service around an
//! endpoint that asks it before every call and tells it every outcome, and
//! reports both (attempts, outcomes, ejections) to the endpoint's metrics.

use std::future::Future as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use tokio::time::{Instant, Sleep};

use crate::mesh::backoff::{Backoff, InvalidBackoff};
use crate::mesh::channel::metrics::EndpointMetrics;
use crate::mesh::channel::outcome::{BoxError, Outcome};

/// Consecutive failures that eject an endpoint, by default.
pub const DEFAULT_EJECTION_FAILURES: u32 = 5;
/// The first ejection's length; each further one doubles, up to the maximum.
pub const DEFAULT_EJECTION_MIN: Duration = Duration::from_secs(1);
/// The longest ejection.
pub const DEFAULT_EJECTION_MAX: Duration = Duration::from_secs(30);

/// When an endpoint is ejected and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EjectionSettings {
    /// Consecutive failures that eject an endpoint (at least 1).
    pub failures: u32,
    /// The length of ejections, by how many times in a row it was ejected.
    pub backoff: Backoff,
}

impl Default for EjectionSettings {
    fn default() -> Self {
        EjectionSettings {
            failures: DEFAULT_EJECTION_FAILURES,
            backoff: Backoff::new(DEFAULT_EJECTION_MIN, DEFAULT_EJECTION_MAX, 0.2)
                .unwrap_or_default(),
        }
    }
}

impl EjectionSettings {
    /// Settings with `failures` consecutive failures, ejections from `min` to `max`.
    pub fn new(failures: u32, min: Duration, max: Duration) -> Result<Self, InvalidBackoff> {
        Ok(EjectionSettings {
            failures: failures.max(1),
            backoff: Backoff::new(min, max, 0.2)?,
        })
    }
}

/// How many endpoints of one service exist and how many are ejected: an
/// endpoint may be ejected only while fewer than half of them are.
#[derive(Debug, Default)]
pub struct EjectionBudget {
    endpoints: AtomicUsize,
    ejected: AtomicUsize,
}

impl EjectionBudget {
    /// Takes one ejection from the budget, if the service can spare it.
    fn try_eject(&self) -> bool {
        let endpoints = self.endpoints.load(Ordering::Acquire);
        self.ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |ejected| {
                (ejected < endpoints / 2).then_some(ejected + 1)
            })
            .is_ok()
    }

    fn release(&self) {
        let _ = self
            .ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |e| e.checked_sub(1));
    }

    /// How many endpoints are ejected now.
    pub fn ejected(&self) -> usize {
        self.ejected.load(Ordering::Acquire)
    }
}

/// The circuit of one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    /// Taking traffic; `failures` in a row so far.
    Closed {
        /// Consecutive failed attempts.
        failures: u32,
    },
    /// Ejected until `until`; ejected `times` in a row.
    Open {
        /// When it may be probed.
        until: Instant,
        /// Ejections in a row, this one included.
        times: u32,
    },
    /// Ejection over: one probe may go (`probing` once it has).
    HalfOpen {
        /// Ejections in a row so far.
        times: u32,
        /// Whether the probe is in flight.
        probing: bool,
    },
}

/// Whether an endpoint may take a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Yes.
    Admit,
    /// Not before this instant.
    NotUntil(Instant),
    /// Not until the probe in flight has an outcome.
    AfterProbe,
}

/// The ejection state machine of one endpoint.
#[derive(Debug)]
pub struct Breaker {
    settings: EjectionSettings,
    circuit: Circuit,
    budget: Arc<EjectionBudget>,
}

impl Breaker {
    /// A closed breaker drawing on `budget` (which counts this endpoint until dropped).
    pub fn new(settings: EjectionSettings, budget: Arc<EjectionBudget>) -> Self {
        budget.endpoints.fetch_add(1, Ordering::AcqRel);
        Breaker {
            settings,
            circuit: Circuit::Closed { failures: 0 },
            budget,
        }
    }

    /// The circuit now.
    pub fn circuit(&self) -> Circuit {
        self.circuit
    }

    /// Whether a request may be sent at `now`.
    pub fn admission(&mut self, now: Instant) -> Admission {
        match self.circuit {
            Circuit::Closed { .. } | Circuit::HalfOpen { probing: false, .. } => Admission::Admit,
            Circuit::HalfOpen { probing: true, .. } => Admission::AfterProbe,
            Circuit::Open { until, times } if now >= until => {
                self.circuit = Circuit::HalfOpen {
                    times,
                    probing: false,
                };
                Admission::Admit
            }
            Circuit::Open { until, .. } => Admission::NotUntil(until),
        }
    }

    /// A request is sent; returns whether it is the probe.
    pub fn dispatched(&mut self) -> bool {
        match &mut self.circuit {
            Circuit::HalfOpen { probing, .. } if !*probing => {
                *probing = true;
                true
            }
            _ => false,
        }
    }

    /// A request sent earlier (`probe` as [`Self::dispatched`] said) ended with `outcome` at `now`.
    pub fn completed(&mut self, outcome: Outcome, probe: bool, now: Instant) {
        let failed = outcome.is_endpoint_failure();
        self.circuit = match self.circuit {
            Circuit::Closed { .. } if !failed => Circuit::Closed { failures: 0 },
            Circuit::Closed { failures } => {
                let failures = match outcome {
                    Outcome::Unreachable | Outcome::Unavailable => self.settings.failures,
                    _ => failures.saturating_add(1),
                };
                if failures >= self.settings.failures && self.budget.try_eject() {
                    Circuit::Open {
                        until: now + self.settings.backoff.delay(0),
                        times: 1,
                    }
                } else {
                    Circuit::Closed { failures }
                }
            }
            Circuit::HalfOpen { .. } if probe && !failed => {
                self.budget.release();
                Circuit::Closed { failures: 0 }
            }
            Circuit::HalfOpen { times, .. } if probe => Circuit::Open {
                until: now + self.settings.backoff.delay(times),
                times: times.saturating_add(1),
            },
            // Requests sent before the ejection say nothing new.
            other => other,
        };
    }
}

impl Drop for Breaker {
    fn drop(&mut self) {
        if !matches!(self.circuit, Circuit::Closed { .. }) {
            self.budget.release();
        }
        let _ = self
            .budget
            .endpoints
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

/// The shared state of one endpoint's breaker, the task waiting on its
/// probe, and the endpoint's metrics.
#[derive(Debug)]
struct Shared {
    breaker: Mutex<Breaker>,
    probe_done: AtomicWaker,
    metrics: EndpointMetrics,
}

impl Shared {
    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An endpoint service behind its breaker: not ready while ejected, and told
/// the outcome of every call.
#[derive(Debug)]
pub struct Ejecting<S> {
    inner: S,
    shared: Arc<Shared>,
    sleep: Option<std::pin::Pin<Box<Sleep>>>,
}

impl<S> Ejecting<S> {
    /// `inner` behind a new breaker, measured in `metrics`.
    pub fn new(
        inner: S,
        settings: EjectionSettings,
        budget: Arc<EjectionBudget>,
        metrics: EndpointMetrics,
    ) -> Self {
        Ejecting {
            inner,
            shared: Arc::new(Shared {
                breaker: Mutex::new(Breaker::new(settings, budget)),
                probe_done: AtomicWaker::new(),
                metrics,
            }),
            sleep: None,
        }
    }

    /// The circuit now.
    pub fn circuit(&self) -> Circuit {
        self.shared.breaker().circuit()
    }
}

impl<S, Req, Res> tower::Service<Req> for Ejecting<S>
where
    S: tower::Service<Req, Response = tonic::codegen::http::Response<Res>, Error = BoxError>,
    S::Future: Send + 'static,
    Res: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        loop {
            let admission = self.shared.breaker().admission(Instant::now());
            match admission {
                Admission::Admit => {
                    self.sleep = None;
                    return self.inner.poll_ready(cx);
                }
                Admission::AfterProbe => {
                    self.shared.probe_done.register(cx.waker());
                    // The probe may have ended between the check and the registration.
                    if self.shared.breaker().admission(Instant::now()) == Admission::AfterProbe {
                        return Poll::Pending;
                    }
                }
                Admission::NotUntil(until) => {
                    let sleep = self
                        .sleep
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
                    if sleep.deadline() != until {
                        sleep.as_mut().reset(until);
                    }
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
            }
        }
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let probe = self.shared.breaker().dispatched();
        let shared = self.shared.clone();
        shared.metrics.sent();
        let sent = Instant::now();
        let call = self.inner.call(request);
        Box::pin(async move {
            let result = call.await;
            let outcome = Outcome::of(&result);
            let now = Instant::now();
            let (before, after) = {
                let mut breaker = shared.breaker();
                let before = breaker.circuit();
                breaker.completed(outcome, probe, now);
                (before, breaker.circuit())
            };
            shared.metrics.ended(outcome, now - sent, now);
            match (before, after) {
                (Circuit::Open { .. }, _) | (_, Circuit::HalfOpen { .. }) => {}
                (_, Circuit::Open { .. }) => shared.metrics.set_ejected(true),
                (Circuit::HalfOpen { .. }, Circuit::Closed { .. }) => {
                    shared.metrics.set_ejected(false)
                }
                (Circuit::Closed { .. }, Circuit::Closed { .. }) => {}
            }
            if probe {
                shared.probe_done.wake();
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::channel::metrics::ChannelMetrics;

    fn settings() -> EjectionSettings {
        EjectionSettings {
            failures: 3,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(8), 0.0).unwrap(),
        }
    }

    fn fail(breaker: &mut Breaker, times: u32) {
        for _ in 0..times {
            assert_eq!(breaker.admission(Instant::now()), Admission::Admit);
            let probe = breaker.dispatched();
            breaker.completed(Outcome::TimedOut, probe, Instant::now());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_broken_connection_or_unavailable_ejects_at_once() {
        let budget = Arc::new(EjectionBudget::default());
        let _other = Breaker::new(settings(), budget.clone());
        for outcome in [Outcome::Unreachable, Outcome::Unavailable] {
            let mut breaker = Breaker::new(settings(), budget.clone());
            assert_eq!(breaker.admission(Instant::now()), Admission::Admit);
            breaker.completed(outcome, false, Instant::now());
            assert!(
                matches!(breaker.admission(Instant::now()), Admission::NotUntil(_)),
                "{outcome:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_eject_then_one_probe_half_opens() {
        let budget = Arc::new(EjectionBudget::default());
        let _others: Vec<_> = (0..3)
            .map(|_| Breaker::new(settings(), budget.clone()))
            .collect();
        let mut breaker = Breaker::new(settings(), budget.clone());

        fail(&mut breaker, 2);
        breaker.completed(Outcome::Answered, false, Instant::now());
        assert_eq!(
            breaker.circuit(),
            Circuit::Closed { failures: 0 },
            "an answer resets the count"
        );

        fail(&mut breaker, 3);
        let start = Instant::now();
        assert_eq!(
            breaker.admission(start),
            Admission::NotUntil(start + Duration::from_secs(1))
        );
        assert_eq!(budget.ejected(), 1);

        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(breaker.admission(Instant::now()), Admission::Admit);
        assert!(
            breaker.dispatched(),
            "the first request after the ejection is the probe"
        );
        assert_eq!(breaker.admission(Instant::now()), Admission::AfterProbe);
        // A request sent before the ejection ends late: it changes nothing.
        breaker.completed(Outcome::Unreachable, false, Instant::now());
        assert_eq!(breaker.admission(Instant::now()), Admission::AfterProbe);

        // The probe fails: ejected again, for twice as long.
        breaker.completed(Outcome::TimedOut, true, Instant::now());
        let now = Instant::now();
        assert_eq!(
            breaker.admission(now),
            Admission::NotUntil(now + Duration::from_secs(2))
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(breaker.admission(Instant::now()), Admission::Admit);
        assert!(breaker.dispatched());
        breaker.completed(Outcome::Answered, true, Instant::now());
        assert_eq!(breaker.circuit(), Circuit::Closed { failures: 0 });
        assert_eq!(
            budget.ejected(),
            0,
            "closing returns the ejection to the budget"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ejections_double_up_to_the_maximum() {
        let budget = Arc::new(EjectionBudget::default());
        let _other = Breaker::new(settings(), budget.clone());
        let mut breaker = Breaker::new(settings(), budget);
        fail(&mut breaker, 3);
        let mut lengths = Vec::new();
        for _ in 0..5 {
            let now = Instant::now();
            let Admission::NotUntil(until) = breaker.admission(now) else {
                panic!("ejected");
            };
            lengths.push((until - now).as_secs());
            tokio::time::advance(until - now).await;
            assert_eq!(breaker.admission(Instant::now()), Admission::Admit);
            assert!(breaker.dispatched());
            breaker.completed(Outcome::Unavailable, true, Instant::now());
        }
        assert_eq!(lengths, [1, 2, 4, 8, 8]);
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_than_half_of_a_service_is_ejected() {
        let budget = Arc::new(EjectionBudget::default());
        let mut single = Breaker::new(settings(), budget.clone());
        fail(&mut single, 10);
        assert_eq!(
            single.admission(Instant::now()),
            Admission::Admit,
            "the only endpoint is never ejected"
        );

        let mut second = Breaker::new(settings(), budget.clone());
        let mut third = Breaker::new(settings(), budget.clone());
        fail(&mut second, 3);
        assert!(matches!(
            second.admission(Instant::now()),
            Admission::NotUntil(_)
        ));
        fail(&mut third, 3);
        assert_eq!(
            third.admission(Instant::now()),
            Admission::Admit,
            "1 of 3 is the most"
        );
        drop(second);
        assert_eq!(
            budget.ejected(),
            0,
            "a removed endpoint returns its ejection"
        );
        fail(&mut third, 1);
        assert!(matches!(
            third.admission(Instant::now()),
            Admission::NotUntil(_)
        ));
    }

    #[derive(Clone)]
    struct Scripted(Arc<Mutex<Vec<bool>>>);

    impl tower::Service<()> for Scripted {
        type Response = tonic::codegen::http::Response<()>;
        type Error = BoxError;
        type Future = futures::future::Ready<Result<Self::Response, BoxError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: ()) -> Self::Future {
            let ok = self.0.lock().unwrap().pop().unwrap_or(true);
            futures::future::ready(if ok {
                Ok(tonic::codegen::http::Response::new(()))
            } else {
                Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into())
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_service_is_unready_while_ejected_and_wakes_for_the_probe() {
        use tower::{Service, ServiceExt};
        let budget = Arc::new(EjectionBudget::default());
        let _other = Breaker::new(settings(), budget.clone());
        let script = Scripted(Arc::new(Mutex::new(vec![false])));
        let mut service = Ejecting::new(
            script,
            settings(),
            budget,
            ChannelMetrics::default().endpoint("s", "i", "a"),
        );
        assert!(service.ready().await.unwrap().call(()).await.is_err());
        assert!(matches!(service.circuit(), Circuit::Open { .. }));
        let start = Instant::now();
        service.ready().await.unwrap();
        assert_eq!(
            Instant::now() - start,
            Duration::from_secs(1),
            "ready again when the ejection ends"
        );
        assert!(service.call(()).await.is_ok(), "the probe answers");
        assert_eq!(service.circuit(), Circuit::Closed { failures: 0 });
    }
}
