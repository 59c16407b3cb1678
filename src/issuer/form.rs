//! `application/x-www-form-urlencoded` request bodies: read with a size limit, parsed, and
//! checked for repeated single-value parameters.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::OAuthError;

/// Largest body the token endpoint reads.
pub const MAX_BODY: usize = 64 * 1024;

/// Parameters that may appear more than once (RFC 8707).
const REPEATABLE: &[&str] = &["resource"];

/// A parsed form. Empty values count as absent (RFC 6749 §3.1).
#[derive(Debug, Default)]
pub struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    /// Parses `body`; a single-value parameter sent twice is `invalid_request`.
    pub fn parse(body: &[u8]) -> Result<Self, OAuthError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (name, value) in form_urlencoded::parse(body) {
            if value.is_empty() {
                continue;
            }
            if !REPEATABLE.contains(&name.as_ref()) && pairs.iter().any(|(n, _)| *n == name) {
                return Err(OAuthError::InvalidRequest(format!(
                    "the parameter {name:?} is repeated"
                )));
            }
            pairs.push((name.into_owned(), value.into_owned()));
        }
        Ok(Form { pairs })
    }

    /// The value of a single-value parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeatable parameter.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Checks the content type and reads the body, refusing more than [`MAX_BODY`] bytes or a body
/// that has not arrived `within` (`[issuer] request_body_timeout`).
pub async fn read(
    headers: &HeaderMap,
    body: Incoming,
    within: Duration,
) -> Result<Form, OAuthError> {
    let form_type = "application/x-www-form-urlencoded";
    let bytes = read_body(headers, body, within, form_type, MAX_BODY).await?;
    Form::parse(&bytes)
}

/// Reads a body of `content_type` (its parameters ignored) of at most `max` bytes that arrives
/// `within`: too large is [`OAuthError::TooLarge`], too slow [`OAuthError::TimedOut`].
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Incoming,
    within: Duration,
    content_type: &str,
    max: usize,
) -> Result<Bytes, OAuthError> {
    let typed = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(content_type));
    if !typed {
        return Err(OAuthError::InvalidRequest(format!(
            "the body must be {content_type}"
        )));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(OAuthError::TooLarge);
    }
    let collected = tokio::time::timeout(within, Limited::new(body, max).collect())
        .await
        .map_err(|_| OAuthError::TimedOut)?;
    let bytes = collected
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                OAuthError::TooLarge
            } else {
                OAuthError::InvalidRequest("the request body could not be read".into())
            }
        })?
        .to_bytes();
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_single_value_parameters_are_refused_but_resource_may_repeat() {
        assert!(Form::parse(b"scope=a&scope=b").is_err());
        let form = Form::parse(b"resource=urn%3Aa&resource=urn:b&scope=read+write").unwrap();
        assert_eq!(form.all("resource"), ["urn:a", "urn:b"]);
        assert_eq!(form.get("scope"), Some("read write"));
    }

    #[test]
    fn empty_values_count_as_absent() {
        let form = Form::parse(b"scope=&scope=read&resource=").unwrap();
        assert_eq!(form.get("scope"), Some("read"));
        assert!(form.all("resource").is_empty());
    }
}
