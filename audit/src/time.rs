//! RFC 3339 UTC timestamps with milliseconds (`2026-12-05T00:38:10.123Z`): fixed width, so that
//! comparing two of them as strings compares the instants.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Days since 1970-01-01 to a civil date (proleptic Gregorian).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `t` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (times before 1970 are written as 1970-01-01).
pub fn format(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs() as i64;
    let (y, mo, d) = civil(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        (s / 60) % 60,
        s % 60,
        since.subsec_millis()
    )
}

/// A civil date to days since 1970-01-01 (the inverse of [`civil`]).
fn days(y: i64, m: u32, d: u32) -> i64 {
    let y = y - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A time as [`format`] writes it, as Unix seconds; `None` for anything else.
pub fn parse(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    if b.len() != 24
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[23] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec, ms) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let day = days(i64::from(y), mo, d);
    let secs = day * 86_400 + i64::from(h * 3600 + mi * 60 + sec);
    Some(secs as f64 + f64::from(ms) / 1000.0)
}

/// Now, formatted.
pub fn now() -> String {
    format(SystemTime::now())
}

/// A `--since` duration: a positive number and a unit, `s`, `m`, `h` or `d` (`30m`, `1h`, `2d`),
/// at most 366 days.
pub fn parse_since(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration like 30m, 1h or 2d");
    let unit = s.chars().last().ok_or_else(bad)?;
    let n: u64 = s[..s.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    let secs = n.checked_mul(mult).ok_or_else(bad)?;
    if n == 0 || secs > 366 * 86_400 {
        return Err(format!("{s:?} must be between 1s and 366d"));
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (a leap day) 12:34:56.789
        let t = UNIX_EPOCH + Duration::from_millis(951_827_696_789);
        assert_eq!(format(t), "2000-02-29T12:34:56.789Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_796_430_000);
        assert_eq!(format(t), "2026-12-05T00:20:00.000Z");
    }

    #[test]
    fn parse_reads_back_what_format_wrote() {
        for ms in [0u64, 951_827_696_789, 1_796_430_000_123, 4_102_444_799_999] {
            let t = UNIX_EPOCH + Duration::from_millis(ms);
            assert_eq!(parse(&format(t)), Some(ms as f64 / 1000.0), "{}", format(t));
        }
        for bad in [
            "",
            "2026-12-05T00:20:00Z",
            "2026-13-05T00:20:00.000Z",
            "2026-12-05 00:20:00.000Z",
            "+026-12-05T00:20:00.000Z",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn parses_since() {
        assert_eq!(parse_since("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_since("2d"), Ok(Duration::from_secs(172_800)));
        for bad in [
            "",
            "h",
            "1",
            "1w",
            "-1h",
            "0h",
            "400d",
            "1.5h",
            "99999999999999999999d",
        ] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }
}
