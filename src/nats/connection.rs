//! Connecting to the broker (credentials out of the URL, never logged), the JetStream
//! context, and the streams and the consumer payoutd creates when missing.

use super::*;

/// What can go wrong talking to the broker. Never carries the URL's credentials.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot connect to NATS at {server}: {detail}")]
    Connect { server: String, detail: String },
    #[error("JetStream stream {stream}: {detail}")]
    Stream { stream: String, detail: String },
    #[error("JetStream consumer {durable}: {detail}")]
    Consumer { durable: String, detail: String },
    #[error("pulling messages: {0}")]
    Fetch(String),
}

/// The URL(s) without user info (credentials, tokens), fit for logs.
pub fn redacted_url(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let one = one.trim();
            let (scheme, rest) = one.split_once("://").map_or(("", one), |(s, r)| (s, r));
            let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            if scheme.is_empty() {
                host.to_owned()
            } else {
                format!("{scheme}://{host}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Removes whatever user info the URL carries from a message (errors may quote it).
pub(super) fn scrub(message: &str, url: &str) -> String {
    let mut out = message.to_owned();
    for one in url.split(',') {
        let rest = one.trim().split_once("://").map_or(one.trim(), |(_, r)| r);
        if let Some((userinfo, _)) = rest.rsplit_once('@')
            && !userinfo.is_empty()
        {
            out = out.replace(userinfo, "[redacted]");
        }
    }
    out
}

/// The credentials a server URL carries in its user info (`user:password@` or `token@`),
/// percent-decoded, and the URL without them.
pub(super) fn split_credentials(one: &str) -> (String, Option<(String, Option<String>)>) {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let (scheme, rest) = one.split_once("://").map_or(("", one), |(s, r)| (s, r));
    match rest.rsplit_once('@') {
        Some((userinfo, host)) if !userinfo.is_empty() => {
            let bare = if scheme.is_empty() {
                host.to_owned()
            } else {
                format!("{scheme}://{host}")
            };
            let creds = match userinfo.split_once(':') {
                Some((user, pass)) => (decode(user), Some(decode(pass))),
                None => (decode(userinfo), None),
            };
            (bare, Some(creds))
        }
        _ => (one.to_owned(), None),
    }
}

/// Opens a connection. The client reconnects by itself afterwards (and buffers meanwhile);
/// only the first connection is this function's to retry.
///
/// Credentials in the URL are taken out of it and given to the client as options: the
/// client logs the addresses it connects to (at debug level), and those must carry no
/// secret. One set of credentials serves every server of the list (the first one given).
pub async fn connect(settings: &NatsSettings) -> Result<async_nats::Client, NatsError> {
    let url = settings.url.expose_secret();
    let server = redacted_url(url);
    let mut credentials = None;
    let servers: Vec<String> = url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|one| {
            let (bare, creds) = split_credentials(one);
            if credentials.is_none() {
                credentials = creds;
            }
            bare
        })
        .collect();
    let options = async_nats::ConnectOptions::new();
    let options = match credentials {
        Some((user, Some(pass))) => options.user_and_password(user, pass),
        Some((token, None)) => options.token(token),
        None => options,
    };
    let options = options
        .name("payoutd")
        .connection_timeout(Duration::from_millis(settings.connect_timeout_ms))
        .request_timeout(Some(Duration::from_millis(settings.request_timeout_ms)))
        // The client's own reconnection uses the same bounds as ours.
        .reconnect_delay_callback({
            let (min_ms, max_ms) = (
                settings.reconnect_delay_min_ms,
                settings.reconnect_delay_max_ms,
            );
            move |attempts| {
                let factor = 1u64
                    .checked_shl(attempts.min(32) as u32)
                    .unwrap_or(u64::MAX);
                Duration::from_millis(min_ms.saturating_mul(factor).min(max_ms))
            }
        })
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => info!("NATS connection (re)established"),
                async_nats::Event::Disconnected => warn!("NATS connection lost; reconnecting"),
                other => warn!(event = %other, "NATS connection event"),
            }
        });
    let servers: Vec<&str> = servers.iter().map(String::as_str).collect();
    options
        .connect(servers.as_slice())
        .await
        .map_err(|e| NatsError::Connect {
            detail: scrub(&e.to_string(), url),
            server,
        })
}

/// A JetStream context whose API requests and publish acks are bounded by
/// `request_timeout_ms`.
pub fn jetstream(client: async_nats::Client, settings: &NatsSettings) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_millis(settings.request_timeout_ms))
        .build(client)
}

/// Returns the stream, creating it from `config` when it does not exist. An existing
/// stream's configuration is never changed (operators may have tuned it); a warning says
/// when it does not capture the subjects `config` asks for.
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: StreamConfig,
) -> Result<jetstream::stream::Stream, NatsError> {
    let name = config.name.clone();
    let wanted = config.subjects.clone();
    let stream = match js.get_or_create_stream(config).await {
        Ok(s) => s,
        // Another instance may have created it between our look-up and our create.
        Err(first) => js.get_stream(&name).await.map_err(|_| NatsError::Stream {
            stream: name.clone(),
            detail: first.to_string(),
        })?,
    };
    let have = &stream.cached_info().config.subjects;
    for subject in &wanted {
        if !have
            .iter()
            .any(|f| f == subject || subject_matches(f, subject))
        {
            warn!(stream = %name, subject = %subject, existing = ?have, "the existing stream does not capture this subject; its configuration is left as it is");
        }
    }
    Ok(stream)
}

/// The request stream as payoutd creates it when missing.
pub fn request_stream_config(settings: &NatsSettings) -> StreamConfig {
    StreamConfig {
        name: settings.stream.clone(),
        description: Some("payoutd: payout requests".into()),
        subjects: settings.subjects.clone(),
        // Work queue: a request stays until it is acknowledged (or terminated after its
        // dead letter is durable), and only then goes; payoutd's journal is the record.
        // No age limit unless configured: a request is never expired unconsumed.
        retention: RetentionPolicy::WorkQueue,
        discard: DiscardPolicy::Old,
        storage: StorageType::File,
        max_age: Duration::from_millis(settings.stream_max_age_ms),
        ..Default::default()
    }
}

/// Ensures the request stream and the durable pull consumer. The consumer is created, or
/// updated to the configured ack wait / max deliver when it exists (if the server refuses
/// the update, the existing consumer is used as it is, with a warning).
pub async fn ensure_consumer(
    js: &jetstream::Context,
    settings: &NatsSettings,
) -> Result<PullConsumer, NatsError> {
    let stream = ensure_stream(js, request_stream_config(settings)).await?;
    let config = PullConfig {
        durable_name: Some(settings.durable.clone()),
        description: Some("payoutd: payout requests ingress".into()),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_millis(settings.ack_wait_ms),
        max_deliver: settings.max_deliver,
        ..Default::default()
    };
    let consumer_error = |e: &dyn std::fmt::Display| NatsError::Consumer {
        durable: settings.durable.clone(),
        detail: e.to_string(),
    };
    match stream.create_consumer(config).await {
        Ok(c) => Ok(c),
        Err(update) => {
            let existing = stream
                .get_consumer(&settings.durable)
                .await
                .map_err(|_| consumer_error(&update))?;
            warn!(durable = %settings.durable, error = %update, "cannot update the existing consumer; using it as it is");
            Ok(existing)
        }
    }
}

/// Connects, retrying with backoff; None when shutdown came first.
pub(crate) async fn connect_until_stopped(
    settings: &NatsSettings,
    shutdown: &mut watch::Receiver<bool>,
    backoff: &mut Backoff,
) -> Option<async_nats::Client> {
    while !is_stopped(shutdown) {
        let attempt = tokio::select! {
            c = connect(settings) => c,
            () = stopped(shutdown) => return None,
        };
        match attempt {
            Ok(client) => {
                backoff.reset();
                return Some(client);
            }
            Err(e) => {
                let delay_ms = backoff.next_ms();
                warn!(error = %e, retry_in_ms = delay_ms, "cannot connect to NATS; retrying");
                if sleep_or_stop(delay_ms, shutdown).await {
                    return None;
                }
            }
        }
    }
    None
}
