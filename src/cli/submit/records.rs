//! Reading the file: records split by the CSV rules, the header's columns, each row checked
//! with the service's rules.
//!
//! The split is our own rather than the `csv` crate's: that reader is lenient by design (a
//! stray quote is literal text, an unclosed quote swallows the rest of the file into one
//! field), and for a payments file either would turn a typo into rows silently lost or
//! merged. Here each quoting error is a refused row with its line (`csv_quote`,
//! `csv_unterminated_quote`), and every row gets a line in the report.

use super::*;

const REQUIRED_COLUMNS: [&str; 4] = ["payout_id", "destination", "asset", "amount"];
const MEMO_COLUMNS: [&str; 2] = ["memo_type", "memo_value"];

/// One record of the file as split by the CSV rules.
pub(super) struct Record {
    pub(super) line: usize,
    pub(super) fields: Vec<String>,
    /// A quoting error in this record: (code, message).
    pub(super) error: Option<(ErrorCode, String)>,
}

/// Splits text into records per RFC 4180 (comma separator, `"` quoting with `""` inside,
/// CRLF or LF line ends, line breaks allowed inside quotes). Empty lines are skipped.
// Long because it is one byte-level state machine (field start, quoted field, after a
// closing quote, unquoted field); its states share the cursor and the line count, and
// read best in one place.
pub(super) fn split_records(text: &str) -> Vec<Record> {
    let b = text.as_bytes();
    let mut records = Vec::new();
    let mut i = 0;
    let mut line = 1;
    while i < b.len() {
        if b[i] == b'\n' {
            i += 1;
            line += 1;
            continue;
        }
        if b[i] == b'\r' && b.get(i + 1) == Some(&b'\n') {
            i += 2;
            line += 1;
            continue;
        }
        let start_line = line;
        let mut fields = Vec::new();
        let mut error = None;
        // Splitting only at ASCII bytes keeps every slice on a UTF-8 character boundary.
        loop {
            if b.get(i) == Some(&b'"') {
                i += 1;
                let mut value = String::new();
                let mut seg = i;
                let mut closed = false;
                while i < b.len() {
                    match b[i] {
                        b'"' if b.get(i + 1) == Some(&b'"') => {
                            value.push_str(&text[seg..=i]);
                            i += 2;
                            seg = i;
                        }
                        b'"' => {
                            value.push_str(&text[seg..i]);
                            i += 1;
                            closed = true;
                            break;
                        }
                        b'\n' => {
                            line += 1;
                            i += 1;
                        }
                        _ => i += 1,
                    }
                }
                if !closed {
                    value.push_str(&text[seg..]);
                    fields.push(value);
                    error = Some((
                        ErrorCode::CsvUnterminatedQuote,
                        format!("the quoted field opened on line {start_line} is never closed"),
                    ));
                    break;
                }
                fields.push(value);
                match b.get(i) {
                    Some(b',') => i += 1,
                    Some(b'\n') => {
                        i += 1;
                        line += 1;
                        break;
                    }
                    Some(b'\r') if b.get(i + 1) == Some(&b'\n') => {
                        i += 2;
                        line += 1;
                        break;
                    }
                    None => break,
                    Some(_) => {
                        error = Some((
                            ErrorCode::CsvQuote,
                            "text after a closing quote (write a quote inside a quoted field as \"\")"
                                .to_owned(),
                        ));
                        while i < b.len() && b[i] != b'\n' {
                            i += 1;
                        }
                        if i < b.len() {
                            i += 1;
                            line += 1;
                        }
                        break;
                    }
                }
            } else {
                let start = i;
                while i < b.len() && b[i] != b',' && b[i] != b'\n' {
                    i += 1;
                }
                let mut field = &text[start..i];
                if b.get(i) != Some(&b',') {
                    field = field.strip_suffix('\r').unwrap_or(field);
                }
                if field.contains('"') && error.is_none() {
                    error = Some((
                        ErrorCode::CsvQuote,
                        "a quote inside an unquoted field (quote the whole field and double the quote)"
                            .to_owned(),
                    ));
                }
                fields.push(field.to_owned());
                match b.get(i) {
                    Some(b',') => i += 1,
                    Some(_) => {
                        i += 1;
                        line += 1;
                        break;
                    }
                    None => break,
                }
            }
        }
        records.push(Record {
            line: start_line,
            fields,
            error,
        });
    }
    records
}

/// A data row: where it is, its payout id as written, and the checked request or why not.
pub struct CsvRow {
    pub line: usize,
    pub payout_id: String,
    pub request: Result<RawPayoutRequest, Outcome>,
}

/// Where each known column is in the file.
pub(super) struct Columns {
    pub(super) count: usize,
    pub(super) payout_id: usize,
    pub(super) destination: usize,
    pub(super) asset: usize,
    pub(super) amount: usize,
    pub(super) memo: Option<(usize, usize)>,
}

pub(super) fn columns(header: &Record) -> Result<Columns, SubmitError> {
    if let Some((_, message)) = &header.error {
        return Err(SubmitError::Header(message.clone()));
    }
    let mut at: HashMap<&str, usize> = HashMap::new();
    for (i, name) in header.fields.iter().enumerate() {
        let name = name.trim();
        if !REQUIRED_COLUMNS.contains(&name) && !MEMO_COLUMNS.contains(&name) {
            return Err(SubmitError::Header(format!(
                "unknown column {:?}; the columns are {} and optionally {}",
                redact_secrets(name),
                REQUIRED_COLUMNS.join(","),
                MEMO_COLUMNS.join(",")
            )));
        }
        if at.insert(name, i).is_some() {
            return Err(SubmitError::Header(format!("column {name} appears twice")));
        }
    }
    let need = |name: &str| {
        at.get(name)
            .copied()
            .ok_or_else(|| SubmitError::Header(format!("missing column {name}")))
    };
    let memo = match (at.get("memo_type"), at.get("memo_value")) {
        (Some(&t), Some(&v)) => Some((t, v)),
        (None, None) => None,
        _ => {
            return Err(SubmitError::Header(
                "memo_type and memo_value go together".into(),
            ));
        }
    };
    Ok(Columns {
        count: header.fields.len(),
        payout_id: need("payout_id")?,
        destination: need("destination")?,
        asset: need("asset")?,
        amount: need("amount")?,
        memo,
    })
}

pub(super) fn invalid(code: ErrorCode, field: Option<&str>, message: impl Into<String>) -> Outcome {
    Outcome::Invalid {
        code: code.to_string(),
        field: field.map(str::to_owned),
        message: message.into(),
    }
}

pub(super) fn row_request(cols: &Columns, record: &Record) -> Result<RawPayoutRequest, Outcome> {
    if let Some((code, message)) = &record.error {
        return Err(invalid(*code, None, message.clone()));
    }
    let f = &record.fields;
    if f.len() != cols.count {
        return Err(invalid(
            ErrorCode::CsvColumnCount,
            None,
            format!("expected {} columns, found {}", cols.count, f.len()),
        ));
    }
    let memo = match cols.memo {
        None => None,
        Some((t, v)) => match (f[t].as_str(), f[v].as_str()) {
            ("", "") => None,
            ("", _) => {
                return Err(invalid(
                    ErrorCode::MemoTypeMissing,
                    Some("memo_type"),
                    "memo_value is set but memo_type is empty (none, text, id or hash)",
                ));
            }
            (kind, value) => Some(RawMemo {
                kind: kind.to_owned(),
                value: (!value.is_empty()).then(|| value.to_owned()),
            }),
        },
    };
    let raw = RawPayoutRequest {
        payout_id: f[cols.payout_id].clone(),
        destination: f[cols.destination].clone(),
        asset: f[cols.asset].clone(),
        amount: f[cols.amount].clone(),
        memo,
    };
    match raw.parse() {
        Ok(_) => Ok(raw),
        Err(e) => Err(invalid(e.code, Some(e.field), e.message)),
    }
}

/// Reads and checks every row of a CSV text (header first). Errors are about the file as a
/// whole; a bad row is an `Err` in its own `CsvRow`.
pub fn read_rows(text: &str) -> Result<Vec<CsvRow>, SubmitError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = split_records(text).into_iter();
    let header = records
        .next()
        .ok_or_else(|| SubmitError::Header("the file is empty".into()))?;
    let cols = columns(&header)?;
    let mut rows = Vec::new();
    for record in records {
        if rows.len() == ROWS_MAX {
            return Err(SubmitError::TooManyRows);
        }
        rows.push(CsvRow {
            line: record.line,
            payout_id: record
                .fields
                .get(cols.payout_id)
                .cloned()
                .unwrap_or_default(),
            request: row_request(&cols, &record),
        });
    }
    Ok(rows)
}
