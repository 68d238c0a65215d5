//! A steady mix of reads and writes through the portal's JSON API from
//! several concurrent clients, as teachers would send them: each client
//! reads students and adds grades (each write with its own
//! `Idempotency-Key` and a unique title), never retries, and records every
//! answer. Afterwards [`Report::check_writes`] proves every acknowledged
//! write is stored exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One request's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// When it was sent.
    pub at: Instant,
    /// How long it took.
    pub latency: Duration,
    /// What went wrong, if anything (a non-2xx status with its body, or a transport error).
    pub failure: Option<String>,
}

/// What the clients saw.
#[derive(Debug, Default)]
pub struct Report {
    /// Every answer.
    pub answers: Vec<Answer>,
    /// Acknowledged writes: (student id, grade title) -> grade id.
    pub acknowledged: BTreeMap<(String, String), String>,
    /// Every write sent: (student id, grade title).
    pub sent: Vec<(String, String)>,
}

impl Report {
    /// The failed requests, described.
    pub fn failures(&self) -> Vec<String> {
        self.answers
            .iter()
            .filter_map(|a| a.failure.clone())
            .collect()
    }

    /// Asserts that no request failed; `during` says when, for the message.
    pub fn assert_none_failed(&self, during: &str) {
        let failures = self.failures();
        assert!(
            failures.is_empty(),
            "{} of {} requests failed {during}: {:?}",
            failures.len(),
            self.answers.len(),
            &failures[..failures.len().min(10)]
        );
    }

    /// The p99 latency of the requests sent between `from` and `to`.
    pub fn p99_between(&self, from: Instant, to: Instant) -> Option<Duration> {
        let mut latencies: Vec<Duration> = self
            .answers
            .iter()
            .filter(|a| a.at >= from && a.at <= to)
            .map(|a| a.latency)
            .collect();
        latencies.sort();
        let rank = ((latencies.len() as f64) * 0.99).ceil() as usize;
        latencies
            .get(rank.clamp(1, latencies.len().max(1)) - 1)
            .copied()
    }

    /// Reads every student's grades through the portal and checks that each
    /// acknowledged write is there exactly once (with the id it was
    /// acknowledged with), and no write is there twice.
    pub async fn check_writes(&self, portal: &str, token: &str) {
        let http = super::signed_in_builder(token)
            .build()
            .expect("an HTTP client");
        let mut stored: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        let students: std::collections::BTreeSet<&String> =
            self.sent.iter().map(|(s, _)| s).collect();
        for student in students {
            let detail: serde_json::Value = http
                .get(format!("{portal}/api/students/{student}"))
                .send()
                .await
                .expect("read a student")
                .json()
                .await
                .expect("a student as JSON");
            for grade in detail["grades"].as_array().expect("grades") {
                let title = grade["title"].as_str().unwrap_or_default().to_owned();
                let id = grade["id"].as_str().unwrap_or_default().to_owned();
                stored.entry((student.clone(), title)).or_default().push(id);
            }
        }
        for (key, id) in &self.acknowledged {
            let ids = stored.get(key).cloned().unwrap_or_default();
            assert_eq!(
                ids,
                vec![id.clone()],
                "acknowledged write {key:?} must be stored exactly once, as {id}"
            );
        }
        for key in &self.sent {
            let count = stored.get(key).map_or(0, Vec::len);
            assert!(count <= 1, "write {key:?} stored {count} times");
        }
    }
}

/// Clients sending load until stopped.
pub struct Load {
    stop: watch::Sender<bool>,
    clients: Vec<JoinHandle<Report>>,
    done: Arc<AtomicU64>,
}

impl Load {
    /// Starts `clients` clients against the portal at `portal` (a base
    /// URL), over `students`; one request in `write_every` is a write.
    /// Each client is signed in with the API token `token`.
    pub fn start(
        portal: &str,
        token: &str,
        students: Vec<String>,
        clients: usize,
        write_every: u64,
    ) -> Load {
        let (stop, stopped) = watch::channel(false);
        let done = Arc::new(AtomicU64::new(0));
        let clients = (0..clients)
            .map(|client| {
                let portal = portal.to_owned();
                let token = token.to_owned();
                let students = students.clone();
                let stopped = stopped.clone();
                let done = done.clone();
                tokio::spawn(async move {
                    let http = super::signed_in_builder(&token)
                        .timeout(Duration::from_secs(10))
                        .build()
                        .expect("an HTTP client");
                    let mut report = Report::default();
                    let mut n = 0u64;
                    while !*stopped.borrow() {
                        let student = &students[(n as usize + client) % students.len()];
                        let at = Instant::now();
                        let failure = if n % write_every == write_every - 1 {
                            let title = format!("load {client}-{n}");
                            report.sent.push((student.clone(), title.clone()));
                            let body =
                                serde_json::json!({"title": title, "type": "quiz", "score": 80});
                            let answer = http
                                .post(format!("{portal}/api/students/{student}/grades"))
                                .header(
                                    "idempotency-key",
                                    format!("load-{client}-{n}-{}", std::process::id()),
                                )
                                .json(&body)
                                .send()
                                .await;
                            match answer {
                                Ok(response) if response.status() == 201 => {
                                    match response.json::<serde_json::Value>().await {
                                        Ok(grade) => {
                                            let id =
                                                grade["id"].as_str().unwrap_or_default().to_owned();
                                            report
                                                .acknowledged
                                                .insert((student.clone(), title), id);
                                            None
                                        }
                                        Err(e) => Some(format!("POST: unreadable body: {e}")),
                                    }
                                }
                                Ok(response) => Some(format!(
                                    "POST answered {}: {}",
                                    response.status(),
                                    response.text().await.unwrap_or_default()
                                )),
                                Err(e) => Some(format!("POST failed: {e}")),
                            }
                        } else {
                            match http
                                .get(format!("{portal}/api/students/{student}"))
                                .send()
                                .await
                            {
                                Ok(response) if response.status() == 200 => response
                                    .bytes()
                                    .await
                                    .err()
                                    .map(|e| format!("GET: body: {e}")),
                                Ok(response) => Some(format!(
                                    "GET answered {}: {}",
                                    response.status(),
                                    response.text().await.unwrap_or_default()
                                )),
                                Err(e) => Some(format!("GET failed: {e}")),
                            }
                        };
                        report.answers.push(Answer {
                            at,
                            latency: at.elapsed(),
                            failure,
                        });
                        done.fetch_add(1, Ordering::Relaxed);
                        n += 1;
                    }
                    report
                })
            })
            .collect();
        Load {
            stop,
            clients,
            done,
        }
    }

    /// Requests answered so far.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Waits until `more` further requests have been answered.
    pub async fn run_for(&self, more: u64) {
        let target = self.done() + more;
        super::eventually(
            &format!("{more} more requests are answered"),
            super::PATIENCE * 4,
            || async { (self.done() >= target).then_some(()) },
        )
        .await;
    }

    /// Stops the clients; returns what they saw.
    pub async fn stop(self) -> Report {
        let _ = self.stop.send(true);
        let mut all = Report::default();
        for client in self.clients {
            let report = client.await.expect("a load client");
            all.answers.extend(report.answers);
            all.acknowledged.extend(report.acknowledged);
            all.sent.extend(report.sent);
        }
        all
    }
}
