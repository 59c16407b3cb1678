//! The authorize request, validated: the client and its exact redirect first (failures are
//! shown as a page, never redirected to), then everything else (failures go back to the
//! redirect), PKCE S256 included.

use http::StatusCode;

use super::{Failure, Redirect};
use crate::config::Config;
use crate::issuer::form::Form;
use crate::issuer::OAuthError;
use crate::resources::{self, Client, GrantType};

/// A validated authorize request (kept as JSON while a page waits, in a fleet's store).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AuthorizeRequest {
    pub(super) client_id: String,
    pub(super) redirect_uri: String,
    pub(super) state: Option<String>,
    pub(super) nonce: Option<String>,
    pub(super) code_challenge: Option<String>,
    pub(super) scopes: Vec<String>,
    pub(super) resources: Vec<String>,
    pub(super) prompt: Prompt,
}

/// The OpenID Connect `prompt` values isogate acts on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct Prompt {
    pub(super) none: bool,
    pub(super) login: bool,
    pub(super) consent: bool,
}

/// Checks the request: the client and redirect first (failures shown as a page), then the
/// rest (failures sent back to the redirect).
pub(super) fn validate(config: &Config, form: &Form) -> Result<AuthorizeRequest, Failure> {
    let (client, redirect_uri) = client_and_redirect(config, form)?;
    let state = form.get("state").map(str::to_owned);
    let fail = |error: &'static str, description: String| {
        Failure::Redirect(Redirect {
            redirect_uri: redirect_uri.clone(),
            state: state.clone(),
            error,
            description,
        })
    };
    protocol(client, form).map_err(|(error, description)| fail(error, description.into()))?;
    let code_challenge = pkce(client, form).map_err(|d| fail("invalid_request", d.into()))?;
    let (scopes, resources) = resources::authorize(
        &config.model,
        client,
        form.get("scope"),
        &form.all("resource"),
    )
    .map_err(|refusal| {
        let e = OAuthError::from(refusal);
        fail(e.code(), e.description().to_owned())
    })?;
    let prompt = prompt(form).map_err(|d| fail("invalid_request", d.into()))?;
    Ok(AuthorizeRequest {
        client_id: client.client_id.clone(),
        redirect_uri,
        state,
        nonce: form.get("nonce").map(str::to_owned),
        code_challenge,
        scopes,
        resources,
        prompt,
    })
}

/// The client and the redirect to answer it at; a failure here is a page.
fn client_and_redirect<'c>(
    config: &'c Config,
    form: &Form,
) -> Result<(&'c Client, String), Failure> {
    let bad = |message| Failure::Page(StatusCode::BAD_REQUEST, message);
    let client_id = form
        .get("client_id")
        .ok_or_else(|| bad("The sign-in request does not name an application (client_id)."))?;
    let client = config
        .clients
        .get(client_id)
        .ok_or_else(|| bad("The application asking you to sign in is not registered here."))?;
    let redirect_uri = match (form.get("redirect_uri"), client.redirect_uris.as_slice()) {
        (Some(uri), registered) if registered.iter().any(|r| r == uri) => uri.to_owned(),
        (Some(_), _) => {
            return Err(bad(
                "The application asked to send you to an address it has not registered.",
            ))
        }
        (None, [only]) => only.clone(),
        (None, _) => return Err(bad("The sign-in request has no redirect_uri.")),
    };
    Ok((client, redirect_uri))
}

/// The grant, response type and mode, and the request objects isogate does not take.
fn protocol(client: &Client, form: &Form) -> Result<(), (&'static str, &'static str)> {
    if !client
        .allowed_grant_types
        .contains(&GrantType::AuthorizationCode)
    {
        return Err((
            "unauthorized_client",
            "the client may not use authorization_code",
        ));
    }
    match form.get("response_type") {
        Some("code") => {}
        None => return Err(("invalid_request", "response_type is missing")),
        Some(_) => {
            return Err((
                "unsupported_response_type",
                "only response_type=code is supported",
            ))
        }
    }
    if form.get("response_mode").is_some_and(|m| m != "query") {
        return Err(("invalid_request", "only response_mode=query is supported"));
    }
    if form.get("request").is_some() {
        return Err(("request_not_supported", "request objects are not supported"));
    }
    if form.get("request_uri").is_some() {
        return Err(("request_uri_not_supported", "request_uri is not supported"));
    }
    Ok(())
}

/// `prompt`: `none`, `login` and `consent`; other values are ignored, and `none` stands alone.
fn prompt(form: &Form) -> Result<Prompt, &'static str> {
    let mut prompt = Prompt::default();
    for value in form.get("prompt").unwrap_or("").split(' ') {
        match value {
            "none" => prompt.none = true,
            "login" => prompt.login = true,
            "consent" => prompt.consent = true,
            _ => {}
        }
    }
    if prompt.none && (prompt.login || prompt.consent) {
        return Err("prompt=none cannot be combined with other values");
    }
    Ok(prompt)
}

/// RFC 7636 with S256 only: required unless the client sets `require_pkce = false`.
fn pkce(client: &Client, form: &Form) -> Result<Option<String>, &'static str> {
    match (
        form.get("code_challenge"),
        form.get("code_challenge_method"),
    ) {
        (Some(challenge), Some("S256")) => {
            // BASE64URL(SHA-256(verifier)): 43 characters.
            let valid = challenge.len() == 43
                && challenge
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if valid {
                Ok(Some(challenge.to_owned()))
            } else {
                Err("code_challenge is not a base64url SHA-256 digest")
            }
        }
        (Some(_), _) => Err("code_challenge_method must be S256; plain is not accepted"),
        (None, Some(_)) => Err("code_challenge_method was sent without code_challenge"),
        (None, None) if client.require_pkce => {
            Err("PKCE is required: send code_challenge with code_challenge_method=S256")
        }
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, MissingKeys};

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn config() -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"
[issuer]
listen = "127.0.0.1:0"
issuer = "https://id.example"
[[issuer.signing_keys]]
file = "k.pem"
alg = "ES256"
generate_if_missing = true
[[api_scopes]]
name = "read"
[[api_resources]]
name = "urn:a"
scopes = ["read"]
[[clients]]
client_id = "web"
require_secret = false
allowed_grant_types = ["authorization_code"]
allowed_scopes = ["read"]
redirect_uris = ["https://app.example/cb", "https://app.example/other"]
[[clients]]
client_id = "one"
require_secret = false
require_pkce = false
allowed_grant_types = ["authorization_code"]
allowed_scopes = ["read"]
redirect_uris = ["https://one.example/cb"]
[[clients]]
client_id = "machine"
secrets = ["sha256:K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols="]
allowed_grant_types = ["client_credentials"]
allowed_scopes = ["read"]
"#;
        let config = parse(text, dir.path(), MissingKeys::Generate).unwrap();
        (dir, config)
    }

    fn form(pairs: &[(&str, &str)]) -> Form {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        Form::parse(body.as_bytes()).unwrap()
    }

    fn good() -> Vec<(&'static str, &'static str)> {
        vec![
            ("client_id", "web"),
            ("redirect_uri", "https://app.example/cb"),
            ("response_type", "code"),
            ("scope", "read"),
            ("resource", "urn:a"),
            ("state", "s"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ]
    }

    fn with(changes: &[(&'static str, Option<&'static str>)]) -> Form {
        let mut pairs = good();
        for (name, value) in changes {
            pairs.retain(|(n, _)| n != name);
            if let Some(value) = value {
                pairs.push((name, value));
            }
        }
        form(&pairs)
    }

    fn page(result: Result<AuthorizeRequest, Failure>) -> &'static str {
        match result {
            Err(Failure::Page(StatusCode::BAD_REQUEST, message)) => message,
            other => panic!("not a page: {:?}", other.map(|r| r.client_id)),
        }
    }

    fn redirect(result: Result<AuthorizeRequest, Failure>) -> (&'static str, String) {
        match result {
            Err(Failure::Redirect(r)) => {
                assert_eq!(r.redirect_uri, "https://app.example/cb");
                assert_eq!(r.state.as_deref(), Some("s"));
                (r.error, r.description)
            }
            other => panic!("not a redirect: {:?}", other.map(|r| r.client_id)),
        }
    }

    #[test]
    fn a_good_request_is_kept_whole() {
        let (_dir, config) = config();
        let request = validate(&config, &form(&good())).unwrap();
        assert_eq!(request.client_id, "web");
        assert_eq!(request.redirect_uri, "https://app.example/cb");
        assert_eq!(request.scopes, ["read"]);
        assert_eq!(request.resources, ["urn:a"]);
        assert_eq!(request.code_challenge.as_deref(), Some(CHALLENGE));
        assert_eq!(request.prompt, Prompt::default());
    }

    #[test]
    fn an_unknown_client_or_redirect_is_a_page_never_a_redirect() {
        let (_dir, config) = config();
        assert!(page(validate(&config, &with(&[("client_id", None)]))).contains("client_id"));
        assert!(
            page(validate(&config, &with(&[("client_id", Some("nobody"))])))
                .contains("not registered")
        );
        assert!(page(validate(
            &config,
            &with(&[("redirect_uri", Some("https://evil.example/cb"))])
        ))
        .contains("not registered"));
        // Without redirect_uri: the only one, or none when there are several.
        assert!(
            page(validate(&config, &with(&[("redirect_uri", None)]))).contains("no redirect_uri")
        );
        let one = validate(
            &config,
            &form(&[("client_id", "one"), ("response_type", "code")]),
        )
        .unwrap();
        assert_eq!(one.redirect_uri, "https://one.example/cb");
    }

    #[test]
    fn protocol_errors_go_back_to_the_redirect() {
        let (_dir, config) = config();
        for (change, error) in [
            (("response_type", None), "invalid_request"),
            (
                ("response_type", Some("token")),
                "unsupported_response_type",
            ),
            (("response_mode", Some("fragment")), "invalid_request"),
            (("request", Some("eyJ")), "request_not_supported"),
            (("request_uri", Some("urn:r")), "request_uri_not_supported"),
            (("scope", Some("write")), "invalid_scope"),
            (("resource", Some("urn:nothing")), "invalid_target"),
            (("prompt", Some("none login")), "invalid_request"),
        ] {
            assert_eq!(
                redirect(validate(&config, &with(&[change]))).0,
                error,
                "{change:?}"
            );
        }
        assert!(validate(&config, &with(&[("response_mode", Some("query"))])).is_ok());
    }

    #[test]
    fn pkce_is_s256_only_and_required_unless_the_client_opts_out() {
        let (_dir, config) = config();
        for (changes, needle) in [
            (
                vec![("code_challenge_method", Some("plain"))],
                "plain is not accepted",
            ),
            (
                vec![("code_challenge_method", None)],
                "plain is not accepted",
            ),
            (vec![("code_challenge", None)], "without code_challenge"),
            (
                vec![("code_challenge", None), ("code_challenge_method", None)],
                "PKCE is required",
            ),
            (
                vec![("code_challenge", Some("short"))],
                "not a base64url SHA-256",
            ),
            (
                vec![(
                    "code_challenge",
                    Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM"),
                )],
                "not a base64url SHA-256",
            ),
        ] {
            let (error, description) = redirect(validate(&config, &with(&changes)));
            assert_eq!(error, "invalid_request");
            assert!(description.contains(needle), "{changes:?}: {description}");
        }
    }

    #[test]
    fn a_client_without_the_code_grant_is_unauthorized() {
        let (_dir, mut config) = config();
        let machine = config.clients.remove("machine").unwrap();
        let web = config.clients.get_mut("web").unwrap();
        web.allowed_grant_types = machine.allowed_grant_types;
        assert_eq!(
            redirect(validate(&config, &form(&good()))).0,
            "unauthorized_client"
        );
    }

    #[test]
    fn prompt_values_are_read_and_none_stands_alone() {
        let (_dir, config) = config();
        let request = validate(
            &config,
            &with(&[("prompt", Some("login consent select_account"))]),
        )
        .unwrap();
        assert_eq!(
            request.prompt,
            Prompt {
                none: false,
                login: true,
                consent: true
            }
        );
        let request = validate(&config, &with(&[("prompt", Some("none"))])).unwrap();
        assert!(request.prompt.none);
    }
}
