//! Bearer-token check for the API: one shared token for ingest and read, compared in constant time.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use subtle::ConstantTimeEq;

/// The configured API token. `Debug` never prints it.
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

    /// Constant-time comparison with a presented token.
    pub fn matches(&self, presented: &str) -> bool {
        // `ct_eq` on slices of different lengths returns false without looking at the content; the
        // length of the token is not a secret worth hiding.
        bool::from(self.0.as_bytes().ct_eq(presented.as_bytes()))
    }
}

/// Why a request was refused; `message` is what the client sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing Authorization header: send `Authorization: Bearer <token>`")]
    Missing,
    #[error("malformed Authorization header: expected `Bearer <token>`")]
    Malformed,
    #[error("wrong token")]
    Wrong,
}

/// Checks the request headers against the configured token. With no token configured every
/// request passes (the server warns loudly about that at start).
pub fn check(token: Option<&Token>, headers: &HeaderMap) -> Result<(), AuthError> {
    let Some(token) = token else { return Ok(()) };
    let Some(value) = headers.get(AUTHORIZATION) else { return Err(AuthError::Missing) };
    let value = value.to_str().map_err(|_| AuthError::Malformed)?;
    let (scheme, rest) = value.trim().split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed);
    }
    if token.matches(rest.trim()) { Ok(()) } else { Err(AuthError::Wrong) }
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
    }

    #[test]
    fn unusable_tokens_are_refused() {
        assert_eq!(Token::new("  \n").unwrap_err(), TokenError::Empty);
        assert_eq!(Token::new("a b").unwrap_err(), TokenError::BadCharacters);
        assert!(!format!("{:?}", Token::new("hidden").unwrap()).contains("hidden"));
    }
}
