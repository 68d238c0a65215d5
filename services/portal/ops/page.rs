//! The `/services` page: every instance with its health (and since when),
//! its recent health history, its version (under its service) and the share of the
//! traffic the service's policy gives that version, and its request rate, error
//! ratio and p99 latency as figures and small inline charts (SVG, each
//! with a text alternative). Server-rendered; with JavaScript the table
//! replaces itself from `/services/events` (Server-Sent Events) as the
//! view changes.

use std::time::{Duration, SystemTime};

use maud::{Markup, html};

use crate::portal::ops::fleet::{Fleet, Interval, Tracked};

/// Health changes shown per instance, newest first.
const HISTORY_SHOWN: usize = 4;
/// The width and height of an inline chart, in CSS pixels.
const CHART: (f64, f64) = (96.0, 24.0);

/// The script that keeps the table live (a file: the Content Security
/// Policy allows no inline script).
pub const SERVICES_JS: &str = "(function(){if(!window.EventSource)return;var t=document.getElementById('fleet');if(!t)return;new EventSource('/services/events').addEventListener('fleet',function(e){t.innerHTML=e.data;});})();";

/// The whole page's content.
pub fn content(fleet: &Fleet, now: SystemTime) -> Markup {
    html! {
        h1 { "Services" }
        @if !fleet.is_live() {
            p.notice { "Waiting for the registry: what is shown may be out of date." }
        }
        p.meta { "Rates, errors and p99 latency over the last minutes, read from each instance's metrics every few seconds; health history since this portal started." }
        (policies(fleet))
        div.table-wrap {
            table {
                thead { tr {
                    th { "Health" } th { "Service" } th { "Instance" }
                    th.num { "Requests/s" } th.num { "Errors" } th.num { "p99" } th { "History" }
                } }
                tbody id="fleet" { (rows(fleet, now)) }
            }
        }
        script src="/static/services.js" {}
    }
}

/// The traffic policies set (`gradebook route`), one line per service.
fn policies(fleet: &Fleet) -> Markup {
    html! {
        h2 { "Traffic" }
        @let set: Vec<_> = fleet.policies().collect();
        @if set.is_empty() {
            p { "Every service sends to all its healthy instances alike." }
        } @else {
            ul.policies {
                @for record in set {
                    li {
                        strong { (record.service) } ": " (record.policy.to_string())
                        " " span.meta { "since " time datetime=(stamp(record.set_at)) title=(stamp(record.set_at)) { (clock(record.set_at)) } }
                    }
                }
            }
        }
    }
}

/// The table's rows (what the live updates replace).
pub fn rows(fleet: &Fleet, now: SystemTime) -> Markup {
    html! {
        @for tracked in fleet.instances() {
            (row(tracked, fleet.policy(&tracked.instance.service).share(&tracked.instance.version), now))
        }
    }
}

/// One instance's row; `share` is what the service's traffic policy gives
/// its version, if the service has a policy.
fn row(tracked: &Tracked, share: Option<u32>, now: SystemTime) -> Markup {
    let instance = &tracked.instance;
    let intervals = tracked.intervals();
    let recent = tracked.recent();
    let health = match tracked.removed {
        Some(_) => "REMOVED",
        None => instance.health.as_str(),
    };
    html! {
        tr {
            td class=(health) {
                strong { (health) }
                br;
                span.meta title=(stamp(instance.health_since)) { "for " (lasted(instance.health_since, now)) }
            }
            td {
                (instance.service) br; span.meta title="version" { (instance.version) }
                @if let Some(share) = share { br; span.meta title="share of the traffic by policy" { (share) " % of traffic" } }
            }
            td title=(instance.instance_id) { code { (short(&instance.instance_id)) } br; span.meta { (instance.address) } }
            td.num {
                (recent.map_or_else(|| "–".to_owned(), |r| format!("{:.1}", r.rate)))
                br; (chart("Requests a second", &intervals, |i| i.rate, |v| format!("{v:.1}/s")))
            }
            td.num {
                (recent.map_or_else(|| "–".to_owned(), |r| percent(r.error_ratio)))
                br; (chart("Errors", &intervals, |i| i.error_ratio, percent))
            }
            td.num {
                (recent.and_then(|r| r.p99).map_or_else(|| "–".to_owned(), millis))
                br; (chart("p99 latency", &intervals, |i| i.p99.map_or(0.0, |d| d.as_secs_f64()), |v| millis(Duration::from_secs_f64(v))))
            }
            td { (history(tracked, now)) }
        }
    }
}

/// The newest health changes, each with how long it lasted.
fn history(tracked: &Tracked, now: SystemTime) -> Markup {
    let changes: Vec<_> = tracked.history.iter().collect();
    html! {
        ul.history {
            @for (index, change) in changes.iter().enumerate().rev().take(HISTORY_SHOWN) {
                @let until = changes.get(index + 1).map_or(now, |next| next.at);
                li {
                    span class=(change.health.as_str()) { (change.health.as_str()) }
                    " "
                    time datetime=(stamp(change.at)) title=(stamp(change.at)) { (clock(change.at)) }
                    " · " (lasted(change.at, until))
                    @if index + 1 == changes.len() { " so far" }
                }
            }
        }
    }
}

/// A small line chart of `value` over the intervals, with its figures as
/// its text alternative.
fn chart(
    what: &str,
    intervals: &[Interval],
    value: impl Fn(&Interval) -> f64,
    format: impl Fn(f64) -> String,
) -> Markup {
    let values: Vec<f64> = intervals.iter().map(value).collect();
    if values.len() < 2 {
        return html! {};
    }
    let (width, height) = CHART;
    let top = values.iter().copied().fold(0.0_f64, f64::max);
    let step = width / (values.len() - 1) as f64;
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let y = if top > 0.0 {
                height - 1.0 - (v / top) * (height - 2.0)
            } else {
                height - 1.0
            };
            format!("{:.1},{:.1}", i as f64 * step, y)
        })
        .collect();
    let last = values.last().copied().unwrap_or_default();
    let label = format!(
        "{what}: {} now, at most {} over the last {} samples",
        format(last),
        format(top),
        values.len()
    );
    html! {
        svg.spark width=(width) height=(height) viewBox=(format!("0 0 {width} {height}")) role="img" aria-label=(label) {
            title { (label) }
            polyline fill="none" stroke="currentColor" stroke-width="1.5" points=(points.join(" ")) {}
        }
    }
}

fn percent(ratio: f64) -> String {
    format!("{:.1} %", ratio * 100.0)
}

fn millis(duration: Duration) -> String {
    let ms = duration.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// An instance id, shortened to its end (the full id is in the title).
fn short(id: &str) -> &str {
    let count = id.chars().count();
    match id.char_indices().nth(count.saturating_sub(12)) {
        Some((start, _)) if count > 12 => &id[start..],
        _ => id,
    }
}

fn stamp(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// The time of day, UTC.
fn clock(at: SystemTime) -> String {
    let stamp = stamp(at);
    stamp.get(11..19).unwrap_or(&stamp).to_owned()
}

fn lasted(from: SystemTime, to: SystemTime) -> String {
    let seconds = to.duration_since(from).unwrap_or_default().as_secs();
    humantime::format_duration(Duration::from_secs(seconds)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_ids_are_shortened_to_their_end() {
        assert_eq!(short("grading-1"), "grading-1");
        assert_eq!(short("grading-0199a1b2-c3d4-7e5f"), "b2-c3d4-7e5f");
    }

    #[test]
    fn a_chart_says_its_figures_in_words() {
        let intervals: Vec<Interval> = [1.0, 3.0, 2.0]
            .iter()
            .map(|rate| Interval {
                rate: *rate,
                error_ratio: 0.0,
                p99: None,
            })
            .collect();
        let svg = chart(
            "Requests a second",
            &intervals,
            |i| i.rate,
            |v| format!("{v:.1}/s"),
        )
        .into_string();
        assert!(
            svg.contains("Requests a second: 2.0/s now, at most 3.0/s over the last 3 samples"),
            "{svg}"
        );
        assert!(svg.contains("<polyline"), "{svg}");
        assert_eq!(
            chart("x", &intervals[..1], |i| i.rate, |v| v.to_string()).into_string(),
            ""
        );
    }
}
