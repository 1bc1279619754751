//! The closed loop: `clients` tasks, each sending one request, waiting for its answer,
//! and sending the next, for a warm-up and then a measured duration. Latencies go into
//! an HDR histogram (microseconds, three significant digits).

use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::workload::{self, Workload};
use crate::client;

/// How long one request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest latency the histogram holds, in microseconds (longer ones are clamped).
const MAX_LATENCY_US: u64 = 60_000_000;

/// What one run is.
pub(crate) struct Plan<'a> {
    pub workload: Workload,
    pub addr: String,
    pub clients: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Rows a read may pick from (keys `1..=rows`).
    pub rows: u64,
    pub large: &'a str,
}

/// What one run measured.
pub(crate) struct Measured {
    /// Latencies of the requests that succeeded, in microseconds.
    pub latencies: Histogram<u64>,
    pub ok: u64,
    pub errors: u64,
    /// The first error's text, to say what went wrong.
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// Requests completed in all, warm-up included.
    pub completed: u64,
}

fn histogram() -> Histogram<u64> {
    // Bounds and precision are constants the crate accepts.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).unwrap_or_else(|_| Histogram::new(3).unwrap())
}

struct ClientOutcome {
    latencies: Histogram<u64>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
}

/// Runs one plan; shows progress on stderr once a second.
pub(crate) async fn run(plan: &Plan<'_>) -> Measured {
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let end = measure_from + plan.duration;
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(plan.clients);
    for client_no in 0..plan.clients {
        let task = ClientTask {
            workload: plan.workload,
            addr: plan.addr.clone(),
            rows: plan.rows.max(1),
            payload: format!("client-{client_no:04}-payload"),
            large: Arc::from(plan.large),
            seed: 0x9E37_79B9_7F4A_7C15 ^ (client_no as u64 + 1),
            done: Arc::clone(&done),
        };
        tasks.push(tokio::spawn(task.run(measure_from, end)));
    }
    let progress = tokio::spawn(progress(
        plan.workload.name,
        plan.clients,
        Arc::clone(&done),
        start,
        plan.warmup + plan.duration,
    ));
    let mut measured = Measured {
        latencies: histogram(),
        ok: 0,
        errors: 0,
        first_error: None,
        elapsed: plan.duration,
        completed: 0,
    };
    for task in tasks {
        match task.await {
            Ok(outcome) => {
                let _ = measured.latencies.add(&outcome.latencies);
                measured.ok += outcome.ok;
                measured.errors += outcome.errors;
                if measured.first_error.is_none() {
                    measured.first_error = outcome.first_error;
                }
            }
            Err(e) => {
                measured.errors += 1;
                measured
                    .first_error
                    .get_or_insert(format!("client task failed: {e}"));
            }
        }
    }
    progress.abort();
    measured.completed = done.load(Ordering::Relaxed);
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[2K");
        let _ = std::io::stderr().flush();
    }
    measured
}

struct ClientTask {
    workload: Workload,
    addr: String,
    rows: u64,
    payload: String,
    large: Arc<str>,
    seed: u64,
    done: Arc<AtomicU64>,
}

impl ClientTask {
    async fn run(mut self, measure_from: Instant, end: Instant) -> ClientOutcome {
        let mut outcome = ClientOutcome {
            latencies: histogram(),
            ok: 0,
            errors: 0,
            first_error: None,
        };
        let mut n = 0u64;
        loop {
            let sent = Instant::now();
            if sent >= end {
                break;
            }
            let key = 1 + self.next_random() % self.rows;
            let (path, body) =
                workload::request(&self.workload, n, key, &self.payload, &self.large);
            n += 1;
            let answer = client::post(&self.addr, &path, body.as_bytes(), REQUEST_TIMEOUT).await;
            let finished = Instant::now();
            self.done.fetch_add(1, Ordering::Relaxed);
            if sent < measure_from || finished > end {
                continue;
            }
            match answer.map_err(|e| e.to_string()).and_then(check) {
                Ok(()) => {
                    let us = u64::try_from(finished.duration_since(sent).as_micros())
                        .unwrap_or(u64::MAX)
                        .clamp(1, MAX_LATENCY_US);
                    let _ = outcome.latencies.record(us);
                    outcome.ok += 1;
                }
                Err(e) => {
                    outcome.errors += 1;
                    outcome.first_error.get_or_insert(e);
                    // Do not spin on a node that refuses at once.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        outcome
    }

    /// xorshift64*: keys spread over the table without a shared generator.
    fn next_random(&mut self) -> u64 {
        self.seed ^= self.seed >> 12;
        self.seed ^= self.seed << 25;
        self.seed ^= self.seed >> 27;
        self.seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// An answer counts as a success when its status is 200 and neither it nor any of its
/// results carries an error.
fn check(answer: client::Response) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(default)]
        results: Vec<Outcome>,
        error: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Outcome {
        error: Option<String>,
    }
    if answer.status != 200 {
        return Err(format!("HTTP {}: {}", answer.status, answer.text().trim()));
    }
    let parsed: Answer = serde_json::from_slice(&answer.body)
        .map_err(|e| format!("not an rqlite answer ({e}): {}", answer.text()))?;
    if let Some(error) = parsed.error {
        return Err(error);
    }
    match parsed.results.into_iter().find_map(|r| r.error) {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

async fn progress(
    name: &str,
    clients: usize,
    done: Arc<AtomicU64>,
    start: Instant,
    total: Duration,
) {
    // In place on a terminal; a line every five seconds in a log.
    let tty = std::io::stderr().is_terminal();
    let mut last = (start, 0u64);
    let mut every = tokio::time::interval(Duration::from_secs(if tty { 1 } else { 5 }));
    every.tick().await;
    loop {
        every.tick().await;
        let now = Instant::now();
        let count = done.load(Ordering::Relaxed);
        let rate = (count - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-3);
        last = (now, count);
        let line = format!(
            "  {name} x {clients}: {:.0}/{:.0} s, {rate:.0} ops/s",
            now.duration_since(start).as_secs_f64(),
            total.as_secs_f64()
        );
        if tty {
            eprint!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
        let _ = std::io::stderr().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> client::Response {
        client::Response {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn errors_in_answers_are_errors() {
        assert!(check(answer(200, r#"{"results":[{"rows_affected":1}]}"#)).is_ok());
        assert_eq!(
            check(answer(
                200,
                r#"{"results":[{},{"error":"no such table: t"}]}"#
            )),
            Err("no such table: t".into())
        );
        assert!(check(answer(503, r#"{"error":"no leader"}"#)).is_err());
        assert!(check(answer(200, "not json")).is_err());
    }
}
