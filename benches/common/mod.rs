//! What the benches share. Each file in benches/ is its own crate; they include this one, and
//! each uses only some of it.
#![allow(dead_code)]

use std::time::Duration;

use isogate::jwt::Alg;

/// The criterion settings of the micro-benches: 1 s of warm-up, 3 s of measurement, 50
/// samples.
pub(crate) fn criterion() -> criterion::Criterion {
    criterion::Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}

/// A cut-down copy of the example resource file (invoices isolated, products shared, client
/// `client` with secret `secret`) with one signing key of `alg`, created in the bench's folder on
/// first parse.
pub(crate) fn resource_file(alg: Alg) -> String {
    format!(
        r#"
[issuer]
listen = "127.0.0.1:0"
issuer = "http://127.0.0.1:5000"
access_token_lifetime = "1h"

[[issuer.signing_keys]]
file = "keys/{alg}.pem"
alg = "{alg}"
generate_if_missing = true

[[api_scopes]]
name = "read"

[[api_scopes]]
name = "write"

[[api_resources]]
name = "urn:invoices"
scopes = ["read", "write"]
require_resource_indicator = true

[[api_resources]]
name = "urn:products"
scopes = ["read", "write"]

[[clients]]
client_id = "client"
secrets = ["sha256:K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols="]
allowed_grant_types = ["client_credentials"]
allowed_scopes = ["read", "write"]
"#
    )
}

/// SHA-256 of `secret`, as `hash-secret` writes it.
pub(crate) const SECRET_HASH: &str = "sha256:K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols=";

/// The scale benches' resource file (BENCHMARKS.md, "Scale"): `n` API resources `urn:api-i`,
/// each listing its own scope `scope-i`, `n` clients `client-i` (secret `secret`) allowed that
/// scope, and `n` routes `/api-i` to that resource.
pub(crate) fn scale_file(n: usize) -> String {
    let mut file = String::from(
        r#"
[issuer]
listen = "127.0.0.1:0"
issuer = "http://127.0.0.1:5000"

[[issuer.signing_keys]]
file = "keys/es256.pem"
alg = "ES256"
generate_if_missing = true

[proxy]
listen = "127.0.0.1:0"
"#,
    );
    for i in 0..n {
        file.push_str(&format!(
            r#"
[[api_scopes]]
name = "scope-{i}"

[[api_resources]]
name = "urn:api-{i}"
scopes = ["scope-{i}"]

[[clients]]
client_id = "client-{i}"
secrets = ["{SECRET_HASH}"]
allowed_grant_types = ["client_credentials"]
allowed_scopes = ["scope-{i}"]

[[routes]]
path_prefix = "/api-{i}"
upstream = "http://127.0.0.1:9001"
resource = "urn:api-{i}"
"#
        ));
    }
    file
}
