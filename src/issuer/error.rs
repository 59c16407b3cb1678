//! OAuth 2.0 error responses (RFC 6749 §5.2), built in this one place.

use http::{header, HeaderValue, Response, StatusCode};
use serde::Serialize;

use crate::http::{json, Body};
use crate::resources::Refusal;

/// A refusal of the token endpoint, with its RFC name. The description is for the client
/// developer and never holds a secret or a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    /// Malformed request: missing or repeated parameter, wrong content type.
    #[error("invalid_request: {0}")]
    InvalidRequest(String),
    /// The body is larger than the endpoint accepts (413).
    #[error("invalid_request: the request body is too large")]
    TooLarge,
    /// The body did not arrive within `request_body_timeout` (408).
    #[error("invalid_request: the request body did not arrive in time")]
    TimedOut,
    /// Client authentication failed; `basic` says whether HTTP Basic was used (401).
    #[error("invalid_client: {description}")]
    InvalidClient {
        /// Whether the client tried HTTP Basic authentication.
        basic: bool,
        /// What failed.
        description: String,
    },
    /// The client may not use this grant type.
    #[error("unauthorized_client: {0}")]
    UnauthorizedClient(String),
    /// The grant type is unknown or not offered.
    #[error("unsupported_grant_type: {0}")]
    UnsupportedGrantType(String),
    /// A requested scope is unknown, not allowed or malformed.
    #[error("invalid_scope: {0}")]
    InvalidScope(String),
    /// A resource indicator does not fit (RFC 8707).
    #[error("invalid_target: {0}")]
    InvalidTarget(String),
    /// A code or refresh token is unknown, expired, used, revoked, or not this client's.
    #[error("invalid_grant: {0}")]
    InvalidGrant(String),
    /// A DPoP proof is missing where one is needed, or fails RFC 9449 §4.3 (SPEC §8).
    #[error("invalid_dpop_proof: {0}")]
    InvalidDpopProof(String),
    /// isogate failed (the grant store, a signature): 500.
    #[error("server_error: {0}")]
    ServerError(String),
    /// The store cannot be reached (SPEC §7): 503, try again later.
    #[error("temporarily_unavailable: {0}")]
    TemporarilyUnavailable(String),
}

impl From<crate::grants::StoreError> for OAuthError {
    fn from(e: crate::grants::StoreError) -> Self {
        match e {
            crate::grants::StoreError::Unavailable(_) => {
                OAuthError::TemporarilyUnavailable(e.to_string())
            }
            e => OAuthError::ServerError(e.to_string()),
        }
    }
}

impl From<crate::dpop::ProofError> for OAuthError {
    fn from(e: crate::dpop::ProofError) -> Self {
        OAuthError::InvalidDpopProof(e.to_string())
    }
}

impl From<Refusal> for OAuthError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::InvalidScope(d) => OAuthError::InvalidScope(d),
            Refusal::InvalidTarget(d) => OAuthError::InvalidTarget(d),
        }
    }
}

#[derive(Serialize)]
struct Body_<'a> {
    error: &'static str,
    error_description: &'a str,
}

impl OAuthError {
    /// The store did not answer.
    pub(crate) fn unavailable() -> Self {
        OAuthError::TemporarilyUnavailable("the store did not answer".into())
    }

    /// The RFC error code.
    pub fn code(&self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(_) | OAuthError::TooLarge | OAuthError::TimedOut => {
                "invalid_request"
            }
            OAuthError::InvalidClient { .. } => "invalid_client",
            OAuthError::UnauthorizedClient(_) => "unauthorized_client",
            OAuthError::UnsupportedGrantType(_) => "unsupported_grant_type",
            OAuthError::InvalidScope(_) => "invalid_scope",
            OAuthError::InvalidTarget(_) => "invalid_target",
            OAuthError::InvalidGrant(_) => "invalid_grant",
            OAuthError::InvalidDpopProof(_) => "invalid_dpop_proof",
            OAuthError::ServerError(_) => "server_error",
            OAuthError::TemporarilyUnavailable(_) => "temporarily_unavailable",
        }
    }

    pub(crate) fn description(&self) -> &str {
        match self {
            OAuthError::InvalidRequest(d)
            | OAuthError::InvalidClient { description: d, .. }
            | OAuthError::UnauthorizedClient(d)
            | OAuthError::UnsupportedGrantType(d)
            | OAuthError::InvalidScope(d)
            | OAuthError::InvalidTarget(d)
            | OAuthError::InvalidGrant(d)
            | OAuthError::InvalidDpopProof(d) => d,
            // The cause is logged, not told.
            OAuthError::ServerError(_) => "the request could not be completed; try again later",
            OAuthError::TemporarilyUnavailable(_) => {
                "the service is unavailable for a moment; try again later"
            }
            OAuthError::TooLarge => "the request body is larger than 64 KiB",
            OAuthError::TimedOut => "the request body did not arrive in time",
        }
    }

    /// The HTTP response: RFC 6749 §5.2 JSON, `Cache-Control: no-store`.
    pub fn response(&self) -> Response<Body> {
        let status = match self {
            OAuthError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            OAuthError::TimedOut => StatusCode::REQUEST_TIMEOUT,
            OAuthError::ServerError(_) => StatusCode::INTERNAL_SERVER_ERROR,
            OAuthError::TemporarilyUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            OAuthError::InvalidClient { basic: true, .. } => StatusCode::UNAUTHORIZED,
            _ => StatusCode::BAD_REQUEST,
        };
        let mut response = json(
            status,
            &Body_ {
                error: self.code(),
                error_description: self.description(),
            },
        );
        if let OAuthError::InvalidClient { basic: true, .. } = self {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"isogate\""),
            );
        }
        no_store(response)
    }
}

/// Adds `Cache-Control: no-store` and `Pragma: no-cache`, as every token response carries.
pub(super) fn no_store(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}
