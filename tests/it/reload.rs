//! Hot reload (SPEC §5) on a running server: every way files get replaced, rejected files,
//! key rotation, and traffic during reloads. Tests wait for the published reload status.

use std::path::Path;

use http::StatusCode;
use isogate::Role;

use crate::servers::Upstream;
use crate::support::*;

/// The seed with a gateway in front of `upstream`; `client_scopes` replaces the client's
/// allowed scopes so that a reload is visible in the tokens it gets.
fn config(upstream: &str, client_scopes: &str, extra: &str) -> String {
    issuer_section("http://isogate.test")
        + &SEED.replace("allowed_scopes = [\"read\", \"write\", \"transaction\"]", &format!("allowed_scopes = {client_scopes}"))
        + extra
        + &format!(
            "\n[proxy]\nlisten = \"127.0.0.1:0\"\n\n[[routes]]\npath_prefix = \"/products\"\nupstream = \"{upstream}\"\nresource = \"urn:products\"\n"
        )
}

async fn scope_granted(isogate: &Isogate) -> String {
    let reply = isogate
        .token(&[
            ("grant_type", "client_credentials"),
            ("resource", "urn:products"),
        ])
        .await;
    reply.json()["scope"].as_str().unwrap_or("").to_owned()
}

#[tokio::test]
async fn atomic_rename_and_in_place_write_are_both_applied() {
    let upstream = Upstream::start().await;
    let isogate = Isogate::start(&config(&upstream.url(), "[\"read\", \"write\"]", "")).await;
    assert_eq!(scope_granted(&isogate).await, "read write");
    let path = isogate.path("isogate.toml");

    write_atomically(&path, &config(&upstream.url(), "[\"read\"]", ""));
    let status = isogate.reloaded(|s| s.applied == 1).await;
    assert_eq!(status.generation, 2);
    assert_eq!(scope_granted(&isogate).await, "read");

    std::fs::write(&path, config(&upstream.url(), "[\"write\"]", "")).unwrap();
    isogate.reloaded(|s| s.applied == 2).await;
    assert_eq!(scope_granted(&isogate).await, "write");
}

#[cfg(unix)]
#[tokio::test]
async fn a_configmap_symlink_swap_is_applied() {
    use std::os::unix::fs::symlink;
    let upstream = Upstream::start().await;
    // Kubernetes' layout: isogate.toml -> ..data/isogate.toml, ..data -> ..<timestamp>.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("..2026_11_23_a")).unwrap();
    std::fs::write(
        d.join("..2026_11_23_a/isogate.toml"),
        config(&upstream.url(), "[\"read\", \"write\"]", ""),
    )
    .unwrap();
    symlink("..2026_11_23_a", d.join("..data")).unwrap();
    symlink("..data/isogate.toml", d.join("isogate.toml")).unwrap();
    let isogate = Isogate::start_existing(dir, "").await;
    assert_eq!(scope_granted(&isogate).await, "read write");

    // The kubelet's swap: a new timestamped folder, a new ..data link renamed over the old one.
    std::fs::create_dir(d_path(&isogate).join("..2026_11_23_b")).unwrap();
    std::fs::write(
        d_path(&isogate).join("..2026_11_23_b/isogate.toml"),
        config(&upstream.url(), "[\"read\"]", ""),
    )
    .unwrap();
    symlink("..2026_11_23_b", d_path(&isogate).join("..data_tmp")).unwrap();
    std::fs::rename(
        d_path(&isogate).join("..data_tmp"),
        d_path(&isogate).join("..data"),
    )
    .unwrap();
    isogate.reloaded(|s| s.applied == 1).await;
    assert_eq!(scope_granted(&isogate).await, "read");
}

fn d_path(isogate: &Isogate) -> &Path {
    isogate.dir.path()
}

#[tokio::test]
async fn broken_and_invalid_files_are_rejected_whole_and_the_old_config_serves() {
    let upstream = Upstream::start().await;
    let isogate = Isogate::start(&config(&upstream.url(), "[\"read\", \"write\"]", "")).await;
    let path = isogate.path("isogate.toml");

    write_atomically(&path, "[issuer\nthis is not toml");
    let status = isogate.reloaded(|s| s.rejected == 1).await;
    let error = status.last_error.as_deref().unwrap();
    assert!(
        error.contains("2 problems"),
        "every syntax error at once: {error}"
    );
    assert!(
        error.contains("isogate.toml:1:8: unclosed table"),
        "{error}"
    );
    assert!(
        error.contains("isogate.toml:2:6: key with no value"),
        "{error}"
    );
    assert_eq!(status.generation, 1);
    assert_eq!(scope_granted(&isogate).await, "read write");

    // Valid TOML, but a route names an unknown resource; the scope change in it must not apply.
    let invalid = config(&upstream.url(), "[\"read\"]", "")
        + "\n[[routes]]\npath_prefix = \"/reports\"\nupstream = \"http://127.0.0.1:1\"\nresource = \"urn:reports\"\n";
    write_atomically(&path, &invalid);
    let status = isogate.reloaded(|s| s.rejected == 2).await;
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap()
            .contains("urn:reports"),
        "{status:?}"
    );
    assert_eq!(
        scope_granted(&isogate).await,
        "read write",
        "nothing of the invalid file applies"
    );
    let products = isogate
        .token_ok(&[
            ("grant_type", "client_credentials"),
            ("resource", "urn:products"),
        ])
        .await;
    let gate = format!("http://{}/products", isogate.addr(Role::Proxy));
    let reply = send(
        http::Request::get(gate)
            .header(
                "authorization",
                format!("Bearer {}", products["access_token"].as_str().unwrap()),
            )
            .body(http_body_util::Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "the gateway keeps serving");
}

#[tokio::test]
async fn a_new_resource_client_and_route_take_effect() {
    let upstream = Upstream::start().await;
    let isogate = Isogate::start(&config(&upstream.url(), "[\"read\", \"write\"]", "")).await;
    let gate = format!("http://{}/reports/1", isogate.addr(Role::Proxy));
    let addition = format!(
        r#"
[[api_scopes]]
name = "reports.read"

[[api_resources]]
name = "urn:reports"
scopes = ["reports.read"]
require_resource_indicator = true

[[clients]]
client_id = "reporter"
secrets = ["{SECRET_HASH}"]
allowed_grant_types = ["client_credentials"]
allowed_scopes = ["reports.read"]
"#
    );
    let text = config(&upstream.url(), "[\"read\", \"write\"]", &addition)
        + &format!("\n[[routes]]\npath_prefix = \"/reports\"\nupstream = \"{}\"\nresource = \"urn:reports\"\n", upstream.url());
    write_atomically(&isogate.path("isogate.toml"), &text);
    isogate.reloaded(|s| s.applied == 1).await;

    let url = isogate.issuer_url("/connect/token");
    let reply = post_form(
        &url,
        &[
            ("grant_type", "client_credentials"),
            ("resource", "urn:reports"),
        ],
        Some(("reporter", SECRET)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let token = reply.json()["access_token"].as_str().unwrap().to_owned();
    let reply = send(
        http::Request::get(gate)
            .header("authorization", format!("Bearer {token}"))
            .body(http_body_util::Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(upstream.last().target, "/reports/1");
}

/// Adding, retiring and removing a key, end to end: JWKS, signing and the gateway.
#[tokio::test]
async fn key_rotation_end_to_end() {
    let upstream = Upstream::start().await;
    let base = config(&upstream.url(), "[\"read\", \"write\"]", "");
    let isogate = Isogate::start(&base).await;
    let path = isogate.path("isogate.toml");
    let gate = |token: String| {
        let url = format!("http://{}/products", isogate.addr(Role::Proxy));
        async move {
            send(
                http::Request::get(url)
                    .header("authorization", format!("Bearer {token}"))
                    .body(http_body_util::Full::default())
                    .unwrap(),
            )
            .await
            .status
        }
    };
    let token = || async {
        isogate
            .access_token(&[
                ("grant_type", "client_credentials"),
                ("resource", "urn:products"),
            ])
            .await
    };
    let kids = || async {
        let jwks = get(&isogate.issuer_url("/.well-known/jwks")).await.json();
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let signer = |t: &str| decode_parts(t).0["kid"].as_str().unwrap().to_owned();
    let old = token().await;
    assert_eq!(signer(&old), "es");
    assert_eq!(gate(old.clone()).await, StatusCode::OK);

    // 1. A new key first in the list: published at once and signing; old tokens still pass.
    // A reload never generates a key: it is made first (as `isogate keygen` does).
    isogate::jwt::generate_key_file(&isogate.path("keys/new.pem"), isogate::jwt::Alg::ES256)
        .unwrap();
    let new_key = "[[issuer.signing_keys]]\nfile = \"keys/new.pem\"\nalg = \"ES256\"\nkid = \"new\"\ngenerate_if_missing = true\n\n[[issuer.signing_keys]]\nfile = \"keys/es256.pem\"";
    let added = base.replacen(
        "[[issuer.signing_keys]]\nfile = \"keys/es256.pem\"",
        new_key,
        1,
    );
    write_atomically(&path, &added);
    isogate.reloaded(|s| s.applied == 1).await;
    assert_eq!(kids().await, ["new", "es", "rs"]);
    assert_eq!(signer(&token().await), "new");
    assert_eq!(gate(old.clone()).await, StatusCode::OK);

    // 2. The old key retired and first again: published, accepted, never signing.
    let retired = base
        .replacen(
            "kid = \"es\"\ngenerate_if_missing = true",
            "kid = \"es\"\ngenerate_if_missing = true\nretired = true",
            1,
        )
        .replacen(
            "[[issuer.signing_keys]]\nfile = \"keys/es256.pem\"",
            new_key,
            1,
        );
    write_atomically(&path, &retired);
    isogate.reloaded(|s| s.applied == 2).await;
    assert!(kids().await.contains(&"es".to_owned()));
    for _ in 0..3 {
        assert_eq!(signer(&token().await), "new");
    }
    assert_eq!(
        gate(old.clone()).await,
        StatusCode::OK,
        "a retired key still verifies"
    );

    // 3. Removed: gone from JWKS, and its tokens are refused (the verified-token cache was emptied).
    let removed = base.replacen(
        "[[issuer.signing_keys]]\nfile = \"keys/es256.pem\"\nalg = \"ES256\"\nkid = \"es\"\ngenerate_if_missing = true\n",
        "[[issuer.signing_keys]]\nfile = \"keys/new.pem\"\nalg = \"ES256\"\nkid = \"new\"\ngenerate_if_missing = true\n",
        1,
    );
    write_atomically(&path, &removed);
    isogate.reloaded(|s| s.applied == 3).await;
    assert_eq!(kids().await, ["new", "rs"]);
    assert_eq!(gate(old).await, StatusCode::UNAUTHORIZED);
    assert_eq!(gate(token().await).await, StatusCode::OK);
}

/// Requests keep flowing while the file is rewritten again and again: none fails.
#[tokio::test]
async fn no_request_fails_while_the_file_is_rewritten_many_times() {
    let upstream = Upstream::start().await;
    let a = config(&upstream.url(), "[\"read\", \"write\"]", "");
    let b = config(&upstream.url(), "[\"read\"]", "");
    let isogate = std::sync::Arc::new(Isogate::start(&a).await);
    let token = isogate
        .access_token(&[
            ("grant_type", "client_credentials"),
            ("scope", "read"),
            ("resource", "urn:products"),
        ])
        .await;
    let proxy = format!("http://{}/products", isogate.addr(Role::Proxy));
    let traffic = {
        let (isogate, token) = (isogate.clone(), token.clone());
        tokio::spawn(async move {
            let mut failures = Vec::new();
            for i in 0..400 {
                let gate = send(
                    http::Request::get(&proxy)
                        .header("authorization", format!("Bearer {token}"))
                        .body(http_body_util::Full::default())
                        .unwrap(),
                )
                .await;
                if gate.status != StatusCode::OK {
                    failures.push(format!("gateway #{i}: {}", gate.status));
                }
                let issued = isogate
                    .token(&[("grant_type", "client_credentials"), ("scope", "read")])
                    .await;
                if issued.status != StatusCode::OK {
                    failures.push(format!("token #{i}: {}", issued.status));
                }
            }
            failures
        })
    };
    let path = isogate.path("isogate.toml");
    for round in 1..=20u64 {
        write_atomically(&path, if round % 2 == 1 { &b } else { &a });
        isogate.reloaded(|s| s.applied == round).await;
    }
    let failures = traffic.await.unwrap();
    assert!(failures.is_empty(), "{failures:?}");
}

#[tokio::test]
async fn a_deleted_and_recreated_file_is_applied_and_the_deletion_changes_nothing() {
    let upstream = Upstream::start().await;
    let isogate = Isogate::start(&config(&upstream.url(), "[\"read\", \"write\"]", "")).await;
    let path = isogate.path("isogate.toml");
    std::fs::remove_file(&path).unwrap();
    // The missing file is a rejected reload; the configuration keeps serving.
    let status = isogate.reloaded(|s| s.rejected == 1).await;
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap()
            .contains("cannot read the file"),
        "{status:?}"
    );
    assert_eq!(scope_granted(&isogate).await, "read write");
    std::fs::write(&path, config(&upstream.url(), "[\"read\"]", "")).unwrap();
    isogate.reloaded(|s| s.applied == 1).await;
    assert_eq!(scope_granted(&isogate).await, "read");
}

/// An editor's save that renames the file away (its backup) and then writes a new one: the
/// moment between the two is not a rejected reload, even when it is longer than the watch's
/// debounce. The new file is applied, once.
#[tokio::test]
async fn a_file_renamed_away_and_then_written_anew_is_one_reload_and_no_rejection() {
    let upstream = Upstream::start().await;
    let isogate = Isogate::start(&config(&upstream.url(), "[\"read\", \"write\"]", "")).await;
    let path = isogate.path("isogate.toml");
    std::fs::rename(&path, isogate.path("isogate.toml~")).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    std::fs::write(&path, config(&upstream.url(), "[\"read\"]", "")).unwrap();
    let status = isogate.reloaded(|s| s.applied == 1).await;
    assert_eq!((status.rejected, status.generation), (0, 2), "{status:?}");
    assert_eq!(scope_granted(&isogate).await, "read");
}

/// A file rewritten in place with a pause mid-write: its first half is valid TOML without the
/// invoices route's `[routes.scopes]`, which would let a read-only token write. It is never
/// applied; the whole file is, once written and closed.
#[tokio::test]
async fn a_file_still_being_written_in_place_is_not_applied_torn() {
    use std::io::Write;
    let upstream = Upstream::start().await;
    let scopes = "[routes.scopes]\nGET = [\"read\"]\n\"*\" = [\"write\"]\n";
    let base = config(&upstream.url(), "[\"read\", \"write\"]", "")
        + &format!(
            "\n[[routes]]\npath_prefix = \"/invoices\"\nupstream = \"{}\"\nresource = \"urn:invoices\"\n",
            upstream.url()
        );
    let isogate = Isogate::start(&(base.clone() + scopes)).await;
    let read_only = isogate
        .access_token(&[
            ("grant_type", "client_credentials"),
            ("scope", "read"),
            ("resource", "urn:invoices"),
        ])
        .await;
    let url = format!("http://{}/invoices/1", isogate.addr(Role::Proxy));
    let post = |url: String, token: String| async move {
        with_bearer(http::Method::POST, &url, &token).await.status
    };
    assert_eq!(
        post(url.clone(), read_only.clone()).await,
        StatusCode::FORBIDDEN
    );

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (stop, url, token) = (stop.clone(), url.clone(), read_only.clone());
        tokio::spawn(async move {
            let mut allowed = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if post(url.clone(), token.clone()).await == StatusCode::OK {
                    allowed += 1;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            allowed
        })
    };
    // The new file: the same routes, one more comment, written in two halves 600 ms apart.
    let path = isogate.path("isogate.toml");
    let writer = tokio::task::spawn_blocking(move || {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.write_all(base.as_bytes()).unwrap();
        file.flush().unwrap();
        // Longer than the watch's debounce and the reload's quiet period together.
        std::thread::sleep(std::time::Duration::from_millis(600));
        file.write_all(format!("{scopes}# rewritten\n").as_bytes())
            .unwrap();
    });
    writer.await.unwrap();
    let status = isogate.reloaded(|s| s.applied == 1).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(traffic.await.unwrap(), 0, "a read-only token could write");
    assert_eq!(status.rejected, 0, "{status:?}");
    assert_eq!(status.generation, 2, "the half file was never applied");
    assert_eq!(post(url, read_only).await, StatusCode::FORBIDDEN);
}

/// `generate_if_missing` acts at first start only: a signing key file deleted while serving
/// makes the reload fail, and the key keeps signing, stays in JWKS and its tokens keep passing.
#[tokio::test]
async fn a_deleted_signing_key_is_never_regenerated_by_a_reload() {
    let upstream = Upstream::start().await;
    let isogate = Isogate::start(&config(&upstream.url(), "[\"read\", \"write\"]", "")).await;
    let token = isogate
        .access_token(&[
            ("grant_type", "client_credentials"),
            ("resource", "urn:products"),
        ])
        .await;
    let key = isogate.path("keys/es256.pem");
    let pem = std::fs::read(&key).unwrap();
    std::fs::remove_file(&key).unwrap();
    let status = isogate.reloaded(|s| s.rejected == 1).await;
    let error = status.last_error.unwrap();
    assert!(
        error.contains("issuer.signing_keys[0].file") && error.contains("first start only"),
        "{error}"
    );
    assert!(!key.exists(), "the key file was generated again");
    assert_eq!(isogate.kids().await, ["es", "rs"]);
    let fresh = isogate
        .access_token(&[
            ("grant_type", "client_credentials"),
            ("resource", "urn:products"),
        ])
        .await;
    assert_eq!(
        decode_parts(&fresh).0["kid"],
        "es",
        "the last good key signs"
    );
    let products = format!("http://{}/products", isogate.addr(Role::Proxy));
    for token in [token, fresh] {
        let reply = with_bearer(http::Method::GET, &products, &token).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    // Restored: the file is valid again and applies.
    std::fs::write(&key, pem).unwrap();
    let status = isogate.reloaded(|s| s.applied == 1).await;
    assert_eq!((status.rejected, status.last_error), (1, None));
}
