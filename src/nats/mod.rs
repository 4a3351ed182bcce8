//! NATS JetStream ingress: a durable pull consumer that hands each payout request to the
//! payout core and acknowledges it only once the payout is durable in Postgres (or the
//! message is dead-lettered in Postgres), plus the connection plumbing the outbox publisher
//! (`crate::outbox`) shares.
//!
//! Per message, by what [`crate::ingress::ingest`] answers:
//! - `Created` / `Duplicate` → `+ACK` (the payout is in Postgres by then; a redelivery is
//!   a duplicate, answered by the core without a write).
//! - `Rejected` → a `dead_letters` row, then a JSON copy (payload redacted of secret seeds)
//!   on `dead_letter_subject`, then `+TERM`. If the row cannot be written: `-NAK` with
//!   `retry_delay_ms`, so the message comes back.
//! - `Retry` → `-NAK` with `retry_delay_ms`.
//!
//! Nothing the broker acknowledged to a publisher is ever held only in memory here:
//! - By default (`max_deliver = -1`) the server redelivers a message until payoutd
//!   acknowledges it, however long the database is down.
//! - With a finite `max_deliver`, a message that cannot be made durable as a payout on its
//!   last delivery is written as a row of the Postgres inbox (`payout_inbox`, which the
//!   inbox worker turns into a payout like any other row) and acknowledged only once that
//!   row is committed. If even that fails, it is left unacknowledged in the stream (durable
//!   on the broker, no longer delivered) and an error names its stream sequence.
//! - The requests stream payoutd creates keeps a request until it is acknowledged (work
//!   queue retention, no age limit): nothing expires unconsumed.
//!
//! Lag: every `lag_poll_interval_ms` the consumer reads how many requests wait (undelivered
//! plus unacknowledged) and how old the oldest is, for the metrics.
//!
//! - [`settings`] — `[nats]` and `[nats.outbox]`, and their checks.
//! - [`subjects`] — names, subjects, filters, overlaps.
//! - [`connection`] — connecting (credentials never logged), streams and the consumer.
//! - [`consumer`] — the consumer loop and the per-message handling above.

mod connection;
mod consumer;
mod settings;
mod subjects;

pub use connection::*;
pub use consumer::*;
pub use settings::*;
pub(crate) use subjects::*;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::consumer::pull::Config as PullConfig;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy};
use async_nats::jetstream::stream::{
    Config as StreamConfig, DiscardPolicy, RetentionPolicy, StorageType,
};
use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use payoutd_actors::domain::PayoutId;
use payoutd_actors::{ErrorCode, Payouts};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sqlx::PgPool;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{Instrument, debug, error, info, warn};

use crate::config::base::InvalidSetting;
use crate::ingress::{self, IngestOutcome};
use crate::worker::{Backoff, is_stopped, sleep_or_stop, stopped};

/// The `source` of dead letters written by this ingress.
pub const DEAD_LETTER_SOURCE: &str = "nats";
/// Largest batch one pull request may ask for (a sanity bound on `fetch_batch_max`).
pub const FETCH_BATCH_MAX_LIMIT: usize = 10_000;
/// Largest number of messages processed at once (a sanity bound on `in_flight_max`).
pub const IN_FLIGHT_MAX_LIMIT: usize = 100_000;

#[cfg(test)]
mod tests {
    use super::connection::{scrub, split_credentials};
    use super::consumer::peek_payout_id;
    use super::*;

    #[test]
    fn defaults_are_valid_and_off() {
        let s = NatsSettings::default();
        assert!(!s.enabled);
        s.validate().unwrap();
    }

    #[test]
    fn the_section_layers_over_the_defaults_and_refuses_unknown_keys() {
        let load = |pairs: &[(&str, &str)]| {
            crate::config::Settings::load(
                None,
                pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            )
        };
        let s = load(&[
            ("PAYOUTD__NATS__ENABLED", "true"),
            ("PAYOUTD__NATS__URL", "nats://u:p@h:4222"),
            ("PAYOUTD__NATS__OUTBOX__BATCH_MAX", "7"),
        ])
        .unwrap()
        .nats;
        assert!(s.enabled);
        assert_eq!(s.outbox.batch_max, 7);
        assert_eq!(
            s.outbox.poll_interval_ms,
            OutboxSettings::default().poll_interval_ms
        );
        assert!(!format!("{s:?}").contains("u:p"));
        assert!(load(&[("PAYOUTD__NATS__ACK_WAIT", "5")]).is_err());
    }

    #[test]
    fn bad_settings_are_named() {
        let mut s = NatsSettings {
            in_flight_max: 0,
            ..Default::default()
        };
        assert_eq!(s.validate().unwrap_err().key, "nats.in_flight_max");
        s.in_flight_max = 1;
        s.dead_letter_subject = "payouts.requests.dl".into();
        assert_eq!(s.validate().unwrap_err().key, "nats.dead_letter_subject");
        s.dead_letter_subject = "payouts.dead_letter".into();
        s.stream = "A.B".into();
        assert_eq!(s.validate().unwrap_err().key, "nats.stream");
    }

    #[test]
    fn subjects() {
        assert!(subject_matches(
            "payouts.requests.>",
            "payouts.requests.a.b"
        ));
        assert!(!subject_matches("payouts.requests.>", "payouts.requests"));
        assert!(subject_matches("payouts.*.x", "payouts.a.x"));
        assert!(!subject_matches("payouts.*", "payouts.a.x"));
        assert!(filters_overlap("payouts.>", "payouts.events.>"));
        assert!(!filters_overlap("payouts.requests.>", "payouts.events.>"));
        assert!(is_valid_subject("a.*.>", true));
        assert!(!is_valid_subject("a..b", false));
        assert!(!is_valid_subject("a.>.b", true));
    }

    #[test]
    fn credentials_leave_the_url_before_the_client_sees_it() {
        assert_eq!(
            split_credentials("nats://u:p%40ss@h:4222"),
            (
                "nats://h:4222".to_owned(),
                Some(("u".to_owned(), Some("p@ss".to_owned())))
            )
        );
        assert_eq!(
            split_credentials("tls://tok@h"),
            ("tls://h".to_owned(), Some(("tok".to_owned(), None)))
        );
        assert_eq!(
            split_credentials("nats://h:1"),
            ("nats://h:1".to_owned(), None)
        );
    }

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redacted_url("nats://user:pw@h:4222, tls://tok@g:1"),
            "nats://h:4222,tls://g:1"
        );
        assert_eq!(redacted_url("127.0.0.1:4222"), "127.0.0.1:4222");
        assert_eq!(
            scrub("auth failed for user:pw@h", "nats://user:pw@h"),
            "auth failed for [redacted]@h"
        );
    }

    #[test]
    fn payout_ids_are_peeked_but_never_secrets() {
        let seed = "SCCS5ZBI7WVIJ4SW36WGOQQIWJYCL3VOAULSXX3FB57USIO25EDOYQHH";
        assert_eq!(
            peek_payout_id(br#"{"payout_id":"p-1","x":1}"#)
                .unwrap()
                .as_str(),
            "p-1"
        );
        assert!(peek_payout_id(format!(r#"{{"payout_id":"{seed}"}}"#).as_bytes()).is_none());
        assert!(peek_payout_id(b"\xff").is_none());
    }
}
