//! SPEC §3: which scopes a client is granted and which audience its access token names.
//! A pure function of the model, the client and the request: no I/O, no clock.

use std::collections::BTreeSet;

use super::{ApiResource, Client, GrantType, Model, OFFLINE_ACCESS};
use crate::jwt::Alg;

/// Longest resource indicator accepted, and longest API resource name.
pub(crate) const MAX_RESOURCE_LEN: usize = 512;

/// What the token endpoint was asked for.
#[derive(Debug, Clone, Copy)]
pub struct TokenRequest<'a> {
    /// The grant: `client_credentials` may not ask for identity scopes or `offline_access`.
    pub grant: GrantType,
    /// The raw `scope` parameter, absent when not sent.
    pub scope: Option<&'a str>,
    /// Every `resource` value sent.
    pub resources: &'a [&'a str],
}

/// The outcome: what goes into the access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    /// The `aud` values, never empty.
    pub aud: Vec<String>,
    /// The `scope` values of the access token, in request order (`transaction:42` as sent).
    pub scopes: Vec<String>,
    /// Every scope granted, before cutting down to a resource (what the response reports
    /// and a refresh token would remember).
    pub granted: Vec<String>,
    /// `(claim, value)` pairs copied from parameterized scopes with a `parameter_claim`.
    pub parameter_claims: Vec<(String, String)>,
    /// The algorithms every resource in `aud` accepts; `None` means any.
    pub signing_algs: Option<BTreeSet<Alg>>,
}

/// Why the request is refused, with its RFC 6749 / RFC 8707 error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `invalid_scope`: a scope is unknown, not allowed, malformed or not for this grant.
    #[error("invalid_scope: {0}")]
    InvalidScope(String),
    /// `invalid_target`: a resource indicator is malformed, unknown, or does not fit the scopes.
    #[error("invalid_target: {0}")]
    InvalidTarget(String),
}

/// One requested scope, resolved against the model.
#[derive(Debug, Clone)]
struct Scope<'a> {
    /// As requested, e.g. `transaction:42`.
    raw: &'a str,
    kind: Kind<'a>,
}

#[derive(Debug, Clone)]
enum Kind<'a> {
    Identity,
    OfflineAccess,
    /// An API scope; `name` is the scope's name, `value` the parameter of a parameterized one.
    Api {
        name: &'a str,
        value: Option<&'a str>,
        claim: Option<&'a str>,
    },
}

impl Scope<'_> {
    fn api_name(&self) -> Option<&str> {
        match self.kind {
            Kind::Api { name, .. } => Some(name),
            _ => None,
        }
    }
}

/// Applies SPEC §3 rules 1–5 and the signing-algorithm restriction.
pub fn grant(model: &Model, client: &Client, req: &TokenRequest<'_>) -> Result<Granted, Refusal> {
    grant_within(model, client, req, None)
}

/// What a code or refresh token remembers of the authorize request (SPEC §3 rule 6).
#[derive(Debug, Clone, Copy)]
pub struct Remembered<'a> {
    /// Every scope granted at authorize.
    pub scopes: &'a [String],
    /// The `resource` values of the authorize request.
    pub resources: &'a [String],
}

/// SPEC §3 rule 6 at `/connect/authorize`: the scopes as rule 1 (with a user), and every
/// `resource` as rule 2; several may be sent. Returns the scopes granted and the resources,
/// each once, in request order.
pub fn authorize(
    model: &Model,
    client: &Client,
    scope: Option<&str>,
    resources: &[&str],
) -> Result<(Vec<String>, Vec<String>), Refusal> {
    let req = TokenRequest {
        grant: GrantType::AuthorizationCode,
        scope,
        resources,
    };
    let scopes = requested_scopes(model, client, &req)?;
    let mut kept: Vec<String> = Vec::new();
    for resource in resources {
        indicator(model, &scopes, &[resource])?;
        if !kept.iter().any(|r| r == resource) {
            kept.push((*resource).to_owned());
        }
    }
    Ok((scopes.iter().map(|s| s.raw.to_owned()).collect(), kept))
}

/// SPEC §3 rule 6 at the token endpoint (`authorization_code` and `refresh_token`): `scope`
/// may narrow what was remembered, never widen it; a `resource` must be one of the remembered
/// ones, or, when none was, a non-isolated resource the scopes reach. Without `resource`, the
/// audience is rule 4's, limited to the remembered resources when there are any.
pub fn redeem(
    model: &Model,
    client: &Client,
    grant: GrantType,
    remembered: Remembered<'_>,
    scope: Option<&str>,
    resources: &[&str],
) -> Result<Granted, Refusal> {
    let scope = match scope {
        Some(asked) => {
            if let Some(extra) = asked
                .split(' ')
                .find(|s| !s.is_empty() && !remembered.scopes.iter().any(|r| r == s))
            {
                return Err(Refusal::InvalidScope(format!(
                    "the scope {extra:?} was not granted; a token request may narrow the scopes, never widen them"
                )));
            }
            asked.to_owned()
        }
        None => remembered.scopes.join(" "),
    };
    if let [resource] = resources {
        if remembered.resources.is_empty() {
            if model
                .api_resource(resource)
                .is_some_and(|r| r.isolated && r.enabled)
            {
                return Err(Refusal::InvalidTarget(format!(
                    "the resource {resource:?} accepts only tokens for it alone and was not requested at authorize"
                )));
            }
        } else if !remembered.resources.iter().any(|r| r == resource) {
            return Err(Refusal::InvalidTarget(format!(
                "the resource {resource:?} was not requested at authorize"
            )));
        }
    }
    let req = TokenRequest {
        grant,
        scope: Some(&scope),
        resources,
    };
    let within = (!remembered.resources.is_empty()).then_some(remembered.resources);
    grant_within(model, client, &req, within)
}

/// What a user approves on the consent page (SPEC §6): each granted API scope paired with
/// each API it reaches — the authorize request's resources that list it, or, without any, the
/// enabled non-isolated resources that list it (rule 4's audience) — and each identity scope
/// and `offline_access` paired with `""`. A remembered consent covers a request only when it
/// holds every pair of it: consent for `read` at one API is not consent at another.
pub fn consent_pairs(
    model: &Model,
    scopes: &[String],
    resources: &[String],
) -> BTreeSet<(String, String)> {
    let mut pairs = BTreeSet::new();
    for scope in scopes {
        let Some(api_scope) = model.api_scope_of(scope) else {
            pairs.insert((scope.clone(), String::new()));
            continue;
        };
        let reached = model.listing(&api_scope.name).filter(|r| {
            r.enabled
                && if resources.is_empty() {
                    !r.isolated
                } else {
                    resources.contains(&r.name)
                }
        });
        for resource in reached {
            pairs.insert((scope.clone(), resource.name.clone()));
        }
    }
    pairs
}

/// [`grant`], with rule 4's audience limited to `within` when given.
fn grant_within(
    model: &Model,
    client: &Client,
    req: &TokenRequest<'_>,
    within: Option<&[String]>,
) -> Result<Granted, Refusal> {
    let scopes = requested_scopes(model, client, req)?;
    let indicator = indicator(model, &scopes, req.resources)?;
    let granted: Vec<String> = scopes.iter().map(|s| s.raw.to_owned()).collect();

    let (aud, kept): (Vec<&ApiResource>, Vec<&Scope<'_>>) = match indicator {
        // Rule 5: R alone; only the scopes R lists, plus offline_access.
        Some(resource) => {
            let kept = scopes
                .iter()
                .filter(|s| match s.kind {
                    Kind::Api { name, .. } => resource.lists(name),
                    Kind::OfflineAccess => true,
                    Kind::Identity => false,
                })
                .collect();
            (vec![resource], kept)
        }
        // Rule 4: every non-isolated resource reached; all scopes.
        None => {
            let reached: Vec<&ApiResource> = model
                .listing_any(scopes.iter().filter_map(|s| s.api_name()))
                .into_iter()
                .filter(|r| r.enabled && within.is_none_or(|w| w.contains(&r.name)))
                .collect();
            if !reached.is_empty() && reached.iter().all(|r| r.isolated) {
                let names: Vec<&str> = reached.iter().map(|r| r.name.as_str()).collect();
                return Err(Refusal::InvalidTarget(format!(
                    "a resource indicator is required: {} accepts only tokens minted for it alone",
                    names.join(", ")
                )));
            }
            let aud: Vec<&ApiResource> = reached.into_iter().filter(|r| !r.isolated).collect();
            let identity_only = scopes.iter().all(|s| s.api_name().is_none());
            if identity_only && req.grant != GrantType::ClientCredentials {
                // Only identity scopes: a token for the issuer's own userinfo endpoint.
                if let Some(issuer) = &model.identity_audience {
                    return Ok(Granted {
                        aud: vec![issuer.clone()],
                        scopes: granted.clone(),
                        granted,
                        parameter_claims: Vec::new(),
                        signing_algs: None,
                    });
                }
            }
            if aud.is_empty() && model.static_audience.is_none() {
                return Err(Refusal::InvalidTarget(
                    "the requested scopes belong to no API resource, so the token would have no audience".into(),
                ));
            }
            (aud, scopes.iter().collect())
        }
    };

    let signing_algs = signing_algs(&aud)?;
    let mut aud: Vec<String> = aud.iter().map(|r| r.name.clone()).collect();
    if indicator.is_none() {
        aud.extend(model.static_audience.clone());
    }
    let parameter_claims = kept
        .iter()
        .filter_map(|s| match s.kind {
            Kind::Api {
                value: Some(value),
                claim: Some(claim),
                ..
            } => Some((claim.to_owned(), value.to_owned())),
            _ => None,
        })
        .collect();
    Ok(Granted {
        aud,
        scopes: kept.iter().map(|s| s.raw.to_owned()).collect(),
        granted,
        parameter_claims,
        signing_algs,
    })
}

/// Rule 1: resolve, check and default the requested scopes.
fn requested_scopes<'a>(
    model: &'a Model,
    client: &'a Client,
    req: &TokenRequest<'a>,
) -> Result<Vec<Scope<'a>>, Refusal> {
    let Some(raw) = req.scope else {
        let scopes: Vec<Scope<'_>> = client
            .allowed_scopes
            .iter()
            .filter_map(|name| model.api_scopes.get(name))
            .filter(|s| !s.parameterized)
            .map(|s| Scope {
                raw: &s.name,
                kind: Kind::Api {
                    name: &s.name,
                    value: None,
                    claim: None,
                },
            })
            .collect();
        if scopes.is_empty() {
            return Err(Refusal::InvalidScope(
                "no scope was requested and the client is allowed no API scope".into(),
            ));
        }
        return Ok(scopes);
    };

    let mut scopes: Vec<Scope<'_>> = Vec::new();
    let mut seen_params = BTreeSet::new();
    for raw in raw.split(' ').filter(|s| !s.is_empty()) {
        if scopes.iter().any(|s| s.raw == raw) {
            continue;
        }
        let scope = resolve(model, client, raw)?;
        if req.grant == GrantType::ClientCredentials
            && matches!(scope.kind, Kind::Identity | Kind::OfflineAccess)
        {
            return Err(Refusal::InvalidScope(format!(
                "{raw:?} needs a user and cannot be requested with client_credentials"
            )));
        }
        if let Kind::Api {
            name,
            value: Some(_),
            ..
        } = scope.kind
        {
            if !seen_params.insert(name) {
                return Err(Refusal::InvalidScope(format!(
                    "the parameterized scope {name:?} may be requested with one value only"
                )));
            }
        }
        scopes.push(scope);
    }
    if scopes.is_empty() {
        return Err(Refusal::InvalidScope("the scope parameter is empty".into()));
    }
    Ok(scopes)
}

fn resolve<'a>(model: &'a Model, client: &Client, raw: &'a str) -> Result<Scope<'a>, Refusal> {
    if !crate::protocol::is_scope_token(raw) {
        return Err(Refusal::InvalidScope(
            "a scope holds a character RFC 6749 forbids".into(),
        ));
    }
    let not_allowed =
        || Refusal::InvalidScope(format!("the client is not allowed the scope {raw:?}"));
    if raw == OFFLINE_ACCESS {
        return if client.allow_offline_access {
            Ok(Scope {
                raw,
                kind: Kind::OfflineAccess,
            })
        } else {
            Err(not_allowed())
        };
    }
    if model.identity_resources.contains_key(raw) {
        return if client.allowed_scopes.contains(raw) {
            Ok(Scope {
                raw,
                kind: Kind::Identity,
            })
        } else {
            Err(not_allowed())
        };
    }
    if let Some(api) = model.api_scopes.get(raw) {
        if api.parameterized {
            return Err(Refusal::InvalidScope(format!(
                "the scope {raw:?} takes a value: request it as \"{raw}:<value>\""
            )));
        }
        return if client.allowed_scopes.contains(raw) {
            Ok(Scope {
                raw,
                kind: Kind::Api {
                    name: &api.name,
                    value: None,
                    claim: None,
                },
            })
        } else {
            Err(not_allowed())
        };
    }
    if let Some((name, value)) = raw.split_once(':') {
        if let Some(api) = model.api_scopes.get(name).filter(|s| s.parameterized) {
            if value.is_empty() {
                return Err(Refusal::InvalidScope(format!(
                    "the scope {raw:?} has an empty value"
                )));
            }
            return if client.allowed_scopes.contains(name) {
                Ok(Scope {
                    raw,
                    kind: Kind::Api {
                        name: &api.name,
                        value: Some(value),
                        claim: api.parameter_claim.as_deref(),
                    },
                })
            } else {
                Err(not_allowed())
            };
        }
    }
    Err(Refusal::InvalidScope(format!("unknown scope {raw:?}")))
}

/// Rules 2 and 3: at most one resource indicator, well-formed, naming an enabled API resource
/// that lists at least one requested scope.
fn indicator<'a>(
    model: &'a Model,
    scopes: &[Scope<'_>],
    resources: &[&str],
) -> Result<Option<&'a ApiResource>, Refusal> {
    let value = match resources {
        [] => return Ok(None),
        [one] => *one,
        _ => {
            return Err(Refusal::InvalidTarget(
                "the token endpoint takes at most one resource".into(),
            ))
        }
    };
    if value.len() > MAX_RESOURCE_LEN {
        return Err(Refusal::InvalidTarget(format!(
            "the resource is longer than {MAX_RESOURCE_LEN} characters"
        )));
    }
    if !is_absolute_uri_without_fragment(value) {
        return Err(Refusal::InvalidTarget(
            "the resource must be an absolute URI without a fragment".into(),
        ));
    }
    let resource = model
        .api_resource(value)
        .filter(|r| r.enabled)
        .ok_or_else(|| Refusal::InvalidTarget(format!("unknown resource {value:?}")))?;
    if !scopes
        .iter()
        .any(|s| s.api_name().is_some_and(|n| resource.lists(n)))
    {
        return Err(Refusal::InvalidTarget(format!(
            "the resource {value:?} lists none of the requested scopes"
        )));
    }
    Ok(Some(resource))
}

/// Whether `value` is an absolute URI (RFC 3986 §4.3) without a fragment.
pub(crate) fn is_absolute_uri_without_fragment(value: &str) -> bool {
    !value.contains('#') && url::Url::parse(value).is_ok()
}

/// The algorithms acceptable to every resource in `aud`; `None` when none restricts them.
fn signing_algs(aud: &[&ApiResource]) -> Result<Option<BTreeSet<Alg>>, Refusal> {
    let mut allowed: Option<BTreeSet<Alg>> = None;
    for resource in aud.iter().filter(|r| !r.allowed_signing_algs.is_empty()) {
        let algs: BTreeSet<Alg> = resource.allowed_signing_algs.iter().copied().collect();
        allowed = Some(match allowed {
            None => algs,
            Some(before) => before.intersection(&algs).copied().collect(),
        });
    }
    if allowed.as_ref().is_some_and(BTreeSet::is_empty) {
        let names: Vec<&str> = aud.iter().map(|r| r.name.as_str()).collect();
        return Err(Refusal::InvalidTarget(format!(
            "no signing algorithm is allowed by every one of {}",
            names.join(", ")
        )));
    }
    Ok(allowed)
}

#[cfg(test)]
mod tests;
