//! Times: the SPEC.md time grammar and wall-clock formatting.
//!
//! A time parameter `T` is RFC 3339 (`2026-11-30T15:04:05.250Z`, any offset), a negative
//! duration from the live edge (`-30s`, `-1h5m`), `live`, or integer unix milliseconds.
//! Parsing is pure ([`parse`]); resolving against a stream's live edge is [`At::resolve`].
//! All wall-clock values inside dvrgate are unix milliseconds (`i64`, `_ms` suffix).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest accepted time parameter: the grammar never needs more, and it bounds the work.
const MAX_LEN: usize = 64;

/// A parsed time parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// An absolute wall-clock time, unix ms (from RFC 3339 or integer ms).
    Wall(i64),
    /// This far before the live edge.
    FromLive(Duration),
    /// The live edge itself.
    Live,
}

/// Why a time parameter was rejected; the message says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid time {input:?}: use RFC 3339 (2026-11-30T15:04:05.250Z), a negative duration from live (-30s, -1h5m), \"live\", or unix milliseconds")]
pub struct TimeError {
    pub input: String,
}

/// Parses a time parameter.
pub fn parse(input: &str) -> Result<At, TimeError> {
    let err = || TimeError {
        input: input.chars().take(MAX_LEN).collect(),
    };
    if input.is_empty() || input.len() > MAX_LEN {
        return Err(err());
    }
    if input == "live" {
        return Ok(At::Live);
    }
    if let Some(rest) = input.strip_prefix('-') {
        if !rest.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(err());
        }
        let d = humantime::parse_duration(rest).map_err(|_| err())?;
        return Ok(At::FromLive(d));
    }
    if input.bytes().all(|b| b.is_ascii_digit()) {
        return input.parse::<i64>().map(At::Wall).map_err(|_| err());
    }
    parse_rfc3339(input).map(At::Wall).ok_or_else(err)
}

impl At {
    /// The wall-clock time in unix ms, given the stream's live edge.
    pub fn resolve(self, live_edge_ms: i64) -> i64 {
        match self {
            At::Wall(ms) => ms,
            At::Live => live_edge_ms,
            At::FromLive(d) => {
                live_edge_ms.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            }
        }
    }
}

/// Now as unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Parses RFC 3339 (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`) to unix ms.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    if b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || !matches!(b.get(10), Some(b'T' | b't' | b' '))
    {
        return None;
    }
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if b.get(13) != Some(&b':') || b.get(16) != Some(&b':') {
        return None;
    }
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => return None,
    };
    if !(1..=days_in_month).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 3 {
                millis = millis * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..3 {
            millis *= 10;
        }
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 60 + om;
            if *sign == b'-' {
                -off
            } else {
                off
            }
        }
        _ => return None,
    };
    let secs =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second.min(59)
            - offset_min * 60;
    Some(secs * 1000 + millis)
}

/// Formats unix ms as RFC 3339 UTC with milliseconds: `2026-11-30T15:04:05.250Z`.
pub fn format_rfc3339(ms: i64) -> String {
    let mut s = String::with_capacity(24);
    write_rfc3339(&mut s, ms);
    s
}

/// Appends unix ms as RFC 3339 UTC with milliseconds (no allocation beyond `out`'s growth).
pub fn write_rfc3339(out: &mut String, ms: i64) {
    use std::fmt::Write;
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let _ = write!(
        out,
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn grammar_table() {
        let t = 1_796_051_045_250; // 2026-11-30T15:04:05.250Z
        let cases: &[(&str, Option<At>)] = &[
            ("2026-11-30T15:04:05.250Z", Some(At::Wall(t))),
            ("2026-11-30T16:04:05.250+01:00", Some(At::Wall(t))),
            ("2026-11-30T15:04:05.25Z", Some(At::Wall(t))),
            ("2026-11-30T15:04:05.250999Z", Some(At::Wall(t))),
            ("2026-11-30T15:04:05Z", Some(At::Wall(t - 250))),
            ("1796051045250", Some(At::Wall(t))),
            ("live", Some(At::Live)),
            ("-30s", Some(At::FromLive(Duration::from_secs(30)))),
            ("-1h5m", Some(At::FromLive(Duration::from_secs(3900)))),
            ("-500ms", Some(At::FromLive(Duration::from_millis(500)))),
            ("", None),
            ("-", None),
            ("--3s", None),
            ("30s", None),
            ("LIVE", None),
            ("2026-13-01T00:00:00Z", None),
            ("2026-02-30T00:00:00Z", None),
            ("2026-11-30T15:04:05", None),
            ("2026-11-30T15:04:05.Z", None),
            ("2026-11-30T15:04:05Zjunk", None),
            ("99999999999999999999", None),
            ("now", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input).ok(), *want, "{input}");
        }
    }

    #[test]
    fn format_round_trip() {
        assert_eq!(
            format_rfc3339(1_796_051_045_250),
            "2026-11-30T15:04:05.250Z"
        );
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            parse_rfc3339("2024-02-29T23:59:59.999Z"),
            Some(1_709_251_199_999)
        );
    }

    #[test]
    fn resolve() {
        assert_eq!(At::Live.resolve(10_000), 10_000);
        assert_eq!(At::FromLive(Duration::from_secs(3)).resolve(10_000), 7_000);
        assert_eq!(At::Wall(5).resolve(10_000), 5);
        assert!(At::FromLive(Duration::MAX).resolve(10_000) < 0);
    }

    proptest! {
        #[test]
        fn parse_does_not_panic(s in "\\PC{0,80}") {
            let _ = parse(&s);
        }

        #[test]
        fn rfc3339_round_trips(ms in -62_135_596_800_000i64..253_402_300_799_999) {
            prop_assert_eq!(parse_rfc3339(&format_rfc3339(ms)), Some(ms));
        }
    }
}
