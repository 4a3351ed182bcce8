//! What became of each row, and the report printed at the end.

use super::*;

/// What became of one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 202: a new payout.
    Created,
    /// 200: already known with the same content (possibly from an earlier attempt of this
    /// run whose answer was lost): nothing new is paid.
    Duplicate,
    /// 409: that payout id exists with other content; the stored payout is untouched.
    Conflict { code: String, message: String },
    /// The row is malformed or fails a field rule (found here or by the service).
    Invalid {
        code: String,
        field: Option<String>,
        message: String,
    },
    /// Did not reach the service (after every retry), or was not sent.
    Failed { reason: String },
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Duplicate => "duplicate",
            Outcome::Conflict { .. } => "conflict",
            Outcome::Invalid { .. } => "invalid",
            Outcome::Failed { .. } => "failed",
        }
    }
}

/// One row's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowReport {
    /// Line of the file where the row starts (the header is line 1).
    pub line: usize,
    /// The row's payout id as written (shown redacted and shortened).
    pub payout_id: String,
    pub outcome: Outcome,
}

/// Rows per outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub created: usize,
    pub duplicate: usize,
    pub conflict: usize,
    pub invalid: usize,
    pub failed: usize,
}

impl Counts {
    pub fn total(&self) -> usize {
        self.created + self.duplicate + self.conflict + self.invalid + self.failed
    }
}

/// The result of a run: one entry per data row, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub rows: Vec<RowReport>,
}

impl Report {
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for r in &self.rows {
            match r.outcome {
                Outcome::Created => c.created += 1,
                Outcome::Duplicate => c.duplicate += 1,
                Outcome::Conflict { .. } => c.conflict += 1,
                Outcome::Invalid { .. } => c.invalid += 1,
                Outcome::Failed { .. } => c.failed += 1,
            }
        }
        c
    }

    /// 0: every row created or duplicate. 1: some row failed to reach the service (re-run
    /// later). 2: some row invalid or in conflict (fix the data).
    pub fn exit_code(&self) -> u8 {
        let c = self.counts();
        if c.failed > 0 {
            1
        } else if c.invalid + c.conflict > 0 {
            2
        } else {
            0
        }
    }
}

pub(super) fn shown_id(id: &str) -> String {
    let id = redact_secrets(id);
    if id.chars().count() > ID_SHOWN_CHARS_MAX {
        let mut s: String = id.chars().take(ID_SHOWN_CHARS_MAX - 1).collect();
        s.push('…');
        s
    } else if id.is_empty() {
        "-".to_owned()
    } else {
        id
    }
}

/// The summary table, then every row that is invalid, in conflict or failed.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.counts();
        writeln!(f, "{:<10} {:>8}", "outcome", "rows")?;
        for (label, n) in [
            ("created", c.created),
            ("duplicate", c.duplicate),
            ("conflict", c.conflict),
            ("invalid", c.invalid),
            ("failed", c.failed),
            ("total", c.total()),
        ] {
            writeln!(f, "{label:<10} {n:>8}")?;
        }
        let problems: Vec<&RowReport> = self
            .rows
            .iter()
            .filter(|r| !matches!(r.outcome, Outcome::Created | Outcome::Duplicate))
            .collect();
        if problems.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = problems.iter().map(|r| shown_id(&r.payout_id)).collect();
        let id_width = ids
            .iter()
            .map(|s| s.chars().count())
            .max()
            .unwrap_or(0)
            .max(9);
        writeln!(f)?;
        writeln!(
            f,
            "rows not created (line: payout_id outcome code field: reason):"
        )?;
        for (r, id) in problems.iter().zip(&ids) {
            let detail = match &r.outcome {
                Outcome::Conflict { code, message } => format!("{code}: {message}"),
                Outcome::Invalid {
                    code,
                    field: Some(field),
                    message,
                } => format!("{code} {field}: {message}"),
                Outcome::Invalid {
                    code,
                    field: None,
                    message,
                } => format!("{code}: {message}"),
                Outcome::Failed { reason } => reason.clone(),
                Outcome::Created | Outcome::Duplicate => String::new(),
            };
            writeln!(
                f,
                "{:>7}: {id:<id_width$} {:<9} {}",
                r.line,
                r.outcome.label(),
                redact_secrets(&detail)
            )?;
        }
        Ok(())
    }
}
