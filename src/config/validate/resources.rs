//! Identity resources, API scopes and API resources.

use super::*;

use crate::protocol::is_scope_token;

pub(super) fn identity(
    v: &mut V<'_>,
    entries: Vec<S<raw::IdentityResource>>,
    model: &mut Model,
    names: &mut BTreeSet<String>,
) {
    for (i, entry) in entries.into_iter().enumerate() {
        let raw::IdentityResource {
            name,
            display_name,
            user_claims,
        } = entry.into_inner();
        let key = format!("identity_resources[{i}].name");
        if !is_scope_token(name.get_ref()) || name.get_ref() == OFFLINE_ACCESS {
            v.at(&name, &key, "not a usable scope name (no spaces, quotes or backslashes; offline_access is reserved)");
        }
        v.unique(names, &name, key, "scope name");
        let name = name.into_inner();
        model.identity_resources.insert(
            name.clone(),
            IdentityResource {
                name,
                display_name,
                user_claims,
            },
        );
    }
}

pub(super) fn scopes(
    v: &mut V<'_>,
    entries: Vec<S<raw::ApiScope>>,
    model: &mut Model,
    names: &mut BTreeSet<String>,
) {
    for (i, entry) in entries.into_iter().enumerate() {
        let raw::ApiScope {
            name,
            display_name,
            user_claims,
            parameterized,
            parameter_claim,
        } = entry.into_inner();
        let key = format!("api_scopes[{i}].name");
        if !is_scope_token(name.get_ref()) || name.get_ref() == OFFLINE_ACCESS {
            v.at(&name, &key, "not a usable scope name (no spaces, quotes or backslashes; offline_access is reserved)");
        } else if parameterized && name.get_ref().contains(':') {
            v.at(&name, &key, "a parameterized scope's name may not contain ':' (it is requested as \"name:value\")");
        }
        v.unique(names, &name, key, "scope name");
        if let Some(claim) = &parameter_claim {
            let key = format!("api_scopes[{i}].parameter_claim");
            if !parameterized {
                v.at(
                    claim,
                    key,
                    "only a parameterized scope has a parameter claim",
                );
            } else if crate::jwt::RESERVED_CLAIMS.contains(&claim.get_ref().as_str()) {
                v.at(
                    claim,
                    key,
                    format!("{:?} is a claim isogate sets itself", claim.get_ref()),
                );
            }
        }
        let name = name.into_inner();
        model.api_scopes.insert(
            name.clone(),
            ApiScope {
                name,
                display_name,
                user_claims,
                parameterized,
                parameter_claim: parameter_claim.map(S::into_inner),
            },
        );
    }
    // Built again in one go, which fills each node (see `clients::client_configs`).
    model.api_scopes = std::mem::take(&mut model.api_scopes).into_iter().collect();
}

pub(super) fn apis(
    v: &mut V<'_>,
    entries: Vec<S<raw::ApiResource>>,
    model: &mut Model,
    issuer: Option<&IssuerConfig>,
) {
    let mut names = BTreeSet::new();
    // Kept for the life of the configuration: no room to spare (a grown Vec holds up to twice).
    model.api_resources.reserve_exact(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let raw::ApiResource {
            name,
            display_name,
            scopes,
            require_resource_indicator,
            enabled,
            user_claims,
            allowed_signing_algs,
            secrets,
            require_dpop,
        } = entry.into_inner();
        let key = format!("api_resources[{i}]");
        if name.get_ref().len() > MAX_RESOURCE_LEN
            || !is_absolute_uri_without_fragment(name.get_ref())
        {
            v.at(&name, format!("{key}.name"), format!("must be an absolute URI without fragment, at most {MAX_RESOURCE_LEN} characters (e.g. \"urn:invoices\" or \"https://api.example.com/invoices\")"));
        }
        v.unique(&mut names, &name, Field(&key, "name"), "API resource");
        for (j, scope) in scopes.iter().enumerate() {
            if !model.api_scopes.contains_key(scope.get_ref()) {
                v.at(
                    scope,
                    format!("{key}.scopes[{j}]"),
                    format!("no [[api_scopes]] entry is named {:?}", scope.get_ref()),
                );
            }
        }
        let mut algs = Vec::new();
        for (j, alg) in allowed_signing_algs.iter().enumerate() {
            match alg.get_ref().parse::<Alg>() {
                Ok(a) => algs.push(a),
                Err(e) => v.at(
                    alg,
                    format!("{key}.allowed_signing_algs[{j}]"),
                    e.to_string(),
                ),
            }
        }
        if let (Some(issuer), Some(first)) = (issuer, allowed_signing_algs.first()) {
            let loaded = issuer.keys.all();
            // Keys still to be generated are not loaded; only judge when all are there.
            if !loaded.is_empty() && issuer.keys.signer(|a| algs.contains(&a)).is_none() {
                v.at(
                    first,
                    format!("{key}.allowed_signing_algs"),
                    "no signing key that is not retired has one of these algorithms",
                );
            }
        }
        let secrets = v.secrets(&secrets, &Field(&key, "secrets"));
        model.api_resources.push(ApiResource {
            name: name.into_inner(),
            display_name,
            scopes: scopes.into_iter().map(S::into_inner).collect(),
            isolated: require_resource_indicator,
            enabled: enabled.unwrap_or(true),
            user_claims,
            allowed_signing_algs: algs,
            secrets,
            require_dpop,
        });
    }
}
