//! Text forms Horizon uses: amounts as 7-decimal strings and times as RFC 3339 UTC.
//!
//! Amounts stay integers (stroops) end to end; only the final string has a decimal point.

/// Formats stroops as Horizon does: `123.4567890` (always 7 decimals, `-` for negatives).
pub fn format_stroops(stroops: i64) -> String {
    let sign = if stroops < 0 { "-" } else { "" };
    // unsigned_abs is total (i64::MIN included), so no overflow is possible here.
    let abs = stroops.unsigned_abs();
    let per = crate::STROOPS_PER_XLM.unsigned_abs();
    format!("{sign}{}.{:07}", abs / per, abs % per)
}

/// Formats unix seconds as an RFC 3339 UTC timestamp, `2015-09-30T17:15:54Z`.
pub fn rfc3339(unix_s: u64) -> String {
    let days = unix_s / 86_400;
    let secs_of_day = unix_s % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs_of_day / 3600,
        (secs_of_day % 3600) / 60,
        secs_of_day % 60
    )
}

/// Gregorian (year, month, day) of a day count since 1970-01-01.
///
/// Works in 400-year eras of 146,097 days, counting years from March so the leap day falls
/// at the end of a year.
fn civil_from_days(days_since_epoch: u64) -> (u64, u64, u64) {
    const DAYS_PER_ERA: u64 = 146_097;
    // 0000-03-01 is 719,468 days before 1970-01-01.
    let z = days_since_epoch + 719_468;
    let era = z / DAYS_PER_ERA;
    let day_of_era = z % DAYS_PER_ERA;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Unix seconds now, from the wall clock (0 if the clock is before 1970).
pub fn now_unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_have_seven_decimals() {
        assert_eq!(format_stroops(0), "0.0000000");
        assert_eq!(format_stroops(1), "0.0000001");
        assert_eq!(format_stroops(123_456_789), "12.3456789");
        assert_eq!(format_stroops(10_000_000_000), "1000.0000000");
        assert_eq!(format_stroops(-15), "-0.0000015");
        assert_eq!(format_stroops(i64::MAX), "922337203685.4775807");
        assert_eq!(format_stroops(i64::MIN), "-922337203685.4775808");
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_443_633_354), "2015-09-30T17:15:54Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
        assert_eq!(rfc3339(1_709_164_800), "2024-02-29T00:00:00Z");
    }
}
