//! Which peers are alive: a phi-accrual failure detector (Hayashibara et
//! al., as Cassandra, Akka and chitchat use it) over the arrival times of
//! anything a peer sends. Instead of a fixed timeout it keeps a window of
//! the intervals between a peer's messages and computes phi, the
//! suspicion that the peer is down given how long it has been silent:
//! phi = -log10(P(an interval this long)), with the intervals taken as
//! normally distributed. A peer is *down* when phi passes a threshold (8:
//! the odds that it is merely slow are below 1 in 10^8), and *dead* once
//! down for a grace, when its records may be forgotten. I/O-free: arrivals
//! and time in, verdicts out.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::gossip::replica::NodeId;

/// The failure detector's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorConfig {
    /// Phi above which a peer is down.
    pub threshold: f64,
    /// Intervals remembered per peer.
    pub window: usize,
    /// The least standard deviation assumed (intervals that never vary
    /// would make any delay look fatal).
    pub min_std_dev: Duration,
    /// Extra silence tolerated on top of the mean interval (a pause, a
    /// lost message).
    pub acceptable_pause: Duration,
    /// The interval assumed before the first arrivals (a peer heard from
    /// once is not suspected at once).
    pub first_interval: Duration,
    /// How long a peer stays down before it is dead.
    pub dead_grace: Duration,
}

impl Default for DetectorConfig {
    /// Threshold 8, 100 intervals, at least 200 ms of spread, 1 s of pause
    /// allowed, 1 s assumed at first, dead after 30 s down.
    fn default() -> Self {
        DetectorConfig {
            threshold: 8.0,
            window: 100,
            min_std_dev: Duration::from_millis(200),
            acceptable_pause: Duration::from_secs(1),
            first_interval: Duration::from_secs(1),
            dead_grace: Duration::from_secs(30),
        }
    }
}

/// What the detector makes of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Heard from recently enough.
    Alive,
    /// Silent for longer than its rhythm explains.
    Down,
    /// Down for longer than the grace: gone.
    Dead,
}

/// One peer's arrivals.
#[derive(Debug, Clone)]
struct History {
    last: Duration,
    intervals: VecDeque<f64>,
    down_since: Option<Duration>,
}

/// The detector over every peer heard from.
#[derive(Debug, Clone)]
pub struct Detector {
    config: DetectorConfig,
    peers: BTreeMap<NodeId, History>,
}

impl Detector {
    /// A detector with `config`, having heard from nobody.
    pub fn new(config: DetectorConfig) -> Self {
        Detector {
            config,
            peers: BTreeMap::new(),
        }
    }

    /// `peer` was heard from at `now`.
    pub fn heard(&mut self, peer: &NodeId, now: Duration) {
        let first = self.config.first_interval.as_secs_f64();
        let window = self.config.window;
        let history = self.peers.entry(peer.clone()).or_insert_with(|| History {
            last: now,
            intervals: VecDeque::from([first]),
            down_since: None,
        });
        let interval = now.saturating_sub(history.last).as_secs_f64();
        if interval > 0.0 {
            if history.intervals.len() == window {
                history.intervals.pop_front();
            }
            history.intervals.push_back(interval);
        }
        history.last = history.last.max(now);
        history.down_since = None;
    }

    /// Phi of `peer` at `now`: 0 for a peer never heard from.
    pub fn phi(&self, peer: &NodeId, now: Duration) -> f64 {
        let Some(history) = self.peers.get(peer) else {
            return 0.0;
        };
        let n = history.intervals.len().max(1) as f64;
        let mean = history.intervals.iter().sum::<f64>() / n;
        let variance = history
            .intervals
            .iter()
            .map(|i| (i - mean).powi(2))
            .sum::<f64>()
            / n;
        let std_dev = variance.sqrt().max(self.config.min_std_dev.as_secs_f64());
        let mean = mean + self.config.acceptable_pause.as_secs_f64();
        let silent = now.saturating_sub(history.last).as_secs_f64();
        // The logistic approximation of the normal distribution's tail,
        // as Akka computes it.
        let y = (silent - mean) / std_dev;
        let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
        let p_later = if silent > mean {
            e / (1.0 + e)
        } else {
            1.0 - 1.0 / (1.0 + e)
        };
        -p_later.max(f64::MIN_POSITIVE).log10()
    }

    /// The verdict on `peer` at `now` (updating when it went down).
    pub fn verdict(&mut self, peer: &NodeId, now: Duration) -> Verdict {
        let phi = self.phi(peer, now);
        let grace = self.config.dead_grace;
        let threshold = self.config.threshold;
        let Some(history) = self.peers.get_mut(peer) else {
            return Verdict::Alive;
        };
        if phi < threshold {
            history.down_since = None;
            return Verdict::Alive;
        }
        let since = *history.down_since.get_or_insert(now);
        if now.saturating_sub(since) >= grace {
            Verdict::Dead
        } else {
            Verdict::Down
        }
    }

    /// Forgets `peer` (dead and dealt with): it starts afresh if heard from
    /// again.
    pub fn remove(&mut self, peer: &NodeId) {
        self.peers.remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_peer_heard_in_rhythm_is_alive_and_a_silent_one_down_then_dead() {
        let mut detector = Detector::new(DetectorConfig::default());
        let peer: NodeId = "b".into();
        assert_eq!(
            detector.verdict(&peer, Duration::ZERO),
            Verdict::Alive,
            "unknown"
        );
        // Every second, with some jitter.
        let mut now = Duration::ZERO;
        for i in 0..30u64 {
            now = SECOND * i as u32 + Duration::from_millis((i * 37) % 200);
            detector.heard(&peer, now);
        }
        assert_eq!(detector.verdict(&peer, now + SECOND), Verdict::Alive);
        assert!(detector.phi(&peer, now + SECOND) < 1.0);
        // A pause of two seconds is tolerated; ten are not.
        assert_eq!(detector.verdict(&peer, now + SECOND * 2), Verdict::Alive);
        let down_at = now + SECOND * 10;
        assert_eq!(detector.verdict(&peer, down_at), Verdict::Down);
        assert_eq!(
            detector.verdict(&peer, down_at + SECOND * 29),
            Verdict::Down
        );
        assert_eq!(
            detector.verdict(&peer, down_at + SECOND * 30),
            Verdict::Dead
        );
        // Heard again: alive, whatever came before.
        detector.heard(&peer, down_at + SECOND * 31);
        assert_eq!(
            detector.verdict(&peer, down_at + SECOND * 31),
            Verdict::Alive
        );
    }

    #[test]
    fn phi_grows_with_silence() {
        let mut detector = Detector::new(DetectorConfig::default());
        let peer: NodeId = "b".into();
        for i in 0..10u32 {
            detector.heard(&peer, SECOND * i);
        }
        let last = SECOND * 9;
        let phis: Vec<f64> = [1, 2, 3, 4, 6]
            .iter()
            .map(|s| detector.phi(&peer, last + SECOND * *s))
            .collect();
        assert!(phis.windows(2).all(|w| w[0] <= w[1]), "{phis:?}");
        assert!(phis[4] > 8.0, "{phis:?}");
    }
}
