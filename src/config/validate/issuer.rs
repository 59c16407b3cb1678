//! `[issuer]` and its signing keys.

use super::*;

pub(super) fn issuer_config(
    v: &mut V<'_>,
    issuer: S<raw::Issuer>,
    missing_keys: MissingKeys,
    model: &mut Model,
) -> IssuerConfig {
    let span = issuer.span();
    let raw::Issuer {
        listen,
        issuer: iss,
        access_token_lifetime,
        emit_static_audience,
        data_dir,
        tls,
        signing_keys,
        max_connections,
        idle_timeout,
        request_header_timeout,
        request_body_timeout,
        dpop_max_age,
        registration,
    } = issuer.into_inner();
    let registration = registration.map(|r| registration_config(v, r, model));
    let limits = v.limits(
        "issuer",
        max_connections,
        idle_timeout,
        request_header_timeout,
        DEFAULT_MAX_CONNECTIONS,
    );
    let request_body_timeout = v.duration(
        &request_body_timeout,
        "issuer.request_body_timeout",
        DEFAULT_REQUEST_BODY_TIMEOUT,
    );
    let listen = v.socket(&listen, "issuer.listen");
    let base_path = match url::Url::parse(iss.get_ref()) {
        Ok(url)
            if matches!(url.scheme(), "http" | "https")
                && url.query().is_none()
                && url.fragment().is_none() =>
        {
            url.path().trim_end_matches('/').to_owned()
        }
        _ => {
            v.at(
                &iss,
                "issuer.issuer",
                "must be an http(s) URL without query or fragment, e.g. \"https://id.example.com\"",
            );
            String::new()
        }
    };
    let access_token_lifetime = v.duration(
        &access_token_lifetime,
        "issuer.access_token_lifetime",
        DEFAULT_ACCESS_TOKEN_LIFETIME,
    );
    let data_dir = v.path(data_dir.as_ref().map_or("data", |d| d.get_ref()));
    let tls = v.tls(tls, "issuer.tls");
    let iss = iss.into_inner();
    let issuer_resources = format!("{}/resources", iss.trim_end_matches('/'));
    model.identity_audience = Some(issuer_resources.clone());
    if emit_static_audience {
        model.static_audience = Some(issuer_resources);
    }

    let mut keys = Vec::new();
    let mut kids = BTreeSet::new();
    let mut signers = 0;
    let mut keys_to_generate = 0;
    // A key that will sign RS256: what OpenID Connect requires of ID tokens.
    let mut rs256_signer = false;
    let mut key_files = Vec::new();
    for (i, key) in signing_keys.into_iter().enumerate() {
        let raw::SigningKey {
            file,
            alg,
            kid,
            generate_if_missing,
            retired,
        } = key.into_inner();
        let alg_value = match alg.get_ref().parse::<Alg>() {
            Ok(a) => a,
            Err(e) => {
                v.at(&alg, format!("issuer.signing_keys[{i}].alg"), e.to_string());
                continue;
            }
        };
        if !retired {
            signers += 1;
            rs256_signer |= alg_value == Alg::RS256;
        }
        let path = v.path(file.get_ref());
        key_files.push(path.clone());
        let file_key = format!("issuer.signing_keys[{i}].file");
        if generate_if_missing && !path.exists() {
            match missing_keys {
                MissingKeys::Accept => {
                    keys_to_generate += 1;
                    continue;
                }
                MissingKeys::Refuse => {
                    v.at(
                        &file,
                        file_key,
                        format!(
                            "the key file {} is missing; generate_if_missing creates keys at first start only, so restore it (or remove the key from the file, or restart to generate a new one)",
                            path.display()
                        ),
                    );
                    continue;
                }
                MissingKeys::Generate => {}
            }
            if let Err(e) = crate::jwt::generate_file(&path, alg_value) {
                v.at(&file, file_key, e.to_string());
                continue;
            }
            tracing::info!(file = %path.display(), alg = %alg_value, "generated a new signing key");
        }
        if let Some(kid) = kid.as_ref().filter(|k| k.get_ref().is_empty()) {
            v.at(
                kid,
                format!("issuer.signing_keys[{i}].kid"),
                "must not be empty",
            );
        }
        match SigningKey::from_file(&path, alg_value, kid.map(S::into_inner), retired) {
            Ok(key) => {
                if !kids.insert(key.kid.clone()) {
                    v.at(
                        &file,
                        format!("issuer.signing_keys[{i}]"),
                        format!("duplicate kid {:?}", key.kid),
                    );
                }
                keys.push(key);
            }
            Err(e) => v.at(&file, file_key, e.to_string()),
        }
    }
    if signers == 0 {
        v.report(
            span.clone(),
            "issuer.signing_keys",
            "the token service needs at least one signing key that is not retired",
        );
    }
    if model.identity_resources.contains_key("openid") && !rs256_signer {
        v.report(
            span,
            "issuer.signing_keys",
            "the openid scope makes this an OpenID Connect provider, whose ID tokens must be \
             RS256 (OpenID Connect Discovery requires it): add a [[issuer.signing_keys]] entry \
             with alg = \"RS256\" that is not retired",
        );
    }
    IssuerConfig {
        listen,
        issuer: iss,
        base_path,
        access_token_lifetime,
        data_dir,
        keys: KeySet::new(keys),
        keys_to_generate,
        key_files,
        tls,
        limits,
        request_body_timeout,
        dpop_max_age: v.duration(
            &dpop_max_age,
            "issuer.dpop_max_age",
            crate::dpop::DEFAULT_MAX_AGE,
        ),
        registration,
    }
}

/// `[issuer.registration]`: what a client that registers itself may ask for.
fn registration_config(
    v: &mut V<'_>,
    registration: S<raw::Registration>,
    model: &Model,
) -> RegistrationConfig {
    let span = registration.span();
    let raw::Registration {
        initial_access_token,
        allowed_scopes,
        allowed_grant_types,
        client_id_metadata_documents,
        allow_private_addresses,
    } = registration.into_inner();
    let key = "issuer.registration";
    let initial_access_token = initial_access_token.and_then(|token| {
        SecretHash::parse(token.get_ref())
            .map_err(|e| v.at(&token, format!("{key}.initial_access_token"), e.to_string()))
            .ok()
    });
    let scopes_key = format!("{key}.allowed_scopes");
    let offline = "to clients that register refresh_token";
    v.allowed_scopes(&allowed_scopes, &scopes_key, model, offline);
    let grant_types = match allowed_grant_types {
        None => [GrantType::AuthorizationCode, GrantType::RefreshToken].into(),
        Some(listed) => {
            if listed.is_empty() {
                v.report(
                    span.clone(),
                    format!("{key}.allowed_grant_types"),
                    "a registered client needs at least one grant type to be of use",
                );
            }
            v.grant_types(&listed, &format!("{key}.allowed_grant_types"))
        }
    };
    if allow_private_addresses && !client_id_metadata_documents {
        v.report(
            span,
            format!("{key}.allow_private_addresses"),
            "applies to client ID metadata documents, which are off",
        );
    }
    RegistrationConfig {
        initial_access_token,
        allowed_scopes: allowed_scopes.into_iter().map(S::into_inner).collect(),
        allowed_grant_types: grant_types,
        client_id_metadata_documents,
        allow_private_addresses,
    }
}
