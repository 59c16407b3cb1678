//! One test per rule of SPEC §3, on the seed's examples.

use std::collections::BTreeSet;
use std::time::Duration;

use super::*;
use crate::resources::{ApiScope, IdentityResource, RefreshTokenUsage};

fn api(name: &str, scopes: &[&str], isolated: bool) -> ApiResource {
    ApiResource {
        name: name.into(),
        display_name: None,
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        isolated,
        enabled: true,
        user_claims: vec![],
        allowed_signing_algs: vec![],
        secrets: vec![],
        require_dpop: false,
    }
}

fn scope(name: &str) -> ApiScope {
    ApiScope {
        name: name.into(),
        display_name: None,
        user_claims: vec![],
        parameterized: false,
        parameter_claim: None,
    }
}

/// The seed: invoices and products share `read`/`write`; invoices and customers share
/// `manage`; `transaction` is parameterized.
fn model(invoices_isolated: bool) -> Model {
    let mut m = Model::default();
    for s in ["read", "write", "manage", "invoice.pay", "customer.read"] {
        m.api_scopes.insert(s.into(), scope(s));
    }
    m.api_scopes.insert(
        "transaction".into(),
        ApiScope {
            parameterized: true,
            parameter_claim: Some("transaction_id".into()),
            ..scope("transaction")
        },
    );
    m.identity_resources.insert(
        "openid".into(),
        IdentityResource {
            name: "openid".into(),
            display_name: None,
            user_claims: vec!["sub".into()],
        },
    );
    m.api_resources = vec![
        api(
            "urn:invoices",
            &["read", "write", "manage", "invoice.pay"],
            invoices_isolated,
        ),
        api("urn:products", &["read", "write"], false),
        api("urn:customers", &["customer.read", "manage"], false),
        api("urn:payments", &["transaction"], false),
    ];
    m
}

fn client(scopes: &[&str]) -> Client {
    Client {
        client_id: "client".into(),
        secrets: vec![],
        require_secret: true,
        allowed_grant_types: [GrantType::ClientCredentials].into(),
        allowed_scopes: scopes.iter().map(|s| s.to_string()).collect(),
        access_token_lifetime: None,
        redirect_uris: vec![],
        require_pkce: true,
        require_consent: false,
        allow_offline_access: true,
        refresh_token_usage: RefreshTokenUsage::OneTime,
        refresh_token_lifetime: Duration::from_secs(1),
        refresh_token_sliding_lifetime: Duration::from_secs(1),
        refresh_token_reuse_grace: Duration::ZERO,
        require_dpop: false,
        assertion_keys: None,
    }
}

const ALL: &[&str] = &[
    "read",
    "write",
    "manage",
    "invoice.pay",
    "customer.read",
    "transaction",
    "openid",
];

fn cc<'a>(scope: Option<&'a str>, resources: &'a [&'a str]) -> TokenRequest<'a> {
    TokenRequest {
        grant: GrantType::ClientCredentials,
        scope,
        resources,
    }
}

fn ok(m: &Model, req: TokenRequest<'_>) -> Granted {
    grant(m, &client(ALL), &req).unwrap_or_else(|e| panic!("{e}"))
}

fn err(m: &Model, req: TokenRequest<'_>) -> Refusal {
    grant(m, &client(ALL), &req).expect_err("refused")
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

// Rule 4: no indicator — every non-isolated resource listing a granted scope.
#[test]
fn shared_scope_without_indicator_names_both_resources() {
    let g = ok(&model(false), cc(Some("read"), &[]));
    assert_eq!(strs(&g.aud), ["urn:invoices", "urn:products"]);
    assert_eq!(strs(&g.scopes), ["read"]);
}

#[test]
fn shared_manage_scope_reaches_invoices_and_customers() {
    let g = ok(&model(false), cc(Some("manage"), &[]));
    assert_eq!(strs(&g.aud), ["urn:invoices", "urn:customers"]);
}

#[test]
fn scopes_of_two_resources_name_both() {
    let g = ok(&model(false), cc(Some("invoice.pay customer.read"), &[]));
    assert_eq!(strs(&g.aud), ["urn:invoices", "urn:customers"]);
    assert_eq!(strs(&g.scopes), ["invoice.pay", "customer.read"]);
}

// Rule 4, isolation: the isolated resource drops out of aud, its scope is still granted.
#[test]
fn isolated_resource_drops_out_of_aud_without_indicator_but_scope_stays() {
    let g = ok(&model(true), cc(Some("read"), &[]));
    assert_eq!(strs(&g.aud), ["urn:products"]);
    assert_eq!(strs(&g.scopes), ["read"]);
}

#[test]
fn only_isolated_resources_reached_requires_an_indicator() {
    let e = err(&model(true), cc(Some("invoice.pay"), &[]));
    assert!(
        matches!(&e, Refusal::InvalidTarget(d) if d.contains("resource indicator is required")),
        "{e}"
    );
}

// Rule 5: one indicator — aud is R alone, scopes cut down to R's.
#[test]
fn indicator_cuts_aud_and_scopes_to_that_resource() {
    let g = ok(
        &model(false),
        cc(Some("read customer.read"), &["urn:invoices"]),
    );
    assert_eq!(strs(&g.aud), ["urn:invoices"]);
    assert_eq!(strs(&g.scopes), ["read"]);
    assert_eq!(strs(&g.granted), ["read", "customer.read"]);
}

#[test]
fn indicator_reaches_an_isolated_resource() {
    let g = ok(&model(true), cc(Some("read write"), &["urn:invoices"]));
    assert_eq!(strs(&g.aud), ["urn:invoices"]);
    assert_eq!(strs(&g.scopes), ["read", "write"]);
}

#[test]
fn indicator_drops_identity_scopes_and_keeps_offline_access() {
    let req = TokenRequest {
        grant: GrantType::AuthorizationCode,
        scope: Some("openid read offline_access"),
        resources: &["urn:products"],
    };
    let g = ok(&model(false), req);
    assert_eq!(strs(&g.scopes), ["read", "offline_access"]);
    assert_eq!(strs(&g.granted), ["openid", "read", "offline_access"]);
}

// Static audience: added without an indicator, never with one.
#[test]
fn static_audience_is_added_only_without_indicator() {
    let mut m = model(false);
    m.static_audience = Some("https://issuer/resources".into());
    let g = ok(&m, cc(Some("write"), &[]));
    assert_eq!(
        strs(&g.aud),
        ["urn:invoices", "urn:products", "https://issuer/resources"]
    );
    let g = ok(&m, cc(Some("write"), &["urn:products"]));
    assert_eq!(strs(&g.aud), ["urn:products"]);
}

#[test]
fn scope_of_no_resource_needs_the_static_audience() {
    let mut m = model(false);
    m.api_scopes.insert("orphan".into(), scope("orphan"));
    let c = client(&["orphan"]);
    let req = cc(Some("orphan"), &[]);
    assert!(matches!(
        grant(&m, &c, &req),
        Err(Refusal::InvalidTarget(_))
    ));
    m.static_audience = Some("https://issuer/resources".into());
    assert_eq!(
        strs(&grant(&m, &c, &req).unwrap().aud),
        ["https://issuer/resources"]
    );
}

// Parameterized scopes.
#[test]
fn parameterized_scope_copies_its_value_into_the_parameter_claim() {
    let g = ok(&model(false), cc(Some("transaction:42"), &[]));
    assert_eq!(strs(&g.aud), ["urn:payments"]);
    assert_eq!(strs(&g.scopes), ["transaction:42"]);
    assert_eq!(
        g.parameter_claims,
        [("transaction_id".to_owned(), "42".to_owned())]
    );
    let g = ok(&model(false), cc(Some("transaction:42"), &["urn:payments"]));
    assert_eq!(strs(&g.scopes), ["transaction:42"]);
}

#[test]
fn bare_or_empty_parameterized_scope_is_invalid_scope() {
    for s in ["transaction", "transaction:"] {
        assert!(
            matches!(
                err(&model(false), cc(Some(s), &[])),
                Refusal::InvalidScope(_)
            ),
            "{s}"
        );
    }
    let e = err(&model(false), cc(Some("transaction:1 transaction:2"), &[]));
    assert!(matches!(e, Refusal::InvalidScope(_)));
}

// Rule 1: scopes must exist and be allowed.
#[test]
fn unknown_or_unallowed_scope_is_invalid_scope() {
    let m = model(false);
    assert!(
        matches!(err(&m, cc(Some("read delete"), &[])), Refusal::InvalidScope(d) if d.contains("unknown"))
    );
    let c = client(&["read"]);
    let e = grant(&m, &c, &cc(Some("write"), &[])).unwrap_err();
    assert!(matches!(e, Refusal::InvalidScope(d) if d.contains("not allowed")));
    let e = grant(&m, &c, &cc(Some("transaction:1"), &[])).unwrap_err();
    assert!(matches!(e, Refusal::InvalidScope(d) if d.contains("not allowed")));
}

#[test]
fn identity_scope_or_offline_access_with_client_credentials_is_invalid_scope() {
    for s in ["openid", "read offline_access"] {
        assert!(
            matches!(
                err(&model(false), cc(Some(s), &[])),
                Refusal::InvalidScope(_)
            ),
            "{s}"
        );
    }
}

#[test]
fn offline_access_needs_allow_offline_access() {
    let mut c = client(ALL);
    c.allow_offline_access = false;
    let req = TokenRequest {
        grant: GrantType::AuthorizationCode,
        scope: Some("read offline_access"),
        resources: &[],
    };
    assert!(matches!(
        grant(&model(false), &c, &req),
        Err(Refusal::InvalidScope(_))
    ));
}

#[test]
fn no_scope_means_every_allowed_non_parameterized_api_scope() {
    let g = ok(&model(false), cc(None, &[]));
    let scopes: BTreeSet<&str> = strs(&g.scopes).into_iter().collect();
    assert_eq!(
        scopes,
        ["customer.read", "invoice.pay", "manage", "read", "write"].into()
    );
    let c = client(&["openid", "transaction"]);
    assert!(matches!(
        grant(&model(false), &c, &cc(None, &[])),
        Err(Refusal::InvalidScope(_))
    ));
}

#[test]
fn malformed_scope_characters_are_invalid_scope() {
    assert!(matches!(
        err(&model(false), cc(Some("read \"x\""), &[])),
        Refusal::InvalidScope(_)
    ));
    assert!(matches!(
        err(&model(false), cc(Some("   "), &[])),
        Refusal::InvalidScope(_)
    ));
}

// Rules 2 and 3: the resource indicator itself.
#[test]
fn bad_indicators_are_invalid_target() {
    let m = model(false);
    let long = format!("urn:{}", "x".repeat(510));
    for r in [
        "invoices",
        "urn:invoices#x",
        "urn:unknown",
        long.as_str(),
        "urn:customers",
    ] {
        let e = err(&m, cc(Some("read"), &[r]));
        assert!(matches!(e, Refusal::InvalidTarget(_)), "{r}: {e}");
    }
    let e = err(&m, cc(Some("read"), &["urn:invoices", "urn:products"]));
    assert!(matches!(e, Refusal::InvalidTarget(d) if d.contains("at most one")));
}

#[test]
fn disabled_resource_is_neither_audience_nor_indicator() {
    let mut m = model(false);
    m.api_resources[1].enabled = false;
    assert_eq!(strs(&ok(&m, cc(Some("read"), &[])).aud), ["urn:invoices"]);
    assert!(matches!(
        err(&m, cc(Some("read"), &["urn:products"])),
        Refusal::InvalidTarget(_)
    ));
}

// Signing algorithms: the intersection over aud.
#[test]
fn signing_algs_are_the_intersection_over_the_audience() {
    let mut m = model(false);
    m.api_resources[0].allowed_signing_algs = vec![Alg::RS256, Alg::ES256];
    m.api_resources[1].allowed_signing_algs = vec![Alg::ES256];
    let g = ok(&m, cc(Some("read"), &[]));
    assert_eq!(g.signing_algs, Some([Alg::ES256].into()));
    assert_eq!(
        ok(&m, cc(Some("manage"), &["urn:customers"])).signing_algs,
        None
    );
    m.api_resources[1].allowed_signing_algs = vec![Alg::PS256];
    assert!(matches!(
        err(&m, cc(Some("read"), &[])),
        Refusal::InvalidTarget(_)
    ));
    // With an indicator only R's restriction counts.
    assert_eq!(
        ok(&m, cc(Some("read"), &["urn:products"])).signing_algs,
        Some([Alg::PS256].into())
    );
}

// Rule 6: the seed's journey. Authorize names both resources; each redemption names one.
fn remembered<'a>(scopes: &'a [String], resources: &'a [String]) -> Remembered<'a> {
    Remembered { scopes, resources }
}

#[test]
fn authorize_takes_several_resources_and_validates_each() {
    let m = model(true);
    let (scopes, resources) = authorize(
        &m,
        &client(ALL),
        Some("read offline_access"),
        &["urn:invoices", "urn:products", "urn:invoices"],
    )
    .unwrap();
    assert_eq!(scopes, ["read", "offline_access"]);
    assert_eq!(resources, ["urn:invoices", "urn:products"]);
    let e = authorize(
        &m,
        &client(ALL),
        Some("read"),
        &["urn:invoices", "urn:customers"],
    )
    .unwrap_err();
    assert!(matches!(e, Refusal::InvalidTarget(_)), "{e}");
    let e = authorize(&m, &client(ALL), Some("read"), &["not a uri"]).unwrap_err();
    assert!(matches!(e, Refusal::InvalidTarget(_)), "{e}");
}

#[test]
fn redemption_names_one_remembered_resource_and_gets_a_token_for_it_alone() {
    let m = model(true);
    let scopes: Vec<String> = vec!["read".into(), "offline_access".into()];
    let resources: Vec<String> = vec!["urn:invoices".into(), "urn:products".into()];
    let rem = remembered(&scopes, &resources);
    let c = client(ALL);
    let at = |resource: &[&str], scope: Option<&str>| {
        redeem(&m, &c, GrantType::RefreshToken, rem, scope, resource)
    };
    let g = at(&["urn:invoices"], None).unwrap();
    assert_eq!(strs(&g.aud), ["urn:invoices"]);
    assert_eq!(strs(&g.scopes), ["read", "offline_access"]);
    let g = at(&["urn:products"], None).unwrap();
    assert_eq!(strs(&g.aud), ["urn:products"]);
    // A resource never granted, even one the scopes reach.
    let e = at(&["urn:customers"], None).unwrap_err();
    assert!(matches!(e, Refusal::InvalidTarget(_)), "{e}");
    // No resource: rule 4 within the remembered ones (invoices is isolated).
    let g = at(&[], None).unwrap();
    assert_eq!(strs(&g.aud), ["urn:products"]);
    // Narrowing is fine, widening is not.
    let g = at(&["urn:products"], Some("read")).unwrap();
    assert_eq!(strs(&g.scopes), ["read"]);
    let e = at(&["urn:products"], Some("read write")).unwrap_err();
    assert!(matches!(e, Refusal::InvalidScope(_)), "{e}");
    // Still at most one.
    let e = at(&["urn:invoices", "urn:products"], None).unwrap_err();
    assert!(matches!(e, Refusal::InvalidTarget(_)), "{e}");
}

#[test]
fn without_remembered_resources_only_non_isolated_ones_may_be_named() {
    let m = model(true);
    let scopes: Vec<String> = vec!["read".into()];
    let rem = remembered(&scopes, &[]);
    let c = client(ALL);
    let g = redeem(
        &m,
        &c,
        GrantType::AuthorizationCode,
        rem,
        None,
        &["urn:products"],
    )
    .unwrap();
    assert_eq!(strs(&g.aud), ["urn:products"]);
    let e = redeem(
        &m,
        &c,
        GrantType::AuthorizationCode,
        rem,
        None,
        &["urn:invoices"],
    )
    .unwrap_err();
    assert!(matches!(e, Refusal::InvalidTarget(_)), "{e}");
}

#[test]
fn identity_scopes_alone_give_a_token_for_the_issuer() {
    let mut m = model(false);
    m.identity_audience = Some("https://issuer/resources".into());
    let req = TokenRequest {
        grant: GrantType::AuthorizationCode,
        scope: Some("openid"),
        resources: &[],
    };
    let g = ok(&m, req);
    assert_eq!(strs(&g.aud), ["https://issuer/resources"]);
    assert_eq!(strs(&g.scopes), ["openid"]);
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|s| s.to_string()).collect()
}

fn pairs(values: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    values
        .iter()
        .map(|(s, r)| (s.to_string(), r.to_string()))
        .collect()
}

#[test]
fn consent_pairs_each_scope_with_the_apis_it_reaches() {
    let m = model(true);
    // With resources: the named APIs that list each scope.
    assert_eq!(
        consent_pairs(
            &m,
            &strings(&["openid", "read", "manage", "offline_access"]),
            &strings(&["urn:invoices", "urn:products"])
        ),
        pairs(&[
            ("manage", "urn:invoices"),
            ("offline_access", ""),
            ("openid", ""),
            ("read", "urn:invoices"),
            ("read", "urn:products"),
        ])
    );
    // Without: the non-isolated APIs that list it (rule 4); isolated invoices is not among them.
    assert_eq!(
        consent_pairs(&m, &strings(&["read", "manage"]), &[]),
        pairs(&[("manage", "urn:customers"), ("read", "urn:products")])
    );
    // A parameterized scope keeps its value and reaches its API by its name.
    assert_eq!(
        consent_pairs(&m, &strings(&["transaction:42"]), &[]),
        pairs(&[("transaction:42", "urn:payments")])
    );
    // Consent at products does not cover invoices.
    let given = consent_pairs(&m, &strings(&["read"]), &strings(&["urn:products"]));
    let asked = consent_pairs(&m, &strings(&["read"]), &strings(&["urn:invoices"]));
    assert!(!asked.is_subset(&given));
}

#[test]
fn a_scope_named_with_a_colon_is_a_scope_of_its_own_unless_its_base_is_parameterized() {
    let mut m = model(false);
    m.api_scopes
        .insert("invoices:read".into(), scope("invoices:read"));
    m.api_resources[0].scopes.push("invoices:read".into());
    assert_eq!(
        m.api_scope_of("invoices:read").unwrap().name,
        "invoices:read"
    );
    assert_eq!(
        m.api_scope_of("transaction:42").unwrap().name,
        "transaction"
    );
    assert_eq!(m.api_scope_of("read").unwrap().name, "read");
    // `read` is not parameterized: `read:x` names nothing.
    assert!(m.api_scope_of("read:x").is_none());
    assert!(m.api_scope_of("invoices").is_none());
    assert_eq!(
        consent_pairs(&m, &strings(&["invoices:read"]), &[]),
        pairs(&[("invoices:read", "urn:invoices")])
    );
}

/// SPEC §3 rule 6, the check alone: a `resource` at redemption must be one the authorize
/// request named, even a non-isolated one that the granted scopes reach.
#[test]
fn a_resource_at_redemption_must_have_been_named_at_authorize() {
    // Invoices shares `read` and is not isolated here: only the remembered list refuses it.
    let m = model(false);
    let scopes: Vec<String> = vec!["read".into()];
    let resources: Vec<String> = vec!["urn:products".into()];
    let rem = remembered(&scopes, &resources);
    let c = client(ALL);
    let at = |resource: &[&str]| redeem(&m, &c, GrantType::AuthorizationCode, rem, None, resource);
    let g = at(&["urn:products"]).unwrap();
    assert_eq!(strs(&g.aud), ["urn:products"]);
    let e = at(&["urn:invoices"]).unwrap_err();
    assert_eq!(
        e,
        Refusal::InvalidTarget(
            "the resource \"urn:invoices\" was not requested at authorize".into()
        )
    );
}

/// SPEC §3 rule 6: without `resource` at redemption, the audience is rule 4's within the
/// resources named at authorize, never wider.
#[test]
fn without_a_resource_the_audience_stays_within_the_authorized_ones() {
    let m = model(false);
    let scopes: Vec<String> = vec!["read".into(), "manage".into()];
    let resources: Vec<String> = vec!["urn:products".into()];
    let rem = remembered(&scopes, &resources);
    let g = redeem(&m, &client(ALL), GrantType::RefreshToken, rem, None, &[]).unwrap();
    // Unrestricted, `read` and `manage` would also reach invoices and customers.
    assert_eq!(strs(&g.aud), ["urn:products"]);
    // With none named at authorize, rule 4 applies in full.
    let g = redeem(
        &m,
        &client(ALL),
        GrantType::RefreshToken,
        remembered(&scopes, &[]),
        None,
        &[],
    )
    .unwrap();
    assert_eq!(
        strs(&g.aud),
        ["urn:invoices", "urn:products", "urn:customers"]
    );
}

/// SPEC §3 rule 2 at its boundary: 512 characters are accepted, 513 are not.
#[test]
fn a_resource_of_512_characters_is_accepted_and_513_are_not() {
    let mut m = model(false);
    let at_limit = format!("urn:{}", "a".repeat(508));
    let past_limit = format!("urn:{}", "a".repeat(509));
    assert_eq!((at_limit.len(), past_limit.len()), (512, 513));
    for name in [&at_limit, &past_limit] {
        m.api_resources.push(api(name, &["read"], false));
    }
    let g = ok(&m, cc(Some("read"), &[&at_limit]));
    assert_eq!(strs(&g.aud), [at_limit.as_str()]);
    assert_eq!(
        err(&m, cc(Some("read"), &[&past_limit])),
        Refusal::InvalidTarget("the resource is longer than 512 characters".into())
    );
}

/// Only a request for identity scopes alone gets a token for the issuer: API scopes beside
/// them keep rule 4's audience.
#[test]
fn identity_scopes_beside_api_scopes_keep_the_apis_audience() {
    let mut m = model(false);
    m.identity_audience = Some("https://issuer/resources".into());
    let req = TokenRequest {
        grant: GrantType::AuthorizationCode,
        scope: Some("openid read"),
        resources: &[],
    };
    let g = ok(&m, req);
    assert_eq!(strs(&g.aud), ["urn:invoices", "urn:products"]);
}

/// SPEC §3 rule 2's form check on its own: a value that is not an absolute URI, or that holds
/// a fragment, is refused for that reason, before it is looked up.
#[test]
fn a_resource_must_be_an_absolute_uri_without_fragment() {
    let mut m = model(false);
    m.api_resources.push(api("urn:x#frag", &["read"], false));
    m.api_resources.push(api("relative/path", &["read"], false));
    let malformed =
        Refusal::InvalidTarget("the resource must be an absolute URI without a fragment".into());
    for value in ["urn:x#frag", "relative/path", "not a uri", "#"] {
        assert_eq!(err(&m, cc(Some("read"), &[value])), malformed, "{value}");
    }
    assert!(is_absolute_uri_without_fragment(
        "https://api.example.com/a?b=c"
    ));
    assert!(!is_absolute_uri_without_fragment(
        "https://api.example.com/a#b"
    ));
}
