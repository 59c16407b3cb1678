//! The grant suite, run against both stores (SPEC §6, §7): the embedded redb file and a real
//! PostgreSQL (see `postgres.rs`). Each case gets a store of its own.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use isogate::config::StoreConfig;
use isogate::grants::{
    AccessToken, Authorization, CodeGrant, CodeRefusal, Grants, PgStore, RefreshPolicy,
    RefreshRefusal, StoreError,
};

use crate::postgres;

const NOW: u64 = 1_800_000_000;

/// A store and what keeps it alive.
pub struct Store {
    pub grants: Grants,
    _dir: Option<tempfile::TempDir>,
}

async fn redb() -> Option<Store> {
    let dir = tempfile::tempdir().unwrap();
    let grants = Grants::open(dir.path()).unwrap();
    Some(Store {
        grants,
        _dir: Some(dir),
    })
}

async fn pg() -> Option<Store> {
    let url = postgres::database().await?;
    Some(Store {
        grants: Grants::postgres(Arc::new(PgStore::new(&store_config(&url)).unwrap())),
        _dir: None,
    })
}

/// `[store]` for `url`, as `isogate check` would make it.
pub fn store_config(url: &str) -> StoreConfig {
    StoreConfig {
        pg: url.parse().unwrap(),
        pool_size: 8,
        connect_timeout: Duration::from_secs(3),
        tls_roots: None,
        shown: url.to_owned(),
    }
}

/// Each case, once per store.
macro_rules! on_both_stores {
    ($($case:ident),* $(,)?) => {
        mod on_redb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(store) = super::redb().await {
                        super::$case(store.grants.clone()).await;
                    }
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(store) = super::pg().await {
                        super::$case(store.grants.clone()).await;
                    }
                }
            )*
        }
    };
}

on_both_stores!(
    a_code_works_once_and_a_replay_revokes_its_family,
    codes_expire_and_unknown_codes_are_unknown,
    one_time_refresh_tokens_rotate_and_reuse_revokes_the_family,
    sliding_and_absolute_lifetimes_both_end_a_refresh_token,
    revocation_is_for_the_owning_client_only,
    consents_are_remembered_per_subject_and_client,
    within_the_reuse_grace_a_rotated_token_gets_a_successor_of_its_own,
    of_concurrent_redemptions_of_one_code_exactly_one_wins,
    of_concurrent_refreshes_of_one_token_exactly_one_wins_and_the_family_is_revoked,
    sweeping_removes_only_what_expired,
    a_redeemed_code_is_remembered_for_a_day_so_a_late_replay_still_revokes,
    a_registered_client_is_found_by_its_id_never_overwritten_and_never_swept,
);

fn authorization() -> Authorization {
    Authorization {
        client_id: "web".into(),
        subject: "818727".into(),
        scopes: vec!["read".into(), "offline_access".into()],
        resources: vec!["urn:invoices".into(), "urn:products".into()],
        auth_time: NOW,
        jkt: None,
    }
}

fn code_grant() -> CodeGrant {
    CodeGrant {
        authorization: authorization(),
        redirect_uri: "https://app.example/cb".into(),
        code_challenge: Some("challenge".into()),
        nonce: None,
    }
}

const ONE_TIME: RefreshPolicy = RefreshPolicy {
    one_time: true,
    absolute: Duration::from_secs(1000),
    sliding: Duration::from_secs(100),
    reuse_grace: Duration::ZERO,
};

fn access(jti: &str) -> AccessToken<'_> {
    AccessToken {
        jti,
        exp: NOW + 3600,
    }
}

/// A code redeemed at `now` with a refresh token under `policy`: the refresh token.
async fn first_refresh(grants: &Grants, policy: RefreshPolicy, jti: &str, now: u64) -> String {
    let code = grants
        .issue_code(code_grant(), Duration::from_secs(60), now)
        .await
        .unwrap();
    grants
        .redeem_code(&code, &authorization(), now, access(jti), Some(policy))
        .await
        .unwrap()
        .unwrap()
        .refresh_token
        .unwrap()
}

async fn refresh(
    grants: &Grants,
    token: &str,
    client: &str,
    policy: RefreshPolicy,
    now: u64,
    jti: &str,
) -> Result<isogate::grants::Refreshed, RefreshRefusal> {
    grants
        .use_refresh(token, client, policy, now, access(jti))
        .await
        .unwrap()
}

async fn a_code_works_once_and_a_replay_revokes_its_family(grants: Grants) {
    let code = grants
        .issue_code(code_grant(), Duration::from_secs(60), NOW)
        .await
        .unwrap();
    assert_eq!(grants.code(&code, NOW + 1).await.unwrap(), Ok(code_grant()));
    let redeemed = grants
        .redeem_code(
            &code,
            &authorization(),
            NOW + 1,
            access("jti-1"),
            Some(ONE_TIME),
        )
        .await
        .unwrap()
        .unwrap();
    let refresh_token = redeemed.refresh_token.unwrap();
    assert!(!grants.access_token_revoked("jti-1").await.unwrap());
    let next = refresh(&grants, &refresh_token, "web", ONE_TIME, NOW + 2, "jti-2")
        .await
        .unwrap();
    assert_eq!(next.grant.family, redeemed.family);

    // Looked up again, the code is a replay: what it issued is revoked, both access tokens
    // (the one of the redemption and the one of the refresh) and the refresh tokens.
    assert_eq!(
        grants.code(&code, NOW + 3).await.unwrap(),
        Err(CodeRefusal::Replayed)
    );
    for jti in ["jti-1", "jti-2"] {
        assert!(grants.access_token_revoked(jti).await.unwrap(), "{jti}");
    }
    assert_eq!(
        refresh(&grants, &next.token, "web", ONE_TIME, NOW + 4, "jti-3")
            .await
            .unwrap_err(),
        RefreshRefusal::Revoked
    );
    // Spent again (a replay racing past the look-up), it is refused the same way.
    assert_eq!(
        grants
            .redeem_code(&code, &authorization(), NOW + 5, access("jti-4"), None)
            .await
            .unwrap()
            .unwrap_err(),
        CodeRefusal::Replayed
    );
    assert!(!grants.access_token_revoked("jti-4").await.unwrap());
}

async fn codes_expire_and_unknown_codes_are_unknown(grants: Grants) {
    let code = grants
        .issue_code(code_grant(), Duration::from_secs(60), NOW)
        .await
        .unwrap();
    assert!(grants.code(&code, NOW + 60).await.unwrap().is_ok());
    assert_eq!(
        grants.code(&code, NOW + 61).await.unwrap(),
        Err(CodeRefusal::Expired)
    );
    assert_eq!(
        grants
            .redeem_code(&code, &authorization(), NOW + 61, access("j"), None)
            .await
            .unwrap()
            .unwrap_err(),
        CodeRefusal::Expired
    );
    assert_eq!(
        grants.code("nope", NOW).await.unwrap(),
        Err(CodeRefusal::Unknown)
    );
    // Without offline_access, no refresh token.
    let plain = grants
        .issue_code(code_grant(), Duration::from_secs(60), NOW)
        .await
        .unwrap();
    let redeemed = grants
        .redeem_code(&plain, &authorization(), NOW, access("j2"), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(redeemed.refresh_token, None);
}

async fn one_time_refresh_tokens_rotate_and_reuse_revokes_the_family(grants: Grants) {
    let first = first_refresh(&grants, ONE_TIME, "a0", NOW).await;
    let second = refresh(&grants, &first, "web", ONE_TIME, NOW + 10, "a1")
        .await
        .unwrap();
    assert_ne!(second.token, first);
    assert_eq!(second.grant.authorization, authorization());
    assert_eq!(second.grant.sliding_expiry, NOW + 110);
    assert_eq!(second.grant.absolute_expiry, NOW + 1000);
    // Another client cannot use it, and that changes nothing.
    assert_eq!(
        refresh(&grants, &second.token, "other", ONE_TIME, NOW + 11, "x")
            .await
            .unwrap_err(),
        RefreshRefusal::Unknown
    );
    assert!(grants
        .usable_refresh(&second.token, ONE_TIME, NOW + 11)
        .await
        .unwrap()
        .is_some());
    // The rotated-away token again: the whole family goes, access tokens included.
    assert_eq!(
        refresh(&grants, &first, "web", ONE_TIME, NOW + 12, "a2")
            .await
            .unwrap_err(),
        RefreshRefusal::Reused
    );
    for jti in ["a0", "a1"] {
        assert!(grants.access_token_revoked(jti).await.unwrap(), "{jti}");
    }
    assert!(!grants.access_token_revoked("a2").await.unwrap());
    assert_eq!(
        refresh(&grants, &second.token, "web", ONE_TIME, NOW + 13, "a3")
            .await
            .unwrap_err(),
        RefreshRefusal::Revoked
    );
    // Judged without a use (the token endpoint, after the look-up found nothing).
    let other = first_refresh(&grants, ONE_TIME, "b0", NOW).await;
    refresh(&grants, &other, "web", ONE_TIME, NOW, "b1")
        .await
        .unwrap();
    assert_eq!(
        grants
            .refuse_refresh(&other, "web", ONE_TIME, NOW + 1)
            .await
            .unwrap(),
        RefreshRefusal::Reused
    );
    assert!(grants.access_token_revoked("b1").await.unwrap());
}

async fn sliding_and_absolute_lifetimes_both_end_a_refresh_token(grants: Grants) {
    let reuse = RefreshPolicy {
        one_time: false,
        ..ONE_TIME
    };
    let token = first_refresh(&grants, reuse, "s0", NOW).await;
    // Used within each sliding window, it lives on with the same value…
    let mut at = NOW;
    for i in 0..9 {
        at += 99;
        let used = refresh(&grants, &token, "web", reuse, at, &format!("s{}", i + 1))
            .await
            .unwrap();
        assert_eq!(used.token, token);
        assert_eq!(used.grant.sliding_expiry, (at + 100).min(NOW + 1000));
    }
    // …until the absolute lifetime ends it.
    assert_eq!(
        refresh(&grants, &token, "web", reuse, NOW + 1001, "s10")
            .await
            .unwrap_err(),
        RefreshRefusal::Expired
    );
    // Unused past the sliding window, it has expired.
    let idle = first_refresh(&grants, reuse, "i0", NOW).await;
    assert_eq!(
        refresh(&grants, &idle, "web", reuse, NOW + 101, "i1")
            .await
            .unwrap_err(),
        RefreshRefusal::Expired
    );
    assert!(grants
        .refresh_grant(&idle, NOW + 100)
        .await
        .unwrap()
        .is_some());
    assert!(grants
        .refresh_grant(&idle, NOW + 101)
        .await
        .unwrap()
        .is_none());
}

async fn revocation_is_for_the_owning_client_only(grants: Grants) {
    let token = first_refresh(&grants, ONE_TIME, "r0", NOW).await;
    assert!(!grants.revoke_refresh(&token, "other", NOW).await.unwrap());
    assert!(grants.refresh_grant(&token, NOW).await.unwrap().is_some());
    assert!(!grants.access_token_revoked("r0").await.unwrap());
    assert!(grants.revoke_refresh(&token, "web", NOW).await.unwrap());
    assert!(grants.refresh_grant(&token, NOW).await.unwrap().is_none());
    assert!(grants.access_token_revoked("r0").await.unwrap());
    assert!(!grants.revoke_refresh("unknown", "web", NOW).await.unwrap());
}

async fn consents_are_remembered_per_subject_and_client(grants: Grants) {
    let pair = |s: &str, r: &str| (s.to_owned(), r.to_owned());
    let products: BTreeSet<_> = [pair("read", "urn:products")].into();
    let invoices: BTreeSet<_> = [pair("read", "urn:invoices")].into();
    let minute = Duration::from_secs(60);
    assert_eq!(grants.consent("a", "web", NOW).await.unwrap(), None);
    grants
        .remember_consent("a", "web", &products, minute, NOW)
        .await
        .unwrap();
    let approved = |c: Option<isogate::grants::Consent>| c.map(|c| c.approved);
    assert_eq!(
        approved(grants.consent("a", "web", NOW).await.unwrap()),
        Some(products.clone())
    );
    // A later approval adds to the earlier one, and keeps both for the new lifetime.
    grants
        .remember_consent("a", "web", &invoices, minute, NOW + 30)
        .await
        .unwrap();
    let both: BTreeSet<_> = products.union(&invoices).cloned().collect();
    assert_eq!(
        approved(grants.consent("a", "web", NOW + 90).await.unwrap()),
        Some(both)
    );
    // Keys do not run into each other.
    assert_eq!(grants.consent("a", "other", NOW).await.unwrap(), None);
    assert_eq!(grants.consent("aw", "eb", NOW).await.unwrap(), None);
    // Expired, it approves nothing, and a new approval does not bring it back.
    assert_eq!(grants.consent("a", "web", NOW + 91).await.unwrap(), None);
    let write: BTreeSet<_> = [pair("write", "urn:products")].into();
    grants
        .remember_consent("a", "web", &write, minute, NOW + 100)
        .await
        .unwrap();
    assert_eq!(
        approved(grants.consent("a", "web", NOW + 100).await.unwrap()),
        Some(write)
    );
}

async fn within_the_reuse_grace_a_rotated_token_gets_a_successor_of_its_own(grants: Grants) {
    let graced = RefreshPolicy {
        reuse_grace: Duration::from_secs(30),
        ..ONE_TIME
    };
    let first = first_refresh(&grants, graced, "g0", NOW).await;
    let a = refresh(&grants, &first, "web", graced, NOW, "g1")
        .await
        .unwrap();
    // Another tab refreshes with the same token 30 s later: a token of its own, nothing
    // revoked.
    let b = refresh(&grants, &first, "web", graced, NOW + 30, "g2")
        .await
        .unwrap();
    assert_ne!(a.token, b.token);
    assert_eq!(b.grant.sliding_expiry, NOW + 130);
    // Introspection sees the rotated token as spent; a use within the grace does not.
    assert!(grants
        .refresh_grant(&first, NOW + 30)
        .await
        .unwrap()
        .is_none());
    assert!(grants
        .usable_refresh(&first, graced, NOW + 30)
        .await
        .unwrap()
        .is_some());
    assert!(grants
        .usable_refresh(&first, graced, NOW + 31)
        .await
        .unwrap()
        .is_none());
    for token in [&a.token, &b.token] {
        assert!(grants
            .refresh_grant(token, NOW + 30)
            .await
            .unwrap()
            .is_some());
    }
    // Past the grace (counted from the first rotation) it is a reuse: the family is
    // revoked, both successors with it.
    assert_eq!(
        refresh(&grants, &first, "web", graced, NOW + 31, "g3")
            .await
            .unwrap_err(),
        RefreshRefusal::Reused
    );
    for token in [&a.token, &b.token] {
        assert!(grants
            .refresh_grant(token, NOW + 31)
            .await
            .unwrap()
            .is_none());
    }
    for jti in ["g0", "g1", "g2"] {
        assert!(grants.access_token_revoked(jti).await.unwrap(), "{jti}");
    }
    // Without a grace, the second use is a reuse at once.
    let second = first_refresh(&grants, ONE_TIME, "h0", NOW).await;
    refresh(&grants, &second, "web", ONE_TIME, NOW, "h1")
        .await
        .unwrap();
    assert_eq!(
        refresh(&grants, &second, "web", ONE_TIME, NOW, "h2")
            .await
            .unwrap_err(),
        RefreshRefusal::Reused
    );
}

async fn of_concurrent_redemptions_of_one_code_exactly_one_wins(grants: Grants) {
    let code = grants
        .issue_code(code_grant(), Duration::from_secs(60), NOW)
        .await
        .unwrap();
    let tries = (0..20).map(|i| {
        let (grants, code) = (grants.clone(), code.clone());
        tokio::spawn(async move {
            let jti = format!("c{i}");
            let outcome = grants
                .redeem_code(&code, &authorization(), NOW, access(&jti), Some(ONE_TIME))
                .await
                .unwrap();
            (jti, outcome)
        })
    });
    let mut won = Vec::new();
    for outcome in futures_join(tries).await {
        match outcome {
            (jti, Ok(_)) => won.push(jti),
            (_, Err(refusal)) => assert_eq!(refusal, CodeRefusal::Replayed),
        }
    }
    assert_eq!(won.len(), 1, "exactly one redemption wins");
    // The losers were replays: the winner's access token is revoked.
    assert!(grants.access_token_revoked(&won[0]).await.unwrap());
}

async fn of_concurrent_refreshes_of_one_token_exactly_one_wins_and_the_family_is_revoked(
    grants: Grants,
) {
    let token = first_refresh(&grants, ONE_TIME, "f0", NOW).await;
    let tries = (0..20).map(|i| {
        let (grants, token) = (grants.clone(), token.clone());
        tokio::spawn(async move {
            let jti = format!("f{}", i + 1);
            let outcome = refresh(&grants, &token, "web", ONE_TIME, NOW + 1, &jti).await;
            (jti, outcome.map(|r| r.token))
        })
    });
    let mut won = Vec::new();
    for outcome in futures_join(tries).await {
        match outcome {
            (jti, Ok(successor)) => won.push((jti, successor)),
            (_, Err(refusal)) => assert!(
                matches!(refusal, RefreshRefusal::Reused | RefreshRefusal::Revoked),
                "{refusal:?}"
            ),
        }
    }
    assert_eq!(won.len(), 1, "exactly one refresh wins");
    // The others were reuses: the family is revoked, the winner's tokens with it.
    let (jti, successor) = &won[0];
    assert!(grants.access_token_revoked(jti).await.unwrap());
    assert!(grants.access_token_revoked("f0").await.unwrap());
    assert_eq!(
        refresh(&grants, successor, "web", ONE_TIME, NOW + 2, "late")
            .await
            .unwrap_err(),
        RefreshRefusal::Revoked
    );
}

async fn sweeping_removes_only_what_expired(grants: Grants) {
    let old = grants
        .issue_code(code_grant(), Duration::from_secs(10), NOW)
        .await
        .unwrap();
    let fresh = grants
        .issue_code(code_grant(), Duration::from_secs(1000), NOW)
        .await
        .unwrap();
    let products: BTreeSet<_> = [("read".to_owned(), "urn:products".to_owned())].into();
    grants
        .remember_consent("a", "web", &products, Duration::from_secs(10), NOW)
        .await
        .unwrap();
    assert!(grants.sweep(NOW + 20).await.unwrap() >= 2);
    assert_eq!(
        grants.code(&old, NOW).await.unwrap(),
        Err(CodeRefusal::Unknown)
    );
    assert!(grants.code(&fresh, NOW + 20).await.unwrap().is_ok());
    assert_eq!(grants.consent("a", "web", NOW).await.unwrap(), None);
    assert_eq!(grants.sweep(NOW + 20).await.unwrap(), 0);
}

async fn a_registered_client_is_found_by_its_id_never_overwritten_and_never_swept(grants: Grants) {
    let client = isogate::grants::RegisteredClient {
        client_id: "reg_one".into(),
        client_name: Some("One".into()),
        redirect_uris: vec!["http://127.0.0.1/cb".into()],
        grant_types: vec!["authorization_code".into()],
        token_endpoint_auth_method: "private_key_jwt".into(),
        // Kept as registered, in both stores.
        jwks: Some(r#"{"keys":[]}"#.into()),
        jwks_uri: Some("https://keys.example/jwks".into()),
        scope: "read".into(),
        secret: None,
        issued_at: NOW,
    };
    assert_eq!(grants.registered_client("reg_one").await.unwrap(), None);
    grants.register_client(&client).await.unwrap();
    let again = isogate::grants::RegisteredClient {
        client_name: Some("Another".into()),
        ..client.clone()
    };
    assert!(grants.register_client(&again).await.is_err());
    grants.sweep(NOW + 10 * 365 * 86_400).await.unwrap();
    assert_eq!(
        grants.registered_client("reg_one").await.unwrap(),
        Some(client)
    );
    assert_eq!(grants.registered_client("reg_two").await.unwrap(), None);
}

async fn a_redeemed_code_is_remembered_for_a_day_so_a_late_replay_still_revokes(grants: Grants) {
    let code = grants
        .issue_code(code_grant(), Duration::from_secs(60), NOW)
        .await
        .unwrap();
    grants
        .redeem_code(&code, &authorization(), NOW, access("late-0"), None)
        .await
        .unwrap()
        .unwrap();
    // Swept a little under a day later, the redeemed code is still there…
    let later = NOW + 24 * 3600 - 60;
    grants.sweep(later).await.unwrap();
    assert_eq!(
        grants.code(&code, later).await.unwrap(),
        Err(CodeRefusal::Replayed)
    );
    // …and gone after it.
    let after = NOW + 2 * 24 * 3600;
    grants.sweep(after).await.unwrap();
    assert_eq!(
        grants.code(&code, after).await.unwrap(),
        Err(CodeRefusal::Unknown)
    );
}

/// Waits for every task; a panic in one is a failure here.
async fn futures_join<T: Send + 'static>(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for task in tasks.collect::<Vec<_>>() {
        out.push(task.await.unwrap());
    }
    out
}

/// Instances starting together migrate once; a schema newer than the binary is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_safe_together_and_a_newer_schema_is_refused() {
    let Some(url) = postgres::database().await else {
        return;
    };
    let stores: Vec<_> = (0..4)
        .map(|_| Arc::new(PgStore::new(&store_config(&url)).unwrap()))
        .collect();
    let starts = stores
        .iter()
        .cloned()
        .map(|s| tokio::spawn(async move { s.migrate().await }));
    for started in futures_join(starts).await {
        started.unwrap();
    }
    // Every instance works on the one schema.
    let a = Grants::postgres(stores[0].clone());
    let b = Grants::postgres(stores[1].clone());
    let code = a
        .issue_code(code_grant(), Duration::from_secs(60), NOW)
        .await
        .unwrap();
    assert!(b.code(&code, NOW).await.unwrap().is_ok());

    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let version: i32 = client
        .query_one("SELECT version FROM isogate_schema WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert!(version >= 1);
    client
        .execute(
            "UPDATE isogate_schema SET version = version + 1 WHERE id = 1",
            &[],
        )
        .await
        .unwrap();
    let newer = PgStore::new(&store_config(&url)).unwrap();
    match newer.migrate().await {
        Err(e @ StoreError::SchemaTooNew { .. }) => {
            assert!(
                e.to_string().contains("newer than this isogate knows"),
                "{e}"
            )
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

/// A store that cannot be reached answers `Unavailable` within `connect_timeout`.
#[tokio::test]
async fn an_unreachable_store_is_unavailable_within_connect_timeout() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = store_config(&format!("postgres://isogate@127.0.0.1:{port}/isogate"));
    config.connect_timeout = Duration::from_millis(500);
    let grants = Grants::postgres(Arc::new(PgStore::new(&config).unwrap()));
    let start = std::time::Instant::now();
    let e = grants.code("any", NOW).await.unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

/// A revocation committed by one instance wakes every other's listener at once (`LISTEN`), not
/// only at the next poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_wakes_the_other_instances_listener() {
    let Some(url) = postgres::database().await else {
        return;
    };
    let listener = Arc::new(PgStore::new(&store_config(&url)).unwrap());
    let revoker = Grants::postgres(Arc::new(PgStore::new(&store_config(&url)).unwrap()));
    revoker.sync_revocations(NOW).await.unwrap();
    let wake = Arc::new(tokio::sync::Notify::new());
    let listening = {
        let (listener, wake) = (listener.clone(), wake.clone());
        tokio::spawn(async move { listener.listen(&wake).await })
    };
    let within = |what: &'static str| {
        let wake = wake.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(2), wake.notified())
                .await
                .unwrap_or_else(|_| panic!("no wake-up: {what}"))
        }
    };
    within("listening").await;
    revoker
        .revoke_access_token("jti-a", NOW + 3600, NOW)
        .await
        .unwrap();
    within("an access token revoked").await;
    let token = first_refresh(&revoker, ONE_TIME, "jti-b", NOW).await;
    assert!(revoker.revoke_refresh(&token, "web", NOW).await.unwrap());
    within("a family revoked").await;
    listening.abort();
}
