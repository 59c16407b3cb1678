//! The authorize request, validated: the client and its exact redirect first (failures are
//! shown as a page, never redirected to), then everything else (failures go back to the
//! redirect), PKCE S256 included.

use http::StatusCode;

use super::{Failure, Redirect};
use crate::config::Config;
use crate::issuer::form::Form;
use crate::issuer::{register, OAuthError};
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
pub(super) async fn validate_for(
    config: &Config,
    service: &crate::issuer::Service,
    form: &Form,
) -> Result<AuthorizeRequest, Failure> {
    let found = match form.get("client_id") {
        Some(id) => register::find(config, &service.grants, &service.clients, id).await?,
        None => None,
    };
    validate(config, form, found.as_deref())
}

/// [`validate_for`] once the client is found (`None`: unknown).
fn validate(
    config: &Config,
    form: &Form,
    found: Option<&Client>,
) -> Result<AuthorizeRequest, Failure> {
    let (client, redirect_uri) = client_and_redirect(form, found)?;
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
    form: &Form,
    found: Option<&'c Client>,
) -> Result<(&'c Client, String), Failure> {
    let bad = |message| Failure::Page(StatusCode::BAD_REQUEST, message);
    if form.get("client_id").is_none() {
        return Err(bad(
            "The sign-in request does not name an application (client_id).",
        ));
    }
    let client = found
        .ok_or_else(|| bad("The application asking you to sign in is not registered here."))?;
    let redirect_uri = match (form.get("redirect_uri"), client.redirect_uris.as_slice()) {
        (Some(uri), registered) if registered.iter().any(|r| redirect_matches(r, uri)) => {
            uri.to_owned()
        }
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

/// Whether `uri` is the registered redirect URI `registered`: the same string, or for a
/// loopback IP literal over http (`http://127.0.0.1/cb`, `http://[::1]/cb`) the same URI on any
/// port (RFC 8252 §7.3: a native app listens on whatever port it gets).
fn redirect_matches(registered: &str, uri: &str) -> bool {
    if registered == uri {
        return true;
    }
    // Parsed, without the port, compared whole; each must be written as the parser writes it,
    // so that nothing but the port may differ from the registered text.
    let loopback = |text: &str| {
        let mut url = url::Url::parse(text).ok()?;
        (crate::protocol::is_loopback_http(&url, false) && url.as_str() == text).then_some(())?;
        url.set_port(None).ok()?;
        Some(url)
    };
    matches!((loopback(registered), loopback(uri)), (Some(a), Some(b)) if a == b)
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

    /// [`validate`] with the client found in the file.
    fn by_file(config: &Config, form: &Form) -> Result<AuthorizeRequest, Failure> {
        let found = form.get("client_id").and_then(|id| config.clients.get(id));
        validate(config, form, found)
    }

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
        let request = by_file(&config, &form(&good())).unwrap();
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
        assert!(page(by_file(&config, &with(&[("client_id", None)]))).contains("client_id"));
        assert!(
            page(by_file(&config, &with(&[("client_id", Some("nobody"))])))
                .contains("not registered")
        );
        assert!(page(by_file(
            &config,
            &with(&[("redirect_uri", Some("https://evil.example/cb"))])
        ))
        .contains("not registered"));
        // Without redirect_uri: the only one, or none when there are several.
        assert!(
            page(by_file(&config, &with(&[("redirect_uri", None)]))).contains("no redirect_uri")
        );
        let one = by_file(
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
                redirect(by_file(&config, &with(&[change]))).0,
                error,
                "{change:?}"
            );
        }
        assert!(by_file(&config, &with(&[("response_mode", Some("query"))])).is_ok());
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
            let (error, description) = redirect(by_file(&config, &with(&changes)));
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
            redirect(by_file(&config, &form(&good()))).0,
            "unauthorized_client"
        );
    }

    #[test]
    fn prompt_values_are_read_and_none_stands_alone() {
        let (_dir, config) = config();
        let request = by_file(
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
        let request = by_file(&config, &with(&[("prompt", Some("none"))])).unwrap();
        assert!(request.prompt.none);
    }
}

#[test]
fn a_loopback_ip_redirect_matches_on_any_port_and_nothing_else_differs() {
    let listed = "http://127.0.0.1/cb";
    for (uri, matches) in [
        ("http://127.0.0.1/cb", true),
        ("http://127.0.0.1:49152/cb", true),
        ("http://127.0.0.1:49152/cb?x=1", false),
        ("http://127.0.0.1:49152/other", false),
        ("http://127.0.0.1:49152/./cb", false),
        ("http://127.0.0.2:49152/cb", false),
        ("https://127.0.0.1:49152/cb", false),
        ("http://localhost:49152/cb", false),
    ] {
        assert_eq!(redirect_matches(listed, uri), matches, "{uri}");
    }
    assert!(redirect_matches("http://[::1]/cb", "http://[::1]:3000/cb"));
    // Not loopback: exact only.
    assert!(!redirect_matches(
        "http://localhost/cb",
        "http://localhost:1/cb"
    ));
    assert!(!redirect_matches(
        "https://app.example/cb",
        "https://app.example:8443/cb"
    ));
}
