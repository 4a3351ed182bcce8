//! Fuzz target: `horizon::parse_rfc3339` (Horizon's ledger close time, which decides when
//! an envelope is provably expired) against an independent implementation of the same
//! grammar with a different calendar algorithm (days from civil, era-based).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use payoutd_stellar::horizon::parse_rfc3339;

#[derive(Arbitrary, Debug)]
enum Input {
    Text(String),
    /// Field values around and past their limits, in the layout Horizon uses.
    Fields {
        year: u16,
        month: u8,
        day: u8,
        separator: u8,
        hour: u8,
        minute: u8,
        second: u8,
        fraction: Option<u32>,
        offset: Option<(bool, u8, u8)>,
        lowercase_z: bool,
    },
}

/// Days from 1970-01-01 to a proleptic Gregorian date, by eras of 400 years.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let shifted_month = (month + 9) % 12; // March = 0
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn month_days(year: i64, month: i64) -> i64 {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ][(month - 1) as usize]
}

/// `YYYY-MM-DD(T|t| )hh:mm:ss[.d+](Z|z|±hh:mm)` → unix seconds; a leap second counts as :59.
fn oracle(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let number = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let year = number(0, 4)?;
    let month = number(5, 2)?;
    let day = number(8, 2)?;
    let hour = number(11, 2)?;
    let minute = number(14, 2)?;
    let second = number(17, 2)?;
    let punctuation = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if punctuation.iter().any(|(i, c)| b.get(*i) != Some(c))
        || !matches!(b.get(10), Some(b'T' | b't' | b' '))
    {
        return None;
    }
    if !(1..=12).contains(&month) || !(1..=month_days(year, month)).contains(&day) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &fraction[digits..];
    }
    let offset = if rest == "Z" || rest == "z" {
        0
    } else {
        let o = rest.as_bytes();
        if o.len() != 6 || !matches!(o[0], b'+' | b'-') || o[3] != b':' {
            return None;
        }
        let hours: i64 = rest[1..3]
            .parse()
            .ok()
            .filter(|_| o[1..3].iter().all(u8::is_ascii_digit))?;
        let minutes: i64 = rest[4..6]
            .parse()
            .ok()
            .filter(|_| o[4..6].iter().all(u8::is_ascii_digit))?;
        if hours > 23 || minutes > 59 {
            return None;
        }
        let sign = if o[0] == b'+' { 1 } else { -1 };
        sign * (hours * 3_600 + minutes * 60)
    };
    let seconds = hour * 3_600 + minute * 60 + second.min(59);
    Some(days_from_civil(year, month, day) * 86_400 + seconds - offset)
}

fn check(text: &str) {
    assert_eq!(parse_rfc3339(text), oracle(text), "{text:?}");
}

fuzz_target!(|input: Input| match input {
    Input::Text(text) => check(&text),
    Input::Fields {
        year,
        month,
        day,
        separator,
        hour,
        minute,
        second,
        fraction,
        offset,
        lowercase_z,
    } => {
        let separator = match separator % 4 {
            0 => 'T',
            1 => 't',
            2 => ' ',
            _ => 'X',
        };
        let (year, month, day) = (year % 10_000, month % 14, day % 33);
        let (hour, minute, second) = (hour % 26, minute % 62, second % 63);
        let offset = offset.map(|(plus, h, m)| (plus, h % 26, m % 62));
        let mut text =
            format!("{year:04}-{month:02}-{day:02}{separator}{hour:02}:{minute:02}:{second:02}");
        if let Some(f) = fraction {
            text.push_str(&format!(".{f}"));
        }
        match offset {
            Some((plus, h, m)) => {
                let sign = if plus { '+' } else { '-' };
                text.push_str(&format!("{sign}{h:02}:{m:02}"));
            }
            None if lowercase_z => text.push('z'),
            None => text.push('Z'),
        }
        // The oracle itself: it accepts exactly the well-formed field values.
        let well_formed = (1..=12).contains(&month)
            && day >= 1
            && i64::from(day) <= month_days(i64::from(year), i64::from(month))
            && hour <= 23
            && minute <= 59
            && second <= 60
            && separator != 'X'
            && offset.is_none_or(|(_, h, m)| h <= 23 && m <= 59);
        assert_eq!(oracle(&text).is_some(), well_formed, "{text:?}");
        check(&text);
    }
});
