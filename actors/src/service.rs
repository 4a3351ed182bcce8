//! `Payouts`: the handle every ingress uses (HTTP, broker, inbox, CLI). It starts the
//! supervisor, wraps each call in a timeout, and re-drives unfinished payouts on start.

use std::sync::Arc;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use tracing::info;

use crate::actor::{Context, PayoutError, PayoutMsg, SubmitAnswer};
use crate::domain::{PayoutId, PayoutRequest};
use crate::ports::{JournalError, PayoutRecord};
use crate::supervisor::{
    Supervisor, SupervisorArgs, SupervisorConfig, SupervisorMsg, SupervisorStats,
};

/// Ids read per page during recovery.
pub const RECOVERY_PAGE_SIZE: u32 = 1_000;

#[derive(Clone)]
pub struct Payouts {
    supervisor: ActorRef<SupervisorMsg>,
    ctx: Arc<Context>,
    /// How long a caller waits for the payout's actor to answer, in milliseconds.
    call_timeout_ms: u64,
}

impl Payouts {
    /// Starts the supervisor (unnamed: several instances may live in one process, e.g. tests).
    pub async fn start(
        ctx: Arc<Context>,
        config: SupervisorConfig,
        call_timeout_ms: u64,
    ) -> Result<(Self, tokio::task::JoinHandle<()>), ractor::SpawnErr> {
        let (supervisor, join) = Actor::spawn(
            None,
            Supervisor,
            SupervisorArgs {
                ctx: ctx.clone(),
                config,
            },
        )
        .await?;
        Ok((
            Self {
                supervisor,
                ctx,
                call_timeout_ms,
            },
            join,
        ))
    }

    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    async fn call<T: Send + 'static>(
        &self,
        id: &PayoutId,
        build: impl FnOnce(ractor::RpcReplyPort<Result<T, PayoutError>>) -> PayoutMsg,
    ) -> Result<T, PayoutError> {
        let id = id.clone();
        let timeout = Duration::from_millis(self.call_timeout_ms);
        let result = self
            .supervisor
            .call(
                |reply| SupervisorMsg::Route(id, build(reply)),
                Some(timeout),
            )
            .await;
        match result {
            Ok(CallResult::Success(answer)) => answer,
            Ok(CallResult::Timeout) => Err(PayoutError::Unavailable(format!(
                "no answer within {} ms",
                self.call_timeout_ms
            ))),
            Ok(CallResult::SenderError) => Err(PayoutError::Unavailable(
                "the payout actor stopped before answering".into(),
            )),
            Err(e) => Err(PayoutError::Unavailable(format!(
                "supervisor unreachable: {e}"
            ))),
        }
    }

    /// Accepts a payout (or recognises a duplicate, or reports a conflict).
    pub async fn submit(&self, request: PayoutRequest) -> Result<SubmitAnswer, PayoutError> {
        let id = request.payout_id().clone();
        self.call(&id, |reply| PayoutMsg::Submit { request, reply })
            .await
    }

    pub async fn get(&self, id: &PayoutId) -> Result<Option<PayoutRecord>, PayoutError> {
        self.call(id, |reply| PayoutMsg::Get { reply }).await
    }

    pub async fn cancel(&self, id: &PayoutId, reason: String) -> Result<PayoutRecord, PayoutError> {
        self.call(id, |reply| PayoutMsg::Cancel { reason, reply })
            .await
    }

    /// Resumes a parked payout (an operator's decision).
    pub async fn resume(&self, id: &PayoutId, reason: String) -> Result<PayoutRecord, PayoutError> {
        self.call(id, |reply| PayoutMsg::Resume { reason, reply })
            .await
    }

    /// Asks the payout's actor to take its next step (fire and forget).
    pub fn drive(&self, id: PayoutId) {
        // A send error means the supervisor is gone (shutdown); recovery covers it next start.
        let _ = self
            .supervisor
            .cast(SupervisorMsg::Route(id, PayoutMsg::Drive(None)));
    }

    pub async fn stats(&self) -> Option<SupervisorStats> {
        match self
            .supervisor
            .call(
                SupervisorMsg::Stats,
                Some(Duration::from_millis(self.call_timeout_ms)),
            )
            .await
        {
            Ok(CallResult::Success(s)) => Some(s),
            _ => None,
        }
    }

    /// Re-drives every payout that is not finished (BRIEF §2.5). Returns how many.
    pub async fn recover(&self) -> Result<u64, JournalError> {
        let mut after: Option<PayoutId> = None;
        let mut count = 0u64;
        loop {
            let page = self
                .ctx
                .journal
                .active_ids(after.as_ref(), RECOVERY_PAGE_SIZE)
                .await?;
            let Some(last) = page.last().cloned() else {
                break;
            };
            for id in page {
                self.drive(id);
                count += 1;
            }
            after = Some(last);
        }
        info!(payouts = count, "recovery: unfinished payouts re-driven");
        Ok(count)
    }

    /// Stops the supervisor and its actors. Every step is already journaled, so stopping
    /// anywhere is safe; the next start recovers.
    pub async fn shutdown(&self, timeout_ms: u64) {
        let _ = self
            .supervisor
            .stop_and_wait(None, Some(Duration::from_millis(timeout_ms)))
            .await;
    }
}
