//! The subject grammar: stream and consumer names, subjects, filters and whether two
//! filters overlap.

use super::*;

/// A stream or consumer name: no whitespace, `.`, `*`, `>`, path separators.
pub(crate) fn check_name(key: &'static str, name: &str) -> Result<(), InvalidSetting> {
    let bad = |c: char| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\');
    if name.is_empty() || name.len() > 255 || name.chars().any(bad) {
        return Err(invalid(
            key,
            format!("{name:?} is not a valid JetStream name"),
        ));
    }
    Ok(())
}

/// A subject made of non-empty tokens; `*` and a final `>` only when `wildcards`.
pub(crate) fn is_valid_subject(subject: &str, wildcards: bool) -> bool {
    let tokens: Vec<&str> = subject.split('.').collect();
    tokens.iter().enumerate().all(|(i, t)| {
        !t.is_empty()
            && !t.chars().any(char::is_whitespace)
            && match *t {
                "*" => wildcards,
                ">" => wildcards && i == tokens.len() - 1,
                t => !t.contains(['*', '>']),
            }
    })
}

/// Whether `filter` (with `*` / `>` wildcards) matches the literal `subject`.
pub(crate) fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether two filters can match a common subject (used to keep the streams disjoint).
pub(crate) fn filters_overlap(a: &str, b: &str) -> bool {
    let mut x = a.split('.');
    let mut y = b.split('.');
    loop {
        match (x.next(), y.next()) {
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(p), Some(q)) if p == q || p == "*" || q == "*" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}
