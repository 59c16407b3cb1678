use super::*;

const VALID: &str = r#"
[issuer]
listen = "127.0.0.1:0"
issuer = "http://127.0.0.1:5000"

[[issuer.signing_keys]]
file = "keys/es256.pem"
alg = "ES256"
generate_if_missing = true

[[api_scopes]]
name = "read"

[[api_resources]]
name = "urn:invoices"
scopes = ["read"]
require_resource_indicator = true

[[clients]]
client_id = "client"
secrets = ["sha256:K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols="]
allowed_grant_types = ["client_credentials"]
allowed_scopes = ["read"]
"#;

fn problems(text: &str) -> Vec<Problem> {
    let dir = tempfile::tempdir().unwrap();
    parse(text, dir.path(), MissingKeys::Generate).expect_err("invalid")
}

fn has(problems: &[Problem], key: &str, line: usize, needle: &str) {
    assert!(
        problems
            .iter()
            .any(|p| p.key == key && p.line == line && p.message.contains(needle)),
        "no problem at {key} line {line} containing {needle:?} in:\n{}",
        problems
            .iter()
            .map(|p| format!("  {p}\n"))
            .collect::<String>()
    );
}

#[test]
fn a_valid_file_loads_and_generates_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = parse(VALID, dir.path(), MissingKeys::Generate).unwrap();
    let issuer = config.issuer.unwrap();
    assert_eq!(issuer.keys.all().len(), 1);
    assert!(dir.path().join("keys/es256.pem").exists());
    assert!(config.model.api_resource("urn:invoices").unwrap().isolated);
    assert_eq!(
        issuer.url("/connect/token"),
        "http://127.0.0.1:5000/connect/token"
    );
}

#[test]
fn check_mode_accepts_a_missing_generated_key_without_writing_it() {
    let dir = tempfile::tempdir().unwrap();
    parse(VALID, dir.path(), MissingKeys::Accept).unwrap();
    assert!(!dir.path().join("keys").exists());
}

#[test]
fn every_unknown_key_is_reported_with_its_position() {
    let text = VALID
        .replace("alg = \"ES256\"", "alg = \"ES256\"\nalgo = 1")
        .replace("[[api_scopes]]", "bogus = true\n[[api_scopes]]")
        + "colour = \"red\"\n";
    let p = problems(&text);
    has(
        &p,
        "issuer.signing_keys[0].algo",
        9,
        "unknown key `algo`; did you mean `alg`?",
    );
    has(
        &p,
        "issuer.signing_keys[0].bogus",
        12,
        "unknown key `bogus`",
    );
    has(&p, "clients[0].colour", 26, "unknown key `colour`");
    // Only a near miss gets a suggestion.
    assert!(
        p.iter()
            .filter(|p| p.message.contains("did you mean"))
            .count()
            == 1
    );
    assert_eq!(p.len(), 3);
    assert_eq!(p[0].column, 1);
}

#[test]
fn every_semantic_problem_is_reported_at_once() {
    let text = r#"
shutdown_grace = "soon"
[issuer]
listen = "nowhere"
issuer = "http://127.0.0.1:5000"
[[issuer.signing_keys]]
file = "missing.pem"
alg = "HS256"
[[api_scopes]]
name = "read"
[[api_scopes]]
name = "read"
[[api_resources]]
name = "invoices"
scopes = ["read", "delete"]
[[api_resources]]
name = "urn:x#frag"
[[clients]]
client_id = "c"
secrets = ["plain"]
allowed_grant_types = ["password"]
allowed_scopes = ["read", "profile"]
[proxy]
listen = "127.0.0.1:0"
[[routes]]
path_prefix = "/a/../b"
upstream = "http://127.0.0.1:1"
resource = "urn:nothing"
"#;
    let p = problems(text);
    has(&p, "shutdown_grace", 2, "not a duration");
    has(&p, "issuer.listen", 4, "not a socket address");
    has(&p, "issuer.signing_keys[0].alg", 8, "unsupported algorithm");
    has(&p, "issuer.signing_keys", 3, "at least one signing key");
    has(&p, "api_scopes[1].name", 12, "duplicate scope name");
    has(&p, "api_resources[0].name", 14, "absolute URI");
    has(&p, "api_resources[0].scopes[1]", 15, "\"delete\"");
    has(&p, "api_resources[1].name", 17, "without fragment");
    has(&p, "clients[0].secrets[0]", 20, "hash-secret");
    has(
        &p,
        "clients[0].allowed_grant_types[0]",
        21,
        "expected client_credentials",
    );
    has(&p, "clients[0].allowed_scopes[1]", 22, "\"profile\"");
    has(&p, "routes[0].path_prefix", 26, "hold only letters");
    has(&p, "routes[0].resource", 28, "\"urn:nothing\"");
    // Sorted by position.
    assert!(p
        .windows(2)
        .all(|w| (w[0].line, w[0].column) <= (w[1].line, w[1].column)));
}

#[test]
fn key_files_that_are_unreadable_or_of_another_type_are_problems() {
    let dir = tempfile::tempdir().unwrap();
    crate::jwt::generate_file(&dir.path().join("rsa.pem"), crate::jwt::Alg::RS256).unwrap();
    std::fs::write(dir.path().join("junk.pem"), "hello").unwrap();
    let text = VALID.replace(
        "file = \"keys/es256.pem\"\nalg = \"ES256\"\ngenerate_if_missing = true",
        "file = \"rsa.pem\"\nalg = \"ES256\"\n[[issuer.signing_keys]]\nfile = \"junk.pem\"\nalg = \"ES256\"\n[[issuer.signing_keys]]\nfile = \"nope.pem\"\nalg = \"ES256\"",
    );
    let p = parse(&text, dir.path(), MissingKeys::Generate).unwrap_err();
    has(&p, "issuer.signing_keys[0].file", 7, "RSA key, use RS256");
    has(&p, "issuer.signing_keys[1].file", 10, "not a PEM file");
    has(&p, "issuer.signing_keys[2].file", 13, "cannot read");
}

#[test]
fn a_syntax_error_is_reported_with_its_position() {
    let p = problems("[issuer\nlisten = 1\n");
    assert_eq!(p.len(), 1);
    assert_eq!((p[0].line, p[0].column), (1, 8), "{}", p[0]);
}

#[test]
fn a_type_error_is_reported_with_its_position() {
    let p = problems(&VALID.replace("listen = \"127.0.0.1:0\"", "listen = 5000"));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].line, 3, "{}", p[0]);
    assert!(p[0].message.contains("expected a string"), "{}", p[0]);
}

#[test]
fn a_file_with_neither_issuer_nor_proxy_has_nothing_to_run() {
    let p = problems("[[api_scopes]]\nname = \"read\"\n");
    assert!(p.iter().any(|p| p.message.contains("nothing to run")));
}

#[test]
fn allowed_signing_algs_need_a_key_that_can_sign() {
    let text = VALID.replace(
        "require_resource_indicator = true",
        "allowed_signing_algs = [\"RS256\"]",
    );
    let p = problems(&text);
    has(
        &p,
        "api_resources[0].allowed_signing_algs",
        17,
        "no signing key",
    );
}

#[test]
fn invalid_reports_every_problem_with_the_file_name() {
    let err = Invalid {
        path: "isogate.toml".into(),
        problems: vec![Problem {
            key: "a.b".into(),
            line: 3,
            column: 7,
            message: "bad".into(),
        }],
        text_hash: [0; 32],
    };
    assert_eq!(
        err.to_string(),
        "isogate.toml: 1 problem\n  isogate.toml:3:7: a.b: bad"
    );
}

#[test]
fn a_parameter_claim_may_not_overwrite_a_token_claim() {
    let text = VALID.replace(
        "[[api_scopes]]\nname = \"read\"",
        "[[api_scopes]]\nname = \"read\"\n[[api_scopes]]\nname = \"tx\"\nparameterized = true\nparameter_claim = \"sub\"",
    );
    let p = problems(&text);
    has(
        &p,
        "api_scopes[1].parameter_claim",
        16,
        "isogate sets itself",
    );
}

/// A self-signed certificate for `localhost` and its PKCS#8 key, both PEM.
fn cert_and_key() -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    (c.cert.pem(), c.signing_key.serialize_pem())
}

/// VALID with `tls` on the issuer (line 5) and a gateway with `tls` (line 28); the files are
/// `issuer.*.pem` and `proxy.*.pem` in the folder.
fn with_tls() -> String {
    VALID.replacen(
        "issuer = \"http://127.0.0.1:5000\"\n",
        "issuer = \"http://127.0.0.1:5000\"\ntls = { cert = \"issuer.crt.pem\", key = \"issuer.key.pem\" }\n",
        1,
    ) + "\n[proxy]\nlisten = \"127.0.0.1:0\"\ntls = { cert = \"proxy.crt.pem\", key = \"proxy.key.pem\" }\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"http://127.0.0.1:9001\"\nresource = \"urn:invoices\"\n"
}

/// Writes the four TLS files of [`with_tls`] (`None`: leaves the file out).
fn write_tls(dir: &Path, files: [(&str, Option<&str>); 4]) {
    for (name, text) in files {
        if let Some(text) = text {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }
}

#[test]
fn tls_on_both_listeners_is_built_and_its_files_are_watched() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = cert_and_key();
    // SEC1 ("EC PRIVATE KEY") works as well as PKCS#8.
    let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &pem::parse(&key).unwrap().into_contents(),
    )
    .unwrap();
    let sec1 = aws_lc_rs::encoding::AsDer::as_der(&pkcs8.private_key()).unwrap();
    let sec1 = pem::encode(&pem::Pem::new("EC PRIVATE KEY", sec1.as_ref().to_vec()));
    write_tls(
        dir.path(),
        [
            ("issuer.crt.pem", Some(&cert)),
            ("issuer.key.pem", Some(&key)),
            ("proxy.crt.pem", Some(&cert)),
            ("proxy.key.pem", Some(&sec1)),
        ],
    );
    let config =
        parse(&with_tls(), dir.path(), MissingKeys::Generate).unwrap_or_else(|p| panic!("{p:?}"));
    for role in [crate::Role::Issuer, crate::Role::Proxy] {
        let tls = config.listener_tls(role).expect("TLS settings");
        assert_eq!(tls.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
    }
    assert!(config.listener_tls(crate::Role::Admin).is_none());
    let named = config.named_files();
    for name in [
        "issuer.crt.pem",
        "issuer.key.pem",
        "proxy.crt.pem",
        "proxy.key.pem",
    ] {
        assert!(
            named.contains(&dir.path().join(name)),
            "{name} in {named:?}"
        );
    }
    // The key never shows in the debug form.
    let debug = format!("{:?}", config.issuer.unwrap().tls.unwrap());
    assert!(debug.contains("issuer.key.pem") && !debug.contains("PRIVATE"));
}

#[test]
fn a_key_that_does_not_match_and_a_missing_file_are_located_problems() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = cert_and_key();
    let (_, other_key) = cert_and_key();
    write_tls(
        dir.path(),
        [
            ("issuer.crt.pem", Some(&cert)),
            ("issuer.key.pem", Some(&other_key)),
            ("proxy.crt.pem", None),
            ("proxy.key.pem", Some(&other_key)),
        ],
    );
    let p = parse(&with_tls(), dir.path(), MissingKeys::Generate).expect_err("invalid");
    has(&p, "issuer.tls.key", 5, "does not match the certificate");
    has(&p, "proxy.tls.cert", 28, "cannot read");
    assert_eq!(p.len(), 2, "{p:?}");
}

#[test]
fn files_without_a_certificate_or_key_or_with_broken_pem_are_located_problems() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = cert_and_key();
    let broken = cert.replacen("-----END CERTIFICATE-----", "", 1);
    write_tls(
        dir.path(),
        [
            ("issuer.crt.pem", Some(&key)),
            ("issuer.key.pem", Some(&cert)),
            ("proxy.crt.pem", Some(&broken)),
            ("proxy.key.pem", Some("")),
        ],
    );
    let p = parse(&with_tls(), dir.path(), MissingKeys::Generate).expect_err("invalid");
    has(&p, "issuer.tls.cert", 5, "holds no certificate");
    has(&p, "issuer.tls.key", 5, "holds no private key");
    has(&p, "proxy.tls.cert", 28, "not a valid PEM file");
    has(&p, "proxy.tls.key", 28, "holds no private key");
    // Never quotes the files.
    assert!(p.iter().all(|p| !p.message.contains("-----")), "{p:?}");
}

proptest::proptest! {
    /// Whatever the text, parsing returns problems or a config; it never panics.
    #[test]
    fn any_text_parses_or_reports(text in "(\\PC|\n|\\[|\\]|=|\"){0,400}") {
        let dir = tempfile::tempdir().unwrap();
        let _ = parse(&text, dir.path(), MissingKeys::Accept);
    }

    /// Lines of the valid file, dropped or repeated at random, never panic the validator.
    #[test]
    fn mangled_valid_files_never_panic(picks in proptest::collection::vec(0usize..40, 0..60)) {
        let lines: Vec<&str> = VALID.lines().collect();
        let text: String = picks.iter().filter_map(|i| lines.get(*i)).map(|l| format!("{l}\n")).collect();
        let dir = tempfile::tempdir().unwrap();
        let _ = parse(&text, dir.path(), MissingKeys::Accept);
    }
}

#[test]
fn quoted_values_of_type_errors_are_hidden_and_the_rest_kept() {
    assert_eq!(
        redact(
            "5:11: clients[0].secrets: invalid type: string \"sha256:K7g=\", expected a sequence"
        ),
        "5:11: clients[0].secrets: invalid type: string \"<redacted>\", expected a sequence"
    );
    assert_eq!(
        redact("string \"a\\\"b\\\\\" and string \"c\" end"),
        "string \"<redacted>\" and string \"<redacted>\" end"
    );
    assert_eq!(redact("string \"unterminated"), "string \"<redacted>\"");
    let plain = "3:1: routes[0].resource: unknown API resource \"urn:reports\"";
    assert_eq!(redact(plain), plain);
}

#[test]
fn a_secret_in_the_wrong_shape_is_never_echoed() {
    let p = problems(&VALID.replace(
        "secrets = [\"sha256:K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols=\"]",
        "secrets = \"my plain secret\"",
    ));
    assert_eq!(p.len(), 1);
    assert!(!p[0].to_string().contains("my plain secret"), "{}", p[0]);
}

#[test]
fn interactive_clients_need_redirects_and_refresh_for_offline_access() {
    let text = VALID.to_owned()
        + r#"
[[clients]]
client_id = "web"
secrets = ["sha256:K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols="]
allowed_grant_types = ["authorization_code"]
allow_offline_access = true
[[users]]
subject = "1"
username = "alice"
password = "alice"
"#;
    let p = problems(&text);
    has(
        &p,
        "clients[1].allow_offline_access",
        25,
        "add refresh_token",
    );
    has(
        &p,
        "clients[1].redirect_uris",
        25,
        "at least one redirect URI",
    );
    has(&p, "users[0].password", 33, "hash-password");
}

#[test]
fn an_upstream_is_parsed_once_with_its_authority_and_host_header() {
    for (text, authority, host) in [
        ("http://127.0.0.1:9001", "127.0.0.1:9001", "127.0.0.1:9001"),
        ("http://127.0.0.1:9001/", "127.0.0.1:9001", "127.0.0.1:9001"),
        ("http://api.internal", "api.internal:80", "api.internal"),
        (
            "https://API.internal:443",
            "api.internal:443",
            "api.internal",
        ),
        (
            "https://api.internal:8443",
            "api.internal:8443",
            "api.internal:8443",
        ),
        ("http://[::1]:8080", "[::1]:8080", "[::1]:8080"),
    ] {
        let upstream = Upstream::parse(text).unwrap_or_else(|| panic!("{text} refused"));
        assert_eq!(upstream.url.as_ref(), text.trim_end_matches('/'));
        assert_eq!(upstream.authority.as_str(), authority, "{text}");
        assert_eq!(upstream.host, host, "{text}");
    }
    assert_eq!(
        Upstream::parse("https://a.test").unwrap().scheme,
        http::uri::Scheme::HTTPS
    );
    for text in [
        "ftp://a.test",
        "http://a.test/api",
        "http://a.test?x=1",
        "http://a.test#f",
        "a.test:80",
        "",
    ] {
        assert_eq!(Upstream::parse(text), None, "{text}");
    }
}

#[test]
fn connection_limits_have_defaults_and_bad_values_are_located_problems() {
    let dir = tempfile::tempdir().unwrap();
    let with_admin = format!("{VALID}\n[admin]\nlisten = \"127.0.0.1:0\"\n");
    let config = parse(&with_admin, dir.path(), MissingKeys::Generate).unwrap();
    let issuer = config.limits(crate::Role::Issuer).unwrap();
    assert_eq!(issuer.max_connections, 4096);
    assert_eq!(issuer.idle_timeout, Duration::from_secs(60));
    assert_eq!(issuer.request_header_timeout, Duration::from_secs(10));
    assert_eq!(
        config.issuer.as_ref().unwrap().request_body_timeout,
        Duration::from_secs(10)
    );
    assert_eq!(
        config.limits(crate::Role::Admin).unwrap().max_connections,
        64
    );
    assert!(config.limits(crate::Role::Proxy).is_none());

    let text = VALID.replace(
        "issuer = \"http://127.0.0.1:5000\"\n",
        "issuer = \"http://127.0.0.1:5000\"\nmax_connections = 0\nidle_timeout = \"forever\"\n",
    ) + "[admin]\nlisten = \"127.0.0.1:0\"\nmax_connections = 2000000\nrequest_header_timeout = \"0s\"\n";
    let p = problems(&text);
    has(&p, "issuer.max_connections", 5, "from 1 to 1000000");
    has(&p, "issuer.idle_timeout", 6, "not a duration");
    has(&p, "admin.max_connections", 28, "from 1 to 1000000");
    has(&p, "admin.request_header_timeout", 29, "longer than zero");
    assert_eq!(p.len(), 4, "{p:?}");
}

#[test]
fn a_route_keeps_only_rewriting_headers_and_never_isogates_own() {
    let gateway = |keep: &str| {
        format!(
            "{VALID}\n[proxy]\nlisten = \"127.0.0.1:0\"\n\n[[routes]]\npath_prefix = \"/a\"\nupstream = \"http://127.0.0.1:1\"\nresource = \"urn:invoices\"\nkeep_headers = {keep}\n"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let config = parse(
        &gateway("[\"X-HTTP-Method-Override\", \"x-original-url\"]"),
        dir.path(),
        MissingKeys::Generate,
    )
    .unwrap();
    assert_eq!(
        config.routes[0].keep_headers,
        ["x-http-method-override", "x-original-url"]
    );
    let p = problems(&gateway(
        "[\"x-isogate-sub\", \"X-Forwarded-For\", \"forwarded\", \"x-other\"]",
    ));
    for i in 0..4 {
        has(
            &p,
            &format!("routes[0].keep_headers[{i}]"),
            32,
            "can be kept",
        );
    }
    assert_eq!(p.len(), 4, "{p:?}");
}

#[test]
fn refresh_grace_is_bounded_and_needs_rotation_and_sliding_may_be_off() {
    let web = |extra: &str| {
        VALID.to_owned()
            + &format!(
                r#"
[[clients]]
client_id = "web"
secrets = ["sha256:K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols="]
allowed_grant_types = ["authorization_code", "refresh_token"]
redirect_uris = ["https://app.example/cb"]
allow_offline_access = true
{extra}
"#
            )
    };
    let dir = tempfile::tempdir().unwrap();
    let config = parse(
        &web("refresh_token_reuse_grace = \"30s\"\nrefresh_token_sliding_lifetime = \"0s\""),
        dir.path(),
        MissingKeys::Generate,
    )
    .unwrap();
    let client = &config.clients["web"];
    assert_eq!(client.refresh_token_reuse_grace, Duration::from_secs(30));
    assert_eq!(client.refresh_token_sliding_lifetime, Duration::ZERO);
    assert_eq!(
        parse(&web(""), dir.path(), MissingKeys::Generate)
            .unwrap()
            .clients["web"]
            .refresh_token_reuse_grace,
        Duration::ZERO
    );
    let p = problems(&web("refresh_token_reuse_grace = \"6m\""));
    has(&p, "clients[1].refresh_token_reuse_grace", 31, "at most 5m");
    let p = problems(&web(
        "refresh_token_usage = \"reuse\"\nrefresh_token_reuse_grace = \"10s\"",
    ));
    has(&p, "clients[1].refresh_token_reuse_grace", 32, "one_time");
}

#[test]
fn the_openid_scope_needs_an_rs256_key_that_signs() {
    let openid = "[[identity_resources]]\nname = \"openid\"\nuser_claims = [\"sub\"]\n";
    // VALID has only an ES256 key.
    let p = problems(&format!("{VALID}{openid}"));
    has(&p, "issuer.signing_keys", 2, "RS256");
    let rs256 = "[[issuer.signing_keys]]\nfile = \"keys/rs256.pem\"\nalg = \"RS256\"\ngenerate_if_missing = true\n";
    let with_rs256 = VALID.replace("[[api_scopes]]", &format!("{rs256}\n[[api_scopes]]"));
    let dir = tempfile::tempdir().unwrap();
    // `check` accepts a key still to be generated.
    parse(
        &format!("{with_rs256}{openid}"),
        dir.path(),
        MissingKeys::Accept,
    )
    .unwrap();
    // A retired RS256 key signs nothing.
    let retired = with_rs256.replace(
        "alg = \"RS256\"\ngenerate_if_missing = true\n",
        "alg = \"RS256\"\ngenerate_if_missing = true\nretired = true\n",
    );
    let p = problems(&format!("{retired}{openid}"));
    has(&p, "issuer.signing_keys", 2, "RS256");
    // Without the openid scope, an ES256 key alone is fine.
    parse(VALID, dir.path(), MissingKeys::Accept).unwrap();
}

#[test]
fn the_store_url_comes_from_the_environment_or_from_the_file_without_a_password() {
    // [store] starts on line 25, after VALID.
    let with = |store: &str| format!("{VALID}\n[store]\n{store}");
    let all = problems(&with(
        "url = \"postgres://isogate:hunter2@db.internal/isogate\"\npool_size = 0\n",
    ));
    has(&all, "store.url", 26, "holds a password");
    has(&all, "store.pool_size", 27, "from 1 to 1000");
    assert!(
        !all.iter().any(|p| p.to_string().contains("hunter2")),
        "the password is never quoted"
    );
    has(
        &problems(&with("url_env = \"ISOGATE_TEST_UNSET_URL\"\n")),
        "store.url_env",
        26,
        "ISOGATE_TEST_UNSET_URL is not set",
    );
    has(
        &problems(&with("pool_size = 4\n")),
        "store",
        25,
        "set url_env",
    );
    has(
        &problems(&with("url = \"postgres://db/x\"\nurl_env = \"X\"\n")),
        "store",
        27,
        "not both",
    );
    has(
        &problems(&with("url = \"mysql://db/x\"\n")),
        "store.url",
        26,
        "not a postgres:// URL",
    );
    has(
        &problems(&with("url = \"postgres://db/x?sslmode=require\"\n")),
        "store.url",
        26,
        "add tls = { ca",
    );
    has(
        &problems(&with(
            "url = \"postgres://db/x\"\ntls = { ca = \"missing.pem\" }\n",
        )),
        "store.tls.ca",
        27,
        "cannot read",
    );

    // From the environment, a password is fine, and it is never shown.
    std::env::set_var(
        "ISOGATE_TEST_STORE_URL",
        "postgres://isogate:hunter2@db.internal:6543/grants",
    );
    let dir = tempfile::tempdir().unwrap();
    let text = with("url_env = \"ISOGATE_TEST_STORE_URL\"\nconnect_timeout = \"1s\"\n");
    let config = parse(&text, dir.path(), MissingKeys::Generate).unwrap();
    let store = config.store.unwrap();
    assert_eq!(store.shown, "postgres://isogate@db.internal:6543/grants");
    assert_eq!(store.pg.get_password(), Some(&b"hunter2"[..]));
    assert_eq!(store.pool_size, 16);
    assert_eq!(store.connect_timeout, Duration::from_secs(1));
    assert!(!format!("{store:?}").contains("hunter2"));
    // Without a CA, no TLS is tried.
    assert_eq!(
        store.pg.get_ssl_mode(),
        tokio_postgres::config::SslMode::Disable
    );
}

#[test]
fn shape_problems_are_reported_with_their_key_paths_together_with_every_other_problem() {
    let text = VALID
        .replace("listen = \"127.0.0.1:0\"", "listen = 5000")
        .replace(
            "require_resource_indicator = true",
            "require_resource_indicator = \"yes\"",
        )
        .replace("alg = \"ES256\"", "")
        .replace(
            "allowed_scopes = [\"read\"]",
            "allowed_scopes = [\"read\", \"nope\"]\nfavourite = 1",
        )
        + "\n[proxy]\nlisten = \"127.0.0.1:0\"\nclock_skew = 30\n";
    let p = problems(&text);
    has(
        &p,
        "issuer.listen",
        3,
        "expected a string, found integer `5000`",
    );
    has(
        &p,
        "issuer.signing_keys[0].alg",
        6,
        "missing required key `alg`",
    );
    has(
        &p,
        "api_resources[0].require_resource_indicator",
        17,
        "expected a boolean, found a string",
    );
    has(&p, "clients[0].allowed_scopes[1]", 23, "\"nope\"");
    has(&p, "clients[0].favourite", 24, "unknown key `favourite`");
    has(
        &p,
        "proxy.clock_skew",
        28,
        "expected a duration string such as \"30s\", found integer `30`",
    );
    has(&p, "routes", 0, "at least one [[routes]] entry");
    // Nothing about the stand-ins that let the rest be checked; in file order.
    let about = |key: &str| p.iter().filter(|p| p.key == key).count();
    assert_eq!(about("issuer.signing_keys[0].alg"), 1, "{p:#?}");
    assert_eq!(about("issuer.listen"), 1, "{p:#?}");
    assert!(p.windows(2).all(|w| w[0].line <= w[1].line), "{p:#?}");
}

#[test]
fn a_bad_element_of_a_list_or_a_section_of_the_wrong_shape_hides_nothing_else() {
    let text = format!(
        "proxy = 5\nroutes = [1]\n{}",
        VALID
            .replace("\nscopes = [\"read\"]", "\nscopes = [\"read\", 5]")
            .replace("allowed_scopes = [\"read\"]", "allowed_scopes = [\"nope\"]")
    );
    let p = problems(&text);
    has(&p, "proxy", 1, "found integer `5`");
    has(&p, "routes[0]", 2, "found integer `1`");
    has(
        &p,
        "api_resources[0].scopes[1]",
        18,
        "expected a string, found integer `5`",
    );
    has(&p, "clients[0].allowed_scopes[0]", 25, "\"nope\"");
}

#[test]
fn every_syntax_error_is_reported_at_once() {
    let p = problems("[issuer]\nlisten = \nissuer = \"x\"\nkey = = 3\n");
    assert!(p.len() >= 2, "{p:#?}");
    assert_eq!(p[0].line, 2, "{p:#?}");
    assert!(p.iter().any(|p| p.line == 4), "{p:#?}");
}

#[test]
fn dpop_keys_have_defaults_and_public_url_must_be_an_origin() {
    let proxy = "\n[proxy]\nlisten = \"127.0.0.1:0\"\n";
    let route = "\n[[routes]]\npath_prefix = \"/i\"\nupstream = \"http://127.0.0.1:9\"\nresource = \"urn:invoices\"\n";
    let dir = tempfile::tempdir().unwrap();
    let config = parse(
        &format!("{VALID}{proxy}{route}"),
        dir.path(),
        MissingKeys::Generate,
    )
    .unwrap();
    let (issuer, gateway) = (config.issuer.unwrap(), config.proxy.unwrap());
    assert_eq!(issuer.dpop_max_age, Duration::from_secs(60));
    assert_eq!(gateway.dpop_max_age, Duration::from_secs(60));
    assert_eq!(gateway.public_url, None);
    assert!(
        !config
            .model
            .api_resource("urn:invoices")
            .unwrap()
            .require_dpop
    );
    assert!(!config.clients["client"].require_dpop);

    let set = |extra: &str| {
        let text = VALID
            .replace(
                "require_resource_indicator = true",
                "require_resource_indicator = true\nrequire_dpop = true",
            )
            .replace(
                "allowed_scopes = [\"read\"]",
                "allowed_scopes = [\"read\"]\nrequire_dpop = true",
            )
            + proxy
            + extra
            + route;
        let dir = tempfile::tempdir().unwrap();
        parse(&text, dir.path(), MissingKeys::Generate)
    };
    let config =
        set("public_url = \"HTTPS://API.example.com:443/\"\ndpop_max_age = \"2m\"\n").unwrap();
    let gateway = config.proxy.unwrap();
    assert_eq!(
        gateway.public_url.as_deref(),
        Some("https://api.example.com")
    );
    assert_eq!(gateway.dpop_max_age, Duration::from_secs(120));
    assert!(
        config
            .model
            .api_resource("urn:invoices")
            .unwrap()
            .require_dpop
    );
    assert!(config.clients["client"].require_dpop);
    for bad in [
        "https://api.example.com/v1",
        "https://api.example.com?x=1",
        "https://user@api.example.com",
        "ftp://api.example.com",
        "api.example.com",
    ] {
        let problems = set(&format!("public_url = \"{bad}\"\n")).expect_err(bad);
        assert!(
            problems
                .iter()
                .any(|p| p.key == "proxy.public_url" && p.message.contains("origin")),
            "{bad}: {problems:?}"
        );
    }
    let problems = set("dpop_max_age = \"soon\"\n").expect_err("a bad duration");
    assert!(
        problems.iter().any(|p| p.key == "proxy.dpop_max_age"),
        "{problems:?}"
    );
}

#[test]
fn registration_takes_known_scopes_grant_types_and_a_stored_token() {
    let parsed = |section: &str| {
        let dir = tempfile::tempdir().unwrap();
        parse(
            &format!("{VALID}\n[issuer.registration]\n{section}"),
            dir.path(),
            MissingKeys::Generate,
        )
    };
    let config = parsed("allowed_scopes = [\"read\"]\n").unwrap();
    let registration = config.issuer.unwrap().registration.unwrap();
    assert!(registration.initial_access_token.is_none());
    assert_eq!(
        registration.allowed_grant_types,
        [
            crate::resources::GrantType::AuthorizationCode,
            crate::resources::GrantType::RefreshToken
        ]
        .into()
    );
    for (section, key, needle) in [
        (
            "allowed_scopes = [\"nope\"]",
            "issuer.registration.allowed_scopes[0]",
            "nope",
        ),
        (
            "allowed_scopes = [\"offline_access\"]",
            "issuer.registration.allowed_scopes[0]",
            "refresh_token",
        ),
        (
            "allowed_grant_types = [\"password\"]",
            "issuer.registration.allowed_grant_types[0]",
            "expected",
        ),
        (
            "allowed_grant_types = []",
            "issuer.registration.allowed_grant_types",
            "at least one",
        ),
        (
            "initial_access_token = \"plain\"",
            "issuer.registration.initial_access_token",
            "sha256:",
        ),
        (
            "allow_private_addresses = true",
            "issuer.registration.allow_private_addresses",
            "metadata documents",
        ),
        (
            "allowed_scope = [\"read\"]",
            "issuer.registration.allowed_scope",
            "allowed_scopes",
        ),
    ] {
        let problems = parsed(&format!("{section}\n")).expect_err(section);
        assert!(
            problems
                .iter()
                .any(|p| p.key == key && p.message.contains(needle)),
            "{section}: {problems:?}"
        );
    }
}

#[test]
fn mcp_rules_name_methods_tools_and_listed_scopes_and_replace_route_scopes() {
    let gateway = |table: &str| {
        format!(
            "{VALID}\n[proxy]\nlisten = \"127.0.0.1:0\"\n\n[[routes]]\npath_prefix = \"/mcp\"\nupstream = \"http://127.0.0.1:1\"\nresource = \"urn:invoices\"\n{table}\n"
        )
    };
    let line_of = |text: &str, needle: &str| {
        1 + text
            .lines()
            .position(|l| l.contains(needle))
            .expect("the needle")
    };
    let dir = tempfile::tempdir().unwrap();
    let good = gateway("[routes.mcp]\n\"tools/call:delete\" = [\"read\"]\n\"*\" = [\"read\"]");
    let config = parse(&good, dir.path(), MissingKeys::Generate).unwrap();
    let rules = config.routes[0].mcp.as_ref().expect("the rules");
    assert_eq!(rules.scopes(), ["read"]);
    assert!(config.routes[0].scopes.is_empty());

    let bad = gateway(
        "[routes.mcp]\n\"tools/list:x\" = [\"read\"]\n\"*:x\" = [\"read\"]\n\"bad method\" = [\"read\"]\n\"tools/call:\" = [\"read\"]\n\"ping\" = []\n\"tools/call\" = [\"write\"]",
    );
    let p = problems(&bad);
    let table = line_of(&bad, "[routes.mcp]");
    has(
        &p,
        "routes[0].mcp.\"tools/list:x\"",
        table,
        "only tools/call and prompts/get",
    );
    has(&p, "routes[0].mcp.\"*:x\"", table, "takes no name");
    has(&p, "routes[0].mcp.\"bad method\"", table, "without spaces");
    has(&p, "routes[0].mcp.\"tools/call:\"", table, "without spaces");
    has(&p, "routes[0].mcp.\"ping\"", table, "names no scope");
    let write = line_of(&bad, "\"tools/call\" = [\"write\"]");
    has(
        &p,
        "routes[0].mcp.\"tools/call\"[0]",
        write,
        "does not list the scope \"write\"",
    );
    assert_eq!(p.len(), 6, "{p:?}");

    let both = gateway("[routes.scopes]\nGET = [\"read\"]\n[routes.mcp]\n\"*\" = [\"read\"]");
    let p = problems(&both);
    has(
        &p,
        "routes[0].mcp",
        line_of(&both, "[routes.mcp]"),
        "replaces [routes.scopes]",
    );
    let empty = gateway("[routes.mcp]");
    has(
        &problems(&empty),
        "routes[0].mcp",
        line_of(&empty, "[routes.mcp]"),
        "at least one rule",
    );
}

/// `VALID` with `n` more of each entry, a route and the proxy: big enough to be parsed in
/// pieces.
fn big(n: usize) -> String {
    let mut text = format!("{VALID}\n[proxy]\nlisten = \"127.0.0.1:0\"\n");
    for i in 0..n {
        text.push_str(&format!(
            "\n[[api_scopes]]\nname = \"scope-{i}\"\n\n[[api_resources]]\nname = \"urn:api-{i}\"\n\
             scopes = [\"scope-{i}\"]\n\n[[clients]]\nclient_id = \"client-{i}\"\n\
             secrets = [\"sha256:K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols=\"]\n\
             allowed_grant_types = [\"client_credentials\"]\nallowed_scopes = [\"scope-{i}\"]\n\n\
             [[routes]]\npath_prefix = \"/api-{i}\"\nupstream = \"http://127.0.0.1:4\"\n\
             resource = \"urn:api-{i}\"\n"
        ));
    }
    text
}

#[test]
fn a_big_file_parsed_in_pieces_is_the_configuration_of_the_whole() {
    let dir = tempfile::tempdir().unwrap();
    let text = big(500);
    assert!(text.len() > 4 * pieces::PIECE);
    assert!(pieces::parse(&text, pieces::PIECE).is_some());
    let lines = Lines::new(&text);
    let in_pieces = parse(&text, dir.path(), MissingKeys::Accept).unwrap();
    let whole = parse_whole(&text, dir.path(), MissingKeys::Accept, &lines).unwrap();
    assert_eq!(format!("{in_pieces:?}"), format!("{whole:?}"));
    assert_eq!(in_pieces.routes.len(), 500);
    assert_eq!(in_pieces.clients.len(), 501);
}

#[test]
fn a_problem_in_a_big_file_is_reported_at_its_line_in_the_whole() {
    let text = format!("{}\n[[routes]]\npath_prefix = \"/late\"\nupstream = \"ftp://x\"\nresource = \"urn:invoices\"\n", big(500));
    let line = text
        .lines()
        .position(|l| l == "upstream = \"ftp://x\"")
        .unwrap()
        + 1;
    has(&problems(&text), "routes[500].upstream", line, "");
    // A key that two pieces define: left to the whole, which says where.
    let text = format!("{}\n[proxy]\nlisten = \"127.0.0.1:1\"\n", big(500));
    let line = text.lines().count() - 1;
    let found = problems(&text);
    assert!(found.iter().any(|p| p.line == line), "{found:?}");
}
