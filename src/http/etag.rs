//! Strong ETags from content hashes, and `If-None-Match`/`If-Range` evaluation. Pure.
//!
//! A segment's ETag is its xxh3 hash, so it is the same at every hop of a relay chain.

/// The quoted strong ETag of a content hash.
pub fn of(hash: u64) -> String {
    format!("\"{hash:016x}\"")
}

/// True when an `If-None-Match` value matches `etag` (weak comparison, `*` matches all).
pub fn none_match(header: &str, etag: &str) -> bool {
    header
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

/// True when an `If-Range` value allows the range: it must be this strong ETag exactly
/// (dates are not used: our resources are identified by content).
pub fn if_range_allows(header: &str, etag: &str) -> bool {
    header.trim() == etag
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        let e = of(0xab);
        assert_eq!(e, "\"00000000000000ab\"");
        assert!(none_match(&e, &e));
        assert!(none_match(&format!("\"x\", W/{e}"), &e));
        assert!(none_match("*", &e));
        assert!(!none_match("\"other\"", &e));
        assert!(if_range_allows(&e, &e));
        assert!(!if_range_allows(&format!("W/{e}"), &e));
    }
}
