//! Fuzz target: `Amount::parse` against an independent reading of the amount rule (README field rules) (digits,
//! an optional `.` and 1–7 more digits, > 0, at most i64::MAX stroops) done in i128, and
//! the canonical form (`Display`) parsing back to the same amount.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use payoutd_actors::domain::Amount;

#[derive(Arbitrary, Debug)]
enum Input {
    /// Any text.
    Text(String),
    /// Text shaped like an amount, to reach the range edges often.
    Shaped {
        leading_zeros: u8,
        whole: u64,
        fraction: Option<(u32, u8)>,
    },
    /// Any stroop count: its canonical text must parse back to it.
    Stroops(i64),
}

/// The rule, read independently: the error code the first failing check gives, or stroops.
fn oracle(text: &str) -> Result<i64, &'static str> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (whole, fraction) = match text.find('.') {
        Some(dot) => (&text[..dot], Some(&text[dot + 1..])),
        None => (text, None),
    };
    if !digits(whole) || fraction.is_some_and(|f| !digits(f)) {
        return Err("amount_format");
    }
    let fraction = fraction.unwrap_or("");
    if fraction.len() > 7 {
        return Err("amount_precision");
    }
    let whole = whole.trim_start_matches('0');
    // i64::MAX stroops is 922337203685 whole units: 12 digits. 20 digits fit an i128.
    if whole.len() > 20 {
        return Err("amount_too_large");
    }
    let whole: i128 = if whole.is_empty() {
        0
    } else {
        whole.parse().expect("digits")
    };
    let fraction: i128 = format!("{fraction:0<7}").parse().expect("digits");
    let stroops = whole * 10_000_000 + fraction;
    if stroops > i128::from(i64::MAX) {
        return Err("amount_too_large");
    }
    if stroops == 0 {
        return Err("amount_not_positive");
    }
    Ok(i64::try_from(stroops).expect("checked against i64::MAX"))
}

fn check(text: &str) {
    let parsed = Amount::parse(text);
    let expected = oracle(text);
    match (&parsed, expected) {
        (Ok(a), Ok(stroops)) => {
            assert_eq!(a.stroops(), stroops, "{text:?}");
            let canonical = a.to_string();
            assert_eq!(
                Amount::parse(&canonical).ok(),
                Some(*a),
                "{text:?} → {canonical:?}"
            );
            assert!(
                !canonical.ends_with('0') || !canonical.contains('.'),
                "{canonical:?}"
            );
            assert!(canonical == "0" || !canonical.starts_with('0') || canonical.starts_with("0."));
        }
        (Err(e), Err(code)) => assert_eq!(e.code, code, "{text:?}"),
        _ => panic!("{text:?}: parse gave {parsed:?}, the rule says {expected:?}"),
    }
}

fuzz_target!(|input: Input| match input {
    Input::Text(text) => check(&text),
    Input::Shaped {
        leading_zeros,
        whole,
        fraction,
    } => {
        let mut text = "0".repeat(usize::from(leading_zeros % 8));
        text.push_str(&whole.to_string());
        if let Some((digits, width)) = fraction {
            let width = usize::from(width % 10);
            text.push('.');
            text.push_str(&format!("{digits:0width$}"));
        }
        check(&text);
    }
    Input::Stroops(stroops) => match Amount::from_stroops(stroops) {
        Some(a) => {
            assert!(stroops > 0);
            check(&a.to_string());
            assert_eq!(Amount::parse(&a.to_string()).ok(), Some(a));
        }
        None => assert!(stroops <= 0),
    },
});
