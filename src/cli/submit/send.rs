//! Sending: rows in batches (or one per request), with bounded concurrency and bounded
//! retries, and the progress line.

use super::*;

/// Counters shared with the progress line.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) done: AtomicUsize,
    pub(super) created: AtomicUsize,
    pub(super) duplicate: AtomicUsize,
    pub(super) conflict: AtomicUsize,
    pub(super) invalid: AtomicUsize,
    pub(super) failed: AtomicUsize,
    pub(super) retries: AtomicUsize,
}

impl Tally {
    fn record(&self, outcome: &Outcome) {
        let counter = match outcome {
            Outcome::Created => &self.created,
            Outcome::Duplicate => &self.duplicate,
            Outcome::Conflict { .. } => &self.conflict,
            Outcome::Invalid { .. } => &self.invalid,
            Outcome::Failed { .. } => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    fn line(&self, total: usize) -> String {
        let n = |c: &AtomicUsize| c.load(Ordering::Relaxed);
        format!(
            "{}/{total} rows: {} created, {} duplicate, {} conflict, {} invalid, {} failed, {} retries",
            n(&self.done),
            n(&self.created),
            n(&self.duplicate),
            n(&self.conflict),
            n(&self.invalid),
            n(&self.failed),
            n(&self.retries),
        )
    }
}

/// A valid row waiting to be sent.
pub(super) struct Pending {
    pub(super) line: usize,
    pub(super) payout_id: String,
    pub(super) request: RawPayoutRequest,
}

/// What the workers share.
pub(super) struct Shared {
    pub(super) client: reqwest::Client,
    pub(super) endpoint: reqwest::Url,
    /// `POST /v1/payouts/batch`; cleared when the service does not take batches (an older
    /// version, or a smaller `batch_items_max`): rows then go one request each.
    pub(super) batch_endpoint: reqwest::Url,
    pub(super) batch_ok: AtomicBool,
    pub(super) auth: Option<HeaderValue>,
    pub(super) retries: u32,
    pub(super) backoff_base_ms: u64,
    /// Rows of one payout id, in file order; a worker takes one group at a time, so rows
    /// for one payout are sent one after the other and the earlier line wins a conflict.
    pub(super) queue: Mutex<VecDeque<Vec<Pending>>>,
    /// Set when the service refused the token: the remaining rows are not sent.
    pub(super) auth_refused: AtomicBool,
    pub(super) tally: Tally,
}

/// One request's result.
pub(super) enum Attempt {
    Done(Outcome),
    /// Worth another try (5xx, 408, 429, timeout, connection error).
    Retry(String),
    /// The token was refused: stop sending.
    Unauthorized(String),
}

/// The endpoints, the `Authorization` header and the HTTP client `options` ask for.
fn connection(
    options: &SubmitOptions,
) -> Result<
    (
        reqwest::Url,
        reqwest::Url,
        Option<HeaderValue>,
        reqwest::Client,
    ),
    SubmitError,
> {
    let base = options.url.trim_end_matches('/');
    let endpoint = reqwest::Url::parse(&format!("{base}/v1/payouts"))
        .map_err(|e| SubmitError::Url(e.to_string()))?;
    let batch_endpoint = reqwest::Url::parse(&format!("{base}/v1/payouts/batch"))
        .map_err(|e| SubmitError::Url(e.to_string()))?;
    if !matches!(endpoint.scheme(), "http" | "https") {
        return Err(SubmitError::Url("use an http:// or https:// URL".into()));
    }
    let auth = match &options.token {
        None => None,
        Some(token) => {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
                .map_err(|_| {
                    SubmitError::Token("holds characters not allowed in an HTTP header")
                })?;
            // Keeps it out of any `Debug` output of the request.
            value.set_sensitive(true);
            Some(value)
        }
    };
    let timeout = Duration::from_millis(options.request_timeout_ms.max(1));
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .build()
        .map_err(|e| SubmitError::Client(e.without_url().to_string()))?;

    Ok((endpoint, batch_endpoint, auth, client))
}

/// Rows refused here go straight into the report; the others are grouped by payout id (a
/// group is sent in file order by one worker), with the file's order of lines kept.
fn sort_rows(rows: Vec<CsvRow>) -> Sorted {
    let mut results: HashMap<usize, RowReport> = HashMap::with_capacity(rows.len());
    let mut lines = Vec::with_capacity(rows.len());
    let mut groups: Vec<Vec<Pending>> = Vec::new();
    let mut group_of: HashMap<String, usize> = HashMap::new();
    let tally = Tally::default();
    for row in rows {
        lines.push(row.line);
        match row.request {
            Err(outcome) => {
                tally.record(&outcome);
                results.insert(
                    row.line,
                    RowReport {
                        line: row.line,
                        payout_id: row.payout_id,
                        outcome,
                    },
                );
            }
            Ok(request) => {
                let slot = *group_of
                    .entry(request.payout_id.clone())
                    .or_insert_with(|| {
                        groups.push(Vec::new());
                        groups.len() - 1
                    });
                groups[slot].push(Pending {
                    line: row.line,
                    payout_id: row.payout_id,
                    request,
                });
            }
        }
    }
    Sorted {
        results,
        lines,
        groups,
        tally,
    }
}

/// The rows sorted for sending.
struct Sorted {
    /// The report of every row already decided (refused here), by line.
    results: HashMap<usize, RowReport>,
    /// Every row's line, in file order.
    lines: Vec<usize>,
    /// The rows to send, grouped by payout id.
    groups: Vec<Vec<Pending>>,
    tally: Tally,
}

/// Sends every valid row and collects the report (invalid rows are reported as they are).
pub async fn submit_rows(
    rows: Vec<CsvRow>,
    options: &SubmitOptions,
) -> Result<Report, SubmitError> {
    let (endpoint, batch_endpoint, auth, client) = connection(options)?;
    let total = rows.len();
    let Sorted {
        mut results,
        lines,
        groups,
        tally,
    } = sort_rows(rows);
    let shared = Arc::new(Shared {
        client,
        endpoint,
        batch_endpoint,
        batch_ok: AtomicBool::new(true),
        auth,
        retries: options.retries.min(RETRIES_MAX),
        backoff_base_ms: options.backoff_base_ms,
        queue: Mutex::new(groups.into()),
        auth_refused: AtomicBool::new(false),
        tally,
    });

    let (stop_progress, stopped) = watch::channel(false);
    let progress = options.progress.then(|| {
        let shared = shared.clone();
        let tty = std::io::stderr().is_terminal();
        eprintln!(
            "payoutd submit: {total} rows ({} invalid here), sending to {} with {} at a time",
            shared.tally.invalid.load(Ordering::Relaxed),
            shown_url(&shared.endpoint),
            options.concurrency.clamp(1, CONCURRENCY_MAX)
        );
        tokio::spawn(show_progress(shared, total, tty, stopped))
    });

    let mut workers = JoinSet::new();
    for _ in 0..options.concurrency.clamp(1, CONCURRENCY_MAX) {
        workers.spawn(worker(shared.clone()));
    }
    while let Some(joined) = workers.join_next().await {
        // A worker that panicked loses its answers; those rows are reported as failed below.
        if let Ok(reports) = joined {
            for r in reports {
                results.insert(r.line, r);
            }
        }
    }
    let _ = stop_progress.send(true);
    if let Some(task) = progress {
        let _ = task.await;
    }

    let rows = lines
        .into_iter()
        .map(|line| {
            results.remove(&line).unwrap_or_else(|| RowReport {
                line,
                payout_id: String::new(),
                outcome: Outcome::Failed {
                    reason: "internal error: no answer was recorded; re-run the file".into(),
                },
            })
        })
        .collect();
    Ok(Report { rows })
}

/// The URL without credentials, for display.
pub(super) fn shown_url(url: &reqwest::Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

pub(super) async fn show_progress(
    shared: Arc<Shared>,
    total: usize,
    tty: bool,
    mut stop: watch::Receiver<bool>,
) {
    let every = Duration::from_millis(if tty {
        PROGRESS_TTY_INTERVAL_MS
    } else {
        PROGRESS_PLAIN_INTERVAL_MS
    });
    // On a terminal a bar redrawn in place; otherwise (a log) a line now and then.
    let bar = tty.then(|| {
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(total as u64),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:30} {msg}") {
            bar.set_style(style);
        }
        bar
    });
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => break,
        }
        let line = shared.tally.line(total);
        match &bar {
            Some(bar) => {
                bar.set_position(shared.tally.done.load(Ordering::Relaxed) as u64);
                bar.set_message(line);
            }
            None => eprintln!("payoutd submit: {line}"),
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

pub(super) async fn worker(shared: Arc<Shared>) -> Vec<RowReport> {
    let mut reports = Vec::new();
    loop {
        let groups: Vec<Vec<Pending>> = {
            let mut queue = shared.queue.lock().await;
            let n = queue.len().min(BATCH_ROWS_MAX);
            queue.drain(..n).collect()
        };
        if groups.is_empty() {
            return reports;
        }
        if groups.len() > 1 && shared.batch_ok.load(Ordering::Relaxed) {
            send_groups_batched(&shared, groups, &mut reports).await;
        } else {
            for group in groups {
                send_group(&shared, group, &mut reports).await;
            }
        }
    }
}

/// Why a row is not sent, if it is not: the token was refused, or an earlier row of the
/// same payout id did not reach the service (sending a later one could let it win over an
/// earlier one that may yet land).
pub(super) fn not_sent(shared: &Shared, blocked_by: Option<usize>) -> Option<Outcome> {
    if shared.auth_refused.load(Ordering::Relaxed) {
        Some(Outcome::Failed {
            reason: "not sent: the service refused the API token".into(),
        })
    } else {
        blocked_by.map(|line| Outcome::Failed {
            reason: format!(
                "not sent: line {line} has the same payout_id and did not reach the service"
            ),
        })
    }
}

/// The rows of one payout id, one request each, in file order.
pub(super) async fn send_group(shared: &Shared, group: Vec<Pending>, reports: &mut Vec<RowReport>) {
    let mut blocked_by: Option<usize> = None;
    for p in group {
        let outcome = match not_sent(shared, blocked_by) {
            Some(o) => o,
            None => send_with_retries(shared, &p).await,
        };
        finish(shared, p, outcome, &mut blocked_by, reports);
    }
}

pub(super) fn finish(
    shared: &Shared,
    p: Pending,
    outcome: Outcome,
    blocked_by: &mut Option<usize>,
    reports: &mut Vec<RowReport>,
) {
    if matches!(outcome, Outcome::Failed { .. }) && blocked_by.is_none() {
        *blocked_by = Some(p.line);
    }
    shared.tally.record(&outcome);
    reports.push(RowReport {
        line: p.line,
        payout_id: p.payout_id,
        outcome,
    });
}

/// Many payout ids at once: each round sends the next row of every group in one batch
/// request (distinct ids, so order within a request does not matter), until every group
/// is done. Rows of one id still go one after the other, in file order.
pub(super) async fn send_groups_batched(
    shared: &Shared,
    groups: Vec<Vec<Pending>>,
    reports: &mut Vec<RowReport>,
) {
    let mut groups: Vec<VecDeque<Pending>> = groups.into_iter().map(VecDeque::from).collect();
    let mut blocked_by: Vec<Option<usize>> = vec![None; groups.len()];
    loop {
        let mut round: Vec<(usize, Pending)> = Vec::new();
        for (g, group) in groups.iter_mut().enumerate() {
            let Some(p) = group.pop_front() else { continue };
            match not_sent(shared, blocked_by[g]) {
                Some(o) => finish(shared, p, o, &mut blocked_by[g], reports),
                None => round.push((g, p)),
            }
        }
        if round.is_empty() {
            return;
        }
        let outcomes = send_batch_with_retries(shared, &round).await;
        for ((g, p), outcome) in round.into_iter().zip(outcomes) {
            finish(shared, p, outcome, &mut blocked_by[g], reports);
        }
    }
}

/// One batch request's answer, as the retry loop sees it.
pub(super) enum BatchAttempt {
    /// One answer per row sent, in order.
    Items(Vec<Attempt>),
    /// The whole request is worth another try.
    Retry(String),
    Unauthorized(String),
    /// The service does not take this batch: send the rows one by one.
    Unsupported,
}

/// The outcome of every row of `round`, retrying rows whose answer was not final (the
/// whole request, or single items answered `unavailable`) within the retry budget.
pub(super) async fn send_batch_with_retries(
    shared: &Shared,
    round: &[(usize, Pending)],
) -> Vec<Outcome> {
    let attempts = shared.retries + 1;
    let mut outcomes: Vec<Option<Outcome>> = vec![None; round.len()];
    let mut last: Vec<String> = vec![String::new(); round.len()];
    for attempt in 1..=attempts {
        let open: Vec<usize> = (0..round.len())
            .filter(|k| outcomes[*k].is_none())
            .collect();
        if open.is_empty() {
            break;
        }
        let requests: Vec<&RawPayoutRequest> = open.iter().map(|k| &round[*k].1.request).collect();
        match send_batch_once(shared, &requests).await {
            BatchAttempt::Items(answers) => {
                for (k, answer) in open.iter().zip(answers) {
                    match answer {
                        Attempt::Done(o) => outcomes[*k] = Some(o),
                        Attempt::Retry(reason) => last[*k] = reason,
                        Attempt::Unauthorized(reason) => {
                            shared.auth_refused.store(true, Ordering::Relaxed);
                            outcomes[*k] = Some(Outcome::Failed { reason });
                        }
                    }
                }
            }
            BatchAttempt::Retry(reason) => {
                for k in &open {
                    last[*k] = reason.clone();
                }
            }
            BatchAttempt::Unauthorized(reason) => {
                shared.auth_refused.store(true, Ordering::Relaxed);
                for k in &open {
                    outcomes[*k] = Some(Outcome::Failed {
                        reason: reason.clone(),
                    });
                }
            }
            BatchAttempt::Unsupported => {
                shared.batch_ok.store(false, Ordering::Relaxed);
                for k in &open {
                    outcomes[*k] = Some(send_with_retries(shared, &round[*k].1).await);
                }
            }
        }
        let still = outcomes.iter().filter(|o| o.is_none()).count();
        if still > 0 && attempt < attempts {
            shared.tally.retries.fetch_add(still, Ordering::Relaxed);
            tokio::time::sleep(backoff(shared.backoff_base_ms, attempt, round[0].1.line)).await;
        }
    }
    outcomes
        .into_iter()
        .zip(last)
        .map(|(o, last)| {
            o.unwrap_or_else(|| Outcome::Failed {
                reason: format!(
                    "{last} (gave up after {attempts} attempt{})",
                    if attempts == 1 { "" } else { "s" }
                ),
            })
        })
        .collect()
}

pub(super) async fn send_batch_once(
    shared: &Shared,
    requests: &[&RawPayoutRequest],
) -> BatchAttempt {
    let body = serde_json::json!({ "payouts": requests });
    let mut call = shared
        .client
        .post(shared.batch_endpoint.clone())
        .json(&body);
    if let Some(auth) = &shared.auth {
        call = call.header(AUTHORIZATION, auth.clone());
    }
    let response = match call.send().await {
        Ok(r) => r,
        Err(e) => return BatchAttempt::Retry(transport_failure(e)),
    };
    let status = response.status();
    let body = read_body_max(response, BATCH_RESPONSE_BYTES_MAX).await;
    match status {
        StatusCode::OK => {}
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            let (code, _, message) = error_parts(status, &body);
            return BatchAttempt::Unauthorized(format!("HTTP {status}: {code}: {message}"));
        }
        s if s.is_server_error()
            || s == StatusCode::REQUEST_TIMEOUT
            || s == StatusCode::TOO_MANY_REQUESTS =>
        {
            let (code, _, message) = error_parts(status, &body);
            return BatchAttempt::Retry(format!("HTTP {status}: {code}: {message}"));
        }
        // No batch endpoint, a batch too large for this service, …: one by one.
        _ => return BatchAttempt::Unsupported,
    }
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    let Some(items) = parsed
        .as_ref()
        .and_then(|v| v.get("results"))
        .and_then(|r| r.as_array())
        .filter(|r| r.len() == requests.len())
    else {
        // An answer we cannot read: sending again is safe (a resent row is a duplicate).
        return BatchAttempt::Retry("unreadable batch answer".into());
    };
    let mut answers: Vec<Option<Attempt>> = (0..requests.len()).map(|_| None).collect();
    for item in items {
        let text = |key: &str| item.get(key).and_then(|v| v.as_str()).map(redact_secrets);
        let Some(index) = item
            .get("index")
            .and_then(|i| i.as_u64())
            .and_then(|i| usize::try_from(i).ok())
            .filter(|i| *i < requests.len())
        else {
            return BatchAttempt::Retry("batch answer without a valid index".into());
        };
        let code = text("code").unwrap_or_default();
        let message = text("message").unwrap_or_default();
        answers[index] = Some(match item.get("status").and_then(|s| s.as_str()) {
            Some("created") => Attempt::Done(Outcome::Created),
            Some("duplicate") => Attempt::Done(Outcome::Duplicate),
            Some("conflict") => Attempt::Done(Outcome::Conflict { code, message }),
            Some("invalid") => Attempt::Done(Outcome::Invalid {
                code,
                field: text("field"),
                message,
            }),
            Some("unavailable") => Attempt::Retry(format!("unavailable: {code}: {message}")),
            other => Attempt::Done(Outcome::Failed {
                reason: format!("unexpected batch item status {other:?}"),
            }),
        });
    }
    match answers.into_iter().collect::<Option<Vec<Attempt>>>() {
        Some(all) => BatchAttempt::Items(all),
        None => BatchAttempt::Retry("batch answer misses some rows".into()),
    }
}

pub(super) async fn send_with_retries(shared: &Shared, p: &Pending) -> Outcome {
    let attempts = shared.retries + 1;
    let mut last = String::new();
    for attempt in 1..=attempts {
        match send_once(shared, &p.request).await {
            Attempt::Done(outcome) => return outcome,
            Attempt::Unauthorized(reason) => {
                shared.auth_refused.store(true, Ordering::Relaxed);
                return Outcome::Failed { reason };
            }
            Attempt::Retry(reason) => last = reason,
        }
        if attempt < attempts {
            shared.tally.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(backoff(shared.backoff_base_ms, attempt, p.line)).await;
        }
    }
    Outcome::Failed {
        reason: format!(
            "{last} (gave up after {attempts} attempt{})",
            if attempts == 1 { "" } else { "s" }
        ),
    }
}

/// Pause before retry number `attempt` (1-based): doubling from `base_ms`, at most
/// `BACKOFF_MAX_MS`, plus up to half of that again, spread by line so that rows that failed
/// together do not all come back at the same instant.
pub(super) fn backoff(base_ms: u64, attempt: u32, line: usize) -> Duration {
    let step = base_ms
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(20))
        .min(BACKOFF_MAX_MS);
    let spread = (line as u64).wrapping_mul(2_654_435_761) % (step / 2 + 1);
    Duration::from_millis(step + spread)
}

pub(super) async fn send_once(shared: &Shared, request: &RawPayoutRequest) -> Attempt {
    let mut call = shared.client.post(shared.endpoint.clone()).json(request);
    if let Some(auth) = &shared.auth {
        call = call.header(AUTHORIZATION, auth.clone());
    }
    let response = match call.send().await {
        Ok(r) => r,
        Err(e) => return Attempt::Retry(transport_failure(e)),
    };
    let status = response.status();
    match status {
        StatusCode::ACCEPTED => return Attempt::Done(Outcome::Created),
        StatusCode::OK => return Attempt::Done(Outcome::Duplicate),
        _ => {}
    }
    let body = read_body(response).await;
    let (code, field, message) = error_parts(status, &body);
    match status {
        StatusCode::CONFLICT => Attempt::Done(Outcome::Conflict { code, message }),
        StatusCode::BAD_REQUEST
        | StatusCode::UNPROCESSABLE_ENTITY
        | StatusCode::PAYLOAD_TOO_LARGE => Attempt::Done(Outcome::Invalid {
            code,
            field,
            message,
        }),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            Attempt::Unauthorized(format!("HTTP {status}: {code}: {message}"))
        }
        s if s.is_server_error()
            || s == StatusCode::REQUEST_TIMEOUT
            || s == StatusCode::TOO_MANY_REQUESTS =>
        {
            Attempt::Retry(format!("HTTP {status}: {code}: {message}"))
        }
        _ => Attempt::Done(Outcome::Failed {
            reason: format!("unexpected HTTP {status}: {code}: {message}"),
        }),
    }
}

/// A request that got no answer, described for the report.
pub(super) fn transport_failure(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    format!("{kind}: {}", error_chain(e))
}

/// The error and its causes, one after the other. `without_url`: the URL may carry
/// credentials.
pub(super) fn error_chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

pub(super) async fn read_body(response: reqwest::Response) -> Vec<u8> {
    read_body_max(response, RESPONSE_BYTES_MAX).await
}

pub(super) async fn read_body_max(mut response: reqwest::Response, max: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < max {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = max - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    body
}

/// Code, field and message of an API error body (`{"error": {"code", "message", "field"}}`),
/// or stand-ins when the body is something else.
pub(super) fn error_parts(status: StatusCode, body: &[u8]) -> (String, Option<String>, String) {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let text = |key: &str| {
        error
            .and_then(|e| e.get(key))
            .and_then(|v| v.as_str())
            .map(redact_secrets)
    };
    let code = text("code").unwrap_or_else(|| format!("http_{}", status.as_u16()));
    let message = text("message").unwrap_or_else(|| {
        let raw = String::from_utf8_lossy(&body[..body.len().min(200)]);
        let raw = raw.trim();
        if raw.is_empty() {
            status
                .canonical_reason()
                .unwrap_or("no reason given")
                .to_owned()
        } else {
            redact_secrets(raw)
        }
    });
    (code, text("field"), message)
}
