//! `[proxy]` and `[[routes]]`.

use super::*;

pub(super) fn proxy_config(v: &mut V<'_>, proxy: S<raw::Proxy>) -> ProxyConfig {
    let raw::Proxy {
        listen,
        clock_skew,
        upstream_timeout,
        tls,
        trusted_issuers,
        max_connections,
        idle_timeout,
        request_header_timeout,
        dpop_max_age,
        public_url,
    } = proxy.into_inner();
    let public_url = public_url.and_then(|url| {
        let origin = url::Url::parse(url.get_ref()).ok().filter(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host().is_some()
                && u.username().is_empty()
                && u.password().is_none()
                && u.path() == "/"
                && u.query().is_none()
                && u.fragment().is_none()
        });
        if origin.is_none() {
            v.at(
                &url,
                "proxy.public_url",
                "must be an http(s) origin without path, query or user, e.g. \"https://api.example.com\"",
            );
        }
        origin.map(|u| u.origin().ascii_serialization())
    });
    let tls = v.tls(tls, "proxy.tls");
    let trusted_issuers = trusted_issuers
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let raw::TrustedIssuer {
                issuer,
                jwks_uri,
                require_typ,
                wait_for_keys,
            } = t.into_inner();
            if url::Url::parse(issuer.get_ref())
                .map_or(true, |u| !matches!(u.scheme(), "http" | "https"))
            {
                v.at(
                    &issuer,
                    format!("proxy.trusted_issuers[{i}].issuer"),
                    "must be an http(s) URL",
                );
            }
            if let Some(uri) = &jwks_uri {
                if url::Url::parse(uri.get_ref())
                    .map_or(true, |u| !matches!(u.scheme(), "http" | "https"))
                {
                    v.at(
                        uri,
                        format!("proxy.trusted_issuers[{i}].jwks_uri"),
                        "must be an http(s) URL",
                    );
                }
            }
            TrustedIssuer {
                issuer: issuer.into_inner(),
                jwks_uri: jwks_uri.map(S::into_inner),
                require_typ: require_typ.unwrap_or(true),
                wait_for_keys: wait_for_keys.unwrap_or(true),
            }
        })
        .collect();
    ProxyConfig {
        listen: v.socket(&listen, "proxy.listen"),
        clock_skew: v.duration(&clock_skew, "proxy.clock_skew", DEFAULT_CLOCK_SKEW),
        dpop_max_age: v.duration(
            &dpop_max_age,
            "proxy.dpop_max_age",
            crate::dpop::DEFAULT_MAX_AGE,
        ),
        public_url,
        upstream_timeout: v.duration(
            &upstream_timeout,
            "proxy.upstream_timeout",
            DEFAULT_UPSTREAM_TIMEOUT,
        ),
        trusted_issuers,
        tls,
        limits: v.limits(
            "proxy",
            max_connections,
            idle_timeout,
            request_header_timeout,
            DEFAULT_MAX_CONNECTIONS,
        ),
    }
}

/// `[routes.mcp]` of the route `key` (SPEC §10): each rule `"*"`, a JSON-RPC method, or
/// `tools/call` / `prompts/get` with `:name`; each scope one that `resource` lists.
fn mcp_rules(
    v: &mut V<'_>,
    rules: S<BTreeMap<String, Vec<S<String>>>>,
    key: &str,
    resource: &str,
    api: Option<&ApiResource>,
) -> crate::proxy::mcp::Rules {
    let span = rules.span();
    let rules = rules.into_inner();
    if rules.is_empty() {
        v.report(
            span.clone(),
            format!("{key}.mcp"),
            "needs at least one rule, e.g. \"*\" = [\"mcp\"]",
        );
    }
    let mut out = BTreeMap::new();
    for (rule, list) in rules {
        let (method, name) = match rule.split_once(':') {
            Some((method, name)) => (method, Some(name)),
            None => (rule.as_str(), None),
        };
        let visible = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
        let problem = if !visible(method) || name.is_some_and(|n| !visible(n)) {
            Some("a rule is \"*\", a JSON-RPC method (e.g. \"tools/call\") or \"tools/call:<tool>\" / \"prompts/get:<prompt>\", without spaces")
        } else if method == "*" && name.is_some() {
            Some("\"*\" takes no name")
        } else if name.is_some() && !crate::proxy::mcp::NAMED.contains(&method) {
            Some("only tools/call and prompts/get rules name a tool or prompt (\"tools/call:<tool>\")")
        } else {
            None
        };
        if let Some(problem) = problem {
            v.report(span.clone(), format!("{key}.mcp.{rule:?}"), problem);
        }
        if list.is_empty() {
            v.report(
                span.clone(),
                format!("{key}.mcp.{rule:?}"),
                "names no scope: no token could make this call",
            );
        }
        unlisted_scopes(v, &list, &format!("{key}.mcp.{rule:?}"), resource, api);
        out.insert(rule, list.into_iter().map(S::into_inner).collect());
    }
    crate::proxy::mcp::Rules::new(out)
}

/// Reports each scope of the rule at `key` that `api` (the route's `resource`) does not list.
fn unlisted_scopes(
    v: &mut V<'_>,
    scopes: &[S<String>],
    key: &str,
    resource: &str,
    api: Option<&ApiResource>,
) {
    for (j, s) in scopes.iter().enumerate() {
        if api.is_some_and(|a| !a.lists(s.get_ref())) {
            v.at(
                s,
                format!("{key}[{j}]"),
                format!(
                    "the resource {resource:?} does not list the scope {:?}",
                    s.get_ref()
                ),
            );
        }
    }
}

/// Whether `prefix` is in the normal form the gateway matches against, and made only of
/// unreserved characters: a prefix with other characters could be dodged with a
/// percent-escape that the gateway keeps and the upstream decodes.
pub(super) fn is_normal_prefix(prefix: &str) -> bool {
    prefix.starts_with('/')
        && !prefix.contains("//")
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'.' | b'_' | b'~'))
        && !prefix.split('/').any(|seg| seg == "." || seg == "..")
}

pub(super) fn route_configs(
    v: &mut V<'_>,
    entries: Vec<S<raw::Route>>,
    model: &Model,
    has_proxy: bool,
) -> Vec<Route> {
    let mut seen = BTreeSet::new();
    // Routes mostly share a few upstreams: each is parsed once, and shared.
    let mut upstreams: std::collections::HashMap<String, Option<std::sync::Arc<Upstream>>> =
        std::collections::HashMap::new();
    // Kept for the life of the configuration: no room to spare (a grown Vec holds up to twice).
    let mut out = Vec::with_capacity(entries.len());
    let listed = !entries.is_empty();
    for (i, entry) in entries.into_iter().enumerate() {
        let span = entry.span();
        let raw::Route {
            path_prefix,
            host,
            upstream,
            resource,
            scopes,
            mcp,
            strip_authorization,
            keep_headers,
        } = entry.into_inner();
        let key = format!("routes[{i}]");
        if !has_proxy {
            v.report(
                span.clone(),
                key.clone(),
                "[[routes]] need a [proxy] section",
            );
        }
        if !is_normal_prefix(path_prefix.get_ref()) {
            v.at(&path_prefix, format!("{key}.path_prefix"), "must start with '/' and hold only letters, digits, '-', '.', '_', '~' and single '/' (no '.' or '..' segments)");
        }
        let prefix = match path_prefix.get_ref().trim_end_matches('/') {
            "" => "/".to_owned(),
            p => p.to_owned(),
        };
        let host_value = host.as_ref().and_then(|h| {
            let parsed = crate::config::Host::of(h.get_ref());
            if parsed.is_none() {
                v.at(h, format!("{key}.host"), "not a host name or bracketed IP address (e.g. \"api.example.com\" or \"[::1]\")");
            }
            parsed
        });
        if !seen.insert((host_value.clone(), prefix.clone())) {
            v.at(
                &path_prefix,
                format!("{key}.path_prefix"),
                "another route has the same host and path_prefix",
            );
        }
        let parsed = upstreams
            .entry(upstream.get_ref().clone())
            .or_insert_with_key(|text| Upstream::parse(text).map(std::sync::Arc::new))
            .clone();
        if parsed.is_none() {
            v.at(
                &upstream,
                format!("{key}.upstream"),
                "must be an http(s) origin without path, e.g. \"http://127.0.0.1:9001\"",
            );
        }
        let api = model.api_resource(resource.get_ref());
        if api.is_none() {
            v.at(
                &resource,
                format!("{key}.resource"),
                format!(
                    "no [[api_resources]] entry is named {:?}",
                    resource.get_ref()
                ),
            );
        }
        if let (Some(_), Some(mcp)) = (&scopes, &mcp) {
            v.report(
                mcp.span(),
                format!("{key}.mcp"),
                "[routes.mcp] replaces [routes.scopes] for the route: keep one of the two",
            );
        }
        let mcp = mcp.map(|rules| mcp_rules(v, rules, &key, resource.get_ref(), api));
        let mut methods = BTreeMap::new();
        if let Some(scopes) = scopes {
            for (method, list) in scopes.into_inner() {
                let method_ok = method == "*"
                    || (!method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase()));
                if !method_ok {
                    v.report(
                        span.clone(),
                        format!("{key}.scopes.{method}"),
                        "a method must be upper case (e.g. GET) or \"*\"",
                    );
                }
                let at = format!("{key}.scopes.{method}");
                unlisted_scopes(v, &list, &at, resource.get_ref(), api);
                methods.insert(method, list.into_iter().map(S::into_inner).collect());
            }
        }
        let keep_headers = keep_headers
            .iter()
            .enumerate()
            .filter_map(|(j, name)| {
                let lower = name.get_ref().to_ascii_lowercase();
                let known = crate::protocol::REWRITING.contains(&lower.as_str());
                if !known {
                    v.at(
                        name,
                        format!("{key}.keep_headers[{j}]"),
                        "only X-Original-URL, X-Rewrite-URL, X-HTTP-Method-Override, X-HTTP-Method and X-Method-Override can be kept; isogate's own headers (x-isogate-*, x-forwarded-*, forwarded) never are",
                    );
                }
                known.then(|| http::HeaderName::from_bytes(lower.as_bytes()).ok())?
            })
            .collect();
        // Reported above; the file is refused.
        let Some(upstream) = parsed else {
            continue;
        };
        out.push(Route {
            path_prefix: prefix,
            host: host_value,
            upstream,
            resource: resource.into_inner(),
            scopes: methods,
            mcp,
            strip_authorization,
            keep_headers,
        });
    }
    if has_proxy && !listed {
        v.problems.push(v.lines.problem(
            None,
            "routes",
            "the gateway needs at least one [[routes]] entry",
        ));
    }
    out
}
