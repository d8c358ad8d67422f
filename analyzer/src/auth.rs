//! Bearer-token checks for the API, compared in constant time. Four kinds of token:
//!
//! - **shared** (`--token`, `token`, `token_file`): good for everything — pushing reports for any node,
//!   reading, and the write actions (drain/resume).
//! - **ingest** (`[auth] ingest_tokens`): agents push reports for any node; cannot read.
//! - **node** (`[auth.node_tokens]`): one node's agent pushes reports for that node only; a report for
//!   another node is refused with 403 naming both nodes. Cannot read.
//! - **read** (`[auth] read_tokens`): the CLI, Grafana and other readers; cannot push or act.
//!
//! With no token configured at all every request passes (the server warns loudly at start).
//! **Architecture Invariant:** no token value is ever logged or printed: `Token`'s `Debug` is
//! redacted, and errors name the kind of token, never its text.

use std::collections::BTreeMap;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use subtle::{Choice, ConstantTimeEq};

/// A configured API token. `Debug` never prints it.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Why a token string cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is empty")]
    Empty,
    #[error("the token contains whitespace or control characters, which cannot travel in an Authorization header")]
    BadCharacters,
}

/// Tokens shorter than this draw a warning at start-up: 16 random characters (about 95 bits from
/// `openssl rand -base64 12`) cannot be guessed over HTTP; one or two characters can.
pub const MIN_TOKEN_CHARS: usize = 16;

impl Token {
    /// Accepts a token as typed or read from a file; surrounding whitespace (a trailing newline) is
    /// trimmed.
    pub fn new(raw: &str) -> Result<Self, TokenError> {
        let t = raw.trim();
        if t.is_empty() {
            return Err(TokenError::Empty);
        }
        if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(TokenError::BadCharacters);
        }
        Ok(Self(t.to_string()))
    }

    /// True when the token is shorter than `MIN_TOKEN_CHARS`: it works, but a start-up warning says
    /// it can be guessed.
    pub fn is_weak(&self) -> bool {
        self.0.chars().count() < MIN_TOKEN_CHARS
    }

    /// Constant-time comparison with a presented token.
    pub fn matches(&self, presented: &str) -> bool {
        bool::from(self.ct_matches(presented))
    }

    fn ct_matches(&self, presented: &str) -> Choice {
        // `ct_eq` on slices of different lengths returns false without looking at the content; the
        // length of the token is not a secret worth hiding.
        self.0.as_bytes().ct_eq(presented.as_bytes())
    }

    fn same_as(&self, other: &Token) -> bool {
        self.matches(&other.0)
    }
}

/// Why a request was refused; the message is what the client sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing Authorization header: send `Authorization: Bearer <token>`")]
    Missing,
    #[error("malformed Authorization header: expected `Bearer <token>`")]
    Malformed,
    #[error("wrong token")]
    Wrong,
    /// A valid token of a kind that may not do this (HTTP 403).
    #[error("{0}")]
    Forbidden(String),
}

impl AuthError {
    /// 403 for a known token used for the wrong thing, 401 otherwise.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Self::Forbidden(_))
    }
}

/// What an accepted ingest token allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestGrant {
    /// Reports for any node (shared or ingest token, or no auth configured).
    AnyNode,
    /// Reports for this node only.
    Node(String),
}

impl IngestGrant {
    /// Checks that a decoded report's node is one this grant may push for.
    pub fn allows(&self, node: &str) -> Result<(), AuthError> {
        match self {
            Self::AnyNode => Ok(()),
            Self::Node(own) if own == node => Ok(()),
            Self::Node(own) => Err(AuthError::Forbidden(format!(
                "this token belongs to node {own:?} and may not push a report for node {node:?}"
            ))),
        }
    }
}

/// Which kind of token matched.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Shared,
    Ingest,
    Read,
    Node(String),
}

/// Every configured token, by kind.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    shared: Vec<Token>,
    ingest: Vec<Token>,
    read: Vec<Token>,
    nodes: Vec<(String, Token)>,
}

/// Two kinds of token share one value: which kind a request is would be ambiguous.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the same token is configured as {first} and as {second}; every token must be unique")]
pub struct DuplicateToken {
    pub first: String,
    pub second: String,
}

impl Auth {
    /// Builds the token table. `node_tokens` maps a node name to its own token.
    pub fn new(
        shared: Option<Token>,
        ingest: Vec<Token>,
        read: Vec<Token>,
        node_tokens: BTreeMap<String, Token>,
    ) -> Result<Self, DuplicateToken> {
        let auth =
            Self { shared: shared.into_iter().collect(), ingest, read, nodes: node_tokens.into_iter().collect() };
        let all: Vec<(String, &Token)> = auth
            .shared
            .iter()
            .map(|t| ("the shared token".to_string(), t))
            .chain(auth.ingest.iter().enumerate().map(|(i, t)| (format!("auth.ingest_tokens[{i}]"), t)))
            .chain(auth.read.iter().enumerate().map(|(i, t)| (format!("auth.read_tokens[{i}]"), t)))
            .chain(auth.nodes.iter().map(|(n, t)| (format!("auth.node_tokens.{n:?}"), t)))
            .collect();
        for (i, (a_name, a)) in all.iter().enumerate() {
            for (b_name, b) in &all[i + 1..] {
                if a.same_as(b) {
                    return Err(DuplicateToken { first: a_name.clone(), second: b_name.clone() });
                }
            }
        }
        Ok(auth)
    }

    /// A table with one shared token (or none: open).
    pub fn shared_only(token: Option<Token>) -> Self {
        Self { shared: token.into_iter().collect(), ..Self::default() }
    }

    /// No token at all: every request passes.
    pub fn is_open(&self) -> bool {
        self.shared.is_empty() && self.ingest.is_empty() && self.read.is_empty() && self.nodes.is_empty()
    }

    pub fn has_shared(&self) -> bool {
        !self.shared.is_empty()
    }

    /// How many tokens of each kind: (shared, ingest, read, node). For the start-up log line.
    /// How many configured tokens are weak (shorter than `MIN_TOKEN_CHARS`).
    pub fn weak_tokens(&self) -> usize {
        self.shared
            .iter()
            .chain(&self.ingest)
            .chain(&self.read)
            .chain(self.nodes.iter().map(|(_, t)| t))
            .filter(|t| t.is_weak())
            .count()
    }

    pub fn counts(&self) -> (usize, usize, usize, usize) {
        (self.shared.len(), self.ingest.len(), self.read.len(), self.nodes.len())
    }

    /// The kind of the presented token. Every configured token is compared, whatever matched first,
    /// so the time taken does not say which kind (or which position) matched.
    fn identify(&self, headers: &HeaderMap) -> Result<Kind, AuthError> {
        let presented = bearer(headers)?;
        let mut found: Option<Kind> = None;
        let mut note = |hit: Choice, kind: Kind| {
            if bool::from(hit) && found.is_none() {
                found = Some(kind);
            }
        };
        for t in &self.shared {
            note(t.ct_matches(presented), Kind::Shared);
        }
        for t in &self.ingest {
            note(t.ct_matches(presented), Kind::Ingest);
        }
        for t in &self.read {
            note(t.ct_matches(presented), Kind::Read);
        }
        for (n, t) in &self.nodes {
            note(t.ct_matches(presented), Kind::Node(n.clone()));
        }
        found.ok_or(AuthError::Wrong)
    }

    /// May this request push reports, and for which nodes?
    pub fn check_ingest(&self, headers: &HeaderMap) -> Result<IngestGrant, AuthError> {
        if self.is_open() {
            return Ok(IngestGrant::AnyNode);
        }
        match self.identify(headers)? {
            Kind::Shared | Kind::Ingest => Ok(IngestGrant::AnyNode),
            Kind::Node(n) => Ok(IngestGrant::Node(n)),
            Kind::Read => Err(AuthError::Forbidden(
                "this is a read token: it may read the API but not push reports (use an ingest or node token)".into(),
            )),
        }
    }

    /// May this request read the API?
    pub fn check_read(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        if self.is_open() {
            return Ok(());
        }
        match self.identify(headers)? {
            Kind::Shared | Kind::Read => Ok(()),
            Kind::Ingest => Err(AuthError::Forbidden(
                "this is an ingest token: it may push reports but not read the API (use a read token)".into(),
            )),
            Kind::Node(n) => Err(AuthError::Forbidden(format!(
                "this is node {n:?}'s token: it may push that node's reports but not read the API (use a read token)"
            ))),
        }
    }

    /// May this request change things (drain, resume)? Only the shared token.
    pub fn check_admin(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        if self.is_open() {
            return Ok(());
        }
        match self.identify(headers)? {
            Kind::Shared => Ok(()),
            _ => Err(AuthError::Forbidden(
                "this token may not change anything: actions need the shared (--token) token".into(),
            )),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    let Some(value) = headers.get(AUTHORIZATION) else { return Err(AuthError::Missing) };
    let value = value.to_str().map_err(|_| AuthError::Malformed)?;
    let (scheme, rest) = value.trim().split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed);
    }
    Ok(rest.trim())
}

/// Checks the request headers against one configured token (any kind of access). With no token
/// configured every request passes.
pub fn check(token: Option<&Token>, headers: &HeaderMap) -> Result<(), AuthError> {
    let Some(token) = token else { return Ok(()) };
    if token.matches(bearer(headers)?) { Ok(()) } else { Err(AuthError::Wrong) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    fn t(s: &str) -> Token {
        Token::new(s).unwrap()
    }

    fn table() -> Auth {
        Auth::new(
            Some(t("sh4red-secret")),
            vec![t("ingest-a"), t("ingest-b")],
            vec![t("reader")],
            [("node-0001".to_string(), t("n1")), ("node-0002".to_string(), t("n2"))].into_iter().collect(),
        )
        .unwrap()
    }

    #[test]
    fn right_token_passes_and_wrong_ones_are_named() {
        let t = Token::new("s3cret\n").unwrap();
        assert_eq!(check(Some(&t), &headers("Bearer s3cret")), Ok(()));
        assert_eq!(check(Some(&t), &headers("bearer s3cret")), Ok(()));
        assert_eq!(check(Some(&t), &headers("Bearer s3cre")), Err(AuthError::Wrong));
        assert_eq!(check(Some(&t), &headers("Bearer s3cret2")), Err(AuthError::Wrong));
        assert_eq!(check(Some(&t), &headers("Basic s3cret")), Err(AuthError::Malformed));
        assert_eq!(check(Some(&t), &headers("s3cret")), Err(AuthError::Malformed));
        assert_eq!(check(Some(&t), &HeaderMap::new()), Err(AuthError::Missing));
    }

    #[test]
    fn no_token_configured_lets_everything_through() {
        assert_eq!(check(None, &HeaderMap::new()), Ok(()));
        let open = Auth::default();
        assert!(open.is_open());
        assert_eq!(open.check_ingest(&HeaderMap::new()), Ok(IngestGrant::AnyNode));
        assert_eq!(open.check_read(&HeaderMap::new()), Ok(()));
        assert_eq!(open.check_admin(&HeaderMap::new()), Ok(()));
    }

    #[test]
    fn unusable_tokens_are_refused() {
        assert_eq!(Token::new("  \n").unwrap_err(), TokenError::Empty);
        assert_eq!(Token::new("a b").unwrap_err(), TokenError::BadCharacters);
        assert!(!format!("{:?}", Token::new("hidden").unwrap()).contains("hidden"));
        assert!(!format!("{:?}", table()).contains("reader"));
    }

    #[test]
    fn each_kind_of_token_may_do_its_own_things_only() {
        let a = table();
        // Shared: everything.
        assert_eq!(a.check_ingest(&headers("Bearer sh4red-secret")), Ok(IngestGrant::AnyNode));
        assert_eq!(a.check_read(&headers("Bearer sh4red-secret")), Ok(()));
        assert_eq!(a.check_admin(&headers("Bearer sh4red-secret")), Ok(()));
        // Ingest: push for any node.
        assert_eq!(a.check_ingest(&headers("Bearer ingest-b")), Ok(IngestGrant::AnyNode));
        assert!(a.check_read(&headers("Bearer ingest-a")).unwrap_err().is_forbidden());
        assert!(a.check_admin(&headers("Bearer ingest-a")).unwrap_err().is_forbidden());
        // Read: read only.
        assert_eq!(a.check_read(&headers("Bearer reader")), Ok(()));
        let e = a.check_ingest(&headers("Bearer reader")).unwrap_err();
        assert!(e.is_forbidden() && e.to_string().contains("read token"), "{e}");
        // Node: its own node's reports only.
        let g = a.check_ingest(&headers("Bearer n1")).unwrap();
        assert_eq!(g, IngestGrant::Node("node-0001".into()));
        assert_eq!(g.allows("node-0001"), Ok(()));
        let e = g.allows("node-0002").unwrap_err();
        assert!(e.is_forbidden() && e.to_string().contains("node-0001") && e.to_string().contains("node-0002"), "{e}");
        assert!(a.check_read(&headers("Bearer n2")).unwrap_err().is_forbidden());
        // Unknown and missing: 401, not 403.
        assert_eq!(a.check_ingest(&headers("Bearer nope")), Err(AuthError::Wrong));
        assert_eq!(a.check_read(&HeaderMap::new()), Err(AuthError::Missing));
    }

    #[test]
    fn errors_never_contain_a_token() {
        let a = table();
        for h in ["Bearer reader", "Bearer n1", "Bearer ingest-a", "Bearer wrong"] {
            for e in [a.check_read(&headers(h)).err(), a.check_admin(&headers(h)).err()].into_iter().flatten() {
                let text = e.to_string();
                for secret in ["sh4red-secret", "ingest-a", "ingest-b", "reader", "\"n1\"", "\"n2\""] {
                    assert!(!text.contains(secret), "{text} shows {secret}");
                }
            }
        }
    }

    #[test]
    fn one_token_in_two_roles_is_refused() {
        let e = Auth::new(Some(t("x")), vec![], vec![t("x")], BTreeMap::new()).unwrap_err();
        assert!(e.to_string().contains("shared") && e.to_string().contains("read_tokens[0]"), "{e}");
        let e = Auth::new(None, vec![t("a")], vec![], [("n".to_string(), t("a"))].into_iter().collect()).unwrap_err();
        assert!(e.to_string().contains("node_tokens"), "{e}");
        assert!(!e.to_string().contains("\"a\""), "{e}");
    }
}
