//! Play tokens (`access.play_secret`, SPEC.md "Access control"): who may read which stream.
//!
//! Pure policy: a request's [`Credential`] and the clock in, a [`Viewer`] or a [`Refusal`] out.
//! The HTTP layer (`http::gate`) only finds the credential in the request, asks here, and maps a
//! refusal to a status in `http::error`. Invariants:
//!
//! - Without `play_secret` the policy is open ([`Access::is_open`]): no credential is looked at
//!   and every stream is readable, exactly as before play tokens existed.
//! - A token is parsed only when it is at most [`MAX_TOKEN_LEN`] bytes. It must be a JWT signed
//!   HS256 with the secret; the algorithm is pinned (`none`, HS384, HS512, RS*, ES*, ... are
//!   refused before any key is used). `exp` is required and numeric, `nbf` is optional; both are
//!   checked with [`LEEWAY_S`] (zero) leeway against the caller's clock.
//! - A token grants exactly the streams its `streams` claim matches (names, `prefix*`, or `*`);
//!   a token without the claim, or with entries of neither shape, grants nothing more.
//! - Streams matching `access.public` are readable with no credential, and a credential sent
//!   for them is not looked at (so it is not carried into the URLs of their playlists either).
//! - A credential that cannot be read (garbage, truncated, too long, wrong signature or
//!   algorithm, malformed claims) or none at all is a [`Refusal`] with
//!   [`Refusal::needs_credential`] (401); a genuine token that is expired, not yet valid or
//!   does not cover the stream is forbidden (403).
//! - `http.admin_token` sent as `Authorization: Bearer` reads every stream: SPEC's
//!   `relay.token` may be the upstream's admin token. It is never accepted from the query, so
//!   it is never written into a URL.

use std::sync::Arc;

use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::AccessConfig;

/// Longest token parsed: a play token is a few hundred bytes; this stops a crafted token from
/// costing base64 and JSON work (and memory) proportional to whatever a client sends.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Leeway in seconds on `exp` and `nbf`: none. Token issuers mint with a margin instead, so a
/// token is never accepted a moment after the time it says it ends.
pub const LEEWAY_S: u64 = 0;

/// The read policy of a node, built once from `[access]`.
#[derive(Clone)]
pub struct Access {
    /// `None`: no `play_secret`, every stream is public.
    tokens: Option<Arc<TokenPolicy>>,
}

struct TokenPolicy {
    key: DecodingKey,
    validation: Validation,
    /// Shared with every [`Viewer`] (an `Arc` clone per request, no copy).
    public: Arc<[Pattern]>,
    admin_token: Option<String>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret or the admin token.
        f.debug_struct("Access")
            .field("open", &self.is_open())
            .finish()
    }
}

/// A stream pattern of `access.public` or of a token's `streams` claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// Exactly this stream.
    Name(String),
    /// Every stream starting with this (`demo-*`; `*` alone is every stream).
    Prefix(String),
}

impl Pattern {
    /// Reads `name` or `prefix*`; `None` for anything else (config validation uses the same
    /// grammar for `access.public`).
    pub fn parse(text: &str) -> Option<Pattern> {
        match text.strip_suffix('*') {
            Some("") => Some(Pattern::Prefix(String::new())),
            Some(prefix) if crate::names::is_valid(prefix) => {
                Some(Pattern::Prefix(prefix.to_owned()))
            }
            None if crate::names::is_valid(text) => Some(Pattern::Name(text.to_owned())),
            _ => None,
        }
    }

    /// True when stream `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Name(n) => n == name,
            Pattern::Prefix(p) => name.starts_with(p.as_str()),
        }
    }
}

/// Where a request put its token, as found by the HTTP layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    None,
    /// `?token=..`
    Query(&'a str),
    /// `Authorization: Bearer ..`
    Bearer(&'a str),
}

/// A caller whose credential was checked: what it may read.
#[derive(Debug, Clone)]
pub struct Viewer {
    grant: Grant,
    public: Arc<[Pattern]>,
    /// The caller's own (verified) token when it came in the query: the URLs a playlist or
    /// index lists carry it, because the client that followed a tokenized URL cannot add it.
    query_token: Option<Arc<str>>,
    /// Unix seconds the grant ends (`exp`), if it does.
    expires_at_s: Option<u64>,
    bearer: bool,
}

#[derive(Debug, Clone)]
enum Grant {
    /// No `play_secret`, or the admin token.
    Everything,
    /// No credential: the public streams only.
    Public,
    /// A token: its `streams` claim (plus the public streams).
    Streams(Vec<Pattern>),
}

impl Viewer {
    fn everything() -> Viewer {
        Viewer {
            grant: Grant::Everything,
            public: Arc::from([]),
            query_token: None,
            expires_at_s: None,
            bearer: false,
        }
    }

    /// True when the caller may read stream `name`.
    pub fn may_read(&self, name: &str) -> bool {
        match &self.grant {
            Grant::Everything => true,
            Grant::Public => self.public.iter().any(|p| p.matches(name)),
            Grant::Streams(scope) => {
                scope.iter().any(|p| p.matches(name)) || self.public.iter().any(|p| p.matches(name))
            }
        }
    }

    /// True when the caller may read every stream (and so events that name none).
    pub fn reads_everything(&self) -> bool {
        matches!(self.grant, Grant::Everything)
    }

    /// The token to carry into listed URLs: the caller's own, when it came as `?token=`.
    pub fn query_token(&self) -> Option<&str> {
        self.query_token.as_deref()
    }

    /// [`Viewer::query_token`], shared.
    pub fn query_token_shared(&self) -> Option<Arc<str>> {
        self.query_token.clone()
    }

    /// True when the grant came from an `Authorization` header: the answer depends on a
    /// header its URL does not show, so shared caches must not keep it.
    pub fn by_header(&self) -> bool {
        self.bearer
    }

    /// Unix seconds the grant ends, for responses that outlive the request (SSE).
    pub fn expires_at_s(&self) -> Option<u64> {
        self.expires_at_s
    }
}

/// Why a read was refused. The description never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("stream {0:?} needs a play token (?token= or Authorization: Bearer)")]
    Missing(String),
    #[error("the play token is not valid here: {0}")]
    Unreadable(&'static str),
    #[error("the play token has expired")]
    Expired,
    #[error("the play token is not valid yet")]
    NotYetValid,
    #[error("the play token does not grant stream {0:?}")]
    OutOfScope(String),
}

impl Refusal {
    /// True when the caller has no usable credential (401, as opposed to a genuine token that
    /// does not allow this read: 403).
    pub fn needs_credential(&self) -> bool {
        matches!(self, Refusal::Missing(_) | Refusal::Unreadable(_))
    }
}

/// The claims we read; everything else in the token is ignored.
#[derive(Deserialize)]
struct Claims {
    /// NumericDate: seconds, possibly fractional (RFC 7519).
    exp: Option<f64>,
    nbf: Option<f64>,
    streams: Option<Vec<String>>,
}

impl Access {
    /// No play tokens: every stream is public.
    pub fn open() -> Access {
        Access { tokens: None }
    }

    /// The policy of `[access]` (validated config), with `http.admin_token` as a read-all
    /// bearer credential.
    pub fn new(config: Option<&AccessConfig>, admin_token: Option<&str>) -> Access {
        let Some(secret) = config.and_then(|c| c.play_secret.as_deref()) else {
            return Access::open();
        };
        let public = config
            .and_then(|c| c.public.as_deref())
            .unwrap_or_default()
            .iter()
            .filter_map(|p| Pattern::parse(p))
            .collect();
        let mut validation = Validation::new(Algorithm::HS256);
        // `exp`/`nbf` are checked in `verify` against the caller's clock (pure, testable);
        // `aud`/`iss` are the issuer's business and not checked.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = LEEWAY_S;
        Access {
            tokens: Some(Arc::new(TokenPolicy {
                key: DecodingKey::from_secret(secret.as_bytes()),
                validation,
                public,
                admin_token: admin_token.map(str::to_owned),
            })),
        }
    }

    /// True without `play_secret`: nothing is checked.
    pub fn is_open(&self) -> bool {
        self.tokens.is_none()
    }

    /// May the caller with `credential` read stream `name` at `now_s` (unix seconds)?
    pub fn authorize(
        &self,
        name: &str,
        credential: Credential<'_>,
        now_s: u64,
    ) -> Result<Viewer, Refusal> {
        let Some(policy) = &self.tokens else {
            return Ok(Viewer::everything());
        };
        if policy.public.iter().any(|p| p.matches(name)) {
            return Ok(policy.anonymous());
        }
        if credential == Credential::None {
            return Err(Refusal::Missing(name.to_owned()));
        }
        let viewer = policy.viewer(credential, now_s)?;
        if viewer.may_read(name) {
            Ok(viewer)
        } else {
            Err(Refusal::OutOfScope(name.to_owned()))
        }
    }

    /// The caller behind `credential` for node-wide reads (`/streams`, `/events`): without a
    /// credential, an anonymous viewer of the public streams; a credential sent must be valid.
    pub fn viewer(&self, credential: Credential<'_>, now_s: u64) -> Result<Viewer, Refusal> {
        match &self.tokens {
            None => Ok(Viewer::everything()),
            Some(policy) => policy.viewer(credential, now_s),
        }
    }
}

impl TokenPolicy {
    fn anonymous(&self) -> Viewer {
        Viewer {
            grant: Grant::Public,
            public: self.public.clone(),
            query_token: None,
            expires_at_s: None,
            bearer: false,
        }
    }

    fn viewer(&self, credential: Credential<'_>, now_s: u64) -> Result<Viewer, Refusal> {
        let (token, bearer) = match credential {
            Credential::None => return Ok(self.anonymous()),
            Credential::Query(t) => (t, false),
            Credential::Bearer(t) => {
                if self.is_admin_token(t) {
                    return Ok(Viewer {
                        bearer: true,
                        ..Viewer::everything()
                    });
                }
                (t, true)
            }
        };
        let (streams, expires_at_s) = self.verify(token, now_s)?;
        Ok(Viewer {
            grant: Grant::Streams(streams),
            public: self.public.clone(),
            query_token: (!bearer).then(|| Arc::from(token)),
            expires_at_s: Some(expires_at_s),
            bearer,
        })
    }

    /// Compares in constant time: the admin token is a secret.
    fn is_admin_token(&self, given: &str) -> bool {
        self.admin_token.as_deref().is_some_and(|admin| {
            admin.len() == given.len()
                && admin
                    .bytes()
                    .zip(given.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        })
    }

    /// Checks `token` and returns its scope and the unix second its grant ends.
    fn verify(&self, token: &str, now_s: u64) -> Result<(Vec<Pattern>, u64), Refusal> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Refusal::Unreadable("longer than 4096 bytes"));
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| {
                Refusal::Unreadable(match e.kind() {
                    ErrorKind::InvalidSignature => "bad signature",
                    ErrorKind::InvalidAlgorithm => "not signed with HS256",
                    _ => "not a well-formed JWT with the expected claims",
                })
            })?
            .claims;
        let exp = claims
            .exp
            .filter(|e| e.is_finite())
            .ok_or(Refusal::Unreadable("no numeric exp claim"))?;
        let now = now_s as f64;
        // RFC 7519: not accepted on or after `exp`, nor before `nbf`.
        if now >= exp + LEEWAY_S as f64 {
            return Err(Refusal::Expired);
        }
        if claims.nbf.is_some_and(|nbf| now + (LEEWAY_S as f64) < nbf) {
            return Err(Refusal::NotYetValid);
        }
        let streams = claims
            .streams
            .unwrap_or_default()
            .iter()
            .filter_map(|s| Pattern::parse(s))
            .collect();
        // `exp` is finite and in the future here; the cast saturates.
        Ok((streams, exp.ceil() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef-test";
    const NOW: u64 = 1_800_000_000;

    fn access() -> Access {
        Access::new(
            Some(&AccessConfig {
                play_secret: Some(SECRET.into()),
                public: Some(vec!["lobby".into(), "demo-*".into()]),
                ..AccessConfig::default()
            }),
            Some("admin-secret-token"),
        )
    }

    fn mint(alg: Algorithm, secret: &str, claims: serde_json::Value) -> String {
        encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn token(claims: serde_json::Value) -> String {
        mint(Algorithm::HS256, SECRET, claims)
    }

    fn read(token: &str, name: &str) -> Result<Viewer, Refusal> {
        access().authorize(name, Credential::Query(token), NOW)
    }

    #[test]
    fn patterns() {
        assert_eq!(Pattern::parse("cam"), Some(Pattern::Name("cam".into())));
        assert_eq!(
            Pattern::parse("cam-*"),
            Some(Pattern::Prefix("cam-".into()))
        );
        assert_eq!(Pattern::parse("*"), Some(Pattern::Prefix(String::new())));
        for bad in ["", "a/b", "a*b", "**", "a b*", "../*"] {
            assert_eq!(Pattern::parse(bad), None, "{bad}");
        }
        assert!(Pattern::parse("demo-*").unwrap().matches("demo-1"));
        assert!(!Pattern::parse("demo-*").unwrap().matches("demo"));
        assert!(!Pattern::parse("cam").unwrap().matches("cam2"));
    }

    #[test]
    fn open_node_reads_everything_without_looking_at_credentials() {
        let open = Access::new(None, Some("admin"));
        assert!(open.is_open());
        let v = open
            .authorize("cam", Credential::Query("garbage"), NOW)
            .unwrap();
        assert!(v.reads_everything());
        assert_eq!(v.query_token(), None, "nothing to carry into URLs");
        assert!(open.viewer(Credential::Bearer("x"), NOW).is_ok());
    }

    #[test]
    fn a_valid_token_reads_its_streams_only() {
        let t = token(json!({"exp": NOW + 60, "streams": ["cam", "north-*"]}));
        let v = read(&t, "cam").unwrap();
        assert_eq!(v.query_token(), Some(t.as_str()));
        assert_eq!(v.expires_at_s(), Some(NOW + 60));
        assert!(!v.by_header());
        assert!(v.may_read("north-2") && v.may_read("lobby") && !v.may_read("cam2"));
        assert!(read(&t, "north-1").is_ok());
        assert_eq!(
            read(&t, "south").unwrap_err(),
            Refusal::OutOfScope("south".into())
        );
        let bearer = access()
            .authorize("cam", Credential::Bearer(&t), NOW)
            .unwrap();
        assert!(bearer.by_header());
        assert_eq!(bearer.query_token(), None, "a header client sends it again");
    }

    #[test]
    fn refusals_map_to_401_or_403() {
        let good = token(json!({"exp": NOW + 60, "streams": ["cam"]}));
        let cases: Vec<(&str, String, Refusal)> = vec![
            (
                "wrong secret",
                mint(
                    Algorithm::HS256,
                    "another-secret-of-16",
                    json!({"exp": NOW + 60, "streams": ["cam"]}),
                ),
                Refusal::Unreadable("bad signature"),
            ),
            (
                "HS512",
                mint(
                    Algorithm::HS512,
                    SECRET,
                    json!({"exp": NOW + 60, "streams": ["cam"]}),
                ),
                Refusal::Unreadable("not signed with HS256"),
            ),
            (
                "truncated",
                good[..good.len() - 3].to_owned(),
                Refusal::Unreadable("bad signature"),
            ),
            (
                "garbage",
                "not-a-jwt".into(),
                Refusal::Unreadable("not a well-formed JWT with the expected claims"),
            ),
            (
                "too long",
                "a".repeat(MAX_TOKEN_LEN + 1),
                Refusal::Unreadable("longer than 4096 bytes"),
            ),
            (
                "no exp",
                token(json!({"streams": ["cam"]})),
                Refusal::Unreadable("no numeric exp claim"),
            ),
            (
                "string exp",
                token(json!({"exp": "tomorrow", "streams": ["cam"]})),
                Refusal::Unreadable("not a well-formed JWT with the expected claims"),
            ),
            (
                "expired exactly now",
                token(json!({"exp": NOW, "streams": ["cam"]})),
                Refusal::Expired,
            ),
            (
                "not yet valid",
                token(json!({"exp": NOW + 60, "nbf": NOW + 1, "streams": ["cam"]})),
                Refusal::NotYetValid,
            ),
            (
                "no streams claim",
                token(json!({"exp": NOW + 60})),
                Refusal::OutOfScope("cam".into()),
            ),
            (
                "streams of the wrong shape",
                token(json!({"exp": NOW + 60, "streams": ["a/b", "c*d"]})),
                Refusal::OutOfScope("cam".into()),
            ),
        ];
        for (what, t, want) in cases {
            assert_eq!(read(&t, "cam").unwrap_err(), want, "{what}");
        }
        assert!(Refusal::Unreadable("x").needs_credential());
        assert!(Refusal::Missing("cam".into()).needs_credential());
        assert!(!Refusal::Expired.needs_credential());
        assert!(!Refusal::OutOfScope("cam".into()).needs_credential());
        // nbf equal to now is valid.
        let t = token(json!({"exp": NOW + 60, "nbf": NOW, "streams": ["cam"]}));
        assert!(read(&t, "cam").is_ok());
    }

    #[test]
    fn alg_none_is_refused() {
        // {"alg":"none","typ":"JWT"} . {"exp":1800000060,"streams":["cam"]} . (no signature)
        let header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
        let claims = "eyJleHAiOjE4MDAwMDAwNjAsInN0cmVhbXMiOlsiY2FtIl19";
        for t in [format!("{header}.{claims}."), format!("{header}.{claims}")] {
            assert!(read(&t, "cam").unwrap_err().needs_credential(), "{t}");
        }
    }

    #[test]
    fn public_streams_need_nothing_and_ignore_what_is_sent() {
        let a = access();
        let v = a.authorize("lobby", Credential::None, NOW).unwrap();
        assert_eq!(v.query_token(), None);
        assert!(a
            .authorize("demo-7", Credential::Query("garbage"), NOW)
            .is_ok());
        assert_eq!(
            a.authorize("cam", Credential::None, NOW).unwrap_err(),
            Refusal::Missing("cam".into())
        );
        let anon = a.viewer(Credential::None, NOW).unwrap();
        assert!(anon.may_read("demo-1") && !anon.may_read("cam") && !anon.reads_everything());
        assert!(a.viewer(Credential::Query("garbage"), NOW).is_err());
    }

    #[test]
    fn admin_token_reads_everything_as_a_header_only() {
        let a = access();
        let v = a
            .authorize("cam", Credential::Bearer("admin-secret-token"), NOW)
            .unwrap();
        assert!(v.reads_everything() && v.by_header());
        assert!(a
            .authorize("cam", Credential::Query("admin-secret-token"), NOW)
            .unwrap_err()
            .needs_credential());
        assert!(a
            .authorize("cam", Credential::Bearer("admin-secret-tokeX"), NOW)
            .is_err());
    }

    #[test]
    fn a_token_minted_by_the_readme_openssl_recipe_is_accepted() {
        // README "Play tokens": secret "0123456789abcdef-secret", streams ["cam", "demo-*"].
        let t = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
                 eyJleHAiOjE3OTYzMTE2OTQsInN0cmVhbXMiOlsiY2FtIiwiZGVtby0qIl19.\
                 xcd9cyLvJWdDtNV5IhTFzALwyOyKhtHzEiLJ-Yu46Kc";
        let a = Access::new(
            Some(&AccessConfig {
                play_secret: Some("0123456789abcdef-secret".into()),
                ..AccessConfig::default()
            }),
            None,
        );
        let before_exp = 1_796_311_694 - 1;
        let v = a
            .authorize("demo-3", Credential::Query(t), before_exp)
            .unwrap();
        assert!(v.may_read("cam") && !v.may_read("other"));
        assert_eq!(
            a.authorize("cam", Credential::Query(t), before_exp + 1)
                .unwrap_err(),
            Refusal::Expired
        );
    }
}
