//! `Range` header parsing (RFC 9110 §14), pure.
//!
//! Only single byte ranges are honoured; a multi-range request gets the whole resource (SPEC).
//! A syntactically invalid header is ignored (whole resource), as RFC 9110 allows; a valid one
//! that selects nothing is unsatisfiable (416).

/// What a `Range` header asks of a resource of a known length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// No header, not `bytes`, invalid, or several ranges: send everything (200).
    Whole,
    /// Send `start..=end` (206).
    Single { start: u64, end: u64 },
    /// Nothing satisfiable (416).
    Unsatisfiable,
}

/// Parses a `Range` header value against a resource of `len` bytes.
pub fn parse(header: Option<&str>, len: u64) -> Range {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Range::Whole;
    };
    let mut parts = spec.split(',').map(str::trim).filter(|p| !p.is_empty());
    let (Some(part), None) = (parts.next(), parts.next()) else {
        return Range::Whole;
    };
    let Some((first, last)) = part.split_once('-') else {
        return Range::Whole;
    };
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match num(suffix) {
            None => Range::Whole,
            Some(0) => Range::Unsatisfiable,
            Some(_) if len == 0 => Range::Unsatisfiable,
            Some(n) => Range::Single {
                start: len.saturating_sub(n),
                end: len - 1,
            },
        },
        (a, "") => match num(a) {
            None => Range::Whole,
            Some(a) if a >= len => Range::Unsatisfiable,
            Some(a) => Range::Single {
                start: a,
                end: len - 1,
            },
        },
        (a, b) => match (num(a), num(b)) {
            (Some(a), Some(b)) if a <= b => {
                if a >= len {
                    Range::Unsatisfiable
                } else {
                    Range::Single {
                        start: a,
                        end: b.min(len - 1),
                    }
                }
            }
            _ => Range::Whole,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table() {
        let s = |start, end| Range::Single { start, end };
        let cases: &[(Option<&str>, Range)] = &[
            (None, Range::Whole),
            (Some("bytes=0-99"), s(0, 99)),
            (Some("bytes=0-999"), s(0, 99)),
            (Some("bytes=10-"), s(10, 99)),
            (Some("bytes=-10"), s(90, 99)),
            (Some("bytes=-1000"), s(0, 99)),
            (Some("bytes=99-99"), s(99, 99)),
            (Some("bytes=100-"), Range::Unsatisfiable),
            (Some("bytes=100-200"), Range::Unsatisfiable),
            (Some("bytes=-0"), Range::Unsatisfiable),
            (Some("bytes=5-1"), Range::Whole),
            (Some("bytes=0-1,5-6"), Range::Whole),
            (Some("bytes=abc"), Range::Whole),
            (Some("bytes=-"), Range::Whole),
            (Some("items=0-1"), Range::Whole),
            (Some("bytes=+1-2"), Range::Whole),
            (Some("bytes=99999999999999999999-"), Range::Whole),
            (Some(" bytes=0-0 "), s(0, 0)),
        ];
        for (h, want) in cases {
            assert_eq!(parse(*h, 100), *want, "{h:?}");
        }
        assert_eq!(parse(Some("bytes=0-0"), 0), Range::Unsatisfiable);
        assert_eq!(parse(Some("bytes=-5"), 0), Range::Unsatisfiable);
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_in_bounds(h in "\\PC{0,40}", len in 0u64..1_000_000) {
            if let Range::Single { start, end } = parse(Some(&h), len) {
                prop_assert!(start <= end && end < len);
            }
        }

        #[test]
        fn byte_ranges_in_bounds(a in 0u64..2000, b in 0u64..2000, len in 0u64..1000) {
            if let Range::Single { start, end } = parse(Some(&format!("bytes={a}-{b}")), len) {
                prop_assert!(start <= end && end < len);
            }
        }
    }
}
