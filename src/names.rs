//! Stream names: `[A-Za-z0-9_-]{1,64}` (SPEC.md). Checked at every boundary (HTTP path, RTMP
//! publish, config) before a name is used as a map key or a path component, which is what makes
//! path traversal impossible.

/// Longest accepted stream name.
pub const MAX_LEN: usize = 64;

/// True when `name` is a valid stream name.
/// A number in a file name (`41` of `segments/41.m4s`, `parts/41.2.m4s`): plain decimal
/// digits only (no sign, no `+`, at most 20), so one number has one spelling.
pub fn decimal(n: &str) -> Option<u64> {
    if n.is_empty() || n.len() > 20 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

pub fn is_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        for ok in ["a", "cam1", "A-b_9", &"x".repeat(64)] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in [
            "",
            "..",
            "a/b",
            "a b",
            "é",
            "a.b",
            "a?key=1",
            &"x".repeat(65),
            "%2e%2e",
        ] {
            assert!(!is_valid(bad), "{bad}");
        }
    }
}
