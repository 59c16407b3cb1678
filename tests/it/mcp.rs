//! SPEC §10: an MCP server behind the gateway, with a real recording upstream in its place.
//! `[routes.mcp]` rules pick the scope a JSON-RPC call needs by its method and tool name; the
//! body is forwarded unchanged; headers that disagree with it, bodies that are not JSON-RPC
//! and bodies over 1 MiB are refused before they reach the server.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use isogate::Role;
use serde_json::json;

use crate::servers::Upstream;
use crate::support::*;

/// The MCP server's canonical URL: its API resource's name.
const MCP: &str = "https://mcp.example.com/mcp";

fn config(upstream: &str) -> String {
    issuer_section("http://isogate.test")
        + &format!(
            r#"
[[api_scopes]]
name = "mcp"
[[api_scopes]]
name = "tools.call"
[[api_scopes]]
name = "invoices.delete"

[[api_resources]]
name = "{MCP}"
scopes = ["mcp", "tools.call", "invoices.delete"]
require_resource_indicator = true

[[api_resources]]
name = "urn:other"
scopes = ["mcp"]

[[clients]]
client_id = "client"
secrets = ["{SECRET_HASH}"]
allowed_grant_types = ["client_credentials"]
allowed_scopes = ["mcp", "tools.call", "invoices.delete"]

[proxy]
listen = "127.0.0.1:0"

[[routes]]
path_prefix = "/mcp"
upstream = "{upstream}"
resource = "{MCP}"
[routes.mcp]
"tools/call:delete_invoice" = ["invoices.delete"]
"tools/call" = ["tools.call"]
"*" = ["mcp"]

[admin]
listen = "127.0.0.1:0"
"#
        )
}

struct Mcp {
    isogate: Isogate,
    upstream: Upstream,
}

impl Mcp {
    async fn start() -> Self {
        let upstream = Upstream::start().await;
        let isogate = Isogate::start(&config(&upstream.url())).await;
        Mcp { isogate, upstream }
    }

    /// A token for the MCP server with `scope`.
    async fn token(&self, scope: &str) -> String {
        let form = [
            ("grant_type", "client_credentials"),
            ("scope", scope),
            ("resource", MCP),
        ];
        self.isogate.access_token(&form).await
    }

    /// POSTs `body` to /mcp as JSON with `token` and `headers`.
    async fn post(&self, token: &str, body: impl Into<Bytes>, headers: &[(&str, &str)]) -> Reply {
        let mut req = Request::post(format!("http://{}/mcp", self.isogate.addr(Role::Proxy)))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("authorization", format!("Bearer {token}"));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        send(req.body(Full::new(body.into())).unwrap()).await
    }
}

fn call(tool: &str) -> String {
    json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
           "params": {"name": tool, "arguments": {"id": "inv-1"}}})
    .to_string()
}

fn list() -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string()
}

/// The step-up challenge of a call short of scope: 403, `insufficient_scope`, the scope the
/// call needs and where the route's metadata is.
fn assert_step_up(reply: &Reply, scope: &str) {
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text());
    let challenge = reply.header("www-authenticate").expect("a challenge");
    for part in [
        "error=\"insufficient_scope\"".to_owned(),
        format!("scope=\"{scope}\""),
        "resource_metadata=\"http://".to_owned(),
        "/.well-known/oauth-protected-resource/mcp\"".to_owned(),
    ] {
        assert!(challenge.contains(&part), "{part} not in {challenge}");
    }
}

#[tokio::test]
async fn each_call_needs_the_scope_of_its_most_specific_rule() {
    let mcp = Mcp::start().await;
    let base = mcp.token("mcp").await;
    // "*": any method without a rule of its own.
    let reply = mcp.post(&base, list(), &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let seen = mcp.upstream.last();
    assert_eq!(
        seen.body,
        list().into_bytes(),
        "the body is forwarded unchanged"
    );
    assert_eq!(seen.target, "/mcp");
    // "tools/call": more than "*".
    assert_step_up(
        &mcp.post(&base, call("list_invoices"), &[]).await,
        "tools.call",
    );
    let tools = mcp.token("tools.call").await;
    assert_eq!(
        mcp.post(&tools, call("list_invoices"), &[]).await.status,
        StatusCode::OK
    );
    // "tools/call:delete_invoice": more than "tools/call".
    assert_step_up(
        &mcp.post(&tools, call("delete_invoice"), &[]).await,
        "invoices.delete",
    );
    let delete = mcp.token("invoices.delete").await;
    let reply = mcp.post(&delete, call("delete_invoice"), &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        mcp.upstream.last().body,
        call("delete_invoice").into_bytes()
    );
    // ...and the named rule is all it grants.
    assert_step_up(
        &mcp.post(&delete, call("list_invoices"), &[]).await,
        "tools.call",
    );
    // A batch needs every call's scope; the first call short of it is named.
    let batch = format!("[{}, {}]", list(), call("delete_invoice"));
    let both = mcp.token("mcp tools.call").await;
    assert_step_up(
        &mcp.post(&both, batch.clone(), &[]).await,
        "invoices.delete",
    );
    let all = mcp.token("mcp tools.call invoices.delete").await;
    assert_eq!(mcp.post(&all, batch, &[]).await.status, StatusCode::OK);
    // GET (the server's event stream) and DELETE (end of session) need "*".
    let proxy = mcp.isogate.addr(Role::Proxy);
    let url = format!("http://{proxy}/mcp");
    assert_eq!(
        with_bearer(Method::GET, &url, &base).await.status,
        StatusCode::OK
    );
    assert_eq!(
        with_bearer(Method::DELETE, &url, &base).await.status,
        StatusCode::OK
    );
    assert_eq!(
        mcp.upstream.count(),
        6,
        "no refused call reached the server"
    );

    let scrape = Scrape::of(&mcp.isogate).await;
    let refused = [
        ("role", "proxy"),
        ("route", "/mcp"),
        ("status", "403"),
        ("reason", "insufficient_scope"),
    ];
    assert_eq!(scrape.get("isogate_requests_total", &refused), 4.0);
}

#[tokio::test]
async fn the_token_must_be_minted_for_the_mcp_server_before_its_body_is_read() {
    let mcp = Mcp::start().await;
    // No token: the bare challenge MCP clients discover the authorization server from.
    let req = Request::post(format!("http://{}/mcp", mcp.isogate.addr(Role::Proxy)))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(list())))
        .unwrap();
    let reply = send(req).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let challenge = reply.header("www-authenticate").expect("a challenge");
    assert!(!challenge.contains("error="), "{challenge}");
    assert!(
        challenge.contains("resource_metadata=\"http://"),
        "{challenge}"
    );
    // What every call needs at least: what an MCP client then asks for (not every scope).
    assert!(challenge.contains("scope=\"mcp\""), "{challenge}");
    // A token for another resource, even with the scope every rule names, is not for it.
    let form = [
        ("grant_type", "client_credentials"),
        ("scope", "mcp"),
        ("resource", "urn:other"),
    ];
    let other = mcp.isogate.access_token(&form).await;
    let reply = mcp.post(&other, list(), &[]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    let challenge = reply.header("www-authenticate").unwrap();
    assert!(challenge.contains("invalid_token"), "{challenge}");
    assert!(challenge.contains("scope=\"mcp\""), "{challenge}");
    // Not even a body that is no JSON-RPC is looked at without a fitting token.
    let reply = mcp.post(&other, "not json", &[]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(mcp.upstream.count(), 0);
}

#[tokio::test]
async fn bodies_and_headers_that_do_not_fit_are_refused_and_never_forwarded() {
    let mcp = Mcp::start().await;
    let all = mcp.token("mcp tools.call invoices.delete").await;
    let refusals: Vec<(&str, Reply, StatusCode, &str)> = vec![
        (
            "not JSON",
            mcp.post(&all, "{nope", &[]).await,
            StatusCode::BAD_REQUEST,
            "mcp_invalid",
        ),
        (
            "not JSON-RPC 2.0",
            mcp.post(&all, r#"{"method":"tools/list","id":1}"#, &[])
                .await,
            StatusCode::BAD_REQUEST,
            "mcp_invalid",
        ),
        (
            "an empty batch",
            mcp.post(&all, "[]", &[]).await,
            StatusCode::BAD_REQUEST,
            "mcp_invalid",
        ),
        (
            "tools/call without a name",
            mcp.post(
                &all,
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#,
                &[],
            )
            .await,
            StatusCode::BAD_REQUEST,
            "mcp_invalid",
        ),
        (
            "Mcp-Method disagrees",
            mcp.post(
                &all,
                call("delete_invoice"),
                &[("mcp-method", "tools/list")],
            )
            .await,
            StatusCode::BAD_REQUEST,
            "mcp_header_mismatch",
        ),
        (
            "Mcp-Name disagrees",
            mcp.post(
                &all,
                call("delete_invoice"),
                &[("mcp-name", "list_invoices")],
            )
            .await,
            StatusCode::BAD_REQUEST,
            "mcp_header_mismatch",
        ),
        (
            "over 1 MiB",
            mcp.post(
                &all,
                format!("[{}{}]", list(), format!(", {}", list()).repeat(30_000)),
                &[],
            )
            .await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "mcp_too_large",
        ),
    ];
    let scrape = Scrape::of(&mcp.isogate).await;
    let mut expected = std::collections::BTreeMap::<(u16, &str), f64>::new();
    for (what, reply, status, reason) in &refusals {
        assert_eq!(reply.status, *status, "{what}: {}", reply.text());
        assert_eq!(reply.json()["error"], "invalid_request", "{what}");
        assert!(reply.json()["error_description"].is_string(), "{what}");
        *expected.entry((status.as_u16(), reason)).or_default() += 1.0;
    }
    for ((status, reason), count) in expected {
        let labels = [
            ("role", "proxy"),
            ("route", "/mcp"),
            ("status", &status.to_string()),
            ("reason", reason),
        ];
        assert_eq!(
            scrape.get("isogate_requests_total", &labels),
            count,
            "{reason}"
        );
    }
    // Another content type is refused too; headers that agree pass.
    let req = Request::post(format!("http://{}/mcp", mcp.isogate.addr(Role::Proxy)))
        .header("content-type", "text/plain")
        .header("authorization", format!("Bearer {all}"))
        .body(Full::new(Bytes::from(list())))
        .unwrap();
    assert_eq!(send(req).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        mcp.upstream.count(),
        0,
        "no refused body reached the server"
    );
    let agree = [("mcp-method", "tools/call"), ("mcp-name", "delete_invoice")];
    let reply = mcp.post(&all, call("delete_invoice"), &agree).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(mcp.upstream.last().headers["mcp-name"], "delete_invoice");
}

#[tokio::test]
async fn the_metadata_document_lists_the_scopes_the_rules_name() {
    let mcp = Mcp::start().await;
    let url = format!(
        "http://{}/.well-known/oauth-protected-resource/mcp",
        mcp.isogate.addr(Role::Proxy)
    );
    let reply = get(&url).await;
    assert_eq!(reply.status, StatusCode::OK);
    let document = reply.json();
    assert_eq!(document["resource"], MCP);
    assert_eq!(
        document["scopes_supported"],
        json!(["invoices.delete", "mcp", "tools.call"])
    );
    assert_eq!(
        document["authorization_servers"],
        json!(["http://isogate.test"])
    );
}
