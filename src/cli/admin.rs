//! `payoutd admin …`: the kill switch and the audit trail from the command line, straight on
//! the database (every instance reads the pause from there). Audited as `cli:<user>`.

use crate::admin::{ADMIN_REASON_CHARS_MAX, AUDIT_LIMIT_MAX};
use payoutd_actors::safety::Pause;

/// `payoutd admin …`: the same actions from the command line, straight on the database
/// (every instance reads the pause from there). Audited as `cli:<user>`.
#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Pause paying on every instance: no new envelopes; live ones still settle.
    Pause {
        /// Why (goes into the audit trail).
        #[arg(long)]
        reason: String,
    },
    /// Lift the pause.
    Resume {
        /// Why (goes into the audit trail).
        #[arg(long)]
        reason: String,
    },
    /// Show whether paying is paused, by whom and why.
    Status,
    /// Show the newest admin actions.
    Audit {
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

/// The CLI's actor name: `cli:` and the login name (characters outside A-Z a-z 0-9 . _ -
/// are dropped).
fn cli_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_default();
    let user: String = user
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
        .take(64)
        .collect();
    format!("cli:{}", if user.is_empty() { "unknown" } else { &user })
}

fn show_pause(pause: &Option<Pause>) -> String {
    match pause {
        None => "paying: running (not paused)".to_owned(),
        Some(p) => format!(
            "paying: PAUSED by {} (since {} ms after the Unix epoch): {}",
            p.by, p.since_unix_ms, p.reason
        ),
    }
}

pub async fn run_cli(
    journal: &crate::storage::PgJournal,
    command: &AdminCommand,
) -> Result<std::process::ExitCode, String> {
    use payoutd_actors::ports::ControlStore;
    let check = |reason: &str| -> Result<(), String> {
        let r = reason.trim();
        if r.is_empty() || reason.chars().count() > ADMIN_REASON_CHARS_MAX {
            return Err(format!(
                "--reason must be 1 to {ADMIN_REASON_CHARS_MAX} characters (it goes into the audit trail)"
            ));
        }
        if crate::ingress::redact_secrets(r) != r {
            return Err("--reason looks like it holds a secret seed; never pass one".into());
        }
        Ok(())
    };
    match command {
        AdminCommand::Pause { reason } => {
            check(reason)?;
            let p = journal
                .set_pause(true, &cli_actor(), reason.trim())
                .await
                .map_err(|e| e.to_string())?;
            println!("{}", show_pause(&p));
        }
        AdminCommand::Resume { reason } => {
            check(reason)?;
            let p = journal
                .set_pause(false, &cli_actor(), reason.trim())
                .await
                .map_err(|e| e.to_string())?;
            println!("{}", show_pause(&p));
        }
        AdminCommand::Status => {
            let p = journal.pause_state().await.map_err(|e| e.to_string())?;
            println!("{}", show_pause(&p));
        }
        AdminCommand::Audit { limit } => {
            let limit = (*limit).clamp(1, AUDIT_LIMIT_MAX);
            for e in crate::storage::listing::audit_trail(journal.pool(), limit)
                .await
                .map_err(|e| e.to_string())?
            {
                println!("{}  {:<8} {:<24} {}", e.at, e.action, e.actor, e.reason);
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
