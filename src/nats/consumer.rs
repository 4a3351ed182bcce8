//! The durable pull consumer: fetch, hand each message to the core, acknowledge only once
//! durable, dead-letter what is refused (see the module doc of `nats`).

use super::*;

/// Starts the consumer on its own task (see [`run_consumer`]).
pub fn spawn_consumer(
    settings: NatsSettings,
    payouts: Payouts,
    pool: PgPool,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run_consumer(settings, payouts, pool, shutdown))
}

/// Consumes payout requests until `shutdown` turns `true`, then finishes the messages in
/// flight and returns. Broker errors are logged and retried with backoff; it never panics
/// and never gives up.
pub async fn run_consumer(
    settings: NatsSettings,
    payouts: Payouts,
    pool: PgPool,
    mut shutdown: watch::Receiver<bool>,
) {
    let settings = Arc::new(settings);
    let mut backoff = Backoff::new(
        settings.reconnect_delay_min_ms,
        settings.reconnect_delay_max_ms,
    );
    info!(server = %redacted_url(settings.url.expose_secret()), stream = %settings.stream, durable = %settings.durable, "NATS consumer starting");
    // One client for the consumer's life: it reconnects by itself, and the acks of the last
    // messages are flushed through it before it is dropped.
    let Some(client) = connect_until_stopped(&settings, &mut shutdown, &mut backoff).await else {
        info!("NATS consumer stopped before it connected");
        return;
    };
    let js = jetstream(client.clone(), &settings);
    let handler = Arc::new(Handler {
        settings: settings.clone(),
        payouts,
        pool,
        client: client.clone(),
    });
    let consumer = Consume {
        handler,
        limiter: Arc::new(Semaphore::new(settings.in_flight_max)),
    };
    let mut tasks = JoinSet::new();
    while !is_stopped(&shutdown) {
        match consumer
            .run(&js, &mut tasks, &mut shutdown, &mut backoff)
            .await
        {
            Ok(()) => break,
            Err(e) => {
                let delay_ms = backoff.next_ms();
                warn!(error = %e, retry_in_ms = delay_ms, "NATS consumer: broker error; starting over");
                if sleep_or_stop(delay_ms, &mut shutdown).await {
                    break;
                }
            }
        }
    }
    info!(
        in_flight = tasks.len(),
        "NATS consumer stopping; finishing messages in flight"
    );
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            error!(error = %e, "a NATS message task failed");
        }
    }
    // Acks are queued in the client; send them before the connection goes away.
    let flush = tokio::time::timeout(
        Duration::from_millis(settings.request_timeout_ms),
        client.flush(),
    );
    if !matches!(flush.await, Ok(Ok(()))) {
        warn!(
            "the last acknowledgements may not have reached the server; those messages come back as duplicates"
        );
    }
    info!("NATS consumer stopped");
}

/// The pulling side of the consumer.
struct Consume {
    handler: Arc<Handler>,
    /// One permit per message in flight (`in_flight_max`).
    limiter: Arc<Semaphore>,
}

impl Consume {
    /// Ensures stream and consumer, then pulls until shutdown (Ok) or a broker error (Err;
    /// the caller backs off and calls again).
    async fn run(
        &self,
        js: &jetstream::Context,
        tasks: &mut JoinSet<()>,
        shutdown: &mut watch::Receiver<bool>,
        backoff: &mut Backoff,
    ) -> Result<(), NatsError> {
        let settings = &self.handler.settings;
        let mut consumer = tokio::select! {
            c = ensure_consumer(js, settings) => c?,
            () = stopped(shutdown) => return Ok(()),
        };
        backoff.reset();
        let lag_every = Duration::from_millis(settings.lag_poll_interval_ms);
        let mut lag_read: Option<std::time::Instant> = None;
        info!(stream = %settings.stream, durable = %settings.durable, "NATS consumer ready");
        let fetch_wait = Duration::from_millis(settings.fetch_wait_ms);
        loop {
            while let Some(done) = tasks.try_join_next() {
                if let Err(e) = done {
                    error!(error = %e, "a NATS message task failed");
                }
            }
            // While the client reconnects, a pull request would wait in its buffer and reach
            // the server later for an inbox nobody reads any more (its messages would then
            // come back only after ack_wait): wait for the connection instead.
            if self.handler.client.connection_state() != async_nats::connection::State::Connected {
                if sleep_or_stop(settings.reconnect_delay_min_ms, shutdown).await {
                    return Ok(());
                }
                continue;
            }
            if lag_read.is_none_or(|t| t.elapsed() >= lag_every) {
                lag_read = Some(std::time::Instant::now());
                self.read_lag(js, &mut consumer).await;
            }
            // Ask for no more than can be processed now, so that fetched messages do not sit
            // here while their ack deadline runs.
            let free = self.limiter.available_permits().max(1);
            let want = settings.fetch_batch_max.min(free);
            let mut batch = tokio::select! {
                b = consumer.batch().max_messages(want).expires(fetch_wait).messages() => {
                    b.map_err(|e| NatsError::Fetch(e.to_string()))?
                }
                () = stopped(shutdown) => return Ok(()),
            };
            loop {
                let message = tokio::select! {
                    biased;
                    () = stopped(shutdown) => return Ok(()),
                    m = batch.next() => m,
                };
                let message = match message {
                    None => break,
                    Some(Ok(m)) => m,
                    Some(Err(e)) => return Err(NatsError::Fetch(e.to_string())),
                };
                let permit = tokio::select! {
                    biased;
                    () = stopped(shutdown) => {
                        // Not started: give it back for another instance right away.
                        if let Err(e) = message.ack_with(AckKind::Nak(None)).await {
                            debug!(error = %e, "nak on shutdown not sent; the server redelivers after ack_wait");
                        }
                        return Ok(());
                    }
                    p = self.limiter.clone().acquire_owned() => p,
                };
                // The semaphore is never closed; if it were, stop like on shutdown.
                let Ok(permit) = permit else { return Ok(()) };
                let handler = self.handler.clone();
                tasks.spawn(async move {
                    handler.handle(message).await;
                    drop(permit);
                });
            }
        }
    }
}

impl Consume {
    /// Requests waiting (not yet delivered, or delivered and not acknowledged) and the age
    /// of the oldest, into the metrics. A failed read leaves the last figures.
    async fn read_lag(&self, js: &jetstream::Context, consumer: &mut PullConsumer) {
        let metrics = &self.handler.payouts.context().metrics;
        let info = match consumer.info().await {
            Ok(info) => info.clone(),
            Err(e) => {
                debug!(error = %e, "cannot read the consumer's lag");
                return;
            }
        };
        let waiting = info.num_pending + info.num_ack_pending as u64;
        metrics
            .broker_waiting
            .store(waiting as i64, std::sync::atomic::Ordering::Relaxed);
        let age_ms = if waiting == 0 {
            0
        } else {
            // The oldest unacknowledged request follows the acknowledgement floor.
            let seq = info.ack_floor.stream_sequence + 1;
            let stream = js.get_stream(&self.handler.settings.stream).await;
            match stream {
                Ok(stream) => match stream.get_raw_message(seq).await {
                    Ok(m) => {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_millis() as i64)
                            .unwrap_or(0);
                        let then = (m.time.unix_timestamp_nanos() / 1_000_000) as i64;
                        (now - then).max(0)
                    }
                    Err(e) => {
                        debug!(error = %e, seq, "cannot read the oldest waiting request");
                        return;
                    }
                },
                Err(e) => {
                    debug!(error = %e, "cannot read the request stream");
                    return;
                }
            }
        };
        metrics
            .broker_oldest_waiting_ms
            .store(age_ms, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What to tell the server about one message.
enum Verdict {
    Ack,
    Term,
    /// Not durable and not dead-lettered: it must come back.
    Again(String),
}

/// Everything a message task needs.
struct Handler {
    settings: Arc<NatsSettings>,
    payouts: Payouts,
    pool: PgPool,
    /// For echoing dead letters on `dead_letter_subject`.
    client: async_nats::Client,
}

/// The payout id of a message, when it has a valid one, for the span. Secret-looking ids
/// are left out (they are logged nowhere).
pub(super) fn peek_payout_id(payload: &[u8]) -> Option<PayoutId> {
    #[derive(Deserialize)]
    struct Peek {
        payout_id: Option<String>,
    }
    let peek: Peek = serde_json::from_slice(payload).ok()?;
    let id = PayoutId::parse(&peek.payout_id?).ok()?;
    (ingress::redact_secrets(id.as_str()) == id.as_str()).then_some(id)
}

impl Handler {
    async fn handle(&self, message: jetstream::Message) {
        let (stream_seq, delivered) = match message.info() {
            Ok(info) => (info.stream_sequence, info.delivered),
            Err(e) => {
                // Not a JetStream delivery (cannot happen on a pull consumer's inbox).
                warn!(error = %e, "message without JetStream metadata ignored");
                return;
            }
        };
        let span = tracing::info_span!(
            "nats_message",
            stream_seq,
            delivered,
            payout_id = tracing::field::Empty
        );
        if let Some(id) = peek_payout_id(&message.payload) {
            span.record("payout_id", id.as_str());
        }
        async {
            let last_delivery =
                self.settings.max_deliver > 0 && delivered >= self.settings.max_deliver;
            let (kind, what) = match self.decide(&message, stream_seq, delivered).await {
                Verdict::Ack => (AckKind::Ack, "ack"),
                Verdict::Term => (AckKind::Term, "term"),
                Verdict::Again(reason) if !last_delivery => {
                    warn!(reason = %reason, retry_in_ms = self.settings.retry_delay_ms, "not durable yet; the message comes back");
                    let delay = Duration::from_millis(self.settings.retry_delay_ms);
                    (AckKind::Nak(Some(delay)), "nak")
                }
                Verdict::Again(reason) => {
                    // Last delivery: the server would not send it again. Store it where it
                    // is durable (the inbox), never in memory.
                    match crate::storage::inbox::insert(&self.pool, &message.payload).await {
                        Ok(row) => {
                            warn!(reason = %reason, inbox_row = row, "not durable as a payout on its last delivery; stored in the inbox, which makes it one");
                            (AckKind::Ack, "ack")
                        }
                        Err(e) => {
                            error!(stream_seq, reason = %reason, error = %e, "a request on its last delivery could not be stored anywhere: it stays unacknowledged in the stream (durable on the broker, not delivered again); replay it, and set nats.max_deliver = -1");
                            return;
                        }
                    }
                }
            };
            // A lost ack is harmless: the redelivery is a duplicate (or an already
            // dead-lettered message), answered without a second payout.
            if let Err(e) = message.ack_with(kind).await {
                warn!(error = %e, what, "acknowledgement not sent; the server redelivers");
            }
        }
        .instrument(span)
        .await;
    }

    async fn decide(
        &self,
        message: &jetstream::Message,
        stream_seq: u64,
        delivered: i64,
    ) -> Verdict {
        match ingress::ingest(&self.payouts, &message.payload).await {
            IngestOutcome::Created(state) => {
                debug!(%state, "payout accepted");
                Verdict::Ack
            }
            IngestOutcome::Duplicate(state) => {
                debug!(%state, "duplicate payout request");
                Verdict::Ack
            }
            IngestOutcome::Rejected { code, reason } => {
                let reason = ingress::redact_secrets(&reason);
                match self
                    .dead_letter(message, stream_seq, delivered, code, &reason)
                    .await
                {
                    Ok(()) => {
                        warn!(code = %code, reason = %reason, "payout request rejected; dead-lettered");
                        Verdict::Term
                    }
                    Err(e) => Verdict::Again(format!(
                        "rejected ({code}) but the dead letter could not be written: {e}"
                    )),
                }
            }
            IngestOutcome::Retry(reason) => Verdict::Again(reason),
        }
    }

    /// The dead letter row first (durable), then its echo on the dead-letter subject.
    async fn dead_letter(
        &self,
        message: &jetstream::Message,
        stream_seq: u64,
        delivered: i64,
        code: ErrorCode,
        reason: &str,
    ) -> Result<(), String> {
        let redacted = ingress::stored_payload(&message.payload);
        let source_ref = stream_seq.to_string();
        // A redelivery of a message whose dead letter was written but whose TERM was lost:
        // do not write a second row.
        let known = delivered > 1
            && crate::storage::dead_letters::exists(
                &self.pool,
                DEAD_LETTER_SOURCE,
                &source_ref,
                &redacted,
            )
            .await
            .map_err(|e| e.to_string())?;
        if !known {
            ingress::dead_letter(
                &self.pool,
                DEAD_LETTER_SOURCE,
                Some(&source_ref),
                &message.payload,
                code,
                reason,
            )
            .await
            .map_err(|e| e.to_string())?;
        }
        let echo = serde_json::json!({
            "source": DEAD_LETTER_SOURCE,
            "stream": self.settings.stream,
            "stream_seq": stream_seq,
            "subject": ingress::redact_secrets(message.subject.as_str()),
            "code": code,
            "reason": reason,
            "payload": redacted,
        });
        let mut headers = async_nats::HeaderMap::new();
        // Lets a stream that captures dead letters drop the echo of a redelivery.
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("dead-letter:{}:{stream_seq}", self.settings.stream).as_str(),
        );
        let publish = async {
            self.client
                .publish_with_headers(
                    self.settings.dead_letter_subject.clone(),
                    headers,
                    echo.to_string().into(),
                )
                .await
                .map_err(|e| e.to_string())?;
            self.client.flush().await.map_err(|e| e.to_string())
        };
        tokio::time::timeout(
            Duration::from_millis(self.settings.request_timeout_ms),
            publish,
        )
        .await
        .map_err(|_| "publishing the dead letter timed out".to_owned())?
    }
}
