//! Feeds the payouts to payoutd while it is being killed: each payout sent one to three
//! times, some sends concurrent, each delivery retried until payoutd answers it (it may be
//! dead at that moment). A payout counts as accepted once any delivery got 200 or 202.
//!
//! Two ingresses: HTTP (`POST /v1/payouts`; accepted = 200/202) and NATS JetStream (a
//! publish on the request stream; accepted = the server's publish acknowledgement, after
//! which the broker holds the message and payoutd must not lose it). A payout may arrive
//! over both.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::config::{FEED_CONCURRENCY_MAX, SEND_DEADLINE_MS};
use crate::workload::{PayoutSpec, Via};

/// Pause between two tries of one delivery, in milliseconds.
const RETRY_PAUSE_MS: u64 = 50;
/// One HTTP request may take this long before it counts as "no answer", in milliseconds.
const REQUEST_TIMEOUT_MS: u64 = 10_000;

/// How one try of one delivery ended.
enum Try {
    /// 202: stored now; 200: a duplicate of a stored payout.
    Accepted { created: bool },
    /// The broker acknowledged the publish: the message is durable in the stream.
    Published,
    /// No answer, or an answer that says "try again" (503, 504, 500, 502).
    Again,
    /// Any other answer: the harness sent something payoutd refuses, or payoutd is wrong.
    Refused(String),
}

/// The ingresses payoutd consumes payouts from.
pub struct Ingresses {
    /// `POST {base}/v1/payouts`.
    http_url: String,
    http: reqwest::Client,
    /// JetStream on the server payoutd consumes from, and the subject to publish on.
    nats: async_nats::jetstream::Context,
    subject: String,
}

impl Ingresses {
    pub fn new(base_url: &str, nats: async_nats::jetstream::Context, subject: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
            .connect_timeout(Duration::from_millis(1_000))
            .build()
            .expect("an HTTP client with timeouts builds");
        Self {
            http_url: format!("{base_url}/v1/payouts"),
            http,
            nats,
            subject: subject.to_owned(),
        }
    }

    async fn try_once(&self, via: Via, body: &Value) -> Try {
        match via {
            Via::Nats => {
                let payload = body.to_string().into_bytes();
                match self
                    .nats
                    .publish(self.subject.clone(), payload.into())
                    .await
                {
                    Ok(ack) => match ack.await {
                        Ok(_) => Try::Published,
                        Err(_) => Try::Again,
                    },
                    Err(_) => Try::Again,
                }
            }
            Via::Http => {
                let (url, client) = (&self.http_url, &self.http);
                let response = match client.post(url).json(body).send().await {
                    Ok(r) => r,
                    Err(_) => return Try::Again,
                };
                let status = response.status().as_u16();
                match status {
                    202 => Try::Accepted { created: true },
                    200 => Try::Accepted { created: false },
                    500 | 502 | 503 | 504 => Try::Again,
                    _ => {
                        let text = response.text().await.unwrap_or_default();
                        Try::Refused(format!("HTTP {status}: {text}"))
                    }
                }
            }
        }
    }
}

/// What the feeder did.
#[derive(Debug, Default)]
pub struct FeedStats {
    /// Payout ids with at least one delivery answered 200/202.
    pub accepted: BTreeSet<String>,
    /// Deliveries (one per send of a payout, however many tries each took).
    pub deliveries: u64,
    /// Deliveries beyond the first of each payout.
    pub duplicates_sent: u64,
    /// HTTP deliveries answered 202 (stored now) and 200 (already stored).
    pub answered_created: u64,
    pub answered_duplicate: u64,
    /// NATS deliveries acknowledged by the broker.
    pub published: u64,
    /// Tries that got no answer or a "try again" answer.
    pub retries: u64,
    /// Deliveries payoutd refused (409, 422, …): each is a violation.
    pub refused: Vec<String>,
    /// Deliveries that never got an answer within `SEND_DEADLINE_MS`.
    pub gave_up: Vec<String>,
}

type Shared = Arc<Mutex<FeedStats>>;

fn with<R>(stats: &Shared, f: impl FnOnce(&mut FeedStats) -> R) -> R {
    f(&mut stats.lock().unwrap_or_else(PoisonError::into_inner))
}

/// Delivers one message: tries until it is answered, refused, or the deadline passes.
async fn deliver(ingress: &Ingresses, spec: &PayoutSpec, variant: usize, stats: &Shared) {
    let body = spec.body(variant);
    let via = spec.via[variant];
    let deadline = Instant::now() + Duration::from_millis(SEND_DEADLINE_MS);
    with(stats, |s| s.deliveries += 1);
    loop {
        match ingress.try_once(via, &body).await {
            Try::Published => {
                with(stats, |s| {
                    s.accepted.insert(spec.id.clone());
                    s.published += 1;
                });
                return;
            }
            Try::Accepted { created } => {
                with(stats, |s| {
                    s.accepted.insert(spec.id.clone());
                    if created {
                        s.answered_created += 1;
                    } else {
                        s.answered_duplicate += 1;
                    }
                });
                return;
            }
            Try::Refused(why) => {
                with(stats, |s| {
                    s.refused.push(format!("{} ({via:?}): {why}", spec.id))
                });
                return;
            }
            Try::Again => {
                with(stats, |s| s.retries += 1);
                if Instant::now() >= deadline {
                    with(stats, |s| {
                        s.gave_up.push(format!(
                            "{}: no answer within {SEND_DEADLINE_MS} ms",
                            spec.id
                        ))
                    });
                    return;
                }
                tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await;
            }
        }
    }
}

/// Sends every send of one payout: all at once, or one after another with pauses.
async fn feed_one(ingress: Arc<Ingresses>, spec: Arc<PayoutSpec>, stats: Shared) {
    if spec.concurrent {
        let mut all = JoinSet::new();
        for variant in 0..spec.sends {
            let (ingress, spec, stats) = (ingress.clone(), spec.clone(), stats.clone());
            all.spawn(async move { deliver(&ingress, &spec, variant, &stats).await });
        }
        while all.join_next().await.is_some() {}
    } else {
        for variant in 0..spec.sends {
            if variant > 0 {
                tokio::time::sleep(Duration::from_millis(spec.gaps_ms[variant - 1])).await;
            }
            deliver(&ingress, &spec, variant, &stats).await;
        }
    }
}

/// Feeds every payout, pacing their first sends by `start_gap_ms`; returns once every
/// delivery has ended.
pub async fn run(specs: Vec<PayoutSpec>, ingress: Arc<Ingresses>) -> FeedStats {
    let stats: Shared = Arc::default();
    let slots = Arc::new(Semaphore::new(FEED_CONCURRENCY_MAX));
    let mut tasks = JoinSet::new();
    for spec in specs {
        tokio::time::sleep(Duration::from_millis(spec.start_gap_ms)).await;
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        with(&stats, |s| s.duplicates_sent += spec.sends as u64 - 1);
        let (ingress, stats) = (ingress.clone(), stats.clone());
        tasks.spawn(async move {
            feed_one(ingress, Arc::new(spec), stats).await;
            drop(slot);
        });
    }
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            panic!("a feeder task failed: {e}");
        }
    }
    let stats = Arc::try_unwrap(stats).expect("every feeder task has ended");
    stats.into_inner().unwrap_or_else(PoisonError::into_inner)
}
