//! The checkers, as Maelstrom's: echo answers match, generated ids are
//! unique, and broadcast is Jepsen's `set-full` (every acknowledged value
//! in the last read of every node; stable latency from a value's
//! acknowledgement to the last read that missed it).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Function {
    /// `echo`.
    Echo,
    /// `generate`.
    Generate,
    /// `broadcast`.
    Broadcast,
    /// `read`.
    Read,
}

/// Where an operation is: invoked, or completed how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Sent.
    Invoke,
    /// Answered.
    Ok,
    /// Definitely not done (an error, or a read that timed out).
    Fail,
    /// Unknown (a write that timed out).
    Info,
}

/// One entry of the history.
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    /// Its place in the history.
    pub index: usize,
    /// The worker that ran it.
    pub process: usize,
    /// What it does.
    pub function: Function,
    /// Invoked or completed.
    pub kind: Kind,
    /// The request's value (echo text, broadcast value) or the answer
    /// (echo body, id, read values).
    pub value: Value,
    /// When, since the test started.
    pub time: Duration,
}

/// Latencies at Maelstrom's points: 0, 0.5, 0.95, 0.99, 1, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Latencies {
    /// The least.
    pub min: u64,
    /// The median (the upper one for an even count).
    pub median: u64,
    /// The 95th percentile.
    pub p95: u64,
    /// The 99th percentile.
    pub p99: u64,
    /// The most.
    pub max: u64,
}

impl Latencies {
    /// Maelstrom's quantiles of `values`: for point p, the element at
    /// `min(n - 1, floor(n * p))` of the sorted values.
    pub fn of(mut values: Vec<u64>) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        values.sort_unstable();
        let n = values.len();
        let at = |p: f64| values[((n as f64 * p).floor() as usize).min(n - 1)];
        Some(Latencies {
            min: at(0.0),
            median: at(0.5),
            p95: at(0.95),
            p99: at(0.99),
            max: at(1.0),
        })
    }
}

/// The broadcast verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SetFull {
    /// No value lost, and at least one stable.
    pub valid: bool,
    /// Values whose broadcast was invoked.
    pub attempted: usize,
    /// Values in the last read of every node that read after them.
    pub stable: usize,
    /// Values the last read missed after they were known.
    pub lost: Vec<i64>,
    /// Values no read settled either way.
    pub never_read: usize,
    /// Stable values that some read missed after they were known.
    pub stale: usize,
    /// From a value's acknowledgement to the last read that missed it.
    pub stable_latencies: Option<Latencies>,
}

/// What the set-full checker tracks of one value.
#[derive(Debug, Default, Clone, Copy)]
struct Element {
    /// The op (index, time) from which the value is known to exist.
    known: Option<(usize, Duration)>,
    /// The invocation (index, time) of the latest read that had it.
    last_present: Option<(usize, Duration)>,
    /// The invocation of the latest read that missed it.
    last_absent: Option<(usize, Duration)>,
}

fn later(a: Option<(usize, Duration)>, b: (usize, Duration)) -> Option<(usize, Duration)> {
    Some(match a {
        Some(a) if a.0 >= b.0 => a,
        _ => b,
    })
}

/// Jepsen's `set-full` over a broadcast history.
pub fn set_full(history: &[Op]) -> SetFull {
    let mut elements: BTreeMap<i64, Element> = BTreeMap::new();
    let mut invoked: HashMap<usize, (usize, Duration)> = HashMap::new();
    for op in history {
        match (op.function, op.kind) {
            (Function::Broadcast, Kind::Invoke) => {
                if let Some(value) = op.value.as_i64() {
                    elements.entry(value).or_default();
                }
            }
            (Function::Broadcast, Kind::Ok) => {
                if let Some(element) = op.value.as_i64().and_then(|v| elements.get_mut(&v)) {
                    element.known.get_or_insert((op.index, op.time));
                }
            }
            (Function::Read, Kind::Invoke) => {
                invoked.insert(op.process, (op.index, op.time));
            }
            (Function::Read, Kind::Ok) => {
                let Some(invocation) = invoked.get(&op.process).copied() else {
                    continue;
                };
                let seen: BTreeSet<i64> = op
                    .value
                    .as_array()
                    .map(|values| values.iter().filter_map(Value::as_i64).collect())
                    .unwrap_or_default();
                for (value, element) in elements.iter_mut() {
                    if seen.contains(value) {
                        element.known.get_or_insert((op.index, op.time));
                        element.last_present = later(element.last_present, invocation);
                    } else {
                        element.last_absent = later(element.last_absent, invocation);
                    }
                }
            }
            _ => {}
        }
    }
    let index = |at: Option<(usize, Duration)>| at.map_or(-1, |(i, _)| i as i64);
    let mut verdict = SetFull {
        valid: false,
        attempted: elements.len(),
        stable: 0,
        lost: Vec::new(),
        never_read: 0,
        stale: 0,
        stable_latencies: None,
    };
    let mut latencies = Vec::new();
    for (value, element) in &elements {
        let stable = element.last_present.is_some()
            && index(element.last_absent) < index(element.last_present);
        let lost = element.known.is_some()
            && element.last_absent.is_some()
            && index(element.last_present) < index(element.last_absent)
            && index(element.known) < index(element.last_absent);
        if stable {
            verdict.stable += 1;
            let stable_time = element
                .last_absent
                .map_or(Duration::ZERO, |(_, t)| t + Duration::from_nanos(1));
            let known_time = element.known.map_or(Duration::ZERO, |(_, t)| t);
            let latency = stable_time.saturating_sub(known_time).as_millis() as u64;
            if latency > 0 {
                verdict.stale += 1;
            }
            latencies.push(latency);
        } else if lost {
            verdict.lost.push(*value);
        } else {
            verdict.never_read += 1;
        }
    }
    verdict.valid = verdict.lost.is_empty() && verdict.stable > 0;
    verdict.stable_latencies = Latencies::of(latencies);
    verdict
}

/// The ids answered more than once.
pub fn duplicated_ids(history: &[Op]) -> usize {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for op in history {
        if op.function == Function::Generate && op.kind == Kind::Ok {
            *counts.entry(op.value.to_string()).or_default() += 1;
        }
    }
    counts.values().filter(|n| **n > 1).count()
}

/// Echo answers that do not match their request (a failed echo counts).
pub fn echo_errors(history: &[Op]) -> usize {
    let mut sent: HashMap<usize, Value> = HashMap::new();
    let mut errors = 0;
    for op in history {
        if op.function != Function::Echo {
            continue;
        }
        match op.kind {
            Kind::Invoke => {
                sent.insert(op.process, op.value.clone());
            }
            kind => {
                let expected = sent.remove(&op.process);
                if kind != Kind::Ok || op.value.get("echo") != expected.as_ref() {
                    errors += 1;
                }
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(
        index: usize,
        process: usize,
        function: Function,
        kind: Kind,
        value: Value,
        ms: u64,
    ) -> Op {
        Op {
            index,
            process,
            function,
            kind,
            value,
            time: Duration::from_millis(ms),
        }
    }

    #[test]
    fn set_full_tells_stable_stale_lost_and_never_read_apart() {
        use Function::{Broadcast, Read};
        use Kind::{Invoke, Ok};
        let history = vec![
            op(0, 0, Broadcast, Invoke, json!(1), 0),
            op(1, 0, Broadcast, Ok, json!(1), 10),
            op(2, 0, Broadcast, Invoke, json!(2), 20),
            op(3, 0, Broadcast, Ok, json!(2), 30),
            // A read that misses 1 at 100 ms: 1 is stale until then.
            op(4, 1, Read, Invoke, Value::Null, 100),
            op(5, 1, Read, Ok, json!([2]), 105),
            op(6, 1, Read, Invoke, Value::Null, 200),
            op(7, 1, Read, Ok, json!([1, 2]), 205),
            // 3 is acknowledged, then the last read misses it: lost.
            op(8, 0, Broadcast, Invoke, json!(3), 300),
            op(9, 0, Broadcast, Ok, json!(3), 310),
            op(10, 1, Read, Invoke, Value::Null, 400),
            op(11, 1, Read, Ok, json!([1, 2]), 405),
            // 4 is never acknowledged nor read.
            op(12, 0, Broadcast, Invoke, json!(4), 500),
        ];
        let verdict = set_full(&history);
        assert!(!verdict.valid);
        assert_eq!(verdict.attempted, 4);
        assert_eq!(verdict.stable, 2);
        assert_eq!(verdict.lost, [3]);
        assert_eq!(verdict.stale, 1);
        assert_eq!(verdict.never_read, 1);
        let latencies = verdict.stable_latencies.unwrap();
        assert_eq!((latencies.min, latencies.max), (0, 90));
    }

    #[test]
    fn maelstrom_quantiles_take_the_upper_median() {
        let q = Latencies::of(vec![4, 1, 3, 2]).unwrap();
        assert_eq!((q.min, q.median, q.max), (1, 3, 4));
        assert_eq!(Latencies::of(vec![]), None);
    }

    #[test]
    fn duplicate_ids_and_wrong_echoes_are_counted() {
        use Function::{Echo, Generate};
        use Kind::{Invoke, Ok};
        let history = vec![
            op(0, 0, Generate, Ok, json!("a"), 0),
            op(1, 1, Generate, Ok, json!("a"), 0),
            op(2, 2, Generate, Ok, json!("b"), 0),
            op(3, 0, Echo, Invoke, json!("x"), 0),
            op(4, 0, Echo, Ok, json!({"echo": "x"}), 0),
            op(5, 0, Echo, Invoke, json!("y"), 0),
            op(6, 0, Echo, Ok, json!({"echo": "z"}), 0),
        ];
        assert_eq!(duplicated_ids(&history), 1);
        assert_eq!(echo_errors(&history), 1);
    }
}
